"""The testing helpers: signing with svix's own code, factories, the pytest plugin's fixtures."""

from __future__ import annotations

import datetime
import json
import uuid

import pydantic
import pytest
from svix.webhooks import Webhook as SvixWebhook

from carecycle_webhooks import (
    CallCompletedEvent,
    Customer,
    CustomerCreatedEvent,
    CustomerStatus,
    CustomerUpdatedEvent,
    Dispatcher,
    EventType,
    UnknownEvent,
    WebhookConfigurationError,
    WebhookVerifier,
    parse_event,
)
from carecycle_webhooks.testing import (
    DeliveryFactory,
    Signer,
    call_completed,
    customer_created,
    customer_updated,
    generate_secret,
    make_event,
    sign,
    unknown_event,
)
from tests.conftest import fixture_bytes, load_fixture


def test_generated_secrets_work_with_svix() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert secret != generate_secret()
    SvixWebhook(secret)  # svix accepts it
    WebhookVerifier(secret)


def test_sign_matches_svix_and_verifies() -> None:
    secret = generate_secret()
    at = datetime.datetime(2026, 6, 17, 19, 7, 23, tzinfo=datetime.timezone.utc)
    delivery = sign(fixture_bytes("customer.created"), secret=secret, webhook_id="msg_1", timestamp=at)
    assert delivery.body == fixture_bytes("customer.created")
    assert delivery.headers["svix-signature"] == SvixWebhook(secret).sign("msg_1", at, delivery.body.decode())
    assert delivery.headers["svix-timestamp"] == str(int(at.timestamp()))
    assert delivery.headers["content-type"] == "application/json"
    verifier = WebhookVerifier(secret, clock=at.timestamp)
    assert isinstance(verifier.parse(delivery.body, delivery.headers), CustomerCreatedEvent)


def test_sign_defaults_and_options() -> None:
    secret = generate_secret()
    delivery = sign(customer_created(), secret=secret, header_prefix="webhook", attempt=3)
    assert delivery.webhook_id.startswith("msg_")
    assert delivery.headers["webhook-id"] == delivery.webhook_id
    assert delivery.headers["webhook-attempt"] == "3"
    assert abs(delivery.timestamp - datetime.datetime.now(tz=datetime.timezone.utc)) < datetime.timedelta(
        seconds=5
    )
    assert WebhookVerifier(secret).verify(delivery.body, delivery.headers).attempt == 3
    assert sign({"event_type": "x"}, secret=secret, timestamp=1_800_000_000).headers["svix-timestamp"] == (
        "1800000000"
    )
    assert json.loads(sign('{"a": 1}', secret=secret).body) == {"a": 1}


def test_sign_with_several_secrets_for_rotation() -> None:
    old, new = generate_secret(), generate_secret()
    delivery = sign(customer_created(), secret=[new, old])
    assert len(delivery.headers["svix-signature"].split()) == 2
    assert isinstance(parse_event(delivery.body, delivery.headers, old), CustomerCreatedEvent)
    assert isinstance(parse_event(delivery.body, delivery.headers, new), CustomerCreatedEvent)


@pytest.mark.parametrize(
    ("payload", "options", "message"),
    [
        (b"{}", {"secret": "whsec_!!"}, "not valid"),
        (b"{}", {"secret": []}, "at least one"),
        (42, {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "not int"),
        (
            b"{}",
            {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "timestamp": datetime.datetime(2026, 1, 1)},  # noqa: DTZ001
            "aware",
        ),
    ],
)
def test_sign_rejects_bad_arguments(payload: object, options: dict[str, object], message: str) -> None:
    with pytest.raises(WebhookConfigurationError, match=message):
        sign(payload, **options)  # type: ignore[arg-type]


def test_factories_default_to_the_catalog_examples() -> None:
    for factory, event_type in (
        (customer_created, "customer.created"),
        (customer_updated, "customer.updated"),
    ):
        event = factory()
        assert (
            event.model_dump(mode="json", by_alias=True)["mbiNumber"] == load_fixture(event_type)["mbiNumber"]
        )
        assert event.event_type == event_type
    call = call_completed()
    assert isinstance(call.customer, Customer)
    assert call.disposition == "Enrolled"


def test_overrides_by_attribute_or_wire_name_and_nested_merge() -> None:
    new_id = uuid.uuid4()
    event = customer_created(id=new_id, first_name="Ana", doNotCall=True, status=CustomerStatus.ACTIVE)
    assert (event.id, event.first_name, event.do_not_call, event.status) == (new_id, "Ana", True, "Active")
    assert event.last_name == "Delacroix"  # untouched defaults stay
    assert customer_created(assigned_user={"name": "Sam"}).assigned_user.name == "Sam"  # type: ignore[union-attr]
    assert customer_created(assigned_user=None).assigned_user is None
    call = call_completed(
        disposition="No Answer", customer={"first_name": "Ana", "assignedUser": {"npn": "1"}}
    )
    assert call.disposition == "No Answer"
    assert call.customer is not None
    assert call.customer.first_name == "Ana"
    assert call.customer.last_name == "Delacroix"
    assert call.customer.assigned_user is not None
    assert call.customer.assigned_user.npn == "1"
    assert call_completed(customer=Customer(id=new_id)).customer == Customer(id=new_id)


def test_factory_errors() -> None:
    with pytest.raises(WebhookConfigurationError, match="no field 'frist_name'"):
        customer_created(frist_name="Ana")
    with pytest.raises(WebhookConfigurationError, match="no field 'nope'"):
        call_completed(customer={"nope": 1})
    with pytest.raises(pydantic.ValidationError):
        customer_created(date_of_birth="not a date")


def test_make_event_and_unknown_events() -> None:
    assert isinstance(make_event("customer.created"), CustomerCreatedEvent)
    assert isinstance(make_event(EventType.CUSTOMER_UPDATED, first_name="Ana"), CustomerUpdatedEvent)
    assert isinstance(make_event("call.completed"), CallCompletedEvent)
    unknown = make_event("appointment.booked", when="tomorrow")
    assert isinstance(unknown, UnknownEvent)
    assert unknown.payload == {"event_type": "appointment.booked", "when": "tomorrow"}
    assert unknown_event("x.y", a=1) == UnknownEvent(event_type="x.y", payload={"event_type": "x.y", "a": 1})


def test_factory_events_round_trip_through_a_signed_delivery() -> None:
    secret = generate_secret()
    for event in (
        customer_created(first_name="José"),
        customer_updated(),
        call_completed(),
        unknown_event("a.b"),
    ):
        delivery = sign(event, secret=secret)
        assert parse_event(delivery.body, delivery.headers, secret) == event


# --------------------------------------------------------------------------- the pytest plugin


def test_plugin_fixtures(
    carecycle_webhook_secret: str, carecycle_sign: Signer, carecycle_delivery: DeliveryFactory
) -> None:
    webhooks = Dispatcher(carecycle_webhook_secret)
    seen: list[object] = []
    webhooks.catch_all(seen.append)
    delivery = carecycle_delivery("call.completed", disposition="Busy")
    assert webhooks.handle(delivery.body, delivery.headers).status_code == 200
    signed = carecycle_sign(customer_created(), webhook_id="msg_fixture")
    assert signed.webhook_id == "msg_fixture"
    assert webhooks.handle(signed.body, signed.headers).status_code == 200
    assert [type(event) for event in seen] == [CallCompletedEvent, CustomerCreatedEvent]
    assert isinstance(seen[0], CallCompletedEvent)
    assert seen[0].disposition == "Busy"


def test_plugin_is_registered_as_an_entry_point(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("carecycle_webhooks")


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"\xff\xfe{}", "UTF-8"), ({"x": float("nan")}, "ValueError"), ({"x": object()}, "TypeError")],
)
def test_sign_rejects_what_svix_would_not_send(payload: object, message: str) -> None:
    with pytest.raises(WebhookConfigurationError, match=message) as excinfo:
        sign(payload, secret=generate_secret())  # type: ignore[arg-type]
    assert excinfo.value.__context__ is None
