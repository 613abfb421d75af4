"""Agent configuration: command-line flags, then INFRAWATCH_AGENT_* environment variables, then an
optional TOML file, then defaults; the first that sets an option wins."""

from __future__ import annotations

import argparse
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.node import collector_names
from agent.scrape import ScrapeTarget, scrape_targets
from agent.telemetry import telemetry_address
from agent.tls import ClientTLS
from agent.values import ConfigError, duration_seconds, log_level, positive_int, readable_file


def _bad_count() -> int:
    raise ValueError("must be a whole number, 0 or more")


def _regex(raw: str) -> str:
    try:
        re.compile(raw)
    except re.error as exc:
        raise ValueError(f"is not a regular expression: {exc}") from None
    return raw


@dataclass(frozen=True)
class Option:
    name: str
    default: str
    help: str
    parse: Callable[[str], Any] = str

    @property
    def env(self) -> str:
        return "INFRAWATCH_AGENT_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("agents_address", "localhost:50051", "host:port of the InfraWatch agents service."),
    Option("metrics_address", "localhost:50052", "host:port of the InfraWatch metrics service."),
    Option("hostname", "", "Name this host registers under. Default: the system hostname."),
    Option(
        "enrollment_token",
        "",
        "The platform's enrolment secret (INFRAWATCH_ENROLLMENT_TOKEN of the agents service); needed to "
        "register the first time. Prefer the environment variable or the config file to the flag.",
    ),
    Option(
        "tls_ca",
        "",
        "PEM CA bundle that signs the services' certificates; when set, the agent uses TLS.",
        readable_file,
    ),
    Option("tls_cert", "", "PEM client certificate, for services that require mutual TLS.", readable_file),
    Option("tls_key", "", "PEM key of --tls-cert.", readable_file),
    Option("tls_server_name", "", "Name expected in the services' certificates, when it differs from the address."),
    Option("interval", "10s", "How often host metrics are collected.", duration_seconds),
    Option(
        "host_root",
        "",
        "Where the host's root filesystem is mounted when the agent runs in a container (e.g. /host, "
        "mounted read-only); filesystem usage is read there. Empty: the agent runs on the host.",
    ),
    Option(
        "collectors",
        "all",
        "node_exporter-compatible collectors to run, separated by commas (arp, conntrack, cpu, diskstats, "
        "entropy, filefd, filesystem, loadavg, meminfo, netclass, netdev, netstat, os, pressure, selinux, "
        "sockstat, softnet, stat, time, timex, udp_queues, uname, vmstat), `all` or `none`.",
        collector_names,
    ),
    Option(
        "processes_top",
        "10",
        "Process telemetry: how many process groups (by name) to send, the busiest by CPU and as many by "
        "resident memory; 0 sends none.",
        lambda raw: int(raw) if raw.strip().isdigit() else _bad_count(),
    ),
    Option(
        "processes_include",
        "",
        "Process telemetry: a regular expression of process names always sent, busy or not (at most "
        "--processes-top of them), e.g. 'postgres|nginx'.",
        _regex,
    ),
    Option("state_dir", "./data/agent", "Where the identity (state.json) and the unsent-batch buffer live."),
    Option(
        "buffer_max_bytes",
        str(64 * 1024 * 1024),
        "Disk the buffer of unacknowledged batches may use; when full the oldest are dropped (and logged).",
        positive_int,
    ),
    Option("grace", "10s", "On SIGTERM, how long to keep sending what is buffered before exiting.", duration_seconds),
    Option("timeout", "5s", "Deadline of each registration and heartbeat call.", duration_seconds),
    Option("log_level", "INFO", "DEBUG, INFO, WARNING or ERROR.", log_level),
    Option(
        "scrape",
        "",
        "Prometheus endpoints to scrape and send like host metrics, as job=url pairs separated by commas, "
        "e.g. node=http://localhost:9100/metrics,app=http://localhost:8000/metrics.",
        scrape_targets,
    ),
    Option(
        "scrape_interval",
        "",
        "How often the --scrape targets are scraped; empty: the same as --interval.",
        lambda raw: duration_seconds(raw) if raw.strip() else None,
    ),
    Option(
        "telemetry_address",
        "127.0.0.1:9155",
        "host:port where the agent serves its own telemetry in the Prometheus text format (GET /metrics): "
        "buffer depth, oldest unsent batch, rejections; `:9155` for every interface, `off` for none.",
        telemetry_address,
    ),
)


@dataclass(frozen=True)
class AgentConfig:
    agents_address: str
    metrics_address: str
    hostname: str
    enrollment_token: str
    tls: ClientTLS
    interval: float
    host_root: str
    collectors: tuple[str, ...]
    processes_top: int
    processes_include: str
    state_dir: Path
    buffer_max_bytes: int
    grace: float
    timeout: float
    log_level: str
    telemetry_address: tuple[str, int] | None
    scrape: tuple[ScrapeTarget, ...]
    scrape_interval: float
    labels: dict[str, str]
    once: bool
    dry_run: bool
    journal: Path | None


def parser() -> argparse.ArgumentParser:
    lines = ["options also read from the environment (flag wins, then environment, then --config file):"]
    lines += [f"  {option.env:<36} {option.flag}" for option in OPTIONS]
    lines.append("  INFRAWATCH_AGENT_LABELS               --label (comma-separated key=value pairs)")
    lines.append("")
    lines.append('config file (TOML): the option names as keys, e.g. interval = "15s", and a [labels] table.')
    result = argparse.ArgumentParser(
        prog="infrawatch-agent",
        description="InfraWatch host agent: registers this host, sends heartbeats, collects host metrics "
        "(node_exporter's metrics under its names, InfraWatch's key figures, and the busiest processes) and "
        "streams them to the metrics service. Unacknowledged batches wait in an on-disk buffer, so a "
        "restart or an outage loses nothing.",
        epilog="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in OPTIONS:
        result.add_argument(option.flag, default=None, help=f"{option.help} Default: {option.default or '(none)'}")
    result.add_argument(
        "--label", action="append", default=None, metavar="KEY=VALUE", help="Label for this host (repeatable)."
    )
    result.add_argument("--config", type=Path, help="TOML file with options and a [labels] table.")
    result.add_argument(
        "--once", action="store_true", help="Collect one round (and scrape each --scrape target once), print it, exit."
    )
    result.add_argument("--dry-run", action="store_true", help="Collect every interval and print; send nothing.")
    result.add_argument(
        "--journal",
        type=Path,
        metavar="FILE",
        help="Also append every collected round to FILE as JSON lines: an audit trail to reconcile what was "
        "collected with what the server stored.",
    )
    return result


def _labels(pairs: list[str], source: str) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"{source}: label {pair!r} is not KEY=VALUE")
        labels[key.strip()] = value.strip()
    return labels


def load(argv: list[str] | None, environ: Mapping[str, str]) -> AgentConfig:
    """The effective configuration; raises ConfigError naming the bad flag, variable or file key."""
    args = parser().parse_args(argv)
    file_values: dict[str, Any] = {}
    if args.config is not None:
        try:
            file_values = tomllib.loads(args.config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"--config {args.config}: {exc}") from None
    values: dict[str, Any] = {}
    for option in OPTIONS:
        flag_value = getattr(args, option.name)
        if flag_value is not None:
            raw, source = flag_value, option.flag
        elif option.env in environ:
            raw, source = environ[option.env], option.env
        elif option.name in file_values:
            raw, source = str(file_values[option.name]), f"{args.config}: {option.name}"
        else:
            raw, source = option.default, f"default of {option.flag}"
        try:
            values[option.name] = option.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}={raw!r} is invalid: {exc}") from None
    labels = {str(k): str(v) for k, v in file_values.get("labels", {}).items()}
    if "INFRAWATCH_AGENT_LABELS" in environ:
        pairs = [p for p in environ["INFRAWATCH_AGENT_LABELS"].split(",") if p.strip()]
        labels.update(_labels(pairs, "INFRAWATCH_AGENT_LABELS"))
    labels.update(_labels(args.label or [], "--label"))
    labels.pop("host", None)  # the agent sets host itself
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise ConfigError("--tls-cert and --tls-key are given together or not at all")
    if values["tls_cert"] and not values["tls_ca"]:
        raise ConfigError("--tls-cert (mutual TLS) needs --tls-ca, the CA that signs the services' certificates")
    return AgentConfig(
        agents_address=values["agents_address"],
        metrics_address=values["metrics_address"],
        hostname=values["hostname"] or socket.gethostname(),
        enrollment_token=values["enrollment_token"],
        tls=ClientTLS(values["tls_ca"], values["tls_cert"], values["tls_key"], values["tls_server_name"]),
        interval=values["interval"],
        host_root=values["host_root"],
        collectors=values["collectors"],
        processes_top=values["processes_top"],
        processes_include=values["processes_include"],
        state_dir=Path(values["state_dir"]),
        buffer_max_bytes=values["buffer_max_bytes"],
        grace=values["grace"],
        timeout=values["timeout"],
        log_level=values["log_level"],
        telemetry_address=values["telemetry_address"],
        scrape=values["scrape"],
        scrape_interval=values["scrape_interval"] or values["interval"],
        labels=labels,
        once=args.once,
        dry_run=args.dry_run,
        journal=args.journal,
    )
