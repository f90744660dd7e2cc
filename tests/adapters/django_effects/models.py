"""What the handlers of the Django store tests write: one `Effect` row per handled event."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models

if TYPE_CHECKING:
    import uuid


class Effect(models.Model):
    """One handler run whose writes committed: the event's id and its delivery's ``webhook-id``."""

    webhook_id: models.CharField[str, str] = models.CharField(max_length=256)
    event_id: models.UUIDField[uuid.UUID, uuid.UUID] = models.UUIDField()

    class Meta:
        app_label = "django_effects"

    def __str__(self) -> str:
        return self.webhook_id


class Unique(models.Model):
    """A value that must be unique when the transaction commits (checked at COMMIT, on PostgreSQL)."""

    value: models.CharField[str, str] = models.CharField(max_length=64)

    class Meta:
        app_label = "django_effects"
        constraints = (
            models.UniqueConstraint(
                fields=["value"], name="unique_at_commit", deferrable=models.Deferrable.DEFERRED
            ),
        )

    def __str__(self) -> str:
        return self.value
