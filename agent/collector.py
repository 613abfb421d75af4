"""Host metrics: InfraWatch's key figures from psutil, named after Prometheus conventions (base
units, `_total` counters), and node_exporter's metrics under its own names (`agent.node`).

Every sample carries the `host` label; per-device metrics add `cpu_mode`,
`device`, `mountpoint` or `interface`. A collection round is one timestamp for
every sample, so a round is one column of the batch the sender streams.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

from agent.node import NodeCollector
from agent.processes import ProcessCollector

# Devices whose counters say nothing about the host's real I/O.
_SKIPPED_DISKS = ("loop", "ram", "zram", "sr")
_SKIPPED_FILESYSTEMS = {"squashfs", "tmpfs", "devtmpfs", "overlay", "nsfs", "tracefs", "proc", "sysfs"}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass
class Round:
    """All samples of one collection, taken at one instant (epoch milliseconds)."""

    timestamp_ms: int
    samples: list[Sample] = field(default_factory=list)

    def add(self, name: str, value: float, /, **labels: str) -> None:
        self.samples.append(Sample(name, tuple(sorted(labels.items())), float(value)))


def _running_processes() -> int:
    running = 0
    for process in psutil.process_iter(["status"]):
        if process.info["status"] == psutil.STATUS_RUNNING:
            running += 1
    return running


class HostCollector:
    """Collects one round of host metrics per call; CPU usage is measured since the previous call."""

    def __init__(
        self,
        hostname: str | None = None,
        extra_labels: dict[str, str] | None = None,
        host_root: str = "",
        collectors: tuple[str, ...] | None = None,
        processes: ProcessCollector | None = None,
    ) -> None:
        self.hostname = hostname or socket.gethostname()
        # In a container the host's filesystems are mounted read-only under `host_root` (e.g.
        # /host): mounts are read from the host's init process and sizes under that prefix.
        self._host_root = host_root.rstrip("/")
        self._labels = {**(extra_labels or {}), "host": self.hostname}
        self._previous_cpu = psutil.cpu_times()
        # node_exporter's names next to InfraWatch's own key figures (`collectors`: which of them).
        self._node = NodeCollector(host_root, collectors)
        self._processes = processes if processes is not None else ProcessCollector()

    def _with(self, round_: Round, name: str, value: float, /, **labels: str) -> None:
        round_.add(name, value, **self._labels, **labels)

    def collect(self) -> Round:
        round_ = Round(int(time.time() * 1000))
        self._cpu(round_)
        self._memory(round_)
        self._filesystems(round_)
        self._disks(round_)
        self._network(round_)
        self._with(round_, "procs", len(psutil.pids()))
        self._with(round_, "procs_running", _running_processes())
        self._with(round_, "uptime_seconds", time.time() - psutil.boot_time())
        emit = lambda name, value, /, **labels: self._with(round_, name, value, **labels)  # noqa: E731
        self._node.collect(emit)
        self._processes.collect(emit)
        return round_

    def _cpu(self, round_: Round) -> None:
        times = psutil.cpu_times()
        usage = busy_percent(self._previous_cpu, times)
        if usage is not None:
            self._with(round_, "cpu_usage_percent", usage)
        self._previous_cpu = times
        for mode in times._fields:
            self._with(round_, "cpu_seconds_total", getattr(times, mode), cpu_mode=mode)
        self._with(round_, "cpu_count", psutil.cpu_count() or 0)
        for name, value in zip(("load1", "load5", "load15"), psutil.getloadavg(), strict=True):
            self._with(round_, name, value)

    def _memory(self, round_: Round) -> None:
        memory, swap = psutil.virtual_memory(), psutil.swap_memory()
        self._with(round_, "memory_total_bytes", memory.total)
        self._with(round_, "memory_used_bytes", memory.total - memory.available)
        self._with(round_, "memory_available_bytes", memory.available)
        if memory.total:
            self._with(round_, "memory_used_percent", 100.0 * (memory.total - memory.available) / memory.total)
        self._with(round_, "swap_total_bytes", swap.total)
        self._with(round_, "swap_used_bytes", swap.used)

    def _partitions(self) -> list[tuple[str, str, str]]:
        """(device, mountpoint, fstype) of the host's physical filesystems."""
        if not self._host_root:
            return [(p.device, p.mountpoint, p.fstype) for p in psutil.disk_partitions(all=False)]
        found = []
        with open(f"{self._host_root}/proc/1/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) >= 3 and fields[0].startswith("/dev/"):
                    found.append((fields[0], fields[1].replace("\\040", " "), fields[2]))
        return found

    def _filesystems(self, round_: Round) -> None:
        seen: set[str] = set()
        for device, mountpoint, fstype in self._partitions():
            if fstype in _SKIPPED_FILESYSTEMS or mountpoint in seen:
                continue
            seen.add(mountpoint)
            try:
                usage = psutil.disk_usage(self._host_root + mountpoint)
            except OSError:
                continue  # unmounted or unreadable meanwhile
            labels = {"device": device, "mountpoint": mountpoint, "fstype": fstype}
            self._with(round_, "fs_size_bytes", usage.total, **labels)
            self._with(round_, "fs_free_bytes", usage.free, **labels)
            self._with(round_, "fs_used_bytes", usage.used, **labels)
            self._with(round_, "fs_used_percent", usage.percent, **labels)

    def _disks(self, round_: Round) -> None:
        for device, counters in _items(psutil.disk_io_counters(perdisk=True)):
            if device.startswith(_SKIPPED_DISKS):
                continue
            self._with(round_, "disk_read_bytes_total", counters.read_bytes, device=device)
            self._with(round_, "disk_written_bytes_total", counters.write_bytes, device=device)
            self._with(round_, "disk_reads_total", counters.read_count, device=device)
            self._with(round_, "disk_writes_total", counters.write_count, device=device)

    def _network(self, round_: Round) -> None:
        for interface, counters in _items(psutil.net_io_counters(pernic=True)):
            self._with(round_, "net_rx_bytes_total", counters.bytes_recv, interface=interface)
            self._with(round_, "net_tx_bytes_total", counters.bytes_sent, interface=interface)
            self._with(round_, "net_rx_packets_total", counters.packets_recv, interface=interface)
            self._with(round_, "net_tx_packets_total", counters.packets_sent, interface=interface)
            self._with(round_, "net_rx_errors_total", counters.errin, interface=interface)
            self._with(round_, "net_tx_errors_total", counters.errout, interface=interface)


def busy_percent(before: Any, after: Any) -> float | None:
    """Share of CPU time not idle (nor waiting for I/O) between two cpu_times readings; None when no
    time has passed, so a first round reports nothing rather than a made-up number."""
    total = sum(after) - sum(before)
    if total <= 0:
        return None
    idle = (after.idle - before.idle) + (getattr(after, "iowait", 0.0) - getattr(before, "iowait", 0.0))
    return max(0.0, min(100.0, 100.0 * (1.0 - idle / total)))


def _items(counters: dict[str, Any] | None) -> Iterable[tuple[str, Any]]:
    return sorted((counters or {}).items())
