"""Docker Engine helpers for tests: the CLI, a local busybox image, cleanup by label.

Test set-up uses the ``docker`` CLI (not Knit's runtime adapter) so that a bug in the adapter
cannot hide itself by also breaking the fixtures that check it.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import socket
import struct
import subprocess
import tarfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
BUSYBOX_IMAGE = "knit-test/busybox:latest"
_IMAGE_LOCK = Path("/tmp/knit-test-busybox.lock")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DockerCLIError(RuntimeError):
    """A ``docker`` command failed; the message holds its stderr."""


def docker_host_from_env() -> str:
    """Return ``$DOCKER_HOST`` or the default socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def docker(
    *args: str,
    docker_host: str,
    stdin: bytes | None = None,
    timeout: float = 60.0,
    config_dir: Path | None = None,
) -> str:
    """Run ``docker ARGS`` against ``docker_host``; return its stdout.

    Args:
        config_dir: a DOCKER_CONFIG folder (for ``docker login``), so the user's is untouched.

    Raises:
        DockerCLIError: the command failed, timed out, or no docker CLI is installed.
    """
    binary = shutil.which("docker")
    if binary is None:
        raise DockerCLIError("no docker CLI on PATH (scripts/setup.sh installs docker.io)")
    env = dict(os.environ, DOCKER_HOST=docker_host)
    if config_dir is not None:
        env["DOCKER_CONFIG"] = str(config_dir)
    try:
        done = subprocess.run(
            [binary, *args], input=stdin, capture_output=True, env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise DockerCLIError(f"docker {args[0]} timed out after {timeout:g} s") from exc
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        raise DockerCLIError(f"docker {_what(args)} failed ({done.returncode}): {err}")
    return done.stdout.decode(errors="replace")


def _what(args: tuple[str, ...]) -> str:
    """``docker image rm ...`` → "image rm": the command, without options or operands."""
    words = [a for a in args[:2] if not a.startswith("-")]
    return " ".join(words if words and words[0] in ("image", "network") else words[:1])


def engine_problem(docker_host: str) -> str | None:
    """Return None when a Docker Engine answers on ``docker_host``, else what is wrong."""
    try:
        docker("version", "--format", "{{.Server.Version}}", docker_host=docker_host, timeout=20)
    except DockerCLIError as exc:
        return str(exc)
    return None


def engine_answers(docker_host: str, timeout: float = 2.0) -> bool:
    """Whether the Engine answers ``GET /_ping`` on a ``unix://`` socket (about a
    millisecond; True for other kinds of host, which this does not check)."""
    if not docker_host.startswith("unix://"):
        return True
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(docker_host[len("unix://") :])
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status = sock.recv(64).split(b"\r\n", 1)[0]
    except OSError:
        return False
    return status.startswith(b"HTTP/1.") and b" 200" in status


def image_exists(image: str, docker_host: str) -> bool:
    """Return whether ``image`` is present on the Engine."""
    try:
        docker("image", "inspect", "--format", "{{.Id}}", image, docker_host=docker_host)
    except DockerCLIError:
        return False
    return True


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (serialises concurrent test runs: several pytest
    processes may build the image, or pick a LAN subnet, at once)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def find_static_busybox() -> str | None:
    """Return the path of a statically linked busybox (Debian's busybox-static), or None."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox")):
        if candidate and os.path.isfile(candidate) and _is_static_elf(Path(candidate)):
            return candidate
    return None


def _is_static_elf(path: Path) -> bool:
    """A 64-bit little-endian ELF without a PT_INTERP program header (no dynamic loader)."""
    data = path.read_bytes()
    if data[:6] != b"\x7fELF\x02\x01":
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    pt_interp = 3
    return all(
        struct.unpack_from("<I", data, phoff + i * phentsize)[0] != pt_interp for i in range(phnum)
    )


def busybox_rootfs_tar(busybox: str) -> bytes:
    """Build a root filesystem as a tar: busybox, a symlink per applet, /etc/passwd, /tmp."""
    applets = subprocess.run(
        [busybox, "--list-full"], capture_output=True, check=True, timeout=10
    ).stdout.decode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size, info.linkname = kind, mode, len(data), link
            tar.addfile(info, io.BytesIO(data) if data else None)

        for folder in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "proc"):
            add(folder, tarfile.DIRTYPE, 0o755)
        for folder in ("sys", "dev", "var", "run"):
            add(folder, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("bin/busybox", tarfile.REGTYPE, 0o755, Path(busybox).read_bytes())
        for applet in sorted(set(applets.split())):
            if applet != "bin/busybox" and "/" in applet:
                add(applet, tarfile.SYMTYPE, 0o777, link="/bin/busybox")
        add(
            "etc/passwd",
            tarfile.REGTYPE,
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnogroup:x:65534:\n")
    return buffer.getvalue()


def ensure_busybox_image(docker_host: str, image: str = BUSYBOX_IMAGE) -> str:
    """Make ``image`` with ``docker import`` of a busybox-static rootfs, unless it exists.

    Raises:
        DockerCLIError: the import failed.
        FileNotFoundError: no static busybox on this machine.
    """
    with file_lock(_IMAGE_LOCK):
        if image_exists(image, docker_host):
            return image
        busybox = find_static_busybox()
        if busybox is None:
            raise FileNotFoundError("no static busybox (apt-get install busybox-static)")
        docker(
            "import",
            "--change", 'CMD ["/bin/sh"]',
            "--change", f"ENV PATH={_PATH}",
            "-", image,
            docker_host=docker_host,
            stdin=busybox_rootfs_tar(busybox),
        )  # fmt: skip
    return image


def _label_filters(labels: Mapping[str, str]) -> list[str]:
    filters = []
    for key, value in labels.items():
        filters += ["--filter", f"label={key}={value}"]
    return filters


def remove_containers(labels: Mapping[str, str], docker_host: str) -> int:
    """Force-remove every container carrying all of ``labels``; return how many.

    Raises:
        ValueError: ``labels`` is empty (that would remove every container).
    """
    if not labels:
        raise ValueError("refusing to remove containers without a label filter")
    ids = docker("ps", "-aq", *_label_filters(labels), docker_host=docker_host).split()
    if ids:
        docker("rm", "-f", "-v", *ids, docker_host=docker_host)
    return len(ids)


def remove_networks(labels: Mapping[str, str], docker_host: str) -> int:
    """Remove every network carrying all of ``labels``; return how many.

    Raises:
        ValueError: ``labels`` is empty.
    """
    if not labels:
        raise ValueError("refusing to remove networks without a label filter")
    ids = docker("network", "ls", "-q", *_label_filters(labels), docker_host=docker_host).split()
    if ids:
        docker("network", "rm", *ids, docker_host=docker_host)
    return len(ids)
