"""SQLAlchemy Core storage of series and metric metadata, the same on both backends."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite

from services.common.db import pooled_cursor
from services.metrics.domain import LabelSet, MetricInfo, MetricType, Series, labels_from_json, labels_json
from services.metrics.storage.tables import metric_names, series


def labels_hash(labels: LabelSet) -> str:
    return _hash_of(labels_json(labels))


def _hash_of(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


_ROWS_PER_INSERT = 1000
_CREATE = (
    "INSERT INTO series (labels_hash, metric_name, labels, agent_id, created_ms) VALUES {values} "
    "ON CONFLICT (labels_hash) DO UPDATE SET labels_hash = excluded.labels_hash "
    "RETURNING labels_hash, series_id"
)


class SqlSeriesStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        mark = "%s" if engine.dialect.name == "postgresql" else "?"
        self._row_marks = "(" + ", ".join([mark] * 5) + ")"

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
        by_hash: dict[str, LabelSet] = {}
        rows: list[tuple[str, str, str, str, int]] = []
        for labels, agent_id in wanted:
            text = labels_json(labels)
            digest = _hash_of(text)
            if digest not in by_hash:
                by_hash[digest] = labels
                rows.append((digest, dict(labels).get("__name__", ""), text, agent_id, now_ms))
        created: dict[LabelSet, int] = {}
        # Raw DBAPI, one multi-row statement per 1,000 series: a fleet starting up creates tens of
        # thousands of series in its first seconds, and per-row statement building showed in the
        # profile. Rows another process created first come back too, through the no-op update.
        with pooled_cursor(self._engine, commit=True) as cursor:
            for offset in range(0, len(rows), _ROWS_PER_INSERT):
                part = rows[offset : offset + _ROWS_PER_INSERT]
                values = ", ".join([self._row_marks] * len(part))
                cursor.execute(_CREATE.format(values=values), [field for row in part for field in row])
                created.update({by_hash[digest]: int(series_id) for digest, series_id in cursor.fetchall()})
        return created

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
