"""Reading bearer credentials from gRPC call metadata and HTTP headers."""

from __future__ import annotations

import grpc


def token_of(authorization: str) -> str:
    """The token of an `authorization` value `Bearer <token>` (any case), or ''."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def bearer_token(context: grpc.ServicerContext) -> str:
    """The token of an `authorization: Bearer <token>` metadata entry, or ''."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and (token := token_of(value)):
            return token
    return ""
