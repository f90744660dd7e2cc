"""The quickstart's handler lines show while its server runs, as a new user starts it.

The quickstart's ``# app.py`` block, as copied, under ``flask run`` and gunicorn, with its
output going to a file (not a terminal: as under Docker, systemd or an IDE) and without
PYTHONUNBUFFERED: a handler's line must be there while the server still runs, not held in
a buffer until it exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from carecycle_webhooks.testing import customer_created, sign
from tests.conftest import SECRET
from tests.e2e.servers import BIN
from tests.redis_server import free_port
from tests.test_docs import ROOT, read_blocks

if TYPE_CHECKING:
    from pathlib import Path

START_TIMEOUT = 30.0  # seconds, for the server to answer
LINE_TIMEOUT = 10.0  # seconds, for the line to show once the delivery was answered


def quickstart_app() -> str:
    """The quickstart's ``# app.py`` block."""
    (block,) = [block for block in read_blocks(ROOT / "docs" / "quickstart.md") if block.file_name == "app"]
    return block.code


def commands(port: int) -> dict[str, list[str]]:
    return {
        "flask run": [str(BIN / "flask"), "--app", "app", "run", "--port", str(port)],
        "gunicorn": [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "app:app"],
    }


@pytest.mark.parametrize("server", ["flask run", "gunicorn"])
def test_the_handlers_line_shows_while_the_server_runs(server: str, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(quickstart_app(), encoding="utf-8")
    port = free_port()
    # As a user's shell has it: no PYTHONUNBUFFERED, no coverage of the server.
    env = {
        name: value
        for name, value in os.environ.items()
        if name != "PYTHONUNBUFFERED" and not name.startswith(("COV_CORE_", "COVERAGE_"))
    }
    env["CARECYCLE_WEBHOOK_SECRET"] = SECRET
    output = tmp_path / "server.log"
    with output.open("wb") as log:
        process = subprocess.Popen(
            commands(port)[server],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}/webhooks"
        customer_id = "0b9a4c1e-5f6d-4e7a-8b9c-0d1e2f3a4b5c"
        delivery = sign(customer_created(id=customer_id), secret=SECRET)
        deadline = time.monotonic() + START_TIMEOUT
        response = None
        while response is None:
            assert process.poll() is None, output.read_text(errors="replace")
            try:
                response = httpx.post(url, content=delivery.body, headers=dict(delivery.headers), timeout=5)
            except httpx.TransportError:
                assert time.monotonic() < deadline, output.read_text(errors="replace")
                time.sleep(0.1)
        assert response.json() == {"status": "processed"}
        expected = f"upsert customer {customer_id}: status Lead"
        deadline = time.monotonic() + LINE_TIMEOUT
        while expected not in output.read_text(errors="replace"):
            # The line is written before the answer: a short wait is for the file system only.
            assert time.monotonic() < deadline, output.read_text(errors="replace")
            time.sleep(0.1)
        assert process.poll() is None  # seen while the server runs, not flushed at its exit
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
