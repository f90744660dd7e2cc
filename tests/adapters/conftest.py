"""The adapters' tests: the `telemetry` fixture, for the contracts' telemetry tests."""

from tests.otel import telemetry_fixture

__all__ = ["telemetry_fixture"]  # a fixture: pytest registers it by its import here
