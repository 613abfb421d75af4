"""The agent's parts on their own: collector against psutil, buffer, backoff, stream encoding, config."""

from __future__ import annotations

import threading
from collections import namedtuple
from pathlib import Path

import psutil
import pytest

from agent.backoff import Backoff
from agent.batches import StreamEncoder, portable_batch
from agent.buffer import DiskBuffer
from agent.collector import HostCollector, Round, busy_percent
from agent.config import load
from agent.metric_kinds import COUNTER, KINDS
from services.common.config import ConfigError


@pytest.fixture(scope="module")
def collected() -> Round:
    collector = HostCollector("unit-host", {"env": "test"})
    return collector.collect()


def values(round_: Round, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {s.labels: s.value for s in round_.samples if s.name == name}


def test_every_sample_is_labelled_with_the_host_and_extra_labels(collected):
    assert collected.samples
    for sample in collected.samples:
        labels = dict(sample.labels)
        assert labels["host"] == "unit-host" and labels["env"] == "test"


def test_counters_and_units_follow_prometheus_naming():
    for name, kind in KINDS.items():
        assert (kind.type == COUNTER) == name.endswith("_total"), name
        if kind.unit == "bytes":
            assert "_bytes" in name, name
        if kind.unit == "seconds":
            assert "_seconds" in name, name


def test_memory_and_cpu_count_match_psutil(collected):
    assert list(values(collected, "memory_total_bytes").values()) == [float(psutil.virtual_memory().total)]
    assert list(values(collected, "cpu_count").values()) == [float(psutil.cpu_count())]
    modes = {dict(labels)["cpu_mode"] for labels in values(collected, "cpu_seconds_total")}
    assert modes == set(psutil.cpu_times()._fields)


def test_filesystems_and_interfaces_match_what_psutil_reports(collected):
    mounted = {dict(labels)["mountpoint"] for labels in values(collected, "fs_size_bytes")}
    assert mounted <= {p.mountpoint for p in psutil.disk_partitions(all=False)}
    for labels, size in values(collected, "fs_size_bytes").items():
        assert size == psutil.disk_usage(dict(labels)["mountpoint"]).total
    interfaces = {dict(labels)["interface"] for labels in values(collected, "net_rx_bytes_total")}
    assert interfaces == set(psutil.net_io_counters(pernic=True))


def test_uptime_is_measured_from_boot(collected):
    (uptime,) = values(collected, "uptime_seconds").values()
    assert abs(uptime - (collected.timestamp_ms / 1000 - psutil.boot_time())) < 5


CpuTimes = namedtuple("CpuTimes", "user system idle iowait")


def test_busy_percent_counts_idle_and_iowait_as_not_busy():
    before = CpuTimes(10.0, 5.0, 80.0, 5.0)
    after = CpuTimes(16.0, 7.0, 90.0, 7.0)
    assert busy_percent(before, after) == pytest.approx(100 * 8 / 20)
    assert busy_percent(before, before) is None


def test_buffer_keeps_batches_until_retired_and_across_reopening(tmp_path: Path):
    buffer = DiskBuffer(tmp_path / "buffer.db", max_bytes=1 << 20)
    first, second = buffer.append(b"one"), buffer.append(b"two")
    assert buffer.after(0, 10) == [(first, b"one"), (second, b"two")]
    buffer.retire(first)
    buffer.close()
    reopened = DiskBuffer(tmp_path / "buffer.db", max_bytes=1 << 20)
    assert reopened.after(0, 10) == [(second, b"two")]
    assert reopened.append(b"three") > second


def test_a_full_buffer_drops_the_oldest_batches_and_counts_them(tmp_path: Path):
    buffer = DiskBuffer(tmp_path / "buffer.db", max_bytes=25)
    for index in range(5):
        buffer.append(bytes([index]) * 10)
    assert [payload[0] for _, payload in buffer.after(0, 10)] == [3, 4]
    assert buffer.dropped == 3


def test_waiting_for_more_returns_when_a_batch_arrives(tmp_path: Path):
    buffer = DiskBuffer(tmp_path / "buffer.db", max_bytes=1 << 20)
    threading.Timer(0.1, lambda: buffer.append(b"late")).start()
    assert buffer.wait_for_more(0, timeout_s=5)
    assert not buffer.wait_for_more(buffer.after(0, 1)[0][0], timeout_s=0.05)


def test_backoff_grows_with_jitter_below_the_cap_and_resets():
    backoff = Backoff(base_s=1.0, cap_s=4.0)
    delays = [backoff.next_delay() for _ in range(6)]
    assert all(0 <= d <= limit for d, limit in zip(delays, [1, 2, 4, 4, 4, 4], strict=True))
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_backoff_wait_is_interrupted_by_stop():
    stop = threading.Event()
    stop.set()
    assert Backoff(base_s=60, cap_s=60).wait(stop) is True


def test_a_stream_sends_each_label_set_once_then_only_its_ref():
    round_ = Round(1000)
    round_.add("load1", 0.5, host="h")
    round_.add("net_rx_bytes_total", 10, host="h", interface="eth0")
    payload = portable_batch(round_)
    encoder = StreamEncoder()
    first, second = encoder.encode(1, payload), encoder.encode(2, payload)
    assert [s.ref for s in first.series] == [1, 2] and all(s.labels for s in first.series)
    assert {m.name for m in first.metadata} == {"load1", "net_rx_bytes_total"}
    assert [s.ref for s in second.series] == [1, 2] and not any(s.labels for s in second.series)
    assert list(second.metadata) == [] and second.sequence == 2
    assert all(s.labels for s in StreamEncoder().encode(3, payload).series)


def test_flags_beat_environment_beats_config_file(tmp_path: Path):
    config_file = tmp_path / "agent.toml"
    config_file.write_text('interval = "30s"\nhostname = "from-file"\ngrace = "3s"\n[labels]\nenv = "prod"\n')
    config = load(
        ["--config", str(config_file), "--interval", "5s", "--label", "role=db"],
        {"INFRAWATCH_AGENT_INTERVAL": "7s", "INFRAWATCH_AGENT_HOSTNAME": "from-env"},
    )
    assert config.interval == 5.0
    assert config.hostname == "from-env"
    assert config.grace == 3.0
    assert config.labels == {"env": "prod", "role": "db"}


def test_a_bad_option_is_reported_with_its_source():
    with pytest.raises(ConfigError, match="INFRAWATCH_AGENT_INTERVAL"):
        load([], {"INFRAWATCH_AGENT_INTERVAL": "often"})
    with pytest.raises(ConfigError, match="--label"):
        load(["--label", "novalue"], {})


def test_an_unwritable_state_directory_is_one_line_naming_the_path(tmp_path: Path, capsys):
    from agent.__main__ import main

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["--state-dir", str(blocker / "state"), "--log-level", "ERROR"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert error.startswith(f"infrawatch-agent: cannot write the state directory {blocker / 'state'}: ")


def test_rejected_samples_are_counted_by_reason_in_the_agents_own_telemetry(tmp_path: Path):
    from agent.sender import Sender
    from infrawatch.metrics.v1 import metrics_pb2 as pb

    sender = Sender(None, DiskBuffer(tmp_path / "b.db", 1 << 20), None, threading.Event())  # type: ignore[arg-type]
    for sequence in (1, 2):
        ack = pb.BatchAck(sequence=sequence, samples_rejected=3)
        ack.rejections.add(reason=pb.REJECTION_REASON_CARDINALITY_LIMIT, samples=2, message="limit")
        ack.rejections.add(reason=pb.REJECTION_REASON_TOO_FAR_IN_FUTURE, samples=1, message="clock")
        sender._count_rejections(ack)
    assert sender.rejected_by_reason == {
        "REJECTION_REASON_CARDINALITY_LIMIT": 4,
        "REJECTION_REASON_TOO_FAR_IN_FUTURE": 2,
    }


def test_the_host_root_setting_reads_the_hosts_mounts_and_sizes_under_it(tmp_path: Path):
    root = tmp_path / "host"
    (root / "proc" / "1").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "proc" / "1" / "mounts").write_text("/dev/sda1 /data ext4 rw 0 0\nproc /proc proc rw 0 0\n")
    round_ = HostCollector("c", {}, host_root=str(root)).collect()
    sizes = values(round_, "fs_size_bytes")
    assert list(sizes) == [(("device", "/dev/sda1"), ("fstype", "ext4"), ("host", "c"), ("mountpoint", "/data"))]
    assert list(sizes.values()) == [psutil.disk_usage(str(root / "data")).total]


def test_the_buffer_and_its_directory_are_readable_by_their_owner_only(tmp_path):
    import stat

    from agent.buffer import DiskBuffer

    path = tmp_path / "state" / "buffer.db"
    DiskBuffer(path, 1 << 20)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
