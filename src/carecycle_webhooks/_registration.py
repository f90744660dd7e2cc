"""Registering handlers: `HandlerRegistration.on`, typed once for every class that takes handlers.

`Dispatcher` and the Flask extension both register handlers of the catalog's event types;
the overloads here make type checkers check a handler's parameter against its event type.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Literal, TypeVar, final, overload

from ._drivers import Handler
from ._errors import WebhookConfigurationError
from ._models import CallCompletedEvent, CustomerCreatedEvent, CustomerUpdatedEvent, EventType, UnknownEvent

__all__ = ["HandlerRegistration", "NotAnEventTypeOfTheCatalog", "check_handler"]

_CustomerCreatedHandler = TypeVar("_CustomerCreatedHandler", bound=Callable[[CustomerCreatedEvent], object])
_CustomerUpdatedHandler = TypeVar("_CustomerUpdatedHandler", bound=Callable[[CustomerUpdatedEvent], object])
_CallCompletedHandler = TypeVar("_CallCompletedHandler", bound=Callable[[CallCompletedEvent], object])
_AnyEventHandler = TypeVar(
    "_AnyEventHandler",
    bound=Callable[[CustomerCreatedEvent | CustomerUpdatedEvent | CallCompletedEvent | UnknownEvent], object],
)

_H = TypeVar("_H", bound=Handler)


@final
class NotAnEventTypeOfTheCatalog:
    """What type checkers see `Dispatcher.on` return for a string outside the catalog.

    It cannot decorate anything, so mypy and pyright report a misspelt event type, or
    any ``str`` that is not a literal of the catalog, where it is registered::

        @webhooks.on("customer.create")  # mypy: "NotAnEventTypeOfTheCatalog" not callable
        def created(event: CustomerCreatedEvent) -> None: ...

    At run time, `Dispatcher.on` raises `WebhookConfigurationError` for such a string
    instead, naming the closest event types: nothing of this class is ever made. For a
    ``str`` read at run time, pass ``EventType(value)``.
    """

    __slots__ = ()


class HandlerRegistration:
    """`on`, typed once for every class that registers handlers of the catalog's events.

    `Dispatcher` and the Flask extension both take handlers this way; each says how it
    keeps them (`_on`). The overloads make type checkers check a handler's parameter
    against its event type, and refuse a string outside the catalog.
    """

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        event_type: Literal["customer.created", EventType.CUSTOMER_CREATED] | type[CustomerCreatedEvent],
        /,
    ) -> Callable[[_CustomerCreatedHandler], _CustomerCreatedHandler]: ...
    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        event_type: Literal["customer.updated", EventType.CUSTOMER_UPDATED] | type[CustomerUpdatedEvent],
        /,
    ) -> Callable[[_CustomerUpdatedHandler], _CustomerUpdatedHandler]: ...
    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        event_type: Literal["call.completed", EventType.CALL_COMPLETED] | type[CallCompletedEvent],
        /,
    ) -> Callable[[_CallCompletedHandler], _CallCompletedHandler]: ...
    @overload
    def on(self, event_type: EventType, /) -> Callable[[_AnyEventHandler], _AnyEventHandler]: ...  # type: ignore[overload-overlap]
    @overload
    def on(self, event_type: str, /) -> NotAnEventTypeOfTheCatalog: ...
    def on(self, event_type: str | type[object], /) -> Callable[[_H], _H] | NotAnEventTypeOfTheCatalog:
        """Register the decorated function as a handler of one event type.

        Args:
            event_type: ``"customer.created"``, ``EventType.CUSTOMER_CREATED`` or
                ``CustomerCreatedEvent`` (likewise for the other events).

        Returns:
            A decorator that registers the handler and returns it unchanged. Type checkers
            reject a handler whose parameter does not accept the event, and a string that
            is not an event type of the catalog.

        Raises:
            WebhookConfigurationError: Not an event type of the catalog (the message names
                the closest ones), or the decorated object is not callable. Event types
                this version does not know reach the `catch_all` handlers as `UnknownEvent` s.
        """
        return self._on(event_type)

    def _on(self, event_type: object) -> Callable[[_H], _H]:
        raise NotImplementedError


def _binds_the_event(signature: inspect.Signature) -> bool:
    try:
        signature.bind(None)
    except TypeError:
        return False
    return True


def check_handler(handler: object) -> None:
    """Refuse, where it is registered, a handler that cannot be called as ``handler(event)``.

    Otherwise the mistake shows only when a delivery arrives, as a 500 whose log line hides
    the message of the ``TypeError`` (it may hold PHI).
    """
    if not callable(handler):
        raise WebhookConfigurationError(f"a handler must be callable, not {type(handler).__name__}")
    try:
        signature = inspect.signature(handler)
        if _binds_the_event(signature):
            return
        # A decorator made with functools.wraps shows the function it wraps, whose own
        # parameters it may fill (a session, a client): the wrapper's are the ones called.
        if _binds_the_event(inspect.signature(handler, follow_wrapped=False)):
            return
    except Exception:  # noqa: BLE001 - some callables show no signature: the call will tell
        return
    name = getattr(handler, "__qualname__", type(handler).__name__)
    # The parameters only: annotations may be strings (from __future__ import annotations).
    parameters = [
        parameter.replace(annotation=parameter.empty) for parameter in signature.parameters.values()
    ]
    shown = signature.replace(parameters=parameters, return_annotation=signature.empty)
    raise WebhookConfigurationError(
        f"the handler {name}{shown} cannot take the event: a handler is called with the "
        "event as its one positional argument, handler(event)"
    )
