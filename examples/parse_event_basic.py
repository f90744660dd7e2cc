"""The smallest integration: verify and parse one delivery, then route on its type.

Run it with ``python examples/parse_event_basic.py``: it signs a sample event with svix
(as careCycle's Svix endpoint would), then receives it.
"""

from __future__ import annotations

import datetime
import json

from svix.webhooks import Webhook

from carecycle_webhooks import (
    CallCompletedEvent,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    UnknownEvent,
    WebhookPayloadError,
    WebhookVerificationError,
    parse_event,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def receive(body: bytes, headers: dict[str, str]) -> int:
    """What an HTTP endpoint does with one delivery; returns the status code for Svix."""
    try:
        event = parse_event(body, headers, SECRET)
    except WebhookVerificationError:
        return 400  # not from careCycle, or a stale replay
    except WebhookPayloadError:
        return 422  # signed, but not an event this version can read
    match event:
        case CustomerCreatedEvent() | CustomerUpdatedEvent():
            print(f"{event.event_type}: customer {event.id} is {event.status}")
        case CallCompletedEvent():
            print(f"call {event.id} ended: {event.disposition} after {event.duration_ms} ms")
        case UnknownEvent():
            print(f"{event.event_type} is new to this version; upgrade carecycle-webhooks")
    return 204


if __name__ == "__main__":
    body = json.dumps(
        {
            "event_type": "customer.created",
            "id": "b1f7c0e2-3a4d-4e5f-8a9b-0c1d2e3f4a5b",
            "createdAt": "2026-06-17T19:07:23.709Z",
            "updatedAt": "2026-06-17T19:07:23.709Z",
            "status": "Lead",
        }
    )
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    headers = {
        "webhook-id": "msg_example",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign("msg_example", now, body),
    }
    print("status", receive(body.encode(), headers))
