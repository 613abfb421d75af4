"""Domain errors shared by every service.

Domain and use-case code raise these; only the gRPC edge (grpc_errors.py)
knows which status code each one becomes.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of all errors a client can act on; the message is shown to the caller."""


class InvalidArgument(DomainError):
    """The request is malformed; the message names the field and the rule."""


class NotFound(DomainError):
    """The addressed entity does not exist."""


class AlreadyExists(DomainError):
    """The entity to create exists already."""


class Unauthenticated(DomainError):
    """Credentials are missing or wrong."""


class PermissionDenied(DomainError):
    """Credentials are valid but do not allow this action."""


class ResourceExhausted(DomainError):
    """A quota or size limit was hit; the message names the limit."""


class FailedPrecondition(DomainError):
    """The system is not in a state that allows the action."""


class Unavailable(DomainError):
    """A dependency cannot be reached right now; retrying later may work."""


class DataLoss(DomainError):
    """Stored data cannot be read back (corruption); retrying will not help, an operator must look."""
