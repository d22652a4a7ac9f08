"""The metadata service's lookup on a real database: (VPC, source address) -> exactly one
instance, also when a private address was used before by another instance (now terminated)."""
from datetime import datetime, timezone

import pytest

from emulator import db
from emulator.models import Instance, Tag
from metadata.server import MetadataServer


def _row(iid: str, vpc: str, ip: str | None, state: str) -> Instance:
    subnet = "subnet-" + vpc[4:]
    return Instance(id=iid, account_id="123456789012", region="us-east-1", reservation_id="r-1",
                    image_id="ami-1", instance_type="t2.micro", state=state, vpc_id=vpc, subnet_id=subnet,
                    availability_zone="us-east-1a", private_ip=ip, mac_address="0a:00:00:00:00:01",
                    network_interface_id="eni-1", security_group_ids=[],
                    launch_time=datetime.now(timezone.utc), key_name=None)


@pytest.fixture
def server(tmp_path):
    url = f"sqlite:///{tmp_path}/m.sqlite"
    db.migrate(url)
    Session = db.session_factory(db.make_engine(url))
    with Session() as s:
        # i-old had 172.31.0.10 and was terminated (its address released); i-new has it now.
        s.add_all([_row("i-old", "vpc-a", None, "terminated"), _row("i-new", "vpc-a", "172.31.0.10", "running"),
                   # the same address in another VPC (CIDRs of different VPCs may overlap)
                   _row("i-other", "vpc-b", "172.31.0.10", "running"),
                   _row("i-ending", "vpc-a", "172.31.0.11", "shutting-down"),
                   _row("i-off", "vpc-a", "172.31.0.13", "stopped")])
        s.add(Tag(resource_id="i-old", key="Name", value="old", resource_type="instance",
                  account_id="123456789012", region="us-east-1"))
        s.commit()
    return MetadataServer(Session, tmp_path / "md")


def test_a_reused_address_answers_its_new_owner_only(server):
    found = server.lookup("vpc-a", "172.31.0.10")
    assert found is not None and found.instance.id == "i-new" and found.tags == {}
    assert server.lookup("vpc-b", "172.31.0.10").instance.id == "i-other"
    assert server.lookup("vpc-c", "172.31.0.10") is None  # positive: only where it lives
    assert server.lookup("vpc-a", "172.31.0.12") is None
    # A guest shutting down (or stopping) still runs and may still read its metadata, as on AWS;
    # a stopped one runs nothing and is not served.
    assert server.lookup("vpc-a", "172.31.0.11").instance.id == "i-ending"
    assert server.lookup("vpc-a", "172.31.0.13") is None


def test_an_instance_is_found_from_its_other_interfaces_too(server):
    """A request from an attached interface's address is its instance's; the tree lists every
    attached interface (primary first)."""
    from emulator.models import NetworkInterface
    with server.session_factory() as s:
        for eni, index, ip, mac in (("eni-1", 0, "172.31.0.10", "0a:00:00:00:00:01"),
                                    ("eni-2", 1, "172.31.16.5", "0a:00:00:00:00:02")):
            s.add(NetworkInterface(id=eni, account_id="123456789012", region="us-east-1", vpc_id="vpc-a",
                                   subnet_id="subnet-a", availability_zone="us-east-1a", mac_address=mac,
                                   private_ip=ip, secondary_ips=[], security_group_ids=[], status="in-use",
                                   instance_id="i-new", device_index=index, attachment_state="attached"))
        s.commit()
    found = server.lookup("vpc-a", "172.31.16.5")
    assert found is not None and found.instance.id == "i-new"
    assert [(i["id"], i["device_index"], i["ips"]) for i in found.interfaces] == [
        ("eni-1", 0, ["172.31.0.10"]), ("eni-2", 1, ["172.31.16.5"])]
    assert server.lookup("vpc-a", "172.31.16.6") is None  # the control: an address nobody has
