"""Two uvicorn workers sharing Redis: duplicates, concurrent copies, a killed worker, a Redis outage."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import SECRET, load_fixture
from tests.e2e.servers import Server, server, signed_request
from tests.redis_server import RedisServer, find_redis_server

if TYPE_CHECKING:
    from collections.abc import Iterator

E2E = Path(__file__).parent
DEADLINE = 120.0  # seconds any one scenario may take, at most


@pytest.fixture(scope="module")
def durable_redis() -> Iterator[RedisServer]:
    """A Redis that keeps its data across a restart, like a production one."""
    redis_server = RedisServer(find_redis_server(), persistent=True)
    redis_server.start()
    try:
        yield redis_server
    finally:
        redis_server.close()


@pytest.fixture
def receiver(
    request: pytest.FixtureRequest, tmp_path: Path, durable_redis: RedisServer
) -> Iterator[tuple[Server, Path]]:
    """The receiver, two workers; ``@pytest.mark.lease(seconds)`` sets its lease (default 2 min).

    The lease must outlast the slowest handler under load: a worker whose lease expires
    while its handler still runs lets a retry run it again.
    """
    import redis

    marker = request.node.get_closest_marker("lease")
    lease = str(marker.args[0]) if marker else "120"
    durable_redis.ensure_running()
    redis.Redis(port=durable_redis.port, host="127.0.0.1").flushdb()
    (tmp_path / "running").mkdir()
    env = {
        "CARECYCLE_WEBHOOK_SECRET": SECRET,
        "REDIS_URL": durable_redis.url,
        "EVENTS_LOG": str(tmp_path / "events.log"),
        "RUNNING_DIR": str(tmp_path / "running"),
        "LEASE_SECONDS": lease,
    }
    with server("uvicorn", "concurrency_app:app", tmp=tmp_path, env=env, workers=2, app_dir=E2E) as running:
        yield running, tmp_path


def completed(tmp: Path) -> collections.Counter[str]:
    path = tmp / "events.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return collections.Counter(line.split()[0] for line in lines)


def worker_pids(tmp: Path) -> set[str]:
    return {line.split()[1] for line in (tmp / "events.log").read_text().splitlines()}


def explain(ids: list[str], running: Server, redis_server: RedisServer, tmp: Path) -> str:
    """What the receiver and Redis said, for a failure: about the ids that ran twice, and workers."""
    log = running.log.read_text(errors="replace").splitlines()
    said = [line for line in log if any(id_ in line for id_ in ids) or "process" in line.lower()]
    events = [line for line in (tmp / "events.log").read_text().splitlines() if line.split()[0] in ids]
    return "\n".join([f"ran more than once: {ids}", *events, *said[-60:], redis_server.log_tail()])


def body_for(number: int) -> bytes:
    event_type = ("customer.created", "customer.updated", "call.completed")[number % 3]
    payload = load_fixture(event_type)
    payload["externalId" if event_type != "call.completed" else "disposition"] = f"n{number}"
    return json.dumps(payload).encode()


# Requests in flight at once, at most. Thousands of requests queued inside httpx's pool
# cost the client quadratic time (httpcore scans the whole queue on every event).
IN_FLIGHT = 48


async def deliver_until_2xx(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    msg_id: str,
    log: list[tuple[float, float, int]],
    *,
    gate: asyncio.Semaphore,
) -> int:
    """Svix's behaviour: retry anything but a 2xx, each attempt signed anew; bounded.

    ``log`` gets each attempt's times (sent, answered) and status.
    """
    deadline = time.monotonic() + DEADLINE
    errors: collections.Counter[str] = collections.Counter()
    while time.monotonic() < deadline:
        sent = time.monotonic()
        try:
            async with gate:
                sent = time.monotonic()  # once the gate let it through
                response = await client.post(url, **signed_request(body, SECRET, msg_id))
            log.append((sent, time.monotonic(), response.status_code))
            if response.is_success:
                return response.status_code
        except httpx.TransportError as error:
            log.append((sent, time.monotonic(), 0))
            errors[repr(error)[:200]] += 1
        await asyncio.sleep(0.1)
    statuses = collections.Counter(code for *_, code in log)
    raise AssertionError(
        f"{msg_id} was never accepted: {statuses}; transport errors: {errors.most_common(3)}"
    )


def test_300_deliveries_sent_three_times_concurrently_run_once(receiver: tuple[Server, Path]) -> None:
    running, tmp = receiver
    url = f"{running.url}/webhooks"
    statuses: list[tuple[float, float, int]] = []

    async def scenario() -> None:
        gate = asyncio.Semaphore(IN_FLIGHT)
        # A new connection per request: each is accepted by whichever worker is free, so both
        # workers serve copies of the same deliveries.
        limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            jobs = [
                deliver_until_2xx(client, url, body_for(number), f"msg_conc_{number}", statuses, gate=gate)
                for number in range(300)
                for _copy in range(3)  # the three copies of one delivery are next to each other
            ]
            await asyncio.gather(*jobs)

    asyncio.run(scenario())
    counts = completed(tmp)
    assert len(counts) == 300
    assert set(counts.values()) == {1}, [key for key, value in counts.items() if value != 1]
    codes = collections.Counter(code for *_, code in statuses)
    assert not [code for code in codes if code >= 500 or code == 0], codes
    assert codes[200] == 900  # every copy was eventually answered 2xx: processed or duplicate
    assert len(worker_pids(tmp)) == 2, "both workers took deliveries"


@pytest.mark.lease(2)
def test_worker_killed_mid_handler_is_run_once_by_the_retry(receiver: tuple[Server, Path]) -> None:
    running, tmp = receiver
    url = f"{running.url}/webhooks"
    payload = load_fixture("customer.created") | {"externalId": "slow"}
    body = json.dumps(payload).encode()
    marker = tmp / "running" / "msg_killed"

    async def scenario() -> list[tuple[float, float, int]]:
        statuses: list[tuple[float, float, int]] = []
        async with httpx.AsyncClient(timeout=30) as client:
            first = asyncio.create_task(client.post(url, **signed_request(body, SECRET, "msg_killed")))
            deadline = time.monotonic() + 20
            while not marker.exists() and time.monotonic() < deadline:  # noqa: ASYNC110 - another process writes it
                await asyncio.sleep(0.05)
            assert marker.exists(), running.log_text()
            os.kill(int(marker.read_text()), signal.SIGKILL)  # the worker dies mid-handler
            with pytest.raises(httpx.TransportError):
                await first
            await deliver_until_2xx(client, url, body, "msg_killed", statuses, gate=asyncio.Semaphore(1))
        return statuses

    statuses = asyncio.run(scenario())
    assert completed(tmp) == {"msg_killed": 1}
    # Until the dead worker's lease expired, the retries were told "in flight".
    assert {code for *_, code in statuses} <= {0, 409, 200}
    assert statuses[-1][-1] == 200


# When Redis dies between storing a lease and answering, the lease outlives the outage
# unanswered: the delivery is "in flight" (409) until the lease expires. 10 s keeps that
# within the test's deadline (a real deployment waits for Svix's next retry).
@pytest.mark.lease(10)
def test_redis_outage_answers_non_2xx_and_loses_nothing(
    receiver: tuple[Server, Path], durable_redis: RedisServer
) -> None:
    running, tmp = receiver
    url = f"{running.url}/webhooks"
    statuses: list[tuple[float, float, int]] = []
    window: dict[str, float] = {}

    async def outage() -> None:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(durable_redis.stop)
        window["down"] = time.monotonic()
        await asyncio.sleep(3.0)
        window["up"] = time.monotonic()
        await asyncio.to_thread(durable_redis.start)

    async def scenario() -> None:
        gate = asyncio.Semaphore(IN_FLIGHT)
        async with httpx.AsyncClient(timeout=30) as client:

            async def sender(number: int) -> None:
                await asyncio.sleep(number * 0.02)  # spread over ~4 s, across the outage
                body = body_for(number)
                await deliver_until_2xx(client, url, body, f"msg_out_{number}", statuses, gate=gate)
                # Svix's at-least-once: the same message again, later: never run twice.
                await deliver_until_2xx(client, url, body, f"msg_out_{number}", statuses, gate=gate)

            await asyncio.gather(outage(), *(sender(number) for number in range(200)))

    asyncio.run(scenario())
    counts = completed(tmp)
    assert len(counts) == 200
    twice = [key for key, value in counts.items() if value != 1]
    assert not twice, explain(twice, running, durable_redis, tmp)
    # Sent and answered while Redis was down: none took a lease. (A delivery whose handlers
    # ran just before may be answered 200 within the outage: its done mark is retried within
    # the request; one sent just before Redis is back may take a lease once it is.)
    down, up = window["down"] + 0.5, window["up"]
    during = [code for sent, answered, code in statuses if down < sent and answered < up]
    assert during, "no delivery was answered while Redis was down"
    assert all(code >= 400 or code == 0 for code in during), collections.Counter(during)
    assert 503 in during
