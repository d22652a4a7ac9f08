"""Another account's resources are invisible: naming them answers exactly what naming something
that does not exist answers (no existence oracle across accounts)."""
from .conftest import OTHER_ACCOUNT
from .helpers import error_of, unique

MADE_UP = "sg-0123456789abcdef0"


def _pair_error(ec2, target: str, pair: dict) -> tuple[str, str]:
    return error_of(ec2.authorize_security_group_ingress, GroupId=target, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "UserIdGroupPairs": [pair]}])


def test_another_accounts_group_in_user_id_group_pairs_is_not_found_like_a_made_up_one(ec2, other_account):
    theirs_name = unique("theirs")
    theirs = other_account.create_security_group(GroupName=theirs_name, Description="d")["GroupId"]
    mine = ec2.create_security_group(GroupName=unique("mine"), Description="d")["GroupId"]
    for user in ({"UserId": OTHER_ACCOUNT}, {}):
        real = _pair_error(ec2, mine, {"GroupId": theirs, **user})
        made_up = _pair_error(ec2, mine, {"GroupId": MADE_UP, **user})
        assert real[0] == made_up[0] == "InvalidGroup.NotFound", (real, made_up)
        assert real[1] == made_up[1].replace(MADE_UP, theirs)
    real = _pair_error(ec2, mine, {"GroupName": theirs_name, "UserId": OTHER_ACCOUNT})
    made_up = _pair_error(ec2, mine, {"GroupName": "no-such-" + theirs_name, "UserId": OTHER_ACCOUNT})
    assert real[0] == made_up[0] == "InvalidGroup.NotFound"
    assert real[1] == made_up[1].replace("no-such-" + theirs_name, theirs_name)
    # the legacy top-level form (SourceSecurityGroupName + SourceSecurityGroupOwnerId) alike
    legacy = error_of(ec2.authorize_security_group_ingress, GroupId=mine, SourceSecurityGroupName=theirs_name,
                      SourceSecurityGroupOwnerId=OTHER_ACCOUNT)
    assert legacy == real
    # nothing was granted
    perms = ec2.describe_security_groups(GroupIds=[mine])["SecurityGroups"][0]["IpPermissions"]
    assert all(p["UserIdGroupPairs"] == [] for p in perms)
    # and the owner can still reference it in its own groups
    own = other_account.create_security_group(GroupName=unique("own"), Description="d")["GroupId"]
    other_account.authorize_security_group_ingress(GroupId=own, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "UserIdGroupPairs": [{"GroupId": theirs, "UserId": OTHER_ACCOUNT}]}])
