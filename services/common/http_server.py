"""uvicorn as InfraWatch runs it: signals left to the process's own handling, sockets bound up front."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn


class QuietServer(uvicorn.Server):
    """uvicorn, with SIGTERM handled like every other InfraWatch process: drain, then exit 0
    (uvicorn's own handling re-raises the signal after draining, so the exit code would be -15)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen_socket(host: str, port: int) -> socket.socket:
    """The listening socket: `::` means every address, IPv4 included (asyncio alone would make
    an IPv6-only socket of it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind((host, port))
    listener.listen(128)
    return listener
