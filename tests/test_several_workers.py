"""The in-memory store logs a warning where it is built inside a server with several workers."""

from __future__ import annotations

import logging
import types

import pytest

from carecycle_webhooks import InMemoryIdempotencyStore

WARNING = "InMemoryIdempotencyStore in a process that serves with several workers"


def built_by(module: str, **settings: object) -> None:
    """Builds a store inside a method of an object of ``module`` (a server's, loading the app)."""

    def load(self: object) -> None:
        InMemoryIdempotencyStore()

    server_class = type("Server", (), {"__module__": module, "load": load, **settings})
    server_class().load()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("module", "settings", "said"),
    [
        ("gunicorn.arbiter", {"cfg": types.SimpleNamespace(workers=4)}, "gunicorn with 4 workers"),
        ("uvicorn.server", {"config": types.SimpleNamespace(workers=2)}, "uvicorn with 2 workers"),
        ("uvicorn.config", {"workers": 3}, "uvicorn with 3 workers"),
    ],
)
def test_several_workers_of_a_server_on_the_stack(
    module: str, settings: dict[str, object], said: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="carecycle_webhooks"):
        built_by(module, **settings)
    assert WARNING in caplog.text
    assert said in caplog.text
    assert "SQLiteIdempotencyStore" in caplog.text
    assert "RedisIdempotencyStore" in caplog.text


@pytest.mark.parametrize(
    ("module", "settings"),
    [
        ("gunicorn.arbiter", {"cfg": types.SimpleNamespace(workers=1)}),  # one worker: right
        ("myapp.server", {"cfg": types.SimpleNamespace(workers=4)}),  # not a server we know
        ("gunicorn.arbiter", {"cfg": types.SimpleNamespace(workers="4")}),
    ],
)
def test_no_warning_otherwise(
    module: str,
    settings: dict[str, object],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    with caplog.at_level(logging.WARNING, logger="carecycle_webhooks"):
        built_by(module, **settings)
        InMemoryIdempotencyStore()
    assert WARNING not in caplog.text


@pytest.mark.parametrize(("value", "warns"), [("4", True), ("1", False), ("", False), ("many", False)])
def test_web_concurrency(
    value: str, warns: bool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", value)
    with caplog.at_level(logging.WARNING, logger="carecycle_webhooks"):
        InMemoryIdempotencyStore()
    assert (WARNING in caplog.text) is warns
    if warns:
        assert f"WEB_CONCURRENCY={value}" in caplog.text
