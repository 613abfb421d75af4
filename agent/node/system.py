"""node_exporter's host-wide collectors: cpu, stat, loadavg, meminfo, vmstat, pressure, filefd,
entropy, time, timex, uname, os and selinux, read from /proc, /sys and /etc as node_exporter
reads them."""

from __future__ import annotations

import ctypes
import os
import re
import time

from agent.node.files import Emit, HostFiles

_USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_VMSTAT_FIELDS = re.compile(r"^(oom_kill|pgpg|pswp|pg.*fault).*")


def cpu(files: HostFiles, emit: Emit) -> None:
    for line in files.lines("/proc/stat"):
        fields = line.split()
        if not fields or not fields[0].startswith("cpu") or fields[0] == "cpu":
            continue
        index = fields[0][3:]
        seconds = [int(tick) / _USER_HZ for tick in fields[1:]]
        for mode, value in zip(_CPU_MODES, seconds, strict=False):
            emit("node_cpu_seconds_total", value, cpu=index, mode=mode)
        if len(seconds) >= 10:
            emit("node_cpu_guest_seconds_total", seconds[8], cpu=index, mode="user")
            emit("node_cpu_guest_seconds_total", seconds[9], cpu=index, mode="nice")


def stat(files: HostFiles, emit: Emit) -> None:
    names = {
        "btime": "node_boot_time_seconds",
        "ctxt": "node_context_switches_total",
        "processes": "node_forks_total",
        "intr": "node_intr_total",
        "procs_running": "node_procs_running",
        "procs_blocked": "node_procs_blocked",
    }
    for line in files.lines("/proc/stat"):
        fields = line.split()
        if len(fields) >= 2 and fields[0] in names:
            emit(names[fields[0]], float(fields[1]))


def loadavg(files: HostFiles, emit: Emit) -> None:
    fields = (files.read("/proc/loadavg") or "").split()
    if len(fields) >= 3:
        for name, value in zip(("node_load1", "node_load5", "node_load15"), fields, strict=False):
            emit(name, float(value))


def meminfo(files: HostFiles, emit: Emit) -> None:
    for line in files.lines("/proc/meminfo"):
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        key = re.sub(r"\((.*)\)", r"_\1", key.strip())  # Active(anon) -> Active_anon
        value = float(parts[0])
        if len(parts) == 2 and parts[1] == "kB":
            value, key = value * 1024, key + "_bytes"
        emit(f"node_memory_{key}", value)


def vmstat(files: HostFiles, emit: Emit) -> None:
    for line in files.lines("/proc/vmstat"):
        name, _, value = line.partition(" ")
        if _VMSTAT_FIELDS.match(name) and value:
            emit(f"node_vmstat_{name}", float(value))


def pressure(files: HostFiles, emit: Emit) -> None:
    """Pressure stall information: `some` is time at least one task waited, `full` time all did."""
    names = {
        ("cpu", "some"): "node_pressure_cpu_waiting_seconds_total",
        ("io", "some"): "node_pressure_io_waiting_seconds_total",
        ("io", "full"): "node_pressure_io_stalled_seconds_total",
        ("memory", "some"): "node_pressure_memory_waiting_seconds_total",
        ("memory", "full"): "node_pressure_memory_stalled_seconds_total",
    }
    for resource in ("cpu", "io", "memory"):
        for line in files.lines(f"/proc/pressure/{resource}"):
            kind, *pairs = line.split()
            name = names.get((resource, kind))
            fields = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
            if name is not None and "total" in fields:
                emit(name, int(fields["total"]) / 1e6)


def filefd(files: HostFiles, emit: Emit) -> None:
    fields = (files.read("/proc/sys/fs/file-nr") or "").split()
    if len(fields) == 3:
        emit("node_filefd_allocated", float(fields[0]))
        emit("node_filefd_maximum", float(fields[2]))


def entropy(files: HostFiles, emit: Emit) -> None:
    available = files.value("/proc/sys/kernel/random/entropy_avail")
    pool = files.value("/proc/sys/kernel/random/poolsize")
    if available is not None:
        emit("node_entropy_available_bits", float(available))
    if pool is not None:
        emit("node_entropy_pool_size_bits", float(pool))


def time_(files: HostFiles, emit: Emit) -> None:
    now = time.time()
    local = time.localtime(now)
    emit("node_time_seconds", now)
    emit("node_time_zone_offset_seconds", float(local.tm_gmtoff), time_zone=local.tm_zone)
    base = "/sys/devices/system/clocksource"
    for entry in files.listdir(base):
        if not entry.startswith("clocksource"):
            continue
        device = entry[len("clocksource") :]
        for source in (files.value(f"{base}/{entry}/available_clocksource") or "").split():
            emit("node_time_clocksource_available_info", 1.0, clocksource=source, device=device)
        current = files.value(f"{base}/{entry}/current_clocksource")
        if current:
            emit("node_time_clocksource_current_info", 1.0, clocksource=current, device=device)


class _Timex(ctypes.Structure):
    """struct timex of <sys/timex.h> (the 11 reserved ints at the end included)."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("reserved", ctypes.c_int * 11),
    ]  # fmt: skip


_STA_NANO = 0x2000
_TIME_ERROR = 5
_PPM_SCALE = 65536 * 1e6  # freq, ppsfreq and stabil are in ppm with a 16-bit fraction


def timex(files: HostFiles, emit: Emit) -> None:
    """The kernel's clock discipline (adjtimex with modes 0 reads and changes nothing)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        reading = _Timex()
        state = libc.adjtimex(ctypes.byref(reading))
    except (OSError, AttributeError):
        return
    if state < 0:
        return
    divisor = 1e9 if reading.status & _STA_NANO else 1e6
    emit("node_timex_sync_status", 0.0 if state == _TIME_ERROR else 1.0)
    emit("node_timex_offset_seconds", reading.offset / divisor)
    emit("node_timex_frequency_adjustment_ratio", 1 + reading.freq / _PPM_SCALE)
    emit("node_timex_maxerror_seconds", reading.maxerror / 1e6)
    emit("node_timex_estimated_error_seconds", reading.esterror / 1e6)
    emit("node_timex_status", float(reading.status))
    emit("node_timex_loop_time_constant", float(reading.constant))
    emit("node_timex_tick_seconds", reading.tick / 1e6)
    emit("node_timex_pps_frequency_hertz", reading.ppsfreq / _PPM_SCALE)
    emit("node_timex_pps_jitter_seconds", reading.jitter / divisor)
    emit("node_timex_pps_shift_seconds", float(reading.shift))
    emit("node_timex_pps_stability_hertz", reading.stabil / _PPM_SCALE)
    emit("node_timex_pps_jitter_total", float(reading.jitcnt))
    emit("node_timex_pps_calibration_total", float(reading.calcnt))
    emit("node_timex_pps_error_total", float(reading.errcnt))
    emit("node_timex_pps_stability_exceeded_total", float(reading.stbcnt))
    emit("node_timex_tai_offset_seconds", float(reading.tai))


def uname(files: HostFiles, emit: Emit) -> None:
    system = os.uname()
    emit(
        "node_uname_info",
        1.0,
        sysname=system.sysname,
        nodename=system.nodename,
        release=system.release,
        version=system.version,
        machine=system.machine,
        domainname=files.value("/proc/sys/kernel/domainname") or "(none)",
    )


_OS_LABELS = (
    "build_id", "id", "id_like", "image_id", "image_version", "name", "pretty_name", "variant",
    "variant_id", "version", "version_codename", "version_id",
)  # fmt: skip


def _os_release(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, equals, value = line.strip().partition("=")
        if equals and not key.startswith("#"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            fields[key.lower()] = value
    return fields


def os_release(files: HostFiles, emit: Emit) -> None:
    text = files.read("/etc/os-release") or files.read("/usr/lib/os-release")
    if text is None:
        return
    fields = _os_release(text)
    emit("node_os_info", 1.0, **{label: fields.get(label, "") for label in _OS_LABELS})
    version = re.match(r"^[0-9]+\.?[0-9]*", fields.get("version_id", ""))
    if version:
        emit(
            "node_os_version",
            float(version.group(0).rstrip(".")),
            id=fields.get("id", ""),
            id_like=fields.get("id_like", ""),
            name=fields.get("name", ""),
        )


def selinux(files: HostFiles, emit: Emit) -> None:
    enforce = files.value("/sys/fs/selinux/enforce")
    emit("node_selinux_enabled", 0.0 if enforce is None else 1.0)
    if enforce is None:
        return
    emit("node_selinux_current_mode", float(enforce))
    modes = {"enforcing": 1.0, "permissive": 0.0, "disabled": -1.0}
    for line in files.lines("/etc/selinux/config"):
        key, _, value = line.strip().partition("=")
        if key == "SELINUX" and value in modes:
            emit("node_selinux_config_mode", modes[value])
