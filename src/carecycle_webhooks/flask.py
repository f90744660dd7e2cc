"""Flask adapter: receive careCycle webhooks in a Flask application.

Either the extension, configured from ``app.config`` (application factories welcome)::

    from flask import Flask

    from carecycle_webhooks.flask import CareCycleWebhooks

    webhooks = CareCycleWebhooks()

    @webhooks.on("customer.created")
    def created(event: CustomerCreatedEvent) -> None: ...

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["CARECYCLE_WEBHOOK_SECRET"] = "whsec_..."
        webhooks.init_app(app)  # POST /webhooks
        return app

or the view of a `Dispatcher` you built yourself::

    from flask import Flask

    from carecycle_webhooks import Dispatcher
    from carecycle_webhooks.flask import webhook_view

    webhooks = Dispatcher("whsec_...")
    app = Flask(__name__)
    app.add_url_rule("/webhooks", view_func=webhook_view(webhooks), methods=["POST"])

The view reads the raw request body, at most ``dispatcher.max_body_size`` bytes of it,
hands it to `Dispatcher.handle` and turns the answer into a Flask response: the status
codes are the dispatcher's, the same in every adapter.
"""

from __future__ import annotations

try:
    import flask
    from werkzeug.exceptions import RequestEntityTooLarge
except ImportError:
    raise ImportError(
        "carecycle_webhooks.flask needs Flask: pip install 'carecycle-webhooks[flask]'"
    ) from None

import os
import re
import time
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._adapters import (
    METHOD_NOT_ALLOWED,
    body_too_large,
    check_dispatcher,
    client_disconnected,
    content_type_and_headers,
    path_tenant,
    read_body,
    reservation_for,
    tenant_refused,
)
from ._config import SECRET_ENV, new_secret
from ._dispatch import DEFAULT_MAX_BODY_SIZE, Dispatcher
from ._errors import WebhookConfigurationError
from ._registration import HandlerRegistration
from ._telemetry import observed_refusal

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._dispatch import (
        _H,  # pyright: ignore[reportPrivateUsage]
        _AnyEventHandler,  # pyright: ignore[reportPrivateUsage]
    )
    from ._idempotency import IdempotencyStore
    from ._models import Event
    from ._responses import WebhookResponse
    from ._tenants import SecretResolver

__all__ = ["CareCycleWebhooks", "webhook_view"]

_Resolver = TypeVar("_Resolver", bound="SecretResolver")


def _current_request() -> flask.Request:
    # Unwrapped once: every attribute read through Flask's request proxy costs a lookup.
    # _get_current_object() is Werkzeug's documented way to unwrap a LocalProxy.
    proxy: Any = flask.request
    return cast("flask.Request", proxy._get_current_object())  # noqa: SLF001


def _to_flask(response: WebhookResponse) -> flask.Response:
    content_type, headers = content_type_and_headers(response)
    converted = flask.Response(response.body, status=response.status_code, content_type=content_type)
    for name, value in headers:
        converted.headers[name] = value
    return converted


def webhook_view(
    dispatcher: Dispatcher, *, name: str = "carecycle_webhooks"
) -> Callable[..., flask.Response]:
    """A Flask view function that verifies and dispatches careCycle deliveries.

    Register it for ``POST``::

        app.add_url_rule("/webhooks", view_func=webhook_view(webhooks), methods=["POST"])

    The view also says ``methods = ["POST"]`` itself, so ``methods`` may be left out. A
    ``Content-Length`` above ``dispatcher.max_body_size`` is answered 413 before anything
    is read, and no more than ``max_body_size + 1`` bytes are ever read from the stream,
    so a chunked or lying request cannot make the view read more. Flask's own
    ``MAX_CONTENT_LENGTH``, when set lower, still applies and is answered 413 too. A
    delivery that does not fit in ``dispatcher.body_budget`` (the bodies being read at
    once, under a threaded server) is answered 503 with ``Retry-After`` before its body is read.

    Args:
        dispatcher: The `Dispatcher` whose handlers run. Its idempotency store must be
            usable synchronously (not a `RedisIdempotencyStore` with an asyncio client).
        name: The view's ``__name__``, which Flask uses as the endpoint name (for
            ``url_for``) when ``add_url_rule`` is given none. Endpoint names are unique
            per application: give each webhook view of one app its own ``name`` (or pass
            ``endpoint=`` to ``add_url_rule``).

    For many tenants on one endpoint, route it with a ``tenant`` variable: the view hands
    its value to ``dispatcher.handle(..., tenant=...)``. A tenant that the dispatcher's
    secret resolver does not know is answered 404 before the body is read::

        app.add_url_rule("/webhooks/<tenant>", view_func=webhook_view(webhooks))

    Returns:
        The view function. URL variables of the rule other than ``tenant`` are accepted
        and ignored.

    Raises:
        WebhookConfigurationError: ``dispatcher`` is not a `Dispatcher`, or its
            idempotency store only works under asyncio.
    """
    dispatcher = check_dispatcher(dispatcher, "Flask", synchronous=True)

    def carecycle_webhook(**url_values: object) -> flask.Response:
        """Receive a careCycle webhook delivery."""
        request = _current_request()
        if request.method != "POST":  # routed for more methods than POST
            response = _to_flask(METHOD_NOT_ALLOWED)
            response.headers["Allow"] = "POST"
            return response
        tenant = path_tenant(url_values.get("tenant"))
        refused = tenant_refused(dispatcher, tenant)
        if refused is not None:  # an unknown tenant: its body is not read
            return _to_flask(refused)
        limit = dispatcher.max_body_size
        reservation = reservation_for(dispatcher)
        started = time.perf_counter()
        try:
            try:
                # content_length is None when absent or chunked.
                body = read_body(
                    request.stream.read, declared=request.content_length, limit=limit, reservation=reservation
                )
            except RequestEntityTooLarge:
                # The application's MAX_CONTENT_LENGTH is lower than our limit.
                body = body_too_large(min(limit, request.max_content_length or limit))
            except Exception as error:  # noqa: BLE001 - the client went away mid-body, or the server failed to read it
                body = client_disconnected(error)
            if not isinstance(body, bytes):
                return _to_flask(observed_refusal(body, started))
            if tenant is None:
                return _to_flask(dispatcher.handle(body, request.headers))
            return _to_flask(dispatcher.handle(body, request.headers, tenant=tenant))
        finally:
            reservation.close()

    view = carecycle_webhook
    view.__name__ = view.__qualname__ = name
    view.methods = ("POST",)  # type: ignore[attr-defined]  # read by Flask's add_url_rule
    return view


# The app.config keys the extension reads (the secret's is the environment variable's name too).
_SECRET_SETTING = "CARECYCLE_WEBHOOK_SECRET"  # noqa: S105 - the name of the setting, not a secret
_URL_RULE_SETTING = "CARECYCLE_WEBHOOK_URL_RULE"
_MAX_BODY_SIZE_SETTING = "CARECYCLE_WEBHOOK_MAX_BODY_SIZE"
_EXTENSION = "carecycle_webhooks"
# A rule's tenant variable, with or without a converter: <tenant>, <string:tenant>, <uuid:tenant>.
_TENANT_VARIABLE = re.compile(r"<(?:[^<>:]+:)?tenant>")


class _AppDispatcher(Dispatcher):
    """One application's dispatcher: its own secret and store, the extension's handlers."""

    def __init__(
        self,
        handlers: Dispatcher,
        secret: list[str] | SecretResolver,
        *,
        idempotency_store: IdempotencyStore | None,
        max_body_size: int,
    ) -> None:
        super().__init__(secret, idempotency_store=idempotency_store, max_body_size=max_body_size)
        self._registry = handlers

    def __repr__(self) -> str:
        return repr(self._registry)

    def handlers_for(self, event: Event) -> tuple[Callable[..., object], ...]:
        # Looked up at each delivery: handlers registered after init_app run too.
        return self._registry.handlers_for(event)


def _registry() -> Dispatcher:
    # Handlers are registered before any application, and so before any secret, is known.
    # This dispatcher only holds them: it never verifies a delivery, so its secret is a
    # random one that nobody knows.
    return Dispatcher(new_secret())


def _secret(app: flask.Flask) -> list[str]:
    config = cast("dict[str, object]", app.config)  # Flask types its Config as a bare dict
    value = config.get(_SECRET_SETTING)
    if value is None:
        value = os.environ.get(SECRET_ENV)
    if isinstance(value, str):
        value = value.split()  # several, separated by whitespace, while one is rotated
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, str) for item in value):  # pyright: ignore[reportUnknownVariableType]
        return list(cast("list[str] | tuple[str, ...]", value))
    # Never the value itself: it is a secret.
    raise WebhookConfigurationError(
        f"CareCycleWebhooks.init_app() needs the endpoint's secret: set app.config[{_SECRET_SETTING!r}] "
        f"(a 'whsec_...' string, several separated by spaces, or a list of them), or the "
        f"{SECRET_ENV} environment variable"
    )


def _check_tenant_setup(app: flask.Flask, rule: object) -> None:
    """With a secret resolver: a rule with a tenant variable, and no endpoint secret beside it."""
    if not isinstance(rule, str) or _TENANT_VARIABLE.search(rule) is None:
        # Every delivery would be answered 404: the tenant would never be known.
        raise WebhookConfigurationError(
            f"with a secret resolver, app.config[{_URL_RULE_SETTING!r}] must have a <tenant> "
            f"variable, e.g. '/webhooks/<tenant>', not {rule!r}"
        )
    if _SECRET_SETTING in app.config:
        raise WebhookConfigurationError(
            f"this extension has a secret resolver: app.config[{_SECRET_SETTING!r}] would not be "
            "used; remove it (each tenant's secret comes from the resolver)"
        )


class CareCycleWebhooks(HandlerRegistration):
    """The Flask extension: handlers registered once, the secret and the route from ``app.config``.

    Made at module level and bound to each application with `init_app`, as Flask
    extensions are, so it works with the application factory pattern::

        webhooks = CareCycleWebhooks()

        @webhooks.on("call.completed")
        def call_completed(event: CallCompletedEvent) -> None: ...

        def create_app() -> Flask:
            app = Flask(__name__)
            app.config.from_prefixed_env()  # or from_object, from_pyfile...
            webhooks.init_app(app)
            return app

    `init_app` reads these keys of ``app.config``:

    - ``CARECYCLE_WEBHOOK_SECRET``: the endpoint's ``whsec_...`` secret, several separated
      by spaces (or a list) while one is rotated. When the key is absent, the
      ``CARECYCLE_WEBHOOK_SECRET`` environment variable; when both are, a
      `WebhookConfigurationError` at start-up.
    - ``CARECYCLE_WEBHOOK_URL_RULE``: where deliveries are received, ``"/webhooks"`` by
      default (``"/webhooks/<tenant>"`` with a `secret_resolver`).
    - ``CARECYCLE_WEBHOOK_MAX_BODY_SIZE``: bodies larger than this many bytes are answered
      413 (10 MiB by default).

    Each application gets its own `Dispatcher` (`dispatcher` inside a request or app
    context, `dispatcher_for` outside), built from its config, and running the handlers
    registered here, including those registered after `init_app`. Its view is
    `webhook_view`'s, at the endpoint ``"carecycle_webhooks"`` (for ``url_for``).

    For many tenants on one endpoint, register the function that gives a tenant's secrets
    with `secret_resolver`, before `init_app`: each application then receives at
    ``/webhooks/<tenant>``, and needs no ``CARECYCLE_WEBHOOK_SECRET``.

    Args:
        app: An application to bind at once; or none, and `init_app` later.
        idempotency_store: Where processed ``webhook-id`` s are remembered, for every
            application bound (`init_app` can give one its own). ``None`` runs the handlers
            for every delivery, duplicates included.
        endpoint: The endpoint name of the view.
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        idempotency_store: IdempotencyStore | None = None,
        endpoint: str = _EXTENSION,
    ) -> None:
        """Create the extension, and bind ``app`` at once when one is given."""
        self._handlers = _registry()
        self._store = idempotency_store
        self._endpoint = endpoint
        self._resolver: SecretResolver | None = None
        self._bound = False
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        """The handlers registered, by event type."""
        return f"CareCycleWebhooks({self._handlers!r})"

    def _on(self, event_type: object) -> Callable[[_H], _H]:
        # on() is `Dispatcher.on`'s (the same overloads): the registry dispatcher checks
        # the event type and keeps the handler.
        return self._handlers._on(event_type)  # noqa: SLF001  # pyright: ignore[reportPrivateUsage] - a dispatcher of this package

    def catch_all(self, handler: _AnyEventHandler) -> _AnyEventHandler:
        """Register the decorated function for every event without a handler: `Dispatcher.catch_all`.

        Returns:
            The handler, unchanged.
        """
        return self._handlers.catch_all(handler)

    def secret_resolver(self, resolver: _Resolver) -> _Resolver:
        """Register the decorated function as the tenants' secret resolver, before `init_app`.

        As Flask-Login's ``user_loader``::

            @webhooks.secret_resolver
            def tenant_secret(tenant: str) -> str | None:
                return SECRETS.get(tenant)  # None: an unknown tenant, answered 404

        It takes the ``tenant`` variable of the URL and returns that tenant's
        ``whsec_...`` secret, or several while one is rotated, or ``None``; it may be
        ``async def``. Its answers are kept for a minute (`Dispatcher`'s
        ``secret_cache_ttl``). Each application bound afterwards receives at
        ``/webhooks/<tenant>`` unless ``CARECYCLE_WEBHOOK_URL_RULE`` says where (the rule
        must have a ``<tenant>`` variable), and must not set ``CARECYCLE_WEBHOOK_SECRET``.

        Returns:
            The function, unchanged.

        Raises:
            WebhookConfigurationError: Not callable, or an application is bound already.
        """
        if not callable(resolver):
            raise WebhookConfigurationError(
                f"secret_resolver takes a function of the tenant key, not {type(resolver).__name__}"
            )
        if self._bound:
            raise WebhookConfigurationError(
                "register the secret resolver before CareCycleWebhooks.init_app(): an application "
                "bound already has its dispatcher and its route"
            )
        self._resolver = resolver
        return resolver

    def init_app(self, app: flask.Flask, *, idempotency_store: IdempotencyStore | None = None) -> None:
        """Bind an application: build its dispatcher from its config and add the webhook route.

        Args:
            app: The application.
            idempotency_store: This application's store, instead of the extension's (one
                per application built by a test's factory, say).

        Raises:
            WebhookConfigurationError: No secret, or an invalid one or another invalid
                option, or this extension is bound to ``app`` already.
        """
        if _EXTENSION in app.extensions:
            raise WebhookConfigurationError(
                "a CareCycleWebhooks extension is already bound to this Flask application"
            )
        config = cast("dict[str, Any]", app.config)  # Flask types its Config as a bare dict
        resolver = self._resolver
        config.setdefault(_URL_RULE_SETTING, "/webhooks" if resolver is None else "/webhooks/<tenant>")
        config.setdefault(_MAX_BODY_SIZE_SETTING, DEFAULT_MAX_BODY_SIZE)
        if resolver is not None:
            _check_tenant_setup(app, config[_URL_RULE_SETTING])
        dispatcher = _AppDispatcher(
            self._handlers,
            _secret(app) if resolver is None else resolver,
            idempotency_store=self._store if idempotency_store is None else idempotency_store,
            max_body_size=config[_MAX_BODY_SIZE_SETTING],
        )
        app.add_url_rule(
            config[_URL_RULE_SETTING],
            endpoint=self._endpoint,
            view_func=webhook_view(dispatcher, name=self._endpoint),
            methods=["POST"],
        )
        app.extensions[_EXTENSION] = dispatcher
        self._bound = True

    def dispatcher_for(self, app: flask.Flask) -> Dispatcher:
        """The dispatcher `init_app` built for ``app``.

        Raises:
            WebhookConfigurationError: ``app`` was not bound with `init_app`.
        """
        dispatcher = app.extensions.get(_EXTENSION)
        if not isinstance(dispatcher, Dispatcher):
            raise WebhookConfigurationError(
                "this Flask application has no CareCycleWebhooks: call webhooks.init_app(app) first"
            )
        return dispatcher

    @property
    def dispatcher(self) -> Dispatcher:
        """The current application's dispatcher (inside an application or request context)."""
        return self.dispatcher_for(flask.current_app)
