# mypy: disable-error-code="import-untyped"
# (Celery ships no type hints: to mypy its objects are Any; `enqueue` is the typed
# way in.)
"""The Celery side: the app, the handlers, and the task that runs them.

The web endpoint (``celery_web.py``) verifies each delivery and queues its raw body with
`enqueue`; a worker runs `process_delivery`, which parses the body, deduplicates the
delivery in Redis and runs the typed handlers, retrying the job with backoff when they
fail. Run a worker (from the repository root)::

    CARECYCLE_WEBHOOK_SECRET=whsec_... REDIS_URL=redis://127.0.0.1:6379/0 \\
        celery --workdir examples/celery_queue -A celery_tasks \\
        worker --concurrency 2 -l info

Environment:
    CARECYCLE_WEBHOOK_SECRET: the endpoint's ``whsec_...`` secret (several,
        space-separated, while rotating). Only the web endpoint verifies, but
        `Dispatcher` needs it.
    REDIS_URL: the Redis of the idempotency store, e.g. ``redis://127.0.0.1:6379/0``;
        also the broker and result backend unless these are given.
    DATABASE_URL: optional, a PostgreSQL database (``postgresql://app@db/app``). When
        set, the worker keeps its done marks there (`PostgresIdempotencyStore`, extra
        ``postgres``) and the handlers write their effects to its table ``crm_events``
        in the delivery's own transaction: each event's row commits with its done
        mark, or not at all.
    CELERY_BROKER_URL, CELERY_RESULT_BACKEND: optional, another broker or result
        backend.
    EVENTS_LOG: optional path of a JSON-lines file; each processed event appends one
        line (webhook-id, event type, id), standing in for your CRM or database.

OpenTelemetry: when ``opentelemetry-api`` is installed, `enqueue` sends the endpoint's
trace context with each job, and the worker's delivery span continues that trace.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import redis
from celery import signals

# `celery.app.Celery` is `celery.Celery`, imported from there because mypy, which checks
# every file under examples/, would otherwise take this directory for the celery
# package.
from celery.app import Celery

from carecycle_webhooks import (
    CallCompletedEvent,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    Dispatcher,
    Event,
    IdempotencyStore,
    RedisIdempotencyStore,
    UnknownEvent,
    WebhookDelivery,
    WebhookPayloadError,
    current_delivery,
    parse_unverified_event,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from psycopg_pool import ConnectionPool

    from carecycle_webhooks.postgres import PostgresIdempotencyStore

log = logging.getLogger("example.celery")

REDIS_URL = os.environ["REDIS_URL"]
DATABASE_URL = os.environ.get("DATABASE_URL")
BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", BROKER_URL)

# Retries: 1, 2, 4, ... 60 s apart (plus up to 1 s of jitter), ten times: about five
# minutes in all. That must outlast the lease below, so that a job redelivered after its
# worker died (its lease still held: 409) runs once the dead worker's lease has expired.
MAX_RETRIES = 10
RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0
# A handler still running after the soft limit gets SoftTimeLimitExceeded (a handler
# failure: the job is retried); after the hard limit its process is killed. The lease
# outlasts the hard limit, so that no redelivered copy runs while a handler still does.
SOFT_TIME_LIMIT = 100
TIME_LIMIT = 110
LEASE = datetime.timedelta(seconds=120)

# Kept out of logs, task events and monitoring tools (Flower, `celery inspect`): the
# body holds protected health information.
REDACTED_BODY = "'<body>'"

app = Celery("carecycle_webhooks_example", broker=BROKER_URL, backend=RESULT_BACKEND)
app.conf.update(
    # JSON only: no pickle, so a message on the broker can never run code in a worker.
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    # A queue of its own, apart from other Celery apps on the same Redis.
    task_default_queue="carecycle-webhooks",
    # With late acknowledgement, each worker process reserves one job at a time.
    worker_prefetch_multiplier=1,
    # Results are not read by anyone; failures are still recorded (they never hold PHI).
    task_ignore_result=True,
    task_store_errors_even_if_ignored=True,
    # An unreachable broker fails the endpoint's publish within about a second (503).
    broker_connection_retry_on_startup=True,
    broker_connection_timeout=2,
    broker_transport_options={"socket_connect_timeout": 2, "socket_timeout": 5},
    task_publish_retry_policy={
        "max_retries": 2,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.5,
    },
)


def task(**options: object) -> Callable[[Callable[..., object]], Any]:
    """``@app.task(...)``, as a decorator that mypy --strict accepts.

    Celery has no type hints.
    """
    decorator: Callable[[Callable[..., object]], Any] = app.task(**options)
    return decorator


# The effects table of the PostgreSQL variant: one row per processed event, standing in
# for your CRM's tables. The primary key makes a second row for one event impossible.
CRM_EVENTS_TABLE = (
    "CREATE TABLE IF NOT EXISTS crm_events "
    "(webhook_id text PRIMARY KEY, event_type text NOT NULL, record_id text NOT NULL)"
)

_pool: ConnectionPool | None = None
_postgres: PostgresIdempotencyStore | None = None


def _store() -> IdempotencyStore:
    """PostgreSQL when DATABASE_URL is set (exactly-once effects), else Redis."""
    global _pool, _postgres  # noqa: PLW0603 - set once, at import
    if DATABASE_URL:
        from psycopg_pool import ConnectionPool

        from carecycle_webhooks.postgres import PostgresIdempotencyStore

        # Opened in each worker process (below), never in the parent: a pool's threads
        # and connections do not survive a fork.
        _pool = ConnectionPool(
            DATABASE_URL,
            min_size=1,
            max_size=2,
            kwargs={"connect_timeout": 3},
            open=False,
        )
        _postgres = PostgresIdempotencyStore(_pool)
        return _postgres
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    return RedisIdempotencyStore(client)


# The secret from CARECYCLE_WEBHOOK_SECRET.
webhooks = Dispatcher(
    idempotency_store=_store(),
    lease=LEASE,
)


def _open_pool(**_: object) -> None:
    """Each worker process opens its own pool, and creates the tables if missing."""
    if _pool is None or _postgres is None:
        return
    _pool.open(wait=True, timeout=10)
    _postgres.create_table()
    with _pool.connection() as connection:
        connection.execute(CRM_EVENTS_TABLE)


signals.worker_process_init.connect(_open_pool)


# --------------------------------------------------------------------------- handlers


def _record(event: Event) -> None:
    """Stand-in for your CRM: one row or one JSON line per processed event, no PHI."""
    record_id = event.payload.get("id") if isinstance(event, UnknownEvent) else event.id
    if DATABASE_URL:
        from carecycle_webhooks.postgres import current_connection

        # The delivery's own transaction: this row commits with the done mark, or not
        # at all.
        current_connection().execute(
            "INSERT INTO crm_events (webhook_id, event_type, record_id) "
            "VALUES (%s, %s, %s)",
            (current_delivery().webhook_id, event.event_type, str(record_id)),
        )
    path = os.environ.get("EVENTS_LOG")
    if not path:
        return
    line = json.dumps(
        {
            "webhook_id": current_delivery().webhook_id,
            "event_type": event.event_type,
            "id": str(record_id),
        }
    )
    # One short append, atomic.
    with open(path, "a", encoding="utf-8") as file:  # noqa: PTH123
        file.write(line + "\n")


def _fails_first_time(event: CustomerCreatedEvent) -> bool:
    """A transient failure to watch the retries: the externalId "fail-once"."""
    path = os.environ.get("EVENTS_LOG")
    if event.external_id != "fail-once" or not path:
        return False
    marker = Path(f"{path}.failed-once.{current_delivery().webhook_id}")
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


@webhooks.on("customer.created")
def customer_created(event: CustomerCreatedEvent) -> None:
    if _fails_first_time(event):
        raise ConnectionError("the CRM is not answering (simulated)")
    log.info(
        "new customer %s (%s), do-not-call=%s",
        event.id,
        event.status,
        event.do_not_call,
    )
    _record(event)


@webhooks.on("customer.updated")
def customer_updated(event: CustomerUpdatedEvent) -> None:
    log.info("customer %s updated at %s", event.id, event.updated_at.isoformat())
    _record(event)


@webhooks.on("call.completed")
async def call_completed(event: CallCompletedEvent) -> None:
    # Async handlers work too: dispatch() runs them to completion in the worker.
    log.info("call %s: %s after %s ms", event.id, event.disposition, event.duration_ms)
    _record(event)


@webhooks.catch_all
def anything_else(event: Event) -> None:
    log.info("no dedicated handler for %s", event.event_type)
    _record(event)


# --------------------------------------------------------------------------- the task


class DeliveryNotProcessedError(Exception):
    """A delivery's job failed this time (store down, handler failed, or in flight).

    Its message says which webhook-id and why, never anything of the payload.
    """


class _Request(Protocol):
    retries: int


class _BoundTask(Protocol):
    """What `process_delivery` uses of its Celery task (``bind=True``)."""

    @property
    def request(self) -> _Request: ...

    def retry(
        self, *, exc: BaseException, countdown: float, argsrepr: str
    ) -> BaseException: ...


def trace_context() -> dict[str, str]:
    """The current trace context (W3C ``traceparent``), for the worker.

    Empty without OpenTelemetry.
    """
    try:
        from opentelemetry.propagate import inject
    except ImportError:
        return {}
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


@contextlib.contextmanager
def continued_trace(carrier: dict[str, str] | None) -> Iterator[None]:
    """Make the endpoint's trace context current: the delivery's span continues it.

    Not when a span is current already: the task's span of
    opentelemetry-instrumentation-celery, which continues the endpoint's trace itself
    (the delivery's span is then its child).
    """
    if not carrier:
        yield
        return
    try:
        from opentelemetry import context, trace
        from opentelemetry.propagate import extract
    except ImportError:
        yield
        return
    if trace.get_current_span().get_span_context().is_valid:
        yield
        return
    token = context.attach(extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


def _answer(body: bytes) -> str:
    fields: dict[str, str] = json.loads(body)
    return fields.get("status") or fields.get("error") or "?"


def _argsrepr(webhook_id: str, timestamp: int, attempt: int | None) -> str:
    return f"({REDACTED_BODY}, {webhook_id!r}, {timestamp!r}, {attempt!r})"


@task(
    bind=True,
    name="carecycle_webhooks_example.process_delivery",
    # Acknowledged once done, and put back on the queue if its worker process dies:
    # at-least-once, made exactly-once per webhook-id by the idempotency store.
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=MAX_RETRIES,
    soft_time_limit=SOFT_TIME_LIMIT,
    time_limit=TIME_LIMIT,
)
def process_delivery(  # noqa: PLR0913 - the job's fields, and the trace context
    self: _BoundTask,
    body: str,
    webhook_id: str,
    timestamp: int,
    attempt: int | None,
    *,
    trace_context: dict[str, str] | None = None,
) -> str:
    """Parse a verified delivery's body, deduplicate it, run its handlers.

    A failure is retried.
    """
    delivery = WebhookDelivery(
        webhook_id=webhook_id,
        timestamp=datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc),
        attempt=attempt,
    )
    try:
        # Verified by the endpoint before it was queued: the unverified parse is the
        # right one.
        event = parse_unverified_event(body)
    except WebhookPayloadError as error:
        # Signed, so it can never parse: retrying cannot help. The message names
        # locations and error types only, never values.
        # No traceback needed: the error says where.
        log.error(  # noqa: TRY400
            "webhook %s dropped, not a valid event: %s", webhook_id, error
        )
        return "invalid_payload"
    with continued_trace(
        trace_context
    ):  # the delivery's span: a child of the endpoint's
        response = webhooks.dispatch(event, delivery)
    outcome = _answer(response.body)
    retries = self.request.retries
    log.info("webhook %s (try %d): %s", webhook_id, retries + 1, outcome)
    if response.status_code < 300:
        return outcome
    # 409 in flight elsewhere, 500 a handler failed (logged by the dispatcher, without
    # its message), 503 the store is down: try again later. After the last retry, the
    # job fails with this exception; the webhook-id is free in the store, so resending
    # the message from the Svix dashboard processes it.
    countdown = min(
        RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2**retries
    ) + random.uniform(0, 1)
    raise self.retry(
        exc=DeliveryNotProcessedError(
            f"webhook {webhook_id}: {outcome} ({response.status_code})"
        ),
        countdown=countdown,
        argsrepr=_argsrepr(webhook_id, timestamp, attempt),
    )


def enqueue(body: str, delivery: WebhookDelivery) -> str:
    """Queue one verified delivery for `process_delivery`; returns the job's id.

    This is ``process_delivery.delay(body, ...)``, with the body kept out of the job's
    printed form.

    Raises:
        kombu.exceptions.OperationalError: The broker is unreachable.
    """
    timestamp = int(delivery.timestamp.timestamp())
    result = process_delivery.apply_async(
        args=(body, delivery.webhook_id, timestamp, delivery.attempt),
        kwargs={"trace_context": trace_context()},
        argsrepr=_argsrepr(delivery.webhook_id, timestamp, delivery.attempt),
    )
    return str(result.id)
