"""SQLAlchemy Core storage of series and metric metadata, the same on both backends."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import Engine, case, func, select
from sqlalchemy.dialects import postgresql, sqlite

from services.common.db import pooled_cursor
from services.metrics.domain import (
    FamilyInfo,
    LabelSet,
    MetricInfo,
    MetricType,
    Series,
    labels_from_json,
    labels_json,
)
from services.metrics.storage.tables import metric_families, metric_names, series


def labels_hash(labels: LabelSet) -> str:
    return _hash_of(labels_json(labels))


def _hash_of(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


_ROWS_PER_INSERT = 1000
_CREATE = (
    "INSERT INTO series (labels_hash, metric_name, labels, agent_id, created_ms, written_by) VALUES {values} "
    "ON CONFLICT (labels_hash) DO UPDATE SET labels_hash = excluded.labels_hash "
    "RETURNING labels_hash, series_id, agent_id, written_by"
)


class SqlSeriesStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        mark = "%s" if engine.dialect.name == "postgresql" else "?"
        self._row_marks = "(" + ", ".join([mark] * 6) + ")"

    def load_series(self, after_id: int) -> list[Series]:
        statement = (
            select(series.c.series_id, series.c.labels, series.c.agent_id, series.c.written_by)
            .where(series.c.series_id > after_id)
            .order_by(series.c.series_id)
        )
        with self._engine.connect() as connection:
            return [
                Series(row.series_id, labels_from_json(row.labels), row.agent_id, bool(row.written_by))
                for row in connection.execute(statement)
            ]

    def create_series(
        self, wanted: Sequence[tuple[LabelSet, str]], now_ms: int, by_writer: bool = False
    ) -> dict[LabelSet, Series]:
        by_hash: dict[str, LabelSet] = {}
        rows: list[tuple[str, str, str, str, int, int]] = []
        for labels, agent_id in wanted:
            text = labels_json(labels)
            digest = _hash_of(text)
            if digest not in by_hash:
                by_hash[digest] = labels
                rows.append((digest, dict(labels).get("__name__", ""), text, agent_id, now_ms, int(by_writer)))
        created: dict[LabelSet, Series] = {}
        # Raw DBAPI, one multi-row statement per 1,000 series: a fleet starting up creates tens of
        # thousands of series in its first seconds, and per-row statement building showed in the
        # profile. Rows another process created first come back too, through the no-op update.
        with pooled_cursor(self._engine, commit=True) as cursor:
            for offset in range(0, len(rows), _ROWS_PER_INSERT):
                part = rows[offset : offset + _ROWS_PER_INSERT]
                values = ", ".join([self._row_marks] * len(part))
                cursor.execute(_CREATE.format(values=values), [field for row in part for field in row])
                for digest, series_id, owner, written_by in cursor.fetchall():
                    labels = by_hash[digest]
                    created[labels] = Series(int(series_id), labels, owner, bool(written_by))
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
        # The first real type a name gets is kept; a name first seen without metadata (type 0)
        # takes the type declared later.
        kept_type = case((metric_names.c.type == 0, statement.excluded.type), else_=metric_names.c.type)
        statement = statement.on_conflict_do_update(
            index_elements=[metric_names.c.name], set_={"type": kept_type, "unit": info.unit, "help": info.help}
        )
        with self._engine.begin() as connection:
            connection.execute(statement)

    def load_families(self) -> list[FamilyInfo]:
        with self._engine.connect() as connection:
            return [
                FamilyInfo(row.name, row.type, row.unit, row.help)
                for row in connection.execute(select(metric_families))
            ]

    def save_families(self, families: Sequence[FamilyInfo]) -> None:
        if not families:
            return
        rows = [{"name": f.name, "type": f.type, "unit": f.unit, "help": f.help} for f in families]
        statement = self._insert(metric_families).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=[metric_families.c.name],
            set_={"type": statement.excluded.type, "unit": statement.excluded.unit, "help": statement.excluded.help},
        )
        with self._engine.begin() as connection:
            connection.execute(statement)
