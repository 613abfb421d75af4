"""The agent's node_exporter-compatible collectors next to Debian's real `prometheus-node-exporter`
on this host: the same metric names and label sets exist, and each value agrees within what the
time between two reads explains (ours is read between two node_exporter scrapes; a counter must
lie between them, a gauge close to them)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from agent.metric_kinds import COUNTER, kind_of
from agent.node import NodeCollector

Key = tuple[str, tuple[tuple[str, str], ...]]

# node_exporter's own telemetry, and collectors the agent does not have (textfile needs a
# directory of files; node_exporter's scrape bookkeeping names its own collector set).
NOT_HOST_METRICS = ("node_exporter_build_info", "node_textfile_scrape_error", "node_scrape_collector_")
# Only on hosts where the feature is on (SELinux enforcing): the agent may have them, this host may not.
ONLY_SOMETIMES = ("node_selinux_current_mode", "node_selinux_config_mode")


def scrape(url: str) -> dict[Key, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("node_") and not sample.name.startswith(NOT_HOST_METRICS):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def collect() -> dict[Key, float]:
    found: dict[Key, float] = {}

    def emit(name: str, value: float, /, **labels: str) -> None:
        if not name.startswith(NOT_HOST_METRICS):
            found[(name, tuple(sorted(labels.items())))] = value

    NodeCollector().collect(emit)
    return found


def slack(name: str, value: float) -> float:
    """How far a gauge may move in the ~0.1 s between reads: memory and socket figures move with
    every allocation and connection (this test's own scrapes among them); the rest barely."""
    if name.startswith("node_memory_"):
        return max(0.02 * abs(value), 64 * 2**20)
    if name.startswith("node_sockstat_") and name.endswith("_bytes"):
        return 2**20
    return max(0.02 * abs(value), 16.0)


def test_the_agent_exposes_node_exporters_names_and_labels_with_values_that_agree(node_exporter):
    before = scrape(node_exporter)
    ours = collect()
    after = scrape(node_exporter)
    stable = before.keys() & after.keys()  # a series that came or went between the scrapes says nothing

    theirs_names = {name for name, _ in stable}
    our_names = {name for name, _ in ours}
    assert theirs_names - our_names == set(), "node_exporter has names the agent lacks"
    assert our_names - theirs_names <= set(ONLY_SOMETIMES), "the agent has names node_exporter lacks"
    assert len(our_names) >= 230, sorted(our_names)

    missing = sorted(key for key in stable if key not in ours)
    assert missing == [], f"label sets node_exporter has and the agent lacks: {missing[:10]}"
    extra = sorted(key for key in ours if key[0] in theirs_names and key not in before and key not in after)
    assert extra == [], f"label sets the agent has and node_exporter lacks: {extra[:10]}"

    disagree = []
    for key in sorted(stable):
        name = key[0]
        low, high = sorted((before[key], after[key]))
        kind = kind_of(name)
        assert kind is not None, name
        margin = 1e-9 * abs(high) if kind.type == COUNTER else slack(name, high)
        if not low - margin <= ours[key] <= high + margin:
            disagree.append((key, before[key], ours[key], after[key]))
    assert disagree == [], "values outside what the time between reads explains:\n" + "\n".join(
        f"{key}: node_exporter {b} then {a}, agent {o}" for key, b, o, a in disagree[:20]
    )
