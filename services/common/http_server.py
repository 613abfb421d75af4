"""uvicorn as InfraWatch runs it: signals left to the process's own handling, sockets bound up front,
connections treated as a Go server treats them (no Nagle delay, idle connections kept longer than
Go clients keep theirs)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from services.common.config import exit_cannot_listen


class QuietServer(uvicorn.Server):
    """uvicorn, with SIGTERM handled like every other InfraWatch process: drain, then exit 0
    (uvicorn's own handling re-raises the signal after draining, so the exit code would be -15)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_config(app: Any, keepalive_s: float, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for an InfraWatch HTTP edge: idle kept-alive connections are closed
    only after `keepalive_s` (uvicorn's 5 s default is far below the 90 s Go clients keep theirs,
    so Prometheus and Grafana kept meeting resets), quiet logs, no lifespan, a short drain."""
    options.setdefault("log_level", "warning")
    options.setdefault("timeout_graceful_shutdown", 5)
    return uvicorn.Config(app, lifespan="off", timeout_keep_alive=max(1, round(keepalive_s)), **options)


def host_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 host in brackets, as people and URLs write it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_socket(host: str, port: int, setting: str) -> socket.socket:
    """The listening socket: `::` means every address, IPv4 included (asyncio alone would make
    an IPv6-only socket of it). It is made with protocol IPPROTO_TCP, not 0: asyncio turns Nagle's
    algorithm off (TCP_NODELAY) only on sockets whose protocol says TCP, and accepted sockets
    inherit the listener's. With protocol 0 every answer's second packet waited for the client's
    delayed ACK: 43 ms per answer on a kept-alive connection. A port that cannot be had ends the
    program with one line naming `setting`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        listener.bind((host, port))
    except OSError:
        listener.close()
        exit_cannot_listen(host_port(host, port), setting)
    listener.listen(128)
    return listener
