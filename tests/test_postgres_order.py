"""Customer order (``skip_out_of_order``) in the PostgreSQL stores, against a real server.

The customer's lock, the read of its newest mark and the mark's update are part of the
delivery's own transaction: the same scenarios run on the sync store and on the async one
(on an event loop in a thread of its own), then through the dispatcher.
"""

# ruff: noqa: S608 - the tests build SQL with their own table names, never with input

from __future__ import annotations

import asyncio
import datetime
import json
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

psycopg = pytest.importorskip("psycopg")
psycopg_pool = pytest.importorskip("psycopg_pool")

from carecycle_webhooks import Dispatcher  # noqa: E402
from carecycle_webhooks._idempotency import (  # noqa: E402
    AsyncOrderedIdempotencyStore,
    Order,
    OrderedIdempotencyStore,
)
from carecycle_webhooks.postgres import (  # noqa: E402
    AsyncPostgresIdempotencyStore,
    PostgresIdempotencyStore,
    current_async_connection,
    current_connection,
)
from tests.conftest import SECRET, fixture_bytes, svix_headers  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterator

    from carecycle_webhooks import Claim, CustomerUpdatedEvent, WebhookResponse

LEASE = datetime.timedelta(minutes=2)
TTL = datetime.timedelta(hours=1)
SHORT = datetime.timedelta(seconds=2)


class LoopThread:
    """An event loop in a thread of its own: the async store's calls, made from sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Ordered:
    """The sync or the async store behind one set of sync calls, and its marks table."""

    def __init__(self, kind: str, dsn: str, table: str) -> None:
        self.kind = kind
        self.table = table
        self.pool = psycopg_pool.ConnectionPool(dsn, min_size=1, max_size=8, open=True, timeout=5)
        self.loop: LoopThread | None = None
        if kind == "sync":
            self.sync = PostgresIdempotencyStore(self.pool, table=table, timeout=SHORT)
            self.sync.create_table()
            self.store: Any = self.sync
        else:
            self.loop = LoopThread()

            async def open_pool() -> psycopg_pool.AsyncConnectionPool[Any]:
                opened = psycopg_pool.AsyncConnectionPool(dsn, min_size=1, max_size=8, open=False, timeout=5)
                await opened.open()
                return opened

            self.apool = self.loop.call(open_pool())
            self.async_store = AsyncPostgresIdempotencyStore(self.apool, table=table, timeout=SHORT)
            self.loop.call(self.async_store.create_table_async())
            self.store = self.async_store

    def acquire(self, key: str, order: Order, *, lease: datetime.timedelta = LEASE) -> Claim:
        if self.loop is None:
            return self.sync.acquire(key, lease=lease, order=order)
        return self.loop.call(self.async_store.acquire_async(key, lease=lease, order=order))

    def complete(self, key: str, claim: Claim, order: Order, *, ttl: datetime.timedelta = TTL) -> None:
        if self.loop is None:
            self.sync.complete(key, claim.token, ttl=ttl, order=order)
        else:
            self.loop.call(self.async_store.complete_async(key, claim.token, ttl=ttl, order=order))

    def release(self, key: str, claim: Claim, order: Order) -> None:
        if self.loop is None:
            self.sync.release(key, claim.token, order=order)
        else:
            self.loop.call(self.async_store.release_async(key, claim.token, order=order))

    def prune(self) -> int:
        if self.loop is None:
            return self.sync.prune()
        deleted: int = self.loop.call(self.async_store.prune_async())
        return deleted

    def mark(self, customer: str) -> int | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT updated_at_us FROM {self.table}_marks WHERE customer_key = %s", (customer,)
            ).fetchone()
        return None if row is None else int(row[0])

    def run(self, key: str, order: Order) -> str:
        """A whole delivery that succeeds: its claim's status."""
        claim = self.acquire(key, order)
        if claim.status == "acquired":
            self.complete(key, claim, order)
        return claim.status

    def close(self) -> None:
        if self.loop is not None:
            self.loop.call(self.apool.close())
            self.loop.close()
        self.pool.close()


@pytest.fixture(params=["sync", "async"])
def ordered(request: pytest.FixtureRequest, postgres_dsn: str, postgres_table: str) -> Iterator[Ordered]:
    made = Ordered(request.param, postgres_dsn, postgres_table)
    try:
        yield made
    finally:
        made.close()


# --------------------------------------------------------------------------- the store


def test_the_stores_keep_order() -> None:
    for store in (PostgresIdempotencyStore, AsyncPostgresIdempotencyStore):
        assert store.keeps_order is True
    pool = psycopg_pool.ConnectionPool("host=127.0.0.1 port=1", open=False)
    assert isinstance(PostgresIdempotencyStore(pool), OrderedIdempotencyStore)
    apool = psycopg_pool.AsyncConnectionPool("host=127.0.0.1 port=1", open=False)
    assert isinstance(AsyncPostgresIdempotencyStore(apool), AsyncOrderedIdempotencyStore)


def test_older_is_stale_equal_and_newer_run(ordered: Ordered) -> None:
    assert ordered.run("msg_2", Order("cus_1", 200)) == "acquired"
    assert ordered.mark("cus_1") == 200
    assert ordered.run("msg_1", Order("cus_1", 100)) == "stale"
    assert ordered.run("msg_2b", Order("cus_1", 200)) == "acquired"  # an equal updatedAt runs
    assert ordered.run("msg_3", Order("cus_1", 300)) == "acquired"
    assert ordered.mark("cus_1") == 300
    # A stale delivery kept nothing: its id is not done, and it is stale again.
    assert ordered.run("msg_1", Order("cus_1", 100)) == "stale"
    with ordered.pool.connection() as conn:
        ids = [row[0] for row in conn.execute(f"SELECT webhook_id FROM {ordered.table} ORDER BY 1")]
    assert ids == ["msg_2", "msg_2b", "msg_3"]
    assert ordered.run("msg_3", Order("cus_1", 300)) == "done"  # done comes first


def test_a_failed_handler_leaves_the_mark_and_frees_the_customer(ordered: Ordered) -> None:
    assert ordered.run("msg_1", Order("cus_1", 200)) == "acquired"
    claim = ordered.acquire("msg_2", Order("cus_1", 300))
    assert claim.status == "acquired"
    ordered.release("msg_2", claim, Order("cus_1", 300))
    assert ordered.mark("cus_1") == 200
    assert ordered.run("msg_0", Order("cus_1", 100)) == "stale"
    assert ordered.run("msg_2", Order("cus_1", 300)) == "acquired"  # the retry runs
    assert ordered.mark("cus_1") == 300


def test_a_concurrent_delivery_of_the_customer_is_in_flight_at_once(ordered: Ordered) -> None:
    first = ordered.acquire("msg_1", Order("cus_1", 100))
    assert first.status == "acquired"
    started = time.monotonic()
    assert ordered.acquire("msg_2", Order("cus_1", 200)).status == "in_flight"
    assert time.monotonic() - started < 1.0  # answered at once, never waits for the first
    assert ordered.acquire("msg_3", Order("cus_2", 200)).status == "acquired"  # another customer
    ordered.complete("msg_1", first, Order("cus_1", 100))
    assert ordered.run("msg_2", Order("cus_1", 200)) == "acquired"  # free once the first committed


def test_the_customer_is_freed_by_release(ordered: Ordered) -> None:
    first = ordered.acquire("msg_1", Order("cus_1", 100))
    ordered.release("msg_1", first, Order("cus_1", 100))
    assert ordered.mark("cus_1") is None
    assert ordered.run("msg_2", Order("cus_1", 50)) == "acquired"


def test_tenants_customers_are_separate(ordered: Ordered) -> None:
    assert ordered.run("a/msg_1", Order("a/cus_1", 500)) == "acquired"
    assert ordered.run("b/msg_1", Order("b/cus_1", 100)) == "acquired"
    held = ordered.acquire("a/msg_2", Order("a/cus_1", 600))
    assert ordered.acquire("b/msg_2", Order("b/cus_1", 200)).status == "acquired"
    ordered.release("a/msg_2", held, Order("a/cus_1", 600))
    assert (ordered.mark("a/cus_1"), ordered.mark("b/cus_1")) == (500, 100)


def test_an_expired_mark_no_longer_counts(ordered: Ordered) -> None:
    claim = ordered.acquire("msg_2", Order("cus_1", 200))
    ordered.complete("msg_2", claim, Order("cus_1", 200), ttl=datetime.timedelta(milliseconds=1))
    time.sleep(0.01)  # past the mark's expiry, by the server's clock
    assert ordered.run("msg_1", Order("cus_1", 100)) == "acquired"
    assert ordered.mark("cus_1") == 100  # a new mark over the expired one
    assert ordered.prune() == 1  # msg_2's expired done mark; the new mark is live
    claim = ordered.acquire("msg_3", Order("cus_1", 300))
    ordered.complete("msg_3", claim, Order("cus_1", 300), ttl=datetime.timedelta(milliseconds=1))
    time.sleep(0.01)
    assert ordered.prune() == 2  # msg_3's done mark and the customer's expired mark
    assert ordered.mark("cus_1") is None


def test_a_mark_never_goes_back(ordered: Ordered) -> None:
    claim = ordered.acquire("msg_1", Order("cus_1", 100))
    with ordered.pool.connection() as conn:  # written meanwhile by some other means
        conn.execute(f"INSERT INTO {ordered.table}_marks VALUES ('cus_1', 900, now() + interval '1 hour')")
    ordered.complete("msg_1", claim, Order("cus_1", 100))
    assert ordered.mark("cus_1") == 900


def test_a_worker_killed_mid_handler_leaves_no_mark_and_frees_the_customer(ordered: Ordered) -> None:
    claim = ordered.acquire("msg_1", Order("cus_1", 100))
    assert claim.status == "acquired"
    with ordered.pool.connection() as conn:  # as a SIGKILLed worker's connection: the server ends it
        pid = ordered.store._open[claim.token].conn.info.backend_pid
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 10
    status = ordered.run("msg_2", Order("cus_1", 50))
    while status == "in_flight" and time.monotonic() < deadline:
        time.sleep(0.05)  # until the server has seen the socket closed
        status = ordered.run("msg_2", Order("cus_1", 50))
    assert status == "acquired"
    assert ordered.mark("cus_1") == 50


def test_without_an_order_the_marks_table_is_not_touched(ordered: Ordered) -> None:
    with ordered.pool.connection() as conn:
        conn.execute(f"DROP TABLE {ordered.table}_marks")
    store = ordered.store
    store._prune_every = 1
    for key in ("msg_1", "msg_2"):
        if ordered.loop is None:
            claim = ordered.sync.acquire(key, lease=LEASE)
            ordered.sync.complete(key, claim.token, ttl=TTL)
        else:
            claim = ordered.loop.call(ordered.async_store.acquire_async(key, lease=LEASE))
            ordered.loop.call(ordered.async_store.complete_async(key, claim.token, ttl=TTL))
        assert claim.status == "acquired"
    assert ordered.prune() == 0  # and the explicit prune skips the missing table
    with pytest.raises(psycopg.errors.UndefinedTable):  # a customer event: 503 until create_table()
        ordered.acquire("msg_3", Order("cus_1", 1))
    with ordered.pool.connection() as conn:
        assert conn.execute(f"SELECT count(*) FROM {ordered.table}").fetchone() == (2,)


def test_create_table_in_a_schema_makes_the_marks_table_beside_it(
    postgres_dsn: str, postgres_table: str
) -> None:
    with psycopg_pool.ConnectionPool(postgres_dsn, min_size=1, max_size=2, open=True) as pool:
        with pool.connection() as conn:
            conn.execute(f"CREATE SCHEMA {postgres_table}_s")
        store = PostgresIdempotencyStore(pool, table=f"{postgres_table}_s.Deliveries")
        store.create_table()
        store.create_table()  # again: nothing changes
        claim = store.acquire("msg_1", lease=LEASE, order=Order("cus_1", 7))
        store.complete("msg_1", claim.token, ttl=TTL, order=Order("cus_1", 7))
        with pool.connection() as conn:
            row = conn.execute(
                f'SELECT customer_key, updated_at_us FROM {postgres_table}_s."Deliveries_marks"'
            )
            assert row.fetchall() == [("cus_1", 7)]
            indexes = conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s ORDER BY 1", (f"{postgres_table}_s",)
            ).fetchall()
        assert [name for (name,) in indexes] == [
            "Deliveries_expires_at",
            "Deliveries_marks_expiry",
            "Deliveries_marks_pkey",
            "Deliveries_pkey",
        ]


# --------------------------------------------------------------------------- the dispatcher


def updated(customer: str, updated_at: str, msg_id: str) -> tuple[bytes, dict[str, str]]:
    payload = json.loads(fixture_bytes("customer.updated"))
    payload["id"], payload["updatedAt"] = customer, updated_at
    body = json.dumps(payload).encode()
    return body, svix_headers(body, msg_id=msg_id)


CUSTOMER = "b1f7c0e2-3a4d-4e5f-8a9b-0c1d2e3f4a5b"
OLD, NEW = "2026-06-18T14:22:09.120Z", "2026-06-18T14:22:09.121Z"  # a millisecond apart


def status(response: WebhookResponse) -> tuple[int, str]:
    answer = json.loads(response.body)
    return response.status_code, answer.get("status") or answer.get("error")


def test_the_dispatcher_skips_an_older_update_sync(postgres_dsn: str, postgres_table: str) -> None:
    with psycopg_pool.ConnectionPool(postgres_dsn, min_size=1, max_size=4, open=True) as pool:
        store = PostgresIdempotencyStore(pool, table=postgres_table)
        store.create_table()
        with pool.connection() as conn:
            conn.execute(f"CREATE TABLE {postgres_table}_applied (customer text, updated_at text)")
        webhooks = Dispatcher(SECRET, idempotency_store=store, skip_out_of_order=True)
        failing = [RuntimeError("handler failed")]

        @webhooks.on("customer.updated")
        def apply(event: CustomerUpdatedEvent) -> None:
            current_connection().execute(
                f"INSERT INTO {postgres_table}_applied VALUES (%s, %s)",
                (str(event.id), str(event.updated_at)),
            )
            if failing and event.updated_at.microsecond == 121000:
                raise failing.pop()

        assert status(webhooks.handle(*updated(CUSTOMER, OLD, "msg_old"))) == (200, "processed")
        assert status(webhooks.handle(*updated(CUSTOMER, NEW, "msg_new"))) == (500, "handler_failed")
        assert status(webhooks.handle(*updated(CUSTOMER, NEW, "msg_new"))) == (200, "processed")
        assert status(webhooks.handle(*updated(CUSTOMER, OLD, "msg_old2"))) == (200, "stale")
        with pool.connection() as conn:
            applied = conn.execute(f"SELECT updated_at FROM {postgres_table}_applied").fetchall()
        assert len(applied) == 2
        assert applied[-1][0].endswith("09.121000+00:00")


def test_the_dispatcher_skips_an_older_update_async(postgres_dsn: str, postgres_table: str) -> None:
    answers: list[tuple[int, str]] = []

    async def main() -> None:
        async with psycopg_pool.AsyncConnectionPool(
            postgres_dsn, min_size=1, max_size=4, open=False
        ) as apool:
            store = AsyncPostgresIdempotencyStore(apool, table=postgres_table)
            await store.create_table_async()
            async with apool.connection() as conn:
                await conn.execute(f"CREATE TABLE {postgres_table}_applied (customer text, updated_at text)")
            webhooks = Dispatcher(SECRET, idempotency_store=store, skip_out_of_order=True)
            inside, go_on = asyncio.Event(), asyncio.Event()

            @webhooks.on("customer.updated")
            async def apply(event: CustomerUpdatedEvent) -> None:
                await current_async_connection().execute(
                    f"INSERT INTO {postgres_table}_applied VALUES (%s, %s)",
                    (str(event.id), str(event.updated_at)),
                )
                if event.updated_at.microsecond == 121000:
                    inside.set()
                    await go_on.wait()

            newer = asyncio.ensure_future(webhooks.handle_async(*updated(CUSTOMER, NEW, "msg_new")))
            await asyncio.wait_for(inside.wait(), 5)
            answers.append(status(await webhooks.handle_async(*updated(CUSTOMER, OLD, "msg_old"))))
            go_on.set()
            answers.append(status(await newer))
            answers.append(status(await webhooks.handle_async(*updated(CUSTOMER, OLD, "msg_old"))))

    asyncio.run(main())
    assert answers == [(409, "in_flight"), (200, "processed"), (200, "stale")]
