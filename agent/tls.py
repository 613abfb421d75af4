"""TLS of outbound gRPC channels, shared by the agent and the services that call each other.

Without a CA file a channel is plaintext; with one the server must present a certificate signed
by it (for the name in the address, or `server_name` when the address is an IP or an alias), and
a client certificate is presented when the server asks for one (mutual TLS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


@dataclass(frozen=True)
class ClientTLS:
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file)

    def _credentials(self) -> grpc.ChannelCredentials:
        has_identity = bool(self.cert_file and self.key_file)
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca_file).read_bytes(),
            private_key=Path(self.key_file).read_bytes() if has_identity else None,
            certificate_chain=Path(self.cert_file).read_bytes() if has_identity else None,
        )

    def _options(self, options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
        result = list(options)
        if self.enabled and self.server_name:
            result.append(("grpc.ssl_target_name_override", self.server_name))
        return result

    def channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        if not self.enabled:
            return grpc.insecure_channel(address, options=list(options))
        return grpc.secure_channel(address, self._credentials(), options=self._options(options))

    def aio_channel(
        self, address: str, options: Sequence[tuple[str, Any]] = (), interceptors: Sequence[Any] = ()
    ) -> grpc.aio.Channel:
        if not self.enabled:
            return grpc.aio.insecure_channel(address, options=list(options), interceptors=list(interceptors))
        return grpc.aio.secure_channel(
            address, self._credentials(), options=self._options(options), interceptors=list(interceptors)
        )
