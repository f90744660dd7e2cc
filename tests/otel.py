"""The SDK's in-memory exporter and reader, as the `telemetry` fixture, for the telemetry tests.

The spans and metrics go to providers of the fixture's own (set on `_otel` for each test):
the process's global providers are left alone, so no other test exports anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from carecycle_webhooks import _otel

if TYPE_CHECKING:
    from collections.abc import Iterator


class Telemetry:
    """What the SDK exported: finished spans and metric points."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self._points: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
        self._units: dict[str, str] = {}

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        found = [span for span in self.spans() if span.name == name]
        assert len(found) == 1, [span.name for span in self.spans()]
        return found[0]

    def _collect(self) -> None:
        # Every collection, kept: an SDK before 1.2x exports a cumulative point again only
        # when it changed since the last collection, so each point is kept as last seen.
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    self._units[metric.name] = metric.unit or ""
                    for point in metric.data.data_points:
                        key = (metric.name, tuple(sorted(dict(point.attributes or {}).items())))
                        self._points[key] = point

    def points(self, metric_name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, point) of every data point of ``metric_name``."""
        self._collect()
        return [
            (dict(attributes), point)
            for (name, attributes), point in self._points.items()
            if name == metric_name
        ]

    def metric_units(self) -> dict[str, str]:
        self._collect()
        return dict(self._units)


@pytest.fixture(name="telemetry")
def telemetry_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    """What the deliveries of one test exported; import it into a test module or a conftest."""
    seen = Telemetry()
    monkeypatch.setattr(_otel, "_tracer", seen.tracer_provider.get_tracer(_otel.NAME))
    monkeypatch.setattr(_otel, "_instruments", _otel.Instruments(seen.meter_provider.get_meter(_otel.NAME)))
    yield seen
    seen.tracer_provider.shutdown()
    seen.meter_provider.shutdown()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})
