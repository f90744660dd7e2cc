"""A stalled Redis (SIGSTOP) behind two uvicorn workers: 503 within the store's deadline, then one run.

The receiver's client times out a socket read after 1 s and retries ten times, so that
without a deadline of its own the store would hold the request for about 14 s: Svix
gives up after 15 s, and counts the attempt as failed without a word. The store's
deadline (twice the socket timeout) answers 503 after about 2 s instead, and once Redis
answers again the retry is processed, once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import SECRET, fixture_bytes
from tests.e2e.servers import server, signed_request
from tests.redis_server import RedisServer, find_redis_server

if TYPE_CHECKING:
    from collections.abc import Iterator

E2E = Path(__file__).parent
DEADLINE = 2.0  # the store's: twice the client's socket timeout (1 s)
SLACK = 2.0  # the request's own way through uvicorn on a busy machine
CLIENT_TIMEOUT = 10.0  # this test never hangs, whatever the receiver does
SVIX_FIRST_RETRY = 5.0  # seconds from a failed attempt to Svix's first retry


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server_ = RedisServer(find_redis_server())
    server_.start()
    try:
        yield server_
    finally:
        server_.close()  # resumes it first


@pytest.mark.parametrize("client_kind", ["async", "sync"])
def test_stalled_redis_is_answered_503_in_time_then_the_retry_runs_once(
    client_kind: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    events = tmp_path / "events.log"
    env = {
        "CARECYCLE_WEBHOOK_SECRET": SECRET,
        "REDIS_URL": redis_server.url,
        "REDIS_CLIENT": client_kind,
        "EVENTS_LOG": str(events),
    }
    body = fixture_bytes("customer.created")
    receiver = server("uvicorn", "stalled_store_app:app", tmp=tmp_path, env=env, workers=2, app_dir=E2E)
    with receiver as running, httpx.Client(base_url=running.url, timeout=CLIENT_TIMEOUT) as http:
        for number in range(4):  # both workers hold a pooled connection, as in production
            warm = http.post("/webhooks", **signed_request(body, SECRET, f"msg_warm_{number}"))
            assert warm.status_code == 200, running.log_text()

        with redis_server.paused():
            start = time.monotonic()
            stalled = http.post("/webhooks", **signed_request(body, SECRET, "msg_stalled"))
            took = time.monotonic() - start
        assert stalled.status_code == 503, running.log_text()
        assert json.loads(stalled.content) == {"error": "idempotency_store_unavailable"}
        assert took < DEADLINE + SLACK, f"answered after {took:.1f} s"

        # Svix retries. Redis now runs what it was sent meanwhile: the lease the stalled
        # call took is freed by the store, so the retry is not refused for a whole lease.
        resumed = time.monotonic()
        while True:
            retried = http.post("/webhooks", **signed_request(body, SECRET, "msg_stalled"))
            if retried.status_code != 409 or time.monotonic() - resumed > SVIX_FIRST_RETRY:
                break
            time.sleep(0.1)
        assert (retried.status_code, json.loads(retried.content)) == (200, {"status": "processed"}), (
            running.log_text()
        )
        again = http.post("/webhooks", **signed_request(body, SECRET, "msg_stalled"))
        assert json.loads(again.content) == {"status": "duplicate"}

    runs = [line.split()[0] for line in events.read_text().splitlines()]
    assert runs.count("msg_stalled") == 1
    log = running.log_text()
    assert "TimeoutError: Redis did not answer within 2 s" in log
    for noise in ("never retrieved", "Exception in callback", "Task was destroyed"):
        assert noise not in log
