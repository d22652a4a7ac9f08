"""The error classes: AWS's code, status and exact message, singular and plural."""
from __future__ import annotations

import inspect

import pytest

from emulator import errors
from emulator.errors import (AuthFailure, DryRunOperation, EC2Error, IncorrectInstanceState, InvalidAMIIDMalformed,
                             InvalidAMIIDNotFound, InvalidGroupNotFound, InvalidInstanceIDMalformed,
                             InvalidInstanceIDNotFound, InvalidInstanceType, InvalidKeyPairNotFound,
                             InvalidParameterCombination, InvalidParameterValue, InvalidSubnetIDNotFound,
                             InvalidVpcIDNotFound, MissingParameter, NotFound, OperationNotPermitted,
                             SignatureDoesNotMatch)


def wire(err: EC2Error) -> tuple[str, str, int]:
    return err.code, err.message, err.status


@pytest.mark.parametrize("cls, ids, expected", [
    (InvalidInstanceIDNotFound, ["i-1"], "The instance ID 'i-1' does not exist"),
    (InvalidInstanceIDNotFound, ["i-1", "i-2"], "The instance IDs 'i-1, i-2' do not exist"),
    (InvalidInstanceIDNotFound, ["i-1", "i-1"], "The instance ID 'i-1' does not exist"),  # once each
    (InvalidAMIIDNotFound, ["ami-1"], "The image id '[ami-1]' does not exist"),
    (InvalidAMIIDNotFound, ["ami-1", "ami-2"], "The image ids '[ami-1, ami-2]' do not exist"),
    (InvalidVpcIDNotFound, ["vpc-1", "vpc-2"], "The vpc IDs 'vpc-1, vpc-2' do not exist"),
    (InvalidSubnetIDNotFound, ["subnet-1"], "The subnet ID 'subnet-1' does not exist"),
    (InvalidInstanceType, ["a.b", "c.d"], "The following supplied instance types do not exist: [a.b, c.d]"),
    # No plural form known for these: the first missing one is named.
    (InvalidKeyPairNotFound, ["k1", "k2"], "The key pair 'k1' does not exist"),
    (InvalidGroupNotFound, ["sg-1", "sg-2"], "The security group 'sg-1' does not exist"),
])
def test_not_found_messages(cls, ids, expected):
    err = cls(*ids)
    assert err.message == expected and str(err) == expected
    assert err.status == 400 and isinstance(err, NotFound)


def test_not_found_codes():
    assert InvalidInstanceIDNotFound("i-1").code == "InvalidInstanceID.NotFound"
    assert InvalidAMIIDNotFound("ami-1").code == "InvalidAMIID.NotFound"
    assert InvalidKeyPairNotFound("k").code == "InvalidKeyPair.NotFound"


def test_group_not_found_in_a_vpc():
    assert InvalidGroupNotFound.in_vpc("web", "vpc-1", default=True).message == \
        "The security group 'web' does not exist in default VPC 'vpc-1'"
    assert InvalidGroupNotFound.in_vpc("web", "vpc-1", default=False).message == \
        "The security group 'web' does not exist in VPC 'vpc-1'"
    err = InvalidGroupNotFound.in_vpc("web", None, default=True)
    assert wire(err) == ("InvalidGroup.NotFound", "The security group 'web' does not exist in default VPC", 400)


def test_malformed():
    assert wire(InvalidAMIIDMalformed("x")) == ("InvalidAMIID.Malformed", 'Invalid id: "x" (expecting "ami-...")', 400)
    assert InvalidAMIIDMalformed("x", "aki").message == 'Invalid id: "x" (expecting "aki-...")'
    assert wire(InvalidInstanceIDMalformed("x")) == ("InvalidInstanceID.Malformed", 'Invalid id: "x"', 400)


def test_statuses_and_fixed_messages():
    assert wire(DryRunOperation()) == ("DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412)
    assert SignatureDoesNotMatch().status == 403
    assert wire(AuthFailure()) == ("AuthFailure", "AWS was not able to validate the provided access credentials", 401)
    assert wire(AuthFailure.image("ami-1")) == ("AuthFailure", "Not authorized for image:ami-1", 400)
    assert isinstance(AuthFailure(), errors.AuthError)


def test_parameter_errors():
    assert wire(MissingParameter("ImageId")) == (
        "MissingParameter", "The request must contain the parameter ImageId", 400)
    assert MissingParameter.no_attributes().message == "No attributes specified."
    assert InvalidParameterCombination.together("instancesSet", "maxResults").message == \
        "The parameter instancesSet cannot be used with the parameter maxResults"
    assert InvalidParameterValue.value("x", "attribute").message == "Value (x) for parameter attribute is invalid."
    assert InvalidParameterValue.value(0, "HttpPutResponseHopLimit", "Expecting a value between 1 and 64.").message \
        == "Value (0) for parameter HttpPutResponseHopLimit is invalid. Expecting a value between 1 and 64."
    assert InvalidParameterValue.invalid("abc", "MinCount", "Expected an integer.").message == \
        "Invalid value 'abc' for MinCount. Expected an integer."
    assert InvalidParameterValue.max_results(4, 5, 1000).message == \
        "Value ( 4 ) for parameter maxResults is invalid. Expecting a value between 5 and 1000."
    assert InvalidParameterValue.filter(None).message == "The filter 'null' is invalid"


def test_instance_state_messages():
    assert IncorrectInstanceState.cannot("i-1", "started").message == \
        "The instance 'i-1' is not in a state from which it can be started."
    assert IncorrectInstanceState.cannot("i-1", "stopped").message == \
        "This instance 'i-1' is not in a state from which it can be stopped."  # AWS's own wording
    assert OperationNotPermitted("i-1", "terminated", "disableApiTermination").message == (
        "The instance 'i-1' may not be terminated. Modify its 'disableApiTermination' instance attribute "
        "and try again.")


def test_every_class_is_named_after_its_code():
    """One class per AWS error code, its name the code without dots: a reader finds the class
    from the code on the wire."""
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, EC2Error) and c is not EC2Error and "code" in vars(c)]
    assert len(classes) > 40
    for cls in classes:
        assert cls.__name__ == cls.code.replace(".", ""), cls
