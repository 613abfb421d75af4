"""A service whose database is not there yet (PostgreSQL up, the database not created): the process
listens, health stays NOT_SERVING, calls answer UNAVAILABLE naming the reason, and once the
database exists the service migrates it and serves, with no restart. Driven by grpcurl."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg2

from services.processes import ServiceProcess, free_port
from tests.e2e.conftest import ENROLLMENT_TOKEN
from tests.e2e.processes import grpcurl, wait_for


def health(address: str) -> str:
    result = grpcurl("-plaintext", "-d", '{"service": "infrawatch.agents.v1.AgentService"}', address,
                     "grpc.health.v1.Health/Check")  # fmt: skip
    return json.loads(result.stdout)["status"] if result.returncode == 0 else f"error: {result.stderr}"


def test_a_missing_database_keeps_health_not_serving_with_the_reason_until_it_exists(postgres_url, tmp_path: Path):
    name = "iw_later_" + uuid.uuid4().hex[:10]
    base = postgres_url.rsplit("/", 1)[0]
    port = free_port()
    env = {
        "INFRAWATCH_DATABASE_URL": f"{base}/{name}",
        "INFRAWATCH_AGENTS_PORT": str(port),
        "INFRAWATCH_AGENTS_TELEMETRY_PORT": "off",
        "INFRAWATCH_SERVICE_TOKEN": "e2e-service",
        "INFRAWATCH_ENROLLMENT_TOKEN": ENROLLMENT_TOKEN,
        "INFRAWATCH_BIND_HOST": "127.0.0.1",
    }
    process = ServiceProcess("services.agents", env, tmp_path / "agents.log")
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True
    address = f"127.0.0.1:{port}"
    try:
        wait_for(lambda: health(address) == "NOT_SERVING", timeout=30, what="the agents service listening")
        listed = grpcurl("-plaintext", address, "infrawatch.agents.v1.AgentService/ListAgents")
        assert listed.returncode != 0
        assert "Unavailable" in listed.stderr and f'database "{name}" does not exist' in listed.stderr, listed.stderr
        assert "retry shortly" in listed.stderr
        wait_for(lambda: "not ready: health stays NOT_SERVING" in process.log(), timeout=10, what="the reason logged")
        assert f'database \\"{name}\\" does not exist' in process.log()

        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        wait_for(lambda: health(address) == "SERVING", timeout=30, what="SERVING once the database exists")
        listed = grpcurl("-plaintext", address, "infrawatch.agents.v1.AgentService/ListAgents")
        assert listed.returncode == 0, listed.stderr
    finally:
        process.kill()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
