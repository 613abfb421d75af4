"""An evaluator over a fake store holding the PromQL corpus' data (written as a remote writer)."""

from __future__ import annotations

from infrawatch.metrics.v1 import remote_write_pb2 as wire
from services.metrics.domain import IngestLimits
from services.metrics.ingest.stream import Ingestor
from services.metrics.prom.remote_write import RemoteWriteReceiver, decode
from services.metrics.query.promql.evaluator import Evaluator, QueryLimits
from services.metrics.query.use_cases import QueryContext
from services.metrics.storage.catalog import SeriesCatalog
from services.metrics.watch import WatchHub
from tests.unit.fakes import FakeClock, FakeSampleStore, FakeSeriesStore

HOUR_MS = 3_600_000


class LoadedStore:
    def __init__(self, data: dict, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.catalog = SeriesCatalog(FakeSeriesStore(), self.clock, refresh_every_s=0)
        self.store = FakeSampleStore()
        ingestor = Ingestor(
            self.catalog, self.store, WatchHub(), IngestLimits(retention_ms=10_000 * HOUR_MS), self.clock
        )
        receiver = RemoteWriteReceiver(ingestor)
        request = wire.PromWriteRequest(
            timeseries=[
                wire.PromTimeSeries(
                    labels=[wire.PromLabel(name=k, value=v) for k, v in labels],
                    samples=[wire.PromSample(timestamp=round(t * 1000), value=v) for t, v in points],
                )
                for labels, points in data.items()
            ]
        ).SerializeToString()
        prepared = receiver.prepare("writer", "", decode(request))
        self.store.append(prepared.chunks)
        prepared.stream.committed(prepared)
        assert not prepared.result.rejections, prepared.result.rejections[:3]

    def evaluator(self, limits: QueryLimits | None = None, lookback_ms: int = 300_000) -> Evaluator:
        return Evaluator(QueryContext(self.catalog, self.store, self.clock), lookback_ms, limits)
