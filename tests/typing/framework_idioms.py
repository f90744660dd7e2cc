"""The Flask extension and the FastAPI idioms, as a type checker sees them (checked by mypy --strict)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

import flask
from fastapi import APIRouter, Depends, FastAPI
from starlette.requests import Request
from typing_extensions import assert_type

from carecycle_webhooks import (
    CallCompletedEvent,
    CustomerCreatedEvent,
    Dispatcher,
    Event,
    EventType,
    InMemoryIdempotencyStore,
)
from carecycle_webhooks.fastapi import WebhookAnswer, document_webhooks, verified_event, webhook_router
from carecycle_webhooks.flask import CareCycleWebhooks

extension = CareCycleWebhooks(idempotency_store=InMemoryIdempotencyStore())


@extension.on("customer.created")
def created(event: CustomerCreatedEvent) -> None: ...


@extension.on(EventType.CALL_COMPLETED)
async def completed(event: CallCompletedEvent) -> None: ...


@extension.catch_all
def everything(event: Event) -> None: ...


def dispatcher_of(app: flask.Flask) -> Dispatcher:
    return extension.dispatcher_for(app)


webhooks = Dispatcher("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
assert_type(
    verified_event(webhooks, CallCompletedEvent), Callable[[Request], AsyncIterator[CallCompletedEvent]]
)
assert_type(verified_event(webhooks), Callable[[Request], AsyncIterator[Event]])
assert_type(webhook_router(webhooks, path="/webhooks", prefix="/hooks"), APIRouter)

app = FastAPI()
document_webhooks(app)
VerifiedCall = Annotated[CallCompletedEvent, Depends(verified_event(webhooks, CallCompletedEvent))]


@app.post("/calls")
async def calls(event: VerifiedCall) -> str:
    assert_type(event, CallCompletedEvent)
    return event.event_type


def answer_status(answer: WebhookAnswer) -> int:
    return answer.status_code + answer.response.status_code
