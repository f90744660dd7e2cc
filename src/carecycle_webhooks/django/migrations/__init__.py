"""The migrations of the ``carecycle_webhooks`` app."""
