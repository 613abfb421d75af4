"""Shared server kit: settings, logging, errors, database and the gRPC server factory."""
