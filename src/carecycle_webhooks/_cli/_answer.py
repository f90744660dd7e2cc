"""How ``send`` shows an endpoint's answer: status, telling headers, body, and a hint.

The hint names the likely cause precisely: a trailing-slash redirect (Django's
APPEND_SLASH answers 301, Flask 308, Starlette 307; webhook senders never follow one),
Django's APPEND_SLASH error page under DEBUG, a 404 or 405 of the framework, or an error
page that a server, proxy or middleware answered before the webhook view ran. Only the
JSON answer of a carecycle-webhooks view gets the hints about its own statuses ("a
handler raised"), by the word it answers (``stale``, ``unknown_tenant``...), 2xx ones too
when nothing ran; a route using FastAPI's ``verified_event`` answers the same words under
``detail``. HTML bodies are summarised (size and title), not dumped.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, TextIO, cast

from ._common import plural, printable
from ._http import MAX_READ_BODY

if TYPE_CHECKING:
    from ._http import Answer

__all__ = ["print_answer"]

_MAX_SHOWN_BODY = 2000
_MAX_SHOWN_TITLE = 120
# The response headers worth showing: what the body is, and where to go or when to retry.
_SHOWN_RESPONSE_HEADERS = ("content-type", "content-length", "location", "allow", "retry-after")

_STATUS_HINTS = {
    3: "webhook senders do not follow redirects (Svix counts anything but 2xx as a failure): "
    "point --url at the final address",
    400: "a carecycle-webhooks receiver answers 400 when the signature does not verify: "
    "is the endpoint configured with the same secret (with many tenants, the secret of the "
    "tenant in --url)?",
    401: "webhook deliveries carry no credentials: exempt the webhook route from authentication",
    403: "webhook deliveries carry no credentials or CSRF token: exempt the webhook route "
    "(Django: the view must be csrf_exempt; webhook_view already is)",
    409: "the receiver is processing this webhook-id right now; Svix would retry later",
    413: "the body is larger than the receiver accepts",
    422: "the receiver verified the signature but could not read the event",
    500: "a handler raised: look at the receiver's log (Svix would retry)",
    503: "the receiver's idempotency store is unreachable (Svix would retry)",
}
# The words of a carecycle-webhooks view's JSON answers ("status" of a 2xx, "error" else)
# whose meaning its status alone does not say.
_WORD_HINTS = {
    "stale": "acknowledged, no handler ran: the receiver (skip_out_of_order) processed a newer "
    "update of this customer already; send a later updatedAt (--set updatedAt=...) to see it handled",
    "test_customer": "acknowledged, no handler ran: the receiver (skip_test_customers) skips test "
    "customers; --set testCustomer=false (call.completed: customer.testCustomer=false) to see it handled",
    "secret_resolver_failed": "the receiver's secret resolver raised, or gave no valid secret, for "
    "the tenant in --url: look at the receiver's log (Svix would retry)",
    "busy": "the receiver is reading too many request bodies at once (its body budget); Svix would retry",
    "not_committed": "the receiver's database transaction was not committed: nothing of the "
    "delivery was kept (Svix would retry)",
}
# These hints describe the JSON answers of a carecycle-webhooks view; the same status in
# another body (an HTML error page) was answered before the request reached the view.
_OUR_ANSWERS_ONLY = frozenset({400, 409, 422, 500, 503})

# Who answers a POST without its trailing slash with this redirect, by status.
_SLASH_REDIRECTS = {
    301: "Django's APPEND_SLASH",
    307: "Starlette's redirect_slashes (FastAPI)",
    308: "Werkzeug's strict slashes (Flask)",
}
# Django's own words when DEBUG is on: it raises rather than redirect a POST (a 500 page).
_DJANGO_APPEND_SLASH_ERROR = b"you have APPEND_SLASH set"


def print_answer(answer: Answer, url: str, out: TextIO) -> None:
    r"""Show the status, the telling headers, the body (an HTML page summarised) and a hint.

    What the receiver sent is shown with its control characters escaped (ESC as ``\x1b``): a
    terminal would act on them (move the cursor, rewrite the screen, set its title).
    """
    out.write(f"HTTP {answer.status} {printable(answer.reason)}  ({answer.seconds * 1000:.0f} ms)\n")
    for name in _SHOWN_RESPONSE_HEADERS:
        if name in answer.headers:
            out.write(f"  {name}: {printable(answer.headers[name])}\n")
    if answer.body and _is_html(answer):
        out.write(f"\n{printable(_html_summary(answer))}\n")  # a page's markup says little in a terminal
    elif answer.body:
        text = answer.body.decode("utf-8", errors="replace")
        shown = text[:_MAX_SHOWN_BODY]
        more = len(answer.body) - len(shown.encode("utf-8", errors="replace"))
        shown = printable(shown)
        out.write(f"\n{shown}{'' if shown.endswith(chr(10)) else chr(10)}")
        if more > 0:
            out.write(f"... ({plural(more, 'more byte')})\n")
    word = _our_word(answer)
    if 200 <= answer.status < 300:
        hint = _WORD_HINTS.get(word) if word else None
    else:
        hint = _hint(answer, url, word)
    if hint:
        out.write(f"hint: {printable(hint)}\n")  # it may quote a Location header


def _is_html(answer: Answer) -> bool:
    if "html" in answer.headers.get("content-type", "").lower():
        return True
    start = answer.body.lstrip()[:14].lower()
    return start.startswith((b"<!doctype html", b"<html"))


def _html_summary(answer: Answer) -> str:
    import html

    declared = answer.headers.get("content-length", "")
    if declared.isdigit():
        size = plural(int(declared), "byte")
    elif len(answer.body) < MAX_READ_BODY:
        size = plural(len(answer.body), "byte")
    else:  # only the start of a longer page was read
        size = f"more than {plural(MAX_READ_BODY, 'byte')}"
    match = re.search(rb"<title[^>]*>(.*?)</title", answer.body, re.IGNORECASE | re.DOTALL)
    title = ""
    if match:
        text = " ".join(html.unescape(match.group(1).decode("utf-8", errors="replace")).split())
        if len(text) > _MAX_SHOWN_TITLE:
            text = text[: _MAX_SHOWN_TITLE - 3] + "..."
        title = f', titled "{text}"' if text else ""
    return f"(an HTML page of {size}{title}; not shown)"


def _json_object(answer: Answer) -> dict[str, object] | None:
    """The answer's body, when it is a JSON object said to be JSON; else ``None``."""
    if "json" not in answer.headers.get("content-type", ""):
        return None
    try:
        data: object = json.loads(answer.body)
    except ValueError:
        return None
    return cast("dict[str, object]", data) if isinstance(data, dict) else None


def _our_word(answer: Answer) -> str | None:
    """The word of a carecycle-webhooks view's JSON answer: its ``status`` (2xx) or ``error``."""
    answered = _json_object(answer)
    if answered is None:
        return None
    detail = answered.get("detail")
    if not 200 <= answer.status < 300 and isinstance(detail, dict):
        # A route of the user's own with verified_event: FastAPI puts the view's answer
        # under "detail", as it does for any HTTPException.
        answered = cast("dict[str, object]", detail)
    word = answered.get("status" if 200 <= answer.status < 300 else "error")
    return word if isinstance(word, str) else None


def _hint(answer: Answer, url: str, word: str | None) -> str | None:
    status = answer.status
    if word == "unknown_tenant":
        tenant = _path(url).rstrip("/").rpartition("/")[2]
        return (
            f"the receiver's secret resolver knows no tenant {tenant!r} (the last segment of --url): "
            "check the tenant key in --url, and that the resolver returns that tenant's secret"
        )
    if word in _WORD_HINTS:
        return _WORD_HINTS[word]
    if 300 <= status < 400:
        return _redirect_hint(answer, url)
    if _DJANGO_APPEND_SLASH_ERROR in answer.body:
        return (
            "Django's APPEND_SLASH: the URL has no trailing slash, and Django (with DEBUG on) "
            f"refuses to redirect a POST to the URL with one; send to {_with_slash(url)}"
        )
    if status == 404:
        return _not_found_hint(url)
    if status == 405:
        allowed = answer.headers.get("allow")
        return (
            f"the route at {_path(url)} does not accept POST"
            f"{f' (it allows {allowed})' if allowed else ''}: is --url the webhook route? "
            f"({_register_for_post(answer)})"
        )
    if status in _OUR_ANSWERS_ONLY and word is None:
        page = "an HTML page" if _is_html(answer) else "a body"
        return (
            f"this {status} is {page}, not the JSON answer of a carecycle-webhooks view: it was "
            "answered before the request reached the view (the server, a proxy or a middleware); "
            "look at the receiver's log"
        )
    return _STATUS_HINTS.get(status) or _STATUS_HINTS.get(status // 100)


def _register_for_post(answer: Answer) -> str:
    """How to route the view for POST, in the framework that answered the 405, when it shows."""
    flask = 'Flask: add_url_rule(..., methods=["POST"])'
    fastapi = 'FastAPI: add_api_route(..., methods=["POST"])'
    if _is_html(answer):  # Werkzeug's error page
        return flask
    answered = _json_object(answer)
    if answered is not None and answered.get("detail") is not None:  # Starlette's {"detail": ...}
        return fastapi
    return f"{flask}; {fastapi}"


def _redirect_hint(answer: Answer, url: str) -> str:
    import urllib.parse

    location = answer.headers.get("location")
    if not location:
        return _STATUS_HINTS[3]
    target = urllib.parse.urljoin(url, location)
    sent, moved = urllib.parse.urlsplit(url), urllib.parse.urlsplit(target)
    same_place = (sent.scheme, sent.netloc, sent.query) == (moved.scheme, moved.netloc, moved.query)
    if same_place and moved.path in {sent.path + "/", sent.path.rstrip("/")} and moved.path != sent.path:
        who = _SLASH_REDIRECTS.get(answer.status, "a trailing-slash redirect")
        return (
            f"the receiver redirected to {moved.path}: {who}; webhook senders do not follow "
            f"redirects, so send to {target} (and give careCycle that URL)"
        )
    if moved.scheme == "https" and sent.scheme == "http" and moved.path == sent.path:
        return f"the receiver redirected to HTTPS; webhook senders do not follow redirects: send to {target}"
    return (
        f"the receiver redirected to {target}; webhook senders do not follow redirects (Svix "
        "counts anything but 2xx as a failure): if that is the webhook route, send to it"
    )


def _not_found_hint(url: str) -> str:
    path = _path(url)
    hint = f"nothing is routed at {path}"
    if not path.endswith("/"):
        hint += (
            f'; if the route ends in a slash (Django: path("{path.strip("/")}/", ...)), '
            f"send to {_with_slash(url)}"
        )
    else:
        hint += ": check --url"
    return hint


def _path(url: str) -> str:
    import urllib.parse

    return urllib.parse.urlsplit(url).path or "/"


def _with_slash(url: str) -> str:
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=(parts.path or "/").rstrip("/") + "/"))
