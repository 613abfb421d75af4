"""The one place where domain errors become gRPC status codes.

`CallInterceptor` wraps every handler of a server: it maps a raised
`DomainError` to its status with the error's message, turns anything
unexpected into INTERNAL with a generic message (the traceback goes to the
log, never to the client), and logs one line per call with its latency (and, given an
`RpcTelemetry`, counts it by method and status code with a latency histogram).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import grpc

from agent.logs import event
from services.common import errors
from services.common.db import database_problem
from services.common.telemetry import RpcTelemetry

STATUS_BY_ERROR: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
}

INTERNAL_MESSAGE = "internal error; the server logged the details"


def database_unavailable_message(reason: str) -> str:
    """UNAVAILABLE's message when the database cannot be used: the reason, then what to do."""
    return f"the service's database is unavailable ({reason}); retry shortly"


_log = logging.getLogger("infrawatch.rpc")
_QUIET_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def status_for(error: errors.DomainError) -> grpc.StatusCode:
    """The status code of a domain error, looked up along its class hierarchy."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.UNKNOWN


_ROUTINE = (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED)
_SUSPICIOUS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class _CallLog:
    """One line per call. Routine outcomes (OK, a client hanging up) are DEBUG, so a running
    service's log shows what needs attention: refused credentials at WARNING, other failures at
    INFO (unexpected ones also at ERROR, with their traceback, where they are caught)."""

    def __init__(self, method: str, telemetry: RpcTelemetry | None = None) -> None:
        self.method = method
        self.started = time.perf_counter()
        self._telemetry = telemetry
        if telemetry is not None:
            telemetry.start(method)

    def done(self, code: grpc.StatusCode, detail: str = "") -> None:
        elapsed = time.perf_counter() - self.started
        if self._telemetry is not None:
            self._telemetry.finish(self.method, code.name, elapsed)
        elapsed_ms = round(elapsed * 1000, 2)
        fields: dict[str, Any] = {"method": self.method, "code": code.name, "duration_ms": elapsed_ms}
        if detail:
            fields["detail"] = detail
        if code in _ROUTINE or self.method.startswith(_QUIET_PREFIXES):
            level = logging.DEBUG
        else:
            level = logging.WARNING if code in _SUSPICIOUS else logging.INFO
        event(_log, "rpc finished", level, **fields)


def _fail(context: grpc.ServicerContext, call: _CallLog, exc: Exception) -> None:
    if isinstance(exc, errors.DomainError):
        code = status_for(exc)
        call.done(code, str(exc))
        context.abort(code, str(exc))
    already = context.code() if hasattr(context, "code") else None
    if already is not None and already != grpc.StatusCode.OK:
        call.done(already)
        raise exc
    if not context.is_active():
        call.done(grpc.StatusCode.CANCELLED)
        raise exc
    _log.error("rpc failed unexpectedly", exc_info=exc, extra={"fields": {"method": call.method}})
    call.done(grpc.StatusCode.INTERNAL)
    context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


Unreachable = tuple[type[BaseException], ...]


def _translated(exc: Exception, unreachable: Unreachable) -> Exception:
    """A lost database connection (the errors the server was built with) is UNAVAILABLE, so
    clients retry, not INTERNAL."""
    if unreachable and isinstance(exc, unreachable):
        reason = database_problem(exc)
        event(_log, "database unavailable", logging.WARNING, error=reason)
        return errors.Unavailable(database_unavailable_message(reason))
    return exc


def _wrap_single(
    behavior: Callable[..., Any], method: str, unreachable: Unreachable = (), telemetry: RpcTelemetry | None = None
) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        call = _CallLog(method, telemetry)
        try:
            response = behavior(request, context)
        except Exception as exc:
            _fail(context, call, _translated(exc, unreachable))
            raise
        call.done(grpc.StatusCode.OK)
        return response

    return handle


def _wrap_stream(
    behavior: Callable[..., Iterator[Any]],
    method: str,
    unreachable: Unreachable = (),
    telemetry: RpcTelemetry | None = None,
) -> Callable[..., Iterator[Any]]:
    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        call = _CallLog(method, telemetry)
        try:
            yield from behavior(request, context)
        except GeneratorExit:
            call.done(grpc.StatusCode.CANCELLED)
            raise
        except Exception as exc:
            _fail(context, call, _translated(exc, unreachable))
            raise
        call.done(grpc.StatusCode.OK)

    return handle


Wrapper = Callable[[Callable[..., Any], str], Callable[..., Any]]


def _rewrapped(handler: grpc.RpcMethodHandler, method: str, single: Wrapper, stream: Wrapper) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour wrapped: `single` for unary responses, `stream` for
    streamed ones; serializers kept."""
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(single(handler.unary_unary, method), **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(single(handler.stream_unary, method), **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream, method), **codec)
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream, method), **codec)


class CallInterceptor(grpc.ServerInterceptor):
    """Maps domain errors to status codes and logs every call; `unreachable` lists the exception
    types that mean the service's database cannot be reached (UNAVAILABLE)."""

    def __init__(self, unreachable: Unreachable = (), telemetry: RpcTelemetry | None = None) -> None:
        self._unreachable = unreachable
        self._telemetry = telemetry

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        single, stream = (
            partial(_wrap_single, unreachable=self._unreachable, telemetry=self._telemetry),
            partial(_wrap_stream, unreachable=self._unreachable, telemetry=self._telemetry),
        )
        return _rewrapped(handler, handler_call_details.method, single, stream)


async def _fail_async(context: grpc.aio.ServicerContext, call: _CallLog, exc: Exception) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        call.done(context.code() or grpc.StatusCode.UNKNOWN)
        raise exc
    if isinstance(exc, errors.DomainError):
        code = status_for(exc)
        call.done(code, str(exc))
        await context.abort(code, str(exc))
    _log.error("rpc failed unexpectedly", exc_info=exc, extra={"fields": {"method": call.method}})
    call.done(grpc.StatusCode.INTERNAL)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


def _wrap_single_async(
    behavior: Callable[..., Any], method: str, unreachable: Unreachable = (), telemetry: RpcTelemetry | None = None
) -> Callable[..., Any]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _CallLog(method, telemetry)
        try:
            response = await behavior(request, context)
        except asyncio.CancelledError:
            call.done(grpc.StatusCode.CANCELLED)
            raise
        except Exception as exc:
            await _fail_async(context, call, _translated(exc, unreachable))
            raise
        call.done(grpc.StatusCode.OK)
        return response

    return handle


def _wrap_stream_async(
    behavior: Callable[..., Any], method: str, unreachable: Unreachable = (), telemetry: RpcTelemetry | None = None
) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _CallLog(method, telemetry)
        try:
            async for response in behavior(request, context):
                yield response
        except (asyncio.CancelledError, GeneratorExit):
            call.done(grpc.StatusCode.CANCELLED)
            raise
        except Exception as exc:
            await _fail_async(context, call, _translated(exc, unreachable))
            raise
        call.done(grpc.StatusCode.OK)

    return handle


class AsyncCallInterceptor(grpc.aio.ServerInterceptor):
    """The asyncio server's twin of `CallInterceptor`: the same error table, the same call log."""

    def __init__(self, unreachable: Unreachable = (), telemetry: RpcTelemetry | None = None) -> None:
        self._unreachable = unreachable
        self._telemetry = telemetry

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        single = partial(_wrap_single_async, unreachable=self._unreachable, telemetry=self._telemetry)
        stream = partial(_wrap_stream_async, unreachable=self._unreachable, telemetry=self._telemetry)
        return _rewrapped(handler, handler_call_details.method, single, stream)
