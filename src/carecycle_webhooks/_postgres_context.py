"""Each PostgreSQL delivery's connection, as its handlers see it (`current_connection`).

The context holds the delivery's `OpenDelivery` record, not its connection: a task or thread a
handler started copies the context and may outlive the delivery, when the connection
already serves another delivery's transaction. The store ends the record at ``complete``
or ``release``; from then on the context hands no connection out.
"""

from __future__ import annotations

import contextvars
from typing import Any, Generic, TypeVar, cast

import psycopg

__all__ = ["OpenDelivery", "current_async_connection", "current_connection", "delivery_context"]

_Conn = TypeVar("_Conn", "psycopg.Connection[Any]", "psycopg.AsyncConnection[Any]")


delivery_context: contextvars.ContextVar[OpenDelivery[Any] | None] = contextvars.ContextVar(
    "carecycle_webhooks_postgres_connection", default=None
)


def _current() -> psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None:
    entry = delivery_context.get()
    return entry.conn if entry is not None and entry.open else None


def current_connection() -> psycopg.Connection[Any]:
    """The connection of the delivery whose handlers are running, inside its transaction.

    Write your rows through it: they commit together with the delivery's done mark, or
    roll back if a handler raises (the id is then free for Svix's retry). Do not commit
    or roll back yourself (psycopg refuses it inside the delivery's transaction block);
    ``with conn.transaction():`` nests a savepoint.

    Raises:
        LookupError: Called outside a handler run with a `PostgresIdempotencyStore`, or
            after its delivery ended (from a thread or task the handler started).
        RuntimeError: The delivery runs on an async pool: an ``async def`` handler reads
            `current_async_connection`; a sync handler, which runs in a worker thread,
            cannot use the event loop's connection.
    """
    conn = _connection(
        "current_connection",
        "a PostgresIdempotencyStore",
        wrong_kind=psycopg.AsyncConnection,
        hint="this delivery runs on an AsyncConnectionPool (AsyncPostgresIdempotencyStore): "
        "write the handler as `async def` and use current_async_connection(); a sync "
        "handler runs in a worker thread and cannot use the event loop's connection",
    )
    return cast("psycopg.Connection[Any]", conn)


def current_async_connection() -> psycopg.AsyncConnection[Any]:
    """`current_connection`, for ``async def`` handlers of an `AsyncPostgresIdempotencyStore`.

    Raises:
        LookupError: Called outside a handler run with an `AsyncPostgresIdempotencyStore`,
            or after its delivery ended (from a task the handler started).
        RuntimeError: The delivery runs on a synchronous pool: use `current_connection`.
    """
    conn = _connection(
        "current_async_connection",
        "an AsyncPostgresIdempotencyStore",
        wrong_kind=psycopg.Connection,
        hint="this delivery runs on a ConnectionPool (PostgresIdempotencyStore): use current_connection()",
    )
    return cast("psycopg.AsyncConnection[Any]", conn)


def _connection(
    function: str, store: str, *, wrong_kind: type[object], hint: str
) -> psycopg.Connection[Any] | psycopg.AsyncConnection[Any]:
    """The open delivery's connection, or the error that says why ``function`` has none to give."""
    conn = _current()
    if conn is None:
        raise LookupError(
            f"{function}() is only available inside a webhook handler run by a Dispatcher "
            f"with {store}, while its delivery runs"
        )
    if isinstance(conn, wrong_kind):
        raise RuntimeError(hint)  # noqa: TRY004 - a misuse of the store, not a wrong argument
    return conn


class OpenDelivery(Generic[_Conn]):
    """One delivery's open transaction, from acquire to complete or release."""

    __slots__ = ("conn", "open", "transaction")

    def __init__(self, conn: _Conn, transaction: Any) -> None:  # noqa: ANN401 - psycopg's (Async)Transaction
        self.conn: _Conn = conn
        self.transaction = transaction
        self.open = True  # until complete or release: then current_connection() has none

    def end(self) -> _Conn:
        """The delivery is over: `current_connection` no longer hands its connection out."""
        self.open = False
        return self.conn
