"""Reading the host's /proc, /sys and /etc, optionally under a mount point (the agent in a container
sees the host's root at e.g. /host). A file that cannot be read is None: kernels differ in what
they offer, and a collector reports what there is."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol


class Emit(Protocol):
    def __call__(self, name: str, value: float, /, **labels: str) -> None: ...


class HostFiles:
    def __init__(self, root: str = "") -> None:
        self.root = root.rstrip("/")

    def path(self, host_path: str) -> str:
        return self.root + host_path

    def read(self, host_path: str) -> str | None:
        try:
            with open(self.root + host_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return None

    def lines(self, host_path: str) -> list[str]:
        text = self.read(host_path)
        return text.splitlines() if text is not None else []

    def value(self, host_path: str) -> str | None:
        """A one-value sysfs attribute, stripped; None when the kernel refuses to give it (EINVAL
        for `speed` of a virtual device, for `carrier` of a device that is down)."""
        text = self.read(host_path)
        return text.strip() if text is not None else None

    def listdir(self, host_path: str) -> list[str]:
        try:
            return sorted(os.listdir(self.root + host_path))
        except OSError:
            return []


Collector = Callable[[HostFiles, Emit], None]


def number(raw: str) -> float:
    """A kernel integer as node_exporter reads it: decimal, or hex with 0x."""
    return float(int(raw, 16)) if raw.startswith("0x") else float(raw)
