"""EC2 errors as handlers raise them: AWS's code, message and HTTP status.

One class per AWS error code, named after the code without its dots
(``InvalidInstanceID.NotFound`` -> ``InvalidInstanceIDNotFound``), built from the ids or values
the message names; the message text is AWS's. Families share a base: ``NotFound`` (singular and,
where AWS has one, plural message), ``Malformed`` (``Invalid id: "x" (expecting "p-...")``),
``AuthError`` (signature checks, raised by api/auth.py). The error codes are written here only.

The API layer renders them as <Response><Errors><Error>...; nothing here knows XML.
"""
from __future__ import annotations


class EC2Error(Exception):
    code = "InternalError"
    status = 400
    message = ""  # a class whose message never varies says it here

    def __init__(self, message: str | None = None, code: str | None = None, status: int | None = None):
        if message is not None:
            self.message = message
        super().__init__(self.message)
        if code:
            self.code = code
        if status:
            self.status = status

    @classmethod
    def worded(cls, message: str):
        """An error of this class with this exact message, for the rare wording the class's own
        constructor does not build."""
        err = cls.__new__(cls)
        EC2Error.__init__(err, message)
        return err


class InternalError(EC2Error):
    """What the API answers for a failure that is not an EC2 error (a bug): nothing of it on the wire."""
    code = "InternalError"
    status = 500
    message = ("An internal error has occurred. The request was not applied unless a later "
              "describe shows it was.")


def _unique(values) -> list[str]:
    return [str(v) for v in dict.fromkeys(values)]


# ------------------------------------------------------------------------------- not found

class NotFound(EC2Error):
    """'<what> does not exist' for one id, or for several at once where AWS has a plural form
    (``plural`` set); without one, the message names the first missing id only."""
    singular = "The {} does not exist"
    plural: str | None = None

    def __init__(self, *ids: str):
        self.ids = _unique(ids)
        if len(self.ids) > 1 and self.plural:
            message = self.plural.format(", ".join(self.ids))
        else:
            message = self.singular.format(self.ids[0])
        super().__init__(message)


class InvalidInstanceIDNotFound(NotFound):
    code = "InvalidInstanceID.NotFound"
    singular = "The instance ID '{}' does not exist"
    plural = "The instance IDs '{}' do not exist"


class InvalidAMIIDNotFound(NotFound):
    code = "InvalidAMIID.NotFound"
    singular = "The image id '[{}]' does not exist"
    plural = "The image ids '[{}]' do not exist"


class InvalidVpcIDNotFound(NotFound):
    code = "InvalidVpcID.NotFound"
    singular = "The vpc ID '{}' does not exist"
    plural = "The vpc IDs '{}' do not exist"


class InvalidSubnetIDNotFound(NotFound):
    code = "InvalidSubnetID.NotFound"
    singular = "The subnet ID '{}' does not exist"
    plural = "The subnet IDs '{}' do not exist"


class InvalidKeyPairNotFound(NotFound):
    code = "InvalidKeyPair.NotFound"
    singular = "The key pair '{}' does not exist"


class InvalidGroupNotFound(NotFound):
    code = "InvalidGroup.NotFound"
    singular = "The security group '{}' does not exist"

    @classmethod
    def in_vpc(cls, name: str, vpc_id: str | None, default: bool) -> InvalidGroupNotFound:
        """Named in a VPC: '... does not exist in default VPC 'vpc-1'' (no id: no default VPC)."""
        where = "default VPC" if default else "VPC"
        return cls.worded(f"The security group '{name}' does not exist in {where}" + (f" '{vpc_id}'" if vpc_id else ""))


class InvalidSecurityGroupRuleIdNotFound(NotFound):
    code = "InvalidSecurityGroupRuleId.NotFound"
    singular = "The security group rule ID '{}' does not exist"


class InvalidConversionTaskId(NotFound):
    code = "InvalidConversionTaskId"
    singular = "The import task ID '{}' does not exist"


class InvalidAKIIDNotFound(NotFound):
    code = "InvalidAKIID.NotFound"
    singular = "The kernel image id '[{}]' does not exist"


class InvalidARIIDNotFound(NotFound):
    code = "InvalidARIID.NotFound"
    singular = "The ramdisk image id '[{}]' does not exist"


class InvalidAddressNotFound(NotFound):
    code = "InvalidAddress.NotFound"
    singular = "Address '{}' not found."


class InvalidAllocationIDNotFound(NotFound):
    code = "InvalidAllocationID.NotFound"
    singular = "The allocation ID '{}' does not exist"


class InvalidInstanceType(NotFound):
    code = "InvalidInstanceType"
    singular = plural = "The following supplied instance types do not exist: [{}]"


class InvalidVolumeNotFound(NotFound):
    code = "InvalidVolume.NotFound"
    singular = "The volume '{}' does not exist."


class InvalidSnapshotNotFound(NotFound):
    code = "InvalidSnapshot.NotFound"
    singular = "The snapshot '{}' does not exist."


class InvalidVolumeModificationNotFound(NotFound):
    code = "InvalidVolumeModification.NotFound"
    singular = "Modification for volume '{}' does not exist."


class InvalidAttachmentNotFound(EC2Error):
    code = "InvalidAttachment.NotFound"

    @classmethod
    def not_attached(cls, volume_id: str, instance_id: str) -> InvalidAttachmentNotFound:
        return cls(f"Volume {volume_id} can not be detached from {instance_id} because it is not attached")

    @classmethod
    def not_as_device(cls, volume_id: str, instance_id: str, device: str) -> InvalidAttachmentNotFound:
        return cls(f"The volume {volume_id} is not attached to instance {instance_id} as device {device}")


class InvalidPermissionNotFound(EC2Error):
    code = "InvalidPermission.NotFound"
    message = "The specified rule does not exist in this security group."


# ------------------------------------------------------------------------------- malformed

class Malformed(EC2Error):
    """'Invalid id: "x" (expecting "<prefix>-...")'; no prefix: 'Invalid id: "x"'."""
    prefix: str | None = None

    def __init__(self, ident: str, prefix: str | None = None):
        prefix = prefix or self.prefix
        super().__init__(f'Invalid id: "{ident}"' + (f' (expecting "{prefix}-...")' if prefix else ""))


class InvalidID(Malformed):
    code = "InvalidID"


class InvalidInstanceIDMalformed(Malformed):
    code = "InvalidInstanceID.Malformed"


class InvalidAMIIDMalformed(Malformed):
    code = "InvalidAMIID.Malformed"
    prefix = "ami"


class InvalidKernelIdMalformed(Malformed):
    code = "InvalidKernelId.Malformed"
    prefix = "aki"


class InvalidRamDiskIdMalformed(Malformed):
    code = "InvalidRamDiskId.Malformed"
    prefix = "ari"


class InvalidSnapshotIDMalformed(Malformed):
    code = "InvalidSnapshotID.Malformed"
    prefix = "snap"


class InvalidVolumeIDMalformed(Malformed):
    code = "InvalidVolumeID.Malformed"
    prefix = "vol"


class InvalidGroupIdMalformed(Malformed):
    code = "InvalidGroupId.Malformed"
    prefix = "sg"


class InvalidSecurityGroupRuleIdMalformed(Malformed):
    code = "InvalidSecurityGroupRuleId.Malformed"
    prefix = "sgr"


class InvalidPrefixListIdMalformed(Malformed):
    code = "InvalidPrefixListId.Malformed"
    prefix = "pl"


class InvalidConversionTaskIdMalformed(Malformed):
    code = "InvalidConversionTaskId.Malformed"
    prefix = "import-ami"


class InvalidUserIDMalformed(EC2Error):
    code = "InvalidUserID.Malformed"

    def __init__(self, user: str):
        super().__init__(f'Invalid user id: "{user}"')


class InvalidAMINameMalformed(EC2Error):
    code = "InvalidAMIName.Malformed"
    message = ("AMI names must be between 3 and 128 characters long, and may contain letters, "
              "numbers, '(', ')', '.', '-', '/' and '_'")


class InvalidUserDataMalformed(EC2Error):
    code = "InvalidUserData.Malformed"
    message = "Invalid BASE64 encoding of user data."


class InvalidKeyFormat(EC2Error):
    code = "InvalidKey.Format"

    def __init__(self, reason: str):
        super().__init__(f"Key is not in valid OpenSSH public key format ({reason})")


# ------------------------------------------------------------------------------- duplicates

class InvalidKeyPairDuplicate(EC2Error):
    code = "InvalidKeyPair.Duplicate"

    def __init__(self, name: str):
        super().__init__(f"The keypair '{name}' already exists.")


class InvalidGroupDuplicate(EC2Error):
    code = "InvalidGroup.Duplicate"

    def __init__(self, name: str, vpc_id: str):
        super().__init__(f"The security group '{name}' already exists for VPC '{vpc_id}'")


class InvalidAMINameDuplicate(EC2Error):
    code = "InvalidAMIName.Duplicate"

    def __init__(self, name: str, image_id: str):
        super().__init__(f"AMI name {name} is already in use by AMI {image_id}")


class InvalidPermissionDuplicate(EC2Error):
    code = "InvalidPermission.Duplicate"

    def __init__(self, rule: str):
        super().__init__(f'the specified rule "{rule}" already exists')


class IdempotentParameterMismatch(EC2Error):
    code = "IdempotentParameterMismatch"
    message = ("Arguments on this idempotent request are inconsistent with arguments "
              "used in previous request(s).")


# ---------------------------------------------------------------------------- request shape

class MissingParameter(EC2Error):
    code = "MissingParameter"

    def __init__(self, name: str):
        super().__init__(f"The request must contain the parameter {name}")

    @classmethod
    def no_attributes(cls) -> MissingParameter:
        return cls.worded("No attributes specified.")


class MissingAction(EC2Error):
    code = "MissingAction"
    message = "The request must contain the parameter Action"


class InvalidAction(EC2Error):
    code = "InvalidAction"

    def __init__(self, action: str):
        super().__init__(f"The action {action} is not valid for this web service.")

    @classmethod
    def not_implemented(cls, action: str) -> InvalidAction:
        """An operation of the model that this emulator does not implement yet."""
        return cls.worded(f"The action {action} is not implemented by this emulator yet "
                          f"(see `ec2emu coverage`).")


class UnsupportedOperation(EC2Error):
    code = "UnsupportedOperation"

    @classmethod
    def http_method(cls, method: str) -> UnsupportedOperation:
        """A request neither GET nor POST: HTTP 405 (the answer carries `Allow: GET, POST`)."""
        return cls(f"The HTTP method {method[:32]} is not supported. Send EC2 API requests as GET or POST.",
                   status=405)


class InvalidRequest(EC2Error):
    code = "InvalidRequest"

    @classmethod
    def url_too_long(cls, length: int, limit: int) -> InvalidRequest:
        return cls(f"The request URL is {length} bytes long; at most {limit} can be read. "
                   "Send the parameters in a POST body instead.", status=414)

    @classmethod
    def unreadable(cls) -> InvalidRequest:
        return cls("The request is not a valid HTTP/1.1 request.")


class UnknownParameter(EC2Error):
    code = "UnknownParameter"

    def __init__(self, name: str):
        super().__init__(f"The parameter {name} is not recognized")


class DryRunOperation(EC2Error):
    code = "DryRunOperation"
    status = 412
    message = "Request would have succeeded, but DryRun flag is set."


class InvalidNextToken(EC2Error):
    code = "InvalidNextToken"

    def __init__(self, token: str):
        super().__init__(f"Invalid NextToken value: {token}")


class InvalidParameterCombination(EC2Error):
    code = "InvalidParameterCombination"


    @classmethod
    def together(cls, first: str, second: str) -> InvalidParameterCombination:
        return cls(f"The parameter {first} cannot be used with the parameter {second}")


_MAX_LISTED_VALUES = 50


class InvalidParameterValue(EC2Error):
    """AWS words this one per parameter; the named constructors are its recurring shapes."""
    code = "InvalidParameterValue"


    @classmethod
    def value(cls, value, parameter: str, detail: str = "") -> InvalidParameterValue:
        """'Value (x) for parameter p is invalid.[ detail]'"""
        return cls(f"Value ({value}) for parameter {parameter} is invalid." + (f" {detail}" if detail else ""))

    @classmethod
    def invalid(cls, value, parameter: str, detail: str = "") -> InvalidParameterValue:
        """'Invalid value 'x' for p.[ detail]'. A list of valid values too long to read (the
        model's InstanceType enum: ~900 types, 16 KB) is left out: AWS's message is one line."""
        if detail.startswith("Valid values:") and detail.count(",") >= _MAX_LISTED_VALUES:
            detail = ""
        return cls(f"Invalid value '{value}' for {parameter}." + (f" {detail}" if detail else ""))

    @classmethod
    def too_long(cls, parameter: str, limit: int = 255) -> InvalidParameterValue:
        return cls(f"Value for parameter {parameter} is too long: at most {limit} characters.")

    @classmethod
    def filter(cls, name: str | None) -> InvalidParameterValue:
        return cls(f"The filter '{name or 'null'}' is invalid")

    @classmethod
    def max_results(cls, value: int, lowest: int, highest: int) -> InvalidParameterValue:
        return cls(f"Value ( {value} ) for parameter maxResults is invalid. "
                   f"Expecting a value between {lowest} and {highest}.")

    @classmethod
    def user_data_too_long(cls, limit: int) -> InvalidParameterValue:
        return cls(f"User data is limited to {limit} bytes")

    @classmethod
    def region(cls, *names: str) -> InvalidParameterValue:
        return cls(f"Invalid region name: {names[0]}")

    @classmethod
    def zone(cls, *names: str) -> InvalidParameterValue:
        return cls(f"The zone '{names[0]}' does not exist.")


class InvalidParameter(EC2Error):
    code = "InvalidParameter"
    message = "You have specified two resources that belong to different networks."

    @classmethod
    def group_and_subnet(cls, group_id: str, subnet_id: str) -> InvalidParameter:
        return cls(f"Security group {group_id} and subnet {subnet_id} belong to different networks.")


class MissingInput(EC2Error):
    code = "MissingInput"


    @classmethod
    def no_default_subnet(cls, zone: str | None) -> MissingInput:
        return cls(f"No default subnet for availability zone: {zone or 'any'}. Specify a subnet.")


class Unsupported(EC2Error):
    """What this emulator does not do (yet); the message says what instead."""
    code = "Unsupported"



class VPCIdNotSpecified(EC2Error):
    code = "VPCIdNotSpecified"
    message = "No default VPC for this user"


# ------------------------------------------------------------------------- state and limits

class IncorrectInstanceState(EC2Error):
    code = "IncorrectInstanceState"


    @classmethod
    def cannot(cls, instance_id: str, verb: str) -> IncorrectInstanceState:
        """'... is not in a state from which it can be <verb>' (AWS says 'This instance' for stop)."""
        article = "This" if verb == "stopped" else "The"
        return cls(f"{article} instance '{instance_id}' is not in a state from which it can be {verb}.")

    @classmethod
    def not_stopped(cls, instance_id: str) -> IncorrectInstanceState:
        return cls(f"The instance '{instance_id}' is not in the 'stopped' state.")

    @classmethod
    def terminated(cls, instance_id: str) -> IncorrectInstanceState:
        return cls(f"The instance '{instance_id}' is terminated.")


class IncorrectState(EC2Error):
    code = "IncorrectState"

    @classmethod
    def concurrent_change(cls) -> IncorrectState:
        return cls("The request conflicted with a concurrent change; retry it.")

    @classmethod
    def volume(cls, volume_id: str, state: str) -> IncorrectState:
        return cls(f"Volume '{volume_id}' is in the '{state}' state.")

    @classmethod
    def not_available(cls, volume_id: str) -> IncorrectState:
        return cls(f"{volume_id} is not 'available'.")

    @classmethod
    def instance_not_running(cls, instance_id: str) -> IncorrectState:
        return cls(f"Instance '{instance_id}' is not 'running'.")

    @classmethod
    def snapshot(cls, snapshot_id: str, state: str) -> IncorrectState:
        return cls(f"Snapshot '{snapshot_id}' is in the '{state}' state.")

    @classmethod
    def existing_association(cls, instance_id: str) -> IncorrectState:
        return cls(f"There is an existing association for instance {instance_id}")

    @classmethod
    def not_cancellable(cls, task_id: str, status: str) -> IncorrectState:
        return cls(f"The import task {task_id} cannot be cancelled: it is {status}.")


class IncorrectModificationState(EC2Error):
    code = "IncorrectModificationState"

    def __init__(self, volume_id: str):
        super().__init__(f"Volume {volume_id} is already being modified.")


class VolumeModificationRateExceeded(EC2Error):
    code = "VolumeModificationRateExceeded"
    message = ("You've reached the maximum modification rate per volume limit. Wait at least 6 hours between "
               "modifications per EBS volume.")


class VolumeInUse(EC2Error):
    code = "VolumeInUse"

    @classmethod
    def attached(cls, volume_id: str) -> VolumeInUse:
        """AttachVolume of a volume another instance has (and that is not Multi-Attach)."""
        return cls(f"{volume_id} is already attached to an instance")

    @classmethod
    def attached_to(cls, volume_id: str, instance_id: str) -> VolumeInUse:
        """DeleteVolume of an attached volume."""
        return cls(f"Volume {volume_id} is currently attached to {instance_id}")


class InvalidVolumeZoneMismatch(EC2Error):
    code = "InvalidVolume.ZoneMismatch"

    def __init__(self, volume_id: str, instance_id: str):
        super().__init__(f"The volume '{volume_id}' is not in the same availability zone as instance "
                         f"'{instance_id}'")


class InvalidSnapshotInUse(EC2Error):
    code = "InvalidSnapshot.InUse"

    def __init__(self, snapshot_id: str, image_id: str):
        super().__init__(f"The snapshot {snapshot_id} is currently in use by {image_id}")


class InvalidParameterDependency(EC2Error):
    code = "InvalidParameterDependency"

    @classmethod
    def requires(cls, parameter: str, needed: str) -> InvalidParameterDependency:
        return cls(f"The parameter {parameter} requires the parameter {needed} to be set.")


class AttachmentLimitExceeded(EC2Error):
    code = "AttachmentLimitExceeded"

    def __init__(self, volume_id: str, limit: int):
        super().__init__(f"Volume {volume_id} is attached to the maximum of {limit} instances "
                         "a Multi-Attach volume supports.")


class OperationNotPermitted(EC2Error):
    code = "OperationNotPermitted"

    def __init__(self, instance_id: str, verb: str, attribute: str):
        super().__init__(f"The instance '{instance_id}' may not be {verb}. Modify its '{attribute}' "
                         "instance attribute and try again.")


class InvalidAMIIDUnavailable(EC2Error):
    code = "InvalidAMIID.Unavailable"

    def __init__(self, image_id: str, state: str):
        super().__init__(f"Image {image_id} is not available (state: {state}).")


class InstanceCreditSpecificationNotSupported(EC2Error):
    """A CPU credit option asked of (or about) an instance type that is not burstable."""
    code = "InstanceCreditSpecification.NotSupported"

    def __init__(self, instance_type: str):
        super().__init__(f"The {instance_type} instance type does not support T2 Unlimited.")


class InvalidAMIAttributeItemValue(EC2Error):
    code = "InvalidAMIAttributeItemValue"

    def __init__(self, value: str, kind: str):
        super().__init__(f'Invalid attribute item value "{value}" for {kind} item type.')


class InvalidBlockDeviceMapping(EC2Error):
    code = "InvalidBlockDeviceMapping"


    @classmethod
    def root_not_ebs(cls, root: str) -> InvalidBlockDeviceMapping:
        return cls(f"The root device name {root} must be mapped to an EBS volume in the block device mapping")

    @classmethod
    def too_small(cls, size: int, path: str, needed: int) -> InvalidBlockDeviceMapping:
        return cls(f"Volume of size {size}GB is smaller than the disk image {path}, expect size >= {needed}GB")


class InvalidIPAddressInUse(EC2Error):
    code = "InvalidIPAddress.InUse"

    def __init__(self, address: str):
        super().__init__(f"Address {address} is in use.")


class RequestLimitExceeded(EC2Error):
    code = "RequestLimitExceeded"
    status = 503
    message = "Request limit exceeded."


class InsufficientAddressCapacity(EC2Error):
    code = "InsufficientAddressCapacity"
    message = "There are not enough free public addresses to launch the instance."


class InsufficientFreeAddressesInSubnet(EC2Error):
    code = "InsufficientFreeAddressesInSubnet"

    def __init__(self, subnet_id: str, count: int):
        super().__init__(f"Insufficient free IP addresses in subnet {subnet_id} to launch {count} instance(s).")


class InstanceLimitExceeded(EC2Error):
    code = "InstanceLimitExceeded"

    def __init__(self, requested: int, limit: int):
        super().__init__(f"You have requested more instances ({requested}) than your current instance limit "
                         f"of {limit} allows for the specified instance type.")


class VpcLimitExceeded(EC2Error):
    code = "VpcLimitExceeded"
    message = "The maximum number of VPCs has been reached."


class InternetGatewayLimitExceeded(EC2Error):
    code = "InternetGatewayLimitExceeded"
    message = "The maximum number of internet gateways has been reached."


class SubnetLimitExceeded(EC2Error):
    code = "SubnetLimitExceeded"
    message = "The maximum number of subnets has been reached."


class SecurityGroupLimitExceeded(EC2Error):
    code = "SecurityGroupLimitExceeded"
    message = "The maximum number of security groups has been reached."


class RulesPerSecurityGroupLimitExceeded(EC2Error):
    code = "RulesPerSecurityGroupLimitExceeded"
    message = "The maximum number of rules per security group has been reached."


class TagLimitExceeded(EC2Error):
    code = "TagLimitExceeded"

    def __init__(self, resource_id: str, limit: int):
        super().__init__(f"The maximum number of tags ({limit}) for resource '{resource_id}' was exceeded")


class CannotDelete(EC2Error):
    code = "CannotDelete"

    def __init__(self, group_id: str, name: str):
        super().__init__(f'the specified group: "{group_id}" name: "{name}" cannot be deleted by a user')


class DependencyViolation(EC2Error):
    code = "DependencyViolation"

    def __init__(self, resource_id: str):
        super().__init__(f"resource {resource_id} has a dependent object")

    @classmethod
    def has_dependencies(cls, kind: str, resource_id: str) -> DependencyViolation:
        """As the VPC family words it (kind as AWS spells it: vpc, subnet, internetGateway,
        routeTable, dhcpOptions)."""
        return cls.worded(f"The {kind} '{resource_id}' has dependencies and cannot be deleted.")


# ---------------------------------------------------------------------------- authentication

class AuthError(EC2Error):
    """A request whose signature or credentials do not check out (api/auth.py)."""
    status = 401


class AuthFailure(AuthError):
    code = "AuthFailure"
    message = "AWS was not able to validate the provided access credentials"

    @classmethod
    def region(cls, region: str) -> AuthFailure:
        return cls(f"Credential should be scoped to a valid region, not '{region}'.")

    @classmethod
    def image(cls, image_id: str) -> AuthFailure:
        """Acting on another account's image."""
        return cls(f"Not authorized for image:{image_id}", status=400)  # not the signature's 401


class MissingAuthenticationToken(AuthError):
    code = "MissingAuthenticationToken"
    message = ("The request must contain either a valid (registered) AWS access key ID "
              "or X.509 certificate.")


class SignatureDoesNotMatch(AuthError):
    code = "SignatureDoesNotMatch"
    status = 403
    message = ("The request signature we calculated does not match the signature you "
              "provided. Check your AWS Secret Access Key and signing method. Consult "
              "the service documentation for details.")


class RequestExpired(AuthError):
    code = "RequestExpired"
    status = 400
    message = "Request has expired."


class IncompleteSignature(AuthError):
    code = "IncompleteSignature"
    status = 400



# ---------------------------------------------------------- VPCs, subnets, gateways, routing

class InvalidVpcRange(EC2Error):
    code = "InvalidVpc.Range"

    def __init__(self, cidr: str):
        super().__init__(f"The CIDR '{cidr}' is invalid.")


class InvalidSubnetRange(EC2Error):
    code = "InvalidSubnet.Range"

    def __init__(self, cidr: str):
        super().__init__(f"The CIDR '{cidr}' is invalid.")


class InvalidSubnetConflict(EC2Error):
    code = "InvalidSubnet.Conflict"

    def __init__(self, cidr: str):
        super().__init__(f"The CIDR '{cidr}' conflicts with another subnet")


class DefaultVpcAlreadyExists(EC2Error):
    code = "DefaultVpcAlreadyExists"
    message = "A Default VPC already exists for this account in this region."


class DefaultVpcDoesNotExist(EC2Error):
    code = "DefaultVpcDoesNotExist"
    message = "No default VPC exists for this account in this region."


class DefaultSubnetAlreadyExistsInAvailabilityZone(EC2Error):
    code = "DefaultSubnetAlreadyExistsInAvailabilityZone"

    def __init__(self, zone: str, subnet_id: str):
        super().__init__(f"Default subnet {subnet_id} already exists in availability zone {zone}.")


class InvalidInternetGatewayIDNotFound(NotFound):
    code = "InvalidInternetGatewayID.NotFound"
    singular = "The internetGateway ID '{}' does not exist"


class InvalidRouteTableIDNotFound(NotFound):
    code = "InvalidRouteTableID.NotFound"
    singular = "The routeTable ID '{}' does not exist"


class InvalidDhcpOptionIDNotFound(NotFound):
    code = "InvalidDhcpOptionID.NotFound"
    singular = "The dhcpOption ID '{}' does not exist"


class InvalidAssociationIDNotFound(NotFound):
    code = "InvalidAssociationID.NotFound"
    singular = "The association ID '{}' does not exist"


class InvalidNetworkInterfaceIDNotFound(NotFound):
    code = "InvalidNetworkInterfaceID.NotFound"
    singular = "The networkInterface ID '{}' does not exist"


class InvalidNetworkAclIDNotFound(NotFound):
    code = "InvalidNetworkAclID.NotFound"
    singular = "The networkAcl ID '{}' does not exist"


class NetworkAclEntryAlreadyExists(EC2Error):
    code = "NetworkAclEntryAlreadyExists"

    def __init__(self, rule_number: int):
        super().__init__(f"The network acl entry identified by {rule_number} already exists.")


class InvalidNetworkAclEntryNotFound(EC2Error):
    code = "InvalidNetworkAclEntry.NotFound"

    def __init__(self, rule_number: int, egress: bool):
        super().__init__(f"no {'egress' if egress else 'ingress'} entry with number {rule_number}")


class NetworkAclEntryLimitExceeded(EC2Error):
    code = "NetworkAclEntryLimitExceeded"

    def __init__(self, acl_id: str, limit: int):
        super().__init__(f"The maximum number of entries ({limit}) per direction for network acl {acl_id} "
                         "has been reached.")


class InvalidRouteNotFound(EC2Error):
    code = "InvalidRoute.NotFound"

    def __init__(self, destination: str, table_id: str):
        super().__init__(f"no route with destination-cidr-block {destination} in route table {table_id}")


class RouteAlreadyExists(EC2Error):
    code = "RouteAlreadyExists"

    def __init__(self, destination: str, table_id: str):
        super().__init__(f"The route identified by {destination} already exists.")


class ResourceAlreadyAssociated(EC2Error):
    code = "Resource.AlreadyAssociated"


class GatewayNotAttached(EC2Error):
    code = "Gateway.NotAttached"

    def __init__(self, gateway_id: str, vpc_id: str):
        super().__init__(f"resource {gateway_id} is not attached to network {vpc_id}")


class InvalidGatewayIDNotFound(NotFound):
    code = "InvalidGatewayID.NotFound"
    singular = "The gateway ID '{}' does not exist"


class InvalidVpcIDMalformed(Malformed):
    code = "InvalidVpcID.Malformed"
    prefix = "vpc"


class InvalidSubnetIDMalformed(Malformed):
    code = "InvalidSubnetID.Malformed"
    prefix = "subnet"


class InvalidNatGatewayIDNotFound(NotFound):
    code = "InvalidNatGatewayID.NotFound"
    singular = "The natGateway ID '{}' does not exist"


# ------------------------------------------------------------------------ network interfaces

class InvalidNetworkInterfaceIdMalformed(Malformed):
    code = "InvalidNetworkInterfaceId.Malformed"
    prefix = "eni"


class InvalidInstanceID(EC2Error):
    """An instance an operation cannot act on as it stands."""
    code = "InvalidInstanceID"

    @classmethod
    def in_state(cls, instance_id: str, state: str) -> InvalidInstanceID:
        """A state the operation does not accept (AssociateAddress on a pending instance)."""
        return cls(f"The {state} instance '{instance_id}' is not in a valid state for this operation.")

    @classmethod
    def several_interfaces(cls, instance_id: str) -> InvalidInstanceID:
        return cls(f"There are multiple interfaces attached to instance '{instance_id}'. Please specify an "
                   "interface ID for the operation instead.")


class InvalidNetworkInterfaceInUse(EC2Error):
    code = "InvalidNetworkInterface.InUse"

    @classmethod
    def deleting(cls, eni_id: str) -> InvalidNetworkInterfaceInUse:
        return cls(f"The network interface '{eni_id}' is currently in use.")

    @classmethod
    def attaching(cls, eni_id: str) -> InvalidNetworkInterfaceInUse:
        return cls(f"Interface: [{eni_id}] in use.")


class InvalidAttachmentIDNotFound(NotFound):
    code = "InvalidAttachmentID.NotFound"
    singular = "The attachment ID '{}' does not exist"


class InvalidNetworkInterfaceAttachmentIdMalformed(Malformed):
    code = "InvalidNetworkInterfaceAttachmentId.Malformed"
    prefix = "eni-attach"


class PrivateIpAddressLimitExceeded(EC2Error):
    code = "PrivateIpAddressLimitExceeded"

    def __init__(self, instance_type: str, limit: int):
        super().__init__(f"Number of private addresses will exceed limit of {limit} for an interface attached to "
                         f"an instance of type {instance_type}.")


# ----------------------------------------------------------------- addresses and NAT gateways

class AddressLimitExceeded(EC2Error):
    code = "AddressLimitExceeded"
    message = "The maximum number of addresses has been reached."


class NatGatewayNotFound(NotFound):
    code = "NatGatewayNotFound"
    singular = "The Nat Gateway {} was not found"


class NatGatewayLimitExceeded(EC2Error):
    code = "NatGatewayLimitExceeded"
    message = "The maximum number of NAT Gateways has been reached."


# ------------------------------------------------------------------------------ launch templates

class InvalidLaunchTemplateIdNotFound(NotFound):
    code = "InvalidLaunchTemplateId.NotFound"
    singular = "The specified launch template, with template ID {}, does not exist."


class InvalidLaunchTemplateIdMalformed(Malformed):
    code = "InvalidLaunchTemplateId.Malformed"
    prefix = "lt"


class InvalidLaunchTemplateNameNotFoundException(EC2Error):
    """Named in a describe or delete (AWS's plural wording), or one name (its own wording)."""
    code = "InvalidLaunchTemplateName.NotFoundException"
    message = "At least one of the launch templates specified in the request does not exist."

    @classmethod
    def named(cls, name: str):
        return cls.worded(f"The specified launch template, with template name {name}, does not exist.")


class InvalidLaunchTemplateNameAlreadyExistsException(EC2Error):
    code = "InvalidLaunchTemplateName.AlreadyExistsException"
    message = "Launch template name already in use."


class InvalidLaunchTemplateNameMalformedException(EC2Error):
    code = "InvalidLaunchTemplateName.MalformedException"
    message = ("A launch template name must be between 3 and 128 characters, and may contain letters, "
               "numbers, and the following characters: - ( ) . / _.")


class InvalidLaunchTemplateIdVersionNotFound(EC2Error):
    code = "InvalidLaunchTemplateId.VersionNotFound"

    def __init__(self, version, template_id: str | None = None):
        super().__init__(f"Could not find the specified version {version} for the launch template with ID "
                         f"{template_id}." if template_id else
                         f"The launch template version {version} is not found for the specified launch template.")


# ------------------------------------------------------------------------------ placement groups

class InvalidPlacementGroupUnknown(EC2Error):
    code = "InvalidPlacementGroup.Unknown"

    def __init__(self, name: str):
        super().__init__(f"The Placement Group '{name}' is unknown.")


class InvalidPlacementGroupIdNotFound(NotFound):
    code = "InvalidPlacementGroupId.NotFound"
    singular = "The Placement Group ID '{}' does not exist"


class InvalidPlacementGroupIdMalformed(Malformed):
    code = "InvalidPlacementGroupId.Malformed"
    prefix = "pg"


class InvalidPlacementGroupDuplicate(EC2Error):
    code = "InvalidPlacementGroup.Duplicate"

    def __init__(self, name: str):
        super().__init__(f"The Placement Group '{name}' already exists.")


class InvalidPlacementGroupInUse(EC2Error):
    code = "InvalidPlacementGroup.InUse"

    @classmethod
    def not_empty(cls, name: str):
        return cls.worded(f"The placement group '{name}' is in use and may not be deleted.")

    @classmethod
    def other_zone(cls, name: str, zone: str):
        return cls.worded(f"The placement group '{name}' is in use in another availability zone: {zone}")


class InsufficientInstanceCapacity(EC2Error):
    code = "InsufficientInstanceCapacity"
    status = 500


# ------------------------------------------------------------------------------ spot

class SpotMaxPriceTooLow(EC2Error):
    code = "SpotMaxPriceTooLow"


class InvalidSpotInstanceRequestIDNotFound(NotFound):
    code = "InvalidSpotInstanceRequestID.NotFound"
    singular = "The spot instance request ID '{}' does not exist"


class InvalidSpotInstanceRequestIDMalformed(Malformed):
    code = "InvalidSpotInstanceRequestID.Malformed"
    prefix = "sir"
