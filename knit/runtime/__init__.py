"""Container runtimes: the ``ContainerRuntime`` port and its Docker Engine adapter.

Layer: runtime. ``base`` is plain data and the protocol (no I/O); ``docker`` wraps aiodocker.
Import ``DockerRuntime`` from ``knit.runtime.docker`` where it is needed, so that importing the
port does not import aiodocker (the simulation harness uses the port only).
"""

from knit.runtime.base import (
    ContainerRuntime,
    ContainerSpec,
    ContainerState,
    HealthCheck,
    LogOptions,
    Mount,
    PortBinding,
    PortProtocol,
    PublishedPort,
    RegistryAuth,
    RuntimeEvent,
    RuntimeInfo,
)

__all__ = [
    "ContainerRuntime",
    "ContainerSpec",
    "ContainerState",
    "HealthCheck",
    "LogOptions",
    "Mount",
    "PortBinding",
    "PortProtocol",
    "PublishedPort",
    "RegistryAuth",
    "RuntimeEvent",
    "RuntimeInfo",
]
