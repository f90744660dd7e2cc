"""Per-delivery cost of the OpenTelemetry instrumentation, in process.

Run: ``.venv/bin/python benchmarks/bench_otel.py [--rounds 30] [--round-ms 20]``

One ``Dispatcher.handle`` of the signed ``customer.created`` fixture, no store, one
handler that does nothing: the whole per-delivery path (verify, parse, flow, answer),
timed three ways in interleaved rounds (the order rotates every round) with the garbage
collector off; the median per-call time of each is compared:

- ``without``: as when ``opentelemetry`` is not installed (one check of a module global);
- ``api``: ``opentelemetry-api`` without an SDK (no providers set): a non-recording span
  and no-op instruments;
- ``sdk``: the SDK's tracer and meter providers, spans exported to an in-memory exporter
  (cleared every round) by a ``SimpleSpanProcessor``, metrics to an in-memory reader.

Target: ``api`` / ``without`` <= 1.05 (within the noise of a delivery); ``sdk`` is
reported only. Run it against an older tree (``PYTHONPATH=<old>/src``) that has no
telemetry to see the ``without`` row alone. Prints the verdicts; always exits 0.
"""
# ruff: noqa: SLF001 - switches the private telemetry modules between the modes

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from typing import TYPE_CHECKING

import _payloads as p

import carecycle_webhooks
from carecycle_webhooks import Dispatcher

if TYPE_CHECKING:
    from collections.abc import Callable

TARGET_API = 1.05


def _modes() -> dict[str, Callable[[], None]]:
    """How to switch to each mode; only ``without`` in a tree that has no telemetry."""
    try:
        from carecycle_webhooks import _otel, _telemetry
    except ImportError:
        return {"without": lambda: None}
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    api = (None, None)  # no provider set: the API's defaults
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    sdk = (tracer_provider.get_tracer(_otel.NAME), _otel.Instruments(meter_provider.get_meter(_otel.NAME)))

    def without() -> None:
        _telemetry._loaded, _telemetry._begin = True, None

    def use(tracer_and_instruments: tuple[object, object]) -> Callable[[], None]:
        def switch() -> None:
            _telemetry._loaded, _telemetry._begin = True, _otel.begin
            _otel._tracer, _otel._instruments = tracer_and_instruments  # type: ignore[assignment]
            exporter.clear()

        return switch

    return {"without": without, "api": use(api), "sdk": use(sdk)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--round-ms", type=float, default=20.0)
    args = parser.parse_args()

    body = p.fixture_text("customer.created").encode()
    headers = p.sign(body)
    webhooks = Dispatcher(p.SECRET)
    webhooks.on("customer.created")(lambda _: None)
    modes = _modes()
    for switch in modes.values():  # warm up, and check that each mode answers 200
        switch()
        assert webhooks.handle(body, headers).status_code == 200

    # Calls per round, from a short calibration of the plain path.
    modes["without"]()
    started = time.perf_counter()
    calls = 0
    while time.perf_counter() - started < 0.05:
        webhooks.handle(body, headers)
        calls += 1
    per_round = max(10, int(calls * args.round_ms / 50))

    samples: dict[str, list[float]] = {name: [] for name in modes}
    names = list(modes)
    gc.disable()
    try:
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                modes[name]()
                started = time.perf_counter()
                for _ in range(per_round):
                    webhooks.handle(body, headers)
                samples[name].append((time.perf_counter() - started) / per_round)
    finally:
        gc.enable()

    print(f"carecycle_webhooks from {carecycle_webhooks.__file__}; Python {sys.version.split()[0]}")
    print(f"{args.rounds} rounds of {per_round} handle() calls each; median per call:")
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["without"]
    for name, median in medians.items():
        print(f"  {name:8} {median * 1e6:8.2f} us   {median / base:5.3f} x without")
    if "api" in medians:
        ratio = medians["api"] / base
        verdict = "met" if ratio <= TARGET_API else "NOT met"
        print(f"api / without = {ratio:.3f} (target <= {TARGET_API}): {verdict}")
        print(f"sdk / without = {medians['sdk'] / base:.3f} (reported, no target)")


if __name__ == "__main__":
    main()
