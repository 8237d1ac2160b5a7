"""A real private registry for tests: Debian's ``docker-registry`` (distribution v2) as a host
process on 127.0.0.1, with htpasswd (bcrypt) auth and storage in a temporary folder.

The Docker Engine treats registries on 127.0.0.0/8 as insecure, so plain HTTP works without
any daemon configuration.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from knit.runtime.base import RegistryAuth
from tests.support.docker import DockerCLIError, docker
from tests.support.process import free_port, spawn, stop_process, wait_until


def find_registry_binary() -> str | None:
    """Return the registry binary (``docker-registry`` on Debian), or None."""
    return shutil.which("docker-registry") or shutil.which("registry")


@dataclass(frozen=True)
class Registry:
    """A running test registry.

    Attributes:
        url: ``127.0.0.1:PORT``, the registry host as image references spell it.
        username, password: the only valid credentials (the password is not in ``repr``).
        image: a busybox image pushed to it, ``127.0.0.1:PORT/knit/busybox:1``.
    """

    url: str
    username: str
    password: str = field(repr=False)
    image: str = ""

    @property
    def auth(self) -> RegistryAuth:
        """The valid credentials, as Knit's runtime takes them."""
        return RegistryAuth(server=self.url, username=self.username, password=self.password)


class RegistryServer:
    """Start and stop one registry process; its config, htpasswd and data live in ``workdir``."""

    def __init__(self, binary: str, workdir: Path, username: str = "knit-test") -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.username = username
        self.password = secrets.token_urlsafe(16)
        self.log = workdir / "registry.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        """Write htpasswd and config, start the registry, wait until /v2/ answers 401."""
        htpasswd = shutil.which("htpasswd")
        if htpasswd is None:
            raise FileNotFoundError("no htpasswd (apt-get install apache2-utils)")
        hashed = subprocess.run(
            [htpasswd, "-Bbn", self.username, self.password],
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
        (self.workdir / "htpasswd").write_bytes(hashed)
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.workdir / "data")},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.url, "secret": secrets.token_hex(16)},
            "auth": {"htpasswd": {"realm": "knit-test", "path": str(self.workdir / "htpasswd")}},
        }
        config_path = self.workdir / "config.yml"
        config_path.write_text(yaml.safe_dump(config))
        self._process = spawn([self.binary, "serve", str(config_path)], self.log)
        wait_until(
            self._asks_for_credentials,
            timeout=timeout,
            what="docker-registry",
            process=self._process,
            log=self.log,
        )

    def stop(self) -> None:
        """Stop the registry by PID and wait for it to exit."""
        if self._process is not None:
            stop_process(self._process)
            self._process = None

    def _asks_for_credentials(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.url}/v2/", timeout=1):
                return False  # 200: auth is off, which is not what we configured
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code == 401
        except OSError:
            return False


def push_image(
    local_image: str, target: str, registry: Registry, docker_host: str, config_dir: Path
) -> None:
    """Push ``local_image`` to ``target`` in ``registry``.

    Afterwards the Engine has neither the credentials nor the ``target`` tag, so a later pull
    really goes to the registry. ``config_dir`` holds the login (the user's is untouched).
    """
    config_dir.mkdir(parents=True, exist_ok=True)
    docker(
        "login", "--username", registry.username, "--password-stdin", registry.url,
        docker_host=docker_host, stdin=registry.password.encode(), config_dir=config_dir,
    )  # fmt: skip
    try:
        docker("tag", local_image, target, docker_host=docker_host)
        docker("push", target, docker_host=docker_host, config_dir=config_dir, timeout=120)
    finally:
        docker("logout", registry.url, docker_host=docker_host, config_dir=config_dir)
        untag(target, docker_host)


def untag(image: str, docker_host: str) -> None:
    """Remove the tag ``image`` from the Engine if present (the image stays if tagged else)."""
    try:
        docker("image", "rm", image, docker_host=docker_host)
    except DockerCLIError as exc:  # absent is fine
        if "No such image" not in str(exc):
            raise


def remove_registry_tags(registry_url: str, docker_host: str) -> None:
    """Untag every local image whose reference starts with ``registry_url/``."""
    refs = docker(
        "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", docker_host=docker_host
    ).split()
    for ref in refs:
        if ref.startswith(registry_url + "/"):
            untag(ref, docker_host)
