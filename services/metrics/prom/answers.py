"""Evaluated PromQL as Prometheus' HTTP API writes it: resultType and result, values as strings."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
import orjson

from services.metrics.query.promql.evaluator import Result
from services.metrics.query.promql.values import Matrix, Scalar, Text, Vector


def format_value(value: float) -> str:
    """A sample value as Prometheus' API writes it: the shortest digits that read back exactly, in
    exponent form below 1e-6 and from 1e21 on, plain decimals otherwise; NaN, +Inf, -Inf."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        return text
    if "e" in text:
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def instant_answer(result: Result) -> dict[str, Any]:
    value, at = result.value, int(result.steps[0]) / 1000
    if isinstance(value, Scalar):
        return {"resultType": "scalar", "result": [at, format_value(float(value.values[0]))]}
    if isinstance(value, Text):
        return {"resultType": "string", "result": [at, value.value]}
    if isinstance(value, Matrix):
        return {"resultType": "matrix", "result": _matrix(value)}
    order = value.order if value.order is not None else range(len(value.labels))
    return {
        "resultType": "vector",
        "result": [
            {"metric": dict(value.labels[i]), "value": [at, format_value(float(value.values[i, 0]))]}
            for i in order
            if value.present[i, 0]
        ],
    }


def success_body(data: Any) -> bytes:
    """The API's success envelope as JSON bytes."""
    return orjson.dumps({"status": "success", "data": data})


def range_body(result: Result) -> bytes:
    """A range query's whole success answer as JSON bytes, written directly: a dashboard's answer
    holds tens of thousands of points, and building lists of lists for a JSON encoder cost more
    than evaluating the query."""
    value = result.value
    stamps = [repr(t) for t in (result.steps / 1000).tolist()]
    if isinstance(value, Scalar):
        series: list[tuple[bytes, bytes]] = [(b"{}", _points(stamps, value.values, np.arange(len(stamps))))]
    else:
        assert isinstance(value, Vector)
        series = []
        for i in sorted(range(len(value.labels)), key=lambda i: value.labels[i]):
            where = np.flatnonzero(value.present[i])
            if len(where):
                series.append((orjson.dumps(dict(value.labels[i])), _points(stamps, value.values[i], where)))
    body = b",".join(b'{"metric":%s,"values":[%s]}' % (metric, points) for metric, points in series)
    return b'{"status":"success","data":{"resultType":"matrix","result":[%s]}}' % body


def _points(stamps: list[str], row: np.ndarray, where: np.ndarray) -> bytes:
    texts = format_many(row[where])
    return ",".join([f'[{stamps[j]},"{text}"]' for j, text in zip(where.tolist(), texts, strict=True)]).encode()


def format_many(values: np.ndarray) -> list[str]:
    """format_value of each. The common values (finite, between 1e-4 and 1e16, where the shortest
    digits are written without an exponent) are formatted together by orjson's float writer,
    which gives the same shortest digits as repr at a tenth of the cost; whole numbers drop the
    '.0'. The rest go one by one."""
    magnitude = np.abs(values)
    plain = np.isfinite(values) & ((magnitude == 0) | ((magnitude >= 1e-4) & (magnitude < 1e16)))
    texts = orjson.dumps(values.tolist()).decode()[1:-1].split(",")
    for index in np.flatnonzero(plain & (values == np.trunc(values))).tolist():
        texts[index] = texts[index][:-2]
    for index in np.flatnonzero(~plain).tolist():
        texts[index] = format_value(float(values[index]))
    return texts


def _matrix(matrix: Matrix) -> list[dict[str, Any]]:
    """A range vector at one instant: each series' samples inside its window."""
    end = int(matrix.ends[0])
    series = []
    for labels, ts, vs in zip(matrix.labels, matrix.times, matrix.values, strict=True):
        inside = (ts > end - matrix.range_ms) & (ts <= end)
        if inside.any():
            points = [
                [t / 1000, format_value(v)] for t, v in zip(ts[inside].tolist(), vs[inside].tolist(), strict=True)
            ]
            series.append({"metric": dict(labels), "values": points})
    return series
