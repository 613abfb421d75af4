"""The PromQL engine on a fake store (fast tier): the window-edge rule, Prometheus 3's functions
that Debian's Prometheus 2.42 cannot be compared on, the per-query budgets, and the whole corpus
evaluating without a refusal."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.common.errors import InvalidArgument, ResourceExhausted
from services.metrics.query.promql.evaluator import QueryLimits
from services.metrics.query.promql.values import EvaluationError, QueryCancelled, QueryTimeout, Scalar, Vector
from tests.e2e import promql_corpus
from tests.unit.promql_fixture import LoadedStore

T0 = 1_699_000_000 // 3600 * 3600


def labels(name: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"__name__": name, **extra}.items()))


@pytest.fixture(scope="module")
def store() -> LoadedStore:
    return LoadedStore(
        {
            # On whole minutes, so windows' edges land exactly on samples.
            labels("edge"): [(T0 + 60 * k, float(k + 1)) for k in range(4)],
            labels("wobble", job="w"): [
                (T0 + 10 * k, v) for k, v in enumerate([3.0, 5.0, 4.0, 8.0, 7.0, 11.0, 10.0, 14.0, 100.0])
            ],
            **{
                labels("item", pod=f"p{n}", team="a" if n % 2 else "b"): [(T0 + 10 * k, float(n)) for k in range(9)]
                for n in (1, 2, 3, 10, 20)
            },
        }
    )


def instant(store: LoadedStore, expr: str, at: float, limits: QueryLimits | None = None) -> Vector | Scalar:
    return store.evaluator(limits).instant(expr, at).value


def by_labels(vector: Vector) -> dict[tuple, float]:
    return {lb: float(vector.values[i, 0]) for i, lb in enumerate(vector.labels) if vector.present[i, 0]}


def only(vector: Vector) -> float:
    (value,) = by_labels(vector).values()
    return value


# --- the window-edge rule (Prometheus 3: every window is left-open, (t - range, t]) ------------


def test_a_range_window_leaves_out_the_sample_on_its_left_edge(store):
    # At T0+120 a 60 s window is (T0+60, T0+120]: the sample at T0+60 sits on the edge, out.
    # Prometheus 2.42 closes the window on the left and would count 2.
    assert only(instant(store, "count_over_time(edge[60s])", T0 + 120)) == 1
    assert only(instant(store, "count_over_time(edge[61s])", T0 + 120)) == 2
    assert only(instant(store, "count_over_time(edge[3m])", T0 + 180)) == 3


def test_the_lookback_of_an_instant_selector_is_left_open_too(store):
    assert only(instant(store, "edge", T0 + 180 + 299)) == 4
    assert instant(store, "edge", T0 + 180 + 300).labels == []  # exactly 5 m after the last sample


def test_a_subquery_window_is_left_open_over_steps_aligned_to_its_step(store):
    # Inner steps at multiples of 60 s: T0+60, T0+120, T0+180 lie in (T0, T0+180]; T0 is the edge.
    assert only(instant(store, "count_over_time(edge[3m:1m])", T0 + 180)) == 3


# --- Prometheus 3's functions --------------------------------------------------------------------


def reference_smoothing(values: list[float], sf: float, tf: float) -> float:
    """double_exponential_smoothing as Prometheus 3 defines it, step by step."""
    level, trend, previous = values[0], values[1] - values[0], 0.0
    for i in range(1, len(values)):
        if i > 1:
            trend = tf * (level - previous) + (1 - tf) * trend
        previous, level = level, sf * values[i] + (1 - sf) * (level + trend)
    return level


def test_double_exponential_smoothing_follows_prometheus_3s_recurrence(store):
    window = [3.0, 5.0, 4.0, 8.0, 7.0, 11.0, 10.0, 14.0]  # (T0-10, T0+70]
    for sf, tf in ((0.5, 0.5), (0.1, 0.9), (0.8, 0.2)):
        got = only(instant(store, f"double_exponential_smoothing(wobble[80s], {sf}, {tf})", T0 + 70))
        assert got == pytest.approx(reference_smoothing(window, sf, tf), rel=1e-12)
    # Prometheus 3 dropped Prometheus 2's name for it, and so does InfraWatch.
    with pytest.raises(InvalidArgument, match="unknown function with name 'holt_winters'"):
        instant(store, "holt_winters(wobble[80s], 0.5, 0.5)", T0 + 70)


def test_double_exponential_smoothing_needs_two_samples_and_factors_inside_zero_and_one(store):
    assert by_labels(instant(store, "double_exponential_smoothing(wobble[5s], 0.5, 0.5)", T0)) == {}
    with pytest.raises(InvalidArgument, match="invalid smoothing factor"):
        instant(store, "double_exponential_smoothing(wobble[1m], 1, 0.5)", T0 + 70)
    with pytest.raises(InvalidArgument, match="invalid trend factor"):
        instant(store, "double_exponential_smoothing(wobble[1m], 0.5, 0)", T0 + 70)


def test_mad_over_time_is_the_median_of_absolute_deviations_from_the_median(store):
    # All nine samples: 3 5 4 8 7 11 10 14 100, median 8, deviations 5 3 4 0 1 3 2 6 92 → 3.
    assert only(instant(store, "mad_over_time(wobble[90s])", T0 + 80)) == 3.0


def test_sort_by_label_sorts_naturally_and_breaks_ties_by_the_whole_label_set(store):
    vector = instant(store, 'sort_by_label(item, "pod")', T0 + 80)
    assert [dict(vector.labels[i])["pod"] for i in vector.order] == ["p1", "p2", "p3", "p10", "p20"]
    vector = instant(store, 'sort_by_label_desc(item, "team", "pod")', T0 + 80)
    assert [dict(vector.labels[i])["pod"] for i in vector.order] == ["p20", "p10", "p2", "p3", "p1"]


def test_limitk_keeps_k_series_per_group_with_their_own_values(store):
    whole = by_labels(instant(store, "item", T0 + 80))
    picked = by_labels(instant(store, "limitk(2, item)", T0 + 80))
    assert len(picked) == 2 and all(whole[lb] == value for lb, value in picked.items())
    per_team = by_labels(instant(store, "limitk by (team) (1, item)", T0 + 80))
    assert sorted(dict(lb)["team"] for lb in per_team) == ["a", "b"]
    assert by_labels(instant(store, "limitk(0, item)", T0 + 80)) == {}


def test_limit_ratio_and_its_complement_split_the_series_in_two_stably(store):
    every = set(by_labels(instant(store, "item", T0 + 80)))
    for ratio in (0.1, 0.5, 0.9):
        some = set(by_labels(instant(store, f"limit_ratio({ratio}, item)", T0 + 80)))
        rest = set(by_labels(instant(store, f"limit_ratio({ratio - 1}, item)", T0 + 80)))
        assert some | rest == every and not some & rest
        assert some == set(by_labels(instant(store, f"limit_ratio({ratio}, item)", T0 + 40)))
    assert set(by_labels(instant(store, "limit_ratio(1, item)", T0 + 80))) == every
    with pytest.raises(InvalidArgument, match="between -1 and 1"):
        instant(store, "limit_ratio(1.5, item)", T0 + 80)


# --- budgets: refused before the memory or the time is taken ------------------------------------


def test_series_times_steps_past_the_budget_is_refused_before_it_is_held(store):
    limits = QueryLimits(max_points=5 * 50)
    store.evaluator(limits).range("item", T0, T0 + 49, 1)  # 5 series x 50 steps: inside
    with pytest.raises(ResourceExhausted, match="too many samples into memory"):
        store.evaluator(QueryLimits(max_points=5 * 50)).range("item", T0, T0 + 50, 1)
    with pytest.raises(ResourceExhausted, match="too many samples into memory"):
        # Intermediate results count: each side of the operation holds 5 x 50.
        store.evaluator(QueryLimits(max_points=5 * 50 * 2)).range("item * item", T0, T0 + 49, 1)


def test_count_values_is_held_as_its_rows_appear(store):
    # Every series and step has its own value: 9 rows out of one input row, refused as they grow.
    assert len(store.evaluator().range('count_values("v", wobble)', T0, T0 + 80, 10).value.labels) == 9
    with pytest.raises(ResourceExhausted, match="too many samples into memory"):
        store.evaluator(QueryLimits(max_points=9 * 4)).range('count_values("v", wobble)', T0, T0 + 80, 10)


def test_samples_read_past_the_budget_are_refused(store):
    assert only(instant(store, "count_over_time(wobble[90s])", T0 + 80, QueryLimits(max_samples=9))) == 9
    with pytest.raises(ResourceExhausted, match="more than 8 samples"):
        instant(store, "count_over_time(wobble[90s])", T0 + 80, QueryLimits(max_samples=8))


def test_a_query_past_its_time_limit_or_whose_client_left_stops(store):
    with pytest.raises(QueryTimeout, match="timed out"):
        instant(store, "sum(rate(item[1m]))", T0 + 80, QueryLimits(timeout_s=-1))
    with pytest.raises(QueryCancelled, match="canceled"):
        instant(store, "sum(rate(item[1m]))", T0 + 80, QueryLimits(cancelled=lambda: True))


def test_a_long_range_function_checks_its_limits_while_it_runs(store):
    # The client goes away after the selector was read: the function's own loop notices.
    polls = iter([False] * 3 + [True] * 100_000)
    with pytest.raises(QueryCancelled):
        store.evaluator(QueryLimits(cancelled=lambda: next(polls))).range(
            "quantile_over_time(0.5, wobble[1m])", T0, T0 + 10_000, 1
        )


# --- the whole corpus, evaluated without a refusal ----------------------------------------------


@pytest.fixture(scope="module")
def corpus_store() -> tuple[LoadedStore, int]:
    start = T0
    return LoadedStore(promql_corpus.dataset(start)), start


def test_every_corpus_query_evaluates_on_the_fake_store(corpus_store):
    loaded, start = corpus_store
    end = start + 3 * 3600
    refused = []
    queries = promql_corpus.queries() + promql_corpus.at_queries((start + 1800, end - 1800))
    assert len(queries) >= 500
    for expr in queries:
        try:
            value = loaded.evaluator().range(expr, start + 600, end, promql_corpus.STEP_S).value
            assert isinstance(value, Vector | Scalar)
            if isinstance(value, Vector):
                assert value.values.shape == value.present.shape
        except EvaluationError:
            pass  # Prometheus' own execution error (two series made equal by label_replace, say)
        except (InvalidArgument, ResourceExhausted) as error:
            refused.append((expr, str(error)))
    assert not refused, refused[:5]


def test_a_counter_reset_does_not_make_rate_negative(corpus_store):
    loaded, start = corpus_store
    value = loaded.evaluator().range("rate(http_requests_total[5m])", start + 600, start + 3 * 3600, 60).value
    assert np.all(value.values[value.present] >= 0) and not math.isnan(float(value.values[value.present].sum()))


def test_grid_functions_over_very_wide_windows_are_cut_into_bounded_batches():
    from services.metrics.query.promql.functions import BATCH_CELLS, _batches

    steps = 10_800
    widths = np.array([10, 10, 86_400, 5, 5])  # one series holds a day of one-second samples per window
    batches = _batches(widths, steps)
    covered = np.zeros((len(widths), steps), dtype=int)
    for first, last, since, until in batches:
        covered[first:last, since:until] += 1
        assert (last - first) * (until - since) * widths[first:last].max() <= max(BATCH_CELLS, widths.max())
    assert (covered == 1).all()  # every series and step exactly once


def test_stddev_over_a_window_wider_than_a_batch_is_still_exact(store):
    # wobble's nine samples at 10 s; a batch of one step still sees the whole window.
    from services.metrics.query.promql import functions

    saved = functions.BATCH_CELLS
    functions.BATCH_CELLS = 4
    try:
        value = store.evaluator().range("stddev_over_time(wobble[90s])", T0 + 70, T0 + 80, 10).value
    finally:
        functions.BATCH_CELLS = saved
    window = np.array([3.0, 5.0, 4.0, 8.0, 7.0, 11.0, 10.0, 14.0, 100.0])
    assert value.values[0].tolist() == pytest.approx([np.std(window[:8]), np.std(window)])


def test_what_is_not_supported_is_refused_naming_it(store):
    from services.metrics.query.promql.evaluator import Unsupported

    with pytest.raises(Unsupported, match=r"function info\(\)"):
        instant(store, "info(item)", T0 + 80)
    # Native histograms' functions on float series answer empty, as Prometheus' do.
    assert by_labels(instant(store, "histogram_count(item)", T0 + 80)) == {}
