"""Composition root of the gateway: settings, channels, typed clients, servicer, server."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.logs import configure_logging, event
from infrawatch.gateway.v1 import gateway_pb2_grpc
from services.common.config import settings_from_command_line
from services.common.credentials import Credentials
from services.common.server import AsyncServiceBinding, build_async_server, install_stop_signals, serve_async
from services.common.telemetry import RpcTelemetry, new_registry, serve_or_exit
from services.common.tls import client_tls_from, server_tls_from, tls_summary
from services.gateway.clients import AgentsClient, AlertsClient, MetricsClient, channel_options
from services.gateway.service import GatewayContext
from services.gateway.servicer import SERVICE_NAME, OperatorServicer
from services.gateway.settings import GATEWAY_VARS, GatewaySettings

_log = logging.getLogger("infrawatch.gateway")
AGENTS_SERVICE = "infrawatch.agents.v1.AgentService"


def downstream_serving(channel: grpc.Channel, service: str, timeout_s: float) -> bool:
    """Whether a dependency's own health check says SERVING."""
    try:
        # wait_for_ready: a channel still connecting is not a dependency that is down.
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s, wait_for_ready=True
        )
    except grpc.RpcError as exc:
        event(_log, "dependency not serving", logging.WARNING, service=service, code=exc.code().name)
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str] | None = None) -> None:
    settings = settings_from_command_line(
        "python -m services.gateway",
        "InfraWatch gateway: the operators' single gRPC entry point (infrawatch.gateway.v1.OperatorService), "
        "composing the agents and metrics services.",
        GATEWAY_VARS,
        GatewaySettings.from_env,
        argv,
    )
    configure_logging(settings.log_level, "gateway")

    stop = install_stop_signals()
    limits = channel_options(settings.max_message_bytes)
    tls = client_tls_from(settings)
    agents_channel = tls.channel(settings.agents_address, options=limits)
    metrics_channel = tls.channel(settings.metrics_address, options=limits)
    alerts_channel = tls.channel(settings.alerts_address, options=limits) if settings.alerts_address else None
    fan_out = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fan-out")
    ctx = GatewayContext(
        agents=AgentsClient(agents_channel, settings.service_token, settings.downstream_timeout, stop),
        metrics=MetricsClient(
            metrics_channel,
            settings.service_token,
            settings.downstream_timeout,
            stop,
            live_channel=lambda: tls.aio_channel(settings.metrics_address, options=limits),
        ),
        alerts=AlertsClient(
            alerts_channel,
            settings.service_token,
            settings.downstream_timeout,
            stop,
            live_channel=lambda: tls.aio_channel(settings.alerts_address, options=limits),
        )
        if alerts_channel is not None
        else None,
        fan_out=fan_out,
        key_metrics=settings.key_metrics,
        credentials=Credentials(
            operator_token=settings.operator_token,
            service_token=settings.service_token,
            protect_reads=settings.protect_reads,
        ),
        status_poll_s=settings.watch_status_every,
        stop=stop,
    )
    servicer = OperatorServicer(ctx)
    lifecycle = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lifecycle")
    registry = new_registry()

    async def run() -> None:
        server, health, port = build_async_server(
            [
                AsyncServiceBinding(
                    SERVICE_NAME, lambda s: gateway_pb2_grpc.add_OperatorServiceServicer_to_server(servicer, s)
                )
            ],
            address=f"{settings.bind_host}:{settings.gateway_port}",
            port_setting="INFRAWATCH_GATEWAY_PORT",
            max_message_bytes=settings.max_message_bytes,
            tls=server_tls_from(settings),
            telemetry=RpcTelemetry(registry),
        )
        event(
            _log,
            "gateway listening",
            port=port,
            agents=settings.agents_address,
            metrics=settings.metrics_address,
            alerts=settings.alerts_address or "(none)",
            operator_actions="enabled" if settings.operator_token else "disabled",
            protect_reads=settings.protect_reads,
            tls=tls_summary(settings),
        )
        # Serving needs the agents service (every call starts there); without metrics the gateway
        # still answers, with the metrics part marked unavailable, so metrics does not gate health.
        await serve_async(
            server,
            health,
            service_names=[SERVICE_NAME],
            prepare=lambda: None,
            is_healthy=lambda: downstream_serving(agents_channel, AGENTS_SERVICE, settings.downstream_timeout),
            stop=stop,
            grace_seconds=settings.shutdown_grace,
            blocking=lifecycle,
            check_every_seconds=2.0,
        )

    endpoint = serve_or_exit(registry, settings.bind_host, settings.gateway_telemetry_port, "gateway")
    try:
        asyncio.run(run())
    finally:
        if endpoint is not None:
            endpoint.close()
        fan_out.shutdown(wait=False, cancel_futures=True)
        lifecycle.shutdown(wait=False)
        agents_channel.close()
        metrics_channel.close()
        if alerts_channel is not None:
            alerts_channel.close()


if __name__ == "__main__":
    main()
