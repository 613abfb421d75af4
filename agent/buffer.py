"""The agent's on-disk buffer of batches not yet acknowledged by the server.

A batch enters when it is collected and leaves only when the server's ack
for it arrives, so a crash, a restart or a dropped connection loses nothing:
the next stream starts again from the oldest unacknowledged batch. The buffer
is bounded by bytes; when full, the oldest batches are dropped and counted,
because fresh data matters more to an operator than a gap far in the past.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

_log = logging.getLogger("infrawatch.agent.buffer")


class DiskBuffer:
    def __init__(self, path: Path, max_bytes: int) -> None:
        # Owner-only (0700/0600), as the services' stores: the buffer holds this host's metrics.
        # SQLite gives the -wal and -shm files the main file's mode.
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        with contextlib.suppress(PermissionError):
            path.chmod(0o600)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: an appended batch survives power loss, not only a crash of the agent.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batches (seq INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL, "
            "created_ms INTEGER)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(batches)")}
        if "created_ms" not in columns:  # a buffer written by an agent before telemetry existed
            self._db.execute("ALTER TABLE batches ADD COLUMN created_ms INTEGER")
        self.dropped = 0

    def append(self, payload: bytes) -> int:
        """Store a batch durably; returns its sequence number."""
        with self._changed:
            cursor = self._db.execute(
                "INSERT INTO batches (payload, created_ms) VALUES (?, ?)", (payload, int(time.time() * 1000))
            )
            seq = int(cursor.lastrowid or 0)
            self._enforce_limit()
            self._changed.notify_all()
            return seq

    def _enforce_limit(self) -> None:
        total = self._db.execute("SELECT coalesce(sum(length(payload)), 0) FROM batches").fetchone()[0]
        if total <= self._max_bytes:
            return
        dropped = 0
        for seq, size in self._db.execute("SELECT seq, length(payload) FROM batches ORDER BY seq").fetchall():
            if total <= self._max_bytes:
                break
            self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
            total -= size
            dropped += 1
        self.dropped += dropped
        _log.warning(
            "buffer full; dropped the oldest unsent batches",
            extra={"fields": {"dropped": dropped, "dropped_total": self.dropped, "max_bytes": self._max_bytes}},
        )

    def after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` batches with a sequence number above `seq`, oldest first."""
        with self._lock:
            return self._db.execute(
                "SELECT seq, payload FROM batches WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()

    def wait_for_more(self, seq: int, timeout_s: float) -> bool:
        """Block until a batch newer than `seq` exists or the timeout passes."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._db.execute("SELECT 1 FROM batches WHERE seq > ? LIMIT 1", (seq,)).fetchone() is not None,
                timeout=timeout_s,
            )

    def retire(self, seq: int) -> None:
        """The server acknowledged batch `seq`: forget it."""
        with self._changed:
            self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
            self._changed.notify_all()

    def oldest_age_s(self) -> float:
        """How long the oldest unacknowledged batch has waited (0 when none does; batches kept from
        an agent version that did not record the time count from the oldest one that did)."""
        with self._lock:
            oldest = self._db.execute("SELECT min(created_ms) FROM batches").fetchone()[0]
        return 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)

    def pending(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM batches").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
