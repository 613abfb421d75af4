"""The agent's registrar, buffer and sender against real in-process agents and metrics servers."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import grpc

from agent.batches import portable_batch
from agent.buffer import DiskBuffer
from agent.collector import HostCollector
from agent.identity import Heartbeats, Identity, Registrar, StateFile
from agent.sender import Sender
from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2_grpc
from services.common.selectors import parse_selector
from services.metrics.domain import IngestLimits
from tests.integration.conftest import AS_OPERATOR, ENROLL, ENROLLMENT_TOKEN


def wait_until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def run_agent(agents_address, metrics_harness, tmp_path: Path, rounds: int, state: StateFile):
    # The harness's tight limits are for the limit tests; a real host has more than 50 series.
    metrics_harness.ingestor.limits = IngestLimits()
    metrics_address = metrics_harness.address
    halt = threading.Event()
    agents_channel, metrics_channel = grpc.insecure_channel(agents_address), grpc.insecure_channel(metrics_address)
    registrar = Registrar(
        agents_pb2_grpc.AgentServiceStub(agents_channel),
        state,
        "pipeline-host",
        {"env": "test"},
        5.0,
        halt,
        enrollment_token=ENROLLMENT_TOKEN,
    )
    buffer = DiskBuffer(tmp_path / "buffer.db", 1 << 24)
    sender = Sender(metrics_pb2_grpc.MetricsServiceStub(metrics_channel), buffer, registrar, halt)
    heartbeats = Heartbeats(agents_pb2_grpc.AgentServiceStub(agents_channel), registrar, 5.0, halt)
    collector = HostCollector("pipeline-host", {"env": "test"})
    collected = []
    sender.start()
    heartbeats.start()
    for _ in range(rounds):
        round_ = collector.collect()
        collected.append(round_)
        buffer.append(portable_batch(round_))
        time.sleep(0.02)
    wait_until(lambda: buffer.pending() == 0)
    halt.set()
    sender.abort()
    sender.join(5)
    buffer.close()
    agents_channel.close()
    metrics_channel.close()
    return collected, registrar


def test_collected_rounds_arrive_exactly_and_the_buffer_empties(agents_address, metrics_harness, tmp_path: Path):
    collected, _ = run_agent(agents_address, metrics_harness, tmp_path, 4, StateFile(tmp_path / "state.json"))
    catalog, samples = metrics_harness.catalog, metrics_harness.samples
    catalog.refresh(force=True)
    (series,) = catalog.select(parse_selector('memory_total_bytes{host="pipeline-host", env="test"}'))
    times, values = samples.raw([series.series_id], 0, 2**62)[series.series_id]
    expected = [(r.timestamp_ms, next(s.value for s in r.samples if s.name == "memory_total_bytes")) for r in collected]
    assert list(zip(times, values, strict=True)) == expected
    stored = sum(
        len(samples.raw([s.series_id], 0, 2**62)[s.series_id][0])
        for s in catalog.select(parse_selector('{host="pipeline-host"}'))
    )
    assert stored == sum(len(r.samples) for r in collected)


def test_an_agent_whose_token_is_rejected_gets_back_in_once_an_operator_approves_it(
    agents_address, agents_stub, metrics_harness, tmp_path: Path
):
    """A reinstalled machine with a stale state file: its hostname is registered, its token is not
    the current one, so it is let in only after an operator's approval, under the same agent id."""
    first = agents_stub.RegisterAgent(agents_pb2.RegisterAgentRequest(hostname="pipeline-host"), metadata=ENROLL)
    agents_stub.ApproveAgent(agents_pb2.ApproveAgentRequest(hostname="pipeline-host"), metadata=AS_OPERATOR)
    state = StateFile(tmp_path / "state.json")
    state.save(Identity(first.agent_id, "iwa_revoked-token", "pipeline-host"))
    _, registrar = run_agent(agents_address, metrics_harness, tmp_path, 2, state)
    renewed = state.load()
    assert renewed.agent_id == first.agent_id
    assert renewed.token not in ("iwa_revoked-token", first.agent_token)
    assert registrar.current() == renewed


def test_an_agent_pointed_at_the_wrong_service_says_so(agents_address, tmp_path: Path, caplog):
    """The metrics address mistakenly names the agents service: UNIMPLEMENTED, explained."""
    caplog.set_level(logging.ERROR, logger="infrawatch.agent.sender")
    halt = threading.Event()
    channel = grpc.insecure_channel(agents_address)
    registrar = Registrar(
        agents_pb2_grpc.AgentServiceStub(channel),
        StateFile(tmp_path / "state.json"),
        "misaddressed-host",
        {},
        5.0,
        halt,
        enrollment_token=ENROLLMENT_TOKEN,
    )
    buffer = DiskBuffer(tmp_path / "buffer.db", 1 << 20)
    buffer.append(b"")
    sender = Sender(metrics_pb2_grpc.MetricsServiceStub(channel), buffer, registrar, halt, address=agents_address)
    sender.start()
    try:
        wait_until(lambda: any("not an InfraWatch metrics service" in r.getMessage() for r in caplog.records))
    finally:
        halt.set()
        sender.join(10)
        channel.close()
    assert buffer.pending() == 1  # nothing was lost to the wrong address
