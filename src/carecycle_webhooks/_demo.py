"""The demo: sign the catalog's example events with svix, parse them back, print what arrives.

Run it with ``python -m carecycle_webhooks._demo`` (the README's first command does).
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import sys
from typing import TextIO

from ._errors import WebhookError
from ._models import CallCompletedEvent, CustomerCreatedEvent, CustomerUpdatedEvent, Event, UnknownEvent
from ._samples import SAMPLE_PAYLOADS
from ._verify import WebhookVerifier


def _describe(event: Event) -> str:
    match event:
        case CustomerCreatedEvent() | CustomerUpdatedEvent():
            return (
                f"{type(event).__name__}: customer {event.id}, status {event.status}, "
                f"line type {event.line_type}, assigned to "
                f"{event.assigned_user.name if event.assigned_user else 'nobody'}"
            )
        case CallCompletedEvent():
            return (
                f"CallCompletedEvent: call {event.id}, {event.direction}, "
                f"disposition {event.disposition!r}, {event.duration_ms} ms, "
                f"campaign {event.campaign.name if event.campaign else None!r}, "
                f"customer {event.customer.id if event.customer else None}"
            )
        case UnknownEvent():
            return f"UnknownEvent: {event.event_type} with {len(event.payload)} fields"


def main(out: TextIO = sys.stdout) -> int:
    """Sign each example with svix, verify and parse it, and show a tampered body rejected."""
    from svix.webhooks import Webhook as SvixWebhook

    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    verifier = WebhookVerifier(secret)
    signer = SvixWebhook(secret)
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    out.write("Signing the catalog's examples with svix, a fresh random secret\n\n")
    for number, (event_type, payload) in enumerate(SAMPLE_PAYLOADS.items(), start=1):
        body = json.dumps(payload)
        msg_id = f"msg_demo{number:04d}"
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(msg_id, now, body),
        }
        event = verifier.parse(body.encode(), headers)
        out.write(f"{event_type} ({len(body)} bytes, {msg_id})\n  -> {_describe(event)}\n")
        out.write(f"  repr hides {len(type(event).phi_fields)} PHI fields: {event!r:.100}...\n\n")
    body = json.dumps(SAMPLE_PAYLOADS["customer.created"])
    headers = {
        "webhook-id": "msg_demo_tampered",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign("msg_demo_tampered", now, body),
    }
    try:
        verifier.parse(body.replace('"Lead"', '"Active"'), headers)
    except WebhookError as error:
        out.write(f"A tampered body is rejected: {type(error).__name__}: {error}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
