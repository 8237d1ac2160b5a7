"""Turning problems into the API's error list, and the rules that need stored state.

Layer: domain. Pure: imports pydantic, ``knit.errors``, ``knit.domain.specs``,
``knit.domain.images`` and ``knit.domain.templates``. The store's knowledge (which
credentials and networks exist, which subnets are taken) and the server's settings come in
as arguments, so these run inside the API's request handling or the writer's transaction
alike.
:func:`check_template_syntax` is the one that costs real work (parsing and compiling up to
16 templates of 64 KiB): the server runs it in a thread.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from knit.domain.images import registry_mismatch
from knit.domain.specs import DeploymentSpec, FieldError, parse_subnet, registry_server
from knit.domain.templates import TemplateSyntaxProblem, check_syntax
from knit.errors import Invalid

M = TypeVar("M", bound=BaseModel)


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


def validate_model(model: type[M], data: dict[str, Any]) -> M:
    """``data`` (a decoded JSON or YAML object) as ``model``: what the API does with a body,
    and the dashboard with a form, so both answer the same errors.

    Raises:
        Invalid: ``data`` breaks the model's rules (:func:`errors_from_pydantic`).
        RecursionError: ``data`` is nested too deeply to validate.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Invalid(errors_from_pydantic(exc)) from exc


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


def check_replicas(spec: DeploymentSpec, max_replicas: int) -> list[FieldError]:
    """The problem if ``spec`` asks for more replicas than the server allows
    (``knit server --max-replicas``)."""
    if spec.replicas <= max_replicas:
        return []
    return [
        {
            "field": "replicas",
            "message": f"must be at most {max_replicas} (this server's --max-replicas)",
        }
    ]


def check_registry(spec: DeploymentSpec, urls_by_id: Mapping[str, str]) -> list[FieldError]:
    """The problem if ``spec``'s image comes from another registry than its credentials'.

    Registry credentials are only ever sent to their own registry (``knit.domain.images``).
    Unknown credentials are left to :func:`check_references`.

    Args:
        spec: a validated deployment.
        urls_by_id: the stored RegistryCredentials' URLs, by id.
    """
    rid = spec.registry_credentials_id
    url = urls_by_id.get(rid) if rid is not None else None
    if url is None:
        return []
    try:
        server = registry_server(url)
    except ValueError:
        return []
    problem = registry_mismatch(spec.image, server)
    return [] if problem is None else [{"field": "image", "message": problem}]


def check_template_syntax(spec: DeploymentSpec) -> list[FieldError]:
    """One problem per template of ``spec`` that does not parse or compile.

    Costs up to ~0.7 s of CPU and ~100 MB per 64 KiB template (measured on the worst ones
    found, see docs/decisions/0013): call it outside an event loop.
    """
    errors: list[FieldError] = []
    for index, template in enumerate(spec.templates):
        try:
            check_syntax(template.content)
        except TemplateSyntaxProblem as exc:
            errors.append(
                {"field": f"templates.{index}.content", "message": f"template syntax error: {exc}"}
            )
    return errors
