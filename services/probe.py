"""`python -m services.probe`: the container health check. Exits 0 only when the InfraWatch service
in this container answers the standard grpc.health.v1 check with SERVING.

No gRPC health-probe binary ships with the stack, so the image carries this one. Without
--address it checks the port the container's configuration gives its service (the
INFRAWATCH_<SERVICE>_PORT variables that are set), or the default ports when none is set, and
judges the first that answers: one container runs one service.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.tls import ClientTLS

PORT_VARIABLES = (
    ("INFRAWATCH_GATEWAY_PORT", "50050"),
    ("INFRAWATCH_AGENTS_PORT", "50051"),
    ("INFRAWATCH_METRICS_PORT", "50052"),
    ("INFRAWATCH_ALERTS_PORT", "50053"),
)


def candidate_addresses(environ: dict[str, str]) -> list[str]:
    configured = [environ[variable] for variable, _ in PORT_VARIABLES if variable in environ]
    ports = configured or [default for _, default in PORT_VARIABLES]
    return [f"127.0.0.1:{port}" for port in ports]


def probe_tls(environ: dict[str, str]) -> ClientTLS:
    """A service serving TLS is probed over TLS, trusting INFRAWATCH_TLS_CA and presenting the
    service's own certificate (which mutual TLS requires)."""
    if not environ.get("INFRAWATCH_TLS_CERT"):
        return ClientTLS()
    return ClientTLS(
        ca_file=environ.get("INFRAWATCH_TLS_CA")
        or environ.get("INFRAWATCH_TLS_CLIENT_CA")
        or environ["INFRAWATCH_TLS_CERT"],
        cert_file=environ.get("INFRAWATCH_TLS_CERT", ""),
        key_file=environ.get("INFRAWATCH_TLS_KEY", ""),
        server_name=environ.get("INFRAWATCH_TLS_SERVER_NAME", ""),
    )


def check(address: str, service: str, timeout_s: float, tls: ClientTLS | None = None) -> int | None:
    """HealthCheckResponse status of `address`, or None when nothing answers there."""
    with (tls or ClientTLS()).channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return None
            return health_pb2.HealthCheckResponse.UNKNOWN
        return int(reply.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", help="host:port to check (default: the local InfraWatch ports)")
    parser.add_argument("--service", default="", help="service name to check (default: the server as a whole)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per attempt (default 2)")
    args = parser.parse_args(argv)
    addresses = [args.address] if args.address else candidate_addresses(dict(os.environ))
    for address in addresses:
        status = check(address, args.service, args.timeout, probe_tls(dict(os.environ)))
        if status is None:
            continue
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        print(f"{address}: {name}")
        return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1
    print(f"no InfraWatch service answered on {', '.join(addresses)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
