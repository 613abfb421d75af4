"""The gRPC server factory and lifecycle every InfraWatch service uses.

`build_server` wires health, reflection, the error/logging interceptor and
message-size limits and returns `(server, health, port)` so tests can bind
port 0. `serve` runs the server until SIGTERM/SIGINT: health stays
NOT_SERVING until `prepare` (database reachable, migrations applied)
succeeds, follows `is_healthy` afterwards, and flips to NOT_SERVING before
the server drains in-flight calls for the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer
from grpc_reflection.v1alpha import reflection

from agent.logs import event
from services.common.config import exit_cannot_listen
from services.common.db import database_problem
from services.common.grpc_errors import AsyncCallInterceptor, CallInterceptor
from services.common.telemetry import RpcTelemetry
from services.common.tls import ServerTLS, listen

_log = logging.getLogger("infrawatch.server")


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer to host: its full proto service name and how to add it to a server."""

    full_name: str
    add_to_server: Callable[[grpc.Server], None]


def _options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


def _reflect_and_listen(
    server: grpc.Server | grpc.aio.Server, names: Sequence[str], address: str, tls: ServerTLS | None, port_setting: str
) -> int:
    """Enable reflection over the hosted services, health and reflection; bind; the bound port.
    A port that cannot be had ends the program with one line naming the setting."""
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    try:
        port = listen(server, address, tls)
    except RuntimeError:  # grpc: "Failed to bind to address ..."
        port = 0
    if port == 0:
        exit_cannot_listen(address, port_setting)
    return port


def build_server(
    bindings: Sequence[ServiceBinding],
    *,
    address: str,
    max_message_bytes: int,
    max_workers: int = 64,
    unreachable: tuple[type[BaseException], ...] = (),
    tls: ServerTLS | None = None,
    telemetry: RpcTelemetry | None = None,
    port_setting: str = "the port setting",
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """Create a server hosting `bindings`, health and reflection; every service starts NOT_SERVING."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[CallInterceptor(unreachable, telemetry)],
        options=_options(max_message_bytes),
    )
    for binding in bindings:
        binding.add_to_server(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [binding.full_name for binding in bindings]
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    return server, health_servicer, _reflect_and_listen(server, names, address, tls, port_setting)


def set_serving(health_servicer: health.HealthServicer, names: Sequence[str], serving: bool) -> None:
    """Set the overall status and every named service's status at once."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *names]:
        health_servicer.set(name, status)


NOT_READY = "not ready: health stays NOT_SERVING and calls answer UNAVAILABLE until this succeeds; retrying"


def install_stop_signals() -> threading.Event:
    """An event set by the first SIGTERM or SIGINT."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        event(_log, "stop signal received", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def serve(
    server: grpc.Server,
    health_servicer: health.HealthServicer,
    *,
    service_names: Sequence[str],
    prepare: Callable[[], None],
    is_healthy: Callable[[], bool],
    stop: threading.Event,
    grace_seconds: float,
    check_every_seconds: float = 5.0,
) -> None:
    """Run `server` until `stop` is set, keeping health truthful; returns after draining."""
    server.start()
    delay = 0.5
    while not stop.is_set():
        try:
            prepare()
            break
        except Exception as exc:
            event(_log, NOT_READY, logging.WARNING, reason=database_problem(exc), retry_in_s=delay)
            stop.wait(delay)
            delay = min(delay * 2, 10.0)
    serving = False
    while not stop.is_set():
        healthy = is_healthy()
        if healthy != serving:
            set_serving(health_servicer, service_names, healthy)
            event(_log, "health changed", status="SERVING" if healthy else "NOT_SERVING")
            serving = healthy
        stop.wait(check_every_seconds)
    health_servicer.enter_graceful_shutdown()
    event(_log, "draining", grace_s=grace_seconds)
    server.stop(grace_seconds).wait()
    event(_log, "stopped")


def build_async_server(
    bindings: Sequence[AsyncServiceBinding],
    *,
    address: str,
    max_message_bytes: int,
    unreachable: tuple[type[BaseException], ...] = (),
    tls: ServerTLS | None = None,
    telemetry: RpcTelemetry | None = None,
    port_setting: str = "the port setting",
) -> tuple[grpc.aio.Server, AsyncHealthServicer, int]:
    """The asyncio twin of `build_server`, for services that hold long-lived streams: a waiting
    stream is a suspended coroutine, not a parked thread, so open streams cost no workers."""
    server = grpc.aio.server(
        interceptors=[AsyncCallInterceptor(unreachable, telemetry)], options=_options(max_message_bytes)
    )
    for binding in bindings:
        binding.add_to_server(server)
    # Starts NOT_SERVING: `serve_async` (or the caller) sets it before the server starts.
    health_servicer = AsyncHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [binding.full_name for binding in bindings]
    return server, health_servicer, _reflect_and_listen(server, names, address, tls, port_setting)


@dataclass(frozen=True)
class AsyncServiceBinding:
    full_name: str
    add_to_server: Callable[[grpc.aio.Server], None]


async def set_serving_async(health_servicer: AsyncHealthServicer, names: Sequence[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *names]:
        await health_servicer.set(name, status)


async def _sleep_unless(stop: threading.Event, seconds: float) -> None:
    """Sleep up to `seconds`, waking early once `stop` is set (checked every 100 ms)."""
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


async def serve_async(
    server: grpc.aio.Server,
    health_servicer: AsyncHealthServicer,
    *,
    service_names: Sequence[str],
    prepare: Callable[[], None],
    is_healthy: Callable[[], bool],
    stop: threading.Event,
    grace_seconds: float,
    blocking: Executor,
    check_every_seconds: float = 5.0,
) -> None:
    """`serve` for an asyncio server: the same truthful health and drain, with the blocking
    steps (prepare, database checks) run on `blocking` so the event loop never waits on them."""
    loop = asyncio.get_running_loop()
    await set_serving_async(health_servicer, service_names, False)
    await server.start()
    delay = 0.5
    while not stop.is_set():
        try:
            await loop.run_in_executor(blocking, prepare)
            break
        except Exception as exc:
            event(_log, NOT_READY, logging.WARNING, reason=database_problem(exc), retry_in_s=delay)
            await _sleep_unless(stop, delay)
            delay = min(delay * 2, 10.0)
    serving = False
    while not stop.is_set():
        healthy = await loop.run_in_executor(blocking, is_healthy)
        if healthy != serving:
            await set_serving_async(health_servicer, service_names, healthy)
            event(_log, "health changed", status="SERVING" if healthy else "NOT_SERVING")
            serving = healthy
        await _sleep_unless(stop, check_every_seconds)
    await health_servicer.enter_graceful_shutdown()
    event(_log, "draining", grace_s=grace_seconds)
    await server.stop(grace_seconds)
    event(_log, "stopped")


class BackgroundAsyncServer:
    """An asyncio gRPC server on its own event-loop thread, for tests and embedding: `start`
    returns once it listens; `stop` cancels open calls and closes the loop."""

    def __init__(self, build: Callable[[], tuple[grpc.aio.Server, AsyncHealthServicer, int]]) -> None:
        self._build = build
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="aio-server", daemon=True)
        self.server: grpc.aio.Server | None = None
        self.health: AsyncHealthServicer | None = None
        self.port = 0

    def run(self, coroutine: Any) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def start(self, serving_names: Sequence[str] = ()) -> int:
        self._thread.start()

        async def begin() -> None:
            self.server, self.health, self.port = self._build()
            await set_serving_async(self.health, serving_names, bool(serving_names))
            await self.server.start()

        self.run(begin())
        return self.port

    def stop(self, grace: float | None = 0) -> None:
        """Stop serving and close the loop; a second call does nothing."""
        if self.loop.is_closed():
            return
        if self.server is not None:
            self.run(self.server.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
