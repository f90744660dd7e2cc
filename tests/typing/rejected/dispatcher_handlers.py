"""Handlers that do not match their event: each line marked ``# E:`` must be a mypy error."""

from __future__ import annotations

from carecycle_webhooks import (
    CallCompletedEvent,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    Dispatcher,
    Event,
    EventType,
    UnknownEvent,
)

webhooks = Dispatcher("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


@webhooks.on("call.completed")  # E: type-var
def wrong_for_call(event: CustomerCreatedEvent) -> None: ...


@webhooks.on(EventType.CUSTOMER_CREATED)  # E: type-var
def wrong_for_created(event: CallCompletedEvent) -> None: ...


@webhooks.on(CustomerUpdatedEvent)  # E: type-var
def created_is_not_updated(event: CustomerCreatedEvent) -> None: ...


@webhooks.on("customer.updated")  # E: type-var
def only_created(event: CustomerCreatedEvent) -> None: ...


@webhooks.on("customer.create")  # E: operator
def misspelt(event: CustomerCreatedEvent) -> None: ...


@webhooks.on("appointment.booked")  # E: operator
def not_in_the_catalog(event: UnknownEvent) -> None: ...


def read_at_run_time() -> str:
    return "customer.created"


@webhooks.on(read_at_run_time())  # E: operator
def any_str(event: CustomerCreatedEvent) -> None: ...


@webhooks.on(EventType(read_at_run_time()))  # the way to register a str read at run time
def checked(event: Event) -> None: ...


@webhooks.catch_all  # E: type-var
def catch_all_must_take_every_event(event: CustomerCreatedEvent) -> None: ...


@webhooks.on("customer.created")  # E: type-var
def takes_nothing() -> None: ...


webhooks.on(42)  # E: call-overload
webhooks.on(UnknownEvent)  # E: arg-type


@webhooks.on("customer.created")
def fine(event: CustomerCreatedEvent) -> None: ...


not_an_int: int = fine  # E: assignment  (the decorator kept fine's own type)
