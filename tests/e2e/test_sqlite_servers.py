"""Several workers on one SQLite file: gunicorn (4 Flask workers) and uvicorn (2 FastAPI workers).

300 distinct deliveries, each sent 3 times at once: every handler runs exactly once, and
every answer is 200 (processed or duplicate) or 409 (a copy in flight elsewhere; Svix
retries it). Then the server restarts on the same file, and 50 of them are sent again: all
are answered as duplicates, and no handler runs.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import SECRET, load_fixture
from tests.e2e.servers import server, signed_request

if TYPE_CHECKING:
    from tests.e2e.servers import Server

E2E = Path(__file__).parent
DEADLINE = 60.0  # seconds one delivery may take to be accepted, retries included
IN_FLIGHT = 24  # requests in flight at once


def body_for(number: int) -> bytes:
    event_type = ("customer.created", "customer.updated", "call.completed")[number % 3]
    payload = load_fixture(event_type)
    payload["externalId" if event_type != "call.completed" else "disposition"] = f"n{number}"
    return json.dumps(payload).encode()


def ran(tmp: Path) -> collections.Counter[str]:
    path = tmp / "events.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return collections.Counter(line.split()[0] for line in lines)


async def deliver_until_2xx(
    client: httpx.AsyncClient, url: str, number: int, answers: list[tuple[int, str]], gate: asyncio.Semaphore
) -> None:
    """Svix's way: retry anything but a 2xx, each attempt signed anew; bounded."""
    msg_id = f"msg_sqlite_{number}"
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        async with gate:
            response = await client.post(url, **signed_request(body_for(number), SECRET, msg_id))
        answers.append((response.status_code, response.json().get("status", "")))
        if response.is_success:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{msg_id} was never accepted: {collections.Counter(code for code, _ in answers)}")


def send(running: Server, numbers: range, copies: int) -> list[tuple[int, str]]:
    answers: list[tuple[int, str]] = []

    async def scenario() -> None:
        gate = asyncio.Semaphore(IN_FLIGHT)
        # A new connection per request, so that every worker takes some of each delivery's copies.
        limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            await asyncio.gather(
                *(
                    deliver_until_2xx(client, f"{running.url}/webhooks", number, answers, gate)
                    for number in numbers
                    for _copy in range(copies)  # the copies of one delivery are next to each other
                )
            )

    asyncio.run(scenario())
    return answers


@pytest.mark.parametrize(
    ("kind", "app", "workers"), [("gunicorn", "sqlite_app:flask_app", 4), ("uvicorn", "sqlite_app:app", 2)]
)
def test_deliveries_sent_three_times_run_once_and_restarts_remember_them(
    tmp_path: Path, kind: str, app: str, workers: int
) -> None:
    env = {
        "CARECYCLE_WEBHOOK_SECRET": SECRET,
        "SQLITE_PATH": str(tmp_path / "idempotency.sqlite3"),
        "EVENTS_LOG": str(tmp_path / "events.log"),
    }
    with server(kind, app, tmp=tmp_path, env=env, workers=workers, app_dir=E2E) as running:
        answers = send(running, range(300), copies=3)
        log = running.log_text()
    counts = ran(tmp_path)
    assert len(counts) == 300
    assert set(counts.values()) == {1}, [key for key, value in counts.items() if value != 1]
    codes = collections.Counter(code for code, _ in answers)
    assert set(codes) <= {200, 409}, (codes, log)
    assert codes[200] == 900  # every copy was answered 200 in the end: processed or duplicate
    assert collections.Counter(status for code, status in answers if code == 200) == {
        "processed": 300,
        "duplicate": 600,
    }
    pids = {line.split()[1] for line in (tmp_path / "events.log").read_text().splitlines()}
    assert len(pids) > 1, "several workers ran handlers"

    # A restart on the same file: every delivery is remembered.
    with server(kind, app, tmp=tmp_path, env=env, workers=workers, app_dir=E2E) as restarted:
        again = send(restarted, range(0, 300, 6), copies=1)
    assert again == [(200, "duplicate")] * 50
    assert ran(tmp_path) == counts  # no handler ran again


@pytest.mark.parametrize(
    ("kind", "app", "workers"),
    [
        ("gunicorn", "memory_app:flask_app", 2),
        ("uvicorn", "memory_app:app", 2),
        ("gunicorn", "memory_app:flask_app", 1),
    ],
)
def test_the_in_memory_store_warns_under_several_workers(
    tmp_path: Path, kind: str, app: str, workers: int
) -> None:
    env = {"CARECYCLE_WEBHOOK_SECRET": SECRET}
    with server(kind, app, tmp=tmp_path, env=env, workers=workers, app_dir=E2E) as running:
        # Each worker logs it once it has loaded the app (one has: it answered /health).
        deadline = time.monotonic() + (10 if workers > 1 else 0)
        while time.monotonic() < deadline and running.log_text().count("serves with several") < workers:
            time.sleep(0.1)
        log = running.log_text()
    warned = log.count("InMemoryIdempotencyStore in a process that serves with several workers")
    if workers == 1:
        assert warned == 0, log
    else:
        assert warned == workers, log
        assert f"{kind} with {workers} workers" in log
        assert "SQLiteIdempotencyStore" in log
