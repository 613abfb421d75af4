"""node_exporter's diskstats and filesystem collectors."""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from agent.node.files import Emit, HostFiles

# node_exporter's defaults (the filesystem ones as Debian's package sets them): partitions and
# RAM/loop devices say nothing the whole disk does not; pseudo and runtime filesystems are not
# capacity anyone runs out of.
DISK_EXCLUDE = re.compile(r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$")
MOUNT_POINTS_EXCLUDE = re.compile(
    r"^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
)
FS_TYPES_EXCLUDE = re.compile(
    r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|"
    r"overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$"
)
_SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's own size

# /proc/diskstats columns after major, minor and name: (metric, scale)
_DISK_COLUMNS = (
    ("node_disk_reads_completed_total", 1.0),
    ("node_disk_reads_merged_total", 1.0),
    ("node_disk_read_bytes_total", _SECTOR_BYTES),
    ("node_disk_read_time_seconds_total", 0.001),
    ("node_disk_writes_completed_total", 1.0),
    ("node_disk_writes_merged_total", 1.0),
    ("node_disk_written_bytes_total", _SECTOR_BYTES),
    ("node_disk_write_time_seconds_total", 0.001),
    ("node_disk_io_now", 1.0),
    ("node_disk_io_time_seconds_total", 0.001),
    ("node_disk_io_time_weighted_seconds_total", 0.001),
    ("node_disk_discards_completed_total", 1.0),
    ("node_disk_discards_merged_total", 1.0),
    ("node_disk_discarded_sectors_total", 1.0),
    ("node_disk_discard_time_seconds_total", 0.001),
    ("node_disk_flush_requests_total", 1.0),
    ("node_disk_flush_requests_time_seconds_total", 0.001),
)
_UDEV_INFO = {"ID_MODEL": "model", "ID_PATH": "path", "ID_REVISION": "revision", "ID_SERIAL_SHORT": "serial",
              "ID_WWN": "wwn"}  # fmt: skip


def diskstats(files: HostFiles, emit: Emit) -> None:
    for line in files.lines("/proc/diskstats"):
        fields = line.split()
        if len(fields) < 14 or DISK_EXCLUDE.match(fields[2]):
            continue
        major, minor, device = fields[0], fields[1], fields[2]
        for (name, scale), raw in zip(_DISK_COLUMNS, fields[3:], strict=False):
            emit(name, float(raw) * scale, device=device)
        info = dict.fromkeys(_UDEV_INFO.values(), "")
        for udev in files.lines(f"/run/udev/data/b{major}:{minor}"):
            key, _, value = udev.removeprefix("E:").partition("=")
            if udev.startswith("E:") and key in _UDEV_INFO:
                info[_UDEV_INFO[key]] = value
        emit("node_disk_info", 1.0, device=device, major=major, minor=minor, **info)


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


class Filesystems:
    """Sizes and inodes of mounted filesystems. A mount whose statfs hangs (a dead NFS server) is
    reported as a device error and not asked again until the hanging call returns, so one stuck
    mount never stalls a collection round."""

    STAT_TIMEOUT_S = 5.0

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="statfs")
        self._stuck: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, files: HostFiles, emit: Emit) -> None:
        seen: set[tuple[str, str, str]] = set()
        lines = files.lines("/proc/1/mounts") or files.lines("/proc/mounts")
        for line in lines:
            fields = line.split()
            if len(fields) < 4:
                continue
            device, mountpoint, fstype, options = fields[0], _unescape(fields[1]), fields[2], fields[3]
            if MOUNT_POINTS_EXCLUDE.match(mountpoint) or FS_TYPES_EXCLUDE.match(fstype):
                continue
            labels = (device, mountpoint, fstype)
            if labels in seen:
                continue
            seen.add(labels)
            label_map = {"device": device, "mountpoint": mountpoint, "fstype": fstype}
            emit("node_filesystem_readonly", 1.0 if "ro" in options.split(",") else 0.0, **label_map)
            stats = self._statfs(files.path(mountpoint))
            emit("node_filesystem_device_error", 1.0 if stats is None else 0.0, **label_map)
            if stats is None:
                continue
            emit("node_filesystem_size_bytes", float(stats.f_blocks * stats.f_bsize), **label_map)
            emit("node_filesystem_free_bytes", float(stats.f_bfree * stats.f_bsize), **label_map)
            emit("node_filesystem_avail_bytes", float(stats.f_bavail * stats.f_bsize), **label_map)
            emit("node_filesystem_files", float(stats.f_files), **label_map)
            emit("node_filesystem_files_free", float(stats.f_ffree), **label_map)

    def _statfs(self, path: str) -> os.statvfs_result | None:
        with self._lock:
            if path in self._stuck:
                return None
        future: Future[os.statvfs_result] = self._pool.submit(os.statvfs, path)
        try:
            return future.result(timeout=self.STAT_TIMEOUT_S)
        except FutureTimeout:
            with self._lock:
                self._stuck.add(path)
            future.add_done_callback(lambda _done: self._unstick(path))
            return None
        except OSError:
            return None

    def _unstick(self, path: str) -> None:
        with self._lock:
            self._stuck.discard(path)
