"""SQLAlchemy Core storage of series and metric metadata, the same on both backends."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite

from services.metrics.domain import LabelSet, MetricInfo, MetricType, Series, labels_from_json, labels_json
from services.metrics.storage.tables import metric_names, series


def labels_hash(labels: LabelSet) -> str:
    return hashlib.blake2b(labels_json(labels).encode(), digest_size=16).hexdigest()


class SqlSeriesStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def load_series(self, after_id: int) -> list[Series]:
        statement = (
            select(series.c.series_id, series.c.labels, series.c.agent_id)
            .where(series.c.series_id > after_id)
            .order_by(series.c.series_id)
        )
        with self._engine.connect() as connection:
            return [
                Series(row.series_id, labels_from_json(row.labels), row.agent_id)
                for row in connection.execute(statement)
            ]

    def create_series(self, wanted: Sequence[tuple[LabelSet, str]], now_ms: int) -> dict[LabelSet, int]:
        rows = {
            labels_hash(labels): {
                "labels_hash": labels_hash(labels),
                "metric_name": dict(labels).get("__name__", ""),
                "labels": labels_json(labels),
                "agent_id": agent_id,
                "created_ms": now_ms,
            }
            for labels, agent_id in wanted
        }
        by_hash = {labels_hash(labels): labels for labels, _ in wanted}
        with self._engine.begin() as connection:
            connection.execute(self._insert(series).on_conflict_do_nothing(), list(rows.values()))
            found = connection.execute(
                select(series.c.labels_hash, series.c.series_id).where(series.c.labels_hash.in_(list(rows)))
            )
            return {by_hash[row.labels_hash]: row.series_id for row in found}

    def watermark(self) -> tuple[int, int, int]:
        """(highest series id, number of series, number of metric names): a cheap fingerprint
        that changes whenever another process adds a series or a metric name."""
        statement = select(
            select(func.coalesce(func.max(series.c.series_id), 0)).scalar_subquery(),
            select(func.count()).select_from(series).scalar_subquery(),
            select(func.count()).select_from(metric_names).scalar_subquery(),
        )
        with self._engine.connect() as connection:
            highest, count, names = connection.execute(statement).one()
        return int(highest), int(count), int(names)

    def load_metric_infos(self) -> list[MetricInfo]:
        with self._engine.connect() as connection:
            return [
                MetricInfo(row.name, MetricType(row.type), row.unit, row.help)
                for row in connection.execute(select(metric_names))
            ]

    def save_metric_info(self, info: MetricInfo) -> None:
        statement = self._insert(metric_names).values(
            name=info.name, type=int(info.type), unit=info.unit, help=info.help
        )
        statement = statement.on_conflict_do_update(
            index_elements=[metric_names.c.name], set_={"unit": info.unit, "help": info.help}
        )
        with self._engine.begin() as connection:
            connection.execute(statement)
