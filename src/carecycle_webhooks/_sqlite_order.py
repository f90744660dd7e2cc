"""Customer order in `SQLiteIdempotencyStore` (``Dispatcher(skip_out_of_order=True)``).

A second table holds, per customer (`Order.key`), the newest ``updatedAt`` processed (its
mark) and which delivery holds the customer now (its lease). A step given an `Order`
runs its statements in one write transaction (``BEGIN IMMEDIATE``), so the delivery's row
and its customer's change together; a step without one runs the one statement it always
did (in `_sqlite`). The customers' rows are pruned with the expired ids, a slice at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._idempotency import CLAIM_IN_FLIGHT, CLAIM_STALE, Claim

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    from ._idempotency import Order

__all__ = ["ORDER_CLEAR", "ORDER_SCHEMA", "CustomerOrderSteps"]

_SLICE_ROWS = 1024  # of one sweep's slice, as for the ids' table (`_sqlite._PRUNE_SLICE_ROWS`)

# Customer order: one row per customer (`Order.key`). holder: the token of the delivery
# that holds the customer, or ''; position: the newest updatedAt processed (microseconds),
# which counts while mark_expires is to come. Times are Unix milliseconds.
ORDER_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS carecycle_webhooks_customer_order "
    "(key TEXT PRIMARY KEY NOT NULL, holder TEXT NOT NULL, lease_expires INTEGER NOT NULL, "
    "position INTEGER NOT NULL, mark_expires INTEGER NOT NULL) WITHOUT ROWID"
)
# Take the customer, unless another delivery's lease is live or a newer mark is (0 rows).
_ORDER_TAKE = (
    "INSERT INTO carecycle_webhooks_customer_order (key, holder, lease_expires, position, mark_expires) "
    "VALUES (?, ?, ?, 0, 0) "
    "ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, lease_expires = excluded.lease_expires "
    "WHERE lease_expires <= ? AND (mark_expires <= ? OR position <= ?)"
)
_ORDER_HELD = "SELECT lease_expires FROM carecycle_webhooks_customer_order WHERE key = ?"
# The mark moves forward only (a live one), its expiry is the done mark's; the customer's
# lease is freed if it is the completing delivery's. Every right side reads the old row.
_ORDER_MARK = (
    "INSERT INTO carecycle_webhooks_customer_order (key, holder, lease_expires, position, mark_expires) "
    "VALUES (?, '', 0, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET "
    "position = CASE WHEN mark_expires > ? AND position > excluded.position "
    "THEN position ELSE excluded.position END, "
    "mark_expires = excluded.mark_expires, "
    "holder = CASE WHEN holder = ? THEN '' ELSE holder END, "
    "lease_expires = CASE WHEN holder = ? THEN 0 ELSE lease_expires END"
)
_ORDER_FREE = (
    "UPDATE carecycle_webhooks_customer_order SET holder = '', lease_expires = 0 WHERE key = ? AND holder = ?"
)
ORDER_CLEAR = "DELETE FROM carecycle_webhooks_customer_order"
_ORDER_SLICE_END = (
    "SELECT key FROM carecycle_webhooks_customer_order WHERE key > ? ORDER BY key LIMIT 1 OFFSET ?"
)
_ORDER_PRUNE_SLICE = (
    "DELETE FROM carecycle_webhooks_customer_order "
    "WHERE key > ? AND key <= ? AND lease_expires <= ? AND mark_expires <= ?"
)
_ORDER_PRUNE_LAST_SLICE = (
    "DELETE FROM carecycle_webhooks_customer_order WHERE key > ? AND lease_expires <= ? AND mark_expires <= ?"
)


class CustomerOrderSteps:
    """The store's steps with a customer's order; `SQLiteIdempotencyStore` inherits them."""

    _clock: Callable[[], int]
    _ordered: bool  # whether this process was given an order: then it sweeps customers' rows
    _order_sweep_after: str

    # The store's own steps, which these wrap.
    def _take(self, connection: sqlite3.Connection, key: str, token: str, lease_ms: int) -> Claim:
        raise NotImplementedError

    def _mark_done(self, connection: sqlite3.Connection, key: str, token: str, ttl_ms: int) -> int:
        raise NotImplementedError

    @staticmethod
    def _free(connection: sqlite3.Connection, key: str, token: str) -> None:
        raise NotImplementedError

    def _prune_customers(self, connection: sqlite3.Connection) -> None:
        """Delete the customers' rows of the next slice whose lease and mark both expired."""
        start, now = self._order_sweep_after, self._clock()
        row = connection.execute(_ORDER_SLICE_END, (start, _SLICE_ROWS - 1)).fetchone()
        if row is None:
            connection.execute(_ORDER_PRUNE_LAST_SLICE, (start, now, now))
            self._order_sweep_after = ""
        else:
            connection.execute(_ORDER_PRUNE_SLICE, (start, row[0], now, now))
            self._order_sweep_after = row[0]

    # The same steps with a customer's order, each in one write transaction: BEGIN
    # IMMEDIATE takes the write lock first (waiting for it on a waiting connection, failing
    # at once on a quick one), so nothing is written unless the whole step is.

    def _take_customer(
        self, connection: sqlite3.Connection, key: str, token: str, lease_ms: int, order: Order
    ) -> Claim:
        """`_take`, then the customer's lease; inside a transaction that a refusal rolls back."""
        self._ordered = True  # its rows are swept from now on
        claim = self._take(connection, key, token, lease_ms)
        if not claim.token:
            return claim  # done or in flight: the id's answer comes first
        now = self._clock()
        taken = connection.execute(_ORDER_TAKE, (order.key, token, now + lease_ms, now, now, order.position))
        if taken.rowcount:
            return claim
        row = connection.execute(_ORDER_HELD, (order.key,)).fetchone()
        return CLAIM_IN_FLIGHT if row is not None and row[0] > now else CLAIM_STALE

    def _take_ordered(
        self, connection: sqlite3.Connection, key: str, token: str, lease_ms: int, order: Order
    ) -> Claim:
        connection.execute("BEGIN IMMEDIATE")
        try:
            claim = self._take_customer(connection, key, token, lease_ms, order)
            if claim.token:
                connection.execute("COMMIT")
            return claim
        finally:
            if connection.in_transaction:
                connection.rollback()  # refused: the id's lease is not kept either

    def _mark_done_ordered(
        self, connection: sqlite3.Connection, key: str, token: str, ttl_ms: int, order: Order
    ) -> None:
        connection.execute("BEGIN IMMEDIATE")
        try:
            # The customer's mark moves only with the id's done mark (not over another's lease).
            if self._mark_done(connection, key, token, ttl_ms):
                now = self._clock()
                connection.execute(_ORDER_MARK, (order.key, order.position, now + ttl_ms, now, token, token))
            connection.execute("COMMIT")
        finally:
            if connection.in_transaction:
                connection.rollback()

    def _free_ordered(self, connection: sqlite3.Connection, key: str, token: str, order: Order) -> None:
        connection.execute("BEGIN IMMEDIATE")
        try:
            self._free(connection, key, token)
            connection.execute(_ORDER_FREE, (order.key, token))  # the mark stays as it was
            connection.execute("COMMIT")
        finally:
            if connection.in_transaction:
                connection.rollback()
