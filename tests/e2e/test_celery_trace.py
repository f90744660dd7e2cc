"""The Celery example carries the trace from the endpoint to the worker (examples/celery_queue).

The endpoint's side (`celery_tasks.trace_context`, which `enqueue` sends with each job) and
the worker's (`process_delivery`, called as the worker calls it, the context through JSON
as the broker carries it) run in one process of their own, with a real Redis for the
idempotency store and the SDK's in-memory exporter: Celery is not imported by pytest (it
would warn under ``filterwarnings = error``), and the global tracer provider is set once
per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

from tests.conftest import SECRET
from tests.e2e.servers import EXAMPLES

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

SCRIPT = textwrap.dedent(
    """
    import json
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    import celery_tasks
    from carecycle_webhooks._samples import SAMPLE_PAYLOADS

    with trace.get_tracer("endpoint").start_as_current_span("POST /webhooks"):
        carrier = celery_tasks.trace_context()  # what enqueue() sends with the job
    carrier = json.loads(json.dumps(carrier))  # through the broker, as Celery's JSON serializer
    body = json.dumps(SAMPLE_PAYLOADS["customer.updated"])
    outcome = celery_tasks.process_delivery(body, "msg_traced", 1781800000, 2, trace_context=carrier)
    # With opentelemetry-instrumentation-celery, the task's own span is current: the
    # delivery's span is its child, not a sibling continuing the carrier.
    with trace.get_tracer("celery").start_as_current_span("run process_delivery"):
        body = json.dumps(SAMPLE_PAYLOADS["customer.created"])
        celery_tasks.process_delivery(body, "msg_instrumented", 1781800000, 1, trace_context=carrier)
    print(json.dumps({
        "outcome": outcome,
        "carrier": sorted(carrier),
        "spans": [
            {
                "name": span.name,
                "trace_id": span.context.trace_id,
                "span_id": span.context.span_id,
                "parent": span.parent and span.parent.span_id,
            }
            for span in exporter.get_finished_spans()
        ],
    }))
    """
)


def test_the_workers_delivery_span_continues_the_endpoints_trace(redis_server: RedisServer, tmp_path) -> None:
    redis_server.ensure_running()
    env = {
        **os.environ,
        "CARECYCLE_WEBHOOK_SECRET": SECRET,
        "REDIS_URL": redis_server.url,
        "EVENTS_LOG": str(tmp_path / "events.jsonl"),
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLES / "celery_queue"), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False, env=env
    )
    assert completed.returncode == 0, completed.stderr
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    assert seen["outcome"] == "processed"
    assert seen["carrier"] == ["traceparent"]
    spans = {span["name"]: span for span in seen["spans"]}
    endpoint, delivery = spans["POST /webhooks"], spans["process customer.updated"]
    assert delivery["trace_id"] == endpoint["trace_id"]
    assert delivery["parent"] == endpoint["span_id"]
    assert spans["customer_updated"]["parent"] == delivery["span_id"]
    task, instrumented = spans["run process_delivery"], spans["process customer.created"]
    assert instrumented["parent"] == task["span_id"]
