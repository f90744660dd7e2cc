"""DjangoIdempotencyStore keeps customer order (``skip_out_of_order``), on SQLite and PostgreSQL.

The customer is held with the delivery's id, its newest mark (`CustomerMark`) read after
the locks and moved forward in the delivery's own transaction: the store's calls, then the
sync and async views through Django's test clients.
"""

# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false, reportUnknownArgumentType=false

from __future__ import annotations

import asyncio
import datetime
import json
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.adapters import django_settings

if not django_settings.configured():
    django_settings.configure()

from django.core.management import call_command
from django.db import connections
from django.test import AsyncClient, Client

from carecycle_webhooks import CustomerUpdatedEvent, Dispatcher, current_delivery
from carecycle_webhooks._idempotency import Order, OrderedIdempotencyStore
from carecycle_webhooks.django import DjangoIdempotencyStore
from carecycle_webhooks.django.models import CustomerMark, ProcessedWebhook
from carecycle_webhooks.testing import sign
from tests.adapters.django_effects.models import Effect
from tests.adapters.django_urls import serve, serve_async
from tests.conftest import SECRET, fixture_bytes

if TYPE_CHECKING:
    from collections.abc import Iterator

    from carecycle_webhooks import Claim

LEASE = datetime.timedelta(minutes=1)
TTL = datetime.timedelta(hours=1)
WAIT = 10.0


@pytest.fixture(scope="module")
def sqlite_alias() -> str:
    call_command("migrate", database="default", run_syncdb=True, verbosity=0)
    return "default"


@pytest.fixture(scope="module")
def postgres_alias(postgres_server: Any) -> Iterator[str]:
    name = "carecycle_django_order"
    postgres_server.create_database(name)
    django_settings.add_database(
        "postgres_order",
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": "postgres",
            "HOST": postgres_server.host,
            "PORT": str(postgres_server.port),
            "OPTIONS": {"connect_timeout": 5},
        },
    )
    call_command("migrate", database="postgres_order", run_syncdb=True, verbosity=0)
    try:
        yield "postgres_order"
    finally:
        connections["postgres_order"].close()
        postgres_server.ensure_running()
        postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def alias(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database alias with no rows, on SQLite and on PostgreSQL."""
    name: str = request.getfixturevalue(f"{request.param.removesuffix('ql')}_alias")
    for model in (Effect, ProcessedWebhook, CustomerMark):
        model.objects.using(name).all().delete()
    try:
        yield name
    finally:
        connections.close_all()


def mark(alias: str, customer: str = "cus_1") -> int | None:
    row = CustomerMark.objects.using(alias).filter(customer_key=customer).first()
    return None if row is None else row.updated_at_us


def run(store: DjangoIdempotencyStore, key: str, order: Order, *, ttl: datetime.timedelta = TTL) -> str:
    claim = store.acquire(key, lease=LEASE, order=order)
    if claim.status == "acquired":
        store.complete(key, claim.token, ttl=ttl, order=order)
    return claim.status


# --------------------------------------------------------------------------- the store


def test_the_store_keeps_order() -> None:
    assert DjangoIdempotencyStore.keeps_order is True
    assert isinstance(DjangoIdempotencyStore(), OrderedIdempotencyStore)
    Dispatcher(SECRET, idempotency_store=DjangoIdempotencyStore(), skip_out_of_order=True)


def test_migrate_creates_the_marks_table(alias: str) -> None:
    assert "carecycle_webhooks_customer_marks" in connections[alias].introspection.table_names()
    assert str(CustomerMark(customer_key="cus_1")) == "cus_1"


def test_older_is_stale_equal_and_newer_run(alias: str) -> None:
    store = DjangoIdempotencyStore(using=alias)
    assert run(store, "msg_2", Order("cus_1", 200)) == "acquired"
    assert mark(alias) == 200
    assert run(store, "msg_1", Order("cus_1", 100)) == "stale"
    assert run(store, "msg_2b", Order("cus_1", 200)) == "acquired"
    assert run(store, "msg_3", Order("cus_1", 300)) == "acquired"
    assert mark(alias) == 300
    assert run(store, "msg_1", Order("cus_1", 100)) == "stale"  # nothing kept: stale again
    done = sorted(ProcessedWebhook.objects.using(alias).values_list("webhook_id", flat=True))
    assert done == ["msg_2", "msg_2b", "msg_3"]
    assert run(store, "msg_3", Order("cus_1", 300)) == "done"


def test_a_failed_delivery_leaves_the_mark_and_frees_the_customer(alias: str) -> None:
    store = DjangoIdempotencyStore(using=alias)
    assert run(store, "msg_1", Order("cus_1", 200)) == "acquired"
    claim = store.acquire("msg_2", lease=LEASE, order=Order("cus_1", 300))
    assert claim.status == "acquired"
    store.release("msg_2", claim.token, order=Order("cus_1", 300))
    assert mark(alias) == 200
    assert run(store, "msg_0", Order("cus_1", 100)) == "stale"
    assert run(store, "msg_2", Order("cus_1", 300)) == "acquired"
    assert mark(alias) == 300


def test_tenants_customers_are_separate(alias: str) -> None:
    store = DjangoIdempotencyStore(using=alias)
    assert run(store, "a/msg_1", Order("a/cus_1", 500)) == "acquired"
    assert run(store, "b/msg_1", Order("b/cus_1", 100)) == "acquired"
    assert (mark(alias, "a/cus_1"), mark(alias, "b/cus_1")) == (500, 100)


def test_an_expired_mark_no_longer_counts_and_is_pruned(alias: str) -> None:
    store = DjangoIdempotencyStore(using=alias)
    assert run(store, "msg_2", Order("cus_1", 200), ttl=datetime.timedelta(milliseconds=1)) == "acquired"
    time.sleep(0.01)
    assert run(store, "msg_1", Order("cus_1", 100), ttl=datetime.timedelta(milliseconds=1)) == "acquired"
    assert mark(alias) == 100  # over the expired mark, not the greater of the two
    time.sleep(0.01)
    assert store.prune() == 3  # two done marks and the customer's
    assert mark(alias) is None


def hold(store: DjangoIdempotencyStore, key: str, order: Order) -> tuple[threading.Event, threading.Thread]:
    """A delivery of ``order``'s customer held open in a thread of its own, until the event is set."""
    inside, release = threading.Event(), threading.Event()

    def deliver() -> None:
        try:
            claim: Claim = store.acquire(key, lease=LEASE, order=order)
            assert claim.status == "acquired"
            inside.set()
            assert release.wait(WAIT)
            store.complete(key, claim.token, ttl=TTL, order=order)
        finally:
            connections.close_all()

    thread = threading.Thread(target=deliver)
    thread.start()
    assert inside.wait(WAIT)
    return release, thread


def test_a_concurrent_delivery_of_the_customer_in_this_process_is_in_flight_at_once(alias: str) -> None:
    store = DjangoIdempotencyStore(using=alias)
    release, thread = hold(store, "msg_1", Order("cus_1", 100))
    try:
        started = time.monotonic()
        assert store.acquire("msg_2", lease=LEASE, order=Order("cus_1", 200)).status == "in_flight"
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
        thread.join(WAIT)
    assert run(store, "msg_2", Order("cus_1", 200)) == "acquired"
    assert mark(alias) == 200


def test_a_concurrent_delivery_of_the_customer_in_another_worker_is_in_flight_at_once_on_postgresql(
    postgres_alias: str,
) -> None:
    for model in (ProcessedWebhook, CustomerMark):
        model.objects.using(postgres_alias).all().delete()
    first, other = DjangoIdempotencyStore(using=postgres_alias), DjangoIdempotencyStore(using=postgres_alias)
    release, thread = hold(first, "msg_1", Order("cus_1", 100))
    try:
        started = time.monotonic()
        assert other.acquire("msg_2", lease=LEASE, order=Order("cus_1", 200)).status == "in_flight"
        assert time.monotonic() - started < 1.0  # the advisory lock: never waits
        assert run(other, "msg_3", Order("cus_2", 200)) == "acquired"  # another customer runs
    finally:
        release.set()
        thread.join(WAIT)
        connections.close_all()
    assert run(other, "msg_2", Order("cus_1", 200)) == "acquired"
    connections.close_all()


# --------------------------------------------------------------------------- the views


CUSTOMER = "b1f7c0e2-3a4d-4e5f-8a9b-0c1d2e3f4a5b"
OLD, NEW = "2026-06-18T14:22:09.120Z", "2026-06-18T14:22:09.121Z"


def updated(updated_at: str, webhook_id: str) -> tuple[bytes, dict[str, str]]:
    payload = json.loads(fixture_bytes("customer.updated"))
    payload["updatedAt"] = updated_at
    delivery = sign(json.dumps(payload).encode(), secret=SECRET, webhook_id=webhook_id)
    return delivery.body, dict(delivery.headers)


def applier(alias: str, *, fail_first: bool = False) -> Dispatcher:
    """A dispatcher that skips older updates; its handler writes the updatedAt it applied."""
    webhooks = Dispatcher(
        SECRET, idempotency_store=DjangoIdempotencyStore(using=alias), skip_out_of_order=True
    )
    failures = [RuntimeError("first attempt fails")] if fail_first else []

    @webhooks.on("customer.updated")
    def apply(event: CustomerUpdatedEvent) -> None:
        Effect.objects.using(alias).create(webhook_id=current_delivery().webhook_id, event_id=event.id)
        if failures:
            raise failures.pop()

    return webhooks


def applied(alias: str) -> list[str]:
    return list(Effect.objects.using(alias).order_by("id").values_list("webhook_id", flat=True))


def test_the_sync_view_acknowledges_an_older_update_as_stale(alias: str) -> None:
    serve(applier(alias, fail_first=True))
    client = Client()

    def post(updated_at: str, webhook_id: str) -> tuple[int, dict[str, Any]]:
        body, headers = updated(updated_at, webhook_id)
        response = client.post("/webhooks/", data=body, content_type="application/json", headers=headers)
        return response.status_code, response.json()

    assert post(NEW, "msg_new")[0] == 500  # fails: the mark stays as it was (none)
    assert post(OLD, "msg_old") == (200, {"status": "processed"})
    assert post(NEW, "msg_new") == (200, {"status": "processed"})  # Svix's retry
    assert post(OLD, "msg_old2") == (200, {"status": "stale"})
    assert applied(alias) == ["msg_old", "msg_new"]


def test_the_async_view_acknowledges_an_older_update_as_stale(alias: str) -> None:
    serve_async(applier(alias))

    async def deliver() -> list[tuple[int, dict[str, Any]]]:
        client = AsyncClient()
        answers = []
        for updated_at, webhook_id in ((NEW, "msg_new"), (OLD, "msg_old")):
            body, headers = updated(updated_at, webhook_id)
            response = await client.post(
                "/webhooks/", data=body, content_type="application/json", headers=headers
            )
            answers.append((response.status_code, response.json()))
        return answers

    assert asyncio.run(deliver()) == [(200, {"status": "processed"}), (200, {"status": "stale"})]
    assert applied(alias) == ["msg_new"]
    assert mark(alias, CUSTOMER) == 1781792529121000
