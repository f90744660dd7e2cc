"""What the framework-free adapters (`asgi`, `wsgi`, `aws_lambda`) share.

They have no framework to route by method, so each answers other methods than POST
itself, with the adapters' JSON 405 and an ``Allow`` header.
"""

from __future__ import annotations

import types

from ._responses import JSON_HEADERS, METHOD_NOT_ALLOWED, WebhookResponse

__all__ = ["POST_ONLY"]

POST_ONLY = WebhookResponse(
    METHOD_NOT_ALLOWED.status_code,
    METHOD_NOT_ALLOWED.body,
    types.MappingProxyType({**JSON_HEADERS, "allow": "POST"}),
)
"""The 405 answer to a request with another method than POST, saying ``Allow: POST``."""
