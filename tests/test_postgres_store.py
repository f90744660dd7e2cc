"""The PostgreSQL stores against a real server (tests/postgres_server.py): semantics, the
dispatcher, concurrency, failed commits, a stalled server, pruning, the table's creation.

Each test has its own table in the session server's ``postgres`` database; the handlers
write one "effect" row per delivery through `current_connection`, in the delivery's
transaction, and the tests count those rows and the done marks.
"""

# ruff: noqa: S608 - the tests build SQL with their own table names, never with input

from __future__ import annotations

import asyncio
import contextvars
import datetime
import json
import logging
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

psycopg = pytest.importorskip("psycopg")
psycopg_pool = pytest.importorskip("psycopg_pool")

from carecycle_webhooks import (  # noqa: E402
    CommitFailed,
    Dispatcher,
    WebhookConfigurationError,
    _postgres,
)
from carecycle_webhooks._idempotency import serves  # noqa: E402
from carecycle_webhooks.postgres import (  # noqa: E402
    AsyncPostgresIdempotencyStore,
    PostgresIdempotencyStore,
    current_async_connection,
    current_connection,
)
from tests.conftest import SECRET, fixture_bytes, svix_headers  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from carecycle_webhooks import CustomerCreatedEvent, WebhookResponse
    from tests.postgres_server import PostgresServer

LEASE = datetime.timedelta(minutes=2)
TTL = datetime.timedelta(hours=1)
SHORT = datetime.timedelta(seconds=1)
# Words of the fixture's payload: never in a log line, an error or a response.
PHI = ("Marcus", "Delacroix", "+13128471928", "marcus.delacroix@example.com", "1958-04-12")


def delivery(msg_id: str) -> tuple[bytes, dict[str, str]]:
    body = fixture_bytes("customer.created")
    return body, svix_headers(body, msg_id=msg_id)


def body_of(response: WebhookResponse) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(response.body)
    return result


@pytest.fixture
def pool(postgres_dsn):
    with psycopg_pool.ConnectionPool(
        postgres_dsn, min_size=1, max_size=8, open=True, kwargs={"connect_timeout": 2}, timeout=5
    ) as opened:
        yield opened


@pytest.fixture
def store(pool, postgres_table):
    made = PostgresIdempotencyStore(pool, table=postgres_table, timeout=SHORT)
    made.create_table()
    with pool.connection() as conn:
        conn.execute(f"CREATE TABLE {postgres_table}_effects (webhook_id text, name text)")
    return made


def rows(pool, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with pool.connection() as conn:
        return conn.execute(sql, args).fetchall()


def effects(pool, table: str) -> list[str]:
    return [row[0] for row in rows(pool, f"SELECT webhook_id FROM {table}_effects ORDER BY webhook_id")]


def done_marks(pool, table: str) -> list[str]:
    return [row[0] for row in rows(pool, f"SELECT webhook_id FROM {table} ORDER BY webhook_id")]


class Receiver:
    """A dispatcher whose customer.created handler writes one effect row, and may fail."""

    def __init__(self, store: PostgresIdempotencyStore, table: str) -> None:
        self.dispatcher = Dispatcher(SECRET, idempotency_store=store)
        self.runs = 0
        self.fail_next = 0
        self.after_write: Any = None

        @self.dispatcher.on("customer.created")
        def write(event: CustomerCreatedEvent) -> None:
            self.runs += 1
            conn = current_connection()
            conn.execute(
                f"INSERT INTO {table}_effects VALUES (%s, %s)",
                (event.id, event.first_name),
            )
            if self.after_write is not None:
                self.after_write()
            if self.fail_next:
                self.fail_next -= 1
                raise RuntimeError("handler failed")

    def send(self, msg_id: str) -> WebhookResponse:
        return self.dispatcher.handle(*delivery(msg_id))


# --------------------------------------------------------------------------- the store itself


def test_acquire_then_in_flight_then_done(store, pool, postgres_table) -> None:
    claim = store.acquire("msg_1", lease=LEASE)
    assert claim.status == "acquired"
    seen: list[str] = []
    other = threading.Thread(target=lambda: seen.append(store.acquire("msg_1", lease=LEASE).status))
    other.start()
    other.join(5)
    assert seen == ["in_flight"]
    store.complete("msg_1", claim.token, ttl=TTL)
    assert store.acquire("msg_1", lease=LEASE).status == "done"
    assert done_marks(pool, postgres_table) == ["msg_1"]


def test_release_frees_the_id_and_drops_the_handlers_writes(store, pool, postgres_table) -> None:
    claim = store.acquire("msg_1", lease=LEASE)
    conn = current_connection()
    assert conn.pgconn.pipeline_status == 0  # handlers run in the ordinary mode, not our pipeline
    with conn.transaction():  # a savepoint, nested in the delivery's transaction
        conn.execute(f"INSERT INTO {postgres_table}_effects VALUES ('msg_1', 'y')")
    current_connection().execute(f"INSERT INTO {postgres_table}_effects VALUES ('msg_1', 'x')")
    store.release("msg_1", claim.token)
    assert effects(pool, postgres_table) == []
    again = store.acquire("msg_1", lease=LEASE)
    assert again.status == "acquired"
    store.release("msg_1", again.token)
    assert done_marks(pool, postgres_table) == []


def test_an_expired_done_mark_is_acquired_again(store, pool, postgres_table) -> None:
    claim = store.acquire("msg_1", lease=LEASE)
    store.complete("msg_1", claim.token, ttl=datetime.timedelta(milliseconds=1))
    time.sleep(0.01)  # the mark's expiry, by the server's clock
    again = store.acquire("msg_1", lease=LEASE)
    assert again.status == "acquired"
    store.complete("msg_1", again.token, ttl=TTL)
    assert store.acquire("msg_1", lease=LEASE).status == "done"
    assert done_marks(pool, postgres_table) == ["msg_1"]


def test_concurrent_acquires_have_exactly_one_winner_and_nobody_waits(store) -> None:
    threads = 16
    barrier = threading.Barrier(threads)
    results: list[tuple[str, float]] = []
    lock = threading.Lock()
    winners: list[str] = []

    def attempt() -> None:
        barrier.wait(5)
        started = time.monotonic()
        claim = store.acquire("msg_same", lease=LEASE)
        with lock:
            results.append((claim.status, time.monotonic() - started))
            if claim.status == "acquired":
                winners.append(claim.token)

    workers = [threading.Thread(target=attempt) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    statuses = sorted(status for status, _ in results)
    assert statuses == ["acquired"] + ["in_flight"] * (threads - 1)
    assert max(seconds for _, seconds in results) < 2.0  # answered at once, not after the winner
    store.release("msg_same", winners[0])


def test_current_connection_outside_a_delivery_is_a_clear_error() -> None:
    with pytest.raises(LookupError, match="only available inside a webhook handler"):
        current_connection()
    with pytest.raises(LookupError, match="only available inside a webhook handler"):
        current_async_connection()


def test_a_sync_store_serves_only_handle(store) -> None:
    assert serves(store, synchronous=True)
    assert not serves(store, synchronous=False)


@pytest.mark.parametrize(
    "table", ["1table", "a-b", "x; DROP TABLE users", "a.b.c", "", "t" * 49, 'a"b', None]
)
def test_the_table_name_is_validated(pool, table) -> None:
    with pytest.raises(WebhookConfigurationError, match="table must be an identifier"):
        PostgresIdempotencyStore(pool, table=table)


def test_create_table_is_idempotent_also_concurrently(pool, postgres_table) -> None:
    made = PostgresIdempotencyStore(pool, table=postgres_table)
    errors: list[BaseException] = []

    def create() -> None:
        try:
            made.create_table()
        except BaseException as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    workers = [threading.Thread(target=create) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    made.create_table()
    assert errors == []
    assert rows(pool, "SELECT count(*) FROM pg_indexes WHERE tablename = %s", postgres_table) == [(2,)]


def test_a_schema_qualified_table(pool, postgres_table) -> None:
    schema = f"{postgres_table}_s"
    with pool.connection() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    made = PostgresIdempotencyStore(pool, table=f"{schema}.deliveries")
    made.create_table()
    claim = made.acquire("msg_1", lease=LEASE)
    made.complete("msg_1", claim.token, ttl=TTL)
    assert rows(pool, f"SELECT webhook_id FROM {schema}.deliveries") == [("msg_1",)]
    with pool.connection() as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_the_wrong_kind_of_pool_is_refused(postgres_dsn, pool) -> None:
    with pytest.raises(WebhookConfigurationError, match="use PostgresIdempotencyStore"):
        AsyncPostgresIdempotencyStore(pool)
    async_pool = psycopg_pool.AsyncConnectionPool(postgres_dsn, open=False)
    with pytest.raises(WebhookConfigurationError, match="use AsyncPostgresIdempotencyStore"):
        PostgresIdempotencyStore(async_pool)
    with pytest.raises(WebhookConfigurationError, match="timeout must be a positive"):
        PostgresIdempotencyStore(pool, timeout=datetime.timedelta(0))


def test_the_sql_file_ships_with_the_package_and_names_its_placeholders() -> None:
    from importlib import resources

    text = resources.files("carecycle_webhooks").joinpath("postgres.sql").read_text()
    assert "CREATE TABLE IF NOT EXISTS {table}" in text
    assert "CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at)" in text


def test_a_missing_extra_names_the_pip_install() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "try:\n    import carecycle_webhooks.postgres\n"
        "except ImportError as error:\n    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'carecycle-webhooks[postgres]'" in out


# --------------------------------------------------------------------------- pruning


def test_prune_deletes_expired_done_marks_only(store, pool, postgres_table) -> None:
    for index in range(5):
        claim = store.acquire(f"old_{index}", lease=LEASE)
        store.complete(f"old_{index}", claim.token, ttl=datetime.timedelta(milliseconds=1))
    claim = store.acquire("fresh", lease=LEASE)
    store.complete("fresh", claim.token, ttl=TTL)
    time.sleep(0.01)
    assert store.prune(batch=3) == 3
    assert store.prune() == 2
    assert done_marks(pool, postgres_table) == ["fresh"]


def test_completes_prune_as_they_go(pool, postgres_table) -> None:
    made = PostgresIdempotencyStore(pool, table=postgres_table, prune_every=4, prune_batch=10)
    made.create_table()
    for index in range(8):
        claim = made.acquire(f"msg_{index}", lease=LEASE)
        made.complete(f"msg_{index}", claim.token, ttl=datetime.timedelta(milliseconds=1))
    # The 8th complete pruned what had expired by then: at most its own row is left.
    assert len(done_marks(pool, postgres_table)) <= 1


# --------------------------------------------------------------------------- the dispatcher, sync pool


def test_one_effect_and_one_done_mark_then_duplicates_run_nothing(store, pool, postgres_table) -> None:
    receiver = Receiver(store, postgres_table)
    assert receiver.send("msg_1").status_code == 200
    assert body_of(receiver.send("msg_1"))["status"] == "duplicate"
    assert receiver.runs == 1
    assert effects(pool, postgres_table) == ["b1f7c0e2-3a4d-4e5f-8a9b-0c1d2e3f4a5b"]
    assert done_marks(pool, postgres_table) == ["msg_1"]


def test_a_failing_handler_rolls_its_writes_back_and_the_retry_runs_once(store, pool, postgres_table) -> None:
    receiver = Receiver(store, postgres_table)
    receiver.fail_next = 1
    assert receiver.send("msg_1").status_code == 500
    assert effects(pool, postgres_table) == []
    assert done_marks(pool, postgres_table) == []
    assert receiver.send("msg_1").status_code == 200
    assert receiver.send("msg_1").status_code == 200
    assert receiver.runs == 2
    assert len(effects(pool, postgres_table)) == 1


def test_a_concurrent_copy_is_answered_409_at_once(store, pool, postgres_table) -> None:
    receiver = Receiver(store, postgres_table)
    answers: list[tuple[int, float]] = []

    def during() -> None:
        started = time.monotonic()
        other = threading.Thread(target=lambda: answers.append((receiver.send("msg_1").status_code, 0.0)))
        other.start()
        other.join(5)
        answers.append((0, time.monotonic() - started))

    receiver.after_write = during
    assert receiver.send("msg_1").status_code == 200
    assert answers[0][0] == 409
    assert answers[1][1] < 2.0
    assert receiver.runs == 1


def test_a_commit_that_fails_answers_503_and_the_retry_runs_once(store, pool, postgres_table, caplog) -> None:
    # A deferred unique constraint: the handler's second row violates it only at COMMIT.
    with pool.connection() as conn:
        conn.execute(
            f"ALTER TABLE {postgres_table}_effects ADD CONSTRAINT {postgres_table}_once "
            "UNIQUE (name) DEFERRABLE INITIALLY DEFERRED"
        )
    receiver = Receiver(store, postgres_table)
    conflicting = [True]

    def write_twice() -> None:
        if conflicting[0]:
            current_connection().execute(f"INSERT INTO {postgres_table}_effects VALUES ('again', 'Marcus')")

    receiver.after_write = write_twice
    caplog.set_level(logging.DEBUG)
    response = receiver.send("msg_1")
    assert response.status_code == 503
    assert body_of(response)["error"] == "not_committed"
    assert effects(pool, postgres_table) == []
    assert done_marks(pool, postgres_table) == []
    assert "UniqueViolation" in caplog.text
    assert "SQLSTATE 23505" in caplog.text
    for word in PHI:
        assert word not in caplog.text
        assert word not in response.body.decode()
    conflicting[0] = False
    assert receiver.send("msg_1").status_code == 200
    assert receiver.send("msg_1").status_code == 200
    assert receiver.runs == 2
    assert len(effects(pool, postgres_table)) == 1


def test_commit_failed_carries_no_database_detail(store, pool, postgres_table) -> None:
    with pool.connection() as conn:
        conn.execute(
            f"ALTER TABLE {postgres_table}_effects ADD CONSTRAINT {postgres_table}_once "
            "UNIQUE (name) DEFERRABLE INITIALLY DEFERRED"
        )
    claim = store.acquire("msg_1", lease=LEASE)
    for _ in range(2):
        current_connection().execute(f"INSERT INTO {postgres_table}_effects VALUES ('x', 'Marcus')")
    with pytest.raises(CommitFailed) as raised:
        store.complete("msg_1", claim.token, ttl=TTL)
    assert "Marcus" not in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


def test_the_server_killed_between_handler_and_commit_answers_503_then_the_retry_runs_once(
    store, pool, postgres_table, postgres_server: PostgresServer
) -> None:
    receiver = Receiver(store, postgres_table)
    receiver.after_write = postgres_server.crash
    response = receiver.send("msg_1")
    assert response.status_code == 503
    assert body_of(response)["error"] == "not_committed"
    postgres_server.start()
    receiver.after_write = None
    # The pool's other connections died with the server: the store takes fresh ones.
    assert receiver.send("msg_1").status_code == 200
    assert receiver.send("msg_1").status_code == 200
    assert receiver.runs == 2
    assert len(effects(pool, postgres_table)) == 1
    assert done_marks(pool, postgres_table) == ["msg_1"]


def test_a_stalled_server_is_answered_503_within_the_deadline_then_the_retry_runs(
    store, pool, postgres_table, postgres_server: PostgresServer
) -> None:
    receiver = Receiver(store, postgres_table)
    assert receiver.send("msg_0").status_code == 200  # a pooled connection is open
    with postgres_server.paused():
        started = time.monotonic()
        response = receiver.send("msg_1")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert elapsed < 2 * SHORT.total_seconds() + 1.0
    assert receiver.send("msg_1").status_code == 200
    assert receiver.runs == 2


def test_an_exhausted_pool_is_answered_503_within_the_timeout(postgres_dsn, postgres_table) -> None:
    with psycopg_pool.ConnectionPool(postgres_dsn, min_size=1, max_size=1, open=True) as small:
        made = PostgresIdempotencyStore(small, table=postgres_table, timeout=datetime.timedelta(seconds=0.5))
        made.create_table()
        dispatcher = Dispatcher(SECRET, idempotency_store=made)
        dispatcher.on("customer.created")(lambda event: None)
        with small.connection():  # the only connection, held
            started = time.monotonic()
            response = dispatcher.handle(*delivery("msg_1"))
            elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert elapsed < 2.0
        assert dispatcher.handle(*delivery("msg_1")).status_code == 200


def test_a_handler_past_its_lease_loses_its_transaction(pool, postgres_table) -> None:
    made = PostgresIdempotencyStore(pool, table=postgres_table, timeout=SHORT)
    made.create_table()
    dispatcher = Dispatcher(SECRET, idempotency_store=made, lease=datetime.timedelta(milliseconds=300))

    @dispatcher.on("customer.created")
    def slow(event: CustomerCreatedEvent) -> None:
        current_connection().execute("SELECT pg_sleep(3)")

    started = time.monotonic()
    assert dispatcher.handle(*delivery("msg_1")).status_code == 500
    assert time.monotonic() - started < 2.0
    assert done_marks(pool, postgres_table) == []


def _lose(conn: Any, how: str, dsn: str) -> None:
    """Lose a delivery's connection as a handler may see it: closed by the handler, or by the server."""
    if how == "closed by the handler":
        conn.close()
        return
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))


@pytest.mark.parametrize("how", ["closed by the handler", "terminated by the server"])
def test_a_lost_connection_goes_back_to_the_pool_and_leaves_no_deadline(
    postgres_dsn, postgres_table, how: str
) -> None:
    from carecycle_webhooks._watchdog import watchdog

    # One connection: a delivery that kept it would answer every later one 503.
    with psycopg_pool.ConnectionPool(postgres_dsn, min_size=1, max_size=1, open=True) as small:
        made = PostgresIdempotencyStore(small, table=postgres_table, timeout=SHORT)
        made.create_table()
        dispatcher = Dispatcher(SECRET, idempotency_store=made)
        lost: list[int] = []

        @dispatcher.on("customer.created")
        def handler(event: CustomerCreatedEvent) -> None:
            conn = current_connection()
            if not lost:
                lost.append(id(conn))
                _lose(conn, how, postgres_dsn)
                conn.execute("SELECT 1")  # closed: raises; terminated: the socket is gone

        response = dispatcher.handle(*delivery("msg_1"))
        assert response.status_code in (500, 503)  # the handler raised, or the commit failed
        # No deadline left on the lost connection's socket, whose number another socket reuses.
        assert lost[0] not in watchdog()._armed
        # The pool replaces the lost connection in its own thread: under load, that can
        # take longer than the store's 1 s timeout (a full parallel run once answered 503).
        small.wait(timeout=10)
        assert dispatcher.handle(*delivery("msg_1")).status_code == 200
        assert dispatcher.handle(*delivery("msg_2")).status_code == 200
        assert done_marks(small, postgres_table) == ["msg_1", "msg_2"]


IN_FLIGHT_WAIT = 10.0  # seconds a retry may find the id in flight, at most


def retry_while_in_flight(send: Callable[[], WebhookResponse]) -> WebhookResponse:
    """Send again while the answer is 409 (bounded): what Svix's retries do, faster."""
    deadline = time.monotonic() + IN_FLIGHT_WAIT
    response = send()
    while response.status_code == 409 and time.monotonic() < deadline:
        time.sleep(0.05)
        response = send()
    return response


async def retry_while_in_flight_async(send: Callable[[], Awaitable[WebhookResponse]]) -> WebhookResponse:
    """`retry_while_in_flight`, on the event loop."""
    deadline = time.monotonic() + IN_FLIGHT_WAIT
    response = await send()
    while response.status_code == 409 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        response = await send()
    return response


def test_a_connection_closed_by_a_handler_that_returns_is_not_committed(postgres_dsn, postgres_table) -> None:
    with psycopg_pool.ConnectionPool(postgres_dsn, min_size=1, max_size=1, open=True) as small:
        made = PostgresIdempotencyStore(small, table=postgres_table, timeout=SHORT)
        made.create_table()
        dispatcher = Dispatcher(SECRET, idempotency_store=made)
        close = [True]

        @dispatcher.on("customer.created")
        def handler(event: CustomerCreatedEvent) -> None:
            if close[0]:
                current_connection().close()

        response = dispatcher.handle(*delivery("msg_1"))
        assert response.status_code == 503
        assert body_of(response)["error"] == "not_committed"
        close[0] = False
        # The server frees the closed connection's lock once it sees the socket closed:
        # until then the id is in flight (409, and Svix retries later).
        retried = retry_while_in_flight(lambda: dispatcher.handle(*delivery("msg_1")))
        assert retried.status_code == 200
        assert done_marks(small, postgres_table) == ["msg_1"]


def test_a_thread_started_by_a_handler_gets_no_connection_once_its_delivery_ended(store) -> None:
    dispatcher = Dispatcher(SECRET, idempotency_store=store)
    contexts: list[contextvars.Context] = []

    @dispatcher.on("customer.created")
    def handler(event: CustomerCreatedEvent) -> None:
        # What a thread started here with the handler's context (asyncio.to_thread) would see.
        contexts.append(contextvars.copy_context())
        assert contexts[0].run(current_connection) is current_connection()

    assert dispatcher.handle(*delivery("msg_1")).status_code == 200
    # The connection is back in the pool, perhaps in another delivery's transaction.
    with pytest.raises(LookupError, match="while its delivery runs"):
        contexts[0].run(current_connection)


# --------------------------------------------------------------------------- the async store


def test_async_store_under_handle_async(postgres_dsn, postgres_table) -> None:
    async def main() -> None:
        async with psycopg_pool.AsyncConnectionPool(
            postgres_dsn, min_size=1, max_size=4, open=False
        ) as apool:
            store = AsyncPostgresIdempotencyStore(apool, table=postgres_table, timeout=SHORT)
            await store.create_table_async()
            assert serves(store, synchronous=False)
            assert not serves(store, synchronous=True)
            async with apool.connection() as conn:
                await conn.execute(f"CREATE TABLE {postgres_table}_effects (webhook_id text, name text)")
            dispatcher = Dispatcher(SECRET, idempotency_store=store)
            runs: list[str] = []
            fail = [1]

            @dispatcher.on("customer.created")
            async def write(event: CustomerCreatedEvent) -> None:
                runs.append(event.id)
                await current_async_connection().execute(
                    f"INSERT INTO {postgres_table}_effects VALUES (%s, %s)",
                    (event.id, "x"),
                )
                if fail[0]:
                    fail[0] -= 1
                    raise RuntimeError("handler failed")

            assert (await dispatcher.handle_async(*delivery("msg_1"))).status_code == 500
            assert (await dispatcher.handle_async(*delivery("msg_1"))).status_code == 200
            assert body_of(await dispatcher.handle_async(*delivery("msg_1")))["status"] == "duplicate"
            assert len(runs) == 2
            async with apool.connection() as conn:
                cursor = await conn.execute(f"SELECT count(*) FROM {postgres_table}_effects")
                assert await cursor.fetchone() == (1,)
                cursor = await conn.execute(f"SELECT webhook_id FROM {postgres_table}")
                assert await cursor.fetchall() == [("msg_1",)]

            # Concurrent copies on the loop: one runs, the others are answered 409 at once.
            results = await asyncio.gather(*(store.acquire_async("msg_2", lease=LEASE) for _ in range(8)))
            statuses = sorted(claim.status for claim in results)
            assert statuses == ["acquired"] + ["in_flight"] * 7
            winner = next(claim for claim in results if claim.status == "acquired")
            await store.release_async("msg_2", winner.token)

    asyncio.run(main())


def test_a_sync_handler_under_an_async_pool_gets_a_clear_error(postgres_dsn, postgres_table, caplog) -> None:
    errors: list[str] = []

    async def main() -> None:
        async with psycopg_pool.AsyncConnectionPool(
            postgres_dsn, min_size=1, max_size=2, open=False
        ) as apool:
            store = AsyncPostgresIdempotencyStore(apool, table=postgres_table)
            await store.create_table_async()
            dispatcher = Dispatcher(SECRET, idempotency_store=store)

            @dispatcher.on("customer.created")
            def sync_handler(event: CustomerCreatedEvent) -> None:
                try:
                    current_connection()
                except RuntimeError as error:
                    errors.append(str(error))
                    raise

            assert (await dispatcher.handle_async(*delivery("msg_1"))).status_code == 500

    asyncio.run(main())
    assert "current_async_connection()" in errors[0]


def test_async_store_stalled_server_answers_503_within_the_deadline(
    postgres_dsn, postgres_table, postgres_server: PostgresServer
) -> None:
    async def main() -> None:
        async with psycopg_pool.AsyncConnectionPool(
            postgres_dsn, min_size=1, max_size=2, open=False
        ) as apool:
            store = AsyncPostgresIdempotencyStore(apool, table=postgres_table, timeout=SHORT)
            await store.create_table_async()
            dispatcher = Dispatcher(SECRET, idempotency_store=store)
            dispatcher.on("customer.created")(lambda event: None)
            assert (await dispatcher.handle_async(*delivery("msg_0"))).status_code == 200
            with postgres_server.paused():
                started = time.monotonic()
                response = await dispatcher.handle_async(*delivery("msg_1"))
                elapsed = time.monotonic() - started
            assert response.status_code == 503
            assert elapsed < 2 * SHORT.total_seconds() + 1.0
            assert (await dispatcher.handle_async(*delivery("msg_1"))).status_code == 200

    asyncio.run(main())


def test_async_commit_cancelled_midway_finishes_and_the_call_again_gets_its_outcome(
    postgres_dsn, postgres_table
) -> None:
    async def main() -> None:
        async with psycopg_pool.AsyncConnectionPool(
            postgres_dsn, min_size=1, max_size=2, open=False
        ) as apool:
            store = AsyncPostgresIdempotencyStore(apool, table=postgres_table)
            await store.create_table_async()
            claim = await store.acquire_async("msg_1", lease=LEASE)
            first = asyncio.ensure_future(store.complete_async("msg_1", claim.token, ttl=TTL))
            await asyncio.sleep(0)  # the commit is under way
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            await store.complete_async("msg_1", claim.token, ttl=TTL)  # the flow's call to the end
            assert (await store.acquire_async("msg_1", lease=LEASE)).status == "done"

    asyncio.run(main())


def test_async_commit_cancelled_just_after_it_finished_gives_the_call_again_its_outcome(
    postgres_dsn, postgres_table
) -> None:
    # The cancellation reaches the call after its commit task has finished. Before the fix,
    # that call forgot the task: the call again raised CommitFailed ("outcome unknown"),
    # so a delivery that had committed was answered 503.
    async def main() -> None:
        async with psycopg_pool.AsyncConnectionPool(
            postgres_dsn, min_size=1, max_size=2, open=False
        ) as apool:
            store = AsyncPostgresIdempotencyStore(apool, table=postgres_table)
            await store.create_table_async()
            claim = await store.acquire_async("msg_1", lease=LEASE)
            first = asyncio.ensure_future(store.complete_async("msg_1", claim.token, ttl=TTL))
            await asyncio.sleep(0)  # the commit task has started
            commit = store._finishing[claim.token]
            # Cancelled once the task has finished, before the first call resumes.
            commit.add_done_callback(lambda _: first.cancel())
            with pytest.raises(asyncio.CancelledError):
                await first
            await store.complete_async("msg_1", claim.token, ttl=TTL)  # the flow's call to the end
            assert store._finishing == {}
            assert (await store.acquire_async("msg_1", lease=LEASE)).status == "done"

    asyncio.run(main())


def test_async_finished_commits_nobody_calls_again_for_are_kept_in_bounds(
    postgres_dsn, postgres_table, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A caller of its own may cancel and never call again: what is kept for it is bounded.
    monkeypatch.setattr(_postgres, "_MAX_FINISHED", 3)

    async def main() -> None:
        async with psycopg_pool.AsyncConnectionPool(
            postgres_dsn, min_size=1, max_size=2, open=False
        ) as apool:
            store = AsyncPostgresIdempotencyStore(apool, table=postgres_table)
            await store.create_table_async()
            for number in range(6):
                claim = await store.acquire_async(f"msg_{number}", lease=LEASE)
                call = asyncio.ensure_future(store.complete_async(f"msg_{number}", claim.token, ttl=TTL))
                await asyncio.sleep(0)
                store._finishing[claim.token].add_done_callback(lambda _, call=call: call.cancel())
                with pytest.raises(asyncio.CancelledError):
                    await call
            assert len(store._finishing) == 3

    asyncio.run(main())


@pytest.mark.parametrize("how", ["closed by the handler", "terminated by the server"])
def test_async_a_lost_connection_goes_back_to_the_pool_and_leaves_no_deadline(
    postgres_dsn, postgres_table, how: str
) -> None:
    from carecycle_webhooks._watchdog import watchdog

    async def main() -> None:
        async with psycopg_pool.AsyncConnectionPool(
            postgres_dsn, min_size=1, max_size=1, open=False
        ) as apool:
            store = AsyncPostgresIdempotencyStore(apool, table=postgres_table, timeout=SHORT)
            await store.create_table_async()
            dispatcher = Dispatcher(SECRET, idempotency_store=store)
            lost: list[int] = []

            @dispatcher.on("customer.created")
            async def handler(event: CustomerCreatedEvent) -> None:
                conn = current_async_connection()
                if lost:
                    return
                lost.append(id(conn))
                if how == "closed by the handler":
                    await conn.close()
                else:
                    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as other:
                        await other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
                    await conn.execute("SELECT 1")

            response = await dispatcher.handle_async(*delivery("msg_1"))
            assert response.status_code in (500, 503)
            assert lost[0] not in watchdog()._armed
            # As above: 409 until the server has seen the closed connection go.
            retried = await retry_while_in_flight_async(lambda: dispatcher.handle_async(*delivery("msg_1")))
            assert retried.status_code == 200
            assert (await dispatcher.handle_async(*delivery("msg_2"))).status_code == 200

    asyncio.run(main())


def test_async_a_task_started_by_a_handler_cannot_write_into_the_next_delivery(
    postgres_dsn, postgres_table
) -> None:
    async def main() -> None:
        # One connection: the next delivery gets the one the first delivery used.
        async with psycopg_pool.AsyncConnectionPool(
            postgres_dsn, min_size=1, max_size=1, open=False
        ) as apool:
            store = AsyncPostgresIdempotencyStore(apool, table=postgres_table, timeout=SHORT)
            await store.create_table_async()
            async with apool.connection() as conn:
                await conn.execute(f"CREATE TABLE {postgres_table}_effects (webhook_id text, name text)")
            dispatcher = Dispatcher(SECRET, idempotency_store=store)
            later = asyncio.Event()
            spawned: list[asyncio.Task[None]] = []

            async def audit() -> None:  # fire and forget: outlives msg_1's delivery
                await later.wait()
                await current_async_connection().execute(
                    f"INSERT INTO {postgres_table}_effects VALUES ('late', 'msg_1')"
                )

            @dispatcher.on("customer.created")
            async def handler(event: CustomerCreatedEvent) -> None:
                if not spawned:
                    spawned.append(asyncio.create_task(audit()))
                    return
                later.set()
                with pytest.raises(LookupError, match="while its delivery runs"):
                    await spawned[0]

            assert (await dispatcher.handle_async(*delivery("msg_1"))).status_code == 200
            assert (await dispatcher.handle_async(*delivery("msg_2"))).status_code == 200
            async with apool.connection() as conn:
                cursor = await conn.execute(f"SELECT count(*) FROM {postgres_table}_effects")
                assert await cursor.fetchone() == (0,)  # nothing slipped into msg_2's transaction

    asyncio.run(main())
