"""Requests per second through Flask's ``webhook_view`` with each idempotency store, against
the bare svix verify + json.loads endpoint, in one thread (one worker), in process.

Usage (from the repository root)::

    PYTHONPATH=src:. python benchmarks/bench_stores.py [--seconds 3] [--rounds 2] [--dsn DSN]

Without ``--dsn`` a PostgreSQL server is started for the run (tests/postgres_server.py: a
throwaway cluster on a free loopback port). Each delivery is a new, signed ``webhook-id``,
so every one takes the store's full path. The endpoints are timed in A B C C B A order per
round; the figure is each endpoint's best run. Werkzeug's test client stands in for the
HTTP server: the same for every endpoint, so the ratios are the stores' own costs.

Round trips to PostgreSQL per delivery: two (acquire: BEGIN, READ COMMITTED, the advisory
lock, the done-row read and the idle timeout in one pipeline; complete: the done row's
insert and COMMIT in another), plus one every ``prune_every`` (100) deliveries for pruning.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import time

from flask import Flask, Response, request
from svix.webhooks import Webhook
from tests.conftest import fixture_bytes, svix_headers

from carecycle_webhooks import CustomerCreatedEvent, Dispatcher, InMemoryIdempotencyStore
from carecycle_webhooks.flask import webhook_view
from carecycle_webhooks.testing import generate_secret

SECRET = generate_secret()
BODY = fixture_bytes("customer.created")


def build_app(dsn: str) -> tuple[Flask, list[str]]:
    from psycopg_pool import ConnectionPool

    from carecycle_webhooks.postgres import PostgresIdempotencyStore, current_connection

    app = Flask(__name__)
    peer = Webhook(SECRET)

    def bare() -> Response:
        body = request.get_data()
        peer.verify(body, request.headers)  # type: ignore[arg-type]
        json.loads(body)
        return Response(b'{"status":"processed"}', content_type="application/json")

    app.add_url_rule("/bare", view_func=bare, methods=["POST"])

    memory = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())
    memory.on("customer.created")(lambda _event: None)
    app.add_url_rule("/memory", view_func=webhook_view(memory), endpoint="memory", methods=["POST"])

    pool = ConnectionPool(dsn, min_size=1, max_size=2, open=True)
    store = PostgresIdempotencyStore(pool, table="bench_deliveries")
    store.create_table()
    with pool.connection() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_effects (id text, external_id text)")
    postgres = Dispatcher(SECRET, idempotency_store=store, done_ttl=datetime.timedelta(seconds=1))
    postgres.on("customer.created")(lambda _event: None)
    app.add_url_rule("/postgres", view_func=webhook_view(postgres), endpoint="postgres", methods=["POST"])

    # The same store, with a handler writing one row through the delivery's transaction.
    writing = Dispatcher(SECRET, idempotency_store=store, done_ttl=datetime.timedelta(seconds=1))

    @writing.on("customer.created")
    def write(event: CustomerCreatedEvent) -> None:
        current_connection().execute(
            "INSERT INTO bench_effects VALUES (%s, %s)", (event.id, event.external_id)
        )

    app.add_url_rule("/postgres-write", view_func=webhook_view(writing), endpoint="write", methods=["POST"])
    return app, ["/bare", "/memory", "/postgres", "/postgres-write"]


ids = itertools.count()


def run(client: object, path: str, seconds: float) -> float:
    """Deliveries per second on ``path``, each with a new id; signing is not timed (the sender's work)."""
    post = client.post  # type: ignore[attr-defined]
    done, spent = 0, 0.0
    while spent < seconds:
        signed = [svix_headers(BODY, secret=SECRET, msg_id=f"msg_{next(ids)}") for _ in range(200)]
        started = time.perf_counter()
        for headers in signed:
            response = post(path, data=BODY, headers=headers)
            assert response.status_code == 200, response.data
        spent += time.perf_counter() - started
        done += len(signed)
    return done / spent


def round_trips(dsn: str, seconds: float) -> float:
    """The reference: two bare round trips (``SELECT 1``, twice) per second on one connection."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            conn.execute("SELECT 1")
            conn.execute("SELECT 1")
            done += 1
        return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dsn", help="an existing PostgreSQL (default: start one for the run)")
    options = parser.parse_args()
    server = None
    dsn = options.dsn
    if dsn is None:
        from tests.postgres_server import PostgresServer, find_postgres_bindir

        server = PostgresServer(find_postgres_bindir())
        server.start()
        dsn = server.dsn
    try:
        app, paths = build_app(dsn)
        client = app.test_client()
        best = dict.fromkeys(paths, 0.0)
        for _ in range(options.rounds):
            for path in [*paths, *reversed(paths)]:
                best[path] = max(best[path], run(client, path, options.seconds))
        for path in paths:
            print(f"{path:16} {best[path]:8.0f} req/s  {best[path] / best['/bare']:.2f} of bare")
        print(
            f"{'2 round trips':16} {round_trips(dsn, options.seconds):8.0f} /s  (SELECT 1 twice, the floor)"
        )
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
