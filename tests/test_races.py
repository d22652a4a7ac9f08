"""Races and limits without guests: concurrent requests on one name, two API processes on one
database making an account's defaults, paging edge cases, retention, the instance limit."""
import base64
import threading
import time

import pytest
from botocore.exceptions import ClientError

from .conftest import CREDENTIALS
from .helpers import error_of, fast_waiter, tiny_image, unique
from .server import Server, fresh_database_url


def _together(n: int, fn) -> list:
    """Run fn(i) in n threads released at once; each result or the ClientError it raised."""
    barrier, out = threading.Barrier(n), [None] * n

    def body(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except ClientError as exc:
            out[i] = exc
    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_one_name_created_by_many_at_once(server):
    """Eight concurrent CreateKeyPair and CreateSecurityGroup with one name: one wins, the others
    get AWS's duplicate error (never a 500), and exactly one exists."""
    clients = [server.client() for _ in range(8)]
    key = unique("race")
    results = _together(8, lambda i: clients[i].create_key_pair(KeyName=key))
    won = [r for r in results if not isinstance(r, ClientError)]
    lost = {r.response["Error"]["Code"] for r in results if isinstance(r, ClientError)}
    assert len(won) == 1 and lost <= {"InvalidKeyPair.Duplicate"}, (won, lost)
    assert len(clients[0].describe_key_pairs(KeyNames=[key])["KeyPairs"]) == 1

    group = unique("race")
    results = _together(8, lambda i: clients[i].create_security_group(GroupName=group, Description="d"))
    won = [r for r in results if not isinstance(r, ClientError)]
    lost = {r.response["Error"]["Code"] for r in results if isinstance(r, ClientError)}
    assert len(won) == 1 and lost <= {"InvalidGroup.Duplicate"}, (won, lost)
    groups = clients[0].describe_security_groups(Filters=[{"Name": "group-name", "Values": [group]}])
    assert len(groups["SecurityGroups"]) == 1


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two servers on one database (PostgreSQL in the PostgreSQL pass, else one SQLite file), as
    two API processes behind a balancer would be: the first is also the host agent, the second
    only answers requests (README)."""
    tmp = tmp_path_factory.mktemp("pair")
    url = fresh_database_url() or f"sqlite:///{tmp}/shared.sqlite"
    servers = [Server(tmp / f"s{i}", {"EC2EMU_CREDENTIALS": CREDENTIALS, "EC2EMU_HOST_AGENT": str(i == 0)},
                      database_url=url) for i in (0, 1)]
    servers[0].start()  # the schema is migrated once, before the second starts
    servers[1].start()
    yield servers
    for s in servers:
        s.stop()


def _both(pair, region: str, per_server: int = 4) -> list:
    return [s.client(region=region) for s in pair for _ in range(per_server)]


def _outcome(results) -> tuple[list, set[str]]:
    won = [r for r in results if not isinstance(r, ClientError)]
    return won, {r.response["Error"]["Code"] for r in results if isinstance(r, ClientError)}


def test_two_api_processes_make_an_accounts_defaults_once(pair):
    """The first requests of an account in a region reach both processes at once: still one
    default VPC, one subnet per zone."""
    clients = _both(pair, "ap-southeast-2")
    results = _together(len(clients), lambda i: clients[i].describe_vpcs()["Vpcs"])
    errors = [r for r in results if isinstance(r, ClientError)]
    assert not errors, [e.response["Error"] for e in errors]
    ids = {v["VpcId"] for r in results for v in r}
    assert len(ids) == 1, ids  # everyone saw the same, single default VPC
    assert len(clients[0].describe_vpcs()["Vpcs"]) == 1
    assert len(clients[-1].describe_subnets()["Subnets"]) == 3  # one per zone, made once


def test_exactly_once_across_two_api_processes(pair):
    """One winner for each of: a key pair name, a group name, a rule, a ClientToken, a delete —
    the database keeps the invariants, not one process's memory."""
    clients = _both(pair, "us-west-2")
    n = len(clients)

    key = unique("k")
    won, lost = _outcome(_together(n, lambda i: clients[i].create_key_pair(KeyName=key)))
    assert len(won) == 1 and lost == {"InvalidKeyPair.Duplicate"}, lost

    name = unique("g")
    won, lost = _outcome(_together(n, lambda i: clients[i].create_security_group(GroupName=name, Description="d")))
    assert len(won) == 1 and lost == {"InvalidGroup.Duplicate"}, lost
    group = won[0]["GroupId"]

    rule = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.9.0.0/16"}]}
    won, lost = _outcome(_together(n, lambda i: clients[i].authorize_security_group_ingress(
        GroupId=group, IpPermissions=[rule])))
    assert len(won) == 1 and lost == {"InvalidPermission.Duplicate"}, lost
    rules = clients[0].describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])
    assert sum(1 for r in rules["SecurityGroupRules"] if r.get("CidrIpv4") == "10.9.0.0/16") == 1

    token, image = unique("tok"), tiny_image(clients[0])
    won, lost = _outcome(_together(n, lambda i: clients[i].run_instances(
        ImageId=image, MinCount=1, MaxCount=1, ClientToken=token)))
    assert not lost and len({w["ReservationId"] for w in won}) == 1  # every answer is the one launch
    launched = clients[0].describe_instances(Filters=[{"Name": "client-token", "Values": [token]}])
    assert [len(r["Instances"]) for r in launched["Reservations"]] == [1]
    # Whichever process took the launch, the host agent ran it; one asked of the API-only
    # process comes up too (its host task is found by the agent's worker).
    fast_waiter(clients[-1], "instance_running")(InstanceIds=[launched["Reservations"][0]["Instances"][0]["InstanceId"]])
    via_api_only = clients[-1].run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    fast_waiter(clients[0], "instance_running")(InstanceIds=[via_api_only])
    clients[0].terminate_instances(InstanceIds=[via_api_only])

    doomed = clients[0].create_security_group(GroupName=unique("d"), Description="d")["GroupId"]
    won, lost = _outcome(_together(n, lambda i: clients[i].delete_security_group(GroupId=doomed)))
    assert len(won) == 1 and lost == {"InvalidGroup.NotFound"}, lost
    clients[0].terminate_instances(InstanceIds=[i["InstanceId"] for r in launched["Reservations"]
                                                for i in r["Instances"]])


@pytest.fixture(scope="module")
def ten(server):
    """Ten instances in a region of their own (so counts are exact)."""
    ec2 = server.client(region="ca-central-1")
    ids = sorted(i["InstanceId"] for i in ec2.run_instances(ImageId=tiny_image(ec2), MinCount=10,
                                                             MaxCount=10)["Instances"])
    yield ec2, ids
    ec2.terminate_instances(InstanceIds=ids)


def _page(ec2, **kw) -> tuple[list[str], str | None]:
    out = ec2.describe_instances(**kw)
    return [i["InstanceId"] for r in out["Reservations"] for i in r["Instances"]], out.get("NextToken")


def test_paging_edges(ten):
    ec2, ids = ten
    first, token = _page(ec2, MaxResults=5)
    assert token and len(first) == 5
    second, last = _page(ec2, MaxResults=5, NextToken=token)
    assert last is None and sorted(first + second) == ids  # an exact multiple: no empty third page
    # The same token again gives the same page (tokens are positions, not one-shot).
    assert _page(ec2, MaxResults=5, NextToken=token) == (second, None)
    # A token replayed with other filters continues from its position within the new selection.
    running = _page(ec2, MaxResults=5, NextToken=token,
                    Filters=[{"Name": "instance-id", "Values": [ids[9]]}])
    assert running == ([ids[9]], None)
    # Rows gone between pages are simply not shown; none shown twice.
    ec2.create_tags(Resources=ids, Tags=[{"Key": "page", "Value": "x"}])
    out = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["page"]}], MaxResults=5)
    ec2.delete_tags(Resources=[out["Tags"][-1]["ResourceId"], ids[-1]], Tags=[{"Key": "page"}])
    rest = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["page"]}], MaxResults=5, NextToken=out["NextToken"])
    seen = [t["ResourceId"] for t in out["Tags"] + rest["Tags"]]
    assert len(seen) == len(set(seen)) == 9 and ids[-1] not in seen
    for bad in ("nonsense", base64.urlsafe_b64encode(b"other:i-0").decode(), "%%%"):
        code, _ = error_of(ec2.describe_instances, MaxResults=5, NextToken=bad)
        assert code == "InvalidNextToken", (bad, code)


def test_retention_and_the_instance_limit(tmp_path):
    srv = Server(tmp_path / "state", {"EC2EMU_TERMINATED_RETENTION_SECONDS": "2", "EC2EMU_MAX_INSTANCES": "3"})
    srv.start()
    try:
        ec2 = srv.client()
        image = tiny_image(ec2)
        code, message = error_of(ec2.run_instances, ImageId=image, MinCount=4, MaxCount=4)
        assert code == "InstanceLimitExceeded" and "instance limit of 3" in message
        # MaxCount above the room left is trimmed to it (MinCount fits), as AWS does.
        ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=1, MaxCount=5)["Instances"]]
        assert len(ids) == 3
        ec2.create_tags(Resources=ids[:1], Tags=[{"Key": "gone", "Value": "soon"}])
        ec2.terminate_instances(InstanceIds=ids)
        fast_waiter(ec2, "instance_terminated")(InstanceIds=ids)  # visible while retained
        deadline = time.monotonic() + 10
        while ec2.describe_instances()["Reservations"]:
            assert time.monotonic() < deadline, "terminated instances were never purged"
            time.sleep(0.5)
        assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": ids[:1]}])["Tags"] == []
        code, _ = error_of(ec2.describe_instances, InstanceIds=ids[:1])
        assert code == "InvalidInstanceID.NotFound"
        assert len(ec2.run_instances(ImageId=image, MinCount=3, MaxCount=3)["Instances"]) == 3  # room again
    finally:
        srv.stop()


def test_a_subnet_without_enough_free_addresses(server):
    """A default subnet (/20) has 4091 usable addresses (AWS keeps five): asking for more at
    once is refused whole, and nothing is launched."""
    ec2 = server.client(region="eu-north-1")
    subnet = ec2.describe_subnets()["Subnets"][0]
    assert subnet["AvailableIpAddressCount"] == 4091
    code, message = error_of(ec2.run_instances, ImageId=tiny_image(ec2), MinCount=4092, MaxCount=4092,
                             SubnetId=subnet["SubnetId"])
    assert code == "InsufficientFreeAddressesInSubnet" and subnet["SubnetId"] in message
    assert ec2.describe_instances()["Reservations"] == []
    assert ec2.describe_subnets(SubnetIds=[subnet["SubnetId"]])["Subnets"][0]["AvailableIpAddressCount"] == 4091


def _read_then_write(url: str, lock: bool) -> str:
    """A writer holds SQLite's write lock (its UPDATE made, not yet committed) while another
    transaction reads the row and writes from what it read, as a guest's event does; returns
    the row's state at the end: the first writer's (right) or the second's (an undone commit)."""
    from sqlalchemy import text

    from emulator import db
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, state TEXT)")
        conn.exec_driver_sql("DELETE FROM t")
        conn.exec_driver_sql("INSERT INTO t VALUES (1, 'pending')")
    Session = db.session_factory(engine)
    first_wrote, done = threading.Event(), threading.Event()

    def terminate() -> None:
        with Session() as s:
            s.execute(text("UPDATE t SET state = 'shutting-down' WHERE id = 1"))
            first_wrote.set()
            time.sleep(0.5)  # the other transaction reads and waits meanwhile
            s.commit()
        done.set()
    t = threading.Thread(target=terminate)
    t.start()
    first_wrote.wait(5)
    with Session() as s:
        if lock:
            db.lock_for_write(s)
        # FOR UPDATE, as the event's session.get(..., with_for_update=True): PostgreSQL's lock
        # (SQLite does not know the clause; SQLAlchemy leaves it out there, and so does this).
        sql = "SELECT state FROM t WHERE id = 1" + ("" if url.startswith("sqlite") else " FOR UPDATE")
        state = s.execute(text(sql)).scalar()
        if state == "pending":  # the guest's RUNNING event: pending -> running
            s.execute(text("UPDATE t SET state = 'running' WHERE id = 1"))
        s.commit()
    t.join()
    with engine.connect() as conn:
        final = conn.exec_driver_sql("SELECT state FROM t WHERE id = 1").scalar()
    engine.dispose()
    return final


def test_a_read_then_write_waits_for_the_writer_in_progress(tmp_path):
    """db.lock_for_write (a hypervisor event's transaction takes it): on SQLite the event reads
    the state only once the TerminateInstances in progress has committed, so it cannot turn
    shutting-down back into running. Positive control: without it, on SQLite, it does."""
    url = fresh_database_url() or f"sqlite:///{tmp_path}/rw.sqlite"
    assert _read_then_write(url, lock=True) == "shutting-down"
    if url.startswith("sqlite"):
        assert _read_then_write(url, lock=False) == "running"  # the hazard the lock removes
