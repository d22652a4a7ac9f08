"""Builds the default guest images from Debian packages (`ec2emu images build`).

Three files, into an images directory, under the exact names the AMI records point at:

  kernel  ec2emu-kernel-debian-6.1-cloud-amd64.vmlinuz      the "aki": Debian's cloud kernel
  initrd  ec2emu-initrd-debian-6.1-cloud-amd64.initrd.img   the "ari": busybox + virtio modules;
                                                             mounts root= and switch_roots
  tiny    ec2emu-tiny-busybox-2026.11-x86_64.qcow2          busybox + dropbear root disk with
                                                             an agent for metadata/keys/user data

Everything comes from Debian packages fetched with `apt-get download` and unpacked with
`dpkg-deb` into temporary directories: nothing is installed on the host, nothing is mounted
(the root file system is made with `mke2fs -d`), nothing else is downloaded. The files baked
into the guest (init scripts, the agent, the udhcpc script...) live as plain files under
hypervisor/guest/ so they can be read and reviewed as they are.

Each output has a record beside it (`NAME.inputs.json`) of what it was built from: the package
versions, a hash of its guest files and the builder version. A build whose inputs have not
changed is skipped. Change BUILDER_VERSION when a change here alters an output.

The guest's kernel command line is `console=ttyS0 root=/dev/vda rw quiet panic=-1`
(KERNEL_CMDLINE), with a virtio disk (vda) and a virtio-net NIC.
"""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .host import HostError, run

BUILDER_VERSION = 1

KERNEL_FILE = "ec2emu-kernel-debian-6.1-cloud-amd64.vmlinuz"
INITRD_FILE = "ec2emu-initrd-debian-6.1-cloud-amd64.initrd.img"
TINY_FILE = "ec2emu-tiny-busybox-2026.11-x86_64.qcow2"

KERNEL_CMDLINE = "console=ttyS0 root=/dev/vda rw quiet panic=-1"
DEFAULT_CACHE_DIR = "/var/cache/ec2emu/images"

GUEST_DIR = Path(__file__).resolve().parent / "guest"

# The Debian metapackage that names the current cloud kernel package (linux-image-6.1.0-N-...).
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"

# What the cloud kernel lacks built in for a QEMU "pc" guest with virtio disk and NIC, in the
# order they load (FACTS.md). button + evdev: the ACPI power button reaches acpid/logind, which
# is how a guest is stopped gracefully.
INITRD_MODULES = [
    "virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
    "virtio_blk", "failover", "net_failover", "virtio_net", "virtio-rng", "button", "evdev",
]

# Packages per output. busybox-static is one static binary; dropbear is dynamic and needs its
# libraries and glibc, which are copied in as the binaries' ldd closure (checked at build time).
INITRD_PACKAGES = ["busybox-static"]
DEPMOD_PACKAGES = ["kmod", "libkmod2", "liblzma5", "libssl3", "libzstd1"]  # run on the host
TINY_PACKAGES = ["busybox-static", "dropbear-bin", "libtomcrypt1", "libtommath1", "libgmp10",
                 "zlib1g", "libcrypt1", "libc6"]
DROPBEAR_BINARIES = ["usr/sbin/dropbear", "usr/bin/dropbearkey", "usr/bin/dbclient"]

TINY_ROOT_SIZE = "64M"
EC2_USER_UID = 1000
SUDO_GID = 27           # group "sudo" in guest/tiny/etc/group: may execute /bin/busybox.suid
FIXED_MTIME = 1767225600  # 2026-01-01: initramfs entries get a fixed time (reproducible cpio)

Progress = Callable[[str], None]


class BuildError(RuntimeError):
    """A build step failed; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Small helpers

def _run(cmd: list[str], *, cwd=None, env=None) -> str:
    """Runs a command (host.run, no time limit); raises BuildError with its output when it fails."""
    try:
        return run(cmd, timeout=None, cwd=cwd, env=env)
    except HostError as exc:
        raise BuildError(f"{' '.join(exc.argv)} failed ({exc.code}): {exc.stderr.strip()[-2000:]}") from None


def _tree_hash(root: Path) -> str:
    """Hash of a directory's files: their relative paths and contents."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _is_script(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"#!"


# ---------------------------------------------------------------------------------------------
# Debian packages: resolve candidate versions, download (cached), unpack

@dataclass
class Package:
    name: str
    version: str
    deb: Path | None = None


def _apt_show(names: list[str]) -> dict[str, dict[str, str]]:
    """Candidate stanza (Version, Depends...) of each package, from the local apt lists."""
    out = run(["apt-cache", "show", "--no-all-versions", *names], check=False, timeout=None)
    stanzas: dict[str, dict[str, str]] = {}
    for block in out.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", block, re.M))
        if "Package" in fields and fields["Package"] not in stanzas:
            stanzas[fields["Package"]] = fields
    return stanzas


def resolve_packages(names: list[str], progress: Progress) -> dict[str, Package]:
    """Concrete {name: Package} for the names; the kernel metapackage becomes the real kernel
    package it depends on. Runs `apt-get update` once if the apt lists do not know a name."""
    stanzas = _apt_show(names)
    if any(n not in stanzas for n in names):
        progress("apt-get update (the package lists do not know "
                 f"{', '.join(n for n in names if n not in stanzas)})")
        _run(["apt-get", "update", "-qq"])
        stanzas = _apt_show(names)
    missing = [n for n in names if n not in stanzas]
    if missing:
        raise BuildError(f"no Debian package candidate for {', '.join(missing)}")
    packages = {}
    for name in names:
        if name == KERNEL_METAPACKAGE:
            kernel, version = _kernel_from_metapackage(stanzas[name])
            packages[name] = Package(kernel, version)
        else:
            packages[name] = Package(name, stanzas[name]["Version"])
    return packages


def _kernel_from_metapackage(stanza: dict[str, str]) -> tuple[str, str]:
    """'linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)' from the metapackage's Depends."""
    for dep in stanza.get("Depends", "").split(","):
        m = re.match(r"\s*(linux-image-[^\s(|]+)\s*(?:\(=\s*([^)\s]+)\))?", dep)
        if m:
            version = m.group(2) or _apt_show([m.group(1)])[m.group(1)]["Version"]
            return m.group(1), version
    raise BuildError(f"{KERNEL_METAPACKAGE} names no linux-image package: {stanza.get('Depends')}")


def download(packages: list[Package], deb_dir: Path, progress: Progress) -> None:
    """Sets each package's .deb, downloading (in one apt-get call) those not already in deb_dir;
    older versions of the same packages there are removed."""
    deb_dir.mkdir(parents=True, exist_ok=True)

    def find(pkg: Package) -> Path | None:
        quoted = pkg.version.replace(":", "%3a")  # apt's file naming for epochs
        found = sorted(deb_dir.glob(f"{pkg.name}_{quoted}_*.deb"))
        return found[0] if found else None

    missing = [pkg for pkg in packages if find(pkg) is None]
    if missing:
        progress(f"download {len(missing)} packages: {' '.join(p.name for p in missing)}")
        for pkg in missing:
            for old in deb_dir.glob(f"{pkg.name}_*.deb"):
                old.unlink()
        # Sandbox user root: apt's _apt user may not write into a root-owned cache dir.
        _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
              *(f"{p.name}={p.version}" for p in missing)], cwd=deb_dir)
    for pkg in packages:
        pkg.deb = find(pkg)
        if pkg.deb is None:
            raise BuildError(f"apt-get download {pkg.name}={pkg.version} left no .deb")


def unpack(debs: list[Path], dest: Path) -> Path:
    """dpkg-deb -x each .deb into dest (no maintainer scripts, no host changes)."""
    dest.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(dest)])
    return dest


# ---------------------------------------------------------------------------------------------
# Kernel: vmlinuz and just the modules we need, in one pass over the package's data tarball

def _module_name(path: str) -> str:
    return os.path.basename(path).removesuffix(".ko").replace("-", "_")


def extract_kernel(deb: Path, dest: Path) -> tuple[Path, Path, str]:
    """-> (vmlinuz, lib/modules/VERSION dir, VERSION). Only INITRD_MODULES and the modules.*
    metadata are unpacked (the package holds ~1400 files)."""
    wanted = {m.replace("-", "_") for m in INITRD_MODULES}
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    vmlinuz = moddir = None
    found = set()
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            keep = (re.fullmatch(r"boot/vmlinuz-.+", name)
                    or re.fullmatch(r"lib/modules/[^/]+/modules\.(order|builtin|builtin\.modinfo)",
                                    name)
                    or (name.endswith(".ko") and _module_name(name) in wanted))
            if not (keep and member.isfile()):
                continue
            tar.extract(member, dest, filter="data")
            if name.startswith("boot/"):
                vmlinuz = dest / name
            elif name.endswith(".ko"):
                found.add(_module_name(name))
            if name.startswith("lib/modules/"):
                moddir = dest.joinpath(*name.split("/")[:3])
    if proc.wait() != 0:
        raise BuildError(f"dpkg-deb --fsys-tarfile {deb} failed")
    if vmlinuz is None or moddir is None:
        raise BuildError(f"{deb.name} holds no boot/vmlinuz-* or lib/modules/*")
    if wanted - found:
        raise BuildError(f"modules not in {deb.name}: {', '.join(sorted(wanted - found))}")
    return vmlinuz, moddir, moddir.name


# ---------------------------------------------------------------------------------------------
# Building blocks shared by the initramfs and the root file system

def install_busybox(busybox: Path, root: Path) -> None:
    """busybox-static at /bin/busybox plus a symlink for every applet at its usual place."""
    (root / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin/busybox")
    os.chmod(root / "bin/busybox", 0o755)
    for applet in _run([str(busybox), "--list-full"]).split():
        link = root / applet
        if link == root / "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")


def copy_guest_tree(src: Path, root: Path) -> None:
    """Copies hypervisor/guest/<src> over the tree. Modes are set here, not taken from the
    checkout: scripts (#!) 0755, everything else 0644."""
    for path in sorted(src.rglob("*")):
        target = root / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        shutil.copyfile(path, target)
        os.chmod(target, 0o755 if _is_script(path) else 0o644)


def write_newc_cpio(root: Path, extra_devices: dict[str, tuple[int, int, int]]) -> bytes:
    """The tree as a newc ("070701") cpio archive, all entries owned by root with a fixed
    mtime, plus character devices {path: (mode, major, minor)} that an unprivileged build
    could not mknod (the kernel needs /dev/console before /init runs)."""
    out = bytearray()
    ino = 0

    def entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)):
        nonlocal ino
        ino += 1
        namebytes = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, FIXED_MTIME, len(data),
                  0, 0, rdev[0], rdev[1], len(namebytes), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + namebytes)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    paths = sorted(root.rglob("*"))
    for path in paths:
        name = str(path.relative_to(root))
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            entry(name, st.st_mode, os.readlink(path).encode())
        elif stat.S_ISDIR(st.st_mode):
            entry(name, st.st_mode)
        else:
            entry(name, st.st_mode, path.read_bytes())
    for name, (mode, major, minor) in extra_devices.items():
        entry(name, stat.S_IFCHR | mode, rdev=(major, minor))
    entry("TRAILER!!!", 0)
    return bytes(out)


def library_closure(binaries: list[Path], sysroot: Path) -> list[Path]:
    """The shared libraries (inside sysroot, the unpacked packages) that the binaries need,
    found with ldd against sysroot's library directories. A library that resolves outside the
    sysroot means a package is missing from TINY_PACKAGES: that is an error, not a silent
    copy from the host."""
    libdirs = [sysroot / d for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")]
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(map(str, libdirs)))
    needed: set[Path] = set()
    for binary in binaries:
        for line in _run(["ldd", str(binary)], env=env).splitlines():
            line = line.strip()
            if "not found" in line:
                raise BuildError(f"{binary.name}: {line} (add its package to TINY_PACKAGES)")
            m = re.match(r"(\S+) => (\S+)", line)
            if not m:
                continue  # linux-vdso, or the loader line (copied separately)
            path = Path(m.group(2))
            if sysroot not in path.parents:
                raise BuildError(f"{binary.name} needs {m.group(1)}, found only on the host "
                                 f"({path}): add its package to TINY_PACKAGES")
            needed.add(path)
    needed.add(sysroot / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    return sorted(needed)


# ---------------------------------------------------------------------------------------------
# The three outputs

class Builder:
    """One build run: a scratch directory, the resolved packages, and lazily unpacked pieces
    that several outputs share (the kernel package, busybox)."""

    def __init__(self, work: Path, packages: dict[str, Package], progress: Progress):
        self.work = work
        self.packages = packages
        self.progress = progress
        self._kernel: tuple[Path, Path, str] | None = None
        self._sysroot: Path | None = None

    def step(self, what: str):
        self.progress(what)

    def kernel(self) -> tuple[Path, Path, str]:
        if self._kernel is None:
            pkg = self.packages[KERNEL_METAPACKAGE]
            self.step(f"extract {pkg.name} (vmlinuz + {len(INITRD_MODULES)} modules)")
            self._kernel = extract_kernel(pkg.deb, self.work / "kernel")
        return self._kernel

    def sysroot(self) -> Path:
        """busybox-static, dropbear and its libraries unpacked together."""
        if self._sysroot is None:
            self.step("extract busybox-static, dropbear-bin and libraries")
            self._sysroot = unpack([self.packages[n].deb for n in TINY_PACKAGES],
                                   self.work / "sysroot")
        return self._sysroot

    def busybox(self) -> Path:
        bb = self.work / "busybox"
        if not bb.exists():
            self.step("extract busybox-static")
            unpack([self.packages["busybox-static"].deb], bb)
        return bb / "bin/busybox"

    # -- kernel ------------------------------------------------------------------------------
    def build_kernel(self, out: Path) -> None:
        vmlinuz, _, _ = self.kernel()
        shutil.copyfile(vmlinuz, out)

    # -- initramfs ---------------------------------------------------------------------------
    def build_initrd(self, out: Path) -> None:
        _, moddir, version = self.kernel()
        root = self.work / "initramfs"
        self.step(f"initramfs: busybox, {len(INITRD_MODULES)} modules for {version}")
        for d in ("dev", "proc", "sys", "run", "root", "tmp", "etc"):
            (root / d).mkdir(parents=True, exist_ok=True)
        install_busybox(self.busybox(), root)
        shutil.copytree(moddir, root / "lib/modules" / version)
        self.depmod(root, version)
        copy_guest_tree(GUEST_DIR / "initramfs", root)
        (root / "etc/ec2emu-modules").write_text(
            "# loaded in this order by /init (hypervisor/imagebuild.py INITRD_MODULES)\n"
            + "\n".join(INITRD_MODULES) + "\n")
        archive = write_newc_cpio(root, {"dev/console": (0o600, 5, 1)})
        out.write_bytes(gzip.compress(archive, compresslevel=9, mtime=0))

    def depmod(self, root: Path, version: str) -> None:
        """kmod's depmod, from the Debian package kmod unpacked (not installed) and run with
        its libraries beside it. kmod picks its personality from the name it is invoked
        under, so it is run through a symlink named depmod (the package's own is absolute)."""
        self.step("initramfs: depmod")
        kmod = unpack([self.packages[n].deb for n in DEPMOD_PACKAGES], self.work / "kmod")
        depmod = self.work / "kmod-bin/depmod"
        depmod.parent.mkdir(exist_ok=True)
        depmod.symlink_to(kmod / "bin/kmod")
        libdirs = [kmod / d for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")]
        env = dict(os.environ, LD_LIBRARY_PATH=":".join(map(str, libdirs)))
        _run([str(depmod), "-b", str(root), version], env=env)
        if not (root / "lib/modules" / version / "modules.dep").exists():
            raise BuildError("depmod wrote no modules.dep")

    # -- tiny root disk ----------------------------------------------------------------------
    def build_tiny(self, out: Path) -> None:
        if os.geteuid() != 0:
            # mke2fs -d copies owners from the tree: ec2-user's home and the setuid sudo helper
            # need chown, which only root can do.
            raise BuildError("building the tiny root disk needs root (file ownership)")
        sysroot = self.sysroot()
        root = self.work / "tiny"
        self.step("rootfs: busybox, dropbear and its libraries, guest files")
        self._tiny_skeleton(root)
        install_busybox(sysroot / "bin/busybox", root)
        self._install_dropbear(sysroot, root)
        copy_guest_tree(GUEST_DIR / "tiny", root)
        self._tiny_accounts(root)
        raw = self.work / "tiny.raw"
        self.step(f"rootfs: mke2fs -t ext4 -d ({TINY_ROOT_SIZE})")
        _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "ec2emu-root", "-d", str(root),
              str(raw), TINY_ROOT_SIZE])
        self.step("convert: qemu-img convert -O qcow2")
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)])

    @staticmethod
    def _tiny_skeleton(root: Path) -> None:
        for d, mode in [("bin", 0o755), ("sbin", 0o755), ("usr/bin", 0o755),
                        ("usr/sbin", 0o755), ("lib64", 0o755), ("etc", 0o755),
                        ("etc/dropbear", 0o755), ("dev", 0o755), ("proc", 0o555),
                        ("sys", 0o555), ("run", 0o755), ("tmp", 0o1777), ("var/log", 0o755),
                        ("var/lib/ec2emu", 0o755), ("root", 0o700), ("home", 0o755),
                        ("mnt", 0o755)]:
            (root / d).mkdir(parents=True, exist_ok=True)
            os.chmod(root / d, mode)
        (root / "var/run").symlink_to("../run")

    @staticmethod
    def _install_dropbear(sysroot: Path, root: Path) -> None:
        binaries = [sysroot / b for b in DROPBEAR_BINARIES]
        for binary in binaries:
            shutil.copy2(binary, root / binary.relative_to(sysroot))
        libdir = root / "lib/x86_64-linux-gnu"
        libdir.mkdir(parents=True, exist_ok=True)
        for lib in library_closure(binaries, sysroot):
            shutil.copyfile(lib, libdir / lib.name)  # under its soname, symlinks resolved
            os.chmod(libdir / lib.name, 0o755)
        (root / "lib64/ld-linux-x86-64.so.2").symlink_to(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")

    @staticmethod
    def _tiny_accounts(root: Path) -> None:
        """ec2-user's home, root-only shadow, and the setuid busybox behind /usr/bin/sudo
        (guest/tiny/usr/bin/sudo explains the choice)."""
        home = root / "home/ec2-user"
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o755)
        os.chown(home, EC2_USER_UID, EC2_USER_UID)
        os.chmod(root / "etc/shadow", 0o600)
        suid = root / "bin/busybox.suid"
        shutil.copyfile(root / "bin/busybox", suid)
        os.chown(suid, 0, SUDO_GID)
        os.chmod(suid, 0o4750)


@dataclass
class Target:
    file: str
    packages: list[str]           # names as resolved (the kernel by its metapackage)
    guest: str | None             # subdirectory of hypervisor/guest/ baked into it
    method: str                   # Builder method that writes it


TARGETS = {
    "kernel": Target(KERNEL_FILE, [KERNEL_METAPACKAGE], None, "build_kernel"),
    "initrd": Target(INITRD_FILE, [KERNEL_METAPACKAGE, *INITRD_PACKAGES, *DEPMOD_PACKAGES],
                     "initramfs", "build_initrd"),
    "tiny": Target(TINY_FILE, TINY_PACKAGES, "tiny", "build_tiny"),
}
# What each name given to build() means: an AMI is useless without its kernel and ramdisk.
# "debian": the Debian + cloud-init root disk is made by hypervisor/debian_image.py; here it
# only brings the kernel and initramfs it boots with.
SETS = {"kernel": ["kernel"], "initrd": ["initrd"], "tiny": ["kernel", "initrd", "tiny"],
        "debian": ["kernel", "initrd"]}


def default_images_dir() -> str:
    """Where built images are kept unless told otherwise: $EC2EMU_IMAGE_CACHE, else
    /var/cache/ec2emu/images (shared by runs, so tests and CI build once)."""
    return os.environ.get("EC2EMU_IMAGE_CACHE") or DEFAULT_CACHE_DIR


def _inputs(target: Target, packages: dict[str, Package]) -> dict:
    """What the output is made from; equal inputs mean an equal output."""
    inputs = {
        "builder": BUILDER_VERSION,
        "packages": {packages[n].name: packages[n].version for n in target.packages},
    }
    if target.guest:
        inputs["guest"] = _tree_hash(GUEST_DIR / target.guest)
    if target.file == INITRD_FILE:
        inputs["modules"] = INITRD_MODULES
    return inputs


def _record_path(out: Path) -> Path:
    return out.with_name(out.name + ".inputs.json")


def _up_to_date(out: Path, inputs: dict) -> bool:
    try:
        return out.exists() and json.loads(_record_path(out).read_text()) == inputs
    except (OSError, ValueError):
        return False


def build(images_dir: str, which: set[str] = frozenset({"tiny"}),
          progress: Progress = print) -> dict[str, str]:
    """Builds the images named in `which` ("tiny" brings its kernel and initrd; "kernel",
    "initrd" and "debian" -- its kernel and initrd only -- are accepted too) into images_dir; returns {file name: path}. Outputs whose
    recorded inputs are unchanged are kept as they are. Safe against a concurrent build of the
    same directory (a lock file)."""
    unknown = set(which) - SETS.keys()
    if unknown:
        raise ValueError(f"unknown image(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(SETS))}")
    names = [t for t in TARGETS if any(t in SETS[w] for w in which)]
    targets = [TARGETS[n] for n in names]
    outdir = Path(images_dir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)

    with open(outdir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.monotonic()
        progress(f"resolve Debian packages for {', '.join(names)}")
        wanted = sorted({p for t in targets for p in t.packages})
        packages = resolve_packages(wanted, progress)
        todo = [t for t in targets if not _up_to_date(outdir / t.file, _inputs(t, packages))]
        for t in targets:
            if t not in todo:
                progress(f"cached {t.file}")
        if todo:
            needed = {p for t in todo for p in t.packages}
            download([packages[n] for n in sorted(needed)], outdir / ".debs", progress)
            with tempfile.TemporaryDirectory(prefix="ec2emu-imagebuild-") as work:
                builder = Builder(Path(work), packages, progress)
                for t in todo:
                    _build_one(builder, t, outdir, _inputs(t, packages))
            progress(f"built {len(todo)} image file(s) in {time.monotonic() - started:.1f}s")
        return {t.file: str(outdir / t.file) for t in targets}


def _build_one(builder: Builder, target: Target, outdir: Path, inputs: dict) -> None:
    """Writes the output under a temporary name and renames it into place, then records its
    inputs: an interrupted build never leaves a file that looks finished."""
    out = outdir / target.file
    tmp = outdir / f".{target.file}.partial"
    tmp.unlink(missing_ok=True)
    _record_path(out).unlink(missing_ok=True)
    try:
        getattr(builder, target.method)(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    _record_path(out).write_text(json.dumps(inputs, indent=1, sort_keys=True) + "\n")
    builder.progress(f"wrote {target.file} ({out.stat().st_size / 2**20:.1f} MiB)")
