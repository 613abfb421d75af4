"""docker-compose.yml and deploy/Dockerfile, proven without a Docker engine.

Each InfraWatch container is started as a local process with exactly the command (image
ENTRYPOINT + compose `command`) and environment (image ENV + compose `environment`) that compose
would give it; compose hostnames become 127.0.0.1, the database URL points at the local
PostgreSQL and volume paths at a temporary directory. Readiness is judged by the image's own
HEALTHCHECK command, in the order compose's `depends_on` imposes, and a smoke scenario runs
through the gateway. A misspelled variable, a wrong address or port, or a broken health check
fails here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import grpc
import pytest
import yaml

from agent.config import OPTIONS as AGENT_OPTIONS
from infrawatch.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.agents.settings import AGENTS_VARS
from services.alerts.settings import ALERTS_VARS
from services.common.config import duration_seconds
from services.console.settings import CONSOLE_VARS
from services.gateway.settings import GATEWAY_VARS
from services.metrics.settings import METRICS_VARS
from tests.e2e.processes import REPO, ServiceProcess

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
DOCKERFILE = (REPO / "deploy" / "Dockerfile").read_text()
SERVICES = COMPOSE["services"]
PROGRAMS = ("agents", "metrics", "alerts", "gateway", "console", "agent")
KNOWN_VARIABLES = {
    "services.agents": {v.name for v in AGENTS_VARS},
    "services.metrics": {v.name for v in METRICS_VARS},
    "services.alerts": {v.name for v in ALERTS_VARS},
    "services.console": {v.name for v in CONSOLE_VARS},
    "services.gateway": {v.name for v in GATEWAY_VARS},
    "agent": {o.env for o in AGENT_OPTIONS} | {"INFRAWATCH_AGENT_LABELS"},
}
START_ORDER = ("agents", "metrics", "alerts", "gateway", "console", "agent")


def final_stage() -> str:
    return re.split(r"^FROM ", DOCKERFILE, flags=re.M)[-1]


def instruction(name: str) -> str:
    """The final stage's instruction `name` with line continuations joined."""
    text = final_stage().replace("\\\n", " ")
    found = re.findall(rf"^{name} (.+)$", text, flags=re.M)
    assert found, f"the final stage has no {name}"
    return found[-1].strip()


def image_env() -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(instruction("ENV")))


# What an operator (or `make up`'s generated .env) supplies; the file itself holds no secret.
OPERATOR_SECRETS = {
    "INFRAWATCH_OPERATOR_TOKEN": "compose-operator",
    "INFRAWATCH_SERVICE_TOKEN": "compose-service",
    "INFRAWATCH_ENROLLMENT_TOKEN": "compose-enrollment",
    "INFRAWATCH_DB_PASSWORD": "compose-db-password",
}


class MissingVariable(Exception):
    """Compose refuses to start: a ${VAR:?message} variable is unset."""


def substitute(value: str, environ: dict[str, str]) -> str:
    """Compose's ${VAR:-default}, ${VAR:?message} and ${VAR} interpolation."""

    def one(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2) or "", match.group(3) or ""
        if environ.get(name):
            return environ[name]
        if operator == ":?":
            raise MissingVariable(f"{name}: {argument}")
        return argument

    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", one, value)


def compose_env(service: str, environ: dict[str, str] = OPERATOR_SECRETS) -> dict[str, str]:
    raw = SERVICES[service].get("environment", {})
    return {key: substitute(str(value), environ) for key, value in raw.items()}


def test_compose_holds_no_secret_and_refuses_to_start_without_them():
    for secret in OPERATOR_SECRETS:
        missing = {k: v for k, v in OPERATOR_SECRETS.items() if k != secret}
        refused = []
        for service in SERVICES:
            try:
                compose_env(service, missing)
            except MissingVariable:
                refused.append(service)
        assert refused, f"compose starts without {secret}"
    text = (REPO / "docker-compose.yml").read_text()
    assert not any(value in text for value in ("change-me", ":infrawatch@", "POSTGRES_PASSWORD: infrawatch"))


def test_every_container_restarts_and_the_agent_sees_the_hosts_filesystems():
    assert all(spec.get("restart") == "unless-stopped" for spec in SERVICES.values())
    assert "/:/host:ro,rslave" in SERVICES["agent"]["volumes"]
    assert compose_env("agent")["INFRAWATCH_AGENT_HOST_ROOT"] == "/host"
    assert "--wait" in (REPO / "Makefile").read_text().split("\nup:", 1)[1].split("\n\n", 1)[0]


def module_of(service: str) -> str:
    entrypoint = json.loads(instruction("ENTRYPOINT"))
    assert entrypoint == ["python", "-m"], "the image runs `python -m <command>`"
    (module,) = SERVICES[service]["command"]
    return str(module)


def test_every_variable_compose_sets_is_one_the_program_reads():
    for service in PROGRAMS:
        module = module_of(service)
        unknown = {k for k in compose_env(service) if k.startswith("INFRAWATCH_")} - KNOWN_VARIABLES[module]
        assert not unknown, f"{service} sets variables {module} never reads: {sorted(unknown)}"


def test_services_are_wired_by_name_and_port_to_each_other():
    def port_of(service: str) -> str:
        variable = f"INFRAWATCH_{service.upper()}_PORT"
        return compose_env(service)[variable]

    wiring = {
        ("metrics", "INFRAWATCH_AGENTS_ADDRESS"): "agents",
        ("gateway", "INFRAWATCH_AGENTS_ADDRESS"): "agents",
        ("gateway", "INFRAWATCH_METRICS_ADDRESS"): "metrics",
        ("gateway", "INFRAWATCH_ALERTS_ADDRESS"): "alerts",
        ("alerts", "INFRAWATCH_AGENTS_ADDRESS"): "agents",
        ("alerts", "INFRAWATCH_METRICS_ADDRESS"): "metrics",
        ("console", "INFRAWATCH_GATEWAY_ADDRESS"): "gateway",
    }
    for (service, variable), target in wiring.items():
        assert compose_env(service)[variable] == f"{target}:{port_of(target)}", f"{service}.{variable}"
    for service in ("agents", "metrics", "alerts"):
        assert "@postgres:5432/" in compose_env(service)["INFRAWATCH_DATABASE_URL"]
    agent = compose_env("agent")
    assert SERVICES["agent"]["network_mode"] == "host"
    assert agent["INFRAWATCH_AGENT_AGENTS_ADDRESS"] == f"localhost:{port_of('agents')}"
    assert agent["INFRAWATCH_AGENT_METRICS_ADDRESS"] == f"localhost:{port_of('metrics')}"


def test_only_the_gateway_agent_facing_and_prometheus_ports_are_published():
    published = {name: service.get("ports", []) for name, service in SERVICES.items()}
    assert published["postgres"] == []
    assert {name for name, ports in published.items() if ports} == {"agents", "metrics", "gateway", "console"}
    for name in ("agents", "metrics", "gateway", "console"):
        port = compose_env(name)[f"INFRAWATCH_{name.upper()}_PORT"]
        prometheus = compose_env(name).get("INFRAWATCH_PROM_PORT")  # remote-write in, PromQL out
        assert published[name] == [f"{port}:{port}"] + ([f"{prometheus}:{prometheus}"] if prometheus else [])


def test_startup_order_waits_for_health_and_stops_take_longer_than_the_services_grace():
    postgres = SERVICES["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(volume.startswith("pgdata:") for volume in postgres["volumes"])
    expected = {
        "agents": {"postgres"},
        "metrics": {"postgres", "agents"},
        "alerts": {"postgres", "agents", "metrics"},
        "gateway": {"agents", "metrics", "alerts"},
        "console": {"gateway"},
        "agent": {"agents", "metrics"},
    }
    for service, dependencies in expected.items():
        depends = SERVICES[service]["depends_on"]
        assert set(depends) == dependencies
        assert all(condition["condition"] == "service_healthy" for condition in depends.values())
        grace = duration_seconds(compose_env(service).get("INFRAWATCH_SHUTDOWN_GRACE", "10s"))
        agent_grace = duration_seconds(compose_env(service).get("INFRAWATCH_AGENT_GRACE", "10s"))
        assert duration_seconds(SERVICES[service]["stop_grace_period"]) > max(grace, agent_grace)


def test_the_image_is_multi_stage_non_root_and_stops_with_sigterm():
    assert len(re.findall(r"^FROM ", DOCKERFILE, flags=re.M)) >= 2
    user = instruction("USER").split(":")[0]
    assert user not in ("root", "0")
    assert instruction("STOPSIGNAL") == "SIGTERM"
    assert "services.probe" in instruction("HEALTHCHECK")
    stage = final_stage()
    assert not re.search(r"apt-get install|gcc|build-essential|pip install", stage), "build tools in the final stage"
    assert "COPY --from=build /opt/venv" in stage
    for service in PROGRAMS:
        assert importlib.util.find_spec(module_of(service)) is not None, module_of(service)
    assert importlib.util.find_spec(json.loads(instruction("CMD"))[0]) is not None
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.match(r"^[A-Za-z0-9_.-]+==[\w.]+$", line), f"unpinned requirement: {line}"


def test_the_package_install_the_image_does_ships_migrations_and_generated_code(tmp_path: Path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for service in ("agents", "metrics", "alerts"):
        assert f"services/{service}/migrations/env.py" in names
        assert any(n.startswith(f"services/{service}/migrations/versions/0001_") for n in names)
    assert "services/alerts/default_rules.yaml" in names
    for context in ("agents", "metrics", "alerts", "gateway"):
        assert f"infrawatch/{context}/v1/{context}_pb2_grpc.py" in names
    assert "agent/__main__.py" in names and "services/probe.py" in names


def local_env(service: str, database_url: str, root: Path) -> dict[str, str]:
    """What the container would see, with compose hostnames, the database and volumes made local."""
    environ = {key: value.replace("/var/lib/infrawatch", str(root)) for key, value in image_env().items()}
    for key, value in compose_env(service).items():
        if key == "INFRAWATCH_DATABASE_URL":
            value = database_url
        for name in SERVICES:
            value = re.sub(rf"^{name}:(\d+)$", r"127.0.0.1:\1", value)
        if key == "INFRAWATCH_AGENT_HOST_ROOT":
            value = "/"  # the volume `/:/host`: here the process runs on the host itself
        environ[key] = value.replace("/var/lib/infrawatch", str(root))
    return environ


def healthcheck(environ: dict[str, str], service: str = "") -> int:
    """The service's own compose healthcheck, else the image's HEALTHCHECK, run with the container's
    environment."""
    own = SERVICES.get(service, {}).get("healthcheck", {}).get("test")
    command = own[1:] if own else json.loads(instruction("HEALTHCHECK").split("CMD", 1)[1])
    assert command[0] == "python"
    return subprocess.run(
        [sys.executable, *command[1:]], env=environ, capture_output=True, timeout=30, check=False
    ).returncode


def wait_healthy(environ: dict[str, str], process: ServiceProcess, service: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while healthcheck(environ, service) != 0:
        assert process.process.poll() is None, f"{process.module} exited:\n{process.log()}"
        assert time.monotonic() < deadline, f"{process.module} never became healthy:\n{process.log()}"
        time.sleep(0.3)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_compose_brings_up_a_working_platform(postgres_schema_url: str, tmp_path: Path):
    names = ("agents", "metrics", "alerts", "gateway")
    ports = [int(compose_env(name)[f"INFRAWATCH_{name.upper()}_PORT"]) for name in names]
    busy = [port for port in ports if not port_free(port)]
    if busy:
        pytest.fail(f"compose's ports {busy} are in use on this machine (is `make run` going?); stop it and rerun")
    environments = {name: local_env(name, postgres_schema_url, tmp_path) for name in START_ORDER}
    assert healthcheck(environments["agents"]) != 0, "the health check passes with nothing running"
    processes: list[ServiceProcess] = []
    try:
        for name in START_ORDER:
            process = ServiceProcess(module_of(name), environments[name], tmp_path / f"{name}.log")
            processes.append(process)
            if SERVICES[name].get("healthcheck", {}).get("disable"):
                continue
            time.sleep(0.5)
            if process.process.poll() is not None and "Address already in use" in process.log():
                # compose's fixed ports lie in Linux's ephemeral range: a client socket of another
                # program can hold one for a moment. Not what this test is about: start it again.
                time.sleep(2)
                process = ServiceProcess(module_of(name), environments[name], tmp_path / f"{name}-again.log")
                processes[-1] = process
            wait_healthy(environments[name], process, name)

        gateway_port = compose_env("gateway")["INFRAWATCH_GATEWAY_PORT"]
        hostname = compose_env("agent")["INFRAWATCH_AGENT_HOSTNAME"]
        with grpc.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:
            stub = gateway_pb2_grpc.OperatorServiceStub(channel)
            deadline = time.monotonic() + 60
            while True:
                try:
                    view = stub.GetAgent(
                        gateway_pb2.GetAgentRequest(agent=gateway_pb2.AgentRef(hostname=hostname)), timeout=5
                    ).agent
                    if {m.name for m in view.latest} >= {"cpu_usage_percent", "memory_used_bytes", "load1"}:
                        break
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                assert time.monotonic() < deadline, "the compose agent's metrics never reached the gateway"
                time.sleep(0.5)
            assert view.metrics == gateway_pb2.AVAILABILITY_AVAILABLE
            token = compose_env("gateway")["INFRAWATCH_OPERATOR_TOKEN"]
            overview = stub.GetFleetOverview(gateway_pb2.GetFleetOverviewRequest(), timeout=10)
            assert overview.metrics == gateway_pb2.AVAILABILITY_AVAILABLE and len(overview.top_hosts) == 1
            retired = stub.DeregisterAgent(
                gateway_pb2.DeregisterAgentRequest(agent=gateway_pb2.AgentRef(hostname=hostname)),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=10,
            ).agent
            assert retired.hostname == hostname
        for process in reversed(processes):
            assert process.terminate(timeout=30) == 0, process.log()
    finally:
        for process in processes:
            process.kill()


def test_the_kubernetes_agent_runs_on_every_node_and_can_write_its_state():
    documents = list(yaml.safe_load_all((REPO / "deploy" / "k8s" / "infrawatch.yaml").read_text()))
    (daemonset,) = [d for d in documents if d["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    assert {"operator": "Exists"} in pod["tolerations"]
    (init,) = pod["initContainers"]
    assert "os.chown('/var/lib/infrawatch/agent', 10001, 10001)" in " ".join(init["command"])
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["INFRAWATCH_AGENT_METRICS_ADDRESS"]["value"].startswith("dns:///")  # client-side round robin
    assert env["INFRAWATCH_AGENT_HOST_ROOT"]["value"] == "/host"
    assert "INFRAWATCH_AGENT_ENROLLMENT_TOKEN" in env
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        if deployment["metadata"]["name"] == "infrawatch-console":
            # The console holds no secret: it acts with the logged-in operator's own token.
            assert not {n for n in names if n.endswith("_TOKEN")}
        else:
            assert "INFRAWATCH_SERVICE_TOKEN" in names, deployment["metadata"]["name"]
