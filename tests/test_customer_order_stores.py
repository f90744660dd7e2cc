"""Customer order (``skip_out_of_order``) in SQLiteIdempotencyStore and RedisIdempotencyStore.

The semantics are `InMemoryIdempotencyStore`'s (the reference): with an `Order`, acquire
answers "stale" when the customer's mark is newer and "in_flight" while another delivery
holds the customer; complete moves the mark forward (never back) and frees the customer;
release frees the customer and leaves the mark. Every store kind runs every test: SQLite
and Redis, their synchronous methods and their async ones (Redis: a synchronous client and
an asyncio one), and the in-memory reference, which holds the tests themselves to the
semantics. Time moves by hand: the stores' clocks, and Redis keys' TTLs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import json
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio

from carecycle_webhooks import (
    Dispatcher,
    InMemoryIdempotencyStore,
    RedisIdempotencyStore,
    SQLiteIdempotencyStore,
    WebhookResponse,
    _redis,
    _sqlite,
)
from carecycle_webhooks._idempotency import (
    AsyncOrderedIdempotencyStore,
    Claim,
    Order,
    OrderedIdempotencyStore,
)
from tests.conftest import SECRET, load_fixture, svix_headers

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator
    from pathlib import Path

    from carecycle_webhooks import CustomerUpdatedEvent

LEASE = datetime.timedelta(minutes=2)
TTL = datetime.timedelta(hours=1)
LEASE_MS = 120_000
TTL_MS = 3_600_000
PREFIX = "carecycle-webhooks:"
KINDS = ["memory", "sqlite", "sqlite-async", "redis", "redis-async", "redis-asyncio"]


class Clock:
    """Unix milliseconds that the test moves by hand (the SQLite store's clock)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now


class Driver:
    """One store, called as the dispatcher would: its sync methods, or its async ones on a loop."""

    def __init__(
        self,
        store: Any,
        *,
        loop: asyncio.AbstractEventLoop | None,
        advance: Callable[[int], None],
    ) -> None:
        self.store = store
        self.loop = loop
        self._advance = advance

    def _run(self, sync: Callable[[], Any], coroutine: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        if self.loop is None:
            return sync()
        return self.loop.run_until_complete(coroutine())

    def acquire(self, key: str, position: int | None = None, customer: str = "c1") -> Claim:
        store = self.store
        if position is None:
            claim = self._run(
                lambda: store.acquire(key, lease=LEASE), lambda: store.acquire_async(key, lease=LEASE)
            )
        else:
            order = Order(customer, position)
            claim = self._run(
                lambda: store.acquire(key, lease=LEASE, order=order),
                lambda: store.acquire_async(key, lease=LEASE, order=order),
            )
        assert isinstance(claim, Claim)
        return claim

    def complete(self, key: str, token: str, position: int, customer: str = "c1") -> None:
        store, order = self.store, Order(customer, position)
        self._run(
            lambda: store.complete(key, token, ttl=TTL, order=order),
            lambda: store.complete_async(key, token, ttl=TTL, order=order),
        )

    def release(self, key: str, token: str, position: int, customer: str = "c1") -> None:
        store, order = self.store, Order(customer, position)
        self._run(
            lambda: store.release(key, token, order=order),
            lambda: store.release_async(key, token, order=order),
        )

    def advance(self, milliseconds: int) -> None:
        """Time passes: leases and marks that expire meanwhile are gone."""
        self._advance(milliseconds)

    def run(self, key: str, position: int, customer: str = "c1") -> Claim:
        """A delivery whose handlers succeed: acquire, then complete if acquired."""
        claim = self.acquire(key, position, customer)
        if claim.status == "acquired":
            self.complete(key, claim.token, position, customer)
        return claim


def _advance_redis(client: redis.Redis) -> Callable[[int], None]:
    def advance(milliseconds: int) -> None:
        for key in client.scan_iter(match=PREFIX + "*"):
            left = client.pttl(key)
            if left <= milliseconds:
                client.delete(key)
            else:
                client.pexpire(key, left - milliseconds)

    return advance


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def driver(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Driver]:
    loop = asyncio.new_event_loop() if kind.endswith(("-async", "-asyncio")) else None
    closers: list[Callable[[], object]] = []
    try:
        if kind == "memory":
            now = [0.0]
            store: Any = InMemoryIdempotencyStore(clock=lambda: now[0])

            def advance(milliseconds: int) -> None:
                now[0] += milliseconds / 1000

            yield Driver(store, loop=loop, advance=advance)
        elif kind.startswith("sqlite"):
            store = SQLiteIdempotencyStore(tmp_path / "idempotency.sqlite3")
            closers.append(store.close)
            clock = store._clock = Clock()

            def advance_clock(milliseconds: int) -> None:
                clock.now += milliseconds

            yield Driver(store, loop=loop, advance=advance_clock)
        else:
            client: redis.Redis = request.getfixturevalue("redis_client")
            if kind == "redis-asyncio":
                assert loop is not None
                port = client.connection_pool.connection_kwargs["port"]
                asyncio_client = redis.asyncio.Redis(host="127.0.0.1", port=port, socket_timeout=2)
                closers.append(lambda: loop.run_until_complete(asyncio_client.aclose()))
                store = RedisIdempotencyStore(asyncio_client)
            else:
                store = RedisIdempotencyStore(client)
            yield Driver(store, loop=loop, advance=_advance_redis(client))
    finally:
        for close in reversed(closers):
            close()
        if loop is not None:
            loop.close()


# --------------------------------------------------------------------------- the semantics


def test_the_stores_keep_order_for_both_entry_points(tmp_path: Path, redis_client: redis.Redis) -> None:
    sqlite_store = SQLiteIdempotencyStore(tmp_path / "db.sqlite3")
    for store in (sqlite_store, RedisIdempotencyStore(redis_client)):
        assert store.keeps_order is True
        assert isinstance(store, OrderedIdempotencyStore)
        assert isinstance(store, AsyncOrderedIdempotencyStore)
        Dispatcher(SECRET, idempotency_store=store, skip_out_of_order=True)  # accepted
    sqlite_store.close()


def test_an_older_update_is_stale_and_takes_nothing(driver: Driver) -> None:
    assert driver.run("msg_new", 200).status == "acquired"
    assert driver.acquire("msg_old", 100) == Claim("stale")
    # Nothing was taken: neither the id nor the customer.
    assert driver.acquire("msg_old").status == "acquired"
    assert driver.acquire("msg_newer", 300).status == "acquired"


def test_an_equal_update_runs_and_a_newer_one_too(driver: Driver) -> None:
    assert driver.run("msg_1", 200).status == "acquired"
    assert driver.run("msg_2", 200).status == "acquired"  # equal: runs
    assert driver.run("msg_3", 300).status == "acquired"  # newer: runs, and moves the mark
    assert driver.acquire("msg_4", 250) == Claim("stale")
    assert driver.acquire("msg_5", 300).status == "acquired"


def test_the_id_answers_first(driver: Driver) -> None:
    driver.run("msg_new", 200)
    assert driver.acquire("msg_new", 100) == Claim("done")  # a duplicate, not stale
    held = driver.acquire("msg_held", 300)
    assert driver.acquire("msg_held", 300) == Claim("in_flight")
    driver.complete("msg_held", held.token, 300)


def test_a_failed_handler_leaves_the_mark_and_frees_the_customer(driver: Driver) -> None:
    driver.run("msg_1", 200)
    claim = driver.acquire("msg_2", 300)
    assert claim.status == "acquired"
    driver.release("msg_2", claim.token, 300)
    assert driver.acquire("msg_3", 150) == Claim("stale")  # the mark is still 200...
    assert driver.run("msg_4", 250).status == "acquired"  # ...not 300; and the customer is free
    assert driver.run("msg_2", 300).status == "acquired"  # Svix's retry of the failed one runs


def test_the_customers_lease_answers_in_flight_until_complete(driver: Driver) -> None:
    first = driver.acquire("msg_1", 100)
    assert first.status == "acquired"
    # Another delivery of the same customer, newer or older, waits for the first.
    assert driver.acquire("msg_2", 200) == Claim("in_flight")
    assert driver.acquire("msg_0", 50) == Claim("in_flight")
    driver.complete("msg_1", first.token, 100)
    assert driver.run("msg_2", 200).status == "acquired"
    assert driver.acquire("msg_0", 50) == Claim("stale")  # second, it is stale


def test_the_customers_lease_is_freed_by_release(driver: Driver) -> None:
    first = driver.acquire("msg_1", 100)
    assert driver.acquire("msg_2", 200) == Claim("in_flight")
    driver.release("msg_1", first.token, 100)
    assert driver.acquire("msg_2", 200).status == "acquired"


def test_the_customers_lease_expires_with_the_lease(driver: Driver) -> None:
    driver.acquire("msg_1", 100)  # its worker dies
    assert driver.acquire("msg_2", 200) == Claim("in_flight")
    driver.advance(LEASE_MS - 10_000)
    assert driver.acquire("msg_2", 200) == Claim("in_flight")
    driver.advance(20_000)
    assert driver.acquire("msg_2", 200).status == "acquired"


def test_the_mark_expires_with_the_done_ttl(driver: Driver) -> None:
    driver.run("msg_1", 200)
    driver.advance(TTL_MS - 10_000)
    assert driver.acquire("msg_2", 100) == Claim("stale")
    driver.advance(20_000)
    assert driver.acquire("msg_2", 100).status == "acquired"


def test_the_mark_never_goes_back(driver: Driver) -> None:
    slow = driver.acquire("msg_old", 100)
    driver.advance(LEASE_MS + 1_000)  # its lease expired; the handler still runs
    assert driver.run("msg_new", 300).status == "acquired"
    driver.complete("msg_old", slow.token, 100)  # nobody took its id: done, but the mark stays 300
    assert driver.acquire("msg_mid", 200) == Claim("stale")
    assert driver.acquire("msg_old", 100) == Claim("done")


def test_another_holders_token_frees_nothing(driver: Driver) -> None:
    held = driver.acquire("msg_1", 100)
    driver.release("msg_1", "another-token", 100)
    driver.release("msg_2", "another-token", 100)
    assert driver.acquire("msg_1", 100) == Claim("in_flight")
    assert driver.acquire("msg_3", 200) == Claim("in_flight")
    # A complete over another's live lease changes nothing: neither the id nor the customer.
    driver.complete("msg_1", "another-token", 500)
    assert driver.acquire("msg_3", 200) == Claim("in_flight")
    driver.complete("msg_1", held.token, 100)
    assert driver.acquire("msg_3", 200).status == "acquired"  # the mark is 100, not 500


def test_customers_are_separate_and_so_are_tenants(driver: Driver) -> None:
    driver.run("msg_1", 200, customer="c1")
    assert driver.acquire("msg_2", 100, customer="c2").status == "acquired"  # holds c2
    assert driver.acquire("msg_3", 100, customer="c1") == Claim("stale")
    # The same customer id under two tenants: separate marks and leases.
    driver.run("t1/msg_1", 200, customer="t1/c1")
    held = driver.acquire("t2/msg_1", 100, customer="t2/c1")
    assert held.status == "acquired"
    assert driver.acquire("t1/msg_2", 150, customer="t1/c1") == Claim("stale")
    assert driver.acquire("t2/msg_2", 150, customer="t2/c1") == Claim("in_flight")
    driver.complete("t2/msg_1", held.token, 100, customer="t2/c1")
    assert driver.acquire("t2/msg_2", 150, customer="t2/c1").status == "acquired"


def test_positions_of_real_timestamps_compare_exactly(driver: Driver) -> None:
    newer = 1_781_792_529_120_001  # 2026-06-18T14:22:09.120001Z, in microseconds
    driver.run("msg_1", newer)
    assert driver.acquire("msg_2", newer - 1) == Claim("stale")
    assert driver.acquire("msg_3", newer).status == "acquired"


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])  # the threads call the sync methods
def test_threads_racing_an_old_and_a_new_update_end_with_the_new_one(driver: Driver) -> None:
    applied: dict[str, int] = {}
    lock = threading.Lock()

    gave_up: list[str] = []

    def deliver(customer: str, key: str, position: int) -> None:
        deadline = time.monotonic() + 20
        while True:  # Svix resends, a little later, while in flight; bounded in time
            claim = driver.acquire(key, position, customer)
            if claim.status != "in_flight":
                break
            if time.monotonic() > deadline:
                gave_up.append(key)
                return
            time.sleep(0.001)
        if claim.status == "acquired":
            with lock:
                applied[customer] = position
            driver.complete(key, claim.token, position, customer)

    threads = [
        threading.Thread(target=deliver, args=(f"c{n}", f"msg_{n}_{position}", position))
        for n in range(20)
        for position in (100, 200)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert gave_up == []
    assert applied == {f"c{n}": 200 for n in range(20)}


# --------------------------------------------------------------------------- store specifics


def test_sqlite_without_an_order_runs_the_same_single_statements(tmp_path: Path) -> None:
    store = SQLiteIdempotencyStore(tmp_path / "idempotency.sqlite3")
    statements: list[str] = []

    def traced(quick: bool = False) -> sqlite3.Connection:
        connection = SQLiteIdempotencyStore._connect(store, quick)
        connection.set_trace_callback(statements.append)
        return connection

    store._pool = _sqlite._Pool(traced)
    store.acquire("msg_warm", lease=LEASE)  # the connection's own setup
    del statements[:]
    claim = store.acquire("msg_1", lease=LEASE)
    store.complete("msg_1", claim.token, ttl=TTL)
    assert [statement.split(" (")[0] for statement in statements] == [
        "INSERT INTO carecycle_webhooks_idempotency",
        "INSERT INTO carecycle_webhooks_idempotency",
    ]
    assert len(statements) == 2
    del statements[:]
    claim = store.acquire("msg_2", lease=LEASE, order=Order("c1", 1))
    store.complete("msg_2", claim.token, ttl=TTL, order=Order("c1", 1))
    assert statements[0] == "BEGIN IMMEDIATE"
    assert statements[3] == "COMMIT"
    assert statements[4] == "BEGIN IMMEDIATE"
    assert statements[-1] == "COMMIT"
    assert len(statements) == 8
    store.close()


def customer_rows(path: Path) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(
            "SELECT key, holder, lease_expires, position, mark_expires FROM carecycle_webhooks_customer_order"
        ).fetchall()
    finally:
        connection.close()


def test_sqlite_customer_rows_are_pruned_with_the_expired_ids_and_cleared(tmp_path: Path) -> None:
    path = tmp_path / "idempotency.sqlite3"
    store = SQLiteIdempotencyStore(path)
    clock = store._clock = Clock()
    for n in range(30):
        claim = store.acquire(f"msg_{n}", lease=LEASE, order=Order(f"c{n}", 5))
        store.complete(f"msg_{n}", claim.token, ttl=TTL, order=Order(f"c{n}", 5))
    held = store.acquire("msg_held", lease=LEASE, order=Order("held", 5))
    assert held.status == "acquired"
    assert len(customer_rows(path)) == 31
    assert ("c0", "", 0, 5, clock.now + TTL_MS) in customer_rows(path)
    clock.now += TTL_MS + 1
    store.acquire("msg_live", lease=LEASE, order=Order("live", 5))  # a lease of now
    store._call(store._housekeeping)
    assert {row[0] for row in customer_rows(path)} == {"live"}
    store.clear()
    assert customer_rows(path) == []
    store.close()


def test_sqlite_a_new_store_on_an_old_file_creates_the_customers_table(tmp_path: Path) -> None:
    path = tmp_path / "idempotency.sqlite3"
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE carecycle_webhooks_idempotency "
        "(key TEXT PRIMARY KEY NOT NULL, holder TEXT NOT NULL, expires INTEGER NOT NULL) WITHOUT ROWID"
    )
    connection.close()
    store = SQLiteIdempotencyStore(path)
    assert store.acquire("msg_1", lease=LEASE, order=Order("c1", 1)).status == "acquired"
    store.close()


def held_for_a_moment(path: Path) -> Callable[[], None]:
    """Another connection holds the write lock for 0.2 s; the result waits for its end."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.2, other.rollback)
    timer.start()

    def ended() -> None:
        timer.join()
        other.close()

    return ended


def test_sqlite_an_ordered_acquire_waits_for_the_lock_in_a_thread(tmp_path: Path) -> None:
    path = tmp_path / "idempotency.sqlite3"
    store = SQLiteIdempotencyStore(path, timeout=datetime.timedelta(seconds=5))
    ended = held_for_a_moment(path)
    try:  # the loop's quick attempt finds the lock taken: the store's thread waits for it
        first = asyncio.run(store.acquire_async("msg_1", lease=LEASE, order=Order("c1", 200)))
    finally:
        ended()
    ended = held_for_a_moment(path)
    try:  # refused in the thread: its id's lease is rolled back with the rest
        second = asyncio.run(store.acquire_async("msg_2", lease=LEASE, order=Order("c1", 100)))
    finally:
        ended()
    assert first.status == "acquired"
    assert second == Claim("in_flight")
    assert store.acquire("msg_2", lease=LEASE).status == "acquired"
    store.complete("msg_1", first.token, ttl=TTL, order=Order("c1", 200))
    ended = held_for_a_moment(path)
    try:
        third = asyncio.run(store.acquire_async("msg_3", lease=LEASE, order=Order("c1", 100)))
    finally:
        ended()
    assert third == Claim("stale")
    assert store.acquire("msg_3", lease=LEASE).status == "acquired"
    store.close()


def test_sqlite_an_abandoned_ordered_acquire_frees_the_customer_it_took(tmp_path: Path) -> None:
    path = tmp_path / "idempotency.sqlite3"
    store = SQLiteIdempotencyStore(path, timeout=datetime.timedelta(seconds=5))
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")

    async def scenario() -> None:
        waiting = asyncio.create_task(store.acquire_async("msg_cancelled", lease=LEASE, order=Order("c1", 5)))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        other.rollback()  # a lease the thread takes now is freed: nobody holds its token

    try:
        asyncio.run(scenario())
    finally:
        other.close()
    threads = _sqlite._THREADS  # once every thread of the store is free, the release was queued and ran
    everyone = threading.Barrier(threads + 1, timeout=10)
    for _ in range(threads):
        store._pool.executor().submit(everyone.wait)
    everyone.wait()
    for _ in range(500):
        if all(row[1] == "" for row in customer_rows(path)):
            break
        threading.Event().wait(0.02)
    # Taken then freed, or (given up before the thread took the lock) never taken.
    assert [row[1] for row in customer_rows(path)] in ([], [""])
    assert store.acquire("msg_other", lease=LEASE, order=Order("c1", 6)).status == "acquired"
    # The thread's lease, had it been taken just before its caller gave up: freed, customer too.
    taken = store.acquire("msg_late", lease=LEASE, order=Order("c2", 5))
    future: concurrent.futures.Future[Claim] = concurrent.futures.Future()
    future.set_result(taken)
    store._free_if_taken("msg_late", taken.token, Order("c2", 5), future)
    store._current_pool().executor().shutdown(wait=True)
    assert store.acquire("msg_late", lease=LEASE, order=Order("c2", 6)).status == "acquired"
    store.close()


class Recording:
    """A redis client that records the scripts sent (and how many keys each was given)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.sent: list[tuple[str, int]] = []

    def eval(self, script: str, keys: int, *args: object) -> object:
        self.sent.append((script, keys))
        return self.client.eval(script, keys, *args)


def test_redis_without_an_order_sends_the_same_scripts(redis_client: redis.Redis) -> None:
    recording = Recording(redis_client)
    store = RedisIdempotencyStore(recording, timeout=datetime.timedelta(seconds=5))
    claim = store.acquire("msg_1", lease=LEASE)
    store.complete("msg_1", claim.token, ttl=TTL)
    assert recording.sent == [(_redis._ACQUIRE, 1), (_redis._COMPLETE, 1)]
    assert redis_client.keys("*") == [PREFIX.encode() + b"msg_1"]
    del recording.sent[:]
    claim = store.acquire("msg_2", lease=LEASE, order=Order("t1/c1", 7))
    store.complete("msg_2", claim.token, ttl=TTL, order=Order("t1/c1", 7))
    assert [keys for _, keys in recording.sent] == [3, 3]  # one script each
    assert redis_client.get(PREFIX + "customer-mark:t1/c1") == b"7"
    assert 0 < redis_client.pttl(PREFIX + "customer-mark:t1/c1") <= TTL_MS
    assert redis_client.exists(PREFIX + "customer-lease:t1/c1") == 0


def test_redis_the_customers_lease_expires_with_the_lease(redis_client: redis.Redis) -> None:
    store = RedisIdempotencyStore(redis_client)
    store.acquire("msg_1", lease=LEASE, order=Order("c1", 1))
    lease_left = redis_client.pttl(PREFIX + "customer-lease:c1")
    assert LEASE_MS - 5_000 < lease_left <= LEASE_MS
    assert redis_client.pttl(PREFIX + "msg_1") - 5_000 < lease_left


class LostAcquireReply:
    """Redis runs each script, but an acquire's reply is lost (a socket timeout)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def _run(self, script: str, *args: object) -> object:
        result = self.client.eval(script, *args)
        if script in (_redis._ACQUIRE, _redis.ACQUIRE_ORDERED):
            raise redis.TimeoutError("Timeout reading from socket")
        return result


class SyncLostAcquireReply(LostAcquireReply):
    def eval(self, script: str, *args: object) -> object:
        return self._run(script, *args)


class AsyncLostAcquireReply(LostAcquireReply):
    async def eval(self, script: str, *args: object) -> object:
        return self._run(script, *args)

    async def execute_command(self, *args: object) -> object:  # pragma: no cover - only its kind matters
        return None


@pytest.mark.parametrize("use_async", [False, True])
def test_redis_an_ordered_acquire_whose_reply_was_lost_frees_the_customer_too(
    redis_client: redis.Redis, use_async: bool
) -> None:
    client = AsyncLostAcquireReply(redis_client) if use_async else SyncLostAcquireReply(redis_client)
    store = RedisIdempotencyStore(client, timeout=datetime.timedelta(seconds=2))
    order = Order("c1", 5)

    async def acquire_async() -> None:
        with pytest.raises(redis.TimeoutError):
            await store.acquire_async("msg_lost", lease=LEASE, order=order)
        for _ in range(200):  # the release runs after the caller was answered
            if not redis_client.keys("*"):
                break
            await asyncio.sleep(0.01)

    if use_async:
        asyncio.run(acquire_async())
    else:
        with pytest.raises(redis.TimeoutError):
            store.acquire("msg_lost", lease=LEASE, order=order)
        for _ in range(200):
            if not redis_client.keys("*"):
                break
            threading.Event().wait(0.01)
    # Neither the id nor the customer stays held: another delivery of the customer runs.
    assert redis_client.keys("*") == []


# --------------------------------------------------------------------------- through the dispatcher


def update(updated_at: str) -> bytes:
    payload = load_fixture("customer.updated") | {"updatedAt": updated_at}
    return json.dumps(payload).encode()


def body_of(response: WebhookResponse) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(response.body)
    return result


@pytest.mark.parametrize("kind", ["sqlite", "sqlite-async", "redis", "redis-async", "redis-asyncio"])
def test_the_dispatcher_answers_an_older_update_stale(driver: Driver, kind: str) -> None:
    dispatcher = Dispatcher(SECRET, idempotency_store=driver.store, skip_out_of_order=True)
    applied: list[str] = []

    @dispatcher.on("customer.updated")
    def record(event: CustomerUpdatedEvent) -> None:
        applied.append(event.updated_at.isoformat())

    def deliver(msg_id: str, updated_at: str) -> WebhookResponse:
        body = update(updated_at)
        headers = svix_headers(body, msg_id=msg_id)
        if driver.loop is None:
            return dispatcher.handle(body, headers)
        return driver.loop.run_until_complete(dispatcher.handle_async(body, headers))

    new = deliver("msg_new", "2026-06-18T14:22:09.120Z")
    old = deliver("msg_old", "2026-06-18T14:22:09.119Z")
    assert (new.status_code, body_of(new)["status"]) == (200, "processed")
    assert (old.status_code, body_of(old)["status"]) == (200, "stale")
    assert applied == ["2026-06-18T14:22:09.120000+00:00"]
    again = deliver("msg_old", "2026-06-18T14:22:09.119Z")  # Svix's retry: stale again, not run
    assert body_of(again)["status"] == "stale"
    assert len(applied) == 1


@pytest.mark.parametrize("kind", ["sqlite", "sqlite-async", "redis", "redis-async", "redis-asyncio"])
def test_the_dispatcher_keeps_order_per_tenant(driver: Driver, kind: str) -> None:
    def resolve(tenant: str) -> str | None:
        return SECRET if tenant in {"acme", "globex"} else None

    dispatcher = Dispatcher(resolve, idempotency_store=driver.store, skip_out_of_order=True)
    dispatcher.on("customer.updated")(lambda _event: None)

    def deliver(tenant: str, msg_id: str, updated_at: str) -> str:
        body = update(updated_at)
        headers = svix_headers(body, msg_id=msg_id)
        if driver.loop is None:
            response = dispatcher.handle(body, headers, tenant=tenant)
        else:
            response = driver.loop.run_until_complete(dispatcher.handle_async(body, headers, tenant=tenant))
        status: str = body_of(response)["status"]
        return status

    # One customer id, one webhook-id, two tenants: two customers, two deliveries.
    assert deliver("acme", "msg_new", "2026-06-18T14:22:09.120Z") == "processed"
    assert deliver("globex", "msg_old", "2026-06-18T14:22:09.119Z") == "processed"
    assert deliver("acme", "msg_old", "2026-06-18T14:22:09.119Z") == "stale"
    assert deliver("globex", "msg_new", "2026-06-18T14:22:09.120Z") == "processed"
