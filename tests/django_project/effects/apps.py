"""The app of the project's `Effect` rows."""

from __future__ import annotations

from django.apps import AppConfig


class EffectsConfig(AppConfig):
    """The app holding `Effect` and its migration."""

    name = "tests.django_project.effects"
    label = "runner_effects"
    default_auto_field = "django.db.models.BigAutoField"
