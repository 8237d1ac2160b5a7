"""Knit: a small container orchestrator — a server, an agent per host, NATS between them.

See docs/architecture.md for the layers and what each package may import.
"""

__version__ = "0.1.0"
