"""Installs xterm.js, the web console's serial terminal, from the npm registry's package: the
version and its sha512 pinned here, unpacked into api/console_static/xterm/ (not in git). Only
the browser build (lib/xterm.js, a UMD script that defines window.Terminal), its stylesheet and
its licence are kept. Nothing is fetched at run time: the console serves these files itself.

Standard library only, so the emulator needs no Node.js. Idempotent: a complete install of the
pinned version is left as it is.

Why the npm package and not Debian's: Debian 12's libjs-xterm (3.8.1) ships CommonJS modules
(`require("./public/Terminal")`), which a browser cannot load without a bundling step.
"""
from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "5.5.0"
TARBALL = f"https://registry.npmjs.org/@xterm/xterm/-/xterm-{VERSION}.tgz"
# The registry's dist.integrity for that tarball (npm view @xterm/xterm@5.5.0 dist.integrity).
INTEGRITY = "sha512-hqJHYaQb5OptNunnyAnkHyM8aCjZ1MEIDTQu1iIbbTD/xops91NB5yq1ZK/dC2JDbVWtF23zUtl9JE2NqwT87A=="
KEEP = {"package/lib/xterm.js": "xterm.js", "package/css/xterm.css": "xterm.css", "package/LICENSE": "LICENSE"}
TARGET = Path(__file__).resolve().parent.parent / "api" / "console_static" / "xterm"


def installed() -> bool:
    return (TARGET / "VERSION").is_file() and (TARGET / "VERSION").read_text().strip() == VERSION \
        and all((TARGET / name).is_file() for name in KEEP.values())


def main() -> int:
    if installed():
        return 0
    with urllib.request.urlopen(TARBALL, timeout=120) as answer:
        data = answer.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != INTEGRITY:
        print(f"ec2emu: {TARBALL} is not the pinned package (sha512 differs); nothing installed", file=sys.stderr)
        return 1
    TARGET.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member, name in KEEP.items():
            content = archive.extractfile(member).read()
            (TARGET / (name + ".tmp")).write_bytes(content)
            (TARGET / (name + ".tmp")).replace(TARGET / name)
    (TARGET / "VERSION").write_text(VERSION + "\n")  # last: marks the install complete
    print(f"ec2emu: xterm.js {VERSION} installed in {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
