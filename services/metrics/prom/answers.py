"""Evaluated PromQL as Prometheus' HTTP API writes it: resultType and result, values as strings."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np

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


def range_answer(result: Result) -> dict[str, Any]:
    value = result.value
    seconds = (result.steps / 1000).tolist()
    if isinstance(value, Scalar):
        points = [[t, format_value(v)] for t, v in zip(seconds, value.values.tolist(), strict=True)]
        return {"resultType": "matrix", "result": [{"metric": {}, "values": points}]}
    assert isinstance(value, Vector)
    series = []
    for i in sorted(range(len(value.labels)), key=lambda i: value.labels[i]):
        where = np.flatnonzero(value.present[i]).tolist()
        if where:
            row = value.values[i].tolist()
            series.append(
                {"metric": dict(value.labels[i]), "values": [[seconds[j], format_value(row[j])] for j in where]}
            )
    return {"resultType": "matrix", "result": series}


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
