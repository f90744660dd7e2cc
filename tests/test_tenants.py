"""Many tenants on one endpoint: a secret resolver, per-tenant keys, 404 (issue 14, item 2)."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import threading
from typing import Any

import pytest

from carecycle_webhooks import (
    CustomerCreatedEvent,
    Dispatcher,
    InMemoryIdempotencyStore,
    WebhookConfigurationError,
    WebhookResponse,
    current_delivery,
)
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


def test_a_static_secret_takes_a_tenant_key_to_scope_its_ids() -> None:
    secret = generate_secret()
    webhooks = Dispatcher(secret, idempotency_store=InMemoryIdempotencyStore())
    tenants_seen: list[str | None] = []
    webhooks.on("customer.created")(lambda _: tenants_seen.append(current_delivery().tenant))
    delivery = sign(customer_created(), secret=secret, webhook_id="msg_1")
    assert answer(webhooks.handle(delivery.body, delivery.headers, tenant="acme")) == (200, "processed")
    assert answer(webhooks.handle(delivery.body, delivery.headers, tenant="globex")) == (200, "processed")
    assert answer(webhooks.handle(delivery.body, delivery.headers)) == (200, "processed")
    assert answer(webhooks.handle(delivery.body, delivery.headers, tenant="a/b")) == (404, "unknown_tenant")
    assert tenants_seen == ["acme", "globex", None]


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
