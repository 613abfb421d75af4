"""node_exporter-compatible collectors against a made-up host tree (/proc, /sys, /etc written by
the test), and the process collector against made-up process readings."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.metric_kinds import COUNTER, kind_of
from agent.node import NodeCollector, collector_names
from agent.node.files import HostFiles
from agent.node.network import netdev, netstat, sockstat
from agent.node.storage import Filesystems, diskstats
from agent.node.system import cpu, meminfo, os_release, pressure, vmstat
from agent.processes import ProcessCollector, ProcessReading

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def run(collector, root: Path) -> Series:
    found: Series = {}

    def emit(name: str, value: float, /, **labels: str) -> None:
        found[(name, tuple(sorted(labels.items())))] = value

    collector(HostFiles(str(root)), emit)
    return found


def write(root: Path, path: str, text: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def test_cpu_seconds_per_cpu_and_mode_in_user_hz_with_guest_time_apart(tmp_path):
    write(tmp_path, "/proc/stat", "cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 100 0 50 1000 7 0 3 1 20 0\nintr 5\n")
    found = run(cpu, tmp_path)
    assert found[("node_cpu_seconds_total", (("cpu", "0"), ("mode", "user")))] == 1.0
    assert found[("node_cpu_seconds_total", (("cpu", "0"), ("mode", "idle")))] == 10.0
    assert found[("node_cpu_guest_seconds_total", (("cpu", "0"), ("mode", "user")))] == 0.2
    assert {labels for name, labels in found if name == "node_cpu_seconds_total"} == {
        (("cpu", "0"), ("mode", mode))
        for mode in ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    }


def test_meminfo_keys_become_names_with_parentheses_folded_and_kilobytes_in_bytes(tmp_path):
    write(tmp_path, "/proc/meminfo", "MemTotal:  2048 kB\nActive(anon):  4 kB\nHugePages_Total:  3\n")
    assert run(meminfo, tmp_path) == {
        ("node_memory_MemTotal_bytes", ()): 2048 * 1024.0,
        ("node_memory_Active_anon_bytes", ()): 4096.0,
        ("node_memory_HugePages_Total", ()): 3.0,
    }


def test_vmstat_sends_only_node_exporters_default_fields(tmp_path):
    write(tmp_path, "/proc/vmstat", "nr_free_pages 10\npgfault 7\npgmajfault 2\npswpin 1\noom_kill 0\n")
    assert {name for name, _ in run(vmstat, tmp_path)} == {
        "node_vmstat_pgfault", "node_vmstat_pgmajfault", "node_vmstat_pswpin", "node_vmstat_oom_kill"
    }  # fmt: skip


def test_pressure_totals_are_seconds_and_cpu_full_is_not_a_metric(tmp_path):
    write(tmp_path, "/proc/pressure/cpu", "some avg10=0 avg60=0 avg300=0 total=2500000\nfull total=9\n")
    write(tmp_path, "/proc/pressure/io", "some avg10=0 total=1000000\nfull avg10=0 total=500000\n")
    assert run(pressure, tmp_path) == {
        ("node_pressure_cpu_waiting_seconds_total", ()): 2.5,
        ("node_pressure_io_waiting_seconds_total", ()): 1.0,
        ("node_pressure_io_stalled_seconds_total", ()): 0.5,
    }


def test_diskstats_leave_out_partitions_and_count_sectors_of_512_bytes(tmp_path):
    stats = " ".join(str(n) for n in range(1, 18))
    write(tmp_path, "/proc/diskstats", f"   8 0 sda {stats}\n   8 1 sda1 {stats}\n   7 0 loop0 {stats}\n")
    found = run(diskstats, tmp_path)
    assert {dict(labels)["device"] for _, labels in found} == {"sda"}
    assert found[("node_disk_read_bytes_total", (("device", "sda"),))] == 3 * 512.0
    assert found[("node_disk_read_time_seconds_total", (("device", "sda"),))] == 0.004
    assert found[("node_disk_flush_requests_time_seconds_total", (("device", "sda"),))] == 0.017
    info = [labels for name, labels in found if name == "node_disk_info"]
    assert dict(info[0]) == {"device": "sda", "major": "8", "minor": "0", "model": "", "path": "", "revision": "",
                             "serial": "", "wwn": ""}  # fmt: skip


def test_filesystems_skip_pseudo_mounts_report_read_only_and_a_failing_statfs_as_a_device_error(tmp_path):
    (tmp_path / "data").mkdir()
    write(
        tmp_path,
        "/proc/1/mounts",
        "/dev/sdb1 /data ext4 ro,relatime 0 0\nproc /proc proc rw 0 0\ntmpfs /run tmpfs rw 0 0\n"
        "/dev/sdc1 /gone xfs rw 0 0\n/dev/sdb1 /data ext4 ro,relatime 0 0\n",
    )
    found = run(Filesystems(), tmp_path)
    data = (("device", "/dev/sdb1"), ("fstype", "ext4"), ("mountpoint", "/data"))
    gone = (("device", "/dev/sdc1"), ("fstype", "xfs"), ("mountpoint", "/gone"))
    assert {labels for _, labels in found} == {data, gone}
    assert found[("node_filesystem_readonly", data)] == 1.0
    assert found[("node_filesystem_device_error", data)] == 0.0
    assert found[("node_filesystem_size_bytes", data)] > 0
    assert found[("node_filesystem_device_error", gone)] == 1.0
    assert ("node_filesystem_size_bytes", gone) not in found


def test_netdev_prefers_sysfs_counters_and_leaves_out_the_loopback(tmp_path):
    header = "Inter-|   Receive\n face |bytes    packets\n"
    write(tmp_path, "/proc/net/dev", header + "    lo: 1 2 0 0 0 0 0 0 1 2 0 0 0 0 0 0\n"
          "  eth0: 100 5 1 2 3 4 5 6 200 7 8 9 10 11 12 13\n")  # fmt: skip
    write(tmp_path, "/sys/class/net/eth0/statistics/rx_bytes", "150\n")
    write(tmp_path, "/sys/class/net/eth0/statistics/rx_nohandler", "4\n")
    found = run(netdev, tmp_path)
    eth0 = (("device", "eth0"),)
    assert {labels for _, labels in found} == {eth0}
    assert found[("node_network_receive_bytes_total", eth0)] == 150.0  # sysfs
    assert found[("node_network_transmit_bytes_total", eth0)] == 200.0  # /proc/net/dev
    assert found[("node_network_transmit_colls_total", eth0)] == 11.0
    assert found[("node_network_receive_nohandler_total", eth0)] == 4.0


def test_netstat_reads_the_paired_tables_and_snmp6_and_keeps_the_default_fields(tmp_path):
    write(tmp_path, "/proc/net/snmp", "Tcp: ActiveOpens CurrEstab MaxConn\nTcp: 3 4 -1\n")
    write(tmp_path, "/proc/net/netstat", "TcpExt: ListenDrops Other\nTcpExt: 2 9\n")
    write(tmp_path, "/proc/net/snmp6", "Udp6InDatagrams   12\nIp6InReceives 5\n")
    assert run(netstat, tmp_path) == {
        ("node_netstat_Tcp_ActiveOpens", ()): 3.0,
        ("node_netstat_Tcp_CurrEstab", ()): 4.0,
        ("node_netstat_TcpExt_ListenDrops", ()): 2.0,
        ("node_netstat_Udp6_InDatagrams", ()): 12.0,
    }


def test_sockstat_pages_of_memory_are_also_given_in_bytes(tmp_path):
    write(tmp_path, "/proc/net/sockstat", "sockets: used 30\nTCP: inuse 5 orphan 0 tw 1 alloc 6 mem 2\n")
    found = run(sockstat, tmp_path)
    assert found[("node_sockstat_sockets_used", ())] == 30.0
    assert found[("node_sockstat_TCP_mem", ())] == 2.0
    assert found[("node_sockstat_TCP_mem_bytes", ())] % 2 == 0 and found[("node_sockstat_TCP_mem_bytes", ())] >= 8192


def test_os_release_labels_and_the_major_minor_version(tmp_path):
    write(tmp_path, "/etc/os-release", 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="22.04"\n')
    found = run(os_release, tmp_path)
    assert found[("node_os_version", (("id", "ubuntu"), ("id_like", "debian"), ("name", "Ubuntu")))] == 22.04
    (info,) = [dict(labels) for name, labels in found if name == "node_os_info"]
    assert info["version_id"] == "22.04" and info["pretty_name"] == "" and len(info) == 12


def test_a_failing_collector_is_reported_and_the_others_still_report(tmp_path, monkeypatch):
    write(tmp_path, "/proc/loadavg", "0.5 0.25 0.125 1/100 42\n")
    write(tmp_path, "/proc/meminfo", "MemTotal: not-a-number kB\n")
    found: Series = {}
    NodeCollector(str(tmp_path), ("meminfo", "loadavg")).collect(
        lambda name, value, /, **labels: found.__setitem__((name, tuple(sorted(labels.items()))), value)
    )
    assert found[("node_load1", ())] == 0.5
    assert found[("node_scrape_collector_success", (("collector", "meminfo"),))] == 0.0
    assert found[("node_scrape_collector_success", (("collector", "loadavg"),))] == 1.0


def test_every_collected_name_has_a_kind_and_counters_end_in_total():
    found: Series = {}
    NodeCollector().collect(lambda name, value, /, **labels: found.__setitem__((name, tuple(labels.items())), value))
    assert len({name for name, _ in found}) > 100
    for name, _ in found:
        kind = kind_of(name)
        assert kind is not None, name
        assert (kind.type == COUNTER) == name.endswith("_total"), name


def test_collector_names_are_checked():
    assert collector_names("all") == collector_names("") and "cpu" in collector_names("all")
    assert collector_names("none") == ()
    assert collector_names("cpu, meminfo,cpu") == ("cpu", "meminfo")
    with pytest.raises(ValueError, match="unknown collector gpu"):
        collector_names("cpu,gpu")


def reading(pid: int, name: str, cpu_s: float, rss: float, **rest: float) -> ProcessReading:
    return ProcessReading(pid, name, user=cpu_s, system=0.0, resident=rss, virtual=2 * rss, threads=1,
                          start=1000.0 + pid, read=rest.get("read", 0.0), written=0.0, fds=3)  # fmt: skip


class Rounds:
    def __init__(self) -> None:
        self.next: list[ProcessReading] = []

    def __call__(self):
        return iter(self.next)


def collect(collector: ProcessCollector) -> Series:
    found: Series = {}
    collector.collect(lambda name, value, /, **labels: found.__setitem__((name, tuple(sorted(labels.items()))), value))
    return found


def groups(found: Series) -> set[str]:
    return {dict(labels)["groupname"] for _, labels in found}


def test_processes_are_grouped_by_name_and_only_the_busiest_and_biggest_are_sent():
    rounds = Rounds()
    collector = ProcessCollector(top=1, read=rounds)
    rounds.next = [reading(1, "idle", 5, 10), reading(2, "burner", 5, 10), reading(3, "hog", 0, 10)]
    collect(collector)  # the first round is a baseline
    rounds.next = [reading(1, "idle", 5, 10), reading(2, "burner", 9, 10), reading(3, "hog", 0, 900)]
    found = collect(collector)
    assert groups(found) == {"burner", "hog"}
    assert found[("namedprocess_namegroup_cpu_seconds_total", (("groupname", "burner"), ("mode", "user")))] == 4.0
    assert found[("namedprocess_namegroup_memory_bytes", (("groupname", "hog"), ("memtype", "resident")))] == 900


def test_a_fork_bomb_of_one_name_is_one_group_and_series_stay_bounded():
    rounds = Rounds()
    collector = ProcessCollector(top=3, read=rounds)
    for round_number in range(5):
        rounds.next = [reading(10_000 * round_number + i, "bomb", 0.1, 1) for i in range(2000)]
        rounds.next += [reading(i, f"worker-{round_number}-{i}", i, i) for i in range(1, 20)]
        found = collect(collector)
        assert len(groups(found)) <= 6
    assert found[("namedprocess_namegroup_num_procs", (("groupname", "bomb"),))] == 2000


def test_group_cpu_never_goes_backwards_when_a_process_exits_and_new_ones_count_in_full():
    rounds = Rounds()
    collector = ProcessCollector(top=5, read=rounds)
    key = ("namedprocess_namegroup_cpu_seconds_total", (("groupname", "web"), ("mode", "user")))
    rounds.next = [reading(1, "web", 100, 1), reading(2, "web", 50, 1)]
    assert collect(collector)[key] == 0.0
    rounds.next = [reading(1, "web", 103, 1), reading(2, "web", 52, 1)]
    assert collect(collector)[key] == 5.0
    rounds.next = [reading(1, "web", 104, 1), reading(3, "web", 2, 1)]  # 2 exited, 3 started
    assert collect(collector)[key] == 8.0


def test_included_names_are_sent_even_when_idle_and_zero_top_sends_nothing():
    rounds = Rounds()
    rounds.next = [reading(1, "postgres", 0, 1), reading(2, "busy", 9, 99), reading(3, "other", 0, 1)]
    found = collect(ProcessCollector(top=1, include="^postgres$", read=rounds))
    assert groups(found) == {"busy", "postgres"}
    assert collect(ProcessCollector(top=0, read=rounds)) == {}
