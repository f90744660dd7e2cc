"""Customer order under real servers and a real PostgreSQL: the newest update always wins.

Two uvicorn workers (FastAPI, AsyncPostgresIdempotencyStore) and two gunicorn workers
(Flask, PostgresIdempotencyStore) with ``Dispatcher(skip_out_of_order=True)``. Each round
sends two updates of one new customer at once, an old and a new one (distinct webhook-ids),
each sent again like Svix while it is answered 409. The handler writes the updatedAt it
applies (last writer wins) in the delivery's transaction. After every round the
customer's state is the newest update, the log of what was applied ends with it, and the
old update, when it came second, was answered 200 "stale" without running.
"""

# ruff: noqa: S608 - the test's own table names, never input

from __future__ import annotations

import concurrent.futures
import datetime
import json
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("psycopg_pool")

from carecycle_webhooks.postgres import PostgresIdempotencyStore  # noqa: E402
from tests.conftest import SECRET, fixture_bytes  # noqa: E402
from tests.e2e.servers import client, server, signed_request  # noqa: E402
from tests.postgres_server import PostgresServer, find_postgres_bindir  # noqa: E402

if TYPE_CHECKING:
    import httpx

E2E = Path(__file__).parent
TABLE = "e2e_order"
ROUNDS = 100
RESENDS = 200  # at most this many sends of one delivery while it is answered 409
OLD = datetime.datetime(2026, 6, 18, 14, 22, 9, 120000, tzinfo=datetime.timezone.utc)
NEW = OLD + datetime.timedelta(milliseconds=1)
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def micros(moment: datetime.datetime) -> int:
    return (moment - EPOCH) // datetime.timedelta(microseconds=1)


@pytest.fixture
def database():
    pg = PostgresServer(find_postgres_bindir())
    pg.start()
    try:
        yield pg
    finally:
        pg.close()


def prepare(pg: PostgresServer) -> None:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(pg.dsn, min_size=1, max_size=1, open=True) as pool:
        PostgresIdempotencyStore(pool, table=TABLE).create_table()
        with pool.connection() as conn:
            conn.execute(
                f"CREATE TABLE {TABLE}_applied (id bigserial PRIMARY KEY, customer text NOT NULL, "
                "updated_at_us bigint NOT NULL, webhook_id text NOT NULL)"
            )
            conn.execute(
                f"CREATE TABLE {TABLE}_state (customer text PRIMARY KEY, updated_at_us bigint NOT NULL)"
            )


def update(customer: str, updated_at: datetime.datetime) -> bytes:
    payload = json.loads(fixture_bytes("customer.updated"))
    payload["id"] = customer
    payload["updatedAt"] = updated_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps(payload).encode()


def deliver(
    client: httpx.Client, url: str, body: bytes, msg_id: str, start: threading.Barrier
) -> tuple[int, str]:
    """Send until the answer is not 409, as Svix retries (bounded): the last status and outcome."""
    start.wait(10)
    for _ in range(RESENDS):
        response = client.post(f"{url}/webhooks", **signed_request(body, SECRET, msg_id))
        if response.status_code != 409:
            answer = response.json()
            return response.status_code, answer.get("status") or answer.get("error")
        time.sleep(0.01)
    return 409, "in_flight"


@pytest.mark.parametrize(("kind", "framework"), [("uvicorn", "fastapi"), ("gunicorn", "flask")])
def test_the_newest_update_of_a_customer_always_wins(
    database: PostgresServer, tmp_path: Path, kind: str, framework: str
) -> None:
    prepare(database)
    env = {
        "POSTGRES_DSN": database.dsn,
        "STORE_TABLE": TABLE,
        "CARECYCLE_WEBHOOK_SECRET": SECRET,
        "E2E_FRAMEWORK": framework,
    }
    rounds: list[tuple[str, tuple[int, str], tuple[int, str]]] = []
    with (
        server(kind, "postgres_order_app:app", tmp=tmp_path, env=env, workers=2, app_dir=E2E) as running,
        client() as http,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        started = time.monotonic()
        for index in range(ROUNDS):
            customer = str(uuid.uuid4())
            start = threading.Barrier(2)
            sends = [
                pool.submit(
                    deliver, http, running.url, update(customer, moment), f"msg_{index}_{name}", start
                )
                for moment, name in ((OLD, "old"), (NEW, "new"))
            ]
            old, new = (send.result(30) for send in sends)
            rounds.append((customer, old, new))
        elapsed = time.monotonic() - started
        log = running.log_text()
    assert elapsed < 40, f"{ROUNDS} rounds took {elapsed:.1f} s"

    with psycopg.connect(database.dsn) as conn:
        state = dict(conn.execute(f"SELECT customer, updated_at_us FROM {TABLE}_state").fetchall())
        applied: dict[str, list[str]] = {}
        for customer, webhook_id in conn.execute(
            f"SELECT customer, webhook_id FROM {TABLE}_applied ORDER BY id"
        ):
            applied.setdefault(customer, []).append(webhook_id.rsplit("_", 1)[-1])
    stale_rounds = 0
    for customer, old, new in rounds:
        assert new == (200, "processed"), log
        assert state[customer] == micros(NEW), (customer, old, applied.get(customer))
        if old == (200, "stale"):  # the old update came second: it ran nothing
            stale_rounds += 1
            assert applied[customer] == ["new"]
        else:  # it came first, and the new one ran after it
            assert old == (200, "processed"), log
            assert applied[customer] == ["old", "new"]
    # Both orders happened: the race is real, not one side always first.
    assert 0 < stale_rounds < ROUNDS, stale_rounds
