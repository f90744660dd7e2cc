"""The Django receiver of the guide's settings (tests/e2e/django_settings_app.py) under real servers.

uvicorn serves Django's ASGI application with the async view, gunicorn its WSGI application
with the sync view. Each: a delivery is processed, its copy is a duplicate, a failing
handler is 500; the handlers' own log lines and the library's appear in the server's log
through Django's ``LOGGING``, and the failing handler's message does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET, fixture_bytes, load_fixture
from tests.e2e.servers import server, signed_request

pytest.importorskip("django")

E2E = Path(__file__).resolve().parent


@pytest.mark.parametrize(
    ("kind", "app", "asynchronous", "thread"),
    [
        ("uvicorn", "django_settings_app:asgi_application", "1", "MainThread"),  # on the event loop
        ("gunicorn", "django_settings_app:application", "0", "MainThread"),  # gunicorn's sync worker
    ],
)
def test_the_guides_settings_under_a_real_server(
    tmp_path: Path, kind: str, app: str, asynchronous: str, thread: str
) -> None:
    env = {"CARECYCLE_WEBHOOK_SECRET": SECRET, "WEBHOOKS_ASYNC": asynchronous}
    customer = load_fixture("customer.created")
    with server(kind, app, tmp=tmp_path, env=env, app_dir=E2E) as running:
        url = f"{running.url}/webhooks/"
        request = signed_request(json.dumps(customer).encode(), SECRET, f"msg_dj_settings_{kind}")
        first = httpx.post(url, timeout=10, **request)
        assert (first.status_code, first.json()) == (200, {"status": "processed"})
        again = httpx.post(url, timeout=10, **request)
        assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
        failing = signed_request(fixture_bytes("call.completed"), SECRET, f"msg_dj_settings_fail_{kind}")
        assert httpx.post(url, timeout=10, **failing).status_code == 500
        assert httpx.get(url, timeout=10).status_code == 405
    log = running.log.read_text(errors="replace")
    assert f"INFO myproject.webhooks [{thread}] customer {customer['id']} created" in log, log
    assert f"INFO carecycle_webhooks [{thread}] webhook msg_dj_settings_{kind} already processed" in log, log
    assert f"ERROR carecycle_webhooks [{thread}] handler " in log, log
    assert "3128471928" not in log, log  # the failing handler's message: the call's phone number
