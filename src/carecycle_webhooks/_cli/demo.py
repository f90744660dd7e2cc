"""``carecycle-webhooks demo``: a real receiver on a loopback port, fed signed deliveries over HTTP.

Run it with ``carecycle-webhooks demo`` (``./scripts/demo`` does, from a fresh clone). A
`Dispatcher` with a typed handler per event type and a catch-all sits behind a small
WSGI server on 127.0.0.1 (a free port, in a thread; see ``_receiver``), with the store the
docs start with, a `SQLiteIdempotencyStore`, in a temporary directory. Every event of the
catalog is signed with a fresh secret, as careCycle's Svix endpoint signs it, and POSTed;
then an event type this version does not know, a duplicate, a tampered and a stale
delivery. The output shows what each handler received (fields that are not PHI; ``repr()``
redacts the rest) and each HTTP status. The server stops and the directory is deleted at
the end.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
from typing import TYPE_CHECKING, TextIO

from ._common import EXIT_FAILED, EXIT_OK, PROG, Command
from ._http import Answer, Unreachable, post

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

    from carecycle_webhooks.testing import SignedDelivery

_PATH = "/webhooks"
_TIMEOUT = 10.0

_EPILOG = f"""\
example:
  {PROG} demo

Starts a Dispatcher with typed handlers behind a small HTTP server on 127.0.0.1 (a free
port), which records processed webhook-ids in a SQLite file in a temporary directory (a
SQLiteIdempotencyStore), sends it every event of the catalog, an unknown one, a duplicate,
a tampered and a stale delivery, signed with a fresh secret, prints what the handlers
received and each HTTP status, then stops the server and deletes the directory. Nothing
leaves the machine.
"""


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
    from carecycle_webhooks.testing import make_event, sign

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
    # The receiver loads the library and logging: only now, not when --help is asked for.
    from carecycle_webhooks._cli._receiver import Receiver, temporary_store
    from carecycle_webhooks.testing import generate_secret

    secret = generate_secret()
    all_as_expected = True
    sent = 0
    with temporary_store() as store:
        receiver = Receiver(secret, store)
        with receiver.serving() as port:
            url = f"http://127.0.0.1:{port}{_PATH}"
            out.write(
                "carecycle-webhooks demo\n"
                f"A Dispatcher with typed handlers listens on {url}; deliveries are signed with a fresh\n"
                "random secret, as careCycle's Svix endpoint signs them, and sent over HTTP.\n"
                "It remembers processed webhook-ids in a SQLite file, which every worker of one machine\n"
                "would share; this one is temporary, deleted at the end:\n"
                f"   {store!r}\n"
            )
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
                    return EXIT_FAILED
                out.write(f"   -> HTTP {_shown(answer)}\n")
                all_as_expected &= answer.status == step.expected_status
                out.writelines(received.report() for received in receiver.received[already:])
                out.writelines(f"   receiver log: {line}\n" for line in receiver.log_lines())
                if step.note:
                    out.write(f"   {step.note}\n")
    out.write(
        f"\nThe handlers ran {len(receiver.received)} times for {sent} deliveries; the receiver on port "
        f"{port} is stopped, and its SQLite file deleted.\n"
    )
    if not all_as_expected:  # pragma: no cover - would be a bug in the library
        out.write("Some deliveries did not get the expected status: see above.\n")
        return EXIT_FAILED
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    del args
    return run(sys.stdout)


COMMAND = Command(
    name="demo",
    summary="run a local receiver and send it every event",
    description="Send signed deliveries of every event to a receiver on a loopback port, "
    "over real HTTP, and show what its typed handlers get.",
    epilog=_EPILOG,
    run=_run,
)
