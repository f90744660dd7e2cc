from __future__ import annotations

import asyncio
import datetime
import threading

import pytest

from carecycle_webhooks import (
    AsyncIdempotencyStore,
    Claim,
    Dispatcher,
    IdempotencyStore,
    InMemoryIdempotencyStore,
    RedisIdempotencyStore,
    WebhookConfigurationError,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LEASE = datetime.timedelta(seconds=60)
DAY = datetime.timedelta(days=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_both_stores_implement_both_protocols() -> None:
    for store in (InMemoryIdempotencyStore(), RedisIdempotencyStore(object())):
        assert isinstance(store, IdempotencyStore)
        assert isinstance(store, AsyncIdempotencyStore)


class SyncOnlyStore:
    """A store of one's own with the synchronous protocol only."""

    def __init__(self) -> None:
        self.store = InMemoryIdempotencyStore()

    def acquire(self, key: str, *, lease: datetime.timedelta) -> Claim:
        return self.store.acquire(key, lease=lease)

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
        self.store.complete(key, token, ttl=ttl)

    def release(self, key: str, token: str) -> None:
        self.store.release(key, token)


class AsyncOnlyStore:
    """A store of one's own with the async protocol only (on an asyncio driver, say)."""

    def __init__(self) -> None:
        self.store = InMemoryIdempotencyStore()

    async def acquire_async(self, key: str, *, lease: datetime.timedelta) -> Claim:
        return self.store.acquire(key, lease=lease)

    async def complete_async(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
        self.store.complete(key, token, ttl=ttl)

    async def release_async(self, key: str, token: str) -> None:
        self.store.release(key, token)


def test_a_store_with_one_protocol_serves_its_own_entry_point_only() -> None:
    from carecycle_webhooks import testing

    ran: list[str] = []
    signed = testing.sign(testing.customer_created(), secret=SECRET, webhook_id="msg_one_protocol")
    body_and_headers = (signed.body, signed.headers)

    sync_dispatcher = Dispatcher(SECRET, idempotency_store=SyncOnlyStore())
    sync_dispatcher.on("customer.created")(lambda event: ran.append("sync"))
    assert [sync_dispatcher.handle(*body_and_headers).status_code for _ in range(2)] == [200, 200]
    with pytest.raises(WebhookConfigurationError, match=r"cannot serve Dispatcher\.handle_async"):
        asyncio.run(sync_dispatcher.handle_async(*body_and_headers))

    async_dispatcher = Dispatcher(SECRET, idempotency_store=AsyncOnlyStore())
    async_dispatcher.on("customer.created")(lambda event: ran.append("async"))

    async def twice() -> list[int]:
        return [(await async_dispatcher.handle_async(*body_and_headers)).status_code for _ in range(2)]

    assert asyncio.run(twice()) == [200, 200]
    with pytest.raises(WebhookConfigurationError, match=r"cannot serve Dispatcher\.handle:"):
        async_dispatcher.handle(*body_and_headers)
    assert ran == ["sync", "async"]  # each ran once: the second delivery was a duplicate


def test_an_object_with_neither_protocol_is_refused() -> None:
    with pytest.raises(WebhookConfigurationError, match="IdempotencyStore or AsyncIdempotencyStore"):
        Dispatcher(SECRET, idempotency_store=object())  # type: ignore[arg-type]


def test_acquire_in_flight_done() -> None:
    store = InMemoryIdempotencyStore()
    claim = store.acquire("a", lease=LEASE)
    assert claim.status == "acquired"
    assert claim.token
    assert store.acquire("a", lease=LEASE) == Claim("in_flight")
    store.complete("a", claim.token, ttl=DAY)
    assert store.acquire("a", lease=LEASE) == Claim("done")


def test_release_frees_the_id() -> None:
    store = InMemoryIdempotencyStore()
    claim = store.acquire("a", lease=LEASE)
    store.release("a", claim.token)
    assert store.acquire("a", lease=LEASE).status == "acquired"


def test_only_the_holder_completes_or_releases() -> None:
    clock = Clock()
    store = InMemoryIdempotencyStore(clock=clock)
    first = store.acquire("a", lease=LEASE)
    clock.now += 61  # the first worker's lease expired (it died, or is very slow)
    second = store.acquire("a", lease=LEASE)
    assert second.status == "acquired"
    store.release("a", first.token)  # the stale holder cannot free it...
    store.complete("a", first.token, ttl=DAY)  # ...nor mark it done
    assert store.acquire("a", lease=LEASE).status == "in_flight"
    store.complete("a", second.token, ttl=DAY)
    assert store.acquire("a", lease=LEASE).status == "done"


def test_a_holder_whose_lease_expired_marks_it_done_if_nobody_took_it() -> None:
    # The store was unreachable when the handlers finished: the dispatcher records the
    # mark later, after the lease expired. The handlers did run: a retry must not.
    clock = Clock()
    store = InMemoryIdempotencyStore(clock=clock)
    late = store.acquire("a", lease=LEASE)
    clock.now += 61  # expired, and nobody took it since
    store.complete("a", late.token, ttl=DAY)
    assert store.acquire("a", lease=LEASE) == Claim("done")
    clock.now += DAY.total_seconds() - 1  # kept for the whole ttl, from the completion
    assert store.acquire("a", lease=LEASE) == Claim("done")


def done(store: InMemoryIdempotencyStore, key: str) -> None:
    store.complete(key, store.acquire(key, lease=LEASE).token, ttl=DAY)


def test_complete_marks_a_forgotten_id_done_within_the_bound() -> None:
    clock = Clock()
    store = InMemoryIdempotencyStore(max_entries=2, clock=clock)
    gone = store.acquire("gone", lease=LEASE)
    clock.now += 61  # its lease expired (the store was unreachable for the dispatcher)
    done(store, "b")
    done(store, "c")  # over the bound: "gone", expired, is forgotten
    assert len(store) == 2
    store.complete("gone", gone.token, ttl=DAY)  # recorded anyway, as the youngest...
    assert len(store) == 2  # ...and the bound still holds: "b", the oldest, went
    assert store.acquire("gone", lease=LEASE) == Claim("done")
    assert store.acquire("b", lease=LEASE).status == "acquired"


def test_complete_by_another_token_leaves_the_entry_and_its_age_alone() -> None:
    store = InMemoryIdempotencyStore(max_entries=2)
    first = store.acquire("a", lease=LEASE)
    store.complete("a", first.token, ttl=DAY)
    store.acquire("b", lease=LEASE)  # in flight
    store.complete("b", "another-token", ttl=DAY)  # not b's holder: b stays in flight
    store.complete("a", first.token, ttl=DAY)  # a repeated complete: "a" stays the oldest
    store.acquire("c", lease=LEASE)  # over the bound: the oldest, "a", goes, not the live lease
    assert store.acquire("b", lease=LEASE) == Claim("in_flight")
    assert store.acquire("a", lease=LEASE).status == "acquired"


def test_complete_again_changes_nothing() -> None:
    clock = Clock()
    store = InMemoryIdempotencyStore(clock=clock)
    claim = store.acquire("a", lease=LEASE)
    store.complete("a", claim.token, ttl=DAY)
    clock.now += 100
    store.complete("a", claim.token, ttl=DAY)  # a retried complete: "done" is not its token
    clock.now += DAY.total_seconds() - 99  # the first completion's ttl, not a renewed one
    assert store.acquire("a", lease=LEASE).status == "acquired"


def test_done_marks_are_kept_in_completion_order() -> None:
    store = InMemoryIdempotencyStore(max_entries=2)
    first = store.acquire("first", lease=LEASE)
    second = store.acquire("second", lease=LEASE)
    store.complete("second", second.token, ttl=DAY)
    store.complete("first", first.token, ttl=DAY)  # done last: the youngest now
    store.acquire("third", lease=LEASE)  # over the bound: the oldest, "second", goes
    assert store.acquire("first", lease=LEASE) == Claim("done")
    assert store.acquire("second", lease=LEASE).status == "acquired"


def test_done_expires_after_its_ttl() -> None:
    clock = Clock()
    store = InMemoryIdempotencyStore(clock=clock)
    claim = store.acquire("a", lease=LEASE)
    store.complete("a", claim.token, ttl=DAY)
    clock.now += DAY.total_seconds() - 1
    assert store.acquire("a", lease=LEASE).status == "done"
    clock.now += 2
    assert store.acquire("a", lease=LEASE).status == "acquired"


def test_memory_is_bounded() -> None:
    store = InMemoryIdempotencyStore(max_entries=100)
    for number in range(1000):
        claim = store.acquire(f"id-{number}", lease=LEASE)
        store.complete(f"id-{number}", claim.token, ttl=DAY)
    assert len(store) == 100
    assert store.acquire("id-999", lease=LEASE).status == "done"
    assert store.acquire("id-0", lease=LEASE).status == "acquired"  # the oldest were forgotten


def test_the_oldest_are_forgotten_in_batches_of_one_percent() -> None:
    store = InMemoryIdempotencyStore(max_entries=1000)
    for number in range(1000):
        done(store, f"id-{number}")
    assert len(store) == 1000
    store.acquire("id-1000", lease=LEASE)  # one over: the oldest 10 go at once
    assert len(store) == 991
    assert [store.acquire(f"id-{n}", lease=LEASE).status for n in (9, 10, 1000)] == [
        "acquired",
        "done",
        "in_flight",
    ]
    for number in range(1001, 5000):
        done(store, f"id-{number}")
        assert len(store) <= 1000


def test_a_live_lease_is_never_forgotten_to_make_room() -> None:
    # Forgetting a lease whose handlers still run would let a concurrent duplicate of
    # its delivery take the id and run them a second time.
    clock = Clock()
    store = InMemoryIdempotencyStore(max_entries=100, clock=clock)
    live = [f"live-{n}" for n in range(50)]
    for key in live:  # the oldest entries: leases whose handlers still run
        assert store.acquire(key, lease=LEASE).status == "acquired"
    for number in range(50):
        done(store, f"done-{number}")
    assert len(store) == 100
    for number in range(500):  # many more deliveries, each over the bound
        done(store, f"more-{number}")
        assert len(store) <= 100
    assert [store.acquire(key, lease=LEASE) for key in live] == [Claim("in_flight")] * 50
    assert store.acquire("done-0", lease=LEASE).status == "acquired"  # done marks went first

    # Nothing but live leases: the store holds more than its bound rather than forget one.
    more = [f"busy-{n}" for n in range(60)]
    for key in more:
        assert store.acquire(key, lease=LEASE).status == "acquired"
    assert len(store) > 100
    assert all(store.acquire(key, lease=LEASE) == Claim("in_flight") for key in live + more)

    # Once the leases expired (their holders died), they are forgotten like done marks.
    clock.now += 61
    for number in range(200):
        done(store, f"late-{number}")
    assert len(store) <= 100


def test_invalid_size() -> None:
    with pytest.raises(WebhookConfigurationError):
        InMemoryIdempotencyStore(max_entries=0)


def test_thread_safety() -> None:
    store = InMemoryIdempotencyStore()
    barrier = threading.Barrier(16, timeout=10)
    claims: list[Claim] = []

    def grab() -> None:
        barrier.wait()
        claims.extend(store.acquire(f"key-{n}", lease=LEASE) for n in range(200))

    threads = [threading.Thread(target=grab) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(claims) == 16 * 200
    assert sum(claim.status == "acquired" for claim in claims) == 200


def test_async_methods() -> None:
    store = InMemoryIdempotencyStore()

    async def scenario() -> list[str]:
        claim = await store.acquire_async("a", lease=LEASE)
        second = await store.acquire_async("a", lease=LEASE)
        await store.release_async("a", claim.token)
        third = await store.acquire_async("a", lease=LEASE)
        await store.complete_async("a", third.token, ttl=DAY)
        fourth = await store.acquire_async("a", lease=LEASE)
        return [claim.status, second.status, third.status, fourth.status]

    assert asyncio.run(scenario()) == ["acquired", "in_flight", "acquired", "done"]
