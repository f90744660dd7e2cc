"""The SQL of the PostgreSQL stores (`_postgres`), built once per store from its table's name.

Also how the answers of a customer's statements read (`customer_claim`).
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from psycopg import sql

from ._idempotency import CLAIM_IN_FLIGHT, CLAIM_STALE

if TYPE_CHECKING:
    from typing_extensions import LiteralString

    from ._idempotency import Claim, Order

__all__ = ["Statements", "customer_claim"]


def _schema_sql() -> str:
    """postgres.sql, shipped in the package: the tables' definitions, with placeholders."""
    return resources.files("carecycle_webhooks").joinpath("postgres.sql").read_text(encoding="utf-8")


def _prune(table: sql.Identifier, key: LiteralString) -> sql.Composed:
    """Delete at most ``%s`` expired rows of ``table``, the oldest first, skipping locked ones."""
    return sql.SQL(
        "DELETE FROM {t} WHERE {k} IN (SELECT {k} FROM {t} WHERE expires_at < now() "
        "ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)"
    ).format(t=table, k=sql.Identifier(key))


class Statements:
    """A store's statements for its table (``name`` or ``schema.name``, already checked).

    The customer marks of ``skip_out_of_order`` have a table of their own, named after the
    done marks' table with ``_marks`` added, in the same schema.
    """

    __slots__ = ("check", "create", "keep_mark", "mark", "marks_name", "prune", "prune_marks", "read_mark")

    def __init__(self, parts: list[str]) -> None:
        ident = sql.Identifier(*parts)
        marks = sql.Identifier(*parts[:-1], f"{parts[-1]}_marks")
        # The marks table's name as to_regclass reads it (an identifier holds no quote).
        self.marks_name = ".".join(f'"{part}"' for part in [*parts[:-1], f"{parts[-1]}_marks"])
        # The package's own file, not input: a literal in all but name.
        query = cast("LiteralString", _schema_sql())  # type: ignore[redundant-cast]  # for pyright
        # An index is created in its table's schema: its name is never qualified.
        self.create = sql.SQL(query).format(
            table=ident,
            index=sql.Identifier(f"{parts[-1]}_expires_at"),
            marks=marks,
            marks_index=sql.Identifier(f"{parts[-1]}_marks_expiry"),
        )
        self.check = sql.SQL("SELECT expires_at > now() FROM {} WHERE webhook_id = %s").format(ident)
        self.mark = sql.SQL(
            "INSERT INTO {} (webhook_id, expires_at) VALUES (%s, now() + make_interval(secs => %s)) "
            "ON CONFLICT (webhook_id) DO UPDATE "
            "SET done_at = EXCLUDED.done_at, expires_at = EXCLUDED.expires_at"
        ).format(ident)
        self.prune = _prune(ident, "webhook_id")
        self.read_mark = sql.SQL(
            "SELECT updated_at_us FROM {} WHERE customer_key = %s AND expires_at > now()"
        ).format(marks)
        # Forward only, unless the old mark expired. The customer's advisory lock is held: no
        # other delivery of ours writes this row now, so the upsert does not wait.
        self.keep_mark = sql.SQL(
            "INSERT INTO {} AS m (customer_key, updated_at_us, expires_at) "
            "VALUES (%s, %s, now() + make_interval(secs => %s)) ON CONFLICT (customer_key) DO UPDATE "
            "SET updated_at_us = CASE WHEN m.expires_at > now() "
            "THEN greatest(m.updated_at_us, EXCLUDED.updated_at_us) ELSE EXCLUDED.updated_at_us END, "
            "expires_at = EXCLUDED.expires_at"
        ).format(marks)
        self.prune_marks = _prune(marks, "customer_key")

    def done(
        self, key: str, seconds: float, order: Order | None
    ) -> list[tuple[sql.Composed, tuple[object, ...]]]:
        """The statements that mark ``key`` done and move ``order``'s mark forward (never back)."""
        statements: list[tuple[sql.Composed, tuple[object, ...]]] = [(self.mark, (key, seconds))]
        if order is not None:
            statements.append((self.keep_mark, (order.key, order.position, seconds)))
        return statements


def customer_claim(
    locked: tuple[Any, ...] | None, mark: tuple[Any, ...] | None, order: Order
) -> Claim | None:
    """In flight while another transaction holds the customer; stale if a newer update committed.

    ``None``: the delivery goes on. ``locked`` and ``mark`` are the rows of the customer's
    lock and of `Statements.read_mark`.
    """
    if not (locked and locked[0]):
        return CLAIM_IN_FLIGHT
    if mark is not None and mark[0] > order.position:
        return CLAIM_STALE
    return None
