"""Batches as the buffer keeps them (self-contained) and as one stream sends them (label-set refs).

A buffered batch carries full label sets because it may be sent on any later
stream; `StreamEncoder` rewrites it for the stream at hand: a label set seen
earlier on this stream travels as its ref only, and metric metadata is sent
once per stream.
"""

from __future__ import annotations

from agent.collector import Round
from agent.metric_kinds import KINDS
from infrawatch.metrics.v1 import metrics_pb2 as pb

Key = tuple[tuple[str, str], ...]


def portable_batch(round_: Round) -> bytes:
    """One collection round as a self-contained batch (serialized)."""
    batch = pb.MetricBatch()
    for sample in round_.samples:
        labels = [pb.Label(name="__name__", value=sample.name)]
        labels += [pb.Label(name=name, value=value) for name, value in sample.labels]
        batch.series.add(labels=labels, start_ms=round_.timestamp_ms, values=[sample.value])
    return batch.SerializeToString()


class StreamEncoder:
    """Per-stream state: which label sets and metric names the server has already been told about."""

    def __init__(self) -> None:
        self._refs: dict[Key, int] = {}
        self._declared: set[str] = set()

    def encode(self, sequence: int, payload: bytes) -> pb.MetricBatch:
        batch = pb.MetricBatch.FromString(payload)
        batch.sequence = sequence
        for series in batch.series:
            key = tuple((label.name, label.value) for label in series.labels)
            ref = self._refs.get(key)
            if ref is None:
                series.ref = self._refs[key] = len(self._refs) + 1
                name = key[0][1]
                if name not in self._declared and name in KINDS:
                    kind = KINDS[name]
                    batch.metadata.add(name=name, type=kind.type, unit=kind.unit, help=kind.help)
                    self._declared.add(name)
            else:
                del series.labels[:]
                series.ref = ref
        return batch
