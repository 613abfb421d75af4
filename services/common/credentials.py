"""Who may do what: the one place where a presented bearer token is compared with a secret.

Four kinds of caller hold four kinds of secret:
- an **operator** holds INFRAWATCH_OPERATOR_TOKEN: deregisters and approves hosts, and reads when
  reads are protected;
- an **InfraWatch service** holds INFRAWATCH_SERVICE_TOKEN: it verifies agent tokens
  (AuthenticateAgent, never open) and reads from another service on an operator's behalf;
- a **new host** holds INFRAWATCH_ENROLLMENT_TOKEN: it may register (only once per hostname: a
  hostname already registered needs that host's own agent token or an operator's approval);
- a **registered host** holds its own agent token, checked by the agents service itself.

Every comparison is constant-time. A secret left empty matches nothing.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from services.common.errors import FailedPrecondition, PermissionDenied, Unauthenticated


def _matches(secret: str, presented: str) -> bool:
    return bool(secret) and bool(presented) and hmac.compare_digest(secret.encode(), presented.encode())


@dataclass(frozen=True)
class Credentials:
    operator_token: str = ""
    service_token: str = ""
    enrollment_token: str = ""
    protect_reads: bool = False

    def is_operator(self, token: str) -> bool:
        return _matches(self.operator_token, token)

    def is_service(self, token: str) -> bool:
        return _matches(self.service_token, token)

    def require_operator(self, token: str) -> None:
        if not self.operator_token:
            raise FailedPrecondition(
                "operator actions are disabled: start the service with INFRAWATCH_OPERATOR_TOKEN set"
            )
        if not token:
            raise Unauthenticated("missing operator token; send metadata 'authorization: Bearer <operator token>'")
        if not self.is_operator(token):
            raise Unauthenticated("operator token is not valid")

    def require_service(self, token: str, what: str) -> None:
        """Only another InfraWatch service may do `what` (PERMISSION_DENIED, so that a caller can tell
        its own credential was refused from an UNAUTHENTICATED answer about what it asked)."""
        if not token:
            raise PermissionDenied(
                f"{what} is for InfraWatch services only; send metadata 'authorization: Bearer <service token>'"
            )
        if not self.is_service(token):
            raise PermissionDenied(f"{what} is for InfraWatch services only and the service token is not valid")

    def require_reader(self, token: str) -> None:
        """Reads are open unless INFRAWATCH_PROTECT_READS is on; then the operator or a service may read."""
        if not self.protect_reads:
            return
        if not token:
            raise Unauthenticated(
                "reads are protected (INFRAWATCH_PROTECT_READS); send metadata 'authorization: Bearer <operator token>'"
            )
        if not (self.is_operator(token) or self.is_service(token)):
            raise Unauthenticated(
                "reads are protected and this token is neither the operator token nor a service token"
            )

    def require_enrollment(self, token: str) -> None:
        if not self.enrollment_token:
            raise FailedPrecondition(
                "registration is closed: the agents service has no INFRAWATCH_ENROLLMENT_TOKEN configured"
            )
        if not token:
            raise Unauthenticated(
                "registering needs the enrolment token; send metadata 'authorization: Bearer <enrolment token>' "
                "(the agent's --enrollment-token)"
            )
        if not _matches(self.enrollment_token, token):
            raise Unauthenticated("enrolment token is not valid")
