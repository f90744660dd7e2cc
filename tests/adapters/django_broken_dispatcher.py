"""A project's webhooks module that raises while it is imported, with words that must not be echoed."""

from __future__ import annotations

raise RuntimeError("patient 555-0100 not found")  # a message the system check must not repeat
