"""Process telemetry: what the busiest processes use, grouped by executable name under
process-exporter's metric names (`namedprocess_namegroup_*`), so its dashboards work unchanged.

Processes are grouped by name, so a fork bomb of one program is one group, and only the `top`
groups by CPU and the `top` by resident memory of each round are sent (plus those matching
`include`, at most `top` more): the series a host can create are bounded whatever runs on it.
CPU and I/O are counters that never go backwards when a process of the group exits: each group
accumulates the increase of its live processes between rounds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psutil

from agent.node.files import Emit

_ATTRS = ["name", "cpu_times", "memory_info", "num_threads", "create_time", "io_counters", "num_fds"]


@dataclass
class _Seen:
    """One live process as of the previous round."""

    group: str
    user: float
    system: float
    read: float
    written: float


@dataclass
class _Group:
    """Accumulated counters of one group, and this round's gauges."""

    user: float = 0.0
    system: float = 0.0
    read: float = 0.0
    written: float = 0.0
    cpu_this_round: float = 0.0
    procs: int = 0
    threads: int = 0
    resident: float = 0.0
    virtual: float = 0.0
    fds: int = 0
    oldest_start: float = field(default=float("inf"))

    def reset_gauges(self) -> None:
        self.cpu_this_round = 0.0
        self.procs = self.threads = self.fds = 0
        self.resident = self.virtual = 0.0
        self.oldest_start = float("inf")


@dataclass(frozen=True)
class ProcessReading:
    pid: int
    name: str
    user: float
    system: float
    resident: float
    virtual: float
    threads: int
    start: float
    read: float
    written: float
    fds: int


def read_processes() -> Iterator[ProcessReading]:
    """Every process psutil can see; figures it may not read (another user's I/O or fds) are 0."""
    for process in psutil.process_iter(_ATTRS, ad_value=None):
        info = process.info
        times, memory = info["cpu_times"], info["memory_info"]
        if times is None or memory is None or not info["name"]:
            continue  # gone meanwhile, or a kernel thread without figures
        io = info["io_counters"]
        yield ProcessReading(
            pid=process.pid,
            name=info["name"],
            user=times.user,
            system=times.system,
            resident=float(memory.rss),
            virtual=float(memory.vms),
            threads=info["num_threads"] or 0,
            start=info["create_time"] or 0.0,
            read=float(io.read_bytes) if io is not None else 0.0,
            written=float(io.write_bytes) if io is not None else 0.0,
            fds=info["num_fds"] or 0,
        )


class ProcessCollector:
    def __init__(
        self,
        top: int = 10,
        include: str = "",
        read: Callable[[], Iterator[ProcessReading]] = read_processes,
    ) -> None:
        self._top = top
        self._include = re.compile(include) if include else None
        self._read = read
        self._seen: dict[int, _Seen] = {}
        self._groups: dict[str, _Group] = {}
        self._first_round = True

    def collect(self, emit: Emit) -> None:
        if self._top <= 0:
            return
        for group in self._groups.values():
            group.reset_gauges()
        seen: dict[int, _Seen] = {}
        for reading in self._read():
            group = self._groups.setdefault(reading.name, _Group())
            before = self._seen.get(reading.pid)
            if before is None or before.group != reading.name:
                # A process started since the last round counts all it used; on the first round
                # everything is a baseline (what ran before the agent is not this interval's).
                before = _Seen(reading.name, 0.0, 0.0, 0.0, 0.0)
                if self._first_round:
                    before = _Seen(reading.name, reading.user, reading.system, reading.read, reading.written)
            used = max(0.0, reading.user - before.user) + max(0.0, reading.system - before.system)
            group.user += max(0.0, reading.user - before.user)
            group.system += max(0.0, reading.system - before.system)
            group.read += max(0.0, reading.read - before.read)
            group.written += max(0.0, reading.written - before.written)
            group.cpu_this_round += used
            group.procs += 1
            group.threads += reading.threads
            group.resident += reading.resident
            group.virtual += reading.virtual
            group.fds += reading.fds
            group.oldest_start = min(group.oldest_start, reading.start)
            seen[reading.pid] = _Seen(reading.name, reading.user, reading.system, reading.read, reading.written)
        self._seen = seen
        self._first_round = False
        # Groups with no live process are forgotten: a name that comes back starts from 0, which
        # rate() reads as a counter reset.
        self._groups = {name: g for name, g in self._groups.items() if g.procs}
        for name in self._chosen():
            self._emit(emit, name, self._groups[name])

    def _chosen(self) -> list[str]:
        live = self._groups
        by_cpu = sorted(live, key=lambda n: (-live[n].cpu_this_round, n))[: self._top]
        by_memory = sorted(live, key=lambda n: (-live[n].resident, n))[: self._top]
        chosen = dict.fromkeys(by_cpu + by_memory)
        if self._include is not None:
            included = [n for n in sorted(live) if self._include.search(n) and n not in chosen]
            chosen.update(dict.fromkeys(included[: self._top]))
        return list(chosen)

    @staticmethod
    def _emit(emit: Emit, name: str, group: _Group) -> None:
        emit("namedprocess_namegroup_num_procs", float(group.procs), groupname=name)
        emit("namedprocess_namegroup_cpu_seconds_total", group.user, groupname=name, mode="user")
        emit("namedprocess_namegroup_cpu_seconds_total", group.system, groupname=name, mode="system")
        emit("namedprocess_namegroup_memory_bytes", group.resident, groupname=name, memtype="resident")
        emit("namedprocess_namegroup_memory_bytes", group.virtual, groupname=name, memtype="virtual")
        emit("namedprocess_namegroup_read_bytes_total", group.read, groupname=name)
        emit("namedprocess_namegroup_write_bytes_total", group.written, groupname=name)
        emit("namedprocess_namegroup_num_threads", float(group.threads), groupname=name)
        emit("namedprocess_namegroup_open_filedesc", float(group.fds), groupname=name)
        emit("namedprocess_namegroup_oldest_start_time_seconds", group.oldest_start, groupname=name)
