"""Issue 23, point 2: InfraWatch answers the project's PromQL corpus (tests/e2e/promql_corpus.py,
600+ queries over every function, aggregation, operator and modifier) exactly as a real
Prometheus holding the same data, on both stores, before and after compaction.

The same remote-write request goes to Debian's Prometheus (its remote-write receiver) and to
InfraWatch, so both hold the same samples, staleness marker included. Each query is compared as a
range query and as instant queries (one inside the gap of a series); where Prometheus refuses a
query (a duplicate label set, say), InfraWatch must refuse it with the same error type.
"""

from __future__ import annotations

import collections
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.processes import wait_for
from tests.e2e.promql_corpus import SPACING_S, STEP_S, at_queries, dataset, queries
from tests.e2e.test_prometheus_side import Prometheus, create_credential, differences, keyed, same, send, write_request

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def platform_env(platform_env: dict[str, str]) -> dict[str, str]:
    """Compaction every two seconds, so the test can compare the compacted store too."""
    return {**platform_env, "INFRAWATCH_MAINTENANCE_EVERY": "2s"}


def ask(base: str, path: str, **params: str) -> dict:
    body = urllib.parse.urlencode(params).encode()
    sent = urllib.request.Request(f"{base}/api/v1/{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(sent, timeout=60) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as refused:
        return json.loads(refused.read())


def compare(want: dict, got: dict, sort_matters: bool) -> list[str]:
    if want["status"] != "success":
        if got["status"] == "success":
            return [f"Prometheus refused ({want['errorType']}: {want['error']}), InfraWatch answered"]
        if got["errorType"] != want["errorType"]:
            return [f"error types differ: {want['errorType']} vs {got['errorType']}: {got['error']}"]
        return []
    if got["status"] != "success":
        return [f"InfraWatch refused: {got.get('errorType')}: {got.get('error')}"]
    want, got = want["data"], got["data"]
    if want["resultType"] != got["resultType"]:
        return [f"result types differ: {want['resultType']} vs {got['resultType']}"]
    if want["resultType"] in ("scalar", "string"):
        if want["result"][0] != got["result"][0] or not (
            want["result"][1] == got["result"][1] or same(want["result"][1], got["result"][1])
        ):
            return [f"{want['result']} vs {got['result']}"]
        return []
    problems = differences(keyed(want["result"]), keyed(got["result"]))
    if sort_matters and not problems:
        order = [sorted(s["metric"].items()) for s in want["result"]]
        if order != [sorted(s["metric"].items()) for s in got["result"]]:
            problems.append("the sort order differs")
    return problems


def constructs(corpus: list[str]) -> dict[str, int]:
    """How many queries use each function, aggregation, operator and modifier."""
    counted: collections.Counter[str] = collections.Counter()
    for expr in corpus:
        for word in set(re.findall(r"\b([a-z_0-9]+)\s*\(", expr)):
            counted[word] += 1
        for token in set(
            re.findall(r"group_left|group_right|\bon\b|ignoring|\bbool\b|offset|@|\[[^\]]*:[^\]]*\]", expr)
        ):
            counted["subquery" if token.startswith("[") else token] += 1
        for op in set(re.findall(r"\s(and|or|unless|atan2|[-+*/%^]|==|!=|>=|<=|>|<)\s", expr)):
            counted[op] += 1
    return dict(sorted(counted.items()))


@pytest.fixture
def both(metrics_process, gateway_process, platform_env, tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """(Prometheus URL, InfraWatch URL, data start), the same samples in both."""
    start = int(time.time()) // 3600 * 3600 - 4 * 3600
    data = dataset(start)
    body = write_request(data)
    prometheus = Prometheus(tmp_path, "global:\n  scrape_interval: 1h\n", flags=("--web.enable-remote-write-receiver",))
    api = f"http://127.0.0.1:{platform_env['INFRAWATCH_PROM_PORT']}"
    try:
        send(prometheus.url, body)
        token = create_credential(gateway_process[1], "corpus")
        # InfraWatch gets the samples as a scraper sends them, in ten-minute slices, so that each
        # compaction window holds several fresh chunks for compaction to pack.
        for slice_start in range(start, start + 3 * 3600, 600):
            piece = {
                labels: [(t, v) for t, v in points if slice_start <= t < slice_start + 600]
                for labels, points in data.items()
            }
            send(api, write_request({labels: points for labels, points in piece.items() if points}), token)
        yield prometheus.url, api, start
    finally:
        prometheus.stop()


def run_corpus(prometheus: str, api: str, start: int) -> tuple[int, int, dict[str, list[str]]]:
    window = {"start": str(start + 1800), "end": str(start + 3 * 3600), "step": str(STEP_S)}
    instants = [str(start + 3600 * 2 + 5 * 60), str(start + 200 * SPACING_S + 9 * 60)]  # one inside the gap
    corpus = queries() + at_queries((start + 3600, start + 2 * 3600 + 600))
    failures: dict[str, list[str]] = {}
    refused_by_both = 0
    for expr in corpus:
        want = ask(prometheus, "query_range", query=expr, **window)
        refused_by_both += want["status"] != "success"
        problems = compare(want, ask(api, "query_range", query=expr, **window), False)
        for at in instants:
            want, got = ask(prometheus, "query", query=expr, time=at), ask(api, "query", query=expr, time=at)
            problems += [f"instant at {at}: {p}" for p in compare(want, got, expr.startswith("sort"))]
        if problems:
            failures[expr] = problems
    return len(corpus), refused_by_both, failures


def compactions(platform_env: dict[str, str]) -> float:
    url = f"http://127.0.0.1:{platform_env['INFRAWATCH_METRICS_TELEMETRY_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "infrawatch_compaction_removed_chunks_total"
    )


def test_every_corpus_query_answers_as_a_real_prometheus_fresh_and_compacted(both, platform_env):
    prometheus, api, start = both
    for state in ("fresh", "compacted"):
        if state == "compacted":
            wait_for(lambda: compactions(platform_env) > 0, timeout=120, what="a compaction pass")
        size, errors, failures = run_corpus(prometheus, api, start)
        print(
            f"\n{state}: {size} queries ({errors} refused by Prometheus too, with the same error type), "
            f"{len(failures)} differing or refused"
        )
        assert size >= 500
        assert not failures, json.dumps(failures, indent=1)[:8000]
    used = constructs(queries())
    print("constructs covered (queries each):", json.dumps(used))
    for needed in (
        "histogram_quantile",
        "label_replace",
        "group_left",
        "group_right",
        "subquery",
        "@",
        "unless",
        "count_values",
        "quantile",
        "predict_linear",
        "absent",
    ):
        assert used.get(needed), needed
