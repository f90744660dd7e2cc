"""OpenTelemetry for a webhook receiver: traces and metrics printed to the console.

Call `configure_opentelemetry` once, at start-up, before the first delivery. Swap the
console exporters for OTLP ones (``opentelemetry-exporter-otlp``) to send the same spans
and metrics to your collector. carecycle-webhooks needs only ``opentelemetry-api`` (the
extra ``otel``); the SDK used here is the application's choice.
"""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter


def configure_opentelemetry(service_name: str) -> None:
    """Set the global tracer and meter providers, exporting to the console."""
    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    # Metrics are exported every minute, and once more when the process exits.
    reader = PeriodicExportingMetricReader(
        ConsoleMetricExporter(), export_interval_millis=60_000
    )
    metrics.set_meter_provider(
        MeterProvider(resource=resource, metric_readers=[reader])
    )
