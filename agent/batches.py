"""Batches as the buffer keeps them (self-contained) and as one stream sends them (label-set refs).

A buffered batch carries full label sets because it may be sent on any later
stream; `StreamEncoder` rewrites it for the stream at hand: a label set seen
earlier on this stream travels as its ref only, and metric metadata is sent
once per stream.
"""

from __future__ import annotations

from agent.collector import Round
from agent.metric_kinds import kind_of
from infrawatch.metrics.v1 import metrics_pb2 as pb

Key = tuple[tuple[str, str], ...]


def portable_batch(round_: Round, types: dict[str, int] | None = None) -> bytes:
    """One collection round as a self-contained batch (serialized), declaring `types` (metric
    name → MetricType) for names the agent does not know itself (scraped ones)."""
    batch = pb.MetricBatch()
    for name, kind in sorted((types or {}).items()):
        if kind and kind_of(name) is None:
            batch.metadata.add(name=name, type=kind)
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
        # A scraped batch declares its own names' types: each once per stream.
        carried = [m for m in batch.metadata if m.name not in self._declared]
        self._declared.update(m.name for m in carried)
        del batch.metadata[:]
        batch.metadata.extend(carried)
        for series in batch.series:
            key = tuple((label.name, label.value) for label in series.labels)
            ref = self._refs.get(key)
            if ref is None:
                series.ref = self._refs[key] = len(self._refs) + 1
                name = key[0][1]
                if name not in self._declared:
                    kind = kind_of(name)
                    if kind is not None:
                        batch.metadata.add(name=name, type=kind.type, unit=kind.unit, help=kind.help)
                        self._declared.add(name)
            else:
                del series.labels[:]
                series.ref = ref
        return batch
