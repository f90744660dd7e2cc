"""``carecycle-webhooks send`` to a receiver of many tenants, and the new outcomes' hints.

The receiver is the WSGI adapter under wsgiref's server on a free loopback port: a
dispatcher with a secret resolver (the tenant is the URL's last segment), out-of-order
and test-customer skipping on.
"""

from __future__ import annotations

import datetime
import io
import threading
import wsgiref.simple_server
from typing import TYPE_CHECKING, Any

import pytest

from carecycle_webhooks import Dispatcher, Event, InMemoryIdempotencyStore
from carecycle_webhooks._cli import _http, main
from carecycle_webhooks._cli._answer import print_answer
from carecycle_webhooks.wsgi import webhook_app
from tests.conftest import OTHER_SECRET, SECRET

if TYPE_CHECKING:
    from collections.abc import Iterator

SECRETS = {"acme": SECRET, "globex": OTHER_SECRET}


class _Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def _resolve(tenant: str) -> str | None:
    if tenant == "broken":
        raise RuntimeError("the tenants' table is locked")
    return SECRETS.get(tenant)


def _nothing(event: Event) -> None:
    """A handler that does nothing: the deliveries' outcomes are under test."""


@pytest.fixture
def base_url() -> Iterator[str]:
    dispatcher = Dispatcher(
        _resolve,
        idempotency_store=InMemoryIdempotencyStore(),
        skip_out_of_order=True,
        skip_test_customers=True,
    )
    dispatcher.catch_all(_nothing)
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, webhook_app(dispatcher), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/webhooks"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def send(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["send", *argv])
    return code, capsys.readouterr().out


def test_send_to_a_tenant_s_url_with_its_secret(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = send(capsys, "customer.created", "--url", f"{base_url}/globex", "--secret", OTHER_SECRET)
    assert (code, '{"status": "processed"}' in out) == (0, True)
    assert "hint:" not in out
    code, out = send(capsys, "customer.created", "--url", f"{base_url}/globex", "--secret", SECRET)
    assert code == 1
    assert "hint: a carecycle-webhooks receiver answers 400" in out
    assert "the secret of the tenant in --url" in out


def test_send_to_an_unknown_tenant(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = send(capsys, "customer.created", "--url", f"{base_url}/initech", "--secret", SECRET)
    assert code == 1
    assert "HTTP 404" in out
    assert "hint: the receiver's secret resolver knows no tenant 'initech' (the last segment of --url)" in out
    assert "nothing is routed" not in out


def test_send_when_the_resolver_fails(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = send(capsys, "customer.created", "--url", f"{base_url}/broken", "--secret", SECRET)
    assert code == 1
    assert "HTTP 503" in out
    assert "hint: the receiver's secret resolver raised, or gave no valid secret" in out
    assert "idempotency store" not in out
    assert "locked" not in out


def test_send_a_stale_update(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    url, now = f"{base_url}/acme", datetime.datetime.now(tz=datetime.timezone.utc)
    newer, older = (now.isoformat(), (now - datetime.timedelta(hours=1)).isoformat())
    code, out = send(
        capsys, "customer.updated", "--url", url, "--secret", SECRET, "--set", f'updatedAt="{newer}"'
    )
    assert (code, '{"status": "processed"}' in out) == (0, True)
    code, out = send(
        capsys, "customer.updated", "--url", url, "--secret", SECRET, "--set", f'updatedAt="{older}"'
    )
    assert code == 0
    assert '{"status": "stale"}' in out
    assert "hint: acknowledged, no handler ran: the receiver (skip_out_of_order) processed a newer" in out


def test_send_a_test_customer(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("--url", f"{base_url}/acme", "--secret", SECRET, "--set", "testCustomer=true")
    code, out = send(capsys, "customer.created", *argv)
    assert code == 0
    assert '{"status": "test_customer"}' in out
    assert "hint: acknowledged, no handler ran: the receiver (skip_test_customers) skips test" in out


@pytest.mark.parametrize(
    ("status", "body", "shown"),
    [
        (200, b'{"status": "processed"}', None),
        (200, b'{"status": "duplicate"}', None),
        (200, b'{"status": "stale"}', "hint: acknowledged, no handler ran: the receiver (skip_out_of_order)"),
        (200, b'{"status": "test_customer"}', "(skip_test_customers) skips test customers"),
        (404, b'{"error": "unknown_tenant"}', "knows no tenant 'acme' (the last segment of --url)"),
        (503, b'{"error": "secret_resolver_failed"}', "hint: the receiver's secret resolver raised"),
        (503, b'{"error": "busy", "detail": "..."}', "hint: the receiver is reading too many request bodies"),
        (503, b'{"error": "idempotency_store_unavailable"}', "hint: the receiver's idempotency store is"),
    ],
)
def test_a_hint_for_each_outcome(status: int, body: bytes, shown: str | None) -> None:
    out = io.StringIO()
    headers = {"content-type": "application/json"}
    answer = _http.Answer(status=status, reason="", headers=headers, body=body, seconds=0.01)
    print_answer(answer, "http://example.com/webhooks/acme/", out)
    if shown is None:
        assert "hint:" not in out.getvalue()
    else:
        assert shown in out.getvalue()
        assert out.getvalue().count("hint:") == 1
