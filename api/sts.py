"""STS on the EC2 endpoint: GetCallerIdentity, which clients call to learn their account id
(Ansible's ec2_security_group does before it touches a group). A request is STS's when its SigV4
credential scope names the service `sts`; api/app.py dispatches it here, already authenticated.

An account's own access key is its root user's: AWS answers `arn:aws:iam::ACCOUNT:root` with the
account id as UserId (an IAM user would be `...:user/NAME` with an `AIDA...` id). An instance role's
temporary credentials are the role assumed by the instance: `arn:aws:sts::ACCOUNT:assumed-role/
ROLE/INSTANCE-ID`, UserId `AROA...:INSTANCE-ID`. Other STS actions answer STS's error XML.
"""
from __future__ import annotations

import functools
from xml.sax.saxutils import escape

from emulator.errors import EC2Error, InvalidAction, MissingAction

XMLNS = "https://sts.amazonaws.com/doc/2011-06-15/"
VERSION = "2011-06-15"


@functools.cache
def operation_names() -> frozenset[str]:
    import botocore.session
    return frozenset(botocore.session.get_session().get_service_model("sts").operation_names)


def handle(params: dict, account_id: str, request_id: str, role=None) -> tuple[int, bytes]:
    """-> (HTTP status, body) for an authenticated STS request (`role`: the instance role
    behind temporary credentials, emulator.instance_profiles.RoleCaller)."""
    action = params.get("Action")
    try:
        if not action:
            raise MissingAction()
        if action == "GetCallerIdentity":
            if role is not None:
                return 200, _caller_identity(account_id, request_id, role.arn, role.user_id)
            return 200, _caller_identity(account_id, request_id, f"arn:aws:iam::{account_id}:root", account_id)
        if action in operation_names():
            raise InvalidAction.worded(f"The action {action} is not implemented by this emulator "
                                       "(of STS, only GetCallerIdentity is).")
        raise InvalidAction.worded(f"Could not find operation {action} for version {VERSION}")
    except EC2Error as exc:
        return exc.status, render_error(exc, request_id)


def _caller_identity(account_id: str, request_id: str, arn: str, user_id: str) -> bytes:
    return (f'<GetCallerIdentityResponse xmlns="{XMLNS}"><GetCallerIdentityResult>'
            f"<Arn>{escape(arn)}</Arn><UserId>{escape(user_id)}</UserId>"
            f"<Account>{account_id}</Account></GetCallerIdentityResult>"
            f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
            f"</GetCallerIdentityResponse>").encode()


def render_error(exc: EC2Error, request_id: str) -> bytes:
    kind = "Receiver" if exc.status >= 500 else "Sender"
    return (f'<ErrorResponse xmlns="{XMLNS}"><Error><Type>{kind}</Type><Code>{escape(exc.code)}</Code>'
            f"<Message>{escape(exc.message)}</Message></Error><RequestId>{request_id}</RequestId>"
            f"</ErrorResponse>").encode()
