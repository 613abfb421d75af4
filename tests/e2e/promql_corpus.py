"""The PromQL corpus InfraWatch is held to against a real Prometheus, and the data both hold.

Written for this project (after reading what prometheus/compliance's query set covers): every
function, aggregation, operator and modifier, with ranges, offsets (negative too), `@`, `by` /
`without`, `bool`, scalar and vector sides, subqueries and set operators, over data with counter
resets, classic histograms, a gap longer than the lookback, NaN and ±Inf, and a staleness marker.

Prometheus 2.42 (Debian's) closes range windows on the left, Prometheus 3 (InfraWatch) does not;
the data avoid the edge: samples sit at :07, :22, :37, :52 and every evaluation time is a whole
minute, and subquery ranges end in 7 s so no inner step lands on a window's start.
Functions Prometheus 2.42 does not have (`double_exponential_smoothing`, `sort_by_label`,
`mad_over_time`, `limitk`, `limit_ratio`) are held by unit tests instead.
"""

from __future__ import annotations

import math
import random
import struct

STEP_S = 60
SPACING_S = 15
PHASE_S = 7
STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
BUCKETS = ("0.1", "0.25", "0.5", "1", "2.5", "+Inf")

Labels = tuple[tuple[str, str], ...]


def dataset(start: int, hours: int = 3) -> dict[Labels, list[tuple[int, float]]]:
    """series → [(timestamp s, value)]."""
    rng = random.Random(15)
    times = [start + PHASE_S + SPACING_S * k for k in range(hours * 3600 // SPACING_S)]
    data: dict[Labels, list[tuple[int, float]]] = {}
    for instance in ("a", "b", "c"):
        for code in ("200", "500"):
            total, points = float(rng.randint(0, 50)), []
            for index, t in enumerate(times):
                total += rng.randint(0, 20 if code == "200" else 3)
                if instance == "b" and code == "200" and index == 300:
                    total = float(rng.randint(0, 5))  # a counter reset
                points.append((t, total))
            data[(("__name__", "http_requests_total"), ("code", code), ("instance", instance), ("job", "api"))] = points
        for zone in ("x", "y"):
            data[(("__name__", "cpu_temp"), ("instance", instance), ("zone", zone))] = [
                (t, rng.uniform(20, 80)) for t in times
            ]
        depth = []
        for index, t in enumerate(times):
            if instance == "c" and 200 <= index < 280:
                continue  # a 20-minute gap: longer than the 5-minute lookback
            depth.append((t, float(rng.randint(0, 40))))
        data[(("__name__", "queue_depth"), ("instance", instance))] = depth
        data[(("__name__", "mem_bytes"), ("instance", instance))] = [
            (t, float(rng.randint(10**9, 4 * 10**9) // 4096 * 4096)) for t in times
        ]
        data[(("__name__", "node_uname_info"), ("instance", instance), ("nodename", f"host-{instance}"))] = [
            (t, 1.0) for t in times
        ]
        data[(("__name__", "boot_time_seconds"), ("instance", instance))] = [
            (t, float(start - 86400 * (40 + 97 * ord(instance)) + 3671 * ord(instance))) for t in times
        ]
    for instance in ("a", "b"):
        counts = [0.0] * len(BUCKETS)
        series: list[list[tuple[int, float]]] = [[] for _ in BUCKETS]
        total = 0.0
        sums = []
        for t in times:
            for _ in range(rng.randint(0, 12)):
                observed = rng.expovariate(2.0)
                total += observed
                for i, bound in enumerate(BUCKETS):
                    if observed <= float(bound):
                        counts[i] += 1
            for i in range(len(BUCKETS)):
                series[i].append((t, counts[i]))
            sums.append((t, total))
        for bound, points in zip(BUCKETS, series, strict=True):
            labels = (("__name__", "request_seconds_bucket"), ("instance", instance), ("job", "api"), ("le", bound))
            data[labels] = points
        data[(("__name__", "request_seconds_count"), ("instance", instance), ("job", "api"))] = series[-1]
        data[(("__name__", "request_seconds_sum"), ("instance", instance), ("job", "api"))] = sums
    weird = []
    for index, t in enumerate(times):
        value = rng.uniform(-5, 5)
        if index % 37 == 5:
            value = math.nan
        elif index == 100:
            value = math.inf
        elif index == 400:
            value = -math.inf
        weird.append((t, value))
    data[(("__name__", "weird"), ("instance", "a"))] = weird
    flappy = []
    for index, t in enumerate(times):
        if 330 <= index < 400:
            if index == 330:
                flappy.append((t, STALE_NAN))  # the target went away: a staleness marker
            continue
        flappy.append((t, float(index % 17)))
    data[(("__name__", "flappy"), ("instance", "a"))] = flappy
    return data


COUNTERS = ("http_requests_total", 'http_requests_total{code="500"}', "request_seconds_count")
GAUGES = ("cpu_temp", "queue_depth", "weird", "flappy", 'mem_bytes{instance="b"}')
RANGES = ("1m", "5m", "15m")
RANGE_FUNCTIONS = (
    "rate", "irate", "increase", "delta", "idelta", "deriv", "changes", "resets",
    "sum_over_time", "avg_over_time", "min_over_time", "max_over_time", "count_over_time",
    "last_over_time", "present_over_time", "stddev_over_time", "stdvar_over_time", "absent_over_time",
)  # fmt: skip
MATH_FUNCTIONS = (
    "abs", "ceil", "floor", "exp", "sqrt", "ln", "log2", "log10", "sgn", "sin", "cos", "tan", "asin",
    "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "deg", "rad",
)  # fmt: skip
DATE_FUNCTIONS = ("minute", "hour", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "month", "year")
AGGREGATIONS = ("sum", "avg", "min", "max", "group", "stddev", "stdvar", "count")
ARITHMETIC = ("+", "-", "*", "/", "%", "^", "atan2")
COMPARISONS = ("==", "!=", ">", "<", ">=", "<=")


def queries() -> list[str]:
    """The corpus (deduplicated, in a fixed order)."""
    found: list[str] = []
    add = found.append
    # Selectors and modifiers.
    for selector in (
        "http_requests_total", 'http_requests_total{code="200"}', 'http_requests_total{code!="200"}',
        'http_requests_total{instance=~"a|b"}', 'http_requests_total{instance!~"a"}', '{__name__="cpu_temp"}',
        '{__name__=~"cpu_.*", zone="x"}', 'cpu_temp{instance=~".*", zone=~"x|z"}', "weird", "flappy", "queue_depth",
        "request_seconds_bucket", 'nonexistent{job="x"}', 'cpu_temp{zone=""}', 'cpu_temp{nothere=""}',
    ):  # fmt: skip
        add(selector)
    for modifier in ("offset 5m", "offset 1h", "offset -10m", "offset -1m", "@ start()", "@ end()"):
        add(f"cpu_temp {modifier}")
        add(f"rate(http_requests_total[5m] {modifier})")
    # Range functions over counters and gauges, several windows, with offsets.
    for function in RANGE_FUNCTIONS:
        for series in (*COUNTERS[:2], *GAUGES):
            add(f"{function}({series}[5m])")
        for window in RANGES:
            add(f"{function}(cpu_temp[{window}])")
        add(f"{function}(queue_depth[10m] offset 3m)")
    for q in ("0", "0.25", "0.5", "0.9", "1", "-1", "2"):
        add(f"quantile_over_time({q}, cpu_temp[10m])")
    add("quantile_over_time(0.5, weird[10m])")
    add("quantile_over_time(0.5, queue_depth[10m])")
    for horizon in ("0", "600", "3600", "-300"):
        add(f"predict_linear(cpu_temp[15m], {horizon})")
        add(f"predict_linear(http_requests_total[10m], {horizon})")
    add("predict_linear(node_uname_info[5m], 60)")
    add("deriv(node_uname_info[5m])")
    add("predict_linear(queue_depth[30m], 4 * 3600) < 0")
    # Functions of instant vectors.
    for function in MATH_FUNCTIONS:
        add(f"{function}(cpu_temp / 40 - 1)")
        add(f"{function}(weird)")
    add("abs(-queue_depth)")
    for to in ("", ", 5", ", 0.1", ", 3"):
        add(f"round(cpu_temp{to})")
        add(f"round(weird{to})")
    for low, high in (("30", "60"), ("-1", "1"), ("60", "30"), ("-Inf", "+Inf")):
        add(f"clamp(cpu_temp, {low}, {high})")
        add(f"clamp(weird, {low}, {high})")
    for bound in ("40", "-2", "NaN"):
        add(f"clamp_min(cpu_temp, {bound})")
        add(f"clamp_max(weird, {bound})")
    for function in DATE_FUNCTIONS:
        add(f"{function}()")
        add(f"{function}(boot_time_seconds)")
        add(f"{function}(vector(time()))")
    add("timestamp(cpu_temp)")
    add("timestamp(queue_depth offset 2m)")
    add("timestamp(rate(http_requests_total[5m]))")
    add("timestamp(flappy)")
    add("time()")
    add("time() - 3600")
    add("pi()")
    add("vector(1)")
    add("vector(time())")
    add("scalar(sum(queue_depth))")
    add("scalar(queue_depth)")
    add('scalar(queue_depth{instance="c"})')
    add('cpu_temp * scalar(queue_depth{instance="a"})')
    for selector in (
        "nonexistent",
        'nonexistent{job="x", env="prod"}',
        "cpu_temp",
        'queue_depth{instance="c"}',
        "flappy",
    ):
        add(f"absent({selector})")
    add('absent(nonexistent{job="x", job="y"})')
    add('absent(nonexistent{job=~"x.*"})')
    add('absent_over_time(queue_depth{instance="c"}[1m])')
    add("absent(sum(nonexistent))")
    add('label_replace(cpu_temp, "host", "$1-h", "instance", "(.*)")')
    add('label_replace(cpu_temp, "zone", "", "zone", "x")')
    add('label_replace(cpu_temp, "zone", "z$1", "zone", "(x)")')
    add('label_replace(cpu_temp, "instance", "$2", "zone", "(.)")')
    add('label_replace(cpu_temp, "new", "${1}_y", "instance", "(a|b)")')
    add('label_replace(http_requests_total, "__name__", "renamed", "code", "500")')
    add('label_join(cpu_temp, "both", "-", "instance", "zone")')
    add('label_join(cpu_temp, "zone", "", "instance")')
    add('label_join(http_requests_total, "all", ",", "job", "code", "instance", "missing")')
    add("sort(cpu_temp)")
    add("sort_desc(cpu_temp)")
    add("sort(sum by (instance) (cpu_temp))")
    add("sort_desc(avg_over_time(cpu_temp[10m]))")
    # Classic histograms.
    for q in ("0", "0.5", "0.9", "0.99", "1", "-0.5", "1.5"):
        add(f"histogram_quantile({q}, rate(request_seconds_bucket[5m]))")
    add("histogram_quantile(0.9, sum by (le) (rate(request_seconds_bucket[5m])))")
    add("histogram_quantile(0.5, sum by (le, job) (rate(request_seconds_bucket[10m])))")
    add("histogram_quantile(0.9, request_seconds_bucket)")
    add('histogram_quantile(0.9, request_seconds_bucket{le!="+Inf"})')
    add("rate(request_seconds_sum[5m]) / rate(request_seconds_count[5m])")
    # Aggregations.
    for op in AGGREGATIONS:
        for grouping in ("", " by (instance)", " without (zone)", " by ()", " without ()"):
            add(f"{op}{grouping} (cpu_temp)")
        add(f"{op} by (code) (rate(http_requests_total[5m]))")
        add(f"{op}(weird)")
        add(f"{op}(queue_depth)")
        add(f'{op} by (__name__) ({{__name__=~"cpu_temp|queue_depth"}})')
    for q in ("0", "0.5", "0.9", "1", "-1", "2"):
        add(f"quantile({q}, cpu_temp)")
    add("quantile by (instance) (0.5, cpu_temp)")
    add("quantile(0.5, rate(http_requests_total[5m]))")
    for k in ("1", "2", "3", "0", "100"):
        add(f"topk({k}, cpu_temp)")
        add(f"bottomk({k}, cpu_temp)")
    add("topk by (zone) (1, avg_over_time(cpu_temp[5m]))")
    add("bottomk without (zone) (1, cpu_temp)")
    add("topk(scalar(count(cpu_temp)) - 4, cpu_temp)")
    add('count_values("value", queue_depth)')
    add('count_values by (instance) ("v", queue_depth)')
    add('count_values("instance", queue_depth)')
    add('count_values("n", round(cpu_temp / 10))')
    add("sum(rate(http_requests_total[5m])) / sum(rate(http_requests_total[5m] offset 10m))")
    add("avg by (instance) (sum by (instance, zone) (cpu_temp))")
    add("count(count by (instance) (cpu_temp))")
    # Binary operators.
    for op in ARITHMETIC:
        add(f"cpu_temp {op} 3")
        add(f"3 {op} cpu_temp")
        add(f"cpu_temp {op} on (instance, zone) cpu_temp offset 5m")
        add(f"weird {op} 2")
        add(f"2 {op} 3")
    add("queue_depth % 0")
    add("queue_depth / 0")
    add("-queue_depth / 0")
    add("0 / 0")
    for op in COMPARISONS:
        add(f"cpu_temp {op} 50")
        add(f"cpu_temp {op} bool 50")
        add(f"50 {op} cpu_temp")
        add(f"cpu_temp {op} cpu_temp offset 1m")
        add(f"cpu_temp {op} bool cpu_temp offset 1m")
        add(f"2 {op} bool 3")
        add(f"weird {op} 0")
    add("cpu_temp == cpu_temp")
    add("queue_depth == bool 7")
    add("count by (instance) (http_requests_total > 2000)")
    add('rate(http_requests_total{code="500"}[5m]) / on (instance, job) rate(http_requests_total{code="200"}[5m])')
    add('http_requests_total{code="500"} - ignoring (code) http_requests_total{code="200"}')
    add('http_requests_total{code="500"} > ignoring (code) http_requests_total{code="200"} / 20')
    add("mem_bytes / 1024 / 1024")
    add("queue_depth - queue_depth offset 5m")
    add("1 - -1")
    add("-(cpu_temp)")
    add("+cpu_temp")
    add("2 ^ 3 ^ 2")
    add("-2 ^ 2")
    add("(1 + 2) * 3 % 4")
    # One-to-many and many-to-one matching.
    add("cpu_temp * on (instance) group_left (nodename) node_uname_info")
    add("cpu_temp * on (instance) group_left node_uname_info")
    add("node_uname_info * on (instance) group_right (nodename) cpu_temp")
    add("node_uname_info * on (instance) group_right cpu_temp")
    add("cpu_temp / ignoring (zone) group_left queue_depth")
    add("queue_depth * ignoring (zone) group_right cpu_temp")
    add("cpu_temp > on (instance) group_left queue_depth")
    add("cpu_temp > bool on (instance) group_left queue_depth")
    add(
        "sum by (instance, code) (rate(http_requests_total[5m]))"
        " / on (instance) group_left sum by (instance) (rate(http_requests_total[5m]))"
    )
    add("http_requests_total / on (instance) group_left (nodename) node_uname_info")
    # Set operators.
    for op in ("and", "or", "unless"):
        add(f"cpu_temp {op} queue_depth")
        add(f"cpu_temp {op} on (instance) queue_depth")
        add(f'cpu_temp {op} ignoring (zone) cpu_temp{{zone="x"}}')
        add(f'queue_depth {op} on (instance) cpu_temp{{instance="b"}}')
        add(f"cpu_temp > 50 {op} cpu_temp < 70")
        add(f'flappy {op} on () queue_depth{{instance="c"}}')
    add("queue_depth or on () vector(0)")
    add("sum(nonexistent) or on () vector(0)")
    add('queue_depth{instance="c"} or queue_depth{instance="a"} * 100')
    add("cpu_temp and on (instance) (queue_depth > 20)")
    add('queue_depth unless on (instance) cpu_temp{zone="x"} > 70')
    # Subqueries (ranges ending in 7 s: no inner step on a window's start).
    for inner in ("cpu_temp", "rate(http_requests_total[5m])", "queue_depth", "sum(cpu_temp)"):
        add(f"max_over_time({inner}[10m7s:1m])")
        add(f"avg_over_time({inner}[5m7s:30s])")
    add("rate(http_requests_total[5m7s:1m])")
    add("deriv(rate(http_requests_total[5m])[15m7s:1m])")
    add("max_over_time(deriv(rate(http_requests_total[5m])[10m7s:1m])[30m7s:5m])")
    add("min_over_time(cpu_temp[20m7s:])")
    add("count_over_time(queue_depth[10m7s:1m])")
    add("changes(queue_depth[10m7s:1m])")
    add("quantile_over_time(0.5, cpu_temp[10m7s:20s])")
    add("max_over_time(cpu_temp[10m7s:1m] offset 5m)")
    add("max_over_time(cpu_temp[10m7s:1m] offset -5m)")
    add("avg_over_time(rate(http_requests_total[5m])[30m7s:1m] @ end())")
    add("sum_over_time(cpu_temp[10m7s:1m] @ start())")
    add("predict_linear(cpu_temp[30m7s:1m], 600)")
    add("last_over_time(flappy[10m7s:1m])")
    return list(dict.fromkeys(found))


def at_queries(times: tuple[int, int]) -> list[str]:
    """Queries with a fixed `@` time (they depend on the data's start)."""
    early, late = times
    return [
        f"cpu_temp @ {early}",
        f"rate(http_requests_total[5m] @ {late})",
        f"http_requests_total @ {late} offset 5m",
        f"max_over_time(cpu_temp[10m7s:1m] @ {early})",
        f"sum(cpu_temp @ {early}) - sum(cpu_temp)",
        f"queue_depth @ {late} and queue_depth",
        f"timestamp(cpu_temp @ {early})",
    ]
