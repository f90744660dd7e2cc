"""Type checks of the public API, run by mypy --strict and pyright; never executed."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Literal

import django.http
import flask
import starlette.requests
from typing_extensions import assert_never, assert_type
from werkzeug.datastructures import EnvironHeaders, Headers

import carecycle_webhooks
from carecycle_webhooks import (
    AssignedUser,
    AsyncIdempotencyStore,
    CallCompletedEvent,
    CallDirection,
    Campaign,
    Claim,
    Customer,
    CustomerCreatedEvent,
    CustomerStatus,
    CustomerUpdatedEvent,
    Dispatcher,
    Event,
    EventType,
    Gender,
    IdempotencyStore,
    InMemoryIdempotencyStore,
    LineType,
    MaritalStatus,
    RedisIdempotencyStore,
    UnknownEvent,
    WebhookDelivery,
    WebhookPayloadError,
    WebhookResponse,
    WebhookVerificationError,
    WebhookVerifier,
    current_delivery,
    parse_event,
    parse_unverified_event,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def exhaustive(event: Event) -> str:
    match event:
        case CustomerCreatedEvent():
            return event.event_type
        case CustomerUpdatedEvent():
            return event.event_type
        case CallCompletedEvent():
            return event.event_type
        case UnknownEvent():
            return event.event_type
        case _:
            assert_never(event)


def field_types(created: CustomerCreatedEvent, call: CallCompletedEvent, customer: Customer) -> None:
    assert_type(created.event_type, Literal["customer.created"])
    assert_type(created.id, uuid.UUID)
    assert_type(created.created_at, datetime.datetime)
    assert_type(created.updated_at, datetime.datetime)
    assert_type(created.date_of_birth, datetime.date | None)
    assert_type(created.medicare_part_a_date, datetime.date | None)
    assert_type(created.household_income, int | None)
    assert_type(created.do_not_sms, bool | None)
    assert_type(created.mbi_number, str | None)
    assert_type(created.assigned_user, AssignedUser | None)
    assert_type(customer.created_at, datetime.datetime | None)
    assert_type(call.event_type, Literal["call.completed"])
    assert_type(call.duration_ms, int | None)
    assert_type(call.customer, Customer | None)
    assert_type(call.campaign, Campaign | None)
    assert_type(call.start_time, datetime.datetime | None)
    if call.campaign is not None:
        assert_type(call.campaign.tags, tuple[str, ...] | None)
    if created.assigned_user is not None:
        assert_type(created.assigned_user.licensed_states, tuple[str, ...] | None)


def open_enums(created: CustomerCreatedEvent, call: CallCompletedEvent) -> None:
    # Unknown enum values are kept as str, so the field is `Enum | str`: members still match.
    status = created.status
    if status == CustomerStatus.LEAD:
        pass
    match created.line_type:
        case LineType.MOBILE | LineType.LANDLINE:
            pass
        case str():
            pass
        case None:
            pass
    _gender: Gender | str | None = created.gender
    _marital: MaritalStatus | str | None = created.marital_status
    _direction: CallDirection | str | None = call.direction
    _event_type: str = EventType.CALL_COMPLETED


def unknown_event(event: UnknownEvent) -> None:
    assert_type(event.event_type, str)
    assert_type(event.payload, Mapping[str, Any])


def parsing(body: bytes, text: str, headers: dict[str, str]) -> None:
    assert_type(parse_event(body, headers, SECRET), Event)
    assert_type(parse_event(text, headers, [SECRET, SECRET]), Event)
    assert_type(parse_event(body, headers, (SECRET,), tolerance=datetime.timedelta(minutes=1)), Event)
    assert_type(parse_unverified_event(body), Event)
    verifier = WebhookVerifier(SECRET, tolerance=datetime.timedelta(seconds=30), clock=lambda: 0.0)
    assert_type(verifier.verify(body, headers), WebhookDelivery)
    assert_type(verifier.verify(body, headers).webhook_id, str)
    assert_type(verifier.verify(body, headers).timestamp, datetime.datetime)
    assert_type(verifier.parse(body, headers), Event)


def flask_view() -> None:
    # Each framework's request.headers is accepted without a cast.
    flask_request: flask.Request = flask.request
    parse_event(flask_request.get_data(), flask_request.headers, SECRET)
    parse_event(b"", Headers(), SECRET)
    parse_event(b"", EnvironHeaders({}), SECRET)


def django_view(request: django.http.HttpRequest) -> None:
    parse_event(request.body, request.headers, SECRET)


async def starlette_endpoint(request: starlette.requests.Request) -> None:
    parse_event(await request.body(), request.headers, SECRET)


def errors(error: WebhookVerificationError, payload_error: WebhookPayloadError) -> None:
    assert_type(error.reason, carecycle_webhooks.VerificationFailure)
    assert_type(payload_error.errors, tuple[carecycle_webhooks.PayloadErrorDetail, ...])


def frozen(event: CustomerCreatedEvent) -> None:
    event.first_name = "x"  # type: ignore[misc]  # pyright: ignore[reportAttributeAccessIssue]


# --------------------------------------------------------------------------- dispatcher

webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())
from_environment = Dispatcher(idempotency_store=InMemoryIdempotencyStore())  # $CARECYCLE_WEBHOOK_SECRET


@webhooks.on("customer.created")
def on_created(event: CustomerCreatedEvent) -> None: ...


@webhooks.on(EventType.CUSTOMER_UPDATED)
def on_updated(event: CustomerUpdatedEvent) -> None: ...


@webhooks.on(CallCompletedEvent)
async def on_call(event: CallCompletedEvent) -> None: ...


@webhooks.on("customer.created")
@webhooks.on("customer.updated")
def on_either(event: CustomerCreatedEvent | CustomerUpdatedEvent) -> None: ...


@webhooks.catch_all
def on_anything(event: Event) -> None: ...


def some_event_type() -> EventType:
    return EventType.CALL_COMPLETED


@webhooks.on(some_event_type())
def on_any_known(event: Event) -> None: ...


def dispatcher_types(body: bytes, headers: dict[str, str], created: CustomerCreatedEvent) -> None:
    # The decorators return the handlers unchanged: parameter names survive, too.
    assert_type(on_created(event=created), None)
    _call: Callable[[CallCompletedEvent], Coroutine[Any, Any, None]] = on_call
    response = webhooks.handle(body, headers)
    assert_type(response, WebhookResponse)
    assert_type(response.status_code, int)
    assert_type(response.body, bytes)
    assert_type(response.headers, Mapping[str, str])
    assert_type(current_delivery(), WebhookDelivery)
    assert_type(current_delivery().attempt, int | None)


async def dispatcher_async(body: bytes, headers: dict[str, str]) -> None:
    assert_type(await webhooks.handle_async(body, headers), WebhookResponse)


def stores(redis_client: object) -> None:
    store: IdempotencyStore = RedisIdempotencyStore(redis_client)
    store = InMemoryIdempotencyStore(max_entries=10)
    assert_type(store.acquire("msg", lease=datetime.timedelta(seconds=30)), Claim)
    async_store: AsyncIdempotencyStore = InMemoryIdempotencyStore()
    Dispatcher(SECRET, idempotency_store=async_store)
    Dispatcher(SECRET, idempotency_store=store)
    assert_type(webhooks.idempotency_store, IdempotencyStore | AsyncIdempotencyStore | None)


async def async_store(store: AsyncIdempotencyStore) -> None:
    assert_type(await store.acquire_async("msg", lease=datetime.timedelta(seconds=30)), Claim)


# --------------------------------------------------------------------------- testing helpers


def testing_helpers() -> None:
    from carecycle_webhooks import testing

    secret = testing.generate_secret()
    assert_type(secret, str)
    assert_type(testing.customer_created(first_name="Ana"), CustomerCreatedEvent)
    assert_type(testing.customer_updated(), CustomerUpdatedEvent)
    assert_type(testing.call_completed(customer={"first_name": "Ana"}), CallCompletedEvent)
    assert_type(testing.unknown_event("a.b", x=1), UnknownEvent)
    assert_type(testing.make_event("customer.created"), Event)
    delivery = testing.sign(testing.customer_created(), secret=[secret, secret], header_prefix="webhook")
    assert_type(delivery, testing.SignedDelivery)
    assert_type(delivery.body, bytes)
    assert_type(delivery.headers, Mapping[str, str])
    parse_event(delivery.body, delivery.headers, secret)


def plugin_fixtures(carecycle_sign: Any, carecycle_delivery: Any) -> None:
    from carecycle_webhooks.testing import DeliveryFactory, Signer

    signer: Signer = carecycle_sign
    factory: DeliveryFactory = carecycle_delivery
    assert_type(signer(b"{}", webhook_id="msg_1").webhook_id, str)
    assert_type(factory("call.completed", disposition="Busy").body, bytes)
