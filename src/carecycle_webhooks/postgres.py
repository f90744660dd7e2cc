"""PostgreSQL idempotency store: exactly-once effects, in your own database's transactions.

::

    from psycopg_pool import ConnectionPool

    from carecycle_webhooks import Dispatcher
    from carecycle_webhooks.postgres import PostgresIdempotencyStore, current_connection

    pool = ConnectionPool("postgresql://app@db/app", kwargs={"connect_timeout": 5}, open=True)
    store = PostgresIdempotencyStore(pool)
    store.create_table()
    webhooks = Dispatcher("whsec_...", idempotency_store=store)

    @webhooks.on("customer.created")
    def save(event: CustomerCreatedEvent) -> None:
        current_connection().execute("INSERT INTO customers ...", (...))

A delivery runs inside ONE transaction of one pooled connection, which holds its
``webhook-id``: ``acquire`` begins it and takes a transaction-scoped advisory lock on the
id without waiting (``pg_try_advisory_xact_lock``: a concurrent copy is answered 409 at
once, never blocks a worker), then looks for the id's done row. The handlers write through
`current_connection` (or `current_async_connection`), in that transaction; ``complete``
inserts the done row and commits: the done mark commits with the handlers' writes, or not
at all. ``release`` (a handler raised) rolls it all back and frees the id. A worker killed
mid-handler closes its connection: PostgreSQL rolls back and frees the lock, and nothing
remains, no lease to wait out.

Customer order (``Dispatcher(skip_out_of_order=True)``): with a customer event, ``acquire``
also tries an advisory lock on the customer (another delivery of it: 409 at once) and reads
its newest mark after it (a newer one: answered ``"stale"``, nothing kept), in the same
round trip; ``complete`` moves the mark forward (never back) in the same transaction as the
done row. The marks have a table of their own, the store's table name with ``_marks`` added.

A commit that fails (a deferred constraint, the server gone) raises `CommitFailed`: the
delivery is answered 503 and Svix's retry runs the handlers again. A commit whose outcome
is unknown (the connection lost while the ``COMMIT`` was on its way) raises it too: the
done row is the truth, and the retry finds it (a duplicate, 200) or not (the handlers run).

Two classes, one per kind of pool, rather than one class for both: each serves exactly
one entry point (`PostgresIdempotencyStore` `Dispatcher.handle`, `AsyncPostgresIdempotencyStore`
`Dispatcher.handle_async`), so an adapter refuses the wrong one where the view is built,
and each hands its handlers a connection of the exact type they can use.

Every store call has a deadline (``timeout``): the pool's wait for a connection, and the
statements (a `Watchdog` shuts the socket of a stalled server down). The handlers' part
is bounded by the dispatcher's ``lease``: past it, their connection is shut down too, and
the server ends a transaction idle for longer (``idle_in_transaction_session_timeout``).
"""

from __future__ import annotations

try:
    import psycopg
    import psycopg_pool
except ImportError:
    raise ImportError(
        "carecycle_webhooks.postgres needs psycopg and psycopg-pool: "
        "pip install 'carecycle-webhooks[postgres]'"
    ) from None

from ._postgres import DEFAULT_TABLE, DEFAULT_TIMEOUT, AsyncPostgresIdempotencyStore, PostgresIdempotencyStore
from ._postgres_context import current_async_connection, current_connection

del psycopg, psycopg_pool  # imported above only to say which extra is missing

__all__ = [
    "DEFAULT_TABLE",
    "DEFAULT_TIMEOUT",
    "AsyncPostgresIdempotencyStore",
    "PostgresIdempotencyStore",
    "current_async_connection",
    "current_connection",
]
