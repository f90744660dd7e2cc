"""The done marks of `DjangoIdempotencyStore`, as a Django model (``migrate`` creates its table)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models

if TYPE_CHECKING:
    import datetime

__all__ = ["CustomerMark", "ProcessedWebhook"]


class _Expiring(models.Model):
    """A row kept until ``expires_at``, then pruned; pruning reads the oldest first."""

    expires_at: models.DateTimeField[datetime.datetime, datetime.datetime] = models.DateTimeField(
        db_index=True
    )

    class Meta:
        abstract = True

    def __str__(self) -> str:
        """The row's key."""
        return str(self.pk)


class ProcessedWebhook(_Expiring):
    """A ``webhook-id`` whose handlers succeeded, committed with their writes.

    One row per processed delivery, kept until ``expires_at`` (the dispatcher's
    ``done_ttl``, 48 hours by default: longer than Svix's retries), then pruned. A delivery
    in flight has no row: its database transaction holds the id, and a worker that dies
    leaves nothing behind.
    """

    # Annotated for type checkers that run without django-stubs' mypy plugin. The id is at
    # most 256 characters (the verifier's bound).
    webhook_id: models.CharField[str, str] = models.CharField(primary_key=True, max_length=256)
    done_at: models.DateTimeField[datetime.datetime, datetime.datetime] = models.DateTimeField()

    class Meta(_Expiring.Meta):  # noqa: D106 - Django's model options (abstract=False: Django sets it)
        db_table = "carecycle_webhooks_processed"
        verbose_name = "processed webhook"


class CustomerMark(_Expiring):
    """A customer's newest ``updatedAt`` processed (``Dispatcher(skip_out_of_order=True)``).

    One row per customer (its id, or ``tenant/customer-id``), written in the same
    transaction as the done mark of the delivery that processed it and kept as long;
    ``updated_at_us`` is in microseconds since the epoch. An older update of the customer
    is then acknowledged as ``"stale"`` without running its handlers.
    """

    customer_key: models.CharField[str, str] = models.CharField(primary_key=True, max_length=256)
    updated_at_us: models.BigIntegerField[int, int] = models.BigIntegerField()

    class Meta(_Expiring.Meta):  # noqa: D106 - Django's model options (abstract=False: Django sets it)
        db_table = "carecycle_webhooks_customer_marks"
        verbose_name = "customer mark"
