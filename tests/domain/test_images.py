"""Which registry an image names, as Docker reads it, and whether credentials fit it."""

from __future__ import annotations

import pytest

from knit.domain.images import canonical_registry, image_registry, registry_mismatch

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("busybox", "docker.io"),
        ("busybox:1.36", "docker.io"),
        ("busybox@sha256:" + "a" * 64, "docker.io"),
        ("library/busybox", "docker.io"),
        ("myorg/app:1", "docker.io"),
        ("myorg/team/app:1", "docker.io"),
        ("docker.io/library/busybox", "docker.io"),
        ("index.docker.io/library/busybox", "index.docker.io"),
        ("localhost/app", "localhost"),
        ("localhost:5000/app", "localhost:5000"),
        ("127.0.0.1:5000/knit/busybox:1", "127.0.0.1:5000"),
        ("registry.example.com/app", "registry.example.com"),
        ("registry.example.com:443/team/app:2", "registry.example.com:443"),
        ("[::1]:5000/app", "[::1]:5000"),
        ("Registry/app", "Registry"),  # an upper-case first part is a host for Docker
        ("myhost:app/x", "myhost:app"),
    ],
)
def test_image_registry_follows_dockers_defaulting(image: str, registry: str) -> None:
    assert image_registry(image) == registry


@pytest.mark.parametrize(
    ("server", "canonical"),
    [
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("DOCKER.IO", "docker.io"),
        ("Registry.Example.com:5000", "registry.example.com:5000"),
        ("localhost:5000", "localhost:5000"),
    ],
)
def test_canonical_registry(server: str, canonical: str) -> None:
    assert canonical_registry(server) == canonical


@pytest.mark.parametrize(
    ("image", "server", "fits"),
    [
        ("127.0.0.1:5000/knit/busybox:1", "127.0.0.1:5000", True),
        ("localhost:5000/app", "localhost:5000", True),
        ("registry.example.com/app", "REGISTRY.example.com", True),
        ("busybox", "index.docker.io", True),
        ("myorg/app", "docker.io", True),
        ("docker.io/myorg/app", "registry-1.docker.io", True),
        ("127.0.0.1:5001/knit/busybox:1", "127.0.0.1:5000", False),  # another port
        ("127.0.0.1/knit/busybox:1", "127.0.0.1:5000", False),  # no port is not port 5000
        ("localhost:5000/app", "127.0.0.1:5000", False),  # another spelling of the host
        ("busybox", "localhost:5000", False),  # Docker Hub, not the private registry
        ("evil.example.com/app", "registry.example.com", False),
        ("registry.example.com.evil.com/app", "registry.example.com", False),
        ("localhost:5000/app", "docker.io", False),
    ],
)
def test_registry_mismatch(image: str, server: str, fits: bool) -> None:
    problem = registry_mismatch(image, server)
    assert (problem is None) is fits
    if problem is not None:
        assert "only sent to their own registry" in problem
