from __future__ import annotations

import base64
import datetime
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from svix.webhooks import Webhook as SvixWebhook

FIXTURES = Path(__file__).parent / "fixtures"
EVENT_TYPES = ("customer.created", "customer.updated", "call.completed")

# CI runs more examples; a developer's loop stays quick.
settings.register_profile("ci", max_examples=400, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

SECRET = "whsec_" + base64.b64encode(b"carecycle-webhooks-test-secret-0001").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"carecycle-webhooks-other-secret-02").decode()


def load_fixture(event_type: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{event_type}.json").read_text())


def fixture_bytes(event_type: str) -> bytes:
    return (FIXTURES / f"{event_type}.json").read_bytes()


def svix_headers(
    body: bytes | str,
    *,
    secret: str = SECRET,
    msg_id: str = "msg_2Lm1bFf5ZsqHw5e2yd0DgPzm5Tx",
    timestamp: int | None = None,
    prefix: str = "webhook",
) -> dict[str, str]:
    """Headers for ``body`` as Svix sends them, signed by svix's own ``Webhook.sign``."""
    when = (
        datetime.datetime.now(tz=datetime.timezone.utc)
        if timestamp is None
        else (datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc))
    )
    text = body.decode() if isinstance(body, bytes) else body
    signature = SvixWebhook(secret).sign(msg_id, when, text)
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(int(when.timestamp())),
        f"{prefix}-signature": signature,
    }


@pytest.fixture(params=EVENT_TYPES)
def event_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)
