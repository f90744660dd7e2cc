"""Customer order under real servers: two workers race an old and a new update, 100 times.

gunicorn with 4 Flask workers on one SQLite file, and uvicorn with 2 FastAPI workers on
Redis, each with ``Dispatcher(skip_out_of_order=True)``. Each round sends an old and a new
``customer.updated`` of one customer (distinct webhook-ids, 1 ms apart) at the same time,
the new one first in every other round, each resent like Svix while it is answered 409
(bounded). The newest always ends applied; the old one is applied only before the new one,
and answered 200 "stale" when it comes second.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import SECRET, load_fixture
from tests.e2e.servers import server, signed_request
from tests.redis_server import RedisServer, find_redis_server

if TYPE_CHECKING:
    from collections.abc import Iterator

E2E = Path(__file__).parent
ROUNDS = 100
AT_ONCE = 10  # rounds in flight at once
DEADLINE = 20.0  # seconds one delivery may take to be accepted, resends included
OLD, NEW = "2026-06-18T14:22:09.119Z", "2026-06-18T14:22:09.120Z"
OLD_APPLIED, NEW_APPLIED = "2026-06-18T14:22:09.119000+00:00", "2026-06-18T14:22:09.120000+00:00"


@pytest.fixture
def redis_url() -> Iterator[str]:
    redis_server = RedisServer(find_redis_server())
    redis_server.start()
    try:
        yield redis_server.url
    finally:
        redis_server.close()


def update(customer: str, updated_at: str) -> bytes:
    return json.dumps(load_fixture("customer.updated") | {"id": customer, "updatedAt": updated_at}).encode()


async def deliver(client: httpx.AsyncClient, url: str, body: bytes, msg_id: str, answers: list[int]) -> str:
    """Svix's way: resend while the answer is 409, each attempt signed anew; bounded. The final status."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        response = await client.post(url, **signed_request(body, SECRET, msg_id))
        answers.append(response.status_code)
        if response.status_code != 409:
            assert response.status_code == 200, response.text
            status: str = response.json()["status"]
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"{msg_id} was answered 409 for {DEADLINE} s")


def race(url: str) -> tuple[dict[str, tuple[str, str]], list[int]]:
    """Every round's customer -> (the old update's final status, the new one's); every answer."""
    finals: dict[str, tuple[str, str]] = {}
    answers: list[int] = []

    async def one_round(client: httpx.AsyncClient, number: int, gate: asyncio.Semaphore) -> None:
        customer = str(uuid.UUID(int=number + 1))
        sends = {
            "old": deliver(client, url, update(customer, OLD), f"msg_old_{number}", answers),
            "new": deliver(client, url, update(customer, NEW), f"msg_new_{number}", answers),
        }
        # Every other round sends the new update first: both orders happen, whatever the
        # machine's scheduling favours (a CI run once saw the old one win all 100 rounds).
        names = ["old", "new"] if number % 2 else ["new", "old"]
        async with gate:
            results = dict(zip(names, await asyncio.gather(*(sends[name] for name in names)), strict=True))
        finals[customer] = (results["old"], results["new"])

    async def scenario() -> None:
        gate = asyncio.Semaphore(AT_ONCE)
        # A new connection per request, so that the two deliveries of a round reach any workers.
        limits = httpx.Limits(max_connections=2 * AT_ONCE, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            await asyncio.gather(*(one_round(client, number, gate) for number in range(ROUNDS)))

    asyncio.run(scenario())
    return finals, answers


@pytest.mark.parametrize(
    "setup",
    [("gunicorn", "order_app:flask_app", 4, "sqlite"), ("uvicorn", "order_app:app", 2, "redis")],
    ids=["flask-sqlite", "fastapi-redis"],
)
def test_racing_an_old_and_a_new_update_always_ends_with_the_new_one(
    tmp_path: Path, request: pytest.FixtureRequest, setup: tuple[str, str, int, str]
) -> None:
    kind, app, workers, store = setup
    applied = tmp_path / "applied"
    applied.mkdir()
    env = {"CARECYCLE_WEBHOOK_SECRET": SECRET, "APPLIED_DIR": str(applied)}
    if store == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    else:
        env["SQLITE_PATH"] = str(tmp_path / "idempotency.sqlite3")
    with server(kind, app, tmp=tmp_path, env=env, workers=workers, app_dir=E2E) as running:
        finals, answers = race(f"{running.url}/webhooks")
        log = running.log_text()
    assert len(finals) == ROUNDS
    history: dict[str, list[str]] = collections.defaultdict(list)
    for line in (applied / "log").read_text().splitlines():
        customer, stamp = line.split()
        history[customer].append(stamp)
    for customer, (old, new) in finals.items():
        assert (applied / customer).read_text() == NEW_APPLIED, (customer, history[customer], log)
        assert new == "processed"
        if old == "stale":  # it came second
            assert history[customer] == [NEW_APPLIED]
        else:  # it came first, and the new one after it
            assert old == "processed"
            assert history[customer] == [OLD_APPLIED, NEW_APPLIED]
    outcomes = collections.Counter(old for old, _ in finals.values())
    codes = collections.Counter(answers)
    assert set(codes) == {200, 409}, codes
    # Both orders happened, and deliveries overlapped (a round's second copy waited).
    assert outcomes["stale"] > 0, outcomes
    assert outcomes["processed"] > 0, outcomes
