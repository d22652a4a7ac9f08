"""EC2 errors as handlers raise them: AWS's code, message and HTTP status.

The API layer renders them as <Response><Errors><Error>...; nothing here knows XML.
"""
from __future__ import annotations


class EC2Error(Exception):
    code = "InternalError"
    status = 400

    def __init__(self, message: str, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status


def error(code: str, message: str, status: int = 400) -> EC2Error:
    return EC2Error(message, code, status)


def not_found(code: str, what: str, ident: str) -> EC2Error:
    """AWS's '<what> ID '<x>' does not exist' family."""
    return EC2Error(f"The {what} '{ident}' does not exist", code)


def invalid_value(message: str) -> EC2Error:
    return EC2Error(message, "InvalidParameterValue")


def missing(name: str) -> EC2Error:
    return EC2Error(f"The request must contain the parameter {name}", "MissingParameter")


def dry_run_ok() -> EC2Error:
    return EC2Error("Request would have succeeded, but DryRun flag is set.", "DryRunOperation", 412)
