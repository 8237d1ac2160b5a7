"""Which registry an image reference names, as Docker reads it, and whether credentials fit.

Layer: domain. Pure: the standard library only.

Registry credentials are only ever sent to their own registry: a deployment whose image
comes from another registry than its credentials' URL is refused (422), and the agent checks
again before it logs in or pulls. "Which registry" follows Docker's own defaulting (the
``splitDockerDomain`` rule of ``distribution/reference``): the part before the first ``/`` is
a registry host only if it holds a ``.`` or a ``:``, is ``localhost``, or has an upper-case
letter; otherwise the image is on Docker Hub (``busybox``, ``library/busybox``,
``myorg/app:1``). Hosts compare without regard to case and Docker Hub's aliases
(``index.docker.io``, ``registry-1.docker.io``) are one; ports must be the same
(``localhost:5000`` is not ``localhost:5001``, nor ``localhost``), and so must the host's
spelling (``127.0.0.1:5000`` is not ``localhost:5000``).
"""

from __future__ import annotations

DOCKER_HUB = "docker.io"
"""The registry of an image whose reference names none."""

_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


def image_registry(image: str) -> str:
    """The registry ``host[:port]`` Docker pulls ``image`` from, as written (not normalised).

    >>> image_registry("busybox"), image_registry("localhost:5000/app:1")
    ('docker.io', 'localhost:5000')
    """
    first, slash, _ = image.partition("/")
    if not slash:
        return DOCKER_HUB
    if "." in first or ":" in first or first == "localhost" or first != first.lower():
        return first
    return DOCKER_HUB


def canonical_registry(server: str) -> str:
    """A registry ``host[:port]`` in the form two spellings of one registry share: lower case,
    Docker Hub's aliases as ``docker.io``."""
    host = server.strip().lower()
    return DOCKER_HUB if host in _HUB_ALIASES else host


def registry_mismatch(image: str, credentials_server: str) -> str | None:
    """Why credentials for ``credentials_server`` must not be used to pull ``image``, or None
    if the image comes from that registry.

    Args:
        image: the image reference.
        credentials_server: the credentials' registry ``host[:port]``
            (``knit.domain.specs.registry_server`` of their URL).
    """
    wanted = canonical_registry(image_registry(image))
    given = canonical_registry(credentials_server)
    if wanted == given:
        return None
    return (
        f"image {image!r} comes from registry {wanted!r}, but the credentials are for "
        f"{given!r}: credentials are only sent to their own registry"
    )


__all__ = ["DOCKER_HUB", "canonical_registry", "image_registry", "registry_mismatch"]
