"""What every server of the native local stack has in common.

A service knows how to install itself into the cache (once: later runs are no-ops), write
its configuration, start, tell whether it is healthy, finish first-time set-up, and which
settings clients need to reach it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from clustertwin.stack.process import ManagedProcess
from clustertwin_base.settings import cache_dir, stack_run_root

Progress = Callable[[str], None]

FILES = Path(__file__).parent / "files"


class StackError(RuntimeError):
    """The stack cannot be brought up; the message says what is missing or what failed."""


def require_tool(command: str, debian_package: str, progress: Progress) -> str:
    """Path of ``command``, installing its Debian package first when we may.

    A fresh machine of this project's kind has Java, Maven and Go but not, say, Mosquitto;
    installing here keeps "the project's own files install what it needs" true.
    """
    found = shutil.which(command) or (
        f"/usr/sbin/{command}" if Path(f"/usr/sbin/{command}").exists() else None
    )
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise StackError(
            f"`{command}` is missing: install the Debian package `{debian_package}` "
            "(or put the tool on PATH) and run `clustertwin stack up` again."
        )
    progress(f"installing Debian package {debian_package} (for `{command}`)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", debian_package],
    ):
        result = subprocess.run(argv, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(
                f"`{' '.join(argv)}` failed while installing `{command}`:\n{result.stderr[-2000:]}"
            )
    found = shutil.which(command) or (
        f"/usr/sbin/{command}" if Path(f"/usr/sbin/{command}").exists() else None
    )
    if not found:
        raise StackError(f"Debian package {debian_package} installed but `{command}` not found")
    return found


def run_logged(
    argv: Sequence[str],
    log_file: Path,
    progress: Progress,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    heartbeat: float = 20.0,
) -> None:
    """Run a slow install step, logging its output and saying every ``heartbeat`` s it is alive.

    First-time builds take minutes; a silent terminal looks hung, a wall of compiler
    output hides the one line that matters. So: output to a log, a pulse on screen, and the
    log's tail in the error if it fails.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    done = threading.Event()

    def pulse() -> None:
        while not done.wait(heartbeat):
            progress(f"  ... still {what} ({time.monotonic() - started:.0f} s, log: {log_file})")

    ticker = threading.Thread(target=pulse, daemon=True)
    ticker.start()
    try:
        with open(log_file, "ab") as log:
            result = subprocess.run(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
    finally:
        done.set()
    if result.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
        raise StackError(f"{what} failed (exit {result.returncode}); end of {log_file}:\n{tail}")
    progress(f"  {what}: done in {time.monotonic() - started:.0f} s")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Service(ABC):
    """One server of the local stack."""

    name: str = ""
    host = "127.0.0.1"

    def __init__(self, port: int, root: Path | None = None) -> None:
        self.port = port
        self.cache = root or cache_dir()
        self.run_dir = stack_run_root(self.cache) / self.name
        self.process = ManagedProcess(self.name, self.run_dir)

    @abstractmethod
    def install(self, progress: Progress) -> None:
        """Make the server's binaries available in the cache; a no-op when they are."""

    @abstractmethod
    def command(self) -> list[str]:
        """Write configuration and return the command line that starts the server."""

    @abstractmethod
    def healthy(self) -> bool:
        """Whether the server answers its protocol (not merely that the port is open)."""

    def first_start(self, progress: Progress) -> None:  # noqa: B027 - optional hook
        """One-time set-up that needs the server up (users, databases); idempotent."""

    def settings(self) -> dict[str, str]:
        """``CLUSTERTWIN_*`` settings that clients need to reach this server."""
        return {}

    def installed(self) -> bool:
        return True

    startup_timeout = 90.0

    def start(self, progress: Progress) -> bool:
        """Start if not running and wait until healthy. True if it had to be started."""
        if self.process.running():
            if self.wait_healthy(self.startup_timeout):
                return False
            raise StackError(
                f"{self.name} is running but not healthy; see `clustertwin stack logs {self.name}`"
            )
        if port_open(self.host, self.port):
            raise StackError(
                f"port {self.host}:{self.port} is taken by a process that is not this stack's "
                f"{self.name}; stop it or choose another port"
            )
        argv = self.command()
        progress(f"starting {self.name} on {self.host}:{self.port}")
        self.process.start(argv, env=self.environment(), cwd=self.run_dir)
        if not self.wait_healthy(self.startup_timeout):
            tail = self.process.tail(40)
            self.process.stop(timeout=5)
            raise StackError(
                f"{self.name} did not become healthy in {self.startup_timeout:.0f} s:\n{tail}"
            )
        return True

    def environment(self) -> dict[str, str]:
        return {}

    def wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                return False
            if self.healthy():
                return True
            time.sleep(0.25)
        return False

    def stop(self) -> bool:
        return self.process.stop()
