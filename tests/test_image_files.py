"""Users' own image files, end to end with boto3 against a real server (`none` driver):
RegisterImage from a host path or file:// URL (disk -> ami-, kernel -> aki-, initramfs -> ari-,
each copied so the user's file can change), DeregisterImage deleting the copy once unused, and
ImportImage / DescribeImportImageTasks / CancelImportTask from a path or an http:// URL served
on 127.0.0.1."""
from __future__ import annotations

import functools
import gzip
import http.server
import json
import os
import subprocess
import tarfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from emulator.images import KERNEL_NAME, PUBLIC_IMAGES, RAMDISK_NAME
from hypervisor.imagebuild import default_images_dir

from .helpers import error_of, unique

PUBLIC_CACHE = Path(default_images_dir())


def qemu_img(*args) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


def info(path: Path) -> dict:
    return json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)],
                                     check=True, capture_output=True, text=True).stdout)


@pytest.fixture(scope="module")
def registered(server) -> Path:
    """Where the server keeps its copies: <image dir>/registered."""
    image_dir = os.environ.get("EC2EMU_IMAGE_DIR") or str(server.state_dir / "images")
    return Path(image_dir).resolve() / "registered"


def wait_image(ec2, image_id: str, copy: Path | None = None, timeout: float = 60) -> dict:
    """Poll until the image leaves 'pending'; while polling, 'available' must mean the copy exists."""
    deadline = time.monotonic() + timeout
    while True:
        [img] = ec2.describe_images(ImageIds=[image_id])["Images"]
        if img["State"] == "available" and copy is not None:
            assert copy.exists()
        if img["State"] != "pending":
            return img
        assert time.monotonic() < deadline, f"{image_id} still pending"
        time.sleep(0.1)


def wait_task(ec2, task_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        [task] = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"]
        if task["Status"] in ("completed", "deleted"):
            return task
        assert task["Status"] in ("active", "deleting")
        assert time.monotonic() < deadline, f"{task_id} still {task['Status']}"
        time.sleep(0.1)


def wait_gone(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while path.exists():
        assert time.monotonic() < deadline, f"{path} still there"
        time.sleep(0.05)


def failed_because(ec2, image_id: str) -> str:
    """An image that ended 'failed' (its file could not be that image): its StateReason message."""
    img = wait_image(ec2, image_id)
    assert img["State"] == "failed", img
    assert img["StateReason"]["Code"] == "Client.InvalidImage", img
    return img["StateReason"]["Message"]


def raw_disk(path: Path, size: str = "64M") -> Path:
    qemu_img("create", "-f", "raw", path, size)
    with open(path, "r+b") as f:  # an MBR boot signature: what a real raw disk starts with
        f.seek(510)
        f.write(b"\x55\xaa")
    return path


# ------------------------------------------------------------------------------ RegisterImage

def test_register_qcow2_copies_the_file(ec2, tmp_path, registered):
    disk = tmp_path / "x.qcow2"
    qemu_img("create", "-f", "qcow2", disk, "1G")
    name = unique("file")
    image_id = ec2.register_image(Name=name, ImageLocation=str(disk), Description="mine")["ImageId"]
    assert image_id.startswith("ami-") and len(image_id) == 21
    copy = registered / f"{image_id}.qcow2"
    img = wait_image(ec2, image_id, copy)
    assert img["State"] == "available" and img["ImageType"] == "machine"
    assert img["Name"] == name and img["Description"] == "mine"
    assert img["ImageLocation"] == str(disk)
    assert img["RootDeviceType"] == "ebs" and img["RootDeviceName"] == "/dev/xvda"
    assert img["Architecture"] == "x86_64" and img["VirtualizationType"] == "hvm"
    [root] = img["BlockDeviceMappings"]
    assert root["DeviceName"] == "/dev/xvda" and root["Ebs"]["VolumeSize"] == 1
    assert root["Ebs"]["DeleteOnTermination"] is True
    assert "KernelId" not in img and "RamdiskId" not in img  # a plain BIOS boot from the disk
    assert info(copy)["format"] == "qcow2" and info(copy)["virtual-size"] == 1 << 30

    # The user's file changes; the AMI does not.
    qemu_img("resize", disk, "3G")
    assert info(copy)["virtual-size"] == 1 << 30

    assert ec2.deregister_image(ImageId=image_id)["Return"] is True
    wait_gone(copy)


def test_register_file_url_rounds_size_up_and_keeps_given_mappings(ec2, tmp_path):
    disk = tmp_path / "big disk.qcow2"
    qemu_img("create", "-f", "qcow2", disk, "1536M")
    url = "file://" + str(disk).replace(" ", "%20")
    image_id = ec2.register_image(Name=unique("file"), ImageLocation=url)["ImageId"]
    img = wait_image(ec2, image_id)
    assert img["State"] == "available" and img["ImageLocation"] == url
    assert img["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 2

    image_id = ec2.register_image(
        Name=unique("file"), ImageLocation=str(disk), RootDeviceName="/dev/sda1", Architecture="x86_64",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8, "VolumeType": "gp3"}},
                             {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}])["ImageId"]
    img = wait_image(ec2, image_id)
    assert img["RootDeviceName"] == "/dev/sda1"
    by_device = {m["DeviceName"]: m for m in img["BlockDeviceMappings"]}
    assert by_device["/dev/sda1"]["Ebs"]["VolumeSize"] == 8
    assert by_device["/dev/sda1"]["Ebs"]["VolumeType"] == "gp3"
    assert by_device["/dev/sdb"]["VirtualName"] == "ephemeral0"

    # Too small a root volume for the disk: known once the disk is probed, off the request path.
    image_id = ec2.register_image(Name=unique("file"), ImageLocation=str(disk),
                                  BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 1}}])["ImageId"]
    assert failed_because(ec2, image_id) == \
        f"Volume of size 1GB is smaller than the disk image {disk}, expect size >= 2GB"


def test_register_raw_converts_to_qcow2(ec2, tmp_path, registered):
    disk = raw_disk(tmp_path / "disk.img")
    image_id = ec2.register_image(Name=unique("file"), ImageLocation=str(disk))["ImageId"]
    copy = registered / f"{image_id}.qcow2"
    img = wait_image(ec2, image_id, copy)
    assert img["State"] == "available"
    assert img["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 1
    assert info(copy)["format"] == "qcow2" and info(copy)["virtual-size"] == 64 << 20
    # A blank disk (all zeros, as `qemu-img create` makes it) is a disk too.
    blank = tmp_path / "blank.raw"
    qemu_img("create", "-f", "raw", blank, "2G")
    img = wait_image(ec2, ec2.register_image(Name=unique("file"), ImageLocation=str(blank))["ImageId"])
    assert img["State"] == "available" and img["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 2


def _public_file(name: str) -> Path:
    spec = next(i for i in PUBLIC_IMAGES if i.name == name)
    path = PUBLIC_CACHE / spec.file
    if not path.exists():
        pytest.skip(f"{path} is not built here")
    return path


def test_register_kernel_and_ramdisk_then_an_ami_booting_them(ec2, other_account, tmp_path, registered):
    kernel_file, ramdisk_file = _public_file(KERNEL_NAME), _public_file(RAMDISK_NAME)
    kernel_id = ec2.register_image(Name=unique("kernel"), ImageLocation=str(kernel_file))["ImageId"]
    ramdisk_id = ec2.register_image(Name=unique("initrd"), ImageLocation="file://" + str(ramdisk_file),
                                    Description="my initrd")["ImageId"]
    try:
        assert kernel_id.startswith("aki-") and ramdisk_id.startswith("ari-")
        kernel = wait_image(ec2, kernel_id, registered / f"{kernel_id}.vmlinuz")
        ramdisk = wait_image(ec2, ramdisk_id, registered / f"{ramdisk_id}.initrd.img")
        assert kernel["State"] == ramdisk["State"] == "available"
        assert kernel["ImageType"] == "kernel" and ramdisk["ImageType"] == "ramdisk"
        assert kernel["RootDeviceType"] == "instance-store" and not kernel["BlockDeviceMappings"]
        assert ramdisk["Description"] == "my initrd"
        assert (registered / f"{kernel_id}.vmlinuz").read_bytes() == kernel_file.read_bytes()
        assert (registered / f"{ramdisk_id}.initrd.img").read_bytes() == ramdisk_file.read_bytes()
        assert kernel_id in {i["ImageId"] for i in ec2.describe_images(
            Owners=["self"], Filters=[{"Name": "image-type", "Values": ["kernel"]}])["Images"]}

        disk = tmp_path / "root.qcow2"
        qemu_img("create", "-f", "qcow2", disk, "1G")
        ami = ec2.register_image(Name=unique("file"), ImageLocation=str(disk), KernelId=kernel_id,
                                 RamdiskId=ramdisk_id)["ImageId"]
        img = wait_image(ec2, ami)
        assert img["KernelId"] == kernel_id and img["RamdiskId"] == ramdisk_id
        assert ec2.describe_image_attribute(ImageId=ami, Attribute="kernel")["KernelId"] == {"Value": kernel_id}

        # Kernel/ramdisk options make no sense on a kernel; ids must be of the right kind and visible.
        code, _ = error_of(ec2.register_image, Name=unique("file"), ImageLocation=str(kernel_file), KernelId=kernel_id)
        assert code == "InvalidParameterCombination"
        code, _ = error_of(ec2.register_image, Name=unique("file"), ImageLocation=str(disk), KernelId=ramdisk_id)
        assert code == "InvalidKernelId.Malformed"
        code, _ = error_of(ec2.register_image, Name=unique("file"), ImageLocation=str(disk), RamdiskId=kernel_id)
        assert code == "InvalidRamDiskId.Malformed"
        code, message = error_of(other_account.register_image, Name=unique("file"), ImageLocation=str(disk),
                                 KernelId=kernel_id)
        assert code == "InvalidAMIID.NotFound" and kernel_id in message
    finally:  # kernels of its own in the account would upset listings elsewhere
        for image_id in (kernel_id, ramdisk_id):
            ec2.deregister_image(ImageId=image_id)


def test_register_refuses_what_is_not_an_image(ec2, tmp_path, registered):
    # What only qemu-img can tell is found by the image's task: the image ends 'failed'.
    junk = tmp_path / "junk.txt"
    junk.write_text("this is not a disk image\n" * 100)
    image_id = ec2.register_image(Name=unique("file"), ImageLocation=str(junk))["ImageId"]
    assert image_id.startswith("ami-")
    message = failed_because(ec2, image_id)
    assert message.startswith(f"{junk} is not a disk image"), message
    assert not list(registered.glob(f"*{image_id}*"))  # no copy, no work file
    code, _ = error_of(ec2.run_instances, ImageId=image_id, MinCount=1, MaxCount=1)
    assert code == "InvalidAMIID.Unavailable"

    qed = tmp_path / "disk.qed"
    qemu_img("create", "-f", "qed", qed, "64M")
    message = failed_because(ec2, ec2.register_image(Name=unique("file"), ImageLocation=str(qed))["ImageId"])
    assert message.startswith(f"{qed}: disk format qed is not supported"), message

    encrypted = tmp_path / "secret.qcow2"
    # (qcow2's legacy AES: LUKS's PBKDF benchmark fails now and then on a busy machine)
    qemu_img("create", "--object", "secret,id=sec0,data=abc", "-f", "qcow2", "-o",
             "encrypt.format=aes,encrypt.key-secret=sec0", encrypted, "64M")
    message = failed_because(ec2, ec2.register_image(Name=unique("file"), ImageLocation=str(encrypted))["ImageId"])
    assert message == f"{encrypted}: encrypted disk images are not supported"

    # What needs no probing is still refused by the request itself.

    missing = tmp_path / "missing.qcow2"
    code, message = error_of(ec2.register_image, Name=unique("file"), ImageLocation=str(missing))
    assert code == "InvalidParameterValue" and message == f"ImageLocation {missing}: no such file"
    code, message = error_of(ec2.register_image, Name=unique("file"), ImageLocation=f"file://{missing}")
    assert code == "InvalidParameterValue" and "no such file" in message

    code, message = error_of(ec2.register_image, Name=unique("file"), ImageLocation=str(tmp_path))
    assert code == "InvalidParameterValue" and "not a regular file" in message
    code, message = error_of(ec2.register_image, Name=unique("file"), ImageLocation="file://elsewhere/x.qcow2")
    assert code == "InvalidParameterValue" and "on this host" in message

    gzipped = tmp_path / "disk.img.gz"
    gzipped.write_bytes(gzip.compress(b"\x00" * 4096))
    code, message = error_of(ec2.register_image, Name=unique("file"), ImageLocation=str(gzipped))
    assert code == "InvalidParameterValue" and "decompress it first" in message

    unreadable = raw_disk(tmp_path / "secret.img", "1M")
    unreadable.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        code, message = error_of(ec2.register_image, Name=unique("file"), ImageLocation=str(unreadable))
        assert code == "InvalidParameterValue" and "cannot be read" in message


def test_s3_style_location_is_still_a_record_only_registration(ec2):
    image_id = ec2.register_image(Name=unique("s3"), ImageLocation="bucket/image.manifest.xml")["ImageId"]
    [img] = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert img["State"] == "available" and img["RootDeviceType"] == "instance-store"


def test_deregistered_copy_stays_while_an_instance_uses_it(ec2, tmp_path, registered):
    disk = tmp_path / "used.qcow2"
    qemu_img("create", "-f", "qcow2", disk, "1G")
    image_id = ec2.register_image(Name=unique("file"), ImageLocation=str(disk))["ImageId"]
    copy = registered / f"{image_id}.qcow2"
    wait_image(ec2, image_id, copy)
    [instance] = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1,
                                   InstanceType="t2.micro")["Instances"]
    ec2.deregister_image(ImageId=image_id)
    time.sleep(0.5)  # the clean-up runs after the commit: it must keep the file
    assert copy.exists()
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[instance["InstanceId"]],
                                               WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    # The next clean-up (here: another deregistration) deletes it.
    other = ec2.register_image(Name=unique("file"), ImageLocation=str(disk))["ImageId"]
    wait_image(ec2, other)
    ec2.deregister_image(ImageId=other)
    wait_gone(copy)
    wait_gone(registered / f"{other}.qcow2")


def test_deregistering_a_pending_image_leaves_no_file(ec2, tmp_path, registered):
    disk = raw_disk(tmp_path / "quick.img")
    image_id = ec2.register_image(Name=unique("file"), ImageLocation=str(disk))["ImageId"]
    ec2.deregister_image(ImageId=image_id)  # maybe before the copy finished
    time.sleep(1)
    wait_gone(registered / f"{image_id}.qcow2")
    assert not list(registered.glob(f".{image_id}*"))


# ------------------------------------------------------------------------------ ImportImage

class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/slow.raw":  # a disk that never finishes arriving
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            try:
                for _ in range(600):
                    self.wfile.write(b"\x00" * 65536)
                    time.sleep(0.05)
            except OSError:
                pass
            return
        super().do_GET()


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """An HTTP server on 127.0.0.1 serving a directory: (directory, base URL)."""
    root = tmp_path_factory.mktemp("web")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_import_image_from_a_path(ec2, tmp_path, registered):
    disk = tmp_path / "disk.vmdk"
    qemu_img("create", "-f", "vmdk", disk, "1G")
    out = ec2.import_image(Description="my import", Architecture="x86_64",
                           DiskContainers=[{"Url": str(disk), "Format": "VMDK", "Description": "root"}],
                           TagSpecifications=[{"ResourceType": "import-image-task",
                                               "Tags": [{"Key": "team", "Value": "a"}]}])
    task_id = out["ImportTaskId"]
    assert task_id.startswith("import-ami-") and len(task_id) == len("import-ami-") + 17
    assert out["Status"] == "active" and out["StatusMessage"] == "pending"
    assert out["Description"] == "my import" and out["Tags"] == [{"Key": "team", "Value": "a"}]

    task = wait_task(ec2, task_id)
    assert task["Status"] == "completed", task
    assert "StatusMessage" not in task and "Progress" not in task
    assert task["Platform"] == "Linux" and task["Architecture"] == "x86_64" and task["LicenseType"] == "BYOL"
    assert task["Tags"] == [{"Key": "team", "Value": "a"}]
    [detail] = task["SnapshotDetails"]
    assert detail["Format"] == "VMDK" and detail["Url"] == str(disk) and detail["Status"] == "completed"
    assert detail["DiskImageSize"] == disk.stat().st_size and detail["Description"] == "root"

    [img] = ec2.describe_images(ImageIds=[task["ImageId"]])["Images"]
    assert img["State"] == "available" and img["Name"] == task_id
    assert img["Description"] == "my import" and img["RootDeviceType"] == "ebs"
    assert img["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 1
    copy = registered / f"{img['ImageId']}.qcow2"
    assert info(copy)["format"] == "qcow2"

    # Listings, filters, tags, paging.
    listed = ec2.describe_import_image_tasks(Filters=[{"Name": "task-state", "Values": ["completed"]}])
    assert task_id in {t["ImportTaskId"] for t in listed["ImportImageTasks"]}
    tagged = ec2.describe_import_image_tasks(Filters=[{"Name": "tag:team", "Values": ["a"]}])
    assert [t["ImportTaskId"] for t in tagged["ImportImageTasks"]] == [task_id]
    assert task_id in {t["ResourceId"] for t in ec2.describe_tags(
        Filters=[{"Name": "resource-type", "Values": ["import-image-task"]}])["Tags"]}
    ec2.create_tags(Resources=[task_id], Tags=[{"Key": "more", "Value": "b"}])
    [task] = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"]
    assert {t["Key"] for t in task["Tags"]} == {"team", "more"}

    ec2.deregister_image(ImageId=img["ImageId"])
    wait_gone(copy)


def test_import_image_from_an_http_url(ec2, web):
    root, base = web
    qemu_img("create", "-f", "qcow2", root / "served.qcow2", "2G")
    task_id = ec2.import_image(DiskContainers=[{"Url": f"{base}/served.qcow2"}])["ImportTaskId"]
    task = wait_task(ec2, task_id)
    assert task["Status"] == "completed", task
    assert task["SnapshotDetails"][0]["Format"] == "QCOW2"  # detected
    img = wait_image(ec2, task["ImageId"])
    assert img["State"] == "available" and img["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 2

    raw_disk(root / "served.raw")
    task = wait_task(ec2, ec2.import_image(
        DiskContainers=[{"Url": f"{base}/served.raw", "Format": "raw"}])["ImportTaskId"])
    assert task["Status"] == "completed", task
    assert task["SnapshotDetails"][0]["Format"] == "RAW"


def test_import_other_formats(ec2, tmp_path):
    """An OVA (a tar of an OVF descriptor and a VMDK), a fixed VHD (whose only signature is its
    footer: qemu-img's probe takes it for raw), a dynamic VHDX."""
    vmdk = tmp_path / "disk1.vmdk"
    qemu_img("create", "-f", "vmdk", "-o", "subformat=streamOptimized", vmdk, "1G")
    ovf = tmp_path / "machine.ovf"
    ovf.write_text("<Envelope/>")
    ova = tmp_path / "machine.ova"
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(ovf, "machine.ovf")
        tar.add(vmdk, "disk1.vmdk")
    vhd = tmp_path / "fixed.vhd"
    qemu_img("create", "-f", "vpc", "-o", "subformat=fixed", vhd, "64M")
    vhdx = tmp_path / "disk.vhdx"
    qemu_img("create", "-f", "vhdx", vhdx, "3G")
    cases = [(ova, None, "VMDK", 1), (ova, "ova", "VMDK", 1), (vhd, "VHD", "VHD", 1),
             (vhdx, None, "VHDX", 3)]
    tasks = [ec2.import_image(DiskContainers=[{"Url": str(path), **({"Format": fmt} if fmt else {})}])
             ["ImportTaskId"] for path, fmt, _, _ in cases]
    for task_id, (path, _, shown, gib) in zip(tasks, cases):
        task = wait_task(ec2, task_id)
        assert task["Status"] == "completed", task
        assert task["SnapshotDetails"][0]["Format"] == shown, task  # (an OVA's disk is a VMDK)
        [img] = ec2.describe_images(ImageIds=[task["ImageId"]])["Images"]
        assert img["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == gib, path


def test_import_failures_end_deleted_with_a_message(ec2, web, tmp_path):
    root, base = web
    missing = tmp_path / "nope.vmdk"
    task = wait_task(ec2, ec2.import_image(DiskContainers=[{"Url": str(missing)}])["ImportTaskId"])
    assert task["Status"] == "deleted" and "no such file" in task["StatusMessage"], task
    assert task["StatusMessage"].startswith("ClientError: ") and "ImageId" not in task

    task = wait_task(ec2, ec2.import_image(DiskContainers=[{"Url": f"{base}/absent.qcow2"}])["ImportTaskId"])
    assert task["Status"] == "deleted" and "404" in task["StatusMessage"], task

    junk = root / "junk.bin"
    junk.write_bytes(b"junk" * 1000)
    task = wait_task(ec2, ec2.import_image(DiskContainers=[{"Url": f"{base}/junk.bin"}])["ImportTaskId"])
    assert task["Status"] == "deleted" and "not a disk image" in task["StatusMessage"], task
    assert task["StatusMessage"].startswith(f"ClientError: {base}/junk.bin is not")

    qemu_img("create", "-f", "qcow2", tmp_path / "q.qcow2", "1G")
    task = wait_task(ec2, ec2.import_image(
        DiskContainers=[{"Url": str(tmp_path / "q.qcow2"), "Format": "VHDX"}])["ImportTaskId"])
    assert task["Status"] == "deleted" and "not a VHDX disk" in task["StatusMessage"], task


def test_import_request_errors(ec2):
    code, message = error_of(ec2.import_image, DiskContainers=[
        {"UserBucket": {"S3Bucket": "b", "S3Key": "disk.vmdk"}}])
    assert code == "Unsupported" and "S3" in message
    code, _ = error_of(ec2.import_image, DiskContainers=[{"Url": "s3://bucket/disk.vmdk"}])
    assert code == "Unsupported"
    code, _ = error_of(ec2.import_image, DiskContainers=[{"Url": "ftp://127.0.0.1/disk.vmdk"}])
    assert code == "InvalidParameterValue"
    code, _ = error_of(ec2.import_image, DiskContainers=[{"Url": "/tmp/x.img", "Format": "ISO"}])
    assert code == "InvalidParameterValue"
    code, _ = error_of(ec2.import_image, Description="no disk")
    assert code == "MissingParameter"
    code, _ = error_of(ec2.import_image, DiskContainers=[{"Url": "/tmp/x.img"}],
                       TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "a", "Value": "b"}]}])
    assert code == "InvalidParameterValue"
    code, _ = error_of(ec2.describe_import_image_tasks, ImportTaskIds=["import-ami-nope"])
    assert code == "InvalidConversionTaskId.Malformed"
    code, message = error_of(ec2.describe_import_image_tasks, ImportTaskIds=["import-ami-0123456789abcdef0"])
    assert code == "InvalidConversionTaskId" and "import-ami-0123456789abcdef0" in message
    code, _ = error_of(ec2.cancel_import_task, ImportTaskId="import-ami-0123456789abcdef0")
    assert code == "InvalidConversionTaskId"


def test_import_tasks_are_per_account_idempotent_and_paged(ec2, other_account, tmp_path):
    disk = raw_disk(tmp_path / "d.img", "1M")
    token = uuid.uuid4().hex
    first = ec2.import_image(ClientToken=token, DiskContainers=[{"Url": str(disk)}])["ImportTaskId"]
    again = ec2.import_image(ClientToken=token, DiskContainers=[{"Url": str(disk)}])["ImportTaskId"]
    assert first == again
    second = ec2.import_image(DiskContainers=[{"Url": str(disk)}])["ImportTaskId"]
    for t in (first, second):
        assert wait_task(ec2, t)["Status"] == "completed"
    code, _ = error_of(other_account.describe_import_image_tasks, ImportTaskIds=[first])
    assert code == "InvalidConversionTaskId"
    assert first not in {t["ImportTaskId"] for t in
                         other_account.describe_import_image_tasks()["ImportImageTasks"]}
    seen, token = [], None
    while True:
        page = ec2.describe_import_image_tasks(MaxResults=1, **({"NextToken": token} if token else {}))
        assert len(page["ImportImageTasks"]) <= 1
        seen += [t["ImportTaskId"] for t in page["ImportImageTasks"]]
        token = page.get("NextToken")
        if not token:
            break
    assert {first, second} <= set(seen) and len(seen) == len(set(seen))


def test_cancel_import_task(ec2, web, registered):
    _, base = web
    task_id = ec2.import_image(DiskContainers=[{"Url": f"{base}/slow.raw"}])["ImportTaskId"]
    deadline = time.monotonic() + 30
    while ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"][0].get(
            "StatusMessage") != "validating":  # downloading
        assert time.monotonic() < deadline
        time.sleep(0.1)
    out = ec2.cancel_import_task(ImportTaskId=task_id, CancelReason="changed my mind")
    assert out == {"ImportTaskId": task_id, "PreviousState": "active", "State": "deleting",
                   "ResponseMetadata": out["ResponseMetadata"]}
    task = wait_task(ec2, task_id)
    assert task["Status"] == "deleted" and task["StatusMessage"] == "User cancelled: changed my mind"
    code, _ = error_of(ec2.cancel_import_task, ImportTaskId=task_id)
    assert code == "IncorrectState"
    time.sleep(0.5)
    assert not list(registered.glob(f".{task_id}*"))  # the partial download is gone


def test_an_import_whose_worker_stopped_ends_deleted():
    """Unit: a task whose heartbeat stopped, and that no host task carries on, is reported deleted."""
    from datetime import timedelta

    from emulator.image_import import STALE_SECONDS, _expire_stale
    from emulator.models import ImportImageTask, utcnow

    old = utcnow() - timedelta(seconds=STALE_SECONDS + 1)
    stale = ImportImageTask(id="import-ami-0", status="active", updated_at=old, disk={})
    cancelled = ImportImageTask(id="import-ami-1", status="deleting", status_message="User cancelled",
                                updated_at=old.replace(tzinfo=None), disk={})  # as SQLite returns it
    fresh = ImportImageTask(id="import-ami-2", status="active", updated_at=utcnow(), disk={})
    queued = ImportImageTask(id="import-ami-3", status="active", updated_at=old, disk={})
    _expire_stale([stale, cancelled, fresh, queued], {"import-ami-3"})
    assert stale.status == "deleted" and "interrupted" in stale.status_message
    assert cancelled.status == "deleted" and cancelled.status_message == "User cancelled"
    assert fresh.status == "active"
    assert queued.status == "active"  # its host task waits in the images lane: not interrupted
