"""The operators' gateway: one gRPC API composed from the agents and metrics services."""
