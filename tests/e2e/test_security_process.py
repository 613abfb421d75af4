"""Security end to end: real service processes with TLS and mutual TLS, the real agent and the
real grpcurl as their clients; and two real agents claiming one hostname."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.tls import ClientTLS
from tests.conftest import TlsFiles
from tests.e2e.conftest import AGENTS_SERVICE, GATEWAY_SERVICE, METRICS_SERVICE, start
from tests.e2e.processes import ServiceProcess, grpcurl, wait_for

OPERATOR = "infrawatch.gateway.v1.OperatorService"


def agent_env(env: dict[str, str], tmp_path: Path, name: str, hostname: str) -> dict[str, str]:
    return {
        **env,
        "INFRAWATCH_AGENT_AGENTS_ADDRESS": env["INFRAWATCH_AGENTS_ADDRESS"],
        "INFRAWATCH_AGENT_METRICS_ADDRESS": env["INFRAWATCH_METRICS_ADDRESS"],
        "INFRAWATCH_AGENT_INTERVAL": "300ms",
        "INFRAWATCH_AGENT_HOSTNAME": hostname,
        "INFRAWATCH_AGENT_STATE_DIR": str(tmp_path / f"{name}-state"),
        "INFRAWATCH_AGENT_GRACE": "1s",
    }


@pytest.fixture
def tls_platform(platform_env: dict[str, str], tls_files: TlsFiles, tmp_path: Path) -> Iterator[dict[str, str]]:
    """agents, metrics and gateway serving mutual TLS only, calling each other over it."""
    env = {
        **platform_env,
        "INFRAWATCH_TLS_CERT": tls_files.server_cert,
        "INFRAWATCH_TLS_KEY": tls_files.server_key,
        "INFRAWATCH_TLS_CLIENT_CA": tls_files.ca,
        "INFRAWATCH_TLS_CA": tls_files.ca,
        # The services present their own server certificate as their client identity (the default).
    }
    client = ClientTLS(tls_files.ca, tls_files.client_cert, tls_files.client_key)
    processes: list[ServiceProcess] = []
    try:
        for module, port_var, service in (
            ("services.agents", "INFRAWATCH_AGENTS_PORT", AGENTS_SERVICE),
            ("services.metrics", "INFRAWATCH_METRICS_PORT", METRICS_SERVICE),
            ("services.gateway", "INFRAWATCH_GATEWAY_PORT", GATEWAY_SERVICE),
        ):
            process, _ = start(module, env, port_var, service, tmp_path / f"{module}.log", tls=client)
            processes.append(process)
        yield env
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            assert "serving plaintext" not in process.log()


def test_the_real_agent_and_grpcurl_work_over_mutual_tls_and_plaintext_is_refused(
    tls_platform: dict[str, str], tls_files: TlsFiles, tmp_path: Path
):
    gateway = f"localhost:{tls_platform['INFRAWATCH_GATEWAY_PORT']}"
    env = agent_env(tls_platform, tmp_path, "agent", "tls-host")
    env.update(
        INFRAWATCH_AGENT_TLS_CA=tls_files.ca,
        INFRAWATCH_AGENT_TLS_CERT=tls_files.client_cert,
        INFRAWATCH_AGENT_TLS_KEY=tls_files.client_key,
    )
    agent = ServiceProcess("agent", env, tmp_path / "agent.log")
    with_client_cert = ["-cacert", tls_files.ca, "-cert", tls_files.client_cert, "-key", tls_files.client_key]
    request = ["-d", '{"agent": {"hostname": "tls-host"}}', gateway, f"{OPERATOR}/GetAgent"]
    try:

        def agent_metrics_arrived() -> bool:
            reply = grpcurl(*with_client_cert, *request)
            return reply.returncode == 0 and "cpu_usage_percent" in reply.stdout

        wait_for(agent_metrics_arrived, what=f"the agent's metrics through TLS; agent log:\n{agent.log()}")
    finally:
        agent.terminate()
    view = json.loads(grpcurl(*with_client_cert, *request).stdout)["agent"]
    assert view["agent"]["status"] == "AGENT_STATUS_ONLINE" and view["metrics"] == "AVAILABILITY_AVAILABLE"

    plaintext = grpcurl("-plaintext", *request)
    assert plaintext.returncode != 0
    no_client_cert = grpcurl("-cacert", tls_files.ca, *request)
    assert no_client_cert.returncode != 0
    unknown_ca = grpcurl(
        "-cacert", tls_files.rogue_cert, "-cert", tls_files.client_cert, "-key", tls_files.client_key, *request
    )
    assert unknown_ca.returncode != 0 and "certificate" in unknown_ca.stderr


def test_a_plaintext_server_beyond_loopback_warns(agents_process):
    process, _ = agents_process  # platform_env binds the default [::] without TLS
    wait_for(lambda: "serving plaintext beyond loopback" in process.log(), timeout=10, what="the plaintext warning")
    (line,) = [line for line in process.log().splitlines() if "serving plaintext" in line]
    assert "level=warning service=agents " in line  # interleaved `make run` output says who warns


def test_two_real_agents_with_one_hostname_do_not_take_each_others_identity(
    platform_env: dict[str, str], gateway_process, tmp_path: Path
):
    gateway = gateway_process[1]
    first = ServiceProcess("agent", agent_env(platform_env, tmp_path, "first", "twin"), tmp_path / "first.log")
    second: ServiceProcess | None = None
    request = ["-plaintext", "-d", '{"agent": {"hostname": "twin"}}', gateway, f"{OPERATOR}/GetAgent"]
    try:
        wait_for(lambda: "streaming metrics" in first.log(), what="the first agent streaming")
        second = ServiceProcess("agent", agent_env(platform_env, tmp_path, "second", "twin"), tmp_path / "second.log")
        wait_for(lambda: "registration refused" in second.log(), what="the second agent being refused")
        assert "already registered to another agent" in second.log()
        view = json.loads(grpcurl(*request).stdout)["agent"]["agent"]
        assert view["refused_registrations"] >= 1
        first_state = json.loads((tmp_path / "first-state" / "state.json").read_text())
        time.sleep(1.5)  # several heartbeats and rounds of the first agent
        assert json.loads((tmp_path / "first-state" / "state.json").read_text()) == first_state
        assert "heartbeat failed" not in first.log() and "registered" not in first.log().split("streaming metrics")[1]
        assert not (tmp_path / "second-state" / "state.json").exists()
    finally:
        first.terminate()
        if second is not None:
            second.terminate()
