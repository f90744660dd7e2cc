"""The observability examples (examples/observability): a delivery prints its spans and metrics.

Each runs in a process of its own, as it sets the global OpenTelemetry providers (once per
process), through the framework's test client; the console exporters print to stdout when
the process exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from carecycle_webhooks.testing import generate_secret

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples" / "observability"

SEND = textwrap.dedent(
    """
    import os, sys
    from carecycle_webhooks._samples import SAMPLE_PAYLOADS
    from carecycle_webhooks.testing import sign

    delivery = sign(SAMPLE_PAYLOADS["customer.created"], secret=os.environ["CARECYCLE_WEBHOOK_SECRET"])
    if sys.argv[1] == "fastapi":
        from starlette.testclient import TestClient
        from fastapi_otel import app
        client = TestClient(app)
        status = client.post("/webhooks", content=delivery.body, headers=dict(delivery.headers)).status_code
    else:
        from flask_otel import app
        client = app.test_client()
        status = client.post("/webhooks", data=delivery.body, headers=dict(delivery.headers)).status_code
    assert status == 200, status
    """
)


@pytest.mark.parametrize("framework", ["fastapi", "flask"])
def test_a_delivery_prints_its_spans_and_metrics(framework: str) -> None:
    env = {**os.environ, "CARECYCLE_WEBHOOK_SECRET": generate_secret()}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLES), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-c", SEND, framework],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert '"name": "process customer.created"' in out
    assert '"kind": "SpanKind.CONSUMER"' in out
    assert '"carecycle.delivery.outcome": "processed"' in out
    assert '"name": "customer_created"' in out  # the handler's span
    assert '"name": "carecycle.webhook.deliveries"' in out
    assert '"name": "carecycle.webhook.handler.duration"' in out
    assert "Delacroix" not in out + completed.stderr
