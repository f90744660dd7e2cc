"""The done marks of `DjangoIdempotencyStore`, as a Django model (``migrate`` creates its table)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models

if TYPE_CHECKING:
    import datetime

__all__ = ["CustomerMark", "ProcessedWebhook"]


class ProcessedWebhook(models.Model):
    """A ``webhook-id`` whose handlers succeeded, committed with their writes.

    One row per processed delivery, kept until ``expires_at`` (the dispatcher's
    ``done_ttl``, 48 hours by default: longer than Svix's retries), then pruned. A delivery
    in flight has no row: its database transaction holds the id, and a worker that dies
    leaves nothing behind.
    """

    # Annotated for type checkers that run without django-stubs' mypy plugin. The id is at
    # most 256 characters (the verifier's bound); pruning reads the oldest expires_at first.
    webhook_id: models.CharField[str, str] = models.CharField(primary_key=True, max_length=256)
    done_at: models.DateTimeField[datetime.datetime, datetime.datetime] = models.DateTimeField()
    expires_at: models.DateTimeField[datetime.datetime, datetime.datetime] = models.DateTimeField(
        db_index=True
    )

    class Meta:  # noqa: D106 - Django's model options
        db_table = "carecycle_webhooks_processed"
        verbose_name = "processed webhook"

    def __str__(self) -> str:
        """The ``webhook-id``."""
        return self.webhook_id


class CustomerMark(models.Model):
    """A customer's newest ``updatedAt`` processed (``Dispatcher(skip_out_of_order=True)``).

    One row per customer (its id, or ``tenant/customer-id``), written in the same
    transaction as the done mark of the delivery that processed it and kept as long;
    ``updated_at_us`` is in microseconds since the epoch. An older update of the customer
    is then acknowledged as ``"stale"`` without running its handlers.
    """

    customer_key: models.CharField[str, str] = models.CharField(primary_key=True, max_length=256)
    updated_at_us: models.BigIntegerField[int, int] = models.BigIntegerField()
    expires_at: models.DateTimeField[datetime.datetime, datetime.datetime] = models.DateTimeField(
        db_index=True
    )

    class Meta:  # noqa: D106 - Django's model options
        db_table = "carecycle_webhooks_customer_marks"
        verbose_name = "customer mark"

    def __str__(self) -> str:
        """The customer's key."""
        return self.customer_key
