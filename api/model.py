"""botocore's EC2 service model: the one source of the wire format (input names, output names,
types, enums, required members)."""
from __future__ import annotations

import functools

import botocore.session
from botocore.model import OperationModel, ServiceModel

XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"


@functools.cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("ec2")


@functools.cache
def operation(name: str) -> OperationModel | None:
    model = service_model()
    if name not in _operation_names():
        return None
    return model.operation_model(name)


@functools.cache
def _operation_names() -> frozenset[str]:
    return frozenset(service_model().operation_names)


def operation_names() -> list[str]:
    return sorted(_operation_names())
