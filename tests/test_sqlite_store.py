"""SQLiteIdempotencyStore on a real file: the protocol, races of threads and processes, locks, restarts.

Each test has a database file of its own in ``tmp_path``. A locked database is made by
another connection that holds the write lock (``BEGIN EXCLUSIVE``), or by a child process
that holds it and is then stopped (SIGSTOP), as a stalled writer would be.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import logging
import multiprocessing
import os
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

import pytest

from carecycle_webhooks import (
    AsyncIdempotencyStore,
    Claim,
    Dispatcher,
    IdempotencyStore,
    SQLiteIdempotencyStore,
    WebhookConfigurationError,
    WebhookResponse,
    _sqlite,
)
from carecycle_webhooks._idempotency import DONE, serves
from tests.conftest import SECRET, fixture_bytes, svix_headers

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from carecycle_webhooks import CustomerCreatedEvent

LEASE = datetime.timedelta(minutes=2)
DAY = datetime.timedelta(days=1)
TIMEOUT = datetime.timedelta(seconds=0.5)
SLACK = 1.5  # seconds a call may take beyond its timeout on a busy machine
WAIT = 10.0  # upper bound of every wait for another process or thread


class Clock:
    """Unix milliseconds that the test moves by hand."""

    def __init__(self) -> None:
        self.now = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "idempotency.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteIdempotencyStore]:
    opened = SQLiteIdempotencyStore(path, timeout=TIMEOUT)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def clock(store: SQLiteIdempotencyStore) -> Clock:
    clock = Clock()
    store._clock = clock  # expiry without waiting
    return clock


def rows(path: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(path) as connection:
        found = connection.execute(
            "SELECT key, holder, expires FROM carecycle_webhooks_idempotency"
        ).fetchall()
    connection.close()
    return found


@pytest.fixture
def write_lock(path: Path, store: SQLiteIdempotencyStore) -> Iterator[Callable[[], None]]:
    """Holds the database's write lock (another connection's ``BEGIN EXCLUSIVE``) until called."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            other.rollback()

    try:
        yield release
    finally:
        release()
        other.close()


def timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    try:
        result: object = call()
    except Exception as error:  # noqa: BLE001 - the outcome under test
        result = error
    return result, time.monotonic() - started


def body_of(response: WebhookResponse) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(response.body)
    return result


class Recorder:
    """A dispatcher with one customer.created handler that records (and may fail) each run."""

    def __init__(self, store: SQLiteIdempotencyStore) -> None:
        self.dispatcher = Dispatcher(SECRET, idempotency_store=store)
        self.calls: list[str] = []
        self.fail_next = 0

        @self.dispatcher.on("customer.created")
        def record(event: CustomerCreatedEvent) -> None:
            self.calls.append(event.event_type)
            if self.fail_next:
                self.fail_next -= 1
                raise RuntimeError("handler failed")

    def deliver(self, msg_id: str) -> WebhookResponse:
        body = fixture_bytes("customer.created")
        return self.dispatcher.handle(body, svix_headers(body, msg_id=msg_id))

    async def deliver_async(self, msg_id: str) -> WebhookResponse:
        body = fixture_bytes("customer.created")
        return await self.dispatcher.handle_async(body, svix_headers(body, msg_id=msg_id))


# --------------------------------------------------------------------------- the protocol


def test_it_implements_both_protocols_and_serves_both_entry_points(store: SQLiteIdempotencyStore) -> None:
    assert isinstance(store, IdempotencyStore)
    assert isinstance(store, AsyncIdempotencyStore)
    assert serves(store, synchronous=True)
    assert serves(store, synchronous=False)


def test_statements_take_plain_qmark_parameters() -> None:
    # Python 3.12.0 to 3.12.3 warn when a sequence is bound to numbered parameters ("?1"),
    # which fails every call under -W error; plain "?" is the style a sequence is for.
    from carecycle_webhooks import _sqlite

    statements = {
        name: value
        for name, value in vars(_sqlite).items()
        if name.isupper() and isinstance(value, str) and "carecycle_webhooks_idempotency" in value
    }
    assert {"_ACQUIRE", "_HOLDER", "_COMPLETE", "_RELEASE", "_SLICE_END"} <= statements.keys()
    numbered = {name: value for name, value in statements.items() if re.search(r"[?:@$]\w", value)}
    assert numbered == {}


def test_acquire_in_flight_done(store: SQLiteIdempotencyStore, path: Path) -> None:
    claim = store.acquire("a", lease=LEASE)
    assert claim.status == "acquired"
    assert claim.token
    assert store.acquire("a", lease=LEASE) == Claim("in_flight")
    store.complete("a", claim.token, ttl=DAY)
    assert store.acquire("a", lease=LEASE) == Claim("done")
    assert [(key, holder) for key, holder, _ in rows(path)] == [("a", DONE)]


def test_each_acquire_gets_its_own_token(store: SQLiteIdempotencyStore) -> None:
    first = store.acquire("a", lease=LEASE)
    second = store.acquire("b", lease=LEASE)
    assert first.token != second.token


def test_lease_and_done_expiries_are_stored(store: SQLiteIdempotencyStore, clock: Clock, path: Path) -> None:
    claim = store.acquire("a", lease=LEASE)
    assert rows(path) == [("a", claim.token, clock.now + 120_000)]
    clock.now += 1000
    store.complete("a", claim.token, ttl=DAY)
    assert rows(path) == [("a", DONE, clock.now + 86_400_000)]


def test_release_frees_the_id_and_only_for_its_holder(store: SQLiteIdempotencyStore) -> None:
    claim = store.acquire("a", lease=LEASE)
    store.release("a", "another-token")
    assert store.acquire("a", lease=LEASE) == Claim("in_flight")
    store.release("a", claim.token)
    assert store.acquire("a", lease=LEASE).status == "acquired"


def test_release_after_complete_keeps_done(store: SQLiteIdempotencyStore) -> None:
    claim = store.acquire("a", lease=LEASE)
    store.complete("a", claim.token, ttl=DAY)
    store.release("a", claim.token)
    assert store.acquire("a", lease=LEASE) == Claim("done")


def test_only_the_holder_completes_or_releases(store: SQLiteIdempotencyStore, clock: Clock) -> None:
    first = store.acquire("a", lease=LEASE)
    clock.now += 121_000  # the first worker's lease expired (it died, or is very slow)
    second = store.acquire("a", lease=LEASE)
    assert second.status == "acquired"
    store.release("a", first.token)  # the stale holder cannot free it...
    store.complete("a", first.token, ttl=DAY)  # ...nor mark it done
    assert store.acquire("a", lease=LEASE) == Claim("in_flight")
    store.complete("a", second.token, ttl=DAY)
    assert store.acquire("a", lease=LEASE) == Claim("done")


def test_a_holder_whose_lease_expired_marks_it_done_if_nobody_took_it(
    store: SQLiteIdempotencyStore, clock: Clock
) -> None:
    late = store.acquire("a", lease=LEASE)
    clock.now += 121_000  # expired, and nobody took it since
    store.complete("a", late.token, ttl=DAY)
    assert store.acquire("a", lease=LEASE) == Claim("done")
    clock.now += 86_400_000 - 1  # kept for the whole ttl, from the completion
    assert store.acquire("a", lease=LEASE) == Claim("done")


def test_complete_marks_a_released_id_done(store: SQLiteIdempotencyStore) -> None:
    # The row is gone (released by someone, or pruned): the handlers did run.
    claim = store.acquire("a", lease=LEASE)
    store.release("a", claim.token)
    store.complete("a", claim.token, ttl=DAY)
    assert store.acquire("a", lease=LEASE) == Claim("done")


def test_complete_again_changes_nothing(store: SQLiteIdempotencyStore, clock: Clock, path: Path) -> None:
    claim = store.acquire("a", lease=LEASE)
    store.complete("a", claim.token, ttl=DAY)
    before = rows(path)
    clock.now += 100_000
    store.complete("a", claim.token, ttl=DAY)  # a retried complete: "done" is not its token
    assert rows(path) == before  # the first completion's ttl, not a renewed one
    clock.now += 86_400_000 - 99_999
    assert store.acquire("a", lease=LEASE).status == "acquired"


def test_complete_by_another_token_leaves_a_live_lease(store: SQLiteIdempotencyStore) -> None:
    store.acquire("b", lease=LEASE)
    store.complete("b", "another-token", ttl=DAY)
    assert store.acquire("b", lease=LEASE) == Claim("in_flight")


def test_an_expired_lease_can_be_acquired_again(store: SQLiteIdempotencyStore, clock: Clock) -> None:
    store.acquire("a", lease=LEASE)
    clock.now += 119_999
    assert store.acquire("a", lease=LEASE) == Claim("in_flight")
    clock.now += 1
    assert store.acquire("a", lease=LEASE).status == "acquired"


def test_done_expires_after_its_ttl(store: SQLiteIdempotencyStore, clock: Clock) -> None:
    claim = store.acquire("a", lease=LEASE)
    store.complete("a", claim.token, ttl=DAY)
    clock.now += 86_400_000 - 1
    assert store.acquire("a", lease=LEASE) == Claim("done")
    clock.now += 1
    assert store.acquire("a", lease=LEASE).status == "acquired"


def test_async_methods(store: SQLiteIdempotencyStore) -> None:
    async def scenario() -> list[str]:
        claim = await store.acquire_async("a", lease=LEASE)
        second = await store.acquire_async("a", lease=LEASE)
        await store.release_async("a", claim.token)
        third = await store.acquire_async("a", lease=LEASE)
        await store.complete_async("a", third.token, ttl=DAY)
        fourth = await store.acquire_async("a", lease=LEASE)
        return [claim.status, second.status, third.status, fourth.status]

    assert asyncio.run(scenario()) == ["acquired", "in_flight", "acquired", "done"]


def test_the_table_may_share_a_database_with_other_tables(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    connection.close()
    store = SQLiteIdempotencyStore(path)
    try:
        assert store.acquire("a", lease=LEASE).status == "acquired"
    finally:
        store.close()


def test_close_then_use_again(store: SQLiteIdempotencyStore) -> None:
    claim = store.acquire("a", lease=LEASE)
    store.close()
    store.complete("a", claim.token, ttl=DAY)  # opens a new connection
    assert store.acquire("a", lease=LEASE) == Claim("done")


# --------------------------------------------------------------------------- options


def test_options_and_defaults(path: Path) -> None:
    store = SQLiteIdempotencyStore(str(path))
    try:
        assert store.timeout == datetime.timedelta(seconds=5)
        assert store.path == str(path)
        assert repr(store) == f"SQLiteIdempotencyStore({str(path)!r})"
    finally:
        store.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()


def test_a_file_the_store_creates_has_small_pages_and_an_existing_one_keeps_its_own(tmp_path: Path) -> None:
    # Each commit copies its changed pages to the log: a 1 KiB page is a quarter of the copy.
    created = tmp_path / "created.sqlite3"
    SQLiteIdempotencyStore(created).close()
    existing = tmp_path / "existing.sqlite3"
    with sqlite3.connect(existing) as connection:
        connection.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    connection.close()
    SQLiteIdempotencyStore(existing).close()
    for path, size in ((created, 1024), (existing, 4096)):
        with sqlite3.connect(path) as connection:
            assert connection.execute("PRAGMA page_size").fetchone() == (size,)
        connection.close()


def test_a_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteIdempotencyStore("relative.sqlite3")
    store.close()
    assert store.path == str(tmp_path / "relative.sqlite3")


@pytest.mark.parametrize("bad", [42, None, b"/tmp/x.sqlite3"])
def test_path_must_be_a_str_or_path_like(bad: Any) -> None:
    with pytest.raises(WebhookConfigurationError, match=r"path must be a str or os\.PathLike"):
        SQLiteIdempotencyStore(bad)


@pytest.mark.parametrize("name", [":memory:", "", "file:x.sqlite3?mode=memory"])
def test_a_database_no_other_process_can_open_is_refused(name: str) -> None:
    with pytest.raises(WebhookConfigurationError, match="InMemoryIdempotencyStore"):
        SQLiteIdempotencyStore(name)


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "ids.sqlite3"
    with pytest.raises(WebhookConfigurationError, match="does not exist") as caught:
        SQLiteIdempotencyStore(missing)
    assert str(missing) in str(caught.value)
    assert str(missing.parent) in str(caught.value)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WebhookConfigurationError, match="is a directory"):
        SQLiteIdempotencyStore(tmp_path)


def test_a_file_that_is_not_a_database_is_refused(path: Path) -> None:
    path.write_bytes(b"not a database, " * 100)
    with pytest.raises(WebhookConfigurationError, match="file is not a database") as caught:
        SQLiteIdempotencyStore(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("timeout", [datetime.timedelta(0), datetime.timedelta(seconds=-1), 5])
def test_timeout_must_be_a_positive_timedelta(path: Path, timeout: Any) -> None:
    with pytest.raises(WebhookConfigurationError, match="timeout must be a positive"):
        SQLiteIdempotencyStore(path, timeout=timeout)


# --------------------------------------------------------------------------- restarts and growth


def test_a_new_store_on_the_same_file_sees_the_done_marks(path: Path) -> None:
    first = SQLiteIdempotencyStore(path)
    claim = first.acquire("msg_restart", lease=LEASE)
    first.complete("msg_restart", claim.token, ttl=DAY)
    in_flight = first.acquire("msg_in_flight", lease=LEASE)
    first.close()
    del first  # the process restarted

    second = SQLiteIdempotencyStore(path)
    try:
        assert second.acquire("msg_restart", lease=LEASE) == Claim("done")
        assert second.acquire("msg_in_flight", lease=LEASE) == Claim("in_flight")  # until its lease expires
        assert in_flight.token
    finally:
        second.close()


def test_pruning_bounds_the_rows(
    store: SQLiteIdempotencyStore, clock: Clock, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite, "_PRUNE_EVERY", 16)
    monkeypatch.setattr(_sqlite, "_PRUNE_SLICE_ROWS", 64)
    ttl = datetime.timedelta(seconds=10)
    sizes = []
    for number in range(3000):
        key = f"msg_{number * 7919 % 3000:05d}"  # every id once, not in key order
        store.complete(key, store.acquire(key, lease=LEASE).token, ttl=ttl)
        clock.now += 10  # 100 deliveries a second: 1,000 ids within the ttl
        sizes.append(len(rows(path)) if number % 100 == 99 else 0)
    # Without pruning, 3,000 rows; with it, at most about 4/3 of the ids within the ttl.
    assert max(sizes) <= 1400, sizes
    live = [key for key, _, expires in rows(path) if expires > clock.now]
    assert len(live) == 999  # the last second's ids but the first
    assert store.acquire(f"msg_{2999 * 7919 % 3000:05d}", lease=LEASE) == Claim("done")


def test_pruning_removes_expired_leases_too_and_never_a_live_one(
    store: SQLiteIdempotencyStore, clock: Clock, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite, "_PRUNE_EVERY", 4)
    monkeypatch.setattr(_sqlite, "_PRUNE_SLICE_ROWS", 8)
    for number in range(40):  # leases whose workers died
        store.acquire(f"dead_{number:03d}", lease=datetime.timedelta(seconds=1))
    clock.now += 1000
    live = store.acquire("live", lease=LEASE)
    for number in range(200):
        store.acquire(f"more_{number:03d}", lease=LEASE)
    keys = {key for key, _, _ in rows(path)}
    assert not {key for key in keys if key.startswith("dead_")}
    assert "live" in keys
    assert store.acquire("live", lease=LEASE) == Claim("in_flight")
    assert live.token


# --------------------------------------------------------------------------- the log (WAL)


def log_bytes(path: Path) -> int:
    log = path.parent / (path.name + "-wal")
    return log.stat().st_size if log.exists() else 0


@pytest.fixture
def statements(store: SQLiteIdempotencyStore) -> list[tuple[int, str]]:
    """Every statement of the store's connections opened from now on, with the thread that ran it."""
    seen: list[tuple[int, str]] = []
    pool = store._current_pool()
    connect = pool._connect

    def traced(quick: bool) -> sqlite3.Connection:
        connection = connect(quick)
        connection.set_trace_callback(lambda sql: seen.append((threading.get_ident(), sql)))
        return connection

    pool._connect = traced
    return seen


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "not within the wait"
        time.sleep(0.01)


@pytest.mark.parametrize("entry", ["handle", "handle_async"])
def test_no_request_waits_for_a_checkpoint(
    store: SQLiteIdempotencyStore, statements: list[tuple[int, str]], entry: str
) -> None:
    # A checkpoint waits for the disk (fsync): the store's thread does it, never the caller's
    # thread, and no commit of the caller's starts one (SQLite's automatic checkpoint).
    async def deliveries() -> None:
        for number in range(_sqlite._PRUNE_EVERY * 2):
            claim = await store.acquire_async(f"msg_{number}", lease=LEASE)
            await store.complete_async(f"msg_{number}", claim.token, ttl=DAY)

    if entry == "handle":
        for number in range(_sqlite._PRUNE_EVERY * 2):
            store.complete(f"msg_{number}", store.acquire(f"msg_{number}", lease=LEASE).token, ttl=DAY)
    else:
        asyncio.run(deliveries())
    caller = threading.get_ident()
    wait_for(lambda: any("wal_checkpoint" in sql for _, sql in statements))
    assert not [sql for thread, sql in statements if thread == caller and "checkpoint" in sql]
    # A commit copies the log itself only when the store's thread fell far behind. The
    # store's thread ends its work first: a connection it takes from the pool meanwhile must
    # not be used here at the same time (with a trace callback set, that deadlocks).
    pool = store._current_pool()
    pool.executor().shutdown(wait=True)
    for connection in (*pool._idle[False], *pool._idle[True]):
        (pages,) = connection.execute("PRAGMA wal_autocheckpoint").fetchone()
        assert pages > _sqlite._RESTART_FRAMES


@pytest.mark.parametrize("entry", ["handle", "handle_async"])
def test_the_log_stays_bounded_while_requests_never_stop(
    store: SQLiteIdempotencyStore, path: Path, monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    # A checkpoint that runs while requests write seldom catches up with them, and SQLite
    # starts the log over only when a write finds it all copied: without a restart of the
    # store's own, the log grew by every write (~10 KB a delivery) for as long as they came
    # (178 MB in a 30-second benchmark under uvicorn; 15-30 MB here). With it, the log holds
    # what is written while a checkpoint waits for the disk, a few MB.
    monkeypatch.setattr(_sqlite, "_PRUNE_EVERY", 32)
    monkeypatch.setattr(_sqlite, "_RESTART_FRAMES", 128, raising=False)  # 512 KiB
    deliveries = 8_000
    sizes: list[int] = []

    async def deliver_async() -> None:
        for number in range(deliveries):
            claim = await store.acquire_async(f"msg_{number:05d}", lease=LEASE)
            await store.complete_async(f"msg_{number:05d}", claim.token, ttl=DAY)
            if number % 200 == 199:
                sizes.append(log_bytes(path))

    if entry == "handle":
        for number in range(deliveries):
            key = f"msg_{number:05d}"
            store.complete(key, store.acquire(key, lease=LEASE).token, ttl=DAY)
            if number % 200 == 199:
                sizes.append(log_bytes(path))
    else:
        asyncio.run(deliver_async())
    assert max(sizes) <= 8 * 1024 * 1024, sizes
    assert store.acquire(f"msg_{deliveries - 1:05d}", lease=LEASE) == Claim("done")


# --------------------------------------------------------------------------- races


def test_threads_racing_for_ids_have_exactly_one_winner_each(store: SQLiteIdempotencyStore) -> None:
    barrier = threading.Barrier(16, timeout=WAIT)
    claims: list[Claim] = []
    lock = threading.Lock()

    def grab() -> None:
        barrier.wait()
        mine = [store.acquire(f"key-{n}", lease=LEASE) for n in range(100)]
        with lock:
            claims.extend(mine)

    threads = [threading.Thread(target=grab) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT * 3)
    assert len(claims) == 16 * 100
    assert sum(claim.status == "acquired" for claim in claims) == 100


def _race_in_a_process(path: str, keys: int, start: Any, results: Any) -> None:
    store = SQLiteIdempotencyStore(path, timeout=datetime.timedelta(seconds=5))
    start.wait(WAIT)
    won = [n for n in range(keys) if store.acquire(f"race-{n}", lease=LEASE).status == "acquired"]
    results.put((os.getpid(), won))
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_processes_racing_for_ids_have_exactly_one_winner_each(
    path: Path, store: SQLiteIdempotencyStore
) -> None:
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    keys = 200
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a threaded process
        processes = [
            context.Process(target=_race_in_a_process, args=(str(path), keys, start, results))
            for _ in range(4)
        ]
        for process in processes:
            process.start()
    try:
        start.set()
        answers = [results.get(timeout=WAIT * 3) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=WAIT)
            if process.is_alive():
                process.kill()
                process.join()
    won = sorted(n for _, numbers in answers for n in numbers)
    assert won == list(range(keys))  # each id won once, by exactly one process
    assert len({pid for pid, _ in answers}) == 4
    results.close()
    results.join_thread()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_connections_of_its_own(store: SQLiteIdempotencyStore) -> None:
    # gunicorn --preload: a store used before the fork has connections the child must not
    # use (SQLite forbids it) nor close (that would release its parent's locks).
    parent = store.acquire("msg_parent", lease=LEASE)
    asyncio.run(store.acquire_async("msg_parent_async", lease=LEASE))  # the parent's threads start
    inherited = store._pool
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports, then leaves at once
        try:
            status = store.acquire("msg_child", lease=LEASE).status
            status += " " + asyncio.run(store.acquire_async("msg_child_async", lease=LEASE)).status
            status += " " + str(store._pool is not inherited)
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            status = type(error).__name__
        os.write(write_end, status.encode())
        os._exit(0)
    os.close(write_end)
    try:
        answer = os.read(read_end, 200).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert answer == "acquired acquired True"
    # The parent's own connections still work after the child exited.
    store.complete("msg_parent", parent.token, ttl=DAY)
    assert store.acquire("msg_parent", lease=LEASE) == Claim("done")
    assert store.acquire("msg_child", lease=LEASE) == Claim("in_flight")


# --------------------------------------------------------------------------- a locked database


def test_a_locked_database_raises_within_the_timeout(
    store: SQLiteIdempotencyStore, write_lock: Callable[[], None]
) -> None:
    for call in (
        lambda: store.acquire("a", lease=LEASE),
        lambda: store.complete("a", "token", ttl=DAY),
        lambda: store.release("a", "token"),
    ):
        error, took = timed(call)
        assert isinstance(error, TimeoutError), error
        assert "stayed locked for 0.5 s" in str(error)
        assert 0.4 < took < TIMEOUT.total_seconds() + SLACK
    write_lock()
    assert store.acquire("a", lease=LEASE).status == "acquired"


def test_the_dispatcher_answers_503_while_locked_then_runs_the_retry_once(
    store: SQLiteIdempotencyStore, write_lock: Callable[[], None]
) -> None:
    recorder = Recorder(store)
    response, took = timed(lambda: recorder.deliver("msg_locked"))
    assert isinstance(response, WebhookResponse)
    assert (response.status_code, body_of(response)) == (503, {"error": "idempotency_store_unavailable"})
    assert took < TIMEOUT.total_seconds() + SLACK
    assert recorder.calls == []
    write_lock()
    assert body_of(recorder.deliver("msg_locked")) == {"status": "processed"}
    assert body_of(recorder.deliver("msg_locked")) == {"status": "duplicate"}
    assert recorder.calls == ["customer.created"]


def test_handle_async_does_not_block_the_loop_while_locked(
    store: SQLiteIdempotencyStore, write_lock: Callable[[], None]
) -> None:
    recorder = Recorder(store)

    async def scenario() -> tuple[WebhookResponse, list[float], float]:
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        try:
            response = await recorder.deliver_async("msg_locked_async")
        finally:
            ticking.cancel()
        return response, ticks, time.monotonic() - started

    response, ticks, took = asyncio.run(scenario())
    assert response.status_code == 503
    assert took < TIMEOUT.total_seconds() + SLACK
    # The loop went on ticking while the store waited for the lock in its threads.
    assert len(ticks) >= 10
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.3
    write_lock()

    async def retry() -> WebhookResponse:
        return await recorder.deliver_async("msg_locked_async")

    assert body_of(asyncio.run(retry())) == {"status": "processed"}
    assert recorder.calls == ["customer.created"]


def test_an_acquire_async_given_up_while_locked_takes_no_lease(
    store: SQLiteIdempotencyStore, path: Path
) -> None:
    # Every insert into the table is logged by a trigger, so a lease taken and freed at once
    # is seen too. Before the fix, the store's thread took the lease once the lock was free,
    # after its caller had answered 503; a retry coming at once then got 409.
    setup = sqlite3.connect(path, isolation_level=None)
    setup.executescript(
        "CREATE TABLE inserted (key TEXT);"
        "CREATE TRIGGER log_insert AFTER INSERT ON carecycle_webhooks_idempotency "
        "BEGIN INSERT INTO inserted VALUES (new.key); END;"
    )
    setup.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TimeoutError):
            asyncio.run(store.acquire_async("given-up", lease=LEASE))
    finally:
        setup.rollback()
    # Let the store's threads finish whatever they still do.
    executor = store._current_pool().executor()
    executor.shutdown(wait=True)
    assert setup.execute("SELECT key FROM inserted").fetchall() == []
    setup.close()


def test_handle_async_waits_for_a_short_lock(store: SQLiteIdempotencyStore, path: Path) -> None:
    # A lock held a moment (another worker's write): the call waits in a thread and succeeds.
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    timer = threading.Timer(0.1, other.rollback)
    timer.start()
    try:
        claim = asyncio.run(store.acquire_async("a", lease=LEASE))
    finally:
        timer.join()
        other.close()
    assert claim.status == "acquired"


def test_an_abandoned_async_acquire_frees_the_lease_it_took(
    store: SQLiteIdempotencyStore, path: Path
) -> None:
    # The request was cancelled while the acquire waited for the lock in a thread: when the
    # thread takes the lease after all, nobody holds its token, so it is freed at once.
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")

    async def scenario() -> None:
        waiting = asyncio.create_task(store.acquire_async("msg_cancelled", lease=LEASE))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        other.rollback()  # the lock is free: the thread takes the lease, then frees it

    try:
        asyncio.run(scenario())
    finally:
        other.close()
    # Once every thread of the store is free, the cancelled acquire has finished (and queued
    # the release of its lease, from its own thread, before that thread took more work).
    threads = _sqlite._THREADS
    everyone = threading.Barrier(threads + 1, timeout=WAIT)
    for _ in range(threads):
        store._pool.executor().submit(everyone.wait)
    everyone.wait()
    deadline = time.monotonic() + WAIT
    while rows(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rows(path) == []
    assert store.acquire("msg_cancelled", lease=LEASE).status == "acquired"


# Another process that takes the write lock, says so, and then waits to be stopped and
# killed. Plain Python run with -c: a spawned multiprocessing child would import this test
# module (and through it pytest, Hypothesis, the frameworks) first, a second and more.
HOLD_THE_WRITE_LOCK = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
connection.execute("INSERT INTO carecycle_webhooks_idempotency VALUES ('msg_stopped', 'x', 0)")
print("ready", flush=True)  # mid-transaction
time.sleep(60)  # stopped, then killed, long before this ends
"""


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_a_stopped_writer_answers_503_within_the_deadline(store: SQLiteIdempotencyStore, path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_WRITE_LOCK, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None
        ready, _, _ = select.select([writer.stdout], [], [], WAIT * 3)
        assert ready, "the writer did not take the lock"
        assert writer.stdout.readline() == "ready\n"
        os.kill(writer.pid, signal.SIGSTOP)  # a writer stalled while it holds the lock
        recorder = Recorder(store)
        response, took = timed(lambda: recorder.deliver("msg_stalled"))
        assert isinstance(response, WebhookResponse)
        assert response.status_code == 503
        assert took < TIMEOUT.total_seconds() + SLACK

        async def deliver() -> WebhookResponse:
            return await recorder.deliver_async("msg_stalled")

        response, took = timed(lambda: asyncio.run(deliver()))
        assert isinstance(response, WebhookResponse)
        assert response.status_code == 503
        assert took < TIMEOUT.total_seconds() + SLACK
        assert recorder.calls == []
    finally:
        writer.kill()  # SIGKILL ends a stopped process too
        writer.wait(WAIT)
        if writer.stdout is not None:
            writer.stdout.close()
    # Its transaction died with it: nothing of it is left, and the retry runs once.
    assert body_of(recorder.deliver("msg_stalled")) == {"status": "processed"}
    assert [key for key, _, _ in rows(path)] == ["msg_stalled"]
    assert recorder.calls == ["customer.created"]


# --------------------------------------------------------------------------- the dispatcher


def test_dispatcher_duplicate_runs_the_handler_once(store: SQLiteIdempotencyStore) -> None:
    recorder = Recorder(store)
    assert body_of(recorder.deliver("msg_dup")) == {"status": "processed"}
    for _ in range(3):
        assert body_of(recorder.deliver("msg_dup")) == {"status": "duplicate"}
    assert recorder.calls == ["customer.created"]


def test_dispatcher_handler_failure_releases_so_the_retry_runs(
    store: SQLiteIdempotencyStore, path: Path
) -> None:
    recorder = Recorder(store)
    recorder.fail_next = 1
    assert recorder.deliver("msg_fail").status_code == 500
    assert rows(path) == []  # released, not left to expire
    assert body_of(recorder.deliver("msg_fail")) == {"status": "processed"}
    assert body_of(recorder.deliver("msg_fail")) == {"status": "duplicate"}
    assert len(recorder.calls) == 2


def test_dispatcher_async_duplicate_and_failure(store: SQLiteIdempotencyStore) -> None:
    recorder = Recorder(store)
    recorder.fail_next = 1

    async def scenario() -> list[int]:
        return [(await recorder.deliver_async("msg_async")).status_code for _ in range(3)]

    assert asyncio.run(scenario()) == [500, 200, 200]
    assert len(recorder.calls) == 2


def test_dispatcher_in_flight_answers_409(store: SQLiteIdempotencyStore) -> None:
    store.acquire("msg_busy", lease=LEASE)  # another worker holds it
    recorder = Recorder(store)
    assert recorder.deliver("msg_busy").status_code == 409
    assert recorder.calls == []


def test_one_thread_reuses_one_connection_and_idle_ones_are_bounded(
    store: SQLiteIdempotencyStore,
) -> None:
    # Opening a connection per call would cost more than the statements (a cold page cache).
    opened: list[sqlite3.Connection] = []
    pool = store._current_pool()
    connect = pool._connect

    def counting(quick: bool) -> sqlite3.Connection:
        opened.append(connect(quick))
        return opened[-1]

    pool._connect = counting
    for number in range(50):
        claim = store.acquire(f"msg_{number}", lease=LEASE)
        store.complete(f"msg_{number}", claim.token, ttl=DAY)
    assert len(opened) == 1
    barrier = threading.Barrier(_sqlite._MAX_IDLE * 2, timeout=WAIT)

    def hold_one() -> None:
        pool.run(lambda _connection: barrier.wait(), ())  # every thread holds a connection at once

    threads = [threading.Thread(target=hold_one) for _ in range(_sqlite._MAX_IDLE * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT)
    assert len(opened) == _sqlite._MAX_IDLE * 2
    assert len(pool._idle[False]) == _sqlite._MAX_IDLE  # the others were closed


# --------------------------------------------------------------------------- the file replaced


def done(store: SQLiteIdempotencyStore, key: str) -> None:
    claim = store.acquire(key, lease=LEASE)
    assert claim.status == "acquired"
    store.complete(key, claim.token, ttl=DAY)


def test_a_file_deleted_with_its_log_is_created_again_so_a_restarted_worker_shares_it(
    store: SQLiteIdempotencyStore, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    done(store, "msg_before")
    for suffix in ("", "-wal", "-shm"):  # an operator cleans up, or a deploy replaces the directory
        (path.parent / (path.name + suffix)).unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, logger="carecycle_webhooks"):
        done(store, "msg_next")  # the next acquire sees it: no lease is taken in the old file
    assert "was deleted with its log: creating it again" in caplog.text
    restarted = SQLiteIdempotencyStore(path)  # a worker started after the file was deleted
    try:
        done(restarted, "msg_after")
        # This worker sees what the restarted one marked done, and the other way round.
        assert store.acquire("msg_after", lease=LEASE).status == "done"
        assert restarted.acquire("msg_next", lease=LEASE).status == "done"
    finally:
        restarted.close()


def _replace(path: Path) -> None:
    """Another database moved over the store's file, as a deploy might: its log files stay."""
    other = path.parent / "other.sqlite3"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE app (id INTEGER PRIMARY KEY, name TEXT)")
    connection.executemany("INSERT INTO app (name) VALUES (?)", [(f"row {n}",) for n in range(500)])
    connection.commit()
    connection.close()
    other.replace(path)


def _app_rows(path: Path) -> tuple[str, int]:
    """The integrity and row count of the file alone: a copy, away from the log files at its path."""
    alone = path.parent / "alone" / "copy.sqlite3"
    alone.parent.mkdir()
    shutil.copyfile(path, alone)
    connection = sqlite3.connect(alone)
    try:
        (check,) = connection.execute("PRAGMA integrity_check").fetchone()
        (rows,) = connection.execute("SELECT count(*) FROM app").fetchone()
    finally:
        connection.close()
    return check, rows


def test_a_replaced_file_fails_every_call_and_is_left_untouched(
    store: SQLiteIdempotencyStore, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Opened with the old file's log, the new one would be damaged: the store does not open it.
    done(store, "msg_before")
    in_flight = store.acquire("msg_in_flight", lease=LEASE)  # a delivery being handled meanwhile
    assert (path.parent / (path.name + "-wal")).exists()
    _replace(path)
    with caplog.at_level(logging.WARNING, logger="carecycle_webhooks"), pytest.raises(sqlite3.DatabaseError):
        store.acquire("msg_next", lease=LEASE)
    assert "was replaced or deleted while in use" in caplog.text
    assert "stop every process that uses it" in caplog.text
    with pytest.raises(sqlite3.DatabaseError, match="replaced or deleted"):  # every later call too (503)
        store.acquire("msg_later", lease=LEASE)
    with pytest.raises(sqlite3.DatabaseError, match="replaced or deleted"):
        asyncio.run(store.acquire_async("msg_later", lease=LEASE))
    # Nor do the other calls open what is at the path now (new connections would pair it
    # with the old log): the in-flight delivery's done mark, a release, a clear.
    store.close()
    with pytest.raises(sqlite3.DatabaseError, match="replaced or deleted"):
        asyncio.run(store.complete_async("msg_in_flight", in_flight.token, ttl=DAY))
    with pytest.raises(sqlite3.DatabaseError, match="replaced or deleted"):
        store.release("msg_in_flight", in_flight.token)
    with pytest.raises(sqlite3.DatabaseError, match="replaced or deleted"):
        store.clear()
    assert _app_rows(path) == ("ok", 500)  # nothing of the store's was written into it


def test_no_new_connection_opens_a_replaced_file_before_the_next_acquire_sees_it(
    store: SQLiteIdempotencyStore, path: Path
) -> None:
    claim = store.acquire("msg_in_flight", lease=LEASE)
    store.close()  # no idle connection left: the done mark needs a new one
    _replace(path)
    with pytest.raises(sqlite3.DatabaseError, match="deleted or replaced"):
        store.complete("msg_in_flight", claim.token, ttl=DAY)
    assert _app_rows(path) == ("ok", 500)


def test_a_file_deleted_without_its_log_fails_every_call(store: SQLiteIdempotencyStore, path: Path) -> None:
    done(store, "msg_before")
    path.unlink()  # the -wal and -shm stay: a new file would be opened with them
    with pytest.raises(sqlite3.DatabaseError, match="replaced or deleted"):
        asyncio.run(store.acquire_async("msg_next", lease=LEASE))
    assert not path.exists()


def test_a_file_behind_a_symbolic_link_deleted_without_its_log_fails_every_call(tmp_path: Path) -> None:
    # SQLite keeps the log files beside the link's target, not beside the link.
    volume = tmp_path / "volume"
    volume.mkdir()
    link = tmp_path / "webhooks.sqlite3"
    link.symlink_to(volume / "webhooks.sqlite3")
    store, other = SQLiteIdempotencyStore(link), SQLiteIdempotencyStore(link)  # two workers
    try:
        done(store, "msg_before")
        done(other, "msg_other")
        assert (volume / "webhooks.sqlite3-wal").exists()
        (volume / "webhooks.sqlite3").unlink()  # the target only: its log files stay
        with pytest.raises(sqlite3.DatabaseError, match="replaced or deleted"):
            store.acquire("msg_next", lease=LEASE)
        assert not (volume / "webhooks.sqlite3").exists()  # no new file beside the old log
    finally:
        store.close()
        other.close()


def test_two_workers_never_take_one_id_after_the_files_are_deleted(
    store: SQLiteIdempotencyStore, path: Path
) -> None:
    other = SQLiteIdempotencyStore(path)  # a second worker on the same file
    try:
        done(store, "msg_before")
        done(other, "msg_other")
        for suffix in ("", "-wal", "-shm"):
            (path.parent / (path.name + suffix)).unlink(missing_ok=True)
        assert store.acquire("msg_new", lease=LEASE).status == "acquired"  # the first to see it: a new file
        # The second finds a file it did not open, with a log: it fails rather than take
        # "msg_new" in the old file, where nobody else looks.
        with pytest.raises(sqlite3.DatabaseError):
            other.acquire("msg_new", lease=LEASE)
    finally:
        other.close()


def test_a_failing_housekeeping_never_fails_the_acquire_that_took_a_lease(
    store: SQLiteIdempotencyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from carecycle_webhooks._sqlite import _PRUNE_EVERY

    def broken(connection: sqlite3.Connection) -> None:
        raise sqlite3.DatabaseError("disk I/O error")

    monkeypatch.setattr(store, "_housekeeping", broken)
    claims = [store.acquire(f"msg_{number}", lease=LEASE) for number in range(_PRUNE_EVERY + 1)]
    assert {claim.status for claim in claims} == {"acquired"}


def test_a_file_that_cannot_be_opened_beside_log_files_gets_a_hint(tmp_path: Path) -> None:
    from carecycle_webhooks._sqlite_file import mispaired_hint

    path = tmp_path / "webhooks.sqlite3"
    assert mispaired_hint(str(path)) == ""
    (tmp_path / "webhooks.sqlite3-wal").write_bytes(b"not a log")  # left by a deleted database
    assert "may belong to the old database" in mispaired_hint(str(path))
