"""TLS of the gRPC servers, and the plaintext warning.

With a certificate and key the server speaks TLS only; with a client CA as well it also requires
every client to present a certificate signed by that CA (mutual TLS). Without them it speaks
plaintext, which is only safe on loopback: bearer tokens would cross the network in clear text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from agent.logs import event
from agent.tls import ClientTLS
from services.common.config import ServerTlsSettings, TlsSettings

_log = logging.getLogger("infrawatch.server")
_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True)
class ServerTLS:
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file and self.key_file)

    def credentials(self) -> grpc.ServerCredentials:
        client_ca = Path(self.client_ca_file).read_bytes() if self.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(Path(self.key_file).read_bytes(), Path(self.cert_file).read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def warn_if_plaintext_beyond_loopback(address: str, remedy: str) -> None:
    """The one warning every listener without TLS gives when other hosts can reach it: what it
    carries (tokens, session cookies) then crosses the network in clear text."""
    if not is_loopback(address):
        event(
            _log,
            f"serving plaintext beyond loopback: tokens cross the network in clear text; {remedy}, "
            "or INFRAWATCH_BIND_HOST=127.0.0.1",
            logging.WARNING,
            address=address,
        )


def listen(server: grpc.Server | grpc.aio.Server, address: str, tls: ServerTLS | None) -> int:
    """Bind `address` with TLS when configured; a plaintext bind beyond loopback is warned about."""
    if tls is not None and tls.enabled:
        return server.add_secure_port(address, tls.credentials())
    warn_if_plaintext_beyond_loopback(address, "set INFRAWATCH_TLS_CERT and INFRAWATCH_TLS_KEY")
    return server.add_insecure_port(address)


def server_tls_from(settings: ServerTlsSettings) -> ServerTLS:
    return ServerTLS(settings.tls_cert, settings.tls_key, settings.tls_client_ca)


def client_tls_from(settings: TlsSettings) -> ClientTLS:
    """Outbound TLS; the client identity for mutual TLS defaults to the service's own certificate."""
    return ClientTLS(
        ca_file=settings.tls_ca,
        cert_file=settings.tls_client_cert or settings.tls_cert,
        key_file=settings.tls_client_key or settings.tls_key,
        server_name=settings.tls_server_name,
    )


def tls_summary(settings: ServerTlsSettings) -> str:
    """How the server is reached, for the start-up log line: plaintext, tls or mtls."""
    tls = server_tls_from(settings)
    if not tls.enabled:
        return "plaintext"
    return "mtls" if tls.client_ca_file else "tls"
