"""Child processes of the test run: free ports, readiness waits, stopping by PID."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from knit.natsd import free_port

__all__ = ["free_port", "spawn", "stop_process", "tail", "wait_until"]


def spawn(command: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``command`` (in ``cwd``, if given) with stdout and stderr appended to ``log``.

    The child gets SIGTERM if the test run dies (``setpriv --pdeathsig``, where available),
    so a pytest killed by a timeout leaves no server holding a port.
    """
    if shutil.which("setpriv"):
        command = ["setpriv", "--pdeathsig", "TERM", "--", *command]
    with log.open("ab") as out:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd
        )


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``ready`` until it returns True.

    Raises:
        RuntimeError: ``process`` exited, or ``timeout`` seconds passed (with ``log``'s tail).
    """
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout:g} s{tail(log)}")
        time.sleep(0.02)


def tail(log: Path | None, lines: int = 15) -> str:
    """Return the last ``lines`` of ``log`` prefixed with a newline, or "" without a log."""
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n--- " + str(log) + "\n" + "\n".join(text)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop a child by PID: SIGTERM, then SIGKILL after ``timeout`` seconds; reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
