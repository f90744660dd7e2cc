"""The carecycle-webhooks command: send against a real local receiver, verify, schema, demo."""

from __future__ import annotations

import datetime
import http.server
import importlib
import io
import json
import logging
import os
import re
import runpy
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from carecycle_webhooks import (
    CallCompletedEvent,
    CustomerCreatedEvent,
    Dispatcher,
    EventType,
    LineType,
    UnknownEvent,
    current_delivery,
)
from carecycle_webhooks._cli import _http, main
from carecycle_webhooks._cli import verify as verify_command
from carecycle_webhooks._cli._common import CATALOG, SECRET_ENV
from carecycle_webhooks.testing import make_event, sign
from tests.conftest import OTHER_SECRET, SECRET, fixture_bytes

if TYPE_CHECKING:
    from collections.abc import Iterator

EXECUTABLE = Path(sys.executable).parent / "carecycle-webhooks"
# Values of the catalog's examples that are PHI: no command may print them.
PHI_VALUES = ("Marcus", "Delacroix", "1EG4TE5MK73", "marcus.delacroix", "+13128471928", "4427 Westbrook")


# --------------------------------------------------------------------------- a real receiver


def _answer_special_path(handler: http.server.BaseHTTPRequestHandler) -> bool:
    """Answer the receiver's test paths that are not the webhook route; whether it did."""
    if handler.path == "/big":
        handler.send_response(500)
        handler.send_header("content-type", "text/plain; charset=utf-8")
        handler.end_headers()
        handler.wfile.write("é".encode() * 3000)
        return True
    if handler.path == "/get-only":  # as Flask answers a route registered without POST
        page = b"<!doctype html>\n<html lang=en>\n<title>405 Method Not Allowed</title>\n"
        handler.send_response(405)
        handler.send_header("allow", "GET, HEAD, OPTIONS")
        handler.send_header("content-type", "text/html; charset=utf-8")
        handler.send_header("content-length", str(len(page)))
        handler.end_headers()
        handler.wfile.write(page)
        return True
    if handler.path == "/drip":  # a byte now and then: each read is quick, the whole never ends
        handler.send_response(200)
        handler.send_header("content-length", "100000")
        handler.end_headers()
        for _ in range(40):  # bounded: the client gives up well before
            try:
                handler.wfile.write(b"x")
                handler.wfile.flush()
            except OSError:
                return True
            time.sleep(0.05)
        return True
    if handler.path == "/ansi":  # a hostile receiver writing to the operator's terminal
        page = b'{"error": "\x1b]0;pwned\x07\x1b[2J"}\r\nsecond line\rover'
        handler.send_response(500, "Oops \x1b[31mred")
        handler.send_header("content-type", "application/json")
        handler.send_header("location", "/x\x1b[1m")
        handler.send_header("content-length", str(len(page)))
        handler.end_headers()
        handler.wfile.write(page)
        return True
    if handler.path == "/bad-status":  # not HTTP: http.client quotes the line in its error
        handler.wfile.write(b"\x1b]0;pwned\x07\x1b[2J HTTP/1.1 200 OK\r\n\r\n")
        handler.close_connection = True
        return True
    if handler.path == "/hang-up":
        handler.close_connection = True
        return True
    if handler.path == "/moved":
        handler.send_response(308)
        handler.send_header("location", "https://example.com/webhooks")
        handler.send_header("content-length", "0")
        handler.end_headers()
        return True
    return False


class Receiver:
    """A Dispatcher behind http.server on a free loopback port, recording what arrives."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        dispatcher = Dispatcher(SECRET)

        @dispatcher.catch_all
        def record(event: Any) -> None:
            self.events.append(event)
            self.webhook_ids.append(current_delivery().webhook_id)

        self.webhook_ids: list[str] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.bodies.append(body)
                receiver.headers.append({name.lower(): value for name, value in self.headers.items()})
                if _answer_special_path(self):
                    return
                response = dispatcher.handle(body, self.headers)
                self.send_response(response.status_code)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhooks"
        # shutdown() waits for the server's next poll: at 0.05 s, that was most of each test.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.005})

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def send(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str, str]:
    return run(capsys, "send", *argv[:1], "--url", url, "--secret", SECRET, *argv[1:])


# --------------------------------------------------------------------------- the command


def test_catalog_and_defaults_are_the_library_s() -> None:
    from carecycle_webhooks._verify import DEFAULT_TOLERANCE

    assert tuple(member.value for member in EventType) == CATALOG
    assert DEFAULT_TOLERANCE.total_seconds() == verify_command.DEFAULT_TOLERANCE


@pytest.mark.parametrize("command", [[], ["send"], ["verify"], ["schema"], ["demo"], ["secret"]])
def test_help_of_every_command_has_examples(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    assert "examples:" in out or "example:" in out
    assert "carecycle-webhooks" in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)
    assert code == 2
    assert "COMMAND" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"carecycle-webhooks {version('carecycle-webhooks')}"


def test_help_loads_neither_pydantic_nor_svix() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from carecycle_webhooks._cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for command in ([], ['send'], ['verify'], ['schema'], ['demo'], ['secret']):\n"
        "        main([*command, '--help'])\n"
        "print(sorted({'pydantic', 'svix', 'standardwebhooks'} & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_secret_prints_a_new_secret_the_library_accepts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(capsys, "secret")
    assert (code, err) == (0, "")
    secret = out.removesuffix("\n")
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{32}", secret), secret
    code, again, _ = run(capsys, "secret")
    assert again != out
    code, line, _ = run(capsys, "secret", "--env")
    assert code == 0
    name, _, value = line.strip().partition("=")
    assert name == SECRET_ENV
    monkeypatch.setenv(name, value)
    signed = sign(fixture_bytes("customer.created"), secret=value)
    assert Dispatcher().handle(signed.body, signed.headers).status_code == 200


def test_python_dash_m_runs_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # pytest's assertion rewriting claims the package (it ships a pytest plugin), and its
    # import hook cannot give runpy the module's code: take it out for this test.
    finders = [finder for finder in sys.meta_path if type(finder).__name__ != "AssertionRewritingHook"]
    monkeypatch.setattr(sys, "meta_path", finders)
    monkeypatch.setattr(sys, "argv", ["carecycle_webhooks", "schema", "call.completed"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("carecycle_webhooks", run_name="__main__", alter_sys=True)
    assert stop.value.code == 0
    assert json.loads(capsys.readouterr().out)["title"] == "careCycle call.completed event"
    importlib.import_module("carecycle_webhooks.__main__")  # imported, not run: it does nothing
    assert capsys.readouterr().out == ""


def test_installed_executable_help_and_demo() -> None:
    assert EXECUTABLE.exists(), "run: .venv/bin/pip install --no-deps -e ."
    result = subprocess.run([EXECUTABLE, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert "send" in result.stdout
    assert "verify" in result.stdout
    result = subprocess.run([EXECUTABLE, "demo"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "HTTP 200 OK" in result.stdout
    assert "400 Bad Request" in result.stdout
    assert not any(value in result.stdout + result.stderr for value in PHI_VALUES)


# --------------------------------------------------------------------------- send


def test_send_applies_snake_wire_and_nested_overrides(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = send(
        capsys,
        receiver.url,
        "customer.created",
        "--set",
        "first_name=Ana",
        "--set",
        "doNotCall=true",
        "--set",
        "assignedUser.npn=123",
        "--set",
        'assigned_user.licensed_states=["TX", "NM"]',
        "--set",
        "dependentCount=2",
        "--set",
        "middle_name=null",
        "--set",
        "status=42",
        "--set",
        "lineType=landline",
        "--set",
        'externalId="42"',
    )
    assert code == 0, err
    [event] = receiver.events
    assert isinstance(event, CustomerCreatedEvent)
    assert event.first_name == "Ana"
    assert event.do_not_call is True
    assert event.assigned_user is not None
    assert event.assigned_user.npn == "123"  # digits stay text in a text field
    assert event.assigned_user.licensed_states == ("TX", "NM")
    assert event.assigned_user.name == "Priya Raman"  # the rest of the example is kept
    assert event.dependent_count == 2
    assert event.middle_name is None
    assert event.status == "42"  # an unknown enum value is kept as its string
    assert event.line_type is LineType.LANDLINE
    assert event.external_id == "42"
    assert event.last_name == "Delacroix"
    assert "POST " + receiver.url in out
    assert "customer.created" in out
    assert f"webhook-id  {receiver.webhook_ids[0]}" in out
    assert f"{len(receiver.bodies[0])} bytes" in out
    assert "HTTP 200 OK" in out
    assert "content-type: application/json" in out
    assert '{"status": "processed"}' in out
    assert SECRET not in out + err
    assert not any(value in out + err for value in PHI_VALUES)
    assert receiver.headers[0]["svix-signature"].startswith("v1,")


def test_send_call_completed_with_nested_customer(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = send(
        capsys,
        receiver.url,
        "call.completed",
        "--set",
        "customer.first_name=Ana",
        "--set",
        "customer.dateOfBirth=1960-01-02",
        "--set",
        "customer.assignedUser.npn=77",
        "--set",
        "durationMs=0",
        "--set",
        "disposition=No Answer",
        "--webhook-id",
        "msg_cli_1",
        "--header-prefix",
        "webhook",
    )
    assert code == 0, err
    [event] = receiver.events
    assert isinstance(event, CallCompletedEvent)
    assert event.customer is not None
    assert event.customer.first_name == "Ana"
    assert event.customer.date_of_birth == datetime.date(1960, 1, 2)
    assert event.customer.assigned_user is not None
    assert event.customer.assigned_user.npn == "77"
    assert event.customer.last_name == "Delacroix"
    assert event.duration_ms == 0
    assert event.disposition == "No Answer"
    assert event.campaign is not None
    assert event.campaign.name == "MA Inbound Receptionist"
    assert receiver.webhook_ids == ["msg_cli_1"]
    assert receiver.headers[0]["webhook-id"] == "msg_cli_1"
    assert "svix-id" not in receiver.headers[0]
    assert "webhook-id  msg_cli_1" in out


def test_send_a_misspelt_event_type_sends_nothing_and_exits_2(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = send(capsys, receiver.url, "customer.create")
    assert code == 2
    assert out == ""
    assert "'customer.create' is not in the careCycle event catalog (did you mean customer.created" in err
    assert "add --allow-unknown-type" in err
    code, _, err = send(capsys, receiver.url, "Call.Completed", "--file", "/nonexistent.json")
    assert code == 2
    assert "(did you mean call.completed?)" in err
    assert receiver.bodies == []


def test_send_an_event_type_not_in_the_catalog_when_asked(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = send(
        capsys,
        receiver.url,
        "customer.deleted",
        "--allow-unknown-type",
        "--set",
        "reason=merged",
        "--set",
        "location.room=12",
        "--set",
        "location.floor=two",
    )
    assert code == 0, err
    assert "event type  customer.deleted (not in the catalog)" in out
    assert err == ""
    [event] = receiver.events
    assert isinstance(event, UnknownEvent)
    assert event.event_type == "customer.deleted"
    assert event.payload["reason"] == "merged"
    assert event.payload["location"] == {"room": 12, "floor": "two"}
    assert {"id", "createdAt"} <= set(event.payload)


def test_send_with_the_secret_from_the_environment(
    receiver: Receiver, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    code, _, _ = run(capsys, "send", "customer.updated", "--url", receiver.url)
    assert code == 0
    assert receiver.events[0].event_type == "customer.updated"


def test_send_a_file_byte_for_byte(
    receiver: Receiver, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    payload = tmp_path / "payload.json"
    payload.write_bytes(fixture_bytes("customer.created"))
    code, out, _ = send(capsys, receiver.url, "customer.created", "--file", str(payload))
    assert code == 0
    assert receiver.bodies == [fixture_bytes("customer.created")]
    assert f"{len(fixture_bytes('customer.created'))} bytes" in out


def test_send_a_file_with_overrides_uses_wire_names(
    receiver: Receiver, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    payload = tmp_path / "payload.json"
    payload.write_bytes(fixture_bytes("call.completed"))
    code, _, err = send(
        capsys,
        receiver.url,
        "call.completed",
        "--file",
        str(payload),
        "--set",
        "customer.do_not_sms=true",
        "--set",
        "duration_ms=5",
        "--set",
        "campaign.name=Renewals",
    )
    assert code == 0, err
    sent = json.loads(receiver.bodies[0])
    assert sent["customer"]["doNotSMS"] is True
    assert "do_not_sms" not in sent["customer"]
    assert sent["durationMs"] == 5
    assert "duration_ms" not in sent
    assert sent["campaign"]["name"] == "Renewals"
    [event] = receiver.events
    assert isinstance(event, CallCompletedEvent)
    assert event.customer is not None
    assert event.customer.do_not_sms is True


def test_send_a_file_without_event_type(
    receiver: Receiver, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    payload = tmp_path / "payload.json"
    data = json.loads(fixture_bytes("customer.updated"))
    del data["event_type"]
    payload.write_text(json.dumps(data))
    code, _, err = send(capsys, receiver.url, "customer.updated", "--file", str(payload))
    assert code == 0
    assert "has no event_type: sending it as customer.updated" in err
    assert receiver.events[0].event_type == "customer.updated"


def test_send_an_invalid_file_payload_warns_and_gets_422(
    receiver: Receiver, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    payload = tmp_path / "payload.json"
    data = json.loads(fixture_bytes("call.completed"))
    del data["id"]
    data["durationMs"] = "long"
    payload.write_text(json.dumps(data))
    code, out, err = send(capsys, receiver.url, "call.completed", "--file", str(payload))
    assert code == 1
    assert "the payload is not a valid call.completed event" in err
    assert "durationMs" in err
    # Python 3.13 renamed the phrase (Unprocessable Content); http.server sends its own.
    assert f"HTTP 422 {http.HTTPStatus.UNPROCESSABLE_ENTITY.phrase}" in out
    assert "hint: the receiver verified the signature but could not read the event" in out
    assert receiver.events == []


def test_send_with_the_wrong_secret_exits_1(receiver: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "send", "customer.created", "--url", receiver.url, "--secret", OTHER_SECRET)
    assert code == 1
    assert "HTTP 400 Bad Request" in out
    assert "no_matching_signature" in out
    assert "same secret" in out
    assert OTHER_SECRET not in out + err
    assert receiver.events == []


def test_send_shows_a_redirect_without_following_it(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    url = receiver.url.replace("/webhooks", "/moved")
    code, out, _ = send(capsys, url, "customer.created")
    assert code == 1
    assert "HTTP 308" in out
    assert "location: https://example.com/webhooks" in out
    assert "hint: the receiver redirected to https://example.com/webhooks; webhook senders" in out
    assert len(receiver.bodies) == 1


def test_send_to_a_route_without_post(receiver: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = send(capsys, receiver.url.replace("/webhooks", "/get-only"), "customer.created")
    assert code == 1
    assert "allow: GET, HEAD, OPTIONS" in out
    assert '(an HTML page of 69 bytes, titled "405 Method Not Allowed"; not shown)' in out
    assert "hint: the route at /get-only does not accept POST (it allows GET, HEAD, OPTIONS)" in out
    assert "<title>" not in out


@pytest.mark.parametrize(
    ("status", "headers", "body", "shown"),
    [
        (301, {"location": "https://example.com/webhooks"}, b"", "the receiver redirected to HTTPS; "),
        (308, {"location": "/webhooks/"}, b"", "/webhooks/: Werkzeug's strict slashes (Flask)"),
        (307, {"location": "/webhooks/"}, b"", "/webhooks/: Starlette's redirect_slashes (FastAPI)"),
        (
            302,
            {"location": "/login?next=/webhooks"},
            b"",
            "redirected to http://example.com/login?next=/webhooks;",
        ),
        (303, {}, b"", "webhook senders do not follow redirects (Svix counts anything but 2xx"),
        (
            503,
            {"content-type": "text/html"},
            b"<html><title>502 &amp; 503</title>" + b" " * 65536,
            (
                '(an HTML page of more than 65536 bytes, titled "502 & 503"; not shown)\n'
                "hint: this 503 is an HTML page, not the JSON answer of a carecycle-webhooks view"
            ),
        ),
        (
            503,
            {"content-type": "application/json"},
            b'{"error": "idempotency_store_unavailable"}',
            "hint: the receiver's idempotency store is unreachable",
        ),
        (413, {}, b"", "hint: the body is larger than the receiver accepts"),
        (
            500,
            {},
            b"\n<!DOCTYPE html><title>" + b"x" * 200 + b"</title>",
            f'(an HTML page of 231 bytes, titled "{"x" * 117}..."; not shown)',
        ),
        (
            404,
            {},
            b"",
            'hint: nothing is routed at /webhooks; if the route ends in a slash (Django: path("webhooks/"',
        ),
    ],
)
def test_hints_for_answers(status: int, headers: dict[str, str], body: bytes, shown: str) -> None:
    from carecycle_webhooks._cli._answer import print_answer

    out = io.StringIO()
    answer = _http.Answer(status=status, reason="", headers=headers, body=body[:65536], seconds=0.01)
    print_answer(answer, "http://example.com/webhooks", out)
    assert shown in out.getvalue()
    assert "handler raised" not in out.getvalue()


def test_send_shows_the_start_of_a_long_answer(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = send(capsys, receiver.url.replace("/webhooks", "/big"), "call.completed")
    assert code == 1
    assert "HTTP 500 Internal Server Error" in out
    assert "content-type: text/plain; charset=utf-8" in out
    assert "é" * 2000 in out
    assert "é" * 2001 not in out
    assert "... (2000 more bytes)" in out
    assert "hint: this 500 is a body, not the JSON answer of a carecycle-webhooks view" in out
    assert "handler raised" not in out


@pytest.fixture(scope="module", params=["production", "debug"])
def django_receiver(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """The base URL of a Django project whose webhook route ends in a slash, and its DEBUG mode."""
    environment = {**os.environ, SECRET_ENV: SECRET}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.django_receiver", request.param],
        cwd=Path(__file__).parent.parent,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = threading.Event()
        port: list[str] = []
        stdout = process.stdout
        reader = threading.Thread(target=lambda: (port.append(stdout.readline()), ready.set()), daemon=True)
        reader.start()
        assert ready.wait(timeout=60), "the Django receiver did not start"
        assert port[0].strip().isdigit(), port
        yield f"http://127.0.0.1:{port[0].strip()}", str(request.param)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_send_without_django_s_trailing_slash_says_so(
    django_receiver: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    base, mode = django_receiver
    code, out, _ = send(capsys, f"{base}/webhooks", "customer.updated")
    assert code == 1
    if mode == "production":  # APPEND_SLASH answers 301
        assert "HTTP 301" in out
        assert "location: /webhooks/" in out
        assert (
            "hint: the receiver redirected to /webhooks/: Django's APPEND_SLASH; webhook senders "
            f"do not follow redirects, so send to {base}/webhooks/" in out
        )
    else:  # with DEBUG on, Django raises instead: a 500 page
        assert "HTTP 500" in out
        summary = r'\(an HTML page of (more than )?\d+ bytes, titled "RuntimeError at /webhooks"; not shown\)'
        assert re.search(summary, out), out
        assert "hint: Django's APPEND_SLASH: the URL has no trailing slash" in out
        assert f"send to {base}/webhooks/" in out
    assert "handler raised" not in out
    assert "<html" not in out.lower()
    code, out, _ = send(capsys, f"{base}/webhooks/", "customer.updated")
    assert code == 0
    assert '{"status": "ignored"}' in out


def test_send_to_a_django_path_that_is_not_routed(
    django_receiver: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    base, _ = django_receiver
    code, out, _ = send(capsys, f"{base}/hooks/", "customer.updated")
    assert code == 1
    assert "HTTP 404" in out
    assert re.search(r"\(an HTML page of \d+ bytes(, titled \"[^\"]+\")?; not shown\)", out)
    assert "hint: nothing is routed at /hooks/: check --url" in out
    assert "<html" not in out.lower()


def test_send_says_a_handler_raised_only_when_the_view_says_so(
    django_receiver: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    base, _ = django_receiver
    code, out, _ = send(capsys, f"{base}/webhooks/", "customer.created")
    assert code == 1
    assert "HTTP 500" in out
    assert '{"error": "handler_failed"}' in out
    assert "hint: a handler raised: look at the receiver's log" in out


def test_send_to_a_server_that_hangs_up_exits_3(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    url = receiver.url.replace("/webhooks", "/hang-up")
    code, _, err = send(capsys, url, "customer.created")
    assert code == 3
    assert f"could not reach {url}: the server closed the connection without answering" in err


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ssl.SSLError(1, "CERTIFICATE_VERIFY_FAILED"), "TLS failed"),
        (ConnectionResetError(104, "Connection reset by peer"), "the connection was reset"),
        (OSError(101, "Network is unreachable"), "network is unreachable"),
        (OSError("odd"), "odd"),
        (ValueError(), "ValueError"),
    ],
)
def test_reasons_a_url_is_unreachable(error: BaseException, reason: str) -> None:
    assert _http._unreachable_reason(error, 1.0).startswith(reason)


def test_interrupted(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("carecycle_webhooks.schema.json_schema", interrupted)
    code, _, err = run(capsys, "schema")
    assert code == 130
    assert "carecycle-webhooks schema: interrupted" in err


def test_send_to_a_closed_port_exits_3(capsys: pytest.CaptureFixture[str], closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/webhooks"
    code, _, err = send(capsys, url, "customer.created")
    assert code == 3
    assert f"could not reach {url}: connection refused" in err


def test_send_to_a_server_that_never_answers_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepted by the kernel, never answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/webhooks"
        code, _, err = send(capsys, url, "customer.created", "--timeout", "0.2")
    assert code == 3
    assert f"could not reach {url}: no answer within 0.2 s" in err


def test_send_to_an_unknown_host_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = send(capsys, "http://carecycle-webhooks-test.invalid/webhooks", "customer.created")
    assert code == 3
    assert "could not reach http://carecycle-webhooks-test.invalid/webhooks" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "firstName"], "--set expects FIELD=VALUE, got 'firstName'"),
        (["--set", "=Ana"], "--set expects FIELD=VALUE"),
        (["--set", "customer..x=1"], "empty field name"),
        (["--set", "frist_name=Ana"], "has no field 'frist_name' (did you mean first_name (firstName)"),
        (["--set", "FIRSTNAME=Ana"], "did you mean first_name (firstName)?"),
        (["--set", "assignedUser.npm=1"], "assignedUser has no field 'npm' (did you mean npn?)"),
        (["--set", "favouriteColour=red"], "put them in a --file payload"),
        (["--set", "firstName.x=1"], "--set firstName.x: firstName is not an object"),
        (["--set", "event_type=call.completed"], "the event type is the EVENT_TYPE argument"),
        (["--set", "durationMs=abc"], "has no field 'durationMs'"),
        (["--set", "dependentCount=many"], "--set dependentCount: Input should be a valid integer"),
        (["--set", "dateOfBirth=yesterday", "--set", "veteran=maybe"], "--set dateOfBirth: Input should be"),
        (["--set", "assignedUser.id=nope"], "--set assignedUser.id: Input should be a valid UUID"),
        (["--webhook-id", "msg 1"], "--webhook-id must not contain spaces"),
        (["--webhook-id", "msg_\u00e9"], "--webhook-id must be 1 to 256 printable ASCII characters"),
        (["--timeout", "0"], "expected a positive number of seconds"),
        (["--timeout", "soon"], "expected a number of seconds"),
        (["--header-prefix", "x"], "invalid choice"),
    ],
)
def test_send_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], closed_port: int, argv: list[str], message: str
) -> None:
    code, out, err = send(capsys, f"http://127.0.0.1:{closed_port}/webhooks", "customer.created", *argv)
    assert code == 2
    assert message in err
    assert out == ""
    assert SECRET not in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "ftp://example.com/x"], "--url must be an http:// or https:// URL"),
        (["--url", "http://127.0.0.1:99999/x"], "is not a valid URL"),
        (
            ["--url", "http://x", "--secret", "whsec_not*base64"],
            "the secret: the webhook secret is not valid",
        ),
        (
            ["--url", "http://x", "--secret", SECRET, "--secret", "whsec_"],
            "secret #2: the webhook secret is empty",
        ),
        (["--url", "http://x", "--secret", "  "], "the webhook secret is empty"),
        (["--url", "http://x", "--secret", SECRET, "--file", "/nonexistent/p.json"], "cannot read --file"),
        ([], "the following arguments are required: --url"),
    ],
)
def test_send_argument_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, "send", "customer.created", *argv)
    assert code == 2
    assert message in err


def test_send_without_any_secret(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    code, _, err = run(capsys, "send", "customer.created", "--url", "http://127.0.0.1:9/")
    assert code == 2
    assert f"--secret whsec_... (or set ${SECRET_ENV})" in err


def test_send_with_an_invalid_secret_in_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, f"{SECRET} whsec_%%%%")
    code, _, err = run(capsys, "send", "customer.created", "--url", "http://127.0.0.1:9/")
    assert code == 2
    assert f"secret #2 of 2 in {SECRET_ENV}: the webhook secret is not valid" in err
    assert SECRET not in err


def test_send_rejects_an_empty_event_type(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "send", " ", "--url", "http://127.0.0.1:9/", "--secret", SECRET)
    assert code == 2
    assert "EVENT_TYPE must be a name" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not valid JSON: Expecting property name enclosed in double quotes at line 1"),
        (b"[1, 2]", "must hold a JSON object (one event), not list"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
        (
            b'{"event_type": "call.completed"}',
            "holds a 'call.completed' event, but EVENT_TYPE is 'customer.created'",
        ),
    ],
)
def test_send_bad_files_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, message: str
) -> None:
    payload = tmp_path / "payload.json"
    payload.write_bytes(content)
    code, _, err = send(capsys, "http://127.0.0.1:9/", "customer.created", "--file", str(payload))
    assert code == 2
    assert message in err


# --------------------------------------------------------------------------- verify

SIGNED_AT = 1_781_723_243


def delivery(
    body: bytes | None = None, *, secret: str = SECRET, prefix: str = "svix"
) -> tuple[bytes, dict[str, str]]:
    signed = sign(
        fixture_bytes("customer.created") if body is None else body,
        secret=secret,
        webhook_id="msg_verify_1",
        timestamp=SIGNED_AT,
        header_prefix="svix" if prefix == "svix" else "webhook",
    )
    headers = {name: value for name, value in signed.headers.items() if name != "content-type"}
    return signed.body, headers


def verify(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    body: bytes,
    headers: dict[str, str],
    *argv: str,
    secrets: tuple[str, ...] = (SECRET,),
) -> tuple[int, str, str]:
    body_file = tmp_path / "body.json"
    body_file.write_bytes(body)
    headers_file = tmp_path / "headers.json"
    headers_file.write_text(json.dumps(headers))
    options = [item for secret in secrets for item in ("--secret", secret)]
    code, out, err = run(
        capsys,
        "verify",
        *options,
        "--body-file",
        str(body_file),
        "--headers-file",
        str(headers_file),
        *(argv or ("--now", str(SIGNED_AT + 4))),
    )
    assert not any(secret in out + err for secret in secrets)
    return code, out, err


def test_verify_valid_says_which_secret_matched(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery()
    code, out, _ = verify(capsys, tmp_path, body, headers, secrets=(OTHER_SECRET, SECRET))
    assert code == 0
    assert "valid: signed with secret #2 (of 2)" in out
    assert "svix-id     msg_verify_1" in out  # the header's name as sent
    assert f"timestamp   {SIGNED_AT} (2026-06-17 19:07:23 UTC, 4 s before now; tolerance 300 s)" in out
    assert "event       customer.created (CustomerCreatedEvent)" in out
    assert not any(value in out for value in PHI_VALUES)


def test_verify_valid_signature_of_a_payload_that_is_no_event(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    body, headers = delivery(b'{"event_type": "call.completed", "id": "nope"}')
    code, out, _ = verify(capsys, tmp_path, body, headers)
    assert code == 0
    assert "valid: signed with secret #1 (of 1)" in out
    assert "not a valid careCycle event" in out
    assert "id: uuid_parsing" in out
    assert "422" in out


def test_verify_valid_unknown_event(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery(b'{"event_type": "appointment.booked"}')
    code, out, _ = verify(capsys, tmp_path, body, headers, "--now", str(SIGNED_AT - 2))
    assert code == 0
    assert "2 s after now" in out
    assert "appointment.booked (UnknownEvent: not in this version's catalog)" in out


def test_verify_missing_header(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery()
    del headers["svix-signature"]
    code, out, _ = verify(capsys, tmp_path, body, headers)
    assert code == 1
    assert "invalid: missing header svix-signature\n" in out
    assert "headers given: svix-id, svix-timestamp" in out


def test_verify_misnamed_header(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery()
    headers["X-Svix-Id"] = headers.pop("svix-id")
    headers["Host"] = "localhost"
    code, out, _ = verify(capsys, tmp_path, body, headers)
    assert code == 1
    assert "missing header svix-id\n" in out
    assert "hint: header 'x-svix-id' looks like svix-id: the name must be exactly svix-id" in out
    assert "'host'" not in out


def test_verify_malformed_headers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery()
    headers["svix-timestamp"] = str(SIGNED_AT * 1000)
    code, out, _ = verify(capsys, tmp_path, body, headers)
    assert code == 1
    assert "invalid: header svix-timestamp is malformed" in out
    assert "the timestamp looks like milliseconds" in out
    body, headers = delivery()
    headers["svix-signature"] = headers["svix-signature"].removeprefix("v1,")
    code, out, _ = verify(capsys, tmp_path, body, headers)
    assert code == 1
    assert "invalid: header svix-signature has no v1 signature that could be read" in out
    assert "hint: svix-signature must hold 'v1,<base64>' entries separated by spaces" in out


def test_verify_names_each_header_as_it_was_sent(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery(prefix="webhook")
    del headers["webhook-timestamp"]
    code, out, _ = verify(capsys, tmp_path, body, headers)
    assert code == 1
    assert "invalid: missing header webhook-timestamp\n" in out
    body, headers = delivery(secret=OTHER_SECRET)
    code, out, _ = verify(capsys, tmp_path, body, headers)
    assert code == 1
    assert "or the body, svix-id or svix-timestamp changed after signing" in out
    assert "webhook-" not in out
    body, headers = delivery()
    headers = {"webhook-id": headers["svix-id"], "svix-timestamp": headers["svix-timestamp"]}
    code, out, _ = verify(capsys, tmp_path, body, headers)  # mixed names: both are named
    assert "invalid: missing header webhook-signature (or svix-*)" in out
    body, headers = delivery()
    headers["Svix-Timestamp"] = headers.pop("svix-timestamp") + "x"
    code, out, _ = verify(capsys, tmp_path, body, headers)
    assert "invalid: header svix-timestamp is malformed" in out


def test_verify_signature_without_v1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery()
    headers["svix-signature"] = headers["svix-signature"].replace("v1,", "v2,")
    code, out, _ = verify(capsys, tmp_path, body, headers)
    assert code == 1
    assert "invalid: header svix-signature has no v1 signature" in out


def test_verify_conflicting_headers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery()
    headers["webhook-id"] = "msg_other"
    code, out, _ = verify(capsys, tmp_path, body, headers)
    assert code == 1
    assert "invalid: headers svix-id and webhook-id are both given, with different values" in out


def test_verify_stale_says_by_how_much_and_that_it_would_match(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    body, headers = delivery()
    code, out, _ = verify(capsys, tmp_path, body, headers, "--now", str(SIGNED_AT + 1000))
    assert code == 1
    assert "is 1000 s (about 17 minutes) in the past: 700 s outside the tolerance of 300 s" in out
    assert "The signature would otherwise match: it was made with secret #1 (of 1)" in out
    assert f"--now {SIGNED_AT}" in out


def test_verify_future_timestamp(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery()
    code, out, _ = verify(capsys, tmp_path, body, headers, "--now", str(SIGNED_AT - 100), "--tolerance", "60")
    assert code == 1
    assert "is 100 s in the future: 40 s outside the tolerance of 60 s" in out
    assert "clock" in out


def test_verify_long_stale_delivery(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery()
    code, out, _ = verify(capsys, tmp_path, body, headers, "--now", str(SIGNED_AT + 3 * 86400))
    assert code == 1
    assert "is 259200 s (about 3 days) in the past" in out
    code, out, _ = verify(capsys, tmp_path, body, headers, "--now", str(SIGNED_AT + 3 * 3600))
    assert "(about 3 hours)" in out


def test_verify_stale_and_wrong_secret(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery(secret=OTHER_SECRET)
    code, out, _ = verify(capsys, tmp_path, body, headers, "--now", str(SIGNED_AT + 1000))
    assert code == 1
    assert "700 s outside the tolerance" in out
    assert "And the signature would not match either: no signature matches" in out
    assert "would otherwise match" not in out


def test_verify_wrong_secret(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery(secret=OTHER_SECRET)
    code, out, _ = verify(capsys, tmp_path, body, headers)
    assert code == 1
    assert "invalid: no signature matches: the header carries 1 v1 signature" in out
    assert "Either the secret is wrong" in out
    assert "re-serialised" not in out.splitlines()[0]


def test_verify_re_serialised_body(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery(json.dumps(json.loads(fixture_bytes("customer.created"))).encode())
    pretty = json.dumps(json.loads(body), indent=2).encode()
    code, out, _ = verify(capsys, tmp_path, pretty, headers)
    assert code == 1
    assert "the body was changed after signing: it looks re-serialised" in out
    assert "json.dumps spacing" in out
    assert "secret #1 (of 1)" in out
    compact, headers = delivery(json.dumps(json.loads(body), separators=(",", ":")).encode())
    code, out, _ = verify(capsys, tmp_path, json.dumps(json.loads(compact)).encode(), headers)
    assert code == 1
    assert "compact JSON, as JavaScript's JSON.stringify writes it" in out


def test_verify_trailing_newline(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery()
    code, out, _ = verify(capsys, tmp_path, body + b"\n", headers)
    assert code == 1
    assert "the body was changed after signing: a trailing newline was added" in out
    body, headers = delivery(b'{"event_type": "appointment.booked"}\n')
    code, out, _ = verify(capsys, tmp_path, body[:-1], headers)
    assert code == 1
    assert "its trailing newline was removed" in out


def test_verify_crlf(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    original = json.dumps({"event_type": "appointment.booked", "a": [1, 2]}, indent=2).encode()
    body, headers = delivery(original)
    code, out, _ = verify(capsys, tmp_path, body.replace(b"\n", b"\r\n"), headers)
    assert code == 1
    assert "its line endings were changed to CRLF" in out
    crlf, headers = delivery(original.replace(b"\n", b"\r\n"))
    code, out, _ = verify(capsys, tmp_path, crlf.replace(b"\r\n", b"\n"), headers)
    assert code == 1
    assert "changed from CRLF to LF" in out


def test_verify_trailing_crlf(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery(b'{"event_type":"x"}')
    code, out, _ = verify(capsys, tmp_path, body + b"\r\n", headers)
    assert code == 1
    assert "the body was changed after signing: a trailing CRLF was added" in out


def test_verify_headers_file_of_header_lines_only(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery()
    headers_file = tmp_path / "headers.txt"
    headers_file.write_text("".join(f"{name}: {value}\n" for name, value in headers.items()))
    body_file = tmp_path / "body.json"
    body_file.write_bytes(body)
    files = ("--body-file", str(body_file), "--headers-file", str(headers_file))
    code, out, _ = run(capsys, "verify", "--secret", SECRET, *files, "--now", str(SIGNED_AT))
    assert code == 0
    assert "valid" in out


def test_verify_byte_order_mark_and_whitespace(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery()
    code, out, _ = verify(capsys, tmp_path, b"\xef\xbb\xbf" + body, headers)
    assert "a UTF-8 byte order mark was added" in out
    code, out, _ = verify(capsys, tmp_path, b"  " + body, headers)
    assert code == 1
    assert "whitespace was added before it" in out


def test_verify_not_json_and_wrong(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _, headers = delivery(b"hello")
    code, out, _ = verify(capsys, tmp_path, b"hullo", headers)
    assert code == 1
    assert "no signature matches" in out


def test_verify_headers_as_raw_request_lines_and_header_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    body, headers = delivery(prefix="webhook")
    raw = tmp_path / "request.txt"
    raw.write_text(
        "\nPOST /webhooks HTTP/1.1\r\nHost: localhost\r\n"
        + "".join(f"{name.title()}: {value}\r\n" for name, value in headers.items())
        + "\r\n"
        + body.decode()
    )
    body_file = tmp_path / "body.json"
    body_file.write_bytes(body)
    now = ("--now", str(SIGNED_AT))
    code, out, _ = run(
        capsys, "verify", "--secret", SECRET, "--body-file", str(body_file), "--headers-file", str(raw), *now
    )
    assert code == 0, out
    assert "valid: signed with secret #1 (of 1)" in out
    lines = [item for name, value in headers.items() for item in ("--header", f"{name}: {value}")]
    code, out, _ = run(capsys, "verify", "--secret", SECRET, "--body", body.decode(), *lines, *now)
    assert code == 0
    assert "valid" in out


def test_verify_body_from_stdin(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body, headers = delivery()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    lines = [item for name, value in headers.items() for item in ("--header", f"{name}: {value}")]
    monkeypatch.setenv(SECRET_ENV, f"{OTHER_SECRET} {SECRET}")
    code, out, _ = run(capsys, "verify", "--body-file", "-", *lines, "--now", str(SIGNED_AT))
    assert code == 0
    assert "valid: signed with secret #2 (of 2)" in out


@pytest.mark.parametrize(
    ("headers_text", "message"),
    [
        ('{"svix-id": 1.5}', "the value of 'svix-id' must be a string"),
        ('{"svix-id": ', "is not valid JSON"),
        ("svix-id msg_1\n", "line 1: expected 'Name: value'"),
        (" svix-id: msg_1\n", "expected 'Name: value'"),
    ],
)
def test_verify_bad_headers_files_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, headers_text: str, message: str
) -> None:
    headers_file = tmp_path / "headers"
    headers_file.write_text(headers_text)
    code, _, err = run(
        capsys, "verify", "--secret", SECRET, "--body", "{}", "--headers-file", str(headers_file)
    )
    assert code == 2
    assert message in err


def test_verify_headers_file_json_with_numbers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body, headers = delivery()
    numeric: dict[str, object] = {**headers, "svix-timestamp": SIGNED_AT}
    code, out, _ = verify(capsys, tmp_path, body, headers)
    assert code == 0
    headers_file = tmp_path / "numeric.json"
    headers_file.write_text(json.dumps(numeric))
    code, out, _ = run(
        capsys, "verify", "--secret", SECRET, "--body", body.decode(), "--headers-file", str(headers_file),
        "--now", str(SIGNED_AT),
    )  # fmt: skip
    assert code == 0, out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--secret", SECRET, "--body", "{}", "--header", "svix-id=msg_1"],
            "--header: expected 'Name: value'",
        ),
        (
            ["--secret", SECRET, "--secret", "nope!", "--body", "{}", "--header", "a: b"],
            "secret #2: the webhook",
        ),
        (["--secret", SECRET, "--body-file", "/nonexistent", "--header", "a: b"], "cannot read --body-file"),
        (
            ["--secret", SECRET, "--body", "{}", "--headers-file", "/nonexistent"],
            "cannot read --headers-file",
        ),
        (
            ["--secret", SECRET, "--body", "{}", "--header", "a: b", "--now", "soon"],
            "seconds since the epoch",
        ),
        (["--secret", SECRET, "--body", "{}", "--header", "a: b", "--now", "-5"], "seconds since the epoch"),
        (["--secret", SECRET, "--body", "{}", "--header", "a: b", "--tolerance", "-1"], "non-negative"),
        (["--secret", SECRET, "--body", "{}", "--header", "a: b", "--tolerance", "inf"], "non-negative"),
        (["--secret", SECRET, "--header", "a: b"], "one of the arguments --body-file --body is required"),
        (["--secret", SECRET, "--body", "{}", "--body-file", "x", "--header", "a: b"], "not allowed with"),
    ],
)
def test_verify_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, "verify", *argv)
    assert code == 2
    assert message in err
    assert SECRET not in err


def test_verify_headers_file_not_utf8(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    headers_file = tmp_path / "headers"
    headers_file.write_bytes(b"svix-id: \xff\n")
    code, _, err = run(
        capsys, "verify", "--secret", SECRET, "--body", "{}", "--headers-file", str(headers_file)
    )
    assert code == 2
    assert "is not UTF-8 text" in err


# --------------------------------------------------------------------------- schema


def test_schema_of_all_events(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["discriminator"]["mapping"]) == set(CATALOG)
    assert out.startswith('{\n  "$schema"')


def test_schema_of_one_event_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema", "call.completed", "--indent", "0")
    assert code == 0
    assert out.count("\n") == 1
    schema = json.loads(out)
    assert schema["properties"]["event_type"]["const"] == "call.completed"
    assert schema["properties"]["transcript"]["x-phi"] is True


@pytest.mark.parametrize("argv", [[], ["customer.created"], ["call.completed"]])
def test_schema_descriptions_are_plain_text(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, _ = run(capsys, "schema", *argv)
    assert code == 0
    texts: list[str] = []

    def collect(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in {"title", "description"} and isinstance(value, str):
                    texts.append(value)
                else:
                    collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    collect(json.loads(out))
    assert len(texts) > 5
    markup = [text for text in texts if "`" in text or re.search(r":[a-z]+:", text)]
    assert markup == []
    described = "\n".join(texts)
    assert "call.completed: a call reached a terminal state" in described or argv != ["call.completed"]
    assert "as nested in CallCompletedEvent.customer" in described or argv == ["customer.created"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["customer.create"], "no event type 'customer.create' in the careCycle catalog"),
        (["customer.create"], "did you mean customer.created"),
        (["x", "--indent", "99"], "expected 0 (one line) to 16 spaces"),
        (["x", "--indent", "two"], "expected a number of spaces"),
    ],
)
def test_schema_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run(capsys, "schema", *argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert err.count("did you mean") <= 1


# --------------------------------------------------------------------------- demo


def test_demo_sends_every_event_over_http(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("carecycle_webhooks")
    before = (logger.level, logger.propagate, list(logger.handlers))
    code, out, err = run(capsys, "demo")
    assert code == 0, out + err
    out = " ".join(out.split())  # long lines are wrapped
    assert "listens on http://127.0.0.1:" in out
    customer = "customer b1f7c0e2-3a4d-4e5f-8a9b-0c1d2e3f4a5b"
    assert f"customer_created got CustomerCreatedEvent: {customer}, status Lead" in out
    assert f"customer_updated got CustomerUpdatedEvent: {customer}, status Active" in out
    assert "call_completed got CallCompletedEvent: call dca4a483-af54-4899-a804-766ee5812537, inbound" in out
    assert "anything_else (catch-all) got UnknownEvent: event type 'appointment.booked'" in out
    assert out.count("-> HTTP 200 OK") == 5
    assert '-> HTTP 200 OK {"status": "duplicate"}' in out
    assert '-> HTTP 400 Bad Request {"error": "no_matching_signature"' in out
    assert '-> HTTP 400 Bad Request {"error": "timestamp_too_old"' in out
    assert "first_name=<redacted>" in out
    assert "phone_number=<redacted>" in out
    assert "receiver log: WARNING webhook rejected (no_matching_signature)" in out
    assert "The handlers ran 4 times for 7 deliveries" in out
    assert not any(value in out + err for value in PHI_VALUES)
    assert not [thread for thread in threading.enumerate() if thread.name == "carecycle-webhooks-demo"]
    # The duplicate was answered by the store the docs start with, in a temporary directory
    # that is gone once the demo ends.
    store = re.search(r"SQLiteIdempotencyStore\('(?P<path>[^']+)'\)", out)
    assert store, out
    database = Path(store["path"])
    assert database.parent.name.startswith("carecycle-webhooks-demo-")
    assert not database.parent.exists()
    assert (logger.level, logger.propagate, list(logger.handlers)) == before


def test_demo_events_are_the_factory_events() -> None:
    # The demo's customer is the catalog's: the PHI it must hide is really there.
    event = make_event("customer.created")
    assert isinstance(event, CustomerCreatedEvent)
    assert event.first_name == "Marcus"


def _fastapi_answer(client: Any, path: str) -> _http.Answer:
    """A FastAPI app's answer to a delivery signed with another secret, as ``send`` reads it."""
    delivery = sign(make_event("customer.created"), secret=OTHER_SECRET)
    response = client.post(path, content=delivery.body, headers=delivery.headers)
    return _http.Answer(
        status=response.status_code,
        reason=response.reason_phrase,
        headers={name.lower(): value for name, value in response.headers.items()},
        body=response.content,
        seconds=0.01,
    )


def test_hints_for_fastapi_answers() -> None:
    """A route added without methods (Starlette's JSON 405) and a verified_event route's 400."""
    pytest.importorskip("fastapi")
    from fastapi import Depends, FastAPI

    with warnings.catch_warnings():
        # Starlette 1.x prefers httpx2 for its test client, and warns on import when it finds httpx.
        warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient` is deprecated")
        from fastapi.testclient import TestClient

    from carecycle_webhooks import CustomerCreatedEvent, Dispatcher
    from carecycle_webhooks._cli._answer import print_answer
    from carecycle_webhooks.fastapi import verified_event, webhook_view

    webhooks = Dispatcher(SECRET)
    app = FastAPI()
    app.add_api_route("/webhooks", webhook_view(webhooks))  # no methods: FastAPI routes GET
    # As a dependency of the route (this module's annotations are strings FastAPI cannot resolve here).
    verified = Depends(verified_event(webhooks, CustomerCreatedEvent))

    @app.post("/customers", dependencies=[verified])
    async def customers() -> dict[str, str]:
        return {"ok": "yes"}

    with TestClient(app) as client:
        not_allowed = _fastapi_answer(client, "/webhooks")
        unsigned = _fastapi_answer(client, "/customers")

    out = io.StringIO()
    print_answer(not_allowed, "http://example.com/webhooks", out)
    assert not_allowed.status == 405
    assert (
        "hint: the route at /webhooks does not accept POST (it allows GET): is --url the webhook route? "
        in out.getvalue()
    )
    assert 'FastAPI: add_api_route(..., methods=["POST"])' in out.getvalue()
    assert "Flask" not in out.getvalue()

    out = io.StringIO()
    print_answer(unsigned, "http://example.com/customers", out)
    assert unsigned.status == 400
    assert "no_matching_signature" in out.getvalue()
    assert (
        "hint: a carecycle-webhooks receiver answers 400 when the signature does not verify" in out.getvalue()
    )
    assert "before the request reached the view" not in out.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "--secret", SECRET, "--body-file", "/dev/zero", "--header", "svix-id: a"],
        ["verify", "--secret", SECRET, "--body", "{}", "--headers-file", "/dev/zero"],
        [
            *("send", "customer.created", "--url", "http://127.0.0.1:9/webhooks"),
            *("--secret", SECRET, "--file", "/dev/zero"),
        ],
    ],
)
def test_an_endless_input_is_refused_after_a_bound(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    # /dev/zero never ends: the command reads up to its bound (made small here), then stops.
    monkeypatch.setattr("carecycle_webhooks._cli._common.MAX_INPUT", 1000)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "holds more than" in err
    assert "not a webhook delivery" in err


def test_send_gives_up_on_an_answer_that_never_arrives_whole(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    url = receiver.url.replace("/webhooks", "/drip")
    code, out, err = send(capsys, url, "customer.created", "--timeout", "0.5")  # the server drips for 2 s
    assert code == 3
    assert "the answer did not arrive whole within 0.5 s" in out + err


def test_send_escapes_the_control_characters_a_receiver_sends(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = send(capsys, receiver.url.replace("/webhooks", "/ansi"), "customer.created")
    assert code == 1
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\r" not in out
    assert "HTTP 500 Oops \\x1b[31mred" in out
    assert '\\x1b]0;pwned\\x07\\x1b[2J"}\nsecond line\\x0dover' in out
    assert "location: /x\\x1b[1m" in out


def test_send_escapes_the_control_characters_of_a_status_line_that_is_not_http(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = send(capsys, receiver.url.replace("/webhooks", "/bad-status"), "customer.created")
    assert code == 3
    assert "\x1b" not in out + err
    assert "\x07" not in out + err
    assert "\\x1b]0;pwned\\x07" in err
