"""`document_webhooks`: the careCycle events in a FastAPI app's OpenAPI document, as 3.1 webhooks.

FastAPI documents ``app.webhooks`` routes from their endpoints' signatures: each event gets a
never-called endpoint whose body parameter is the event model and whose header parameters
are the signature headers.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' signatures at runtime.

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, cast

from ._models import EVENT_MODELS

if TYPE_CHECKING:
    from fastapi import FastAPI
    from pydantic import BaseModel

__all__ = ["document_webhooks"]


# What the status table's answers mean to the sender, for the OpenAPI document.
_DOCUMENTED_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "Missing or malformed signature headers, no matching signature, or a stale timestamp."
    },
    404: {"description": "No such tenant: the receiver's secret resolver does not know the URL's tenant."},
    409: {"description": "This webhook-id is being processed by another worker: retry later."},
    413: {"description": "The body is larger than the receiver accepts."},
    422: {"description": "Correctly signed, but not a valid careCycle event."},
    500: {"description": "A handler failed: retry later."},
    503: {
        "description": "The receiver cannot take it now (idempotency store, body budget, secret "
        "resolver): retry later."
    },
}


@functools.cache
def _built(model: "type[BaseModel]") -> "type[BaseModel]":
    """``model`` under its own name, built now rather than deferred.

    FastAPI wraps a body model in a TypeAdapter that inherits the model's ``defer_build``
    and, built later by ``app.openapi()``, makes pydantic warn that the body's alias has
    no effect. The fields, validators and JSON Schema are the model's own.
    """
    namespace = {
        "model_config": {**model.model_config, "defer_build": False},
        "__doc__": model.__doc__,
        "__module__": model.__module__,
        "__qualname__": model.__qualname__,
    }
    metaclass: Any = type(model)  # pydantic's ModelMetaclass, which builds the subclass
    return cast("type[BaseModel]", metaclass(model.__name__, (model,), namespace))


def _documented_endpoint(model: "type[BaseModel]") -> Callable[..., None]:
    """A never-called endpoint whose signature FastAPI documents: the event as the body, and the headers."""
    from fastapi import Header

    def header(description: str) -> object:
        return Annotated[str, Header(description=description)]

    parameters = [
        inspect.Parameter("event", inspect.Parameter.KEYWORD_ONLY, annotation=_built(model)),
        inspect.Parameter(
            "webhook_id",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=header("The message's id: the same on every retry of one message (svix-id)."),
        ),
        inspect.Parameter(
            "webhook_timestamp",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=header("When this attempt was signed, in seconds since the epoch (svix-timestamp)."),
        ),
        inspect.Parameter(
            "webhook_signature",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=header(
                "Space-separated v1,<base64> HMAC-SHA256 signatures of id.timestamp.body (svix-signature)."
            ),
        ),
    ]

    def endpoint(**_: object) -> None:  # pragma: no cover - documentation only, never routed
        raise NotImplementedError

    endpoint.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    return endpoint


def document_webhooks(app: "FastAPI") -> None:
    """Document the careCycle events in ``app``'s OpenAPI document, as OpenAPI 3.1 ``webhooks``.

    ::

        app = FastAPI()
        document_webhooks(app)

    Each event type of the catalog (``customer.created``, ``customer.updated``,
    ``call.completed``) becomes an entry of the document's ``webhooks``: a ``POST`` whose
    request body is the event's JSON Schema (its models' wire names, the ``x-phi`` marks of
    the fields holding PHI, no examples), with the signature headers and the status table's
    answers. This documents what careCycle sends; it routes nothing (``app.webhooks`` is
    documentation only): receive deliveries with `webhook_router` or `webhook_view`.

    Args:
        app: The FastAPI application (its ``openapi_version`` is 3.1 by default).
    """
    for event_type, model in EVENT_MODELS.items():
        app.webhooks.add_api_route(
            event_type,
            _documented_endpoint(model),
            methods=["POST"],
            name=event_type,
            operation_id=event_type.replace(".", "_"),
            summary=event_type,
            description=(model.__doc__ or "").strip().replace("``", "`"),
            response_description="Received: processed, ignored (no handler), a duplicate, stale (a newer "
            "update of the customer was processed) or about a test customer.",
            responses=_DOCUMENTED_ANSWERS,
            tags=["careCycle webhooks"],
        )
