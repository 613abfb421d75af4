"""`python -m agent` / `infrawatch-agent`: collect host metrics and stream them to InfraWatch."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable

from agent.batches import portable_batch
from agent.buffer import DiskBuffer
from agent.collector import HostCollector, Round
from agent.config import AgentConfig, load
from agent.identity import Heartbeats, Registrar, StateFile
from agent.logs import configure_logging
from agent.processes import ProcessCollector
from agent.scrape import Scraper, scrape
from agent.sender import Sender
from agent.telemetry import AgentCollector, AgentReadings, new_registry, serve_telemetry
from agent.values import ConfigError
from infrawatch.agents.v1 import agents_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2_grpc

_log = logging.getLogger("infrawatch.agent")
MAX_RECONNECT_BACKOFF_MS = 4000
"""The longest wait between reconnection attempts to a service (see the channel options)."""


def host_collector(config: AgentConfig) -> HostCollector:
    processes = ProcessCollector(config.processes_top, config.processes_include)
    return HostCollector(config.hostname, config.labels, config.host_root, config.collectors, processes)


def render(round_: Round) -> str:
    """A round in the Prometheus exposition style, one sample per line."""
    lines = []
    for sample in sorted(round_.samples, key=lambda s: (s.name, s.labels)):
        labels = ",".join(f'{name}="{value}"' for name, value in sample.labels)
        lines.append(f"{sample.name}{{{labels}}} {sample.value!r}")
    return "\n".join(lines)


def _stop_event() -> threading.Event:
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        _log.info("stop signal received", extra={"fields": {"signal": signal.Signals(signum).name}})
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stopping


def _collect_every(interval_s: float, stopping: threading.Event, handle: Callable[[], None]) -> None:
    """Call `handle` on a fixed schedule (missed rounds are skipped, not bunched up). The first round
    comes after at most a second, so that it already has a CPU usage to report."""
    next_round = time.monotonic() + min(1.0, interval_s)
    while not stopping.wait(max(0.0, next_round - time.monotonic())):
        handle()
        next_round += interval_s
        if next_round < time.monotonic():
            next_round = time.monotonic() + interval_s


def run(config: AgentConfig) -> int:
    collector = host_collector(config)
    stopping = _stop_event()
    if config.dry_run:
        _collect_every(config.interval, stopping, lambda: print(render(collector.collect()) + "\n", flush=True))
        return 0

    try:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        probe = config.state_dir / ".writable"
        probe.write_bytes(b"")
        probe.unlink()
        buffer = DiskBuffer(config.state_dir / "buffer.db", config.buffer_max_bytes)
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"infrawatch-agent: cannot write the state directory {config.state_dir}: {reason}", file=sys.stderr)
        return 2
    if buffer.pending():
        _log.info("resuming with unsent batches from the last run", extra={"fields": {"batches": buffer.pending()}})
    halt = threading.Event()
    # Round robin: behind a headless Service (dns:///...) each new stream goes to the next replica.
    # Reconnect within seconds once a service is back: gRPC's default backoff grows to 120 s, so
    # after a platform restart an agent would stay silent for several heartbeat intervals and be
    # reported down although it never was. gRPC jitters each attempt, so a fleet does not
    # reconnect in step.
    spread = [
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.initial_reconnect_backoff_ms", 1000),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]
    agents_channel = config.tls.channel(config.agents_address, spread)
    metrics_channel = config.tls.channel(config.metrics_address, spread)
    registrar = Registrar(
        agents_pb2_grpc.AgentServiceStub(agents_channel),
        StateFile(config.state_dir / "state.json"),
        config.hostname,
        config.labels,
        config.timeout,
        halt,
        enrollment_token=config.enrollment_token,
    )
    heartbeats = Heartbeats(agents_pb2_grpc.AgentServiceStub(agents_channel), registrar, config.timeout, halt)
    sender = Sender(
        metrics_pb2_grpc.MetricsServiceStub(metrics_channel), buffer, registrar, halt, address=config.metrics_address
    )
    heartbeats.start()
    sender.start()
    rounds = [0]
    endpoint = None
    if config.telemetry_address is not None:
        registry = new_registry()
        registry.register(
            AgentCollector(
                AgentReadings(
                    buffered_batches=buffer.pending,
                    oldest_unsent_age_s=buffer.oldest_age_s,
                    dropped_batches=lambda: buffer.dropped,
                    acknowledged_batches=lambda: sender.acknowledged,
                    rejected_samples=lambda: dict(sender.rejected_by_reason),
                    collection_rounds=lambda: rounds[0],
                    streaming=lambda: sender.streaming,
                )
            )
        )
        try:
            endpoint = serve_telemetry(registry, *config.telemetry_address, "agent")
        except OSError as exc:  # the host's port is taken: the agent's job is the data, not its telemetry
            host, port = config.telemetry_address
            _log.error(
                "cannot serve the agent's telemetry; collecting and sending go on without it",
                extra={"fields": {"address": f"{host}:{port}", "error": exc.strerror or str(exc)}},
            )
    _log.info(
        "agent started",
        extra={
            "fields": {
                "hostname": config.hostname,
                "agents": config.agents_address,
                "metrics": config.metrics_address,
                "tls": config.tls.enabled,
                "interval_s": config.interval,
                "state_dir": str(config.state_dir),
            }
        },
    )

    def collect_round() -> None:
        round_ = collector.collect()
        rounds[0] += 1
        buffer.append(portable_batch(round_))
        if config.journal is not None:
            with config.journal.open("a") as handle:
                samples = [[s.name, dict(s.labels), s.value] for s in round_.samples]
                handle.write(json.dumps({"t": round_.timestamp_ms, "samples": samples}) + "\n")

    scraper = None
    if config.scrape:
        timeout_s = min(10.0, 0.8 * config.scrape_interval)
        scraper = Scraper(config.scrape, timeout_s, lambda done: buffer.append(portable_batch(done.round, done.types)))
        threading.Thread(
            target=_collect_every,
            args=(config.scrape_interval, stopping, scraper.scrape_all),
            name="scrape-schedule",
            daemon=True,
        ).start()
        _log.info(
            "scraping Prometheus endpoints",
            extra={"fields": {"targets": ",".join(f"{t.job}={t.url}" for t in config.scrape),
                              "interval_s": config.scrape_interval}},
        )  # fmt: skip

    _collect_every(config.interval, stopping, collect_round)
    if scraper is not None:
        scraper.close()

    _log.info("flushing buffered batches", extra={"fields": {"pending": buffer.pending(), "grace_s": config.grace}})
    sender.drain()
    sender.join(config.grace)
    if sender.is_alive():
        sender.abort()
        sender.join(2)
    halt.set()
    left = buffer.pending()
    _log.info("agent stopped", extra={"fields": {"unsent_batches_kept_for_next_run": left}})
    if endpoint is not None:
        endpoint.close()
    buffer.close()
    agents_channel.close()
    metrics_channel.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        config = load(argv, os.environ)
    except ConfigError as exc:
        print(f"infrawatch-agent: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, "agent")
    if config.once:
        collector = host_collector(config)
        time.sleep(0.5)  # CPU usage is measured between two readings
        print(render(collector.collect()))
        # Each scrape target once too, so a target can be checked before it is deployed.
        for target in config.scrape:
            scraped = scrape(target, min(10.0, config.scrape_interval))
            if not scraped.up:
                print(f"# scrape {target.job}={target.url} failed: {scraped.error}", file=sys.stderr)
            print(render(scraped.round))
        return 0
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
