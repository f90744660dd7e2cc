"""Real HTTP servers (gunicorn, uvicorn) started on a free loopback port for end-to-end tests."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from svix.webhooks import Webhook as SvixWebhook

from tests.redis_server import free_port

if TYPE_CHECKING:
    from typing_extensions import Self

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0


class Server:
    """One server process; ``url`` is its base address on 127.0.0.1."""

    def __init__(self, command: list[str], *, env: dict[str, str], port: int, log: Path) -> None:
        self.command = command
        self.env = env
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer within {START_TIMEOUT} s:\n{self.log_text()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server(
    kind: str, app: str, *, tmp: Path, env: dict[str, str], workers: int = 1, app_dir: Path = EXAMPLES
) -> Server:
    """A gunicorn (``kind="gunicorn"``) or uvicorn server for ``module:attribute`` in ``app_dir``."""
    port = free_port()
    # Not measured by coverage: pytest-cov would trace the servers' workers too, which
    # slows them down by an order of magnitude (the library's code is covered in-process).
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("COV_CORE_", "COVERAGE_"))}
    full_env = {**inherited, **env, "PYTHONUNBUFFERED": "1"}
    if kind == "gunicorn":
        command = [
            str(BIN / "gunicorn"), "--chdir", str(app_dir), "-b", f"127.0.0.1:{port}",
            "--workers", str(workers), "--graceful-timeout", "5", "--timeout", "60", app,
        ]  # fmt: skip
    else:
        command = [
            str(BIN / "uvicorn"), "--app-dir", str(app_dir), "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--no-access-log", "--timeout-graceful-shutdown", "5", app,
        ]  # fmt: skip
    return Server(command, env=full_env, port=port, log=tmp / f"{kind}-{port}.log")


def client(timeout: float = 10) -> httpx.Client:
    """An HTTP client that opens a new connection for each request.

    uvicorn with ``--workers N`` leaves Nagle's algorithm on for the connections it accepts
    (uvicorn issue 3149): on a kept-alive connection, each answer then waits ~40 ms for the
    client's delayed ACK. A new connection per request does not.
    """
    return httpx.Client(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0))


def signed_request(body: bytes, secret: str, msg_id: str, **extra: str) -> dict[str, Any]:
    """httpx keyword arguments for a POST of ``body`` signed by svix's own Webhook.sign."""
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": SvixWebhook(secret).sign(msg_id, now, body.decode()),
        "content-type": "application/json",
        **extra,
    }
    return {"content": body, "headers": headers}
