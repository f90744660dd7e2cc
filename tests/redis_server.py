"""A real ``redis-server`` for the tests, on a free loopback port, with no persistence.

`RedisServer` starts the binary with its own temporary directory, waits until it answers
``PING``, and stops it. It can be stopped and started again on the same port, so that a
test can take Redis away in the middle of a run and bring it back; or paused (SIGSTOP)
and resumed (SIGCONT): a stalled Redis, whose port still accepts connections (the kernel
does) but which answers nothing.

The binary is required in CI: a missing ``redis-server`` fails the tests there (a skip
would hide them); elsewhere it skips them with the install hint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["INSTALL_HINT", "RedisServer", "find_redis_server"]

INSTALL_HINT = (
    "redis-server is not on PATH: install it (apt-get install redis-server, brew install redis, ...) "
    "to run the Redis idempotency tests"
)

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_PING = b"*1\r\n$4\r\nPING\r\n"


def find_redis_server() -> str:
    """The path of ``redis-server``; fails the test run in CI when missing, skips elsewhere."""
    path = shutil.which("redis-server")
    if path is not None:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{INSTALL_HINT} (required in CI: these tests are never skipped there)", pytrace=False)
    pytest.skip(INSTALL_HINT)


def free_port() -> int:
    """A TCP port nobody listens on right now, on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def ping(port: int, *, timeout: float = 0.5) -> bool:
    """Whether a Redis server on ``HOST:port`` answers ``PING`` with ``PONG``."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(_PING)
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``, started and stopped on demand.

    Args:
        binary: The ``redis-server`` executable.
        port: The port to listen on; a free one by default. It stays the same across
            `stop` and `start`.
        persistent: Keep the data across `stop` and `start` (an append-only file, synced
            every second and on shutdown), as a production Redis does.
    """

    def __init__(self, binary: str, *, port: int | None = None, persistent: bool = False) -> None:
        self.binary = binary
        self.persistent = persistent
        self.host = HOST
        self.port = free_port() if port is None else port
        self._tmp = tempfile.TemporaryDirectory(prefix="carecycle-redis-")
        self.directory = Path(self._tmp.name)
        self.log_path = self.directory / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"RedisServer({self.host}:{self.port}, running={self.running})"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:port/0``."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether our process is alive (not whether it answers)."""
        return self._process is not None and self._process.poll() is None

    def _command(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--protected-mode",
            "yes",
            "--save",
            "",
            "--appendonly",
            "yes" if self.persistent else "no",
            "--appendfsync",
            "everysec",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def start(self, *, timeout: float = START_TIMEOUT) -> None:
        """Start the server and wait (at most ``timeout`` seconds) until it answers PING.

        The port may still be held for a moment after a `stop` (or taken by someone
        else): a server that exits at once is started again until the deadline.

        Raises:
            RuntimeError: It did not answer in time.
        """
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        deadline = time.monotonic() + timeout
        while True:
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    self._command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.directory,
                )
            while time.monotonic() < deadline and self.running:
                # Our process must be alive *and* answering: not some other server.
                if ping(self.port) and self.running:
                    return
                time.sleep(0.02)
            if self.running:
                self.stop()
                raise RuntimeError(
                    f"redis-server on {self.host}:{self.port} did not answer PING within {timeout} s:\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                self._process = None
                raise RuntimeError(
                    f"redis-server on {self.host}:{self.port} exited at start:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds); no-op if stopped."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused server would not handle SIGTERM
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self._process is None:
            raise RuntimeError(f"{self!r} is not running")
        return self._process.pid

    def pause(self) -> None:
        """Stall the server (SIGSTOP): connections are still accepted, nothing is answered."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT); it then answers what it was sent meanwhile."""
        if self.running:
            os.kill(self.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """`pause` for the block, and `resume` after it, whatever happens in it."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def restart(self) -> None:
        """`stop`, then `start` on the same port (the data survives only when ``persistent``)."""
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Start the server if a test left it stopped."""
        if not self.running:
            self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        self._tmp.cleanup()
