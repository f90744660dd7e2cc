"""Many tenants, one endpoint: every adapter reads the ``tenant`` path parameter.

`TenantContract` is written once: a secret resolver with two tenants, each with its own
secret; a delivery signed with one tenant's secret sent to the other's URL is 400; an
unknown tenant is 404 before anything of the body is read or budgeted; the same
``webhook-id`` runs once per tenant; handlers see the key in `current_delivery`. Each
adapter's class below routes the tenant as its framework does. Django's are in
``test_django_tenants.py``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import warnings
from typing import TYPE_CHECKING, Annotated, Any

import flask
import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app
from werkzeug.wrappers import Response as WerkzeugResponse

from carecycle_webhooks import (
    CustomerCreatedEvent,
    Dispatcher,
    Event,
    InMemoryIdempotencyStore,
    WebhookConfigurationError,
    current_delivery,
)
from carecycle_webhooks._otel import DELIVERIES
from carecycle_webhooks.asgi import webhook_app as asgi_app
from carecycle_webhooks.aws_lambda import webhook_handler
from carecycle_webhooks.fastapi import verified_event, webhook_router
from carecycle_webhooks.fastapi import webhook_view as starlette_view
from carecycle_webhooks.flask import CareCycleWebhooks
from carecycle_webhooks.flask import webhook_view as flask_view
from carecycle_webhooks.wsgi import webhook_app as wsgi_app
from tests.adapters import Reply, bodies
from tests.adapters.test_aws_lambda import lambda_event
from tests.adapters.test_aws_lambda import reply as lambda_reply
from tests.conftest import OTHER_SECRET, SECRET, fixture_bytes, svix_headers

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from tests.otel import Telemetry

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message=r"Using `httpx` with `starlette\.testclient` is deprecated", category=UserWarning
    )

MSG_ID = "msg_2Lm1bFf5ZsqHw5e2yd0DgPzm5Tx"
TENANT_SECRETS = {"acme": SECRET, "globex": OTHER_SECRET}


class Tenants:
    """A dispatcher whose secret resolver knows two tenants; its handler records each delivery's tenant."""

    def __init__(self, *, asynchronous: bool = False, fail: bool = False, static: bool = False) -> None:
        self.asked: list[str] = []

        def resolve(tenant: str) -> str | None:
            self.asked.append(tenant)
            if fail:
                raise RuntimeError("the tenants' database is down")
            return TENANT_SECRETS.get(tenant)

        async def resolve_async(tenant: str) -> str | None:
            return resolve(tenant)

        self.secret: Any = SECRET if static else resolve_async if asynchronous else resolve
        self.store = InMemoryIdempotencyStore()
        self.dispatcher = Dispatcher(self.secret, idempotency_store=self.store)
        self.tenants: list[str | None] = []
        self.dispatcher.on("customer.created")(self.record)

    def record(self, event: CustomerCreatedEvent) -> None:
        self.tenants.append(current_delivery().tenant)


class Tripwire(io.RawIOBase):
    """A request body stream that counts the reads it gets (none, for an unknown tenant)."""

    def __init__(self) -> None:
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self.reads += 1
        buffer[:1] = b"{"
        return 1


class TenantContract:
    """What every adapter does with a ``tenant`` path parameter; subclasses route it."""

    budgeted = True  # the adapter takes bodies from the dispatcher's body budget

    def send(self, tenants: Tenants, tenant: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """POST ``body`` to ``tenant``'s URL."""
        raise NotImplementedError

    def send_unread(self, tenants: Tenants, tenant: str, headers: Mapping[str, str]) -> tuple[Reply, int]:
        """POST a 100-byte body to ``tenant``'s URL; also say how many times the body was read."""
        raise NotImplementedError

    def test_each_tenant_verifies_with_its_own_secret(self) -> None:
        tenants = Tenants()
        body = fixture_bytes("customer.created")
        acme = self.send(tenants, "acme", body, svix_headers(body, secret=SECRET, msg_id="msg_a"))
        globex = self.send(tenants, "globex", body, svix_headers(body, secret=OTHER_SECRET, msg_id="msg_g"))
        assert (acme.status, acme.json()) == (200, {"status": "processed"})
        assert (globex.status, globex.json()) == (200, {"status": "processed"})
        # acme's secret signs nothing of globex's.
        crossed = self.send(tenants, "globex", body, svix_headers(body, secret=SECRET, msg_id="msg_x"))
        assert (crossed.status, crossed.json()["error"]) == (400, "no_matching_signature")
        assert tenants.tenants == ["acme", "globex"]

    def test_the_same_webhook_id_runs_once_per_tenant(self) -> None:
        tenants = Tenants()
        body = fixture_bytes("customer.created")
        for tenant, secret in (("acme", SECRET), ("globex", OTHER_SECRET)):
            reply = self.send(tenants, tenant, body, svix_headers(body, secret=secret, msg_id=MSG_ID))
            assert (reply.status, reply.json()) == (200, {"status": "processed"})
        again = self.send(tenants, "acme", body, svix_headers(body, secret=SECRET, msg_id=MSG_ID))
        assert (again.status, again.json()) == (200, {"status": "duplicate"})
        assert tenants.tenants == ["acme", "globex"]

    def test_an_unknown_tenant_is_404_before_the_body_is_read(self) -> None:
        tenants = Tenants()
        budget = bodies(tenants.dispatcher)
        full = budget.limit - budget.used if self.budgeted else 0
        assert budget.take(full)  # nothing is taken from the budget either: a full one is no 503
        try:
            reply, reads = self.send_unread(tenants, "initech", svix_headers(b"{}", secret=SECRET))
        finally:
            budget.give_back(full)
        assert (reply.status, reply.json()) == (404, {"error": "unknown_tenant"})
        assert reads == 0
        assert tenants.asked == ["initech"]
        assert tenants.tenants == []

    @pytest.mark.parametrize(
        ("tenant", "fail", "status", "outcome"),
        [("initech", False, 404, "rejected"), ("acme", True, 503, "secret_resolver_failed")],
        ids=["unknown", "resolver-failed"],
    )
    def test_a_tenant_refused_before_the_body_is_read_is_one_delivery_span(
        self, telemetry: Telemetry, tenant: str, fail: bool, status: int, outcome: str
    ) -> None:
        reply, _ = self.send_unread(Tenants(fail=fail), tenant, svix_headers(b"{}", secret=SECRET))
        assert reply.status == status
        (span,) = telemetry.spans()
        assert span.attributes is not None
        assert span.attributes["carecycle.delivery.outcome"] == outcome
        assert "carecycle.delivery.tenant" not in span.attributes  # not a tenant's delivery
        (point,) = telemetry.points(DELIVERIES)
        assert (point[0]["http.response.status_code"], point[1].value) == (status, 1)

    def test_a_failing_resolver_is_503_before_the_body_is_read(self) -> None:
        tenants = Tenants(fail=True)
        reply, reads = self.send_unread(tenants, "acme", svix_headers(b"{}", secret=SECRET))
        assert (reply.status, reply.json()) == (503, {"error": "secret_resolver_failed"})
        assert b"database" not in reply.body
        assert reads == 0

    def test_an_async_resolver(self) -> None:
        tenants = Tenants(asynchronous=True)
        body = fixture_bytes("customer.created")
        reply = self.send(tenants, "globex", body, svix_headers(body, secret=OTHER_SECRET))
        assert reply.status == 200
        assert self.send(tenants, "nobody", body, svix_headers(body)).status == 404
        assert tenants.tenants == ["globex"]

    def test_with_one_secret_a_tenant_in_the_path_is_refused(self) -> None:
        # The path is not signed: keeping ids apart by it would let a replay run again.
        tenants = Tenants(static=True)
        body = fixture_bytes("customer.created")
        for tenant in ("acme", "globex"):
            reply = self.send(tenants, tenant, body, svix_headers(body, msg_id=MSG_ID))
            assert (reply.status, reply.json()) == (404, {"error": "unknown_tenant"})
        assert tenants.tenants == []


# ---------------------------------------------------------------------------- Flask


def flask_reply(response: Any) -> Reply:
    headers = {name.lower(): value for name, value in response.headers.items()}
    return Reply(response.status_code, headers, response.get_data())


def flask_unread(app: flask.Flask, path: str, headers: Mapping[str, str]) -> tuple[Reply, int]:
    stream = Tripwire()
    builder = EnvironBuilder(path=path, method="POST", headers=list(headers.items()))
    environ = builder.get_environ()
    builder.close()
    environ.update({"wsgi.input": stream, "CONTENT_LENGTH": "100"})
    app_iter, status, response_headers = run_wsgi_app(app.wsgi_app, environ)
    names = {name.lower(): value for name, value in response_headers.items()}
    return Reply(int(status.split()[0]), names, b"".join(app_iter)), stream.reads


class TestFlaskView(TenantContract):
    @staticmethod
    def app(tenants: Tenants) -> flask.Flask:
        app = flask.Flask(__name__)
        app.add_url_rule("/webhooks/<tenant>", view_func=flask_view(tenants.dispatcher))
        return app

    def send(self, tenants: Tenants, tenant: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        client = self.app(tenants).test_client()
        return flask_reply(client.post(f"/webhooks/{tenant}", data=body, headers=dict(headers)))

    def send_unread(self, tenants: Tenants, tenant: str, headers: Mapping[str, str]) -> tuple[Reply, int]:
        return flask_unread(self.app(tenants), f"/webhooks/{tenant}", headers)


class TestFlaskExtension(TenantContract):
    budgeted = False  # the application's own dispatcher holds the budget, not the test's

    def app(self, tenants: Tenants) -> flask.Flask:
        # One application per Tenants, with the test's resolver, store and handler.
        apps: dict[int, flask.Flask] = self.__dict__.setdefault("apps", {})
        if id(tenants) in apps:
            return apps[id(tenants)]
        extension = CareCycleWebhooks(idempotency_store=tenants.store)
        app = flask.Flask(__name__)
        if isinstance(tenants.secret, str):  # one secret: a rule with a tenant all the same
            app.config["CARECYCLE_WEBHOOK_SECRET"] = tenants.secret
            app.config["CARECYCLE_WEBHOOK_URL_RULE"] = "/webhooks/<tenant>"
        else:
            extension.secret_resolver(tenants.secret)
        extension.init_app(app)
        extension.on("customer.created")(tenants.record)
        apps[id(tenants)] = app
        return app

    def send(self, tenants: Tenants, tenant: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        client = self.app(tenants).test_client()
        return flask_reply(client.post(f"/webhooks/{tenant}", data=body, headers=dict(headers)))

    def send_unread(self, tenants: Tenants, tenant: str, headers: Mapping[str, str]) -> tuple[Reply, int]:
        return flask_unread(self.app(tenants), f"/webhooks/{tenant}", headers)


def test_the_flask_extension_receives_at_webhooks_tenant_with_a_resolver() -> None:
    extension = CareCycleWebhooks()

    @extension.secret_resolver
    def secret_of(tenant: str) -> str | None:
        return TENANT_SECRETS.get(tenant)

    app = flask.Flask(__name__)
    extension.init_app(app)
    with app.test_request_context():
        assert flask.url_for("carecycle_webhooks", tenant="acme") == "/webhooks/acme"
    with pytest.raises(WebhookConfigurationError, match=r"before CareCycleWebhooks\.init_app"):
        extension.secret_resolver(secret_of)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"CARECYCLE_WEBHOOK_URL_RULE": "/webhooks"}, "must have a <tenant> variable"),
        ({"CARECYCLE_WEBHOOK_SECRET": SECRET}, "would not be used"),
    ],
)
def test_the_flask_extension_refuses_a_resolver_it_could_not_use(
    config: dict[str, str], message: str
) -> None:
    extension = CareCycleWebhooks()
    extension.secret_resolver(TENANT_SECRETS.get)
    app = flask.Flask(__name__)
    for key, value in config.items():
        app.config[key] = value
    with pytest.raises(WebhookConfigurationError, match=message):
        extension.init_app(app)


# ---------------------------------------------------------------------------- ASGI


class ASGICall:
    """One request to an ASGI application; ``reads`` counts the body messages it received."""

    def __init__(self, path: str, body: bytes, headers: Mapping[str, str]) -> None:
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            + [(b"host", b"testserver"), (b"content-length", str(len(body)).encode())],
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 5000),
        }
        self.body = body
        self.reads = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.reads += 1
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def send(self, message: Mapping[str, Any]) -> None:
        self.sent.append(dict(message))

    def run(self, application: Any) -> tuple[Reply, int]:
        asyncio.run(asyncio.wait_for(application(self.scope, self.receive, self.send), timeout=10))
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return Reply(start["status"], headers, body), self.reads


def asgi_send(app: Any, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
    async def one() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post(path, content=body, headers=dict(headers))

    response = asyncio.run(asyncio.wait_for(one(), timeout=10))
    return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content)


class ASGIContract(TenantContract):
    def app(self, tenants: Tenants) -> Any:
        raise NotImplementedError

    def send(self, tenants: Tenants, tenant: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        return asgi_send(self.app(tenants), f"/webhooks/{tenant}", body, headers)

    def send_unread(self, tenants: Tenants, tenant: str, headers: Mapping[str, str]) -> tuple[Reply, int]:
        return ASGICall(f"/webhooks/{tenant}", b"x" * 100, headers).run(self.app(tenants))


class TestStarletteView(ASGIContract):
    def app(self, tenants: Tenants) -> Any:
        return Starlette(
            routes=[Route("/webhooks/{tenant}", starlette_view(tenants.dispatcher), methods=["POST"])]
        )


class TestFastAPIRouter(ASGIContract):
    def app(self, tenants: Tenants) -> Any:
        app = FastAPI()
        app.include_router(webhook_router(tenants.dispatcher, path="/webhooks/{tenant}"))
        return app


def test_the_router_documents_the_tenant_path_parameter() -> None:
    app = FastAPI()
    app.include_router(
        webhook_router(Tenants().dispatcher, path="/webhooks/{tenant}", include_in_schema=True)
    )
    operation = app.openapi()["paths"]["/webhooks/{tenant}"]["post"]
    assert [(p["name"], p["in"], p["required"]) for p in operation["parameters"]] == [
        ("tenant", "path", True)
    ]
    assert "requestBody" not in operation
    prefixed = FastAPI()
    router = webhook_router(
        Tenants().dispatcher, path="", prefix="/webhooks/{tenant}", include_in_schema=True
    )
    prefixed.include_router(router)
    operation = prefixed.openapi()["paths"]["/webhooks/{tenant}"]["post"]
    assert [p["name"] for p in operation["parameters"]] == ["tenant"]


class TestFastAPIRouterPrefix(ASGIContract):
    """The tenant in the router's prefix."""

    def app(self, tenants: Tenants) -> Any:
        app = FastAPI()
        app.include_router(webhook_router(tenants.dispatcher, path="", prefix="/webhooks/{tenant}"))
        return app


class TestVerifiedEvent(ASGIContract):
    def app(self, tenants: Tenants) -> Any:
        app = FastAPI()
        verified = Annotated[Event, Depends(verified_event(tenants.dispatcher))]

        async def receive(event: Event) -> dict[str, str]:
            if isinstance(event, CustomerCreatedEvent):
                tenants.record(event)  # the route does what the handler would
            return {"status": "processed"}

        # This module's annotations are strings; FastAPI reads the dependency from the object.
        receive.__annotations__["event"] = verified
        app.add_api_route("/webhooks/{tenant}", receive, methods=["POST"])
        return app

    def send(self, tenants: Tenants, tenant: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        return unwrapped(super().send(tenants, tenant, body, headers))

    def send_unread(self, tenants: Tenants, tenant: str, headers: Mapping[str, str]) -> tuple[Reply, int]:
        reply, reads = super().send_unread(tenants, tenant, headers)
        return unwrapped(reply), reads


def unwrapped(reply: Reply) -> Reply:
    """A `WebhookAnswer` (``{"detail": answer}``) as the answer itself, as the other adapters give it."""
    data: dict[str, object] = reply.json()
    if list(data) == ["detail"]:
        return reply._replace(body=json.dumps(data["detail"]).encode())
    return reply


class TestASGIAppRouted(ASGIContract):
    """Starlette's router sets ``scope["path_params"]``."""

    def app(self, tenants: Tenants) -> Any:
        return Starlette(routes=[Route("/webhooks/{tenant}", asgi_app(tenants.dispatcher))])


class TestASGIAppMounted(ASGIContract):
    """Mounted at /webhooks with no tenant parameter: the last segment of the path."""

    def app(self, tenants: Tenants) -> Any:
        return Starlette(routes=[Mount("/webhooks", asgi_app(tenants.dispatcher))])

    def test_with_one_secret_a_tenant_in_the_path_is_refused(self) -> None:
        # Without a resolver and without a tenant parameter, the path is not read: one
        # endpoint, whatever the last segment of the path says.
        tenants = Tenants(static=True)
        body = fixture_bytes("customer.created")
        replies = [
            self.send(tenants, tenant, body, svix_headers(body, msg_id=MSG_ID)).json()
            for tenant in ("acme", "globex")
        ]
        assert replies == [{"status": "processed"}, {"status": "duplicate"}]
        assert tenants.tenants == [None]


class TestASGIAppAlone(ASGIContract):
    """Served alone (uvicorn module:app): the last segment of the path."""

    def app(self, tenants: Tenants) -> Any:
        return asgi_app(tenants.dispatcher)

    test_with_one_secret_a_tenant_in_the_path_is_refused = (
        TestASGIAppMounted.test_with_one_secret_a_tenant_in_the_path_is_refused
    )


def test_an_asgi_app_with_a_resolver_and_no_path_is_404() -> None:
    reply, reads = ASGICall("/", b"{}", svix_headers(b"{}")).run(asgi_app(Tenants().dispatcher))
    assert (reply.status, reads) == (404, 0)


# ---------------------------------------------------------------------------- WSGI


def routing_args(application: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """A router in front, passing the tenant as wsgiorg.routing_args (as Selector and Routes do)."""

    def router(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        prefix, _, tenant = environ["PATH_INFO"].rpartition("/")
        assert prefix == "/hooks"
        environ["wsgiorg.routing_args"] = ((), {"tenant": tenant})
        return application(environ, start_response)

    return router


def wsgi_unread(app: Any, path: str, headers: Mapping[str, str]) -> tuple[Reply, int]:
    stream = Tripwire()
    builder = EnvironBuilder(path=path, method="POST", headers=list(headers.items()))
    environ = builder.get_environ()
    builder.close()
    environ.update({"wsgi.input": stream, "CONTENT_LENGTH": "100"})
    app_iter, status, response_headers = run_wsgi_app(app, environ)
    names = {name.lower(): value for name, value in response_headers.items()}
    return Reply(int(status.split()[0]), names, b"".join(app_iter)), stream.reads


class TestWSGIRoutingArgs(TenantContract):
    path = "/hooks/{}"

    def app(self, tenants: Tenants) -> Any:
        return routing_args(wsgi_app(tenants.dispatcher))

    def send(self, tenants: Tenants, tenant: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        response = Client(self.app(tenants)).post(self.path.format(tenant), data=body, headers=dict(headers))
        return flask_reply(response)

    def send_unread(self, tenants: Tenants, tenant: str, headers: Mapping[str, str]) -> tuple[Reply, int]:
        return wsgi_unread(self.app(tenants), self.path.format(tenant), headers)


class TestWSGIMounted(TestWSGIRoutingArgs):
    """Mounted at /webhooks with DispatcherMiddleware: the last segment of the path."""

    path = "/webhooks/{}"

    def app(self, tenants: Tenants) -> Any:
        return DispatcherMiddleware(WerkzeugResponse("the site"), {"/webhooks": wsgi_app(tenants.dispatcher)})

    test_with_one_secret_a_tenant_in_the_path_is_refused = (
        TestASGIAppMounted.test_with_one_secret_a_tenant_in_the_path_is_refused
    )


# ---------------------------------------------------------------------------- AWS Lambda


class TestLambdaPathParameter(TenantContract):
    """API Gateway: the route POST /webhooks/{tenant} gives pathParameters.tenant."""

    budgeted = False  # a Lambda process handles one event: no body budget
    shape = "rest-api"

    def event(self, tenant: str, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        event = lambda_event(self.shape, body, headers)
        event["pathParameters"] = {"tenant": tenant}
        event["path"] = f"/webhooks/{tenant}"
        return event

    def send(self, tenants: Tenants, tenant: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        return lambda_reply(webhook_handler(tenants.dispatcher)(self.event(tenant, body, headers), object()))

    def send_unread(self, tenants: Tenants, tenant: str, headers: Mapping[str, str]) -> tuple[Reply, int]:
        # A body that is not base64 would be answered 400 if it were decoded.
        event = self.event(tenant, b"x" * 100, headers)
        event["isBase64Encoded"] = True
        event["body"] = "!" * 100
        return lambda_reply(webhook_handler(tenants.dispatcher)(event, object())), 0


class TestLambdaFunctionUrl(TestLambdaPathParameter):
    """A function URL has no path parameters: the last segment of rawPath."""

    shape = "function-url"

    def event(self, tenant: str, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        event = lambda_event(self.shape, body, headers)
        event["rawPath"] = f"/{tenant}"
        return event

    test_with_one_secret_a_tenant_in_the_path_is_refused = (
        TestASGIAppMounted.test_with_one_secret_a_tenant_in_the_path_is_refused
    )


def test_a_lambda_base64_body_of_a_known_tenant_is_decoded() -> None:
    tenants = Tenants()
    body = fixture_bytes("customer.created")
    event = TestLambdaFunctionUrl().event("acme", body, svix_headers(body))
    event["isBase64Encoded"], event["body"] = True, base64.b64encode(body).decode()
    assert lambda_reply(webhook_handler(tenants.dispatcher)(event, object())).status == 200
    assert tenants.tenants == ["acme"]
