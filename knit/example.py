"""The example of ``knit dev --example``: a busybox image made locally, and a deployment.

Layer: the top (used by ``knit.dev``). No public registry is needed: the image is built from
the host's static busybox (Debian's ``busybox-static``) as a ``docker save`` archive and
loaded into the engine through the Engine API.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

from knit.errors import KnitError

EXAMPLE_IMAGE = "knit-example/busybox:latest"

BUSYBOX_APPLETS = (
    "sh",
    "ls",
    "cat",
    "echo",
    "sleep",
    "httpd",
    "wget",
    "env",
    "mkdir",
    "rm",
    "ps",
    "true",
    "false",
    "test",
    "grep",
    "sed",
    "hostname",
    "id",
    "touch",
    "nc",
    "date",
    "head",
    "tail",
)

EXAMPLE_DEPLOYMENT: dict[str, Any] = {
    "name": "hello",
    "image": EXAMPLE_IMAGE,
    "command": ["httpd", "-f", "-p", "8000", "-h", "/www"],
    "env": {"GREETING": "Hello from Knit"},
    "replicas": 1,
    "ports": [{"container_port": 8000, "host_port": 18080, "host_ip": "127.0.0.1"}],
    "templates": [
        {
            "destination": "/www/index.html",
            "content": (
                "<h1>{{ env.GREETING }}</h1>\n"
                "<p>deployment {{ deployment.name }} ({{ deployment.id }}),"
                " instance {{ instance.index }} on node {{ node.hostname }}</p>\n"
            ),
        }
    ],
}


def find_busybox() -> Path:
    """The static busybox binary of this host.

    Raises:
        KnitError: busybox is not installed.
    """
    for candidate in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise KnitError("busybox not found: apt-get install busybox-static")


def busybox_rootfs_tar(busybox: Path) -> bytes:
    """A root filesystem layer: /bin/busybox, applet symlinks, /etc/passwd, /tmp."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "etc", "tmp", "www"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(passwd))
    return buf.getvalue()


def docker_save_archive(layer: bytes, tag: str) -> bytes:
    """Wrap one layer into a ``docker save`` archive tagged ``tag`` (for ``POST /images/load``)."""
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]
    ).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (
            (config_name, config),
            ("layer/layer.tar", layer),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def ensure_example_image(docker_host: str | None, tag: str = EXAMPLE_IMAGE) -> None:
    """Load the busybox example image into the engine unless it is already there.

    Raises:
        KnitError: busybox is missing or the engine refused the archive.
    """
    import aiodocker

    docker = aiodocker.Docker(url=docker_host)
    try:
        try:
            await docker.images.inspect(tag)
            return
        except aiodocker.DockerError:
            pass
        archive = docker_save_archive(busybox_rootfs_tar(find_busybox()), tag)
        try:
            await docker.images.import_image(archive)
        except aiodocker.DockerError as exc:
            raise KnitError(f"cannot load the example image: {exc}") from exc
    finally:
        await docker.close()
