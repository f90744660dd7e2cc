"""The demo: a real receiver on a loopback port, fed signed deliveries of every event over HTTP.

Run it with ``carecycle-webhooks demo`` (``./scripts/demo`` does, from a fresh clone). A
`Dispatcher` with a typed handler per event type and a catch-all sits behind a small
WSGI server on 127.0.0.1 (a free port, in a thread). Every event of the catalog is signed
with a fresh secret, as careCycle's Svix endpoint signs it, and POSTed; then an event type
this version does not know, a duplicate, a tampered and a stale delivery. The output shows
what each handler received (fields that are not PHI; ``repr()`` redacts the rest) and each
HTTP status. The server stops at the end.
"""

from __future__ import annotations

import dataclasses
import datetime
import http
import logging
import textwrap
import threading
from typing import TYPE_CHECKING, TextIO

from ._cli import Answer, Unreachable, post
from ._dispatch import Dispatcher, current_delivery
from ._idempotency import InMemoryIdempotencyStore
from ._models import CallCompletedEvent, CustomerCreatedEvent, CustomerUpdatedEvent, Event
from .testing import SignedDelivery, generate_secret, make_event, sign

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from wsgiref.simple_server import WSGIServer

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["run"]

_PATH = "/webhooks"
_TIMEOUT = 10.0
_REPR_WIDTH = 300


@dataclasses.dataclass(frozen=True)
class _Received:
    handler: str
    event: Event
    webhook_id: str


class _Receiver:
    """The integrator's side: typed handlers that record what they get."""

    def __init__(self, secret: str) -> None:
        self.received: list[_Received] = []
        self._lock = threading.Lock()
        self.dispatcher = Dispatcher(secret, idempotency_store=InMemoryIdempotencyStore())
        webhooks = self.dispatcher

        @webhooks.on("customer.created")
        def customer_created(event: CustomerCreatedEvent) -> None:
            self._record("customer_created", event)

        @webhooks.on("customer.updated")
        def customer_updated(event: CustomerUpdatedEvent) -> None:
            self._record("customer_updated", event)

        @webhooks.on("call.completed")
        def call_completed(event: CallCompletedEvent) -> None:
            self._record("call_completed", event)

        @webhooks.catch_all
        def anything_else(event: Event) -> None:
            self._record("anything_else (catch-all)", event)

    def _record(self, handler: str, event: Event) -> None:
        with self._lock:
            self.received.append(_Received(handler, event, current_delivery().webhook_id))

    def app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI app: every request goes to the dispatcher, as a framework adapter sends it."""
        body: bytes = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        headers = {
            key[5:].replace("_", "-").lower(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        response = self.dispatcher.handle(body, headers)
        status = http.HTTPStatus(response.status_code)
        start_response(
            f"{status.value} {status.phrase}",
            [*response.headers.items(), ("content-length", str(len(response.body)))],
        )
        return [response.body]


def _start_server(app: WSGIApplication) -> tuple[WSGIServer, threading.Thread]:
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            del format, args  # the demo prints its own lines

    server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="carecycle-webhooks-demo",
        daemon=True,
    )
    thread.start()
    return server, thread


def _describe(event: Event) -> str:
    """The fields a log may show: ids, statuses, flags; never PHI."""
    match event:
        case CustomerCreatedEvent() | CustomerUpdatedEvent():
            user = event.assigned_user
            return (
                f"customer {event.id}, status {event.status}, line type {event.line_type}, "
                f"state {event.state}, do not call {event.do_not_call}, assigned to "
                f"{f'{user.name} (NPN {user.npn})' if user else 'nobody'}"
            )
        case CallCompletedEvent():
            seconds = f"{event.duration_ms / 1000:.0f} s" if event.duration_ms is not None else "no duration"
            return (
                f"call {event.id}, {event.direction}, disposition {event.disposition!r}, {seconds}, "
                f"campaign {event.campaign.name if event.campaign else None!r}, "
                f"customer {event.customer.id if event.customer else None}"
            )
        case _:  # UnknownEvent
            return f"event type {event.event_type!r}, fields {', '.join(sorted(event.payload))}"


def _repr_lines(event: Event) -> str:
    text = repr(event)
    shown = text if len(text) <= _REPR_WIDTH else text[:_REPR_WIDTH] + "..."
    lines = textwrap.wrap(shown, width=100, initial_indent="   repr: ", subsequent_indent="         ")
    phi = len(type(event).phi_fields)
    if phi:
        lines.append(f"   ({phi} PHI fields show as <redacted>; attribute access still returns them)")
    return "".join(line + "\n" for line in lines)


class _LogLines(logging.Handler):
    """Collects the library's log lines, to print them under the delivery they belong to."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._lines: list[str] = []
        self._lock_lines = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_lines:
            self._lines.append(f"{record.levelname} {record.getMessage()}")

    def take(self) -> list[str]:
        with self._lock_lines:
            lines, self._lines = self._lines, []
        return lines


def _shown(answer: Answer) -> str:
    body = answer.body.decode("utf-8", errors="replace").strip()
    return f"{answer.status} {answer.reason} {body}"


@dataclasses.dataclass(frozen=True)
class _Step:
    label: str
    delivery: SignedDelivery
    expected_status: int
    body: bytes | None = None  # what is sent instead of delivery.body (tampering)
    note: str = ""


def _steps(secret: str) -> Iterator[_Step]:
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    first: SignedDelivery | None = None
    for number, event_type in enumerate(("customer.created", "customer.updated", "call.completed"), 1):
        delivery = sign(make_event(event_type), secret=secret, webhook_id=f"msg_demo_{number}")
        first = first or delivery
        yield _Step(event_type, delivery, 200)
    unknown = make_event(
        "appointment.booked",
        id="6c1f3a52-0d7e-4b8e-9a34-2f5d7c9e1b08",
        createdAt=now.isoformat(timespec="milliseconds"),
        startsAt="2026-07-01T15:00:00.000Z",
    )
    yield _Step(
        "appointment.booked (not in the catalog)",
        sign(unknown, secret=secret, webhook_id="msg_demo_4"),
        200,
        note="a new event type reaches the catch-all as an UnknownEvent",
    )
    assert first is not None  # noqa: S101 - the loop above ran
    yield _Step(
        f"customer.created again, same webhook-id {first.webhook_id} (a Svix retry)",
        first,
        200,
        note="already processed: the handlers do not run again",
    )
    tampered = sign(make_event("customer.created"), secret=secret, webhook_id="msg_demo_6")
    yield _Step(
        'customer.created, status changed from "Lead" to "Active" after signing',
        tampered,
        400,
        body=tampered.body.replace(b'"status":"Lead"', b'"status":"Active"', 1),
        note="rejected: the signature no longer matches",
    )
    stale = sign(
        make_event("call.completed"),
        secret=secret,
        webhook_id="msg_demo_7",
        timestamp=now - datetime.timedelta(minutes=10),
    )
    yield _Step(
        "call.completed signed 10 minutes ago (a replay)",
        stale,
        400,
        note="rejected: outside the 5-minute tolerance",
    )


def run(out: TextIO) -> int:
    """Run the demo, writing to ``out``; 0 when every delivery got the expected status."""
    secret = generate_secret()
    receiver = _Receiver(secret)
    server, thread = _start_server(receiver.app)
    url = f"http://127.0.0.1:{server.server_port}{_PATH}"
    out.write(
        "carecycle-webhooks demo\n"
        f"A Dispatcher with typed handlers listens on {url}; deliveries are signed with a fresh\n"
        "random secret, as careCycle's Svix endpoint signs them, and sent over HTTP.\n"
    )
    all_as_expected = True
    sent = 0
    logger = logging.getLogger("carecycle_webhooks")
    log = _LogLines()
    saved = logger.propagate, logger.level
    logger.addHandler(log)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        for step in _steps(secret):
            sent += 1
            body = step.delivery.body if step.body is None else step.body
            already = len(receiver.received)
            out.write(
                f"\n{sent}. {step.label}\n   {len(body)} bytes, webhook-id {step.delivery.webhook_id}\n"
            )
            try:
                answer = post(url, body, step.delivery.headers, timeout=_TIMEOUT)
            except Unreachable as error:  # pragma: no cover - the server is ours, on loopback
                out.write(f"   could not reach the receiver: {error}\n")
                return 1
            out.write(f"   -> HTTP {_shown(answer)}\n")
            all_as_expected &= answer.status == step.expected_status
            for received in receiver.received[already:]:
                event = received.event
                got = f"{received.handler} got {type(event).__name__}: {_describe(event)}"
                out.writelines(
                    f"{line}\n"
                    for line in textwrap.wrap(got, 100, initial_indent="   ", subsequent_indent="     ")
                )
                out.write(_repr_lines(event))
            out.writelines(f"   receiver log: {line}\n" for line in log.take())
            if step.note:
                out.write(f"   {step.note}\n")
    finally:
        logger.removeHandler(log)
        logger.propagate, logger.level = saved
        server.shutdown()
        server.server_close()
        thread.join(timeout=_TIMEOUT)
    handled = len(receiver.received)
    out.write(
        f"\nThe handlers ran {handled} times for {sent} deliveries; the receiver on port "
        f"{server.server_port} is stopped.\n"
    )
    if not all_as_expected:  # pragma: no cover - would be a bug in the library
        out.write("Some deliveries did not get the expected status: see above.\n")
        return 1
    return 0
