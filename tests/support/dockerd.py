"""A ``dockerd`` of a test's own, inside a network namespace, its files under one folder.

Layer: test support. Imports the standard library, psutil and ``tests.support`` (the docker
CLI, namespaces, waits).

Its data root, exec root, pidfile, socket and log live in a short folder under /tmp (a unix
socket path must stay under 108 bytes); an empty ``--config-file`` keeps the machine's
/etc/docker/daemon.json out of it. It runs under ``docker-init -s`` (tini, shipped with
docker.io) as a child subreaper: PID 1 on these machines does not reap orphans, and every
container's shim becomes one when it exits. SIGTERM goes to tini, which passes it on to dockerd
alone (signalling dockerd's process group would hit its containerd too).

It starts its own containerd (under the exec root) unless /run/containerd/containerd.sock
exists: dockerd 20.10 then uses that system containerd instead.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import psutil

from tests.support.docker import DockerCLIError, docker
from tests.support.netns import nsenter, with_pdeathsig
from tests.support.waiting import wait_until


def init_binary() -> str | None:
    """tini, as docker.io ships it (``docker-init``) or as Debian's ``tini``; None if absent."""
    return shutil.which("docker-init") or shutil.which("tini")


class Dockerd:
    """One ``dockerd`` in the network namespace ``netns``, restartable.

    Args:
        netns: the network namespace it runs in (it must exist when it starts).
        root: its folder (created on start); keep the path short.
        flags: more dockerd flags (``--bip``, ``--iptables=false``...).
    """

    def __init__(self, netns: str, root: Path, *, flags: Sequence[str] = ()) -> None:
        self.netns = netns
        self.root = root
        self.flags = list(flags)
        self.socket = root / "docker.sock"
        self.log = root / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def docker_host(self) -> str:
        """``unix:///tmp/.../docker.sock``."""
        return f"unix://{self.socket}"

    @property
    def running(self) -> bool:
        """Whether its process (tini, and dockerd below it) is alive."""
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        """The command line: setpriv, nsenter, tini, dockerd and its flags."""
        init = init_binary()
        if init is None:
            raise FileNotFoundError("no docker-init or tini (apt-get install docker.io tini)")
        config = self.root / "daemon.json"
        dockerd = [
            "dockerd",
            "--host", self.docker_host,
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "docker.pid"),
            "--config-file", str(config),
            "--log-level", "warn",
            *self.flags,
        ]  # fmt: skip
        return with_pdeathsig(nsenter(self.netns, [init, "-s", "--", *dockerd]))

    def spawn(self) -> None:
        """Start dockerd without waiting for it (``wait_ready`` waits).

        Call it from the thread that will outlive it (the main thread): the parent-death
        signal may follow the thread that started the process.
        """
        if self.running:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "daemon.json").write_text("{}\n")
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the Engine answers ``docker version``.

        Raises:
            AssertionError: dockerd exited, or did not answer within ``timeout`` seconds.
        """
        process = self.process
        assert process is not None, "dockerd was not started"

        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"dockerd exited ({process.returncode}): {self.tail()}")
            docker("version", "--format", "{{.Server.Version}}", docker_host=self.docker_host)
            return True

        wait_until(answers, timeout=timeout, what=f"dockerd in {self.netns}", interval=0.1)

    def start(self, timeout: float = 60.0) -> None:
        """Start dockerd and wait until it answers."""
        self.spawn()
        self.wait_ready(timeout)

    def remove_containers(self) -> int:
        """Force-remove every container (and its anonymous volumes); return how many.

        Raises:
            DockerCLIError: the Engine did not answer.
        """
        ids = docker("ps", "-aq", docker_host=self.docker_host, timeout=20).split()
        if ids:
            docker("rm", "-f", "-v", *ids, docker_host=self.docker_host, timeout=60)
        return len(ids)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM dockerd (it stops its containers, then containerd) and wait; SIGKILL the
        whole tree below tini if it has not exited after ``timeout`` seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(process.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.kill()
        process.kill()
        process.wait(10)

    def close(self) -> None:
        """Remove every container if the Engine answers, then stop dockerd."""
        if self.running:
            with contextlib.suppress(DockerCLIError):
                self.remove_containers()
        self.stop()

    def tail(self, lines: int = 20) -> str:
        """The end of dockerd's log."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
