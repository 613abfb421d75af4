"""Both stores' aggregation engines (Python for SQLite, SQL for PostgreSQL) held to one written
specification by a property test: generated series with NaN, ±Inf, gaps, resets, jitter and ties,
queried with every aggregation, before and after compaction, must give the reference's answer."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

from google.protobuf.duration_pb2 import Duration
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infrawatch.metrics.v1 import metrics_pb2 as pb
from services.common.timestamps import to_timestamp
from services.metrics.domain import IngestLimits
from services.metrics.query.aggregate import rate_lookbehind_ms

AGGREGATIONS = {
    pb.AGGREGATION_AVG: "avg",
    pb.AGGREGATION_MIN: "min",
    pb.AGGREGATION_MAX: "max",
    pb.AGGREGATION_SUM: "sum",
    pb.AGGREGATION_COUNT: "count",
    pb.AGGREGATION_LAST: "last",
    pb.AGGREGATION_RATE: "rate",
}
_names = itertools.count()

values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0]),
    st.integers(min_value=0, max_value=1000).map(float),
)


@st.composite
def fleets(draw: st.DrawFn) -> list[tuple[str, list[int], list[float]]]:
    """1-4 series of one metric: shared round timestamps (ties), jitter, gaps, resets."""
    rounds = draw(st.lists(st.integers(min_value=1, max_value=40_000), min_size=1, max_size=25))
    base = list(itertools.accumulate(rounds))
    result = []
    for node in "abcd"[: draw(st.integers(min_value=1, max_value=4))]:
        jitter = draw(st.booleans())
        times = sorted({t + (draw(st.integers(0, 999)) if jitter else 0) for t in base if draw(st.integers(0, 9)) > 1})
        if not times:
            times = [base[0]]
        counter = draw(st.booleans())
        if counter:  # a counter with occasional resets and the odd NaN
            level, series_values = 0.0, []
            for _ in times:
                level = 0.0 if draw(st.integers(0, 9)) == 0 else level + draw(st.integers(0, 100))
                series_values.append(math.nan if draw(st.integers(0, 19)) == 0 else level)
        else:
            series_values = [draw(values) for _ in times]
        result.append((node, times, series_values))
    return result


def reference(
    fleet: list[tuple[str, list[int], list[float]]], aggregation: str, start: int, end: int, step: int
) -> list[float | None]:
    """The specification, written plainly, for one group holding every series."""
    buckets: dict[int, list[tuple[int, float]]] = defaultdict(list)
    if aggregation == "rate":
        lookbehind = rate_lookbehind_ms(step)
        rates: dict[int, float] = defaultdict(float)
        for _, times, vals in fleet:
            kept = [(t, v) for t, v in zip(times, vals, strict=True) if start - lookbehind <= t <= end and v == v]
            increases: dict[int, float] = defaultdict(float)
            spans: dict[int, tuple[int, int]] = {}
            for (t0, v0), (t1, v1) in itertools.pairwise(kept):
                if t1 >= start and t1 - t0 <= lookbehind:
                    b = (t1 - start) // step
                    increases[b] += v1 - v0 if v1 >= v0 else v1
                    spans[b] = (spans.get(b, (t0, t1))[0], t1)
            for b, increase in increases.items():
                covered = min(step, end + 1 - (start + b * step))  # end cuts the last bucket short
                divisor = min(step, max(covered, spans[b][1] - spans[b][0]))  # never under the samples' span
                rates[b] += increase / (divisor / 1000)
        return [rates.get(b) for b in range((end - start) // step + 1)]
    for _, times, vals in fleet:
        for t, v in zip(times, vals, strict=True):
            if start <= t <= end:
                buckets[(t - start) // step].append((t, v))
    out: list[float | None] = []
    for b in range((end - start) // step + 1):
        found = buckets.get(b)
        if not found:
            out.append(None)
            continue
        numbers = [v for _, v in found]
        if aggregation == "avg":
            out.append(
                math.fsum(numbers) / len(numbers) if not _undefined(numbers) else _naive_sum(numbers) / len(numbers)
            )
        elif aggregation == "sum":
            out.append(math.fsum(numbers) if not _undefined(numbers) else _naive_sum(numbers))
        elif aggregation == "count":
            out.append(float(len(numbers)))
        elif aggregation == "min":
            real = [v for v in numbers if v == v]
            out.append(min(real) if real else math.nan)
        elif aggregation == "max":
            out.append(math.nan if any(v != v for v in numbers) else max(numbers))
        else:  # last: the newest; ties to the greatest value, NaN losing
            newest = max(t for t, _ in found)
            tied = [v for t, v in found if t == newest]
            real = [v for v in tied if v == v]
            out.append(max(real) if real else math.nan)
    return out


def _undefined(numbers: list[float]) -> bool:
    return any(v != v or math.isinf(v) for v in numbers)


def _naive_sum(numbers: list[float]) -> float:
    total = 0.0
    for v in numbers:
        total += v
    return total


def same(actual: float, expected: float) -> bool:
    if expected != expected:
        return actual != actual
    if math.isinf(expected):
        return actual == expected
    return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9)


def check(stub, metric: str, fleet, start: int, end: int, step: int) -> None:
    for aggregation, name in AGGREGATIONS.items():
        reply = stub.QueryRange(
            pb.QueryRangeRequest(
                selector=pb.Selector(selector=metric),
                start=to_timestamp(start),
                end=to_timestamp(end),
                step=Duration(seconds=step // 1000),
                aggregation=aggregation,
            ),
            timeout=10,
        )
        expected = reference(fleet, name, start, end, step)
        wanted = {start + b * step: v for b, v in enumerate(expected) if v is not None}
        if not wanted:
            assert list(reply.series) == [], name
            continue
        (series,) = reply.series
        got = dict(zip(series.timestamps_ms, series.values, strict=True))
        assert set(got) == set(wanted), (name, sorted(got), sorted(wanted))
        for t, v in wanted.items():
            assert same(got[t], v), (name, t, got[t], v)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(fleet=fleets(), step_s=st.sampled_from([10, 60, 300]), cut=st.integers(min_value=0, max_value=59_999))
def test_both_engines_follow_the_specification_before_and_after_compaction(
    metrics_harness, metrics_stub, agent_token, fleet, step_s, cut
):
    metrics_harness.ingestor.limits = IngestLimits()  # every example makes new series
    metric = f"prop_{next(_names)}"
    t0 = (metrics_harness.clock() // 3_600_000 - 3) * 3_600_000
    for sequence, (node, times, vals) in enumerate(fleet, start=1):
        # Each series in two batches, so that there are chunks for compaction to merge.
        half = len(times) // 2
        for part, (ts, vs) in enumerate(((times[:half], vals[:half]), (times[half:], vals[half:]))):
            if not ts:
                continue
            batch = pb.MetricBatch(sequence=sequence * 2 + part)
            batch.series.add(
                labels=[pb.Label(name="__name__", value=metric), pb.Label(name="node", value=node)],
                timestamps_ms=[t0 + t for t in ts],
                values=vs,
            )
            (ack,) = metrics_stub.StreamMetrics(
                iter([batch]), metadata=(("authorization", f"Bearer {agent_token}"),), timeout=10
            )
            assert ack.samples_rejected == 0, ack
    shifted = [(node, [t0 + t for t in times], vals) for node, times, vals in fleet]
    last = max(t for _, times, _ in shifted for t in times)
    start, end, step = t0, last - cut if last - cut > t0 else last, step_s * 1000
    check(metrics_stub, metric, shifted, start, end, step)
    metrics_harness.samples.compact(3_600_000, t0 - 3_600_000, t0 + 2 * 3_600_000)
    check(metrics_stub, metric, shifted, start, end, step)
