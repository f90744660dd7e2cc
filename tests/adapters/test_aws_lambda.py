"""carecycle_webhooks.aws_lambda with the recorded event shapes of tests/fixtures/aws_lambda/.

Each shape (API Gateway REST, HTTP API payload 1.0 and 2.0, function URL) runs the whole
adapter contract: a delivery is put into the recorded event as AWS would put it (header
names as the shape has them, every value in ``multiValueHeaders`` where the shape has it,
base64 where it says ``isBase64Encoded``), and the handler's answer is read as AWS reads it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carecycle_webhooks import (
    CustomerCreatedEvent,
    Dispatcher,
    RedisIdempotencyStore,
    WebhookConfigurationError,
    WebhookResponse,
)
from carecycle_webhooks.aws_lambda import webhook_handler
from tests.adapters import AdapterContract, AsyncRedisClient, CustomAnswer, Recorder, Reply, bodies
from tests.conftest import SECRET, fixture_bytes, svix_headers

if TYPE_CHECKING:
    from collections.abc import Mapping

    from carecycle_webhooks import CallCompletedEvent

SHAPES = Path(__file__).parent.parent / "fixtures" / "aws_lambda"
OURS = ("webhook-", "svix-", "content-length")


@functools.cache
def _recorded_text(shape: str) -> str:
    return (SHAPES / f"{shape}.json").read_text()


def recorded(shape: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(_recorded_text(shape))
    return event


def lambda_event(
    shape: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    method: str = "POST",
    base64_body: bool | None = None,
) -> dict[str, Any]:
    """The recorded event of ``shape``, carrying this request as AWS would."""
    event = copy.deepcopy(recorded(shape))
    version_2 = event.get("version") == "2.0"
    if version_2:
        event["requestContext"]["http"]["method"] = method
    else:
        event["httpMethod"] = method
        event["requestContext"]["httpMethod"] = method
    sent = {**headers, "content-length": str(len(body))}
    # Payload 2.0 gives header names in lower case; 1.0 as the client sent them.
    given = [(name.lower() if version_2 else name, value) for name, value in sent.items()]
    kept = {name: value for name, value in event["headers"].items() if not name.lower().startswith(OURS)}
    event["headers"] = {**kept, **dict(given)}
    if "multiValueHeaders" in event:
        multi = {
            name: values
            for name, values in event["multiValueHeaders"].items()
            if not name.lower().startswith(OURS)
        }
        for name, value in given:
            multi.setdefault(name, []).append(value)
        event["multiValueHeaders"] = multi
    encode = event["isBase64Encoded"] if base64_body is None else base64_body
    event["isBase64Encoded"] = encode
    event["body"] = base64.b64encode(body).decode() if encode else body.decode("utf-8")
    return event


def reply(answer: dict[str, Any]) -> Reply:
    """The answer as API Gateway reads it: JSON-serialisable, headers in either form."""
    json.dumps(answer)  # what Lambda does with it; raises for anything else
    if "multiValueHeaders" in answer:
        headers = {name.lower(): ", ".join(values) for name, values in answer["multiValueHeaders"].items()}
    else:
        headers = {name.lower(): value for name, value in answer["headers"].items()}
    body: str = answer["body"]
    raw = base64.b64decode(body) if answer["isBase64Encoded"] else body.encode("utf-8")
    return Reply(answer["statusCode"], headers, raw)


class LambdaContract(AdapterContract):
    shape = ""
    budgeted = False

    def send(
        self, dispatcher: Dispatcher, body: bytes, headers: Mapping[str, str], *, method: str = "POST"
    ) -> Reply:
        handler = webhook_handler(dispatcher)
        return reply(handler(lambda_event(self.shape, body, headers, method=method), object()))

    def test_a_delivery_that_does_not_fit_the_body_budget_is_503_before_reading(self) -> None:
        # Not here: the event holds the whole body before the handler runs, and a Lambda
        # process handles one event at a time. The budget is neither asked nor taken.
        body = fixture_bytes("customer.created")
        recorder = Recorder(max_body_size=len(body), body_budget=len(body))
        assert bodies(recorder.dispatcher).take(len(body))
        assert self.send(recorder.dispatcher, body, svix_headers(body)).status == 200
        assert bodies(recorder.dispatcher).used == len(body)


class TestRestApiStatusTable(LambdaContract):
    shape = "rest-api"


class TestHttpApiV1StatusTable(LambdaContract):
    shape = "http-api-v1"


class TestHttpApiV2StatusTable(LambdaContract):
    shape = "http-api-v2"  # recorded with a base64 body


class TestFunctionUrlStatusTable(LambdaContract):
    shape = "function-url"


SHAPE_NAMES = ["rest-api", "http-api-v1", "http-api-v2", "function-url"]


def test_every_recorded_shape_is_tested() -> None:
    assert sorted(path.stem for path in SHAPES.glob("*.json")) == sorted(SHAPE_NAMES)


@pytest.mark.parametrize("shape", SHAPE_NAMES)
@pytest.mark.parametrize("encoded", [True, False])
def test_base64_and_plain_bodies(shape: str, encoded: bool) -> None:
    recorder = Recorder()
    body = fixture_bytes("customer.created")
    event = lambda_event(shape, body, svix_headers(body), base64_body=encoded)
    assert (event["body"] == body.decode()) is not encoded
    answer = webhook_handler(recorder.dispatcher)(event, None)
    assert (answer["statusCode"], json.loads(answer["body"])) == (200, {"status": "processed"})
    (event,) = recorder.events
    assert isinstance(event, CustomerCreatedEvent)
    assert str(event.id) == json.loads(body)["id"]


def test_a_body_marked_base64_that_is_not_is_400() -> None:
    recorder = Recorder()
    body = fixture_bytes("customer.created")
    event = lambda_event("http-api-v2", body, svix_headers(body), base64_body=False)
    event["isBase64Encoded"] = True  # a JSON body is not base64
    answer = webhook_handler(recorder.dispatcher)(event, None)
    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["error"] == "invalid_body"
    assert recorder.events == []


@pytest.mark.parametrize("flag", ["false", "False", 0, None])
def test_only_true_marks_a_body_base64(flag: object) -> None:
    # AWS sends a JSON boolean; the string "false" is truthy, and was taken for true.
    recorder = Recorder()
    body = fixture_bytes("customer.created")
    event = lambda_event("http-api-v2", body, svix_headers(body), base64_body=False)
    event["isBase64Encoded"] = flag
    answer = webhook_handler(recorder.dispatcher)(event, None)
    assert answer["statusCode"] == 200, answer
    assert len(recorder.events) == 1


def test_a_base64_body_far_over_the_limit_is_413_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("a body over the limit must not be decoded")

    recorder = Recorder(max_body_size=1000)
    event = lambda_event("function-url", b"x" * 2000, {}, base64_body=True)
    monkeypatch.setattr("carecycle_webhooks.aws_lambda.base64.b64decode", no_decoding)
    answer = webhook_handler(recorder.dispatcher)(event, None)
    assert (answer["statusCode"], json.loads(answer["body"])) == (
        413,
        {"error": "body_too_large", "limit": 1000},
    )


@pytest.mark.parametrize("size", [1000, 1001, 1002, 1003])
def test_a_base64_body_near_the_limit_is_measured_decoded(size: int) -> None:
    # Base64 pads to four characters: the bound before decoding must not refuse 1000 bytes.
    body = json.dumps({"event_type": "customer.created", "pad": "x" * (size - 45)}).encode()
    assert len(body) == size
    recorder = Recorder(max_body_size=1000)
    event = lambda_event("function-url", body, svix_headers(body), base64_body=True)
    answer = webhook_handler(recorder.dispatcher)(event, None)
    assert answer["statusCode"] == (422 if size <= 1000 else 413)


def test_a_signed_header_given_twice_with_different_values_is_400() -> None:
    # multiValueHeaders holds every value; the last one alone (in headers) would verify.
    recorder = Recorder()
    body = fixture_bytes("customer.created")
    headers = svix_headers(body)
    event = lambda_event("rest-api", body, headers)
    event["multiValueHeaders"]["webhook-id"] = ["msg_other", headers["webhook-id"]]
    answer = webhook_handler(recorder.dispatcher)(event, None)
    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["error"] == "conflicting_headers"
    assert recorder.events == []


def test_multi_value_answers_for_multi_value_events() -> None:
    body = fixture_bytes("customer.created")
    handler = webhook_handler(Recorder().dispatcher)
    answer = handler(lambda_event("rest-api", body, {}, method="GET"), None)
    assert answer["multiValueHeaders"] == {"content-type": ["application/json"], "allow": ["POST"]}
    assert "headers" not in answer
    answer = handler(lambda_event("function-url", body, {}, method="GET"), None)
    assert answer["headers"] == {"content-type": "application/json", "allow": "POST"}
    assert "multiValueHeaders" not in answer


def test_an_event_without_a_body_is_answered() -> None:
    event = lambda_event("rest-api", b"", {})
    event["body"] = None  # API Gateway's way of saying: no body
    answer = webhook_handler(Recorder().dispatcher)(event, None)
    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["error"] == "missing_header"


def test_async_handlers_run() -> None:
    dispatcher = Dispatcher(SECRET)
    seen: list[str] = []

    @dispatcher.on("call.completed")
    async def on_call(event: CallCompletedEvent) -> None:
        await asyncio.sleep(0)
        seen.append(event.event_type)

    body = fixture_bytes("call.completed")
    answer = webhook_handler(dispatcher)(lambda_event("http-api-v2", body, svix_headers(body)), None)
    assert answer["statusCode"] == 200
    assert seen == ["call.completed"]


@pytest.mark.parametrize(
    "event",
    [{"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}, {"httpMethod": None}, ["not", "an", "object"]],
    ids=["sqs", "no-method", "not-an-object"],
)
def test_an_event_that_is_no_http_request_is_a_setup_error(event: Any) -> None:
    handler = webhook_handler(Recorder().dispatcher)
    with pytest.raises(WebhookConfigurationError, match="API Gateway and Lambda function URL events"):
        handler(event, None)


def test_an_asyncio_only_store_is_refused_where_the_handler_is_built() -> None:
    recorder = Recorder(idempotency_store=RedisIdempotencyStore(AsyncRedisClient()))
    with pytest.raises(WebhookConfigurationError, match=r"AWS Lambda handlers built by webhook_handler\(\)"):
        webhook_handler(recorder.dispatcher)


def test_not_a_dispatcher_is_refused() -> None:
    with pytest.raises(WebhookConfigurationError, match=r"webhook_handler\(\) takes a .*Dispatcher"):
        webhook_handler(object())  # type: ignore[arg-type]


def test_no_framework_and_no_aws_library_is_imported() -> None:
    code = (
        "import sys\nimport carecycle_webhooks.aws_lambda\n"
        "heavy = {'boto3', 'botocore', 'flask', 'django', 'starlette', 'werkzeug', 'httpx'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# Loaded on demand only, for a short cold start: asyncio (with ssl and socket) by the async
# paths, pydantic's plugin loader (importlib.metadata, with email and socket, and a scan of
# every installed distribution) by the validators and serializers that pydantic builds.
NOT_AT_A_COLD_START = ("asyncio", "importlib.metadata", "pydantic.plugin._loader", "email", "socket")


def test_a_cold_start_with_a_plain_handler_loads_neither_asyncio_nor_pydantic_plugins() -> None:
    body = fixture_bytes("customer.created")
    event = lambda_event("function-url", body, svix_headers(body))
    code = (
        "import json, sys\n"
        # What the interpreter loaded before (a coverage tracer under CI loads socket).
        "already = set(sys.modules)\n"
        "from carecycle_webhooks import Dispatcher\n"
        "from carecycle_webhooks.aws_lambda import webhook_handler\n"
        "webhooks = Dispatcher(sys.argv[1])\n"
        "webhooks.on('customer.created')(lambda event: None)\n"
        "answer = webhook_handler(webhooks)(json.loads(sys.stdin.read()), None)\n"
        f"loaded = sorted(set({NOT_AT_A_COLD_START!r}) & (set(sys.modules) - already))\n"
        "print(answer['statusCode'], loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, SECRET],
        input=json.dumps(event),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "200 []"


def test_an_async_handler_still_runs_at_a_cold_start() -> None:
    # asyncio is imported when an async def handler is called (asyncio.run), not before.
    body = fixture_bytes("customer.created")
    event = lambda_event("function-url", body, svix_headers(body))
    code = (
        "import json, sys\n"
        "from carecycle_webhooks import Dispatcher\n"
        "from carecycle_webhooks.aws_lambda import webhook_handler\n"
        "webhooks = Dispatcher(sys.argv[1])\n"
        "seen = []\n"
        "@webhooks.on('customer.created')\n"
        "async def created(event):\n"
        "    seen.append('asyncio' in sys.modules)\n"
        "before = 'asyncio' in sys.modules\n"
        "answer = webhook_handler(webhooks)(json.loads(sys.stdin.read()), None)\n"
        "print(answer['statusCode'], before, seen)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, SECRET],
        input=json.dumps(event),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "200 False [True]"


def test_an_answer_that_is_not_utf_8_goes_as_base64() -> None:
    class Binary(CustomAnswer):
        ANSWER = WebhookResponse(202, b"\xff\xfe", {"content-type": "application/octet-stream"})

    body = fixture_bytes("customer.created")
    answer = webhook_handler(Binary(SECRET))(lambda_event("function-url", body, {}), None)
    assert (answer["body"], answer["isBase64Encoded"]) == ("//4=", True)
    assert reply(answer).body == b"\xff\xfe"


def test_header_values_that_are_not_strings_are_left_out() -> None:
    # Not what AWS sends; a hand-made test event may. What is left is judged as usual.
    recorder = Recorder()
    body = fixture_bytes("customer.created")
    event = lambda_event("rest-api", body, svix_headers(body))
    event["multiValueHeaders"]["X-Odd"] = "not a list"
    event["multiValueHeaders"]["X-Odder"] = [1, None]
    assert webhook_handler(recorder.dispatcher)(event, None)["statusCode"] == 200
    event = lambda_event("function-url", body, svix_headers(body))
    event["headers"]["webhook-id"] = 7
    answer = webhook_handler(recorder.dispatcher)(event, None)
    assert (answer["statusCode"], json.loads(answer["body"])["error"]) == (400, "missing_header")


ANY_EVENT_DISPATCHER = Dispatcher(SECRET, max_body_size=1000)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3)
    ),
    max_leaves=6,
)


# Recursive JSON is slow to draw on a busy machine: the health check would fail the test.
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from(SHAPE_NAMES),
    changes=st.dictionaries(
        st.sampled_from(
            ["body", "isBase64Encoded", "headers", "multiValueHeaders", "httpMethod", "requestContext"]
        ),
        JSON,
        max_size=3,
    ),
)
def test_any_event_is_answered_or_refused_as_a_setup_error(shape: str, changes: dict[str, Any]) -> None:
    # Whatever a test event or a misconfigured trigger holds: an answer in AWS's format, or
    # WebhookConfigurationError; never another exception.
    event = {**recorded(shape), **changes}
    handler = webhook_handler(ANY_EVENT_DISPATCHER)
    try:
        answer = handler(event, None)
    except WebhookConfigurationError:
        return
    assert set(answer) in (
        {"statusCode", "headers", "body", "isBase64Encoded"},
        {"statusCode", "multiValueHeaders", "body", "isBase64Encoded"},
    )
    assert 200 <= reply(answer).status < 600
