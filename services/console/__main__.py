"""Composition root of the web console: settings, a gateway channel, the Starlette app, uvicorn."""

from __future__ import annotations

import logging
import sys
import threading

from agent.logs import configure_logging, event
from services.common.config import settings_from_command_line
from services.common.http_server import QuietServer, host_port, http_config, listen_socket
from services.common.server import install_stop_signals
from services.common.telemetry import new_registry, serve_or_exit
from services.common.tls import ClientTLS, warn_if_plaintext_beyond_loopback
from services.console import vendor
from services.console.app import Console, build_app
from services.console.sessions import Sessions
from services.console.settings import CONSOLE_VARS, ConsoleSettings
from services.console.telemetry import HttpTelemetry

_log = logging.getLogger("infrawatch.console")


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_command_line(
        "python -m services.console",
        "InfraWatch web console: fleet, host, alerts and explore pages that update by themselves, served "
        "over HTTP and answered from the gateway.",
        CONSOLE_VARS,
        ConsoleSettings.from_env,
        argv,
    )
    configure_logging(settings.log_level, "console")
    if not vendor.installed():
        print(
            "python -m services.console: the chart library is missing; run `make install` "
            "(or python -m services.console.vendor)",
            file=sys.stderr,
        )
        return 2
    tls = ClientTLS(settings.tls_ca, settings.tls_client_cert, settings.tls_client_key, settings.tls_server_name)
    console = Console(
        lambda: tls.aio_channel(settings.gateway_address),
        Sessions(settings.session_ttl),
        settings.protect_reads,
        settings.downstream_timeout,
    )
    host = settings.bind_host.strip("[]") or "::"
    listener = listen_socket(host, settings.console_port, "INFRAWATCH_CONSOLE_PORT")
    # The console speaks plain HTTP (TLS belongs to a proxy in front of it): sign-in tokens and
    # session cookies must not cross a network unprotected without a word.
    warn_if_plaintext_beyond_loopback(
        host_port(host, settings.console_port),
        "put the console behind a TLS-terminating proxy",
    )
    shown = "localhost" if host in ("127.0.0.1", "::1", "localhost") else ("[::]" if ":" in host else host)
    event(
        _log,
        "console listening",
        url=f"http://{shown}:{settings.console_port}/",
        gateway=settings.gateway_address,
        protect_reads=settings.protect_reads,
    )
    registry = new_registry()
    app = HttpTelemetry(registry).middleware(build_app(console))
    server = QuietServer(http_config(app, settings.http_keepalive))
    endpoint = serve_or_exit(registry, settings.bind_host, settings.console_telemetry_port, "console")
    stop = install_stop_signals()

    def exit_on_stop() -> None:
        stop.wait()
        server.should_exit = True

    threading.Thread(target=exit_on_stop, name="stop", daemon=True).start()
    try:
        server.run(sockets=[listener])
    finally:
        if endpoint is not None:
            endpoint.close()
    event(_log, "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
