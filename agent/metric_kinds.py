"""The InfraWatch agent's own metrics: name, type, unit and help, as pure data.

The agent declares them on every stream; the metrics service reads the same table
to protect these names' types, so no other sender can declare `load1` a counter
and make every real agent's samples conflict. Data only, no imports beyond the
standard library, so both sides can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.node.kinds import NODE, PROCESS, node_kind

GAUGE = 1
COUNTER = 2


@dataclass(frozen=True)
class MetricKind:
    type: int
    unit: str
    help: str


KINDS: dict[str, MetricKind] = {
    "cpu_usage_percent": MetricKind(GAUGE, "percent", "Share of CPU time busy since the last round, all CPUs."),
    "cpu_seconds_total": MetricKind(COUNTER, "seconds", "CPU time spent per mode, summed over CPUs."),
    "cpu_count": MetricKind(GAUGE, "", "Logical CPUs."),
    "load1": MetricKind(GAUGE, "", "1-minute load average."),
    "load5": MetricKind(GAUGE, "", "5-minute load average."),
    "load15": MetricKind(GAUGE, "", "15-minute load average."),
    "memory_total_bytes": MetricKind(GAUGE, "bytes", "Physical memory."),
    "memory_used_bytes": MetricKind(GAUGE, "bytes", "Memory in use (total minus available)."),
    "memory_available_bytes": MetricKind(GAUGE, "bytes", "Memory available to new processes without swapping."),
    "memory_used_percent": MetricKind(GAUGE, "percent", "Memory in use, as a share of physical memory."),
    "swap_total_bytes": MetricKind(GAUGE, "bytes", "Swap space."),
    "swap_used_bytes": MetricKind(GAUGE, "bytes", "Swap space in use."),
    "fs_size_bytes": MetricKind(GAUGE, "bytes", "Filesystem size."),
    "fs_free_bytes": MetricKind(GAUGE, "bytes", "Filesystem space available to unprivileged users."),
    "fs_used_bytes": MetricKind(GAUGE, "bytes", "Filesystem space used."),
    "fs_used_percent": MetricKind(
        GAUGE, "percent", "Filesystem space used, as a share of what unprivileged users can use."
    ),
    "disk_read_bytes_total": MetricKind(COUNTER, "bytes", "Bytes read from the disk."),
    "disk_written_bytes_total": MetricKind(COUNTER, "bytes", "Bytes written to the disk."),
    "disk_reads_total": MetricKind(COUNTER, "", "Reads completed."),
    "disk_writes_total": MetricKind(COUNTER, "", "Writes completed."),
    "net_rx_bytes_total": MetricKind(COUNTER, "bytes", "Bytes received."),
    "net_tx_bytes_total": MetricKind(COUNTER, "bytes", "Bytes sent."),
    "net_rx_packets_total": MetricKind(COUNTER, "", "Packets received."),
    "net_tx_packets_total": MetricKind(COUNTER, "", "Packets sent."),
    "net_rx_errors_total": MetricKind(COUNTER, "", "Receive errors."),
    "net_tx_errors_total": MetricKind(COUNTER, "", "Transmit errors."),
    "procs": MetricKind(GAUGE, "", "Processes (a gauge, so no _total suffix)."),
    "procs_running": MetricKind(GAUGE, "", "Processes running or runnable."),
    "uptime_seconds": MetricKind(GAUGE, "seconds", "Time since boot."),
    # node_exporter's names (agent/node), so PromQL written for node_exporter runs on agent data.
    **{name: MetricKind(*kind) for name, kind in NODE.items()},
    # The busiest processes, grouped by name (agent/processes.py), under process-exporter's names.
    **{name: MetricKind(*kind) for name, kind in PROCESS.items()},
}


def kind_of(name: str) -> MetricKind | None:
    """The kind of any metric the agent itself collects, including node_exporter's families whose
    names depend on the host (node_memory_*, node_netstat_*, ...); None for scraped names."""
    known = KINDS.get(name)
    if known is not None:
        return known
    family = node_kind(name)
    return MetricKind(*family) if family is not None else None
