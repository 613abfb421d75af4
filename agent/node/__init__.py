"""Host metrics under node_exporter's names, labels and units, read from /proc and /sys as
node_exporter reads them, so dashboards and rules written for node_exporter work on agent data.

Collectors are named as node_exporter names them and can be chosen (`--collectors`); one that fails
is logged and reported in `node_scrape_collector_success`, and the others still report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from agent.node import network, storage, system
from agent.node.files import Collector, Emit, HostFiles

_log = logging.getLogger("infrawatch.agent.node")


def default_collectors() -> dict[str, Collector]:
    return {
        "arp": network.arp,
        "conntrack": network.conntrack,
        "cpu": system.cpu,
        "diskstats": storage.diskstats,
        "entropy": system.entropy,
        "filefd": system.filefd,
        "filesystem": storage.Filesystems(),
        "loadavg": system.loadavg,
        "meminfo": system.meminfo,
        "netclass": network.netclass,
        "netdev": network.netdev,
        "netstat": network.netstat,
        "os": system.os_release,
        "pressure": system.pressure,
        "selinux": system.selinux,
        "sockstat": network.sockstat,
        "softnet": network.softnet,
        "stat": system.stat,
        "time": system.time_,
        "timex": system.timex,
        "udp_queues": network.udp_queues,
        "uname": system.uname,
        "vmstat": system.vmstat,
    }


COLLECTOR_NAMES: tuple[str, ...] = tuple(sorted(default_collectors()))


class NodeCollector:
    def __init__(self, host_root: str = "", enabled: Iterable[str] | None = None) -> None:
        self._files = HostFiles(host_root)
        available = default_collectors()
        chosen = COLLECTOR_NAMES if enabled is None else tuple(enabled)
        self._collectors = {name: available[name] for name in chosen}
        self._failing: set[str] = set()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._collectors)

    def collect(self, emit: Emit, clock: Callable[[], float] = time.perf_counter) -> None:
        for name, collector in self._collectors.items():
            started = clock()
            try:
                collector(self._files, emit)
                succeeded = True
                if name in self._failing:
                    self._failing.discard(name)
                    _log.info("node collector works again", extra={"fields": {"collector": name}})
            except (OSError, ValueError, IndexError, KeyError) as exc:
                succeeded = False
                if name not in self._failing:  # once per failure, not every round
                    self._failing.add(name)
                    _log.warning(
                        "node collector failed; the others go on",
                        extra={"fields": {"collector": name, "error": f"{type(exc).__name__}: {exc}"}},
                    )
            emit("node_scrape_collector_duration_seconds", clock() - started, collector=name)
            emit("node_scrape_collector_success", 1.0 if succeeded else 0.0, collector=name)


def collector_names(raw: str) -> tuple[str, ...]:
    """`--collectors`: `all`, `none`, or node_exporter collector names separated by commas."""
    text = raw.strip().lower()
    if text in ("", "all"):
        return COLLECTOR_NAMES
    if text == "none":
        return ()
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in COLLECTOR_NAMES]
    if unknown:
        raise ValueError(f"unknown collector {', '.join(unknown)}; known: {', '.join(COLLECTOR_NAMES)}")
    return names
