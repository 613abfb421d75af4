"""node_exporter's network collectors: netdev, netclass, netstat, sockstat, softnet, arp,
conntrack and udp_queues."""

from __future__ import annotations

import os
import re
from collections import Counter

from agent.node.files import Emit, HostFiles, number

# Debian's node_exporter leaves the loopback out of netdev (netclass keeps it).
NETDEV_EXCLUDE = re.compile(r"^lo$")
NETSTAT_FIELDS = re.compile(
    r"^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|"
    r"TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|"
    r"Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|"
    r"Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$"
)
# Interface counters as the kernel's netlink statistics name them (sysfs shows the same numbers).
_NETDEV = {
    "receive_bytes": "rx_bytes", "receive_packets": "rx_packets", "receive_errs": "rx_errors",
    "receive_drop": "rx_dropped", "receive_fifo": "rx_fifo_errors", "receive_frame": "rx_frame_errors",
    "receive_compressed": "rx_compressed", "receive_multicast": "multicast", "receive_nohandler": "rx_nohandler",
    "transmit_bytes": "tx_bytes", "transmit_packets": "tx_packets", "transmit_errs": "tx_errors",
    "transmit_drop": "tx_dropped", "transmit_fifo": "tx_fifo_errors", "transmit_colls": "collisions",
    "transmit_carrier": "tx_carrier_errors", "transmit_compressed": "tx_compressed",
}  # fmt: skip
# /proc/net/dev columns, where sysfs is not mounted.
_PROC_NET_DEV = (
    "receive_bytes", "receive_packets", "receive_errs", "receive_drop", "receive_fifo", "receive_frame",
    "receive_compressed", "receive_multicast", "transmit_bytes", "transmit_packets", "transmit_errs",
    "transmit_drop", "transmit_fifo", "transmit_colls", "transmit_carrier", "transmit_compressed",
)  # fmt: skip
_NETCLASS = {
    "addr_assign_type": "node_network_address_assign_type", "carrier": "node_network_carrier",
    "carrier_changes": "node_network_carrier_changes_total",
    "carrier_up_count": "node_network_carrier_up_changes_total",
    "carrier_down_count": "node_network_carrier_down_changes_total", "dev_id": "node_network_device_id",
    "dormant": "node_network_dormant", "flags": "node_network_flags", "ifindex": "node_network_iface_id",
    "iflink": "node_network_iface_link", "link_mode": "node_network_iface_link_mode", "mtu": "node_network_mtu_bytes",
    "name_assign_type": "node_network_name_assign_type", "netdev_group": "node_network_net_dev_group",
    "type": "node_network_protocol_type", "tx_queue_len": "node_network_transmit_queue_length",
}  # fmt: skip
_CONNTRACK_STATS = ("found", "invalid", "ignore", "insert", "insert_failed", "drop", "early_drop", "search_restart")


def netdev(files: HostFiles, emit: Emit) -> None:
    for line in files.lines("/proc/net/dev")[2:]:
        device, _, counters = line.partition(":")
        device = device.strip()
        if not device or NETDEV_EXCLUDE.match(device):
            continue
        columns = counters.split()
        statistics = f"/sys/class/net/{device}/statistics"
        for position, field in enumerate(_PROC_NET_DEV):
            from_sysfs = files.value(f"{statistics}/{_NETDEV[field]}")
            raw = from_sysfs if from_sysfs is not None else (columns[position] if position < len(columns) else None)
            if raw is not None:
                emit(f"node_network_{field}_total", float(raw), device=device)
        nohandler = files.value(f"{statistics}/rx_nohandler")
        if nohandler is not None:
            emit("node_network_receive_nohandler_total", float(nohandler), device=device)


def netclass(files: HostFiles, emit: Emit) -> None:
    for device in files.listdir("/sys/class/net"):
        base = f"/sys/class/net/{device}"
        if files.value(f"{base}/ifindex") is None:
            continue  # bonding_masters and other non-devices
        for attribute, name in _NETCLASS.items():
            raw = files.value(f"{base}/{attribute}")
            if raw:
                try:
                    emit(name, number(raw), device=device)
                except ValueError:
                    continue
        speed = files.value(f"{base}/speed")
        if speed:
            emit("node_network_speed_bytes", float(speed) * 125000, device=device)  # Mbit/s -> bytes/s
        operstate = files.value(f"{base}/operstate") or ""
        emit("node_network_up", 1.0 if operstate == "up" else 0.0, device=device)
        emit(
            "node_network_info",
            1.0,
            device=device,
            address=files.value(f"{base}/address") or "",
            broadcast=files.value(f"{base}/broadcast") or "",
            duplex=files.value(f"{base}/duplex") or "",
            ifalias=files.value(f"{base}/ifalias") or "",
            operstate=operstate,
        )


def _paired_tables(lines: list[str]) -> dict[str, str]:
    """/proc/net/netstat and /proc/net/snmp: a header line of names, then a line of values, per
    protocol. Keys are `Protocol_Field`."""
    found = {}
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        names, numbers = header.split(), values.split()
        if not names or names[0] != numbers[0]:
            continue
        protocol = names[0].rstrip(":")
        for field, value in zip(names[1:], numbers[1:], strict=False):
            found[f"{protocol}_{field}"] = value
    return found


def netstat(files: HostFiles, emit: Emit) -> None:
    fields = _paired_tables(files.lines("/proc/net/netstat"))
    fields.update(_paired_tables(files.lines("/proc/net/snmp")))
    for line in files.lines("/proc/net/snmp6"):
        parts = line.split()
        if len(parts) == 2 and "6" in parts[0]:
            cut = parts[0].index("6") + 1  # Udp6InDatagrams -> Udp6, InDatagrams
            fields[f"{parts[0][:cut]}_{parts[0][cut:]}"] = parts[1]
    for key, value in sorted(fields.items()):
        if NETSTAT_FIELDS.match(key):
            try:
                emit(f"node_netstat_{key}", float(value))
            except ValueError:
                continue


def sockstat(files: HostFiles, emit: Emit) -> None:
    page = os.sysconf("SC_PAGESIZE") if hasattr(os, "sysconf") else 4096
    for path in ("/proc/net/sockstat", "/proc/net/sockstat6"):
        for line in files.lines(path):
            protocol, _, rest = line.partition(":")
            pairs = rest.split()
            for field, value in zip(pairs[::2], pairs[1::2], strict=False):
                if protocol == "sockets":
                    emit(f"node_sockstat_sockets_{field}", float(value))
                    continue
                emit(f"node_sockstat_{protocol}_{field}", float(value))
                if field == "mem":
                    emit(f"node_sockstat_{protocol}_mem_bytes", float(value) * page)


def softnet(files: HostFiles, emit: Emit) -> None:
    for cpu, line in enumerate(files.lines("/proc/net/softnet_stat")):
        columns = line.split()
        if len(columns) >= 3:
            emit("node_softnet_processed_total", float(int(columns[0], 16)), cpu=str(cpu))
            emit("node_softnet_dropped_total", float(int(columns[1], 16)), cpu=str(cpu))
            emit("node_softnet_times_squeezed_total", float(int(columns[2], 16)), cpu=str(cpu))


def arp(files: HostFiles, emit: Emit) -> None:
    lines = files.lines("/proc/net/arp")
    entries = Counter(line.split()[-1] for line in lines[1:] if line.split())
    for device, count in sorted(entries.items()):
        emit("node_arp_entries", float(count), device=device)


def conntrack(files: HostFiles, emit: Emit) -> None:
    count = files.value("/proc/sys/net/netfilter/nf_conntrack_count")
    if count is None:
        return  # the module is not loaded
    emit("node_nf_conntrack_entries", float(count))
    limit = files.value("/proc/sys/net/netfilter/nf_conntrack_max")
    if limit is not None:
        emit("node_nf_conntrack_entries_limit", float(limit))
    lines = files.lines("/proc/net/stat/nf_conntrack")
    if not lines:
        return
    header = lines[0].split()
    totals = Counter[str]()
    for line in lines[1:]:
        for name, value in zip(header, line.split(), strict=False):
            totals[name] += int(value, 16)
    for name in _CONNTRACK_STATS:
        if name in header:
            emit(f"node_nf_conntrack_stat_{name}", float(totals[name]))


def udp_queues(files: HostFiles, emit: Emit) -> None:
    for ip, path in (("v4", "/proc/net/udp"), ("v6", "/proc/net/udp6")):
        lines = files.lines(path)
        if not lines:
            continue
        tx = rx = 0
        for line in lines[1:]:
            columns = line.split()
            if len(columns) > 4 and ":" in columns[4]:
                tx_queue, _, rx_queue = columns[4].partition(":")
                tx, rx = tx + int(tx_queue, 16), rx + int(rx_queue, 16)
        emit("node_udp_queues", float(tx), ip=ip, queue="tx")
        emit("node_udp_queues", float(rx), ip=ip, queue="rx")
