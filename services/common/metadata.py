"""Reading credentials from gRPC call metadata."""

from __future__ import annotations

import grpc


def bearer_token(context: grpc.ServicerContext) -> str:
    """The token of an `authorization: Bearer <token>` metadata entry, or ''."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""
