"""RedisIdempotencyStore against a real redis-server: sync and asyncio clients, and the dispatcher.

The server is started by the ``redis_server`` fixture (tests/redis_server.py) on a free
loopback port; some tests stop it to see the dispatcher answer 503, then start it again.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import json
import logging
import os
import select
import signal
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio

from carecycle_webhooks import (
    Dispatcher,
    RedisIdempotencyStore,
    WebhookConfigurationError,
    WebhookResponse,
)
from carecycle_webhooks._idempotency import DEFAULT_DONE_TTL, Claim
from tests.conftest import SECRET, fixture_bytes, svix_headers

if TYPE_CHECKING:
    from collections.abc import Callable

    from carecycle_webhooks import CustomerCreatedEvent
    from tests.redis_server import RedisServer

PREFIX = "carecycle-webhooks:"
LEASE = datetime.timedelta(minutes=2)
TTL = datetime.timedelta(hours=1)
SHORT_LEASE = datetime.timedelta(milliseconds=200)
WAIT = 5.0  # upper bound of every polling loop, in seconds


def wait_until(condition: Callable[[], bool], *, timeout: float = WAIT) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


async def wait_until_async(condition: Callable[[], Any], *, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.02)
    return bool(await condition())


def body_of(response: WebhookResponse) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(response.body)
    return result


def delivery(msg_id: str, event_type: str = "customer.created") -> tuple[bytes, dict[str, str]]:
    body = fixture_bytes(event_type)
    return body, svix_headers(body, msg_id=msg_id)


class Recorder:
    """A dispatcher with one customer.created handler that records (and may fail) each run."""

    def __init__(self, store: RedisIdempotencyStore, **options: Any) -> None:
        self.dispatcher = Dispatcher(SECRET, idempotency_store=store, **options)
        self.calls: list[str] = []
        self.fail_next = 0
        self.during: Callable[[], None] | None = None

        @self.dispatcher.on("customer.created")
        def record(event: CustomerCreatedEvent) -> None:
            self.calls.append(event.event_type)
            if self.during is not None:
                self.during()
            if self.fail_next:
                self.fail_next -= 1
                raise RuntimeError("handler failed")


# --------------------------------------------------------------------------- store, sync client


def test_client_kind_is_detected(redis_client) -> None:
    assert RedisIdempotencyStore(redis_client).is_async is False
    assert RedisIdempotencyStore(redis.asyncio.Redis(host="127.0.0.1", port=1)).is_async is True


def test_acquire_then_in_flight_then_done(redis_client) -> None:
    store = RedisIdempotencyStore(redis_client)
    claim = store.acquire("msg_1", lease=LEASE)
    assert claim.status == "acquired"
    assert claim.token
    assert store.acquire("msg_1", lease=LEASE) == Claim("in_flight")
    assert redis_client.get(PREFIX + "msg_1") == claim.token.encode()
    store.complete("msg_1", claim.token, ttl=TTL)
    assert redis_client.get(PREFIX + "msg_1") == b"done"
    assert store.acquire("msg_1", lease=LEASE) == Claim("done")
    assert store.acquire("msg_1", lease=LEASE) == Claim("done")
    # Another id is independent.
    assert store.acquire("msg_2", lease=LEASE).status == "acquired"


def test_each_acquire_gets_its_own_token(redis_client) -> None:
    store = RedisIdempotencyStore(redis_client)
    tokens = {store.acquire(f"msg_{i}", lease=LEASE).token for i in range(20)}
    assert len(tokens) == 20
    assert "" not in tokens


def test_lease_ttl_is_set(redis_client) -> None:
    store = RedisIdempotencyStore(redis_client)
    store.acquire("msg_1", lease=LEASE)
    pttl = redis_client.pttl(PREFIX + "msg_1")
    assert LEASE.total_seconds() * 1000 - 5000 < pttl <= LEASE.total_seconds() * 1000


@pytest.mark.parametrize("ttl", [TTL, DEFAULT_DONE_TTL])
def test_done_ttl_is_set(redis_client, ttl) -> None:
    store = RedisIdempotencyStore(redis_client)
    claim = store.acquire("msg_1", lease=LEASE)
    store.complete("msg_1", claim.token, ttl=ttl)
    pttl = redis_client.pttl(PREFIX + "msg_1")
    assert ttl.total_seconds() * 1000 - 5000 < pttl <= ttl.total_seconds() * 1000


def test_complete_only_by_the_lease_holder(redis_client) -> None:
    store = RedisIdempotencyStore(redis_client)
    claim = store.acquire("msg_1", lease=LEASE)
    store.complete("msg_1", "not-the-token", ttl=TTL)
    assert redis_client.get(PREFIX + "msg_1") == claim.token.encode()
    assert store.acquire("msg_1", lease=LEASE).status == "in_flight"
    # An id nobody holds (its lease expired, or Redis lost it) is marked done: whoever
    # completes it ran its handlers.
    store.complete("msg_none", claim.token, ttl=TTL)
    assert redis_client.get(PREFIX + "msg_none") == b"done"


def test_complete_after_the_lease_expired_marks_done_if_nobody_took_it(redis_client) -> None:
    store = RedisIdempotencyStore(redis_client)
    late = store.acquire("msg_late", lease=SHORT_LEASE)
    assert wait_until(lambda: redis_client.exists(PREFIX + "msg_late") == 0)
    store.complete("msg_late", late.token, ttl=TTL)
    assert store.acquire("msg_late", lease=LEASE) == Claim("done")
    assert TTL.total_seconds() * 1000 - 5000 < redis_client.pttl(PREFIX + "msg_late")
    # Done stays done: a repeated complete, by anyone, changes nothing.
    redis_client.pexpire(PREFIX + "msg_late", 60_000)
    store.complete("msg_late", late.token, ttl=TTL)
    store.complete("msg_late", "another-token", ttl=TTL)
    assert redis_client.get(PREFIX + "msg_late") == b"done"
    assert redis_client.pttl(PREFIX + "msg_late") <= 60_000


def test_release_only_by_the_lease_holder(redis_client) -> None:
    store = RedisIdempotencyStore(redis_client)
    claim = store.acquire("msg_1", lease=LEASE)
    store.release("msg_1", "not-the-token")
    assert store.acquire("msg_1", lease=LEASE).status == "in_flight"
    store.release("msg_1", claim.token)
    assert redis_client.exists(PREFIX + "msg_1") == 0
    again = store.acquire("msg_1", lease=LEASE)
    assert again.status == "acquired"
    assert again.token != claim.token


def test_release_after_complete_keeps_done(redis_client) -> None:
    store = RedisIdempotencyStore(redis_client)
    claim = store.acquire("msg_1", lease=LEASE)
    store.complete("msg_1", claim.token, ttl=TTL)
    store.release("msg_1", claim.token)
    store.complete("msg_1", claim.token, ttl=datetime.timedelta(seconds=1))  # no longer its lease
    assert store.acquire("msg_1", lease=LEASE) == Claim("done")
    assert redis_client.pttl(PREFIX + "msg_1") > 60_000


def test_expired_lease_can_be_acquired_again(redis_client) -> None:
    # A worker that died mid-handler never releases: its lease expires, the retry runs.
    store = RedisIdempotencyStore(redis_client)
    dead = store.acquire("msg_1", lease=SHORT_LEASE)
    assert dead.status == "acquired"
    assert store.acquire("msg_1", lease=SHORT_LEASE).status == "in_flight"
    assert wait_until(lambda: redis_client.exists(PREFIX + "msg_1") == 0)
    retry = store.acquire("msg_1", lease=LEASE)
    assert retry.status == "acquired"
    # The dead worker, come back, can neither complete nor release the new holder's lease.
    store.complete("msg_1", dead.token, ttl=TTL)
    store.release("msg_1", dead.token)
    assert redis_client.get(PREFIX + "msg_1") == retry.token.encode()
    store.complete("msg_1", retry.token, ttl=TTL)
    assert store.acquire("msg_1", lease=LEASE) == Claim("done")


def test_keys_use_the_prefix(redis_client) -> None:
    redis_client.set("unrelated", "kept")
    RedisIdempotencyStore(redis_client).acquire("msg_1", lease=LEASE)
    custom = RedisIdempotencyStore(redis_client, prefix="tenant-a:webhooks:")
    custom.acquire("msg_1", lease=LEASE)
    assert sorted(redis_client.keys("*")) == [
        PREFIX.encode() + b"msg_1",
        b"tenant-a:webhooks:msg_1",
        b"unrelated",
    ]
    # Different prefixes are different namespaces: the same id is acquired in each.
    assert RedisIdempotencyStore(redis_client, prefix="tenant-b:").acquire("msg_1", lease=LEASE).status == (
        "acquired"
    )


def test_existing_value_under_the_key_is_not_overwritten(redis_client) -> None:
    # Whatever holds the key (another worker's token) means in flight, never acquired.
    redis_client.set(PREFIX + "msg_1", "someone-elses-token", px=60_000)
    store = RedisIdempotencyStore(redis_client)
    assert store.acquire("msg_1", lease=LEASE) == Claim("in_flight")
    assert redis_client.get(PREFIX + "msg_1") == b"someone-elses-token"


def test_decode_responses_client(redis_server, redis_client) -> None:
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=1, decode_responses=True)
    try:
        store = RedisIdempotencyStore(client)
        claim = store.acquire("msg_1", lease=LEASE)
        assert claim.status == "acquired"
        assert store.acquire("msg_1", lease=LEASE) == Claim("in_flight")
        store.complete("msg_1", claim.token, ttl=TTL)
        assert store.acquire("msg_1", lease=LEASE) == Claim("done")
    finally:
        client.close()


def test_concurrent_acquire_has_exactly_one_winner(redis_server, redis_client) -> None:
    workers = 20
    store = RedisIdempotencyStore(redis_client)
    barrier = threading.Barrier(workers, timeout=WAIT)
    claims: list[Claim] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait()
            claim = store.acquire("msg_race", lease=LEASE)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            with lock:
                errors.append(error)
            return
        with lock:
            claims.append(claim)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    statuses = sorted(claim.status for claim in claims)
    assert statuses == ["acquired"] + ["in_flight"] * (workers - 1)
    winner = next(claim for claim in claims if claim.status == "acquired")
    assert redis_client.get(PREFIX + "msg_race") == winner.token.encode()


def test_concurrent_acquire_with_one_client_per_thread(redis_server, redis_client) -> None:
    # As with separate worker processes: one connection each.
    workers = 20
    clients = [
        redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=1) for _ in range(workers)
    ]
    barrier = threading.Barrier(workers, timeout=WAIT)
    statuses: list[str] = []
    lock = threading.Lock()

    def worker(client: redis.Redis) -> None:
        store = RedisIdempotencyStore(client)
        barrier.wait()
        status = store.acquire("msg_race", lease=LEASE).status
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=worker, args=(client,)) for client in clients]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=WAIT)
    finally:
        for client in clients:
            client.close()
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(statuses) == ["acquired"] + ["in_flight"] * (workers - 1)


def test_store_raises_when_redis_is_down(redis_server: RedisServer, redis_client) -> None:
    store = RedisIdempotencyStore(redis_client)
    redis_server.stop()
    try:
        with pytest.raises(redis.ConnectionError):
            store.acquire("msg_1", lease=LEASE)
        with pytest.raises(redis.ConnectionError):
            store.complete("msg_1", "token", ttl=TTL)
        with pytest.raises(redis.ConnectionError):
            store.release("msg_1", "token")
    finally:
        redis_server.start()
    assert store.acquire("msg_1", lease=LEASE).status == "acquired"


# --------------------------------------------------------------------------- store, asyncio client


def test_async_store_lifecycle(async_redis_client, redis_client) -> None:
    async def main() -> None:
        async with async_redis_client() as client:
            store = RedisIdempotencyStore(client)
            assert store.is_async
            claim = await store.acquire_async("msg_1", lease=LEASE)
            assert claim.status == "acquired"
            assert await store.acquire_async("msg_1", lease=LEASE) == Claim("in_flight")
            await store.complete_async("msg_1", "not-the-token", ttl=TTL)
            await store.release_async("msg_1", "not-the-token")
            assert await client.get(PREFIX + "msg_1") == claim.token.encode()
            await store.complete_async("msg_1", claim.token, ttl=TTL)
            assert await store.acquire_async("msg_1", lease=LEASE) == Claim("done")
            pttl = await client.pttl(PREFIX + "msg_1")
            assert TTL.total_seconds() * 1000 - 5000 < pttl <= TTL.total_seconds() * 1000

            other = await store.acquire_async("msg_2", lease=LEASE)
            await store.release_async("msg_2", other.token)
            assert await client.exists(PREFIX + "msg_2") == 0
            assert (await store.acquire_async("msg_2", lease=LEASE)).status == "acquired"

    asyncio.run(main())
    assert redis_client.get(PREFIX + "msg_1") == b"done"


def test_async_store_expired_lease_can_be_acquired_again(async_redis_client) -> None:
    async def main() -> None:
        async with async_redis_client() as client:
            store = RedisIdempotencyStore(client)
            dead = await store.acquire_async("msg_1", lease=SHORT_LEASE)
            assert dead.status == "acquired"
            assert (await store.acquire_async("msg_1", lease=SHORT_LEASE)).status == "in_flight"

            async def gone() -> bool:
                return await client.exists(PREFIX + "msg_1") == 0

            assert await wait_until_async(gone)
            retry = await store.acquire_async("msg_1", lease=LEASE)
            assert retry.status == "acquired"
            await store.complete_async("msg_1", dead.token, ttl=TTL)
            await store.release_async("msg_1", dead.token)
            assert await client.get(PREFIX + "msg_1") == retry.token.encode()

    asyncio.run(main())


def test_async_concurrent_acquire_has_exactly_one_winner(async_redis_client) -> None:
    async def main() -> list[str]:
        async with async_redis_client() as client:
            store = RedisIdempotencyStore(client)
            claims = await asyncio.gather(*(store.acquire_async("msg_race", lease=LEASE) for _ in range(20)))
            return sorted(claim.status for claim in claims)

    assert asyncio.run(main()) == ["acquired"] + ["in_flight"] * 19


def test_sync_client_store_from_the_event_loop(redis_client) -> None:
    # A synchronous client serves the async methods too, in a worker thread.
    store = RedisIdempotencyStore(redis_client)
    loop_thread: list[int] = []

    async def main() -> None:
        loop_thread.append(threading.get_ident())
        claim = await store.acquire_async("msg_1", lease=LEASE)
        assert claim.status == "acquired"
        assert await store.acquire_async("msg_1", lease=LEASE) == Claim("in_flight")
        await store.complete_async("msg_1", claim.token, ttl=TTL)
        assert await store.acquire_async("msg_1", lease=LEASE) == Claim("done")
        other = await store.acquire_async("msg_2", lease=LEASE)
        await store.release_async("msg_2", other.token)

    asyncio.run(main())
    assert redis_client.get(PREFIX + "msg_1") == b"done"
    assert redis_client.exists(PREFIX + "msg_2") == 0


def test_async_client_store_refuses_sync_calls(async_redis_client, redis_client) -> None:
    async def main() -> None:
        async with async_redis_client() as client:
            store = RedisIdempotencyStore(client)
            with pytest.raises(WebhookConfigurationError, match="handle_async"):
                store.acquire("msg_1", lease=LEASE)
            with pytest.raises(WebhookConfigurationError, match="handle_async"):
                store.complete("msg_1", "token", ttl=TTL)
            with pytest.raises(WebhookConfigurationError, match="handle_async"):
                store.release("msg_1", "token")

    asyncio.run(main())
    assert redis_client.keys("*") == []


class _UndetectedAsyncClient:
    """An asyncio-style client whose ``eval`` is a plain method returning a coroutine."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client

    def eval(self, *args: Any) -> Any:
        return self._client.eval(*args)


def test_undetected_async_client_is_refused_by_sync_calls_and_awaited_by_async_ones(
    async_redis_client, redis_client
) -> None:
    async def main() -> None:
        async with async_redis_client() as client:
            store = RedisIdempotencyStore(_UndetectedAsyncClient(client))
            assert store.is_async is False
            claim = await store.acquire_async("msg_1", lease=LEASE)
            assert claim.status == "acquired"
            await store.complete_async("msg_1", claim.token, ttl=TTL)
            assert await store.acquire_async("msg_1", lease=LEASE) == Claim("done")
            # Used synchronously, its coroutine is closed unsent (no "never awaited"
            # warning: warnings are errors here) and the store says what is wrong.
            with pytest.raises(WebhookConfigurationError, match="handle_async"):
                store.acquire("msg_2", lease=LEASE)
            assert store.is_async is True

    asyncio.run(main())
    assert redis_client.exists(PREFIX + "msg_2") == 0


# --------------------------------------------------------------------------- dispatcher, sync


def test_dispatcher_duplicate_runs_the_handler_once(redis_client) -> None:
    recorder = Recorder(RedisIdempotencyStore(redis_client))
    body, headers = delivery("msg_dup")
    first = recorder.dispatcher.handle(body, headers)
    assert (first.status_code, body_of(first)) == (200, {"status": "processed"})
    assert redis_client.get(PREFIX + "msg_dup") == b"done"
    pttl = redis_client.pttl(PREFIX + "msg_dup")
    assert DEFAULT_DONE_TTL.total_seconds() * 1000 - 5000 < pttl <= DEFAULT_DONE_TTL.total_seconds() * 1000
    for _ in range(3):
        again = recorder.dispatcher.handle(body, svix_headers(body, msg_id="msg_dup"))
        assert (again.status_code, body_of(again)) == (200, {"status": "duplicate"})
    assert recorder.calls == ["customer.created"]
    # A different webhook-id with the same body is a different delivery.
    other = recorder.dispatcher.handle(*delivery("msg_other"))
    assert body_of(other) == {"status": "processed"}
    assert len(recorder.calls) == 2


def test_dispatcher_done_ttl_and_lease_options(redis_client) -> None:
    done_ttl = datetime.timedelta(hours=30)
    recorder = Recorder(RedisIdempotencyStore(redis_client), done_ttl=done_ttl, lease=SHORT_LEASE)
    pttls: list[int] = []
    recorder.during = lambda: pttls.append(redis_client.pttl(PREFIX + "msg_1"))
    assert recorder.dispatcher.handle(*delivery("msg_1")).status_code == 200
    assert len(pttls) == 1
    assert 0 < pttls[0] <= 200  # the lease, while the handler runs
    pttl = redis_client.pttl(PREFIX + "msg_1")
    assert done_ttl.total_seconds() * 1000 - 5000 < pttl <= done_ttl.total_seconds() * 1000


def test_dispatcher_in_flight_answers_409(redis_client) -> None:
    # Another worker holds the lease: 409, the handler does not run, the lease is untouched.
    redis_client.set(PREFIX + "msg_busy", "other-worker-token", px=60_000)
    recorder = Recorder(RedisIdempotencyStore(redis_client))
    response = recorder.dispatcher.handle(*delivery("msg_busy"))
    assert response.status_code == 409
    assert body_of(response)["error"] == "in_flight"
    assert recorder.calls == []
    assert redis_client.get(PREFIX + "msg_busy") == b"other-worker-token"


def test_dispatcher_handler_failure_releases_so_the_retry_runs(redis_client) -> None:
    recorder = Recorder(RedisIdempotencyStore(redis_client))
    recorder.fail_next = 1
    body, headers = delivery("msg_fail")
    failed = recorder.dispatcher.handle(body, headers)
    assert failed.status_code == 500
    assert body_of(failed) == {"error": "handler_failed"}
    assert redis_client.exists(PREFIX + "msg_fail") == 0  # released, not left to expire
    retried = recorder.dispatcher.handle(body, svix_headers(body, msg_id="msg_fail"))
    assert (retried.status_code, body_of(retried)) == (200, {"status": "processed"})
    duplicate = recorder.dispatcher.handle(body, svix_headers(body, msg_id="msg_fail"))
    assert body_of(duplicate) == {"status": "duplicate"}
    assert len(recorder.calls) == 2


def test_dispatcher_worker_died_mid_handler(redis_client) -> None:
    # A worker took the lease and died: until the lease expires the retry gets 409,
    # then it runs the handler.
    store = RedisIdempotencyStore(redis_client)
    assert store.acquire("msg_dead", lease=SHORT_LEASE).status == "acquired"
    recorder = Recorder(store)
    body, _ = delivery("msg_dead")
    assert recorder.dispatcher.handle(body, svix_headers(body, msg_id="msg_dead")).status_code == 409
    assert wait_until(lambda: redis_client.exists(PREFIX + "msg_dead") == 0)
    response = recorder.dispatcher.handle(body, svix_headers(body, msg_id="msg_dead"))
    assert body_of(response) == {"status": "processed"}
    assert recorder.calls == ["customer.created"]


def test_dispatcher_redis_down_answers_503_then_the_retry_runs_once(
    redis_server: RedisServer, redis_client, caplog
) -> None:
    recorder = Recorder(RedisIdempotencyStore(redis_client))
    body, _ = delivery("msg_outage")
    redis_server.stop()
    try:
        with caplog.at_level(logging.ERROR, logger="carecycle_webhooks"):
            for _ in range(2):
                response = recorder.dispatcher.handle(body, svix_headers(body, msg_id="msg_outage"))
                assert response.status_code == 503
                assert body_of(response) == {"error": "idempotency_store_unavailable"}
        assert recorder.calls == []
        assert "failed to acquire msg_outage" in caplog.text
    finally:
        redis_server.start()
    retried = recorder.dispatcher.handle(body, svix_headers(body, msg_id="msg_outage"))
    assert (retried.status_code, body_of(retried)) == (200, {"status": "processed"})
    again = recorder.dispatcher.handle(body, svix_headers(body, msg_id="msg_outage"))
    assert (again.status_code, body_of(again)) == (200, {"status": "duplicate"})
    assert recorder.calls == ["customer.created"]


def test_dispatcher_redis_lost_during_the_handler(redis_server: RedisServer, redis_client, caplog) -> None:
    # The handler ran: the delivery is answered 200 even though it cannot be marked done
    # (a 5xx would make Svix deliver it again, on purpose).
    recorder = Recorder(RedisIdempotencyStore(redis_client))
    recorder.during = redis_server.stop
    try:
        with caplog.at_level(logging.ERROR, logger="carecycle_webhooks"):
            response = recorder.dispatcher.handle(*delivery("msg_lost"))
    finally:
        redis_server.start()
    assert (response.status_code, body_of(response)) == (200, {"status": "processed"})
    assert recorder.calls == ["customer.created"]
    assert "failed to complete msg_lost" in caplog.text


def answers(probe: Callable[[], bool]) -> Callable[[], bool]:
    """``probe``, False while Redis does not answer (the client's first call after a restart fails)."""

    def guarded() -> bool:
        try:
            return probe()
        except redis.ConnectionError:
            return False

    return guarded


@pytest.mark.parametrize("use_async", [False, True])
def test_dispatcher_marks_done_before_answering_when_redis_is_back_within_the_retries(
    redis_server: RedisServer, redis_client, async_redis_client, monkeypatch, use_async: bool
) -> None:
    # Redis went away while the handler ran and came back (empty: this one keeps no data)
    # a moment later: the retries within the request record the done mark before the answer.
    monkeypatch.setattr("carecycle_webhooks._flow.RETRY_DELAYS", (0.1, 0.2, 0.4, 0.8))  # the real ones
    restart = threading.Timer(0.2, redis_server.start)

    def down_for_a_moment() -> None:
        redis_server.stop()
        restart.start()

    async def main() -> tuple[Recorder, WebhookResponse]:
        async with async_redis_client() as client:
            recorder = Recorder(RedisIdempotencyStore(client))
            recorder.during = down_for_a_moment  # a sync handler: in a worker thread
            return recorder, await recorder.dispatcher.handle_async(*delivery("msg_back_soon"))

    try:
        if use_async:
            recorder, response = asyncio.run(main())
        else:
            recorder = Recorder(RedisIdempotencyStore(redis_client))
            recorder.during = down_for_a_moment
            response = recorder.dispatcher.handle(*delivery("msg_back_soon"))
    finally:
        restart.join(timeout=10)
    assert (response.status_code, body_of(response)) == (200, {"status": "processed"})
    assert len(recorder.dispatcher._missed) == 0  # recorded within the request
    assert wait_until(answers(lambda: redis_client.get(PREFIX + "msg_back_soon") == b"done"))


@pytest.mark.parametrize("use_async", [False, True])
def test_dispatcher_records_a_mark_missed_past_the_retries_on_its_next_delivery(
    redis_server: RedisServer, redis_client, async_redis_client, use_async: bool
) -> None:
    # Redis stayed down past the retries within the request: the dispatcher keeps the mark
    # (nothing runs in the background), and its next delivery records it first.
    def deliver_all(recorder: Recorder) -> list[WebhookResponse]:
        recorder.during = redis_server.stop
        try:
            first = recorder.dispatcher.handle(*delivery("msg_missed"))
        finally:
            redis_server.start()
        assert list(recorder.dispatcher._missed.marks) == ["msg_missed"]
        recorder.during = None
        assert wait_until(answers(lambda: bool(redis_client.ping())))  # the store's client, reconnected
        later = [recorder.dispatcher.handle(*delivery(msg_id)) for msg_id in ("msg_next", "msg_missed")]
        return [first, *later]

    async def deliver_all_async() -> list[WebhookResponse]:
        async with async_redis_client() as client:
            recorder = Recorder(RedisIdempotencyStore(client))
            recorder.during = redis_server.stop  # a sync handler: in a worker thread
            try:
                first = await recorder.dispatcher.handle_async(*delivery("msg_missed"))
            finally:
                await asyncio.to_thread(redis_server.start)
            assert list(recorder.dispatcher._missed.marks) == ["msg_missed"]
            recorder.during = None

            async def warm() -> bool:
                try:
                    return bool(await client.ping())
                except redis.ConnectionError:
                    return False

            assert await wait_until_async(warm)  # the store's client, reconnected
            responses = [first]
            responses.extend(
                [
                    await recorder.dispatcher.handle_async(*delivery(msg_id))
                    for msg_id in ("msg_next", "msg_missed")
                ]
            )
            assert recorder.calls == ["customer.created", "customer.created"]
            return responses

    if use_async:
        responses = asyncio.run(deliver_all_async())
    else:
        recorder = Recorder(RedisIdempotencyStore(redis_client))
        responses = deliver_all(recorder)
        assert recorder.calls == ["customer.created", "customer.created"]
    assert [body_of(response) for response in responses] == [
        {"status": "processed"},
        {"status": "processed"},  # recorded msg_missed's mark first
        {"status": "duplicate"},
    ]
    assert redis_client.get(PREFIX + "msg_missed") == b"done"


def test_dispatcher_redis_lost_during_a_failing_handler(
    redis_server: RedisServer, redis_client, caplog
) -> None:
    recorder = Recorder(RedisIdempotencyStore(redis_client))
    recorder.during = redis_server.stop
    recorder.fail_next = 1
    try:
        with caplog.at_level(logging.ERROR, logger="carecycle_webhooks"):
            response = recorder.dispatcher.handle(*delivery("msg_lost"))
    finally:
        redis_server.start()
    assert response.status_code == 500
    assert "failed to release msg_lost" in caplog.text


def test_dispatcher_concurrent_duplicates_run_the_handler_once(redis_client) -> None:
    # The same delivery reaching several workers at once: one processes it, the others
    # get 409 (while it runs) or "duplicate" (after).
    workers = 10
    store = RedisIdempotencyStore(redis_client)
    dispatcher = Dispatcher(SECRET, idempotency_store=store)
    runs: list[int] = []
    started = threading.Event()
    release = threading.Event()

    @dispatcher.on("customer.created")
    def slow(event: CustomerCreatedEvent) -> None:
        runs.append(1)
        started.set()
        release.wait(WAIT)

    body = fixture_bytes("customer.created")
    responses: list[WebhookResponse] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers, timeout=WAIT)

    def worker() -> None:
        headers = svix_headers(body, msg_id="msg_concurrent")
        barrier.wait()
        response = dispatcher.handle(body, headers)
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    assert started.wait(WAIT)
    assert wait_until(lambda: len(responses) == workers - 1)
    release.set()
    for thread in threads:
        thread.join(timeout=WAIT)
    assert not any(thread.is_alive() for thread in threads)
    assert len(runs) == 1
    codes = sorted(response.status_code for response in responses)
    assert codes == [200] + [409] * (workers - 1)
    assert body_of(next(r for r in responses if r.status_code == 200)) == {"status": "processed"}


def test_dispatcher_handle_with_asyncio_client_is_a_configuration_error(
    async_redis_client, redis_client
) -> None:
    # An asyncio client cannot serve the synchronous handle(): a mistake of set-up, said
    # at once, not a 503 that Svix would retry for 28 hours. No handler runs.
    async def main() -> list[str]:
        async with async_redis_client() as client:
            recorder = Recorder(RedisIdempotencyStore(client))
            with pytest.raises(
                WebhookConfigurationError,
                match=r"cannot serve Dispatcher\.handle: call Dispatcher\.handle_async",
            ):
                recorder.dispatcher.handle(*delivery("msg_wrong"))
            return recorder.calls

    assert asyncio.run(main()) == []
    assert redis_client.keys("*") == []


# --------------------------------------------------------------------------- dispatcher, async


def test_dispatcher_async_duplicate_runs_the_handler_once(async_redis_client, redis_client) -> None:
    async def main() -> list[WebhookResponse]:
        async with async_redis_client() as client:
            dispatcher = Dispatcher(SECRET, idempotency_store=RedisIdempotencyStore(client))
            calls: list[str] = []

            @dispatcher.on("customer.created")
            async def record(event: CustomerCreatedEvent) -> None:
                calls.append(event.event_type)

            body = fixture_bytes("customer.created")
            responses = [
                await dispatcher.handle_async(body, svix_headers(body, msg_id="msg_dup")) for _ in range(3)
            ]
            assert calls == ["customer.created"]
            return responses

    responses = asyncio.run(main())
    assert [body_of(r) for r in responses] == [
        {"status": "processed"},
        {"status": "duplicate"},
        {"status": "duplicate"},
    ]
    assert all(r.status_code == 200 for r in responses)
    assert redis_client.get(PREFIX + "msg_dup") == b"done"
    pttl = redis_client.pttl(PREFIX + "msg_dup")
    assert DEFAULT_DONE_TTL.total_seconds() * 1000 - 5000 < pttl <= DEFAULT_DONE_TTL.total_seconds() * 1000


def test_dispatcher_async_handler_failure_releases_so_the_retry_runs(
    async_redis_client, redis_client
) -> None:
    async def main() -> None:
        async with async_redis_client() as client:
            recorder = Recorder(RedisIdempotencyStore(client))
            recorder.fail_next = 1
            body = fixture_bytes("customer.created")
            failed = await recorder.dispatcher.handle_async(body, svix_headers(body, msg_id="msg_fail"))
            assert failed.status_code == 500
            assert await client.exists(PREFIX + "msg_fail") == 0
            retried = await recorder.dispatcher.handle_async(body, svix_headers(body, msg_id="msg_fail"))
            assert body_of(retried) == {"status": "processed"}
            duplicate = await recorder.dispatcher.handle_async(body, svix_headers(body, msg_id="msg_fail"))
            assert body_of(duplicate) == {"status": "duplicate"}
            assert len(recorder.calls) == 2

    asyncio.run(main())
    assert redis_client.get(PREFIX + "msg_fail") == b"done"


def test_dispatcher_async_in_flight_answers_409(async_redis_client, redis_client) -> None:
    redis_client.set(PREFIX + "msg_busy", "other-worker-token", px=60_000)

    async def main() -> tuple[WebhookResponse, list[str]]:
        async with async_redis_client() as client:
            recorder = Recorder(RedisIdempotencyStore(client))
            return await recorder.dispatcher.handle_async(*delivery("msg_busy")), recorder.calls

    response, calls = asyncio.run(main())
    assert response.status_code == 409
    assert calls == []
    assert redis_client.get(PREFIX + "msg_busy") == b"other-worker-token"


def test_dispatcher_async_redis_down_answers_503_then_the_retry_runs_once(
    redis_server: RedisServer, async_redis_client, caplog
) -> None:
    async def main() -> list[str]:
        async with async_redis_client() as client:
            recorder = Recorder(RedisIdempotencyStore(client))
            body = fixture_bytes("customer.created")
            # A connection in the pool before the outage, as in a long-running worker.
            assert await client.ping()
            redis_server.stop()
            try:
                with caplog.at_level(logging.ERROR, logger="carecycle_webhooks"):
                    for _ in range(2):
                        down = await recorder.dispatcher.handle_async(
                            body, svix_headers(body, msg_id="msg_outage")
                        )
                        assert down.status_code == 503
                        assert body_of(down) == {"error": "idempotency_store_unavailable"}
                assert recorder.calls == []
            finally:
                redis_server.start()
            retried = await recorder.dispatcher.handle_async(body, svix_headers(body, msg_id="msg_outage"))
            assert body_of(retried) == {"status": "processed"}
            again = await recorder.dispatcher.handle_async(body, svix_headers(body, msg_id="msg_outage"))
            assert body_of(again) == {"status": "duplicate"}
            return recorder.calls

    assert asyncio.run(main()) == ["customer.created"]
    assert "failed to acquire msg_outage" in caplog.text


def test_dispatcher_async_concurrent_duplicates_run_the_handler_once(async_redis_client) -> None:
    async def main() -> tuple[list[int], list[WebhookResponse]]:
        async with async_redis_client() as client:
            dispatcher = Dispatcher(SECRET, idempotency_store=RedisIdempotencyStore(client))
            runs: list[int] = []
            release = asyncio.Event()

            @dispatcher.on("customer.created")
            async def slow(event: CustomerCreatedEvent) -> None:
                runs.append(1)
                await asyncio.wait_for(release.wait(), WAIT)

            body = fixture_bytes("customer.created")
            tasks = [
                asyncio.ensure_future(dispatcher.handle_async(body, svix_headers(body, msg_id="msg_c")))
                for _ in range(10)
            ]

            async def others_done() -> bool:
                return sum(task.done() for task in tasks) == 9

            assert await wait_until_async(others_done)
            release.set()
            responses = await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
            return runs, responses

    runs, responses = asyncio.run(main())
    assert runs == [1]
    assert sorted(r.status_code for r in responses) == [200] + [409] * 9


def test_dispatcher_async_with_sync_client(redis_server: RedisServer, redis_client) -> None:
    # A synchronous client serves handle_async through a worker thread.
    recorder = Recorder(RedisIdempotencyStore(redis_client))
    body = fixture_bytes("customer.created")

    async def handle() -> WebhookResponse:
        return await recorder.dispatcher.handle_async(body, svix_headers(body, msg_id="msg_sync"))

    assert body_of(asyncio.run(handle())) == {"status": "processed"}
    assert body_of(asyncio.run(handle())) == {"status": "duplicate"}
    assert recorder.calls == ["customer.created"]
    assert redis_client.get(PREFIX + "msg_sync") == b"done"

    recorder.fail_next = 1
    failing = fixture_bytes("customer.created")
    failed = asyncio.run(
        recorder.dispatcher.handle_async(failing, svix_headers(failing, msg_id="msg_sync_fail"))
    )
    assert failed.status_code == 500
    assert redis_client.exists(PREFIX + "msg_sync_fail") == 0

    redis_server.stop()
    try:
        down = asyncio.run(recorder.dispatcher.handle_async(body, svix_headers(body, msg_id="msg_sync_2")))
    finally:
        redis_server.start()
    assert down.status_code == 503
    assert len(recorder.calls) == 2
    up = asyncio.run(recorder.dispatcher.handle_async(body, svix_headers(body, msg_id="msg_sync_2")))
    assert body_of(up) == {"status": "processed"}
    assert len(recorder.calls) == 3


def test_server_helper_restarts_on_the_same_port(redis_server: RedisServer, redis_client) -> None:
    from tests.redis_server import ping

    port = redis_server.port
    redis_client.set("key", "value")
    redis_server.stop()
    assert not redis_server.running
    assert not ping(port)
    redis_server.stop()  # stopping twice is harmless
    redis_server.start()
    assert redis_server.port == port
    assert ping(port)
    assert redis_client.get("key") is None  # nothing persisted
    with pytest.raises(RuntimeError, match="already running"):
        redis_server.start()


class _Pending:
    """An awaitable that is not a coroutine (like a future), resolving to Redis' nil."""

    def __await__(self) -> Any:
        yield from ()


class _FutureClient:
    def __init__(self) -> None:
        self.calls = 0

    def eval(self, *args: Any) -> _Pending:
        self.calls += 1
        return _Pending()


def test_client_returning_other_awaitables() -> None:
    client = _FutureClient()
    store = RedisIdempotencyStore(client)
    assert store.is_async is False
    assert asyncio.run(store.acquire_async("msg_1", lease=LEASE)).status == "acquired"
    with pytest.raises(WebhookConfigurationError, match="handle_async"):
        store.release("msg_1", "token")
    assert store.is_async is True
    assert client.calls == 2


# --------------------------------------------------------------------------- retried scripts


def test_a_retried_acquire_holds_the_lease_its_first_attempt_took(redis_client) -> None:
    # redis-py sends a script again, with the same arguments, when a reply is lost (a
    # timeout, a dropped connection): the repeat must not answer "in flight" to the very
    # call that took the lease, which would then be refused for the whole lease.
    from carecycle_webhooks._redis import _ACQUIRE, _COMPLETE, _RELEASE

    key, token = PREFIX + "msg_retried", "token-1"
    assert redis_client.eval(_ACQUIRE, 1, key, token, 120_000) is None  # the first attempt
    assert redis_client.eval(_ACQUIRE, 1, key, token, 120_000) is None  # its repeat: still ours
    assert redis_client.get(key) == token.encode()
    assert redis_client.eval(_ACQUIRE, 1, key, "another-call", 120_000) == token.encode()  # in flight

    # complete and release answer their repeats as they answered the first attempt.
    assert redis_client.eval(_COMPLETE, 1, key, token, 60_000) == b"OK"
    assert redis_client.eval(_COMPLETE, 1, key, token, 60_000) is None
    assert redis_client.get(key) == b"done"
    assert redis_client.eval(_ACQUIRE, 1, key, token, 120_000) == b"done"
    other = PREFIX + "msg_released"
    redis_client.eval(_ACQUIRE, 1, other, token, 120_000)
    assert redis_client.eval(_RELEASE, 1, other, token) == 1
    assert redis_client.eval(_RELEASE, 1, other, token) == 0
    assert redis_client.exists(other) == 0


# --------------------------------------------------------------------------- stalled or unreachable Redis

SOCKET_TIMEOUT = 0.25
REDIS_PY = tuple(int(part) for part in redis.__version__.split(".")[:2])
DEADLINE = 2 * SOCKET_TIMEOUT  # the store's default: twice the client's socket timeout
SLACK = 1.0  # seconds of scheduling on a busy machine, at most


@pytest.fixture(scope="module")
def stalling_redis_server() -> Any:
    """A redis-server of this module's own, apart from the session's `redis_server`."""
    from tests.redis_server import RedisServer, find_redis_server

    server = RedisServer(find_redis_server())
    server.start()
    try:
        yield server
    finally:
        server.close()  # resumes it first


@pytest.fixture
def stalling_redis(stalling_redis_server: RedisServer) -> Any:
    """A redis-server that the test may pause (SIGSTOP) or stop: running and empty at the start.

    Started once for the module (each start and stop took a tenth of a second or more); a
    test leaves it paused or stopped only when it fails, and the next finds it running.
    """
    server = stalling_redis_server
    server.resume()
    server.ensure_running()
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=WAIT)
    try:
        client.flushall()
    finally:
        client.close()
    try:
        yield server
    finally:
        server.resume()


def generous_options(server: RedisServer) -> dict[str, Any]:
    """A client that retries a lot, as users' clients may: 11 attempts with backoff."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": server.port,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_TIMEOUT,
        "retry": Retry(ExponentialBackoff(), 10),
        "retry_on_error": [redis.TimeoutError, redis.ConnectionError],
    }
    if REDIS_PY < (7, 2):
        # Before 7.2, a new connection's CLIENT SETINFO is not retried: on a stalled
        # server that client gives up by itself, before the store's deadline. Without it,
        # the client retries as a newer one does (7.2 deprecates these two arguments).
        options |= {"lib_name": None, "lib_version": None}
    return options


def generous_async_options(server: RedisServer) -> dict[str, Any]:
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    return {**generous_options(server), "retry": Retry(ExponentialBackoff(), 10)}


def timed(call: Callable[[], object]) -> tuple[BaseException | None, float]:
    start = time.monotonic()
    try:
        call()
    except Exception as error:  # noqa: BLE001 - returned for the assertions
        return error, time.monotonic() - start
    return None, time.monotonic() - start


def timed_together(*calls: Callable[[], object]) -> list[tuple[BaseException | None, float]]:
    """`timed` for each call, all at once in threads of their own: one deadline's wait for all."""
    results: list[tuple[BaseException | None, float]] = [(None, 0.0)] * len(calls)

    def run(index: int) -> None:
        results[index] = timed(calls[index])

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT)
    assert not any(thread.is_alive() for thread in threads)
    return results


def overdue(store: RedisIdempotencyStore) -> int:
    """How many of the store's calls timed out and still wait for Redis."""
    return store._runner.overdue  # what the test waits for


def test_timeout_defaults_to_twice_the_socket_timeout(redis_server) -> None:
    def store_for(timeout: datetime.timedelta | None = None, **options: Any) -> RedisIdempotencyStore:
        return RedisIdempotencyStore(redis.Redis(port=redis_server.port, **options), timeout=timeout)

    assert store_for(socket_timeout=2).timeout == datetime.timedelta(seconds=4)
    assert store_for(socket_timeout=0.25).timeout == datetime.timedelta(seconds=0.5)
    assert store_for(socket_timeout=30).timeout == datetime.timedelta(seconds=10)  # under Svix's 15 s
    assert store_for(socket_timeout=None).timeout == datetime.timedelta(seconds=5)
    asyncio_client = redis.asyncio.Redis(port=redis_server.port, socket_timeout=1)
    assert RedisIdempotencyStore(asyncio_client).timeout == datetime.timedelta(seconds=2)
    assert RedisIdempotencyStore(object()).timeout == datetime.timedelta(seconds=5)
    chosen = datetime.timedelta(milliseconds=1500)
    assert store_for(socket_timeout=2, timeout=chosen).timeout == chosen


@pytest.mark.parametrize("timeout", [datetime.timedelta(0), datetime.timedelta(seconds=-1), 2.0, "2"])
def test_timeout_must_be_a_positive_timedelta(timeout: Any) -> None:
    with pytest.raises(WebhookConfigurationError, match=r"timeout must be a positive datetime\.timedelta"):
        RedisIdempotencyStore(object(), timeout=timeout)


def test_stalled_redis_answers_within_the_deadline_and_the_late_lease_is_freed(
    stalling_redis: RedisServer,
) -> None:
    client = redis.Redis(**generous_options(stalling_redis))
    try:
        store = RedisIdempotencyStore(client)
        assert client.ping()  # a pooled connection, as in a running worker
        with stalling_redis.paused():
            (error, took), (complete_error, complete_took) = timed_together(
                lambda: store.acquire("msg_stall", lease=LEASE),
                lambda: store.complete("msg_other", "token", ttl=TTL),
            )
            assert type(error) is TimeoutError, error
            assert str(error) == "Redis did not answer within 0.5 s (RedisIdempotencyStore timeout)"
            assert DEADLINE - 0.05 < took < DEADLINE + SLACK  # the client alone retries for seconds
            assert type(complete_error) is TimeoutError
            assert complete_took < DEADLINE + SLACK
            assert overdue(store) == 2
        # Redis runs the script it was sent, and the client's retry (the same token) finds
        # the lease its first attempt took: the store frees it, as nobody runs the handlers.
        assert wait_until(lambda: overdue(store) == 0)
        assert client.exists(PREFIX + "msg_stall") == 0
        assert client.get(PREFIX + "msg_other") == b"done"  # a late complete is kept
        assert store.acquire("msg_stall", lease=LEASE).status == "acquired"
    finally:
        client.close()


def test_unreachable_redis_answers_within_the_deadline(stalling_redis: RedisServer) -> None:
    client = redis.Redis(**generous_options(stalling_redis))
    try:
        store = RedisIdempotencyStore(client)
        assert client.ping()
        stalling_redis.stop()  # connections refused, retried with backoff by the client
        error, took = timed(lambda: store.acquire("msg_down", lease=LEASE))
        assert isinstance(error, (TimeoutError, redis.ConnectionError)), error
        assert took < DEADLINE + SLACK
        stalling_redis.start()
        assert wait_until(lambda: overdue(store) == 0)
        assert store.acquire("msg_down", lease=LEASE).status == "acquired"
    finally:
        client.close()


def test_stalled_redis_with_an_asyncio_client(stalling_redis: RedisServer, caplog) -> None:
    async def main() -> None:
        client = redis.asyncio.Redis(**generous_async_options(stalling_redis))
        try:
            store = RedisIdempotencyStore(client)
            assert await client.ping()
            with stalling_redis.paused():
                start = time.monotonic()
                with pytest.raises(TimeoutError, match=r"did not answer within 0\.5 s"):
                    await store.acquire_async("msg_stall", lease=LEASE)
                assert time.monotonic() - start < DEADLINE + SLACK
                # A caller cancelled meanwhile (its request went away): the call goes on too.
                cancelled = asyncio.ensure_future(store.acquire_async("msg_cancelled", lease=LEASE))
                await asyncio.sleep(0.1)
                cancelled.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await cancelled
                assert overdue(store) == 2

            async def settled() -> bool:
                return overdue(store) == 0

            assert await wait_until_async(settled)
            # The leases the late calls took are freed, and every reply on the client's
            # connections is its own command's: nothing stale is left in the pool.
            assert await client.exists(PREFIX + "msg_stall", PREFIX + "msg_cancelled") == 0
            for number in range(5):
                assert await client.set(f"key-{number}", f"value-{number}")
                assert await client.get(f"key-{number}") == f"value-{number}".encode()
            assert (await store.acquire_async("msg_stall", lease=LEASE)).status == "acquired"
        finally:
            await client.aclose()

    with caplog.at_level(logging.INFO, logger="asyncio"):  # its DEBUG says which selector it uses
        asyncio.run(main())
    assert [record for record in caplog.records if record.name == "asyncio"] == []


def test_stalled_redis_with_a_sync_client_under_handle_async(stalling_redis: RedisServer, caplog) -> None:
    # The synchronous client's call runs in the store's thread: the event loop stops
    # waiting at the deadline, and the thread's late reply reaches no loop (it is closed).
    client = redis.Redis(**generous_options(stalling_redis))
    try:
        recorder = Recorder(RedisIdempotencyStore(client))
        store = recorder.dispatcher.idempotency_store
        assert isinstance(store, RedisIdempotencyStore)
        assert client.ping()
        body = fixture_bytes("customer.created")
        with caplog.at_level(logging.INFO), stalling_redis.paused():
            start = time.monotonic()
            down = asyncio.run(recorder.dispatcher.handle_async(body, svix_headers(body, msg_id="msg_s")))
            took = time.monotonic() - start
        assert (down.status_code, body_of(down)) == (503, {"error": "idempotency_store_unavailable"})
        assert took < DEADLINE + SLACK
        assert recorder.calls == []
        assert wait_until(lambda: overdue(store) == 0)
        up = asyncio.run(recorder.dispatcher.handle_async(body, svix_headers(body, msg_id="msg_s")))
        assert body_of(up) == {"status": "processed"}
        assert recorder.calls == ["customer.created"]
    finally:
        client.close()
    assert [record for record in caplog.records if record.name == "asyncio"] == []
    assert "failed to acquire msg_s: TimeoutError: Redis did not answer within 0.5 s" in caplog.text


def test_stalled_redis_under_handle_answers_503_then_the_retry_runs_once(
    stalling_redis: RedisServer, caplog
) -> None:
    client = redis.Redis(**generous_options(stalling_redis))
    try:
        recorder = Recorder(RedisIdempotencyStore(client))
        body = fixture_bytes("customer.created")
        assert client.ping()
        with caplog.at_level(logging.ERROR, logger="carecycle_webhooks"), stalling_redis.paused():
            start = time.monotonic()
            down = recorder.dispatcher.handle(body, svix_headers(body, msg_id="msg_h"))
            assert time.monotonic() - start < DEADLINE + SLACK
        assert down.status_code == 503
        assert "failed to acquire msg_h: TimeoutError" in caplog.text
        store = recorder.dispatcher.idempotency_store
        assert isinstance(store, RedisIdempotencyStore)
        assert wait_until(lambda: overdue(store) == 0)
        retried = recorder.dispatcher.handle(body, svix_headers(body, msg_id="msg_h"))
        assert body_of(retried) == {"status": "processed"}  # not 409: the late lease was freed
        again = recorder.dispatcher.handle(body, svix_headers(body, msg_id="msg_h"))
        assert body_of(again) == {"status": "duplicate"}
        assert recorder.calls == ["customer.created"]
    finally:
        client.close()


def test_an_explicit_timeout_bounds_each_call(stalling_redis: RedisServer) -> None:
    client = redis.Redis(**{**generous_options(stalling_redis), "socket_timeout": 5})
    try:
        store = RedisIdempotencyStore(client, timeout=datetime.timedelta(milliseconds=300))
        assert client.ping()
        with stalling_redis.paused():
            error, took = timed(lambda: store.release("msg_1", "token"))
        assert type(error) is TimeoutError
        assert 0.25 < took < 0.3 + SLACK
    finally:
        client.close()


def test_calls_fail_at_once_while_too_many_late_ones_wait(
    stalling_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stalled Redis must not gather ever more threads, tasks or queued calls: past a
    # bound, a call fails at once. Its threads are bounded too.
    from carecycle_webhooks import _redis

    monkeypatch.setattr(_redis, "_MAX_OVERDUE", 2)
    client = redis.Redis(**generous_options(stalling_redis))
    try:
        store = RedisIdempotencyStore(client)
        assert client.ping()
        with stalling_redis.paused():
            for error, _ in timed_together(
                *(lambda number=number: store.acquire(f"msg_{number}", lease=LEASE) for number in range(2))
            ):
                assert type(error) is TimeoutError
            error, took = timed(lambda: store.acquire("msg_2", lease=LEASE))
            assert type(error) is TimeoutError
            assert str(error).startswith("Redis has not answered 2 calls that timed out yet")
            assert took < 0.1
        assert wait_until(lambda: overdue(store) == 0)
        assert store.acquire("msg_2", lease=LEASE).status == "acquired"
        assert client.keys(PREFIX + "msg_*") == [PREFIX.encode() + b"msg_2"]
    finally:
        client.close()


def test_concurrent_calls_on_a_stalled_redis_use_a_bounded_number_of_threads(
    stalling_redis: RedisServer,
) -> None:
    from carecycle_webhooks._redis import _THREAD_NAME, _THREADS

    client = redis.Redis(**generous_options(stalling_redis))
    callers = 40
    before = set(threading.enumerate())  # other stores' idle threads
    try:
        store = RedisIdempotencyStore(client)
        errors: list[BaseException | None] = []
        took: list[float] = []
        lock = threading.Lock()

        def call(number: int) -> None:
            error, seconds = timed(lambda: store.acquire(f"msg_{number}", lease=LEASE))
            with lock:
                errors.append(error)
                took.append(seconds)

        with stalling_redis.paused():
            threads = [threading.Thread(target=call, args=(n,)) for n in range(callers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=WAIT)
            ours = [t for t in set(threading.enumerate()) - before if t.name == _THREAD_NAME]
        assert not any(thread.is_alive() for thread in threads)
        assert all(type(error) is TimeoutError for error in errors), errors
        assert max(took) < DEADLINE + SLACK  # queued ones too: the deadline counts the wait
        assert len(ours) <= _THREADS
        assert wait_until(lambda: overdue(store) == 0)
        assert client.keys(PREFIX + "*") == []  # no call left a lease behind
    finally:
        client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_its_calls_in_threads_of_its_own(redis_client) -> None:
    # gunicorn --preload, Celery's prefork pool: a store used before the fork has threads
    # that the child does not; its calls must still run, not time out forever.
    store = RedisIdempotencyStore(redis_client, timeout=datetime.timedelta(seconds=2))
    assert store.acquire("msg_parent", lease=LEASE).status == "acquired"  # the parent's threads start
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a threaded process
        pid = os.fork()
    if pid == 0:  # the child: report, then leave at once (no pytest teardown here)
        try:
            status = store.acquire("msg_child", lease=LEASE).status
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            status = type(error).__name__
        os.write(write_end, status.encode())
        os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], WAIT)
        answer = os.read(read_end, 100).decode() if ready else "no answer"
    finally:
        os.close(read_end)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert answer == "acquired"
    assert redis_client.get(PREFIX + "msg_child") is not None


class SlowClient:
    """A healthy but slow synchronous client: every script takes a moment, then answers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def eval(self, *args: object) -> object:
        time.sleep(0.02)
        return None  # acquire: "free", the lease is ours


def test_a_burst_beyond_the_threads_leaves_the_counts_true(monkeypatch: pytest.MonkeyPatch) -> None:
    # More concurrent calls than threads, then quiet until the threads end: later calls must
    # still find a thread, not wait out the deadline in the queue (503 on a healthy Redis).
    from carecycle_webhooks import _redis

    monkeypatch.setattr(_redis, "_IDLE_SECONDS", 0.2)
    store = RedisIdempotencyStore(SlowClient(), timeout=datetime.timedelta(seconds=5))
    callers = [
        threading.Thread(target=store.acquire, args=(f"msg_{n}",), kwargs={"lease": LEASE}) for n in range(48)
    ]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(timeout=10)
    runner = store._runner
    assert wait_until(lambda: runner._threads == 0)  # every thread ended, idle
    assert (runner._idle, runner._waiting) == (0, 0)
    for number in range(5):
        started = time.monotonic()
        assert store.acquire(f"msg_after_{number}", lease=LEASE).status == "acquired"
        assert time.monotonic() - started < 2  # a thread ran it (the deadline is 5 s)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_workers_draw_lease_tokens_of_their_own() -> None:
    from carecycle_webhooks._idempotency import new_token

    new_token()  # the parent has used its counter
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, measured by the parent's assertions
        os.write(write, new_token().encode())
        os._exit(0)
    os.close(write)
    try:
        child = os.read(read, 200).decode()
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    parent = new_token()
    assert child
    assert child.split("-")[0] != parent.split("-")[0]


class StalledAsyncClient:
    """An asyncio client whose calls never answer in time (a stalled Redis)."""

    async def eval(self, *args: object) -> object:
        await asyncio.sleep(30)
        return None  # pragma: no cover - never reached in time

    async def execute_command(self, *args: object) -> object:  # pragma: no cover - only its kind matters
        return None


def test_late_calls_of_a_loop_closed_without_cancelling_them_are_forgotten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from carecycle_webhooks._redis import _MAX_OVERDUE

    store = RedisIdempotencyStore(StalledAsyncClient(), timeout=datetime.timedelta(seconds=0.05))

    async def calls(count: int) -> list[BaseException | None]:
        results = await asyncio.gather(
            *(store.acquire_async(f"msg_{n}", lease=LEASE) for n in range(count)), return_exceptions=True
        )
        return [result if isinstance(result, BaseException) else None for result in results]

    loop = asyncio.new_event_loop()
    try:
        errors = loop.run_until_complete(calls(_MAX_OVERDUE))
    finally:
        loop.close()  # without cancelling the late calls' tasks: they never run again
    assert all(type(error) is TimeoutError for error in errors)
    # A new loop: the store is not stuck refusing every call because of the old loop's tasks.
    errors = asyncio.run(calls(1))
    assert "has not answered" not in str(errors[0])
    assert type(errors[0]) is TimeoutError  # the deadline again, not the refusal
    gc.collect()
    assert "Task was destroyed" not in caplog.text


class LostReplyClient:
    """Redis runs each acquire, but its reply is lost (a socket timeout): the client raises."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}

    def _run(self, script: str, keys: int, key: str, token: str, *rest: object) -> object:
        if "SET" in script and "PX" in script and "'done'" not in script:  # the acquire script
            self.keys.setdefault(key, token)
            raise redis.TimeoutError("Timeout reading from socket")
        if "DEL" in script and self.keys.get(key) == token:  # the release script
            del self.keys[key]
        return 0


class SyncLostReply(LostReplyClient):
    def eval(self, *args: Any) -> object:
        return self._run(*args)


class AsyncLostReply(LostReplyClient):
    async def eval(self, *args: Any) -> object:
        return self._run(*args)

    async def execute_command(self, *args: object) -> object:  # pragma: no cover - only its kind matters
        return None


@pytest.mark.parametrize("use_async", [False, True])
def test_an_acquire_whose_reply_was_lost_frees_the_lease_it_took(use_async: bool) -> None:
    client = AsyncLostReply() if use_async else SyncLostReply()
    store = RedisIdempotencyStore(client, timeout=datetime.timedelta(seconds=2))

    async def acquire_async() -> None:
        with pytest.raises(redis.TimeoutError):
            await store.acquire_async("msg_lost", lease=LEASE)
        for _ in range(100):  # the release runs after the caller was answered
            if not client.keys:
                break
            await asyncio.sleep(0.01)

    if use_async:
        asyncio.run(acquire_async())
    else:
        with pytest.raises(redis.TimeoutError):
            store.acquire("msg_lost", lease=LEASE)
        assert wait_until(lambda: not client.keys)
    assert client.keys == {}  # Svix's retry is not answered 409 for a whole lease


class LateLostReplyClient(LostReplyClient):
    """As LostReplyClient, but the reply is lost only after the store's deadline."""

    def eval(self, *args: Any) -> object:
        if "'done'" not in str(args[0]) and "DEL" not in str(args[0]):
            time.sleep(0.3)
        return self._run(*args)


class AsyncLateLostReply(LostReplyClient):
    async def eval(self, *args: Any) -> object:
        if "'done'" not in str(args[0]) and "DEL" not in str(args[0]):
            await asyncio.sleep(0.3)
        return self._run(*args)

    async def execute_command(self, *args: object) -> object:  # pragma: no cover - only its kind matters
        return None


@pytest.mark.parametrize("use_async", [False, True])
def test_an_acquire_past_its_deadline_whose_reply_was_lost_frees_the_lease_too(use_async: bool) -> None:
    client = AsyncLateLostReply() if use_async else LateLostReplyClient()
    store = RedisIdempotencyStore(client, timeout=datetime.timedelta(seconds=0.1))

    async def acquire_async() -> None:
        with pytest.raises(TimeoutError):
            await store.acquire_async("msg_late", lease=LEASE)
        for _ in range(200):
            if not client.keys and store._runner.overdue == 0:
                break
            await asyncio.sleep(0.01)

    if use_async:
        asyncio.run(acquire_async())
    else:
        with pytest.raises(TimeoutError):
            store.acquire("msg_late", lease=LEASE)
        assert wait_until(lambda: not client.keys and store._runner.overdue == 0)
    assert client.keys == {}
