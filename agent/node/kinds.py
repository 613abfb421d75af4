# ruff: noqa: E501  (a data table: one metric per line reads better than wrapped help texts)
"""Types and help of the node_exporter-compatible metrics, as pure data.

Names, types and units are node_exporter's (1.5, Linux), so PromQL written for node_exporter runs on
agent data unchanged. node_exporter exposes some families whose names depend on the host
(`/proc/meminfo` keys, `/proc/net/netstat` fields, ...): those are typed by prefix in `FAMILIES`.
node_exporter's "untyped" families carry no type here (METRIC_TYPE_UNSPECIFIED).
Standard library only: the metrics service reads this table too.
"""

from __future__ import annotations

UNTYPED = 0
GAUGE = 1
COUNTER = 2

# name: (type, unit, help)
NODE: dict[str, tuple[int, str, str]] = {
    # cpu
    "node_cpu_seconds_total": (COUNTER, "seconds", "Seconds the CPUs spent in each mode."),
    "node_cpu_guest_seconds_total": (COUNTER, "seconds", "Seconds the CPUs spent running guests, per mode."),
    # stat
    "node_boot_time_seconds": (GAUGE, "seconds", "Node boot time, in unixtime."),
    "node_context_switches_total": (COUNTER, "", "Total number of context switches."),
    "node_forks_total": (COUNTER, "", "Total number of forks."),
    "node_intr_total": (COUNTER, "", "Total number of interrupts serviced."),
    "node_procs_running": (GAUGE, "", "Number of processes in runnable state."),
    "node_procs_blocked": (GAUGE, "", "Number of processes blocked waiting for I/O to complete."),
    # loadavg
    "node_load1": (GAUGE, "", "1m load average."),
    "node_load5": (GAUGE, "", "5m load average."),
    "node_load15": (GAUGE, "", "15m load average."),
    # pressure
    "node_pressure_cpu_waiting_seconds_total": (COUNTER, "seconds", "Total time in seconds that processes have waited for CPU time."),
    "node_pressure_io_waiting_seconds_total": (COUNTER, "seconds", "Total time in seconds that processes have waited due to IO congestion."),
    "node_pressure_io_stalled_seconds_total": (COUNTER, "seconds", "Total time in seconds no process could make progress due to IO congestion."),
    "node_pressure_memory_waiting_seconds_total": (COUNTER, "seconds", "Total time in seconds that processes have waited for memory."),
    "node_pressure_memory_stalled_seconds_total": (COUNTER, "seconds", "Total time in seconds no process could make progress due to memory congestion."),
    # filefd, entropy
    "node_filefd_allocated": (GAUGE, "", "File descriptor statistics: allocated."),
    "node_filefd_maximum": (GAUGE, "", "File descriptor statistics: maximum."),
    "node_entropy_available_bits": (GAUGE, "", "Bits of available entropy."),
    "node_entropy_pool_size_bits": (GAUGE, "", "Bits of entropy pool."),
    # diskstats
    "node_disk_reads_completed_total": (COUNTER, "", "The total number of reads completed successfully."),
    "node_disk_reads_merged_total": (COUNTER, "", "The total number of reads merged."),
    "node_disk_read_bytes_total": (COUNTER, "bytes", "The total number of bytes read successfully."),
    "node_disk_read_time_seconds_total": (COUNTER, "seconds", "The total number of seconds spent by all reads."),
    "node_disk_writes_completed_total": (COUNTER, "", "The total number of writes completed successfully."),
    "node_disk_writes_merged_total": (COUNTER, "", "The number of writes merged."),
    "node_disk_written_bytes_total": (COUNTER, "bytes", "The total number of bytes written successfully."),
    "node_disk_write_time_seconds_total": (COUNTER, "seconds", "This is the total number of seconds spent by all writes."),
    "node_disk_io_now": (GAUGE, "", "The number of I/Os currently in progress."),
    "node_disk_io_time_seconds_total": (COUNTER, "seconds", "Total seconds spent doing I/Os."),
    "node_disk_io_time_weighted_seconds_total": (COUNTER, "seconds", "The weighted # of seconds spent doing I/Os."),
    "node_disk_discards_completed_total": (COUNTER, "", "The total number of discards completed successfully."),
    "node_disk_discards_merged_total": (COUNTER, "", "The total number of discards merged."),
    "node_disk_discarded_sectors_total": (COUNTER, "", "The total number of sectors discarded successfully."),
    "node_disk_discard_time_seconds_total": (COUNTER, "seconds", "This is the total number of seconds spent by all discards."),
    "node_disk_flush_requests_total": (COUNTER, "", "The total number of flush requests completed successfully."),
    "node_disk_flush_requests_time_seconds_total": (COUNTER, "seconds", "This is the total number of seconds spent by all flush requests."),
    "node_disk_info": (GAUGE, "", "Info of /sys/block/<block_device>."),
    # filesystem
    "node_filesystem_size_bytes": (GAUGE, "bytes", "Filesystem size in bytes."),
    "node_filesystem_free_bytes": (GAUGE, "bytes", "Filesystem free space in bytes."),
    "node_filesystem_avail_bytes": (GAUGE, "bytes", "Filesystem space available to non-root users in bytes."),
    "node_filesystem_files": (GAUGE, "", "Filesystem total file nodes."),
    "node_filesystem_files_free": (GAUGE, "", "Filesystem total free file nodes."),
    "node_filesystem_readonly": (GAUGE, "", "Filesystem read-only status."),
    "node_filesystem_device_error": (GAUGE, "", "Whether an error occurred while getting statistics for the given device."),
    # netdev
    **{
        f"node_network_{direction}_{field}_total": (
            COUNTER,
            "bytes" if field == "bytes" else "",
            f"Network device statistic {direction}_{field}.",
        )
        for direction, fields in (
            ("receive", ("bytes", "packets", "errs", "drop", "fifo", "frame", "compressed", "multicast", "nohandler")),
            ("transmit", ("bytes", "packets", "errs", "drop", "fifo", "colls", "carrier", "compressed")),
        )
        for field in fields
    },
    # netclass
    "node_network_address_assign_type": (GAUGE, "", "Network device property: address_assign_type."),
    "node_network_carrier": (GAUGE, "", "Network device property: carrier."),
    "node_network_carrier_changes_total": (COUNTER, "", "Network device property: carrier_changes_total."),
    "node_network_carrier_up_changes_total": (COUNTER, "", "Network device property: carrier_up_changes_total."),
    "node_network_carrier_down_changes_total": (COUNTER, "", "Network device property: carrier_down_changes_total."),
    "node_network_device_id": (GAUGE, "", "Network device property: device_id."),
    "node_network_dormant": (GAUGE, "", "Network device property: dormant."),
    "node_network_flags": (GAUGE, "", "Network device property: flags."),
    "node_network_iface_id": (GAUGE, "", "Network device property: iface_id."),
    "node_network_iface_link": (GAUGE, "", "Network device property: iface_link."),
    "node_network_iface_link_mode": (GAUGE, "", "Network device property: iface_link_mode."),
    "node_network_mtu_bytes": (GAUGE, "bytes", "Network device property: mtu_bytes."),
    "node_network_name_assign_type": (GAUGE, "", "Network device property: name_assign_type."),
    "node_network_net_dev_group": (GAUGE, "", "Network device property: net_dev_group."),
    "node_network_protocol_type": (GAUGE, "", "Network device property: protocol_type."),
    "node_network_speed_bytes": (GAUGE, "bytes", "Network device property: speed_bytes."),
    "node_network_transmit_queue_length": (GAUGE, "", "Network device property: transmit_queue_length."),
    "node_network_up": (GAUGE, "", "Value is 1 if operstate is 'up', 0 otherwise."),
    "node_network_info": (GAUGE, "", "Non-numeric data from /sys/class/net/<iface>, value is always 1."),
    # softnet, arp, udp queues, conntrack
    "node_softnet_processed_total": (COUNTER, "", "Number of processed packets."),
    "node_softnet_dropped_total": (COUNTER, "", "Number of dropped packets."),
    "node_softnet_times_squeezed_total": (COUNTER, "", "Number of times processing packets ran out of quota."),
    "node_arp_entries": (GAUGE, "", "ARP entries by device."),
    "node_udp_queues": (GAUGE, "", "Number of allocated memory in the kernel for UDP datagrams in bytes."),
    "node_nf_conntrack_entries": (GAUGE, "", "Number of currently allocated flow entries for connection tracking."),
    "node_nf_conntrack_entries_limit": (GAUGE, "", "Maximum size of connection tracking table."),
    **{
        f"node_nf_conntrack_stat_{field}": (GAUGE, "", f"Connection tracking statistic: {field}.")
        for field in ("found", "invalid", "ignore", "insert", "insert_failed", "drop", "early_drop", "search_restart")
    },
    # time, timex
    "node_time_seconds": (GAUGE, "seconds", "System time in seconds since epoch (1970)."),
    "node_time_zone_offset_seconds": (GAUGE, "seconds", "System time zone offset in seconds."),
    "node_time_clocksource_available_info": (GAUGE, "", "Available clocksources read from '/sys/devices/system/clocksource'."),
    "node_time_clocksource_current_info": (GAUGE, "", "Current clocksource read from '/sys/devices/system/clocksource'."),
    "node_timex_offset_seconds": (GAUGE, "seconds", "Time offset in between local system and reference clock."),
    "node_timex_frequency_adjustment_ratio": (GAUGE, "", "Local clock frequency adjustment."),
    "node_timex_maxerror_seconds": (GAUGE, "seconds", "Maximum error in seconds."),
    "node_timex_estimated_error_seconds": (GAUGE, "seconds", "Estimated error in seconds."),
    "node_timex_status": (GAUGE, "", "Value of the status array bits."),
    "node_timex_loop_time_constant": (GAUGE, "", "Phase-locked loop time constant."),
    "node_timex_tick_seconds": (GAUGE, "seconds", "Seconds between clock ticks."),
    "node_timex_pps_frequency_hertz": (GAUGE, "", "Pulse per second frequency."),
    "node_timex_pps_jitter_seconds": (GAUGE, "seconds", "Pulse per second jitter."),
    "node_timex_pps_shift_seconds": (GAUGE, "seconds", "Pulse per second interval duration."),
    "node_timex_pps_stability_hertz": (GAUGE, "", "Pulse per second stability, average of recent frequency changes."),
    "node_timex_pps_jitter_total": (COUNTER, "", "Pulse per second count of jitter limit exceeded events."),
    "node_timex_pps_calibration_total": (COUNTER, "", "Pulse per second count of calibration intervals."),
    "node_timex_pps_error_total": (COUNTER, "", "Pulse per second count of calibration errors."),
    "node_timex_pps_stability_exceeded_total": (COUNTER, "", "Pulse per second count of stability limit exceeded events."),
    "node_timex_tai_offset_seconds": (GAUGE, "seconds", "International Atomic Time (TAI) offset."),
    "node_timex_sync_status": (GAUGE, "", "Is clock synchronized to a reliable server (1 = yes, 0 = no)."),
    # uname, os, selinux
    "node_uname_info": (GAUGE, "", "Labeled system information as provided by the uname system call."),
    "node_os_info": (GAUGE, "", "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id."),
    "node_os_version": (GAUGE, "", "Metric containing the major.minor part of the OS version."),
    "node_selinux_enabled": (GAUGE, "", "SELinux is enabled, 1 is true, 0 is false."),
    "node_selinux_current_mode": (GAUGE, "", "SELinux is enforcing, 1 is true, 0 is false."),
    "node_scrape_collector_duration_seconds": (GAUGE, "seconds", "Duration of a collector's last round."),
    "node_scrape_collector_success": (GAUGE, "", "Whether a collector succeeded in its last round."),
    "node_selinux_config_mode": (GAUGE, "", "Configured SELinux enforcement mode: 1 enforcing, 0 permissive, -1 disabled."),
}  # fmt: skip

# Process telemetry (agent/processes.py) under process-exporter's names.
PROCESS: dict[str, tuple[int, str, str]] = {
    "namedprocess_namegroup_num_procs": (GAUGE, "", "Number of processes in this group."),
    "namedprocess_namegroup_cpu_seconds_total": (COUNTER, "seconds", "CPU seconds consumed by the group, per mode."),
    "namedprocess_namegroup_memory_bytes": (GAUGE, "bytes", "Memory of the group's processes, per memtype."),
    "namedprocess_namegroup_read_bytes_total": (COUNTER, "bytes", "Bytes read from storage by the group."),
    "namedprocess_namegroup_write_bytes_total": (COUNTER, "bytes", "Bytes written to storage by the group."),
    "namedprocess_namegroup_num_threads": (GAUGE, "", "Threads of the group's processes."),
    "namedprocess_namegroup_open_filedesc": (GAUGE, "", "Open file descriptors of the group's processes."),
    "namedprocess_namegroup_oldest_start_time_seconds": (GAUGE, "seconds", "Start time of the group's oldest process, in unixtime."),
}  # fmt: skip

# Families whose members depend on the host: prefix -> (type, help prefix).
FAMILIES: dict[str, tuple[int, str]] = {
    "node_memory_": (GAUGE, "Memory information field"),
    "node_netstat_": (UNTYPED, "Statistic"),
    "node_vmstat_": (UNTYPED, "/proc/vmstat information field"),
    "node_sockstat_": (GAUGE, "Socket statistic"),
}


def node_kind(name: str) -> tuple[int, str, str] | None:
    """(type, unit, help) of a node_* metric the agent sends, or None for any other name."""
    known = NODE.get(name)
    if known is not None:
        return known
    for prefix, (kind, help_prefix) in FAMILIES.items():
        if name.startswith(prefix):
            unit = "bytes" if name.endswith("_bytes") else ""
            return kind, unit, f"{help_prefix} {name[len(prefix) :]}."
    return None
