"""Turning problems into the API's error list, and the rules that need stored state.

Layer: domain. Pure: imports pydantic and ``knit.domain.specs``. The store's knowledge (which
credentials and networks exist, which subnets are taken) comes in as arguments, so these run
inside the API's request handling or the writer's transaction alike.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping

from pydantic import ValidationError

from knit.domain.specs import DeploymentSpec, FieldError, parse_subnet


def errors_from_pydantic(exc: ValidationError) -> list[FieldError]:
    """Turn pydantic's errors into the API's ``[{"field", "message"}]`` (decision 0004).

    ``field`` is a dotted path with list indexes (``templates.0.destination``; ``body`` for
    the whole object). Input values are never echoed, so a password cannot leak.
    """
    out: list[FieldError] = []
    for error in exc.errors(include_url=False, include_input=False):
        parts = [str(part) for part in error["loc"]]
        ctx = error.get("ctx") or {}
        at = ctx.get("at")
        if isinstance(at, str):
            parts.extend(at.split("."))
        message = error["msg"]
        if error["type"] == "missing":
            message = "is required"
        elif error["type"] == "extra_forbidden":
            message = "is not a known field"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        out.append({"field": ".".join(parts) or "body", "message": message})
    return out


def check_references(
    spec: DeploymentSpec,
    known_registry_ids: Collection[str],
    known_network_names: Collection[str],
) -> list[FieldError]:
    """Problems with what ``spec`` refers to: credentials and networks that do not exist.

    Args:
        spec: a validated deployment.
        known_registry_ids: ids of the stored RegistryCredentials.
        known_network_names: names of the stored Networks.

    Returns:
        One ``{"field", "message"}`` per unknown reference (empty when all exist).
    """
    errors: list[FieldError] = []
    rid = spec.registry_credentials_id
    if rid is not None and rid not in known_registry_ids:
        errors.append(
            {
                "field": "registry_credentials_id",
                "message": f"registry credentials {rid!r} not found",
            }
        )
    for i, name in enumerate(spec.network_attachments):
        if name not in known_network_names:
            errors.append(
                {"field": f"network_attachments.{i}", "message": f"network {name!r} not found"}
            )
    return errors


def check_network_attachments(
    spec: DeploymentSpec, drivers_by_name: Mapping[str, str]
) -> list[FieldError]:
    """Problems with the mix of networks: host networking excludes any other network.

    Docker cannot attach a container in host mode to another network, and ports are not
    published in host mode. Unknown names are left to :func:`check_references`.
    """
    host = [n for n in spec.network_attachments if drivers_by_name.get(n) == "host"]
    if not host:
        return []
    errors: list[FieldError] = []
    if len(spec.network_attachments) > 1:
        errors.append(
            {
                "field": "network_attachments",
                "message": f"host network {host[0]!r} cannot be combined with other networks",
            }
        )
    if spec.ports:
        errors.append(
            {
                "field": "ports",
                "message": f"ports are not published on host network {host[0]!r}: remove them",
            }
        )
    return errors


def check_subnet_overlap(
    subnet: str | None, existing: Mapping[str, str | None]
) -> FieldError | None:
    """The problem if ``subnet`` overlaps the subnet of a stored network, else None.

    Args:
        subnet: the new network's subnet (None: nothing to check).
        existing: stored networks' subnets by network name (None or unparsable: skipped).
    """
    if subnet is None:
        return None
    try:
        new = parse_subnet(subnet)
    except ValueError as exc:
        return {"field": "subnet", "message": str(exc)}
    for name in sorted(existing):
        other_text = existing[name]
        if other_text is None:
            continue
        try:
            other = ipaddress.ip_network(other_text, strict=False)
        except ValueError:
            continue
        if other.version == new.version and new.overlaps(other):
            return {"field": "subnet", "message": f"{new} overlaps network {name!r} ({other})"}
    return None
