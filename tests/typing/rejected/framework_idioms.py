"""The Flask extension's handlers are checked as the dispatcher's: each ``# E:`` line is a mypy error."""

from __future__ import annotations

from carecycle_webhooks import CallCompletedEvent, CustomerCreatedEvent, Dispatcher
from carecycle_webhooks.fastapi import verified_event
from carecycle_webhooks.flask import CareCycleWebhooks

extension = CareCycleWebhooks()


@extension.on("call.completed")  # E: type-var
def wrong_for_call(event: CustomerCreatedEvent) -> None: ...


@extension.on("customer.create")  # E: operator
def misspelt(event: CustomerCreatedEvent) -> None: ...


@extension.catch_all  # E: type-var
def catch_all_must_take_every_event(event: CallCompletedEvent) -> None: ...


webhooks = Dispatcher("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
verified_event(webhooks, int)  # E: type-var
