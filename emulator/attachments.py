"""Volume attachments as an instance sees them: its block device mappings in DescribeInstances
and DescribeInstanceAttribute, what its start and termination do to them. (volumes.py attaches
and detaches; this module is what instances.py and the metadata service read, with no import of
either resource module.)"""
from __future__ import annotations

from collections import defaultdict

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from .models import Volume, VolumeAttachment

_OF_SCOPE = select(VolumeAttachment).where(
    VolumeAttachment.account_id == bindparam("account"), VolumeAttachment.region == bindparam("region"))


def mapping(a: VolumeAttachment) -> dict:
    """One attachment as an InstanceBlockDeviceMapping."""
    return {"DeviceName": a.device, "Ebs": {"VolumeId": a.volume_id, "Status": a.state,
                                            "AttachTime": a.attach_time,
                                            "DeleteOnTermination": a.delete_on_termination}}


def mappings_by_instance(session: Session, account_id: str, region: str,
                         instance_ids: list[str] | None = None) -> dict[str, list[dict]]:
    """instance id -> its attached volumes' mappings, for a whole describe page in one query:
    of the page's instances when it names at most 500 (every instance has its root volume, so a
    page of 50 must not read the account's thousands), else of the whole account."""
    q = _OF_SCOPE
    if instance_ids is not None and len(instance_ids) <= 500:
        q = q.where(VolumeAttachment.instance_id.in_(instance_ids))
    out: dict[str, list[dict]] = defaultdict(list)
    for a in session.scalars(q.order_by(VolumeAttachment.attach_time, VolumeAttachment.device),
                             {"account": account_id, "region": region}):
        out[a.instance_id].append(mapping(a))
    return out


def of_instance(session: Session, instance_id: str) -> list[VolumeAttachment]:
    return list(session.scalars(select(VolumeAttachment).where(VolumeAttachment.instance_id == instance_id)
                                .order_by(VolumeAttachment.attach_time, VolumeAttachment.device)))


def listed_devices(session: Session, instance_id: str) -> list[str]:
    """The device names the metadata service lists (block-device-mapping/ebsN): volumes present
    when the instance was launched or last started, as AWS lists them."""
    return [a.device for a in of_instance(session, instance_id) if a.listed]


def instance_started(session: Session, instance_id: str) -> None:
    """The instance (re)starts: the volumes it has now are in its metadata from now on."""
    session.execute(update(VolumeAttachment).where(VolumeAttachment.instance_id == instance_id)
                    .values(listed=True))


def lock_volume(session: Session, volume_id: str) -> Volume | None:
    """The volume's row, locked until commit, read before its attachments are counted: two
    attachments of a Multi-Attach volume ending at once in two transactions would each still
    see the other's row (an uncommitted delete) and neither would make the volume available.
    Locked, the second waits for the first and counts after its commit."""
    return session.get(Volume, volume_id, with_for_update=True, populate_existing=True)


def release(session: Session, instance_id: str) -> bool:
    """The instance is gone (terminated; the host detached its disks): its attachments end, its
    volumes are available again unless still attached elsewhere (Multi-Attach), or deleted when
    marked DeleteOnTermination (a volume.delete task joins the transaction). Returns True when
    a task was written."""
    from .host_tasks import enqueue  # host_tasks -> registry; this module stays import-light

    wrote = False
    # Volumes locked in id order: two instances ending at once, sharing Multi-Attach volumes,
    # lock them in the same order and so never deadlock.
    for a in sorted(of_instance(session, instance_id), key=lambda a: a.volume_id):
        volume = lock_volume(session, a.volume_id)
        session.delete(a)
        session.flush()
        if volume is None or volume.state != "in-use":
            continue
        if session.scalar(select(VolumeAttachment.instance_id).where(
                VolumeAttachment.volume_id == a.volume_id).limit(1)) is not None:
            continue  # still attached to another instance (Multi-Attach)
        if a.delete_on_termination:
            volume.state = "deleting"
            enqueue(session, "volume.delete", volume.id, volume.availability_zone)
            wrote = True
        else:
            volume.state = "available"
    return wrote
