"""Many tenants on one endpoint: a secret resolver, per-tenant keys, 404 (issue 14, item 2)."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import threading
import time
from typing import Any

import pytest

from carecycle_webhooks import (
    CustomerCreatedEvent,
    Dispatcher,
    InMemoryIdempotencyStore,
    WebhookConfigurationError,
    WebhookDelivery,
    WebhookResponse,
    current_delivery,
    parse_unverified_event,
)
from carecycle_webhooks._budget import BodyBudget
from carecycle_webhooks._drivers import store_key
from carecycle_webhooks._logs import Throttle
from carecycle_webhooks._tenants import TenantSecrets, is_tenant_key
from carecycle_webhooks.testing import Tenants, customer_created, generate_secret, sign


def answer(response: WebhookResponse) -> tuple[int, str]:
    fields = json.loads(response.body)
    return response.status_code, fields.get("status") or fields.get("error")


def tenant_dispatcher(tenants: Tenants, **options: Any) -> tuple[Dispatcher, list[tuple[str | None, str]]]:
    """A dispatcher for ``tenants``; the handler notes each delivery's tenant and webhook-id."""
    webhooks = Dispatcher(tenants.resolve, idempotency_store=InMemoryIdempotencyStore(), **options)
    seen: list[tuple[str | None, str]] = []

    @webhooks.on("customer.created")
    def created(event: CustomerCreatedEvent) -> None:
        delivery = current_delivery()
        seen.append((delivery.tenant, delivery.webhook_id))

    return webhooks, seen


@pytest.mark.parametrize("asynchronous", [False, True])
def test_each_tenant_is_verified_with_its_own_secret(asynchronous: bool) -> None:
    tenants = Tenants("acme", "globex")
    webhooks, seen = tenant_dispatcher(tenants)

    def send(tenant: str, signed_for: str, msg: str) -> tuple[int, str]:
        delivery = tenants.sign(signed_for, customer_created(), webhook_id=msg)
        if asynchronous:
            return answer(asyncio.run(webhooks.handle_async(delivery.body, delivery.headers, tenant=tenant)))
        return answer(webhooks.handle(delivery.body, delivery.headers, tenant=tenant))

    assert send("acme", "acme", "msg_1") == (200, "processed")
    assert send("globex", "globex", "msg_1") == (200, "processed")  # the same id: another tenant's
    assert send("acme", "acme", "msg_1") == (200, "duplicate")
    assert send("globex", "acme", "msg_2")[0] == 400  # acme's signature is no proof for globex
    assert seen == [("acme", "msg_1"), ("globex", "msg_1")]


@pytest.mark.parametrize("tenant", ["initech", "", "../acme", "acme/x", "a" * 129, "acme\n", "é"])
def test_an_unknown_tenant_is_404_and_no_bad_key_reaches_the_resolver(tenant: str) -> None:
    tenants = Tenants("acme")
    webhooks, seen = tenant_dispatcher(tenants)
    delivery = tenants.sign("acme", customer_created())
    assert answer(webhooks.handle(delivery.body, delivery.headers, tenant=tenant)) == (404, "unknown_tenant")
    assert tenants.lookups == (1 if tenant == "initech" else 0)
    assert seen == []


def test_an_unknown_tenant_is_404_before_any_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    webhooks, _ = tenant_dispatcher(Tenants("acme"))

    def verify(*_: object) -> None:
        raise AssertionError("verified")

    monkeypatch.setattr("carecycle_webhooks._verify.WebhookVerifier.verify", verify)
    assert answer(webhooks.handle(b"not even json", {}, tenant="initech")) == (404, "unknown_tenant")


def test_without_a_tenant_key_a_resolver_answers_404_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    tenants = Tenants("acme")
    webhooks, _ = tenant_dispatcher(tenants)
    delivery = tenants.sign("acme", customer_created())
    assert answer(webhooks.handle(delivery.body, delivery.headers)) == (404, "unknown_tenant")
    assert "tenant path parameter" in caplog.text


def test_the_resolvers_answers_are_kept_and_a_rotation_takes_effect_after_the_ttl() -> None:
    tenants = Tenants("acme")
    kept, _ = tenant_dispatcher(tenants)
    for _ in range(5):
        delivery = tenants.sign("acme", customer_created())
        assert answer(kept.handle(delivery.body, delivery.headers, tenant="acme")) == (200, "processed")
    assert tenants.lookups == 1
    fresh, _ = tenant_dispatcher(tenants, secret_cache_ttl=datetime.timedelta(0))
    tenants.rotate("acme", keep_old=False)
    delivery = tenants.sign("acme", customer_created())
    assert answer(fresh.handle(delivery.body, delivery.headers, tenant="acme")) == (200, "processed")


def test_a_tenants_cache_expires_and_is_bounded() -> None:
    now = [0.0]
    answers = {"acme": generate_secret()}
    asked: list[str] = []

    def resolve(tenant: str) -> str | None:
        asked.append(tenant)
        return answers.get(tenant)

    secrets = TenantSecrets(
        resolve,
        tolerance=datetime.timedelta(minutes=5),
        clock=lambda: 0.0,
        ttl=datetime.timedelta(seconds=60),
        max_tenants=3,
        monotonic=lambda: now[0],
    )
    first = secrets.verifier("acme")
    assert first is not None
    assert secrets.verifier("acme") is first
    assert secrets.verifier("nobody") is None
    assert secrets.verifier("nobody") is None  # an unknown tenant is kept too: no lookup storm
    assert asked == ["acme", "nobody"]
    now[0] += 61
    answers["acme"] = generate_secret()  # rotated
    second = secrets.verifier("acme")
    assert second is not None
    assert second is not first
    for number in range(10):
        secrets.verifier(f"made-up-{number}")
    assert len(secrets._known) == 3


def test_an_async_resolver_serves_handle_and_handle_async() -> None:
    tenants = Tenants("acme")

    async def resolve(tenant: str) -> list[str] | None:
        await asyncio.sleep(0)
        return tenants.resolve(tenant)

    webhooks = Dispatcher(resolve)
    webhooks.on("customer.created")(lambda _: None)
    delivery = tenants.sign("acme", customer_created())
    assert answer(webhooks.handle(delivery.body, delivery.headers, tenant="acme")) == (200, "processed")
    other = Dispatcher(resolve)
    other.on("customer.created")(lambda _: None)
    response = asyncio.run(other.handle_async(delivery.body, delivery.headers, tenant="acme"))
    assert answer(response) == (200, "processed")


def test_a_sync_resolver_does_not_run_on_the_event_loop() -> None:
    tenants = Tenants("acme")
    threads: list[int] = []

    def resolve(tenant: str) -> list[str] | None:
        threads.append(threading.get_ident())
        return tenants.resolve(tenant)

    webhooks = Dispatcher(resolve)
    webhooks.on("customer.created")(lambda _: None)
    delivery = tenants.sign("acme", customer_created())

    async def main() -> tuple[WebhookResponse, int]:
        response = await webhooks.handle_async(delivery.body, delivery.headers, tenant="acme")
        return response, threading.get_ident()

    response, loop_thread = asyncio.run(main())
    assert answer(response) == (200, "processed")
    assert threads
    assert loop_thread not in threads


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_failing_resolver_is_503_and_its_message_is_not_logged(
    asynchronous: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def resolve(tenant: str) -> str:
        raise LookupError(f"no row for agency {tenant} of patient Jane Roe")

    webhooks = Dispatcher(resolve)
    delivery = sign(customer_created(), secret=generate_secret())
    with caplog.at_level(logging.DEBUG):
        if asynchronous:
            response = asyncio.run(webhooks.handle_async(delivery.body, delivery.headers, tenant="acme"))
        else:
            response = webhooks.handle(delivery.body, delivery.headers, tenant="acme")
    assert answer(response) == (503, "secret_resolver_failed")
    assert "LookupError" in caplog.text
    assert "Jane Roe" not in caplog.text


def test_a_resolver_answering_no_valid_secret_is_503() -> None:
    webhooks = Dispatcher(lambda _tenant: "not-a-secret")
    delivery = sign(customer_created(), secret=generate_secret())
    assert answer(webhooks.handle(delivery.body, delivery.headers, tenant="acme")) == (
        503,
        "secret_resolver_failed",
    )


def test_one_secret_for_every_tenant_refuses_a_tenant_key(caplog: pytest.LogCaptureFixture) -> None:
    # The path is not signed: scoping ids by it would let a replay to another path run again.
    secret = generate_secret()
    webhooks = Dispatcher(secret, idempotency_store=InMemoryIdempotencyStore())
    ran: list[str | None] = []
    webhooks.on("customer.created")(lambda _: ran.append(current_delivery().tenant))
    delivery = sign(customer_created(), secret=secret, webhook_id="msg_1")
    assert answer(webhooks.handle(delivery.body, delivery.headers)) == (200, "processed")
    for tenant in ("acme", "globex"):
        assert answer(webhooks.handle(delivery.body, delivery.headers, tenant=tenant)) == (
            404,
            "unknown_tenant",
        )
        response = asyncio.run(webhooks.handle_async(delivery.body, delivery.headers, tenant=tenant))
        assert answer(response) == (404, "unknown_tenant")
    assert ran == [None]
    assert "secret resolver" in caplog.text
    with pytest.raises(WebhookConfigurationError, match="needs a dispatcher with a secret resolver"):
        webhooks.verifier_for("acme")


def test_a_work_queue_keeps_each_tenants_ids_apart() -> None:
    tenants = Tenants("acme", "globex")
    webhooks, seen = tenant_dispatcher(tenants)
    for tenant in ("acme", "globex"):
        delivery = tenants.sign(tenant, customer_created(), webhook_id="msg_queued")
        verifier = webhooks.verifier_for(tenant)
        assert verifier is not None
        verified = verifier.verify(delivery.body, delivery.headers)  # at the endpoint
        assert verified.tenant == tenant
        event = parse_unverified_event(delivery.body)  # in the worker
        assert answer(webhooks.dispatch(event, verified)) == (200, "processed")
        assert answer(webhooks.dispatch(event, verified)) == (200, "duplicate")
    assert seen == [("acme", "msg_queued"), ("globex", "msg_queued")]


def test_a_long_tenant_key_and_webhook_id_make_a_key_a_store_can_hold() -> None:
    delivery = WebhookDelivery(
        "msg_" + "x" * 250, datetime.datetime.now(tz=datetime.timezone.utc), tenant="t" * 128
    )
    key = store_key(delivery)
    assert len(key) <= 200
    assert key.startswith("t" * 128 + "/sha256:")
    other = WebhookDelivery("msg_" + "x" * 249 + "y", delivery.timestamp, tenant="t" * 128)
    assert store_key(other) != key
    assert store_key(WebhookDelivery("msg_1", delivery.timestamp, tenant="acme")) == "acme/msg_1"


def test_concurrent_deliveries_of_one_uncached_tenant_ask_the_resolver_once() -> None:
    tenants = Tenants("acme")
    gate = threading.Event()

    def slow(tenant: str) -> list[str] | None:
        gate.wait(5)
        return tenants.resolve(tenant)

    secrets = TenantSecrets(
        slow, tolerance=datetime.timedelta(minutes=5), clock=time.time, ttl=datetime.timedelta(60)
    )
    found: list[object] = []
    threads = [threading.Thread(target=lambda: found.append(secrets.verifier("acme"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert len(found) == 8
    assert len({id(verifier) for verifier in found}) == 1
    assert tenants.lookups == 1
    assert not secrets._asking


def test_a_flood_of_made_up_tenants_leaves_the_handlers_threads_free() -> None:
    tenants = Tenants("acme")
    release = threading.Event()
    resolver_threads: set[str] = set()

    def slow_for_strangers(tenant: str) -> list[str] | None:
        resolver_threads.add(threading.current_thread().name)
        if tenant not in tenants:
            release.wait(5)
        return tenants.resolve(tenant)

    webhooks = Dispatcher(slow_for_strangers, secret_cache_ttl=datetime.timedelta(minutes=1))
    webhooks.on("customer.created")(lambda _: None)  # a sync handler: in the loop's default executor
    delivery = tenants.sign("acme", customer_created())

    async def main() -> tuple[int, str]:
        await webhooks.handle_async(delivery.body, delivery.headers, tenant="acme")  # cached now
        flood = [
            asyncio.ensure_future(webhooks.handle_async(b"{}", {}, tenant=f"stranger-{number}"))
            for number in range(40)
        ]
        await asyncio.sleep(0.05)
        again = tenants.sign("acme", customer_created())
        # The strangers hold every resolver thread; the tenant's sync handler still runs at once.
        legit = await asyncio.wait_for(webhooks.handle_async(again.body, again.headers, tenant="acme"), 2)
        release.set()
        answers = await asyncio.gather(*flood)
        assert {response.status_code for response in answers} == {404}
        return answer(legit)

    assert asyncio.run(main()) == (200, "processed")
    assert resolver_threads
    assert all(name.startswith("carecycle-webhooks-resolver") for name in resolver_threads)


def test_the_testing_kits_tenants_sign_with_every_valid_secret_while_rotating() -> None:
    tenants = Tenants("acme")
    webhooks, _ = tenant_dispatcher(tenants)
    first = tenants.sign("acme", customer_created())
    assert answer(webhooks.handle(first.body, first.headers, tenant="acme")) == (200, "processed")
    tenants.rotate("acme")  # the dispatcher still keeps the old secret only
    rotated = tenants.sign("acme", customer_created())
    assert len(rotated.headers["svix-signature"].split()) == 2
    assert answer(webhooks.handle(rotated.body, rotated.headers, tenant="acme")) == (200, "processed")


def test_a_dispatcher_with_a_resolver_has_a_verifier_per_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARECYCLE_WEBHOOK_SECRET", raising=False)  # a resolver does not read it
    tenants = Tenants("acme")
    webhooks = Dispatcher(tenants.resolve)
    with pytest.raises(WebhookConfigurationError, match="verifier_for"):
        _ = webhooks.verifier
    verifier = webhooks.verifier_for("acme")
    assert verifier is not None
    delivery = tenants.sign("acme", customer_created(), webhook_id="msg_queued")
    assert verifier.verify(delivery.body, delivery.headers).webhook_id == "msg_queued"
    assert webhooks.verifier_for("initech") is None
    with pytest.raises(WebhookConfigurationError, match="secret_cache_ttl"):
        Dispatcher(tenants.resolve, secret_cache_ttl=60)  # type: ignore[arg-type]


def test_tenant_keys() -> None:
    assert all(map(is_tenant_key, ["acme", "agency-42", "a.b_c~d", "0" * 128]))
    assert not any(map(is_tenant_key, ["", "a/b", "a b", "0" * 129, "ä", None, 42]))


def test_unknown_tenants_are_a_warning_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("carecycle_webhooks._tenants._UNKNOWN", Throttle(60.0))
    webhooks, _ = tenant_dispatcher(Tenants("acme"))
    with caplog.at_level(logging.DEBUG, logger="carecycle_webhooks"):
        for number in range(5):
            assert webhooks.handle(b"{}", {}, tenant=f"stranger-{number}").status_code == 404
    levels = [record.levelno for record in caplog.records if "unknown tenant" in record.getMessage()]
    assert levels == [logging.WARNING] + [logging.DEBUG] * 4


def test_refusals_of_the_body_budget_are_one_warning_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    # The same throttle as the unknown tenants' warning (one piece of code serves both).
    budget = BodyBudget(100)
    with caplog.at_level(logging.WARNING, logger="carecycle_webhooks"):
        for _ in range(4):
            assert not budget.take(101)
            budget.refuse()
    lines = [record.getMessage() for record in caplog.records if "body budget" in record.getMessage()]
    assert len(lines) == 1  # the next three wait for the next line, ten seconds on
    assert lines[0].startswith("1 deliveries answered 503")
