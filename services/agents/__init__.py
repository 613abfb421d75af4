"""The agents bounded context: registration, heartbeat, inventory, liveness and agent credentials."""
