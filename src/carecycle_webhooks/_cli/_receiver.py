"""The demo's receiver: typed handlers behind a WSGI server on a loopback port, in a thread.

What an integrator writes: a `Dispatcher` with a handler per event type and a catch-all,
served over HTTP (here by the standard library's wsgiref, as a framework adapter would),
with the idempotency store the docs start with, a `SQLiteIdempotencyStore` (here in a
temporary directory, see `temporary_store`). It records what each handler gets and the
library's log lines, for the demo to print under each delivery. Only ``demo`` imports it,
when it runs: it loads the library and logging.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http
import logging
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from carecycle_webhooks._dispatch import Dispatcher, current_delivery
from carecycle_webhooks._models import CallCompletedEvent, CustomerCreatedEvent, CustomerUpdatedEvent
from carecycle_webhooks._sqlite import SQLiteIdempotencyStore

if TYPE_CHECKING:
    from collections.abc import Generator, Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from carecycle_webhooks._idempotency import IdempotencyStore
    from carecycle_webhooks._models import Event

_REPR_WIDTH = 300
_STOP_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Received:
    """An event a handler got.

    Attributes:
        handler: The handler's name.
        event: The event.
        webhook_id: The delivery's id.
    """

    handler: str
    event: Event
    webhook_id: str

    def report(self) -> str:
        """Lines saying what the handler got, showing no PHI: the fields a log may show, the repr."""
        got = f"{self.handler} got {type(self.event).__name__}: {_describe(self.event)}"
        lines = textwrap.wrap(got, 100, initial_indent="   ", subsequent_indent="     ")
        text = repr(self.event)
        shown = text if len(text) <= _REPR_WIDTH else text[:_REPR_WIDTH] + "..."
        lines += textwrap.wrap(shown, width=100, initial_indent="   repr: ", subsequent_indent="         ")
        phi = len(type(self.event).phi_fields)
        if phi:
            lines.append(f"   ({phi} PHI fields show as <redacted>; attribute access still returns them)")
        return "".join(line + "\n" for line in lines)


@contextlib.contextmanager
def temporary_store() -> Generator[SQLiteIdempotencyStore]:
    """A `SQLiteIdempotencyStore` in a new temporary directory, closed and deleted when the block ends."""
    with tempfile.TemporaryDirectory(prefix="carecycle-webhooks-demo-") as directory:
        store = SQLiteIdempotencyStore(Path(directory) / "webhooks.sqlite3")
        try:
            yield store
        finally:
            store.close()  # its connections, before their files go


class Receiver:
    """The integrator's side: typed handlers that record what they get.

    Args:
        secret: The endpoint's secret.
        store: The dispatcher's idempotency store.
    """

    def __init__(self, secret: str, store: IdempotencyStore) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._log = _LogLines()
        self.dispatcher = Dispatcher(secret, idempotency_store=store)
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
            self.received.append(Received(handler, event, current_delivery().webhook_id))

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

    def log_lines(self) -> list[str]:
        """The library's log lines since the last call."""
        return self._log.take()

    @contextlib.contextmanager
    def serving(self) -> Generator[int]:
        """Serve on a free port of 127.0.0.1 (yielded), collecting the library's log lines.

        The server stops and the logger is as it was when the block ends.
        """
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                del format, args  # the demo prints its own lines

        server = make_server("127.0.0.1", 0, self.app, handler_class=QuietHandler)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="carecycle-webhooks-demo",
            daemon=True,
        )
        thread.start()
        logger = logging.getLogger("carecycle_webhooks")
        saved = logger.propagate, logger.level
        logger.addHandler(self._log)
        logger.propagate = False
        logger.setLevel(logging.INFO)
        try:
            yield server.server_port
        finally:
            logger.removeHandler(self._log)
            logger.propagate, logger.level = saved
            server.shutdown()
            server.server_close()
            thread.join(timeout=_STOP_TIMEOUT)


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
