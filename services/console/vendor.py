"""`python -m services.console.vendor`: fetch the console's charting library from the npm registry.

uPlot (MIT, a small, fast time-series chart library) is downloaded once by `make install` (and by
the image build), checked against the integrity hash pinned here, and served by the console
itself: nothing is loaded from a CDN at run time, so the console works without internet.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

PACKAGE = "uplot"
VERSION = "1.6.32"
TARBALL = f"https://registry.npmjs.org/uplot/-/uplot-{VERSION}.tgz"
INTEGRITY = "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
FILES = {"package/dist/uPlot.iife.min.js": "uPlot.iife.min.js", "package/dist/uPlot.min.css": "uPlot.min.css"}
VENDOR = Path(__file__).parent / "static" / "vendor"
STAMP = VENDOR / f"{PACKAGE}-{VERSION}"


def installed() -> bool:
    return STAMP.exists() and all((VENDOR / name).exists() for name in FILES.values())


def fetch() -> None:
    if installed():
        return
    with urllib.request.urlopen(TARBALL, timeout=60) as response:
        data = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != INTEGRITY:
        raise SystemExit(f"{TARBALL}: integrity {digest} does not match the pinned {INTEGRITY}")
    VENDOR.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member, name in FILES.items():
            extracted = archive.extractfile(member)
            if extracted is None:
                raise SystemExit(f"{TARBALL} has no {member}")
            (VENDOR / name).write_bytes(extracted.read())
    STAMP.write_text(INTEGRITY + "\n")
    print(f"console: {PACKAGE} {VERSION} installed into {VENDOR}", file=sys.stderr)


if __name__ == "__main__":
    fetch()
