"""The emulator's own admin calls, which EC2 has not: `POST /ec2emu/admin` with `Action=...`,
signed like any request (an account's credentials: it acts in that account), answered in EC2's
XML. Their handlers are registered as `ec2emu:<Action>` beside the resource they act on.

  InterruptSpotInstances  InstanceId.N, NoticeSeconds (default 120): a Spot interruption notice
                          (emulator/spot.py); what `ec2emu spot interrupt` sends. AWS's own way is
                          Fault Injection Service's aws:ec2:send-spot-instance-interruptions.
"""
from __future__ import annotations

import re

from emulator.errors import InvalidAction, MissingParameter

PATH = "/ec2emu/admin"
ACTIONS = {"InterruptSpotInstances": ("InstanceId", "NoticeSeconds")}  # action -> its parameters


def parse(params: dict) -> tuple[str, dict]:
    """-> (handler name, its parameters): `Name.N` members gathered into a list `Names`."""
    action = params.get("Action", "")
    if action not in ACTIONS:
        raise InvalidAction(action)
    out: dict = {}
    for name in ACTIONS[action]:
        listed = sorted((int(m.group(1)), v) for k, v in params.items() if (m := re.fullmatch(rf"{name}\.(\d+)", k)))
        if listed:
            out[name + "s"] = [v for _, v in listed]
        elif name in params:
            out[name] = params[name]
    if action == "InterruptSpotInstances" and not out.get("InstanceIds"):
        raise MissingParameter("InstanceId.1")
    return "ec2emu:" + action, out
