"""Group commit: one thread writes what many streams have prepared, in one transaction.

Each batch used to be its own COPY and commit; with a fleet sending hundreds of
small batches a second, those round trips and commits (and PostgreSQL's
contention between concurrent COPYs into one table) dominated. The committer
takes every prepared batch waiting in its queue (up to `max_samples`), writes
them as one `ChunkColumns` in one transaction, and then completes each batch
(watchers, acknowledgement). Batches are written in the order they were
prepared, so one stream's batches commit in order; when a write fails, every
batch in it fails, its streams are marked broken, and later batches of those
streams are refused rather than written past the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from agent.logs import event
from services.common.errors import Unavailable
from services.metrics.ingest.stream import PreparedBatch
from services.metrics.storage.chunks import ChunkColumns
from services.metrics.storage.ports import Appender

_log = logging.getLogger("infrawatch.metrics.commit")

Done = Callable[[BaseException | None], None]


@dataclass(slots=True)
class _Pending:
    prepared: PreparedBatch
    done: Done


class GroupCommitter:
    def __init__(self, store: Appender, max_samples: int = 500_000) -> None:
        self._store = store
        self._max_samples = max_samples
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self.commits = 0
        self.batches = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then end the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)

    def pending(self) -> int:
        """Batches submitted and not yet taken up for a commit (approximate: read for telemetry)."""
        return self._queue.qsize()

    def submit(self, prepared: PreparedBatch, done: Done) -> None:
        """Queue a prepared batch; `done(None)` once it is committed (and published), or
        `done(error)` when it could not be. Called from any thread; `done` runs on the committer's."""
        self._queue.put(_Pending(prepared, done))

    def future(self, prepared: PreparedBatch) -> asyncio.Future[None]:
        """Queue a prepared batch; the future (of the calling event loop) completes once the batch is
        committed, or fails with the commit's error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        def done(error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(settle, error)

        self.submit(prepared, done)
        return future

    def _group(self, first: _Pending) -> tuple[list[_Pending], bool]:
        group, samples = [first], first.prepared.chunks.samples
        while samples < self._max_samples:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return group, True
            group.append(item)
            samples += item.prepared.chunks.samples
        return group, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            group, stopping = self._group(first)
            self._write(group)

    def _write(self, group: list[_Pending]) -> None:
        refused = [p for p in group if p.prepared.stream.broken]
        live = [p for p in group if not p.prepared.stream.broken]
        for pending in refused:
            pending.done(Unavailable("an earlier batch of this stream failed to commit; reconnect and re-send"))
        if not live:
            return
        try:
            self._store.append(ChunkColumns.concat([p.prepared.chunks for p in live]))
        except Exception as exc:
            event(_log, "group commit failed", logging.ERROR, batches=len(live), error=str(exc).splitlines()[0])
            for pending in live:
                pending.prepared.stream.failed(pending.prepared)
                pending.done(exc)
            return
        self.commits += 1
        self.batches += len(live)
        for pending in live:
            try:
                pending.prepared.stream.committed(pending.prepared)
            except Exception:  # a watcher problem must not cost the agent its acknowledgement
                _log.exception("publishing committed samples failed")
            pending.done(None)
