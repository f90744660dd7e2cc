"""skip_out_of_order: a customer's older update never runs after a newer one (issue 14, item 1).

Here with the in-memory store, the reference of the store protocol's customer order; each
store's own tests hold it to the same rules.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
import time
from typing import Any

import pytest

from carecycle_webhooks import (
    Claim,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    Dispatcher,
    InMemoryIdempotencyStore,
    WebhookConfigurationError,
    WebhookResponse,
)
from carecycle_webhooks._idempotency import Order
from carecycle_webhooks.testing import (
    Tenants,
    call_completed,
    customer_history,
    override_idempotency_store,
    sign,
)
from tests.conftest import SECRET

LEASE = datetime.timedelta(minutes=2)
TTL = datetime.timedelta(hours=48)


def answer(response: WebhookResponse) -> tuple[int, str]:
    fields = json.loads(response.body)
    return response.status_code, fields.get("status") or fields.get("error")


def deliver(
    webhooks: Dispatcher, event: Any, *, asynchronous: bool = False, tenant: str | None = None
) -> tuple[int, str]:
    delivery = sign(event, secret=SECRET)
    if asynchronous:
        return answer(asyncio.run(webhooks.handle_async(delivery.body, delivery.headers, tenant=tenant)))
    return answer(webhooks.handle(delivery.body, delivery.headers, tenant=tenant))


def ordered_dispatcher(applied: list[datetime.datetime]) -> Dispatcher:
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore(), skip_out_of_order=True)

    @webhooks.on("customer.created")
    @webhooks.on("customer.updated")
    def apply(event: CustomerCreatedEvent | CustomerUpdatedEvent) -> None:
        applied.append(event.updated_at)

    return webhooks


@pytest.mark.parametrize("asynchronous", [False, True])
def test_an_older_update_after_a_newer_one_is_stale(asynchronous: bool) -> None:
    applied: list[datetime.datetime] = []
    webhooks = ordered_dispatcher(applied)
    created, first, second = customer_history(2)
    assert deliver(webhooks, created, asynchronous=asynchronous) == (200, "processed")
    assert deliver(webhooks, second, asynchronous=asynchronous) == (200, "processed")
    assert deliver(webhooks, first, asynchronous=asynchronous) == (200, "stale")
    assert applied == [created.updated_at, second.updated_at]


def test_equal_and_newer_updates_run() -> None:
    applied: list[datetime.datetime] = []
    webhooks = ordered_dispatcher(applied)
    _, first, second = customer_history(2)
    again = first.model_copy(update={"first_name": "Ana"})  # the same updatedAt, another delivery
    assert deliver(webhooks, first) == (200, "processed")
    assert deliver(webhooks, again) == (200, "processed")
    assert deliver(webhooks, second) == (200, "processed")
    assert applied == [first.updated_at, first.updated_at, second.updated_at]


def test_an_update_before_its_created_makes_the_created_stale() -> None:
    applied: list[datetime.datetime] = []
    webhooks = ordered_dispatcher(applied)
    created, update = customer_history(1)
    assert deliver(webhooks, update) == (200, "processed")
    assert deliver(webhooks, created) == (200, "stale")  # the update carried the whole customer
    assert applied == [update.updated_at]


def test_off_by_default_every_update_runs() -> None:
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())
    webhooks.on("customer.updated")(lambda _: None)
    _, first, second = customer_history(2)
    assert deliver(webhooks, second) == (200, "processed")
    assert deliver(webhooks, first) == (200, "processed")


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_failed_handler_leaves_the_newest_mark_as_it_was(asynchronous: bool) -> None:
    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store, skip_out_of_order=True)
    fail = {True}
    applied: list[datetime.datetime] = []

    @webhooks.on("customer.updated")
    def apply(event: CustomerUpdatedEvent) -> None:
        if fail:
            fail.clear()
            raise RuntimeError("database down")
        applied.append(event.updated_at)

    _, first, second = customer_history(2)
    assert deliver(webhooks, second, asynchronous=asynchronous) == (500, "handler_failed")
    # The failure freed the customer and moved no mark: the older update is not stale.
    assert deliver(webhooks, first, asynchronous=asynchronous) == (200, "processed")
    assert deliver(webhooks, second, asynchronous=asynchronous) == (200, "processed")  # Svix's retry
    assert applied == [first.updated_at, second.updated_at]


def test_another_delivery_of_the_same_customer_in_flight_is_409_then_stale() -> None:
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore(), skip_out_of_order=True)
    started, finish = threading.Event(), threading.Event()

    @webhooks.on("customer.updated")
    def apply(event: CustomerUpdatedEvent) -> None:
        if event.updated_at == second.updated_at:
            started.set()
            assert finish.wait(10)

    _, first, second = customer_history(2)
    newer: list[tuple[int, str]] = []
    thread = threading.Thread(target=lambda: newer.append(deliver(webhooks, second)))
    thread.start()
    try:
        assert started.wait(10)
        # The older update arrives while the newer one runs: it must not run beside it.
        assert deliver(webhooks, first) == (409, "in_flight")
    finally:
        finish.set()
        thread.join(10)
    assert newer == [(200, "processed")]
    assert deliver(webhooks, first) == (200, "stale")  # Svix's retry, after the newer one


def race_once() -> tuple[list[datetime.datetime], CustomerUpdatedEvent, CustomerUpdatedEvent]:
    """Two threads deliver an old and a new update of one customer at once; what was applied."""
    applied: list[datetime.datetime] = []
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore(), skip_out_of_order=True)
    _, old, new = customer_history(2)

    @webhooks.on("customer.updated")
    def apply(event: CustomerUpdatedEvent) -> None:
        if event.updated_at == old.updated_at:
            time.sleep(0.002)  # the old one is slow: run beside the new one, it would end last
        applied.append(event.updated_at)

    gate = threading.Barrier(2)

    def send(event: CustomerUpdatedEvent) -> None:
        gate.wait(5)
        for _attempt in range(1_000):  # like Svix: again, a little later, while answered 409
            if deliver(webhooks, event)[0] != 409:
                return
            time.sleep(0.001)
        raise AssertionError("still 409 after 1000 attempts")

    threads = [threading.Thread(target=send, args=(event,)) for event in (old, new)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return applied, old, new


def test_two_threads_racing_an_old_and_a_new_update_the_newest_always_wins() -> None:
    for _ in range(100):
        applied, old, new = race_once()
        assert applied in ([old.updated_at, new.updated_at], [new.updated_at])


def test_call_completed_is_not_ordered() -> None:
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore(), skip_out_of_order=True)
    webhooks.on("call.completed")(lambda _: None)
    assert deliver(webhooks, call_completed()) == (200, "processed")
    assert deliver(webhooks, call_completed()) == (200, "processed")


def test_each_tenant_has_its_own_customer_marks() -> None:
    tenants = Tenants("acme", "globex")
    webhooks = Dispatcher(
        tenants.resolve, idempotency_store=InMemoryIdempotencyStore(), skip_out_of_order=True
    )
    webhooks.on("customer.updated")(lambda _: None)
    _, first, second = customer_history(2)

    def send(tenant: str, event: CustomerUpdatedEvent) -> tuple[int, str]:
        delivery = tenants.sign(tenant, event)
        return answer(webhooks.handle(delivery.body, delivery.headers, tenant=tenant))

    assert send("acme", second) == (200, "processed")
    assert send("globex", first) == (200, "processed")  # the same customer id, another tenant's
    assert send("acme", first) == (200, "stale")


def test_skip_out_of_order_needs_a_store_that_keeps_the_order() -> None:
    with pytest.raises(WebhookConfigurationError, match="skip_out_of_order needs an idempotency store"):
        Dispatcher(SECRET, skip_out_of_order=True)

    class OwnStore:  # a user's store of the plain protocol
        def acquire(self, key: str, *, lease: datetime.timedelta) -> Claim: ...
        def complete(self, key: str, token: str, *, ttl: datetime.timedelta) -> None: ...
        def release(self, key: str, token: str) -> None: ...

    with pytest.raises(WebhookConfigurationError, match="not OwnStore"):
        Dispatcher(SECRET, idempotency_store=OwnStore(), skip_out_of_order=True)
    assert Dispatcher(SECRET, idempotency_store=OwnStore()).skip_out_of_order is False


class FlakyStore(InMemoryIdempotencyStore):
    """Fails to record done marks while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta, order: Order | None = None) -> None:
        if self.down:
            raise ConnectionError("store unreachable")
        super().complete(key, token, ttl=ttl, order=order)


def test_a_missed_done_mark_keeps_its_customer_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("carecycle_webhooks._flow.RETRY_DELAYS", ())
    store = FlakyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store, skip_out_of_order=True)
    webhooks.on("customer.updated")(lambda _: None)
    webhooks.on("call.completed")(lambda _: None)
    _, first, second = customer_history(2)
    store.down = True
    assert deliver(webhooks, second) == (200, "processed")  # handled: its mark is kept for later
    store.down = False
    assert deliver(webhooks, call_completed()) == (200, "processed")  # records the kept mark first
    assert deliver(webhooks, first) == (200, "stale")


# ------------------------------------------------------------------ the in-memory store's rules


def test_the_store_answers_stale_only_below_the_newest_mark() -> None:
    store = InMemoryIdempotencyStore()
    claim = store.acquire("msg_new", lease=LEASE, order=Order("customer-1", 2_000))
    assert claim.status == "acquired"
    store.complete("msg_new", claim.token, ttl=TTL, order=Order("customer-1", 2_000))
    assert store.acquire("msg_old", lease=LEASE, order=Order("customer-1", 1_000)).status == "stale"
    assert store.acquire("msg_same", lease=LEASE, order=Order("customer-1", 2_000)).status == "acquired"
    assert store.acquire("msg_other", lease=LEASE, order=Order("customer-2", 1_000)).status == "acquired"


def test_the_mark_never_goes_back() -> None:
    store = InMemoryIdempotencyStore()
    claim = store.acquire("msg_new", lease=LEASE, order=Order("c", 2_000))
    store.complete("msg_new", claim.token, ttl=TTL, order=Order("c", 2_000))
    # A late complete of an older delivery (its lease expired meanwhile) moves nothing back.
    store.complete("msg_late", "old-token", ttl=TTL, order=Order("c", 1_000))
    assert store.acquire("msg_between", lease=LEASE, order=Order("c", 1_500)).status == "stale"


def test_only_the_customers_holder_frees_it() -> None:
    store = InMemoryIdempotencyStore()
    claim = store.acquire("msg_1", lease=LEASE, order=Order("c", 1_000))
    store.release("msg_other", "someone-else", order=Order("c", 1_000))
    assert store.acquire("msg_2", lease=LEASE, order=Order("c", 3_000)).status == "in_flight"
    store.release("msg_1", claim.token, order=Order("c", 1_000))
    assert store.acquire("msg_2", lease=LEASE, order=Order("c", 3_000)).status == "acquired"


def test_a_dead_workers_customer_lease_and_the_marks_expire() -> None:
    now = [0.0]
    store = InMemoryIdempotencyStore(clock=lambda: now[0])
    store.acquire("msg_1", lease=LEASE, order=Order("c", 1_000))  # its worker dies
    assert store.acquire("msg_2", lease=LEASE, order=Order("c", 2_000)).status == "in_flight"
    now[0] += LEASE.total_seconds() + 1
    claim = store.acquire("msg_2", lease=LEASE, order=Order("c", 2_000))
    assert claim.status == "acquired"
    store.complete("msg_2", claim.token, ttl=TTL, order=Order("c", 2_000))
    assert store.acquire("msg_3", lease=LEASE, order=Order("c", 1_500)).status == "stale"
    now[0] += TTL.total_seconds() + 1  # past Svix's retries: the mark is gone with the done marks
    assert store.acquire("msg_3", lease=LEASE, order=Order("c", 1_500)).status == "acquired"


def test_the_marks_are_bounded() -> None:
    store = InMemoryIdempotencyStore(max_entries=100)
    for number in range(1_000):
        claim = store.acquire(f"msg_{number}", lease=LEASE, order=Order(f"customer-{number}", number))
        store.complete(f"msg_{number}", claim.token, ttl=TTL, order=Order(f"customer-{number}", number))
    assert len(store._marks) <= 100
    assert not store._customer_leases
    store.clear()
    assert not store._marks


def test_a_tests_own_store_must_keep_the_order_of_a_dispatcher_that_skips() -> None:
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore(), skip_out_of_order=True)

    class PlainStore:
        def acquire(self, key: str, *, lease: datetime.timedelta) -> Claim: ...
        def complete(self, key: str, token: str, *, ttl: datetime.timedelta) -> None: ...
        def release(self, key: str, token: str) -> None: ...

    with (
        pytest.raises(WebhookConfigurationError, match="skip_out_of_order"),
        override_idempotency_store(webhooks, PlainStore()),
    ):
        pass
    with override_idempotency_store(webhooks, InMemoryIdempotencyStore()):
        webhooks.on("customer.updated")(lambda _: None)
        _, first, second = customer_history(2)
        assert deliver(webhooks, second) == (200, "processed")
        assert deliver(webhooks, first) == (200, "stale")


def test_a_cancelled_delivery_frees_its_customer() -> None:
    # Else every other delivery of that customer would be 409 until the lease expired.
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore(), skip_out_of_order=True)
    started = asyncio.Event()
    ran: list[datetime.datetime] = []
    _, first, second = customer_history(2)

    @webhooks.on("customer.updated")
    async def apply(event: CustomerUpdatedEvent) -> None:
        if event.updated_at == first.updated_at:
            started.set()
            await asyncio.sleep(30)
        ran.append(event.updated_at)

    async def main() -> None:
        delivery = sign(first, secret=SECRET)
        task = asyncio.ensure_future(webhooks.handle_async(delivery.body, delivery.headers))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        newer = sign(second, secret=SECRET)
        assert answer(await webhooks.handle_async(newer.body, newer.headers)) == (200, "processed")

    asyncio.run(main())
    assert ran == [second.updated_at]
