"""Exactly-once effects through real servers and a real PostgreSQL, with faults injected.

Two uvicorn workers (FastAPI, AsyncPostgresIdempotencyStore) and two gunicorn workers
(Flask, PostgresIdempotencyStore) receive deliveries whose handlers insert one effect row
each through the delivery's connection. Some handlers fail on their first attempt, some
workers are SIGKILLed mid-handler (after the insert, before the commit), and PostgreSQL
itself is killed (kill -9) and restarted in the middle of the first round. The sender
behaves like Svix: every delivery not answered 2xx is sent again, for a bounded number of
rounds. At the end every webhook-id has exactly one effect row and one done mark.
"""

# ruff: noqa: S608 - the test's own table names, never input

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import httpx
import pytest

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("psycopg_pool")

from carecycle_webhooks.postgres import PostgresIdempotencyStore  # noqa: E402
from tests.conftest import SECRET, fixture_bytes  # noqa: E402
from tests.e2e.servers import client, server, signed_request  # noqa: E402
from tests.postgres_server import PostgresServer, find_postgres_bindir  # noqa: E402

E2E = Path(__file__).parent
TABLE = "e2e_deliveries"
ROUNDS = 10


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
            conn.execute(f"CREATE TABLE {TABLE}_effects (webhook_id text NOT NULL, pid int NOT NULL)")


def send(client: httpx.Client, url: str, msg_id: str) -> int:
    body = fixture_bytes("customer.created")
    try:
        return client.post(f"{url}/webhooks", **signed_request(body, SECRET, msg_id)).status_code
    except httpx.HTTPError:
        return 0  # a worker killed mid-request, a timeout: Svix retries


@pytest.mark.parametrize(("kind", "framework"), [("uvicorn", "fastapi"), ("gunicorn", "flask")])
def test_every_webhook_id_has_one_effect_and_one_done_mark(
    database: PostgresServer, tmp_path: Path, kind: str, framework: str
) -> None:
    prepare(database)
    state = tmp_path / "state"
    state.mkdir()
    ids = [f"msg_{index:03d}" for index in range(60)]
    ids += [f"msg_{index:03d}-fail" for index in range(60, 72)]
    ids += [f"msg_{index:03d}-kill" for index in range(72, 78)]
    env = {
        "POSTGRES_DSN": database.dsn,
        "STORE_TABLE": TABLE,
        "STATE_DIR": str(state),
        "CARECYCLE_WEBHOOK_SECRET": SECRET,
        "E2E_FRAMEWORK": framework,
    }
    started = time.monotonic()
    answers: dict[str, list[int]] = {msg_id: [] for msg_id in ids}
    with (
        server(kind, "postgres_app:app", tmp=tmp_path, env=env, workers=2, app_dir=E2E) as running,
        client() as http,
        concurrent.futures.ThreadPoolExecutor(8) as pool,
    ):
        pending = list(ids)
        for round_number in range(ROUNDS):
            crasher = None
            if round_number == 0:
                # PostgreSQL killed and restarted while the first round is under way.
                def crash_then_restart() -> None:
                    time.sleep(0.5)
                    database.restart(crash=True)

                crasher = threading.Thread(target=crash_then_restart)
                crasher.start()
            # Every copy twice at once in the first round: concurrent duplicates.
            copies = pending * 2 if round_number == 0 else pending
            results = list(pool.map(lambda msg_id: (msg_id, send(http, running.url, msg_id)), copies))
            if crasher is not None:
                crasher.join(30)
            for msg_id, status in results:
                answers[msg_id].append(status)
            pending = sorted(
                {msg_id for msg_id, status in results if msg_id in pending}
                - {msg_id for msg_id, status in results if 200 <= status < 300}
            )
            if not pending:
                break
            time.sleep(0.5)  # Svix waits between attempts
        log = running.log_text()
    assert pending == [], f"never answered 2xx: {pending[:5]}...\n{log}"
    assert time.monotonic() - started < 90

    with psycopg.connect(database.dsn) as conn:
        effects = conn.execute(
            f"SELECT webhook_id, count(*) FROM {TABLE}_effects GROUP BY webhook_id ORDER BY webhook_id"
        ).fetchall()
        marks = [row[0] for row in conn.execute(f"SELECT webhook_id FROM {TABLE} ORDER BY webhook_id")]
    assert effects == [(msg_id, 1) for msg_id in sorted(ids)]
    assert marks == sorted(ids)
    # The faults did happen: every -fail and -kill id was answered non-2xx at least once.
    for msg_id in ids:
        if msg_id.endswith(("-fail", "-kill")):
            assert any(not 200 <= status < 300 for status in answers[msg_id]), msg_id
    for statuses in answers.values():
        assert set(statuses) <= {0, 200, 409, 500, 502, 503}, statuses
