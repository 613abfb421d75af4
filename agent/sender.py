"""Streams buffered batches to the metrics service and retires each one when its ack arrives.

One long-lived StreamMetrics call at a time. Batches go out in buffer order,
at most `max_in_flight` unacknowledged; a batch leaves the buffer only when
the server acknowledges it (which it does after committing it). When the
stream breaks, the sender reconnects with jittered exponential backoff and
starts again from the oldest batch still in the buffer; the server's
idempotence drops what it had already stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator

import grpc

from agent.backoff import Backoff
from agent.batches import StreamEncoder
from agent.buffer import DiskBuffer
from agent.identity import Registrar
from infrawatch.metrics.v1 import metrics_pb2 as pb
from infrawatch.metrics.v1 import metrics_pb2_grpc

_log = logging.getLogger("infrawatch.agent.sender")


class Sender(threading.Thread):
    def __init__(
        self,
        stub: metrics_pb2_grpc.MetricsServiceStub,
        buffer: DiskBuffer,
        registrar: Registrar,
        stop: threading.Event,
        max_in_flight: int = 32,
        address: str = "",
    ) -> None:
        super().__init__(name="sender", daemon=True)
        self._address = address
        self._progressed = False
        # Samples the server refused, by reason, since start (the agent's own telemetry of loss).
        self.rejected_by_reason: Counter[str] = Counter()
        self.acknowledged = 0
        self.streaming = False
        self._stub = stub
        self._buffer = buffer
        self._registrar = registrar
        self._halt = stop
        self._max_in_flight = max_in_flight
        self._draining = threading.Event()
        self._call: grpc.Call | None = None

    def drain(self) -> None:
        """Send what is buffered, then close the stream (used on shutdown)."""
        self._draining.set()

    def abort(self) -> None:
        """Stop now; unacknowledged batches stay in the buffer for the next run."""
        self._halt.set()
        if self._call is not None:
            self._call.cancel()

    def run(self) -> None:
        backoff = Backoff()
        while not self._halt.is_set():
            identity = self._registrar.current()
            if identity is None:
                return
            self._progressed = False
            try:
                self._stream(identity.token)
                if self._draining.is_set():
                    return
                if self._progressed:
                    backoff.reset()
            except grpc.RpcError as exc:
                self.streaming = False
                code = exc.code()
                if code == grpc.StatusCode.CANCELLED and self._halt.is_set():
                    return
                if self._progressed:
                    backoff.reset()  # it was streaming: this is a new outage, not a longer one
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    self._registrar.renew(identity)
                delay = backoff.next_delay()
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    delay = max(delay, 5.0)
                    _log.error(
                        "this address is not an InfraWatch metrics service (it does not know StreamMetrics); "
                        "check --metrics-address",
                        extra={"fields": {"address": self._address, "retry_in_s": round(delay, 2)}},
                    )
                    if self._halt.wait(delay):
                        return
                    continue
                _log.warning(
                    "metrics stream broke; reconnecting",
                    extra={
                        "fields": {
                            "code": code.name,
                            "pending_batches": self._buffer.pending(),
                            "retry_in_s": round(delay, 2),
                        }
                    },
                )
                if self._halt.wait(delay):
                    return

    def _stream(self, token: str) -> None:
        encoder = StreamEncoder()
        in_flight: list[int] = []
        acked = threading.Condition()

        def requests() -> Iterator[pb.MetricBatch]:
            last_sent = 0
            while not self._halt.is_set():
                with acked:
                    acked.wait_for(lambda: len(in_flight) < self._max_in_flight or self._halt.is_set(), timeout=1)
                    room = self._max_in_flight - len(in_flight)
                if room <= 0:
                    continue
                rows = self._buffer.after(last_sent, room)
                if not rows:
                    if self._draining.is_set():
                        return
                    self._buffer.wait_for_more(last_sent, 0.5)
                    continue
                for seq, payload in rows:
                    with acked:
                        in_flight.append(seq)
                    last_sent = seq
                    yield encoder.encode(seq, payload)

        call = self._stub.StreamMetrics(requests(), metadata=(("authorization", f"Bearer {token}"),))
        self._call = call
        started = time.monotonic()
        for ack in call:
            self._buffer.retire(ack.sequence)
            with acked:
                if ack.sequence in in_flight:
                    in_flight.remove(ack.sequence)
                acked.notify_all()
            if not self._progressed:
                _log.info(
                    "streaming metrics", extra={"fields": {"connected_after_s": round(time.monotonic() - started, 2)}}
                )
            self._progressed = True
            self.streaming = True
            self.acknowledged += 1
            if ack.samples_rejected:
                self._count_rejections(ack)

    def _count_rejections(self, ack: pb.BatchAck) -> None:
        """A batch is retired once acknowledged, rejected samples included (re-sending them would be
        refused again), so each is counted by reason and logged with the running totals."""
        for rejection in ack.rejections:
            known = rejection.reason in pb.RejectionReason.values()
            reason = pb.RejectionReason.Name(rejection.reason) if known else str(rejection.reason)
            self.rejected_by_reason[reason] += rejection.samples or 1
        reasons = sorted({f"{r.reason}:{r.message}" for r in ack.rejections})
        _log.warning(
            "server rejected samples",
            extra={
                "fields": {
                    "batch": ack.sequence,
                    "rejected": ack.samples_rejected,
                    "reasons": "; ".join(reasons[:5]),
                    "rejected_total": sum(self.rejected_by_reason.values()),
                    "rejected_total_by_reason": ",".join(
                        f"{reason}={count}" for reason, count in sorted(self.rejected_by_reason.items())
                    ),
                }
            },
        )
