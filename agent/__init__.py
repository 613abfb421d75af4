"""The InfraWatch host agent: collects host metrics and streams them without losing a sample."""

VERSION = "0.1.0"
