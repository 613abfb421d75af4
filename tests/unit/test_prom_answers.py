"""The JSON of PromQL answers: values written as Prometheus writes them, and the range answer's
direct writer giving the same document a JSON encoder would."""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from services.metrics.domain import LabelSet
from services.metrics.prom.answers import format_many, format_value, range_body
from services.metrics.query.promql.evaluator import Result
from services.metrics.query.promql.values import Scalar, Vector

EDGES = [0.0, -0.0, 1.0, -2.0, 100.0, 0.1, 1e-4, 9.99e-5, 1e-6, 1e-7, 5e-5, 1e15, 1e16, 1e20, 1e21, 1.5e300]


def test_values_are_written_as_prometheus_writes_them():
    assert [format_value(v) for v in (1.0, -0.0, 0.5, 1e-7, 1e21, 1e20, 2.5e-5, math.nan, math.inf, -math.inf)] == [
        "1", "-0", "0.5", "1e-07", "1e+21", "100000000000000000000", "0.000025", "NaN", "+Inf", "-Inf",
    ]  # fmt: skip


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=50))
def test_formatting_many_at_once_is_formatting_each(values):
    array = np.array(values + EDGES + [math.nan, math.inf, -math.inf], dtype=np.float64)
    assert format_many(array) == [format_value(v) for v in array.tolist()]


def test_the_range_answer_is_the_document_a_json_encoder_would_write():
    steps = np.arange(1_700_000_000_000, 1_700_000_000_000 + 5 * 15_000, 15_000, dtype=np.int64)
    labels: list[LabelSet] = [(("__name__", "up"), ("job", 'é"x')), (("__name__", "up"), ("job", "a"))]
    values = np.array([[1.0, 2.5, math.nan, 1e-7, 4.0], [0.0, 0.0, 1.0, 1.0, 3.25]])
    present = np.array([[True, True, True, True, False], [False, False, False, False, False]])
    answer = json.loads(range_body(Result(Vector(labels, values, present), steps)))
    assert answer == {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {
                    "metric": {"__name__": "up", "job": 'é"x'},
                    "values": [
                        [1700000000.0, "1"],
                        [1700000015.0, "2.5"],
                        [1700000030.0, "NaN"],
                        [1700000045.0, "1e-07"],
                    ],
                }
            ],
        },
    }
    scalar = json.loads(range_body(Result(Scalar(np.array([1.0, 2.0])), steps[:2])))
    assert scalar["data"]["result"] == [{"metric": {}, "values": [[1700000000.0, "1"], [1700000015.0, "2"]]}]
