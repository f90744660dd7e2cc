"""What the project's handlers write: one `Effect` row per handled event."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models

if TYPE_CHECKING:
    import uuid


class Effect(models.Model):
    """One handler run whose writes committed: its delivery's ``webhook-id`` and the event's id.

    No unique constraint on purpose: a second run of a handler would show as a second row.
    """

    webhook_id: models.CharField[str, str] = models.CharField(max_length=256)
    event_id: models.UUIDField[uuid.UUID, uuid.UUID] = models.UUIDField()

    class Meta:
        app_label = "runner_effects"

    def __str__(self) -> str:
        return self.webhook_id
