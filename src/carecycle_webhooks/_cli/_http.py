"""The HTTP client of ``send`` and ``demo``: one POST, no redirects followed, as Svix sends it.

The standard library's ``urllib``, imported when a request is made.
"""

from __future__ import annotations

import dataclasses
import time
from typing import IO, TYPE_CHECKING

from ._common import UsageError, printable

if TYPE_CHECKING:
    import http.client
    import urllib.request
    from collections.abc import Mapping
    from email.message import Message

MAX_READ_BODY = 64 * 1024
"""How much of an answer's body is read."""
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class Unreachable(Exception):  # noqa: N818 - reads as what happened: the URL is unreachable
    """The URL could not be reached: connection refused, unknown host, timeout (exit code 3)."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """An endpoint's HTTP answer.

    Attributes:
        status: The status code.
        reason: The reason phrase.
        headers: The response headers.
        body: The body's first 64 KiB.
        seconds: How long the request took.
    """

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    seconds: float


def check_url(url: str) -> str:
    """``url``, checked to be an http:// or https:// URL.

    Raises:
        UsageError: It is not.
    """
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError as error:
        raise UsageError(f"--url {url!r} is not a valid URL: {error}") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise UsageError(f"--url must be an http:// or https:// URL, got {url!r}")
    return url


def post(url: str, body: bytes, headers: Mapping[str, str], *, timeout: float) -> Answer:
    """POST ``body`` to ``url`` without following redirects, and return the answer.

    Raises:
        Unreachable: No HTTP answer came: connection refused, unknown host, timeout, TLS.
    """
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310 - http(s) checked
    started = time.perf_counter()
    deadline = started + timeout
    try:
        with _opener(url).open(request, timeout=timeout) as response:
            content = _read_within(response, deadline, timeout)
            return _answer(response.status, response.reason, response.headers, content, started)
    except urllib.error.HTTPError as error:
        with error:
            content = _read_within(error, deadline, timeout)
            return _answer(error.code, str(error.reason), error.headers, content, started)
    except urllib.error.URLError as error:
        reason: BaseException = error.reason if isinstance(error.reason, BaseException) else error
        raise Unreachable(_unreachable_reason(reason, timeout)) from None
    except (OSError, http.client.HTTPException) as error:  # timeouts and resets while reading
        raise Unreachable(_unreachable_reason(error, timeout)) from None


def _read_within(response: IO[bytes], deadline: float, timeout: float) -> bytes:
    """The answer's body, up to `MAX_READ_BODY` bytes, if it arrives whole by ``deadline``.

    The socket's timeout bounds each read, not the whole: a server that sends a byte now
    and then would hold the command for as long as it likes. Svix gives up on a delivery
    after its own timeout, whatever arrived; so does this. The deadline is looked at between
    reads, and one read may wait ``timeout`` more: at most about twice ``timeout`` in all.

    Raises:
        Unreachable: The body did not arrive whole by ``deadline``.
    """
    read = getattr(response, "read1", None) or response.read
    pieces: list[bytes] = []
    size = 0
    while size < MAX_READ_BODY:
        if time.perf_counter() > deadline:
            raise Unreachable(f"the answer did not arrive whole within {timeout:g} s")
        piece = read(MAX_READ_BODY - size)
        if not piece:
            break
        pieces.append(piece)
        size += len(piece)
    return b"".join(pieces)


def _answer(status: int, reason: str, headers: Message, body: bytes, started: float) -> Answer:
    return Answer(
        status=status,
        reason=reason,
        headers={name.lower(): value for name, value in headers.items()},
        body=body,
        seconds=time.perf_counter() - started,
    )


def _unreachable_reason(error: BaseException, timeout: float) -> str:
    """Why no answer came, in words; what the server sent (a bad status line) escaped."""
    return printable(_reason(error, timeout))


def _reason(error: BaseException, timeout: float) -> str:
    import http.client
    import socket
    import ssl

    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return "the host name could not be resolved"
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {getattr(error, 'reason', None) or error}"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(error, ConnectionResetError):
        return "the connection was reset"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    return str(error) or type(error).__name__


def _opener(url: str) -> urllib.request.OpenerDirector:
    import urllib.parse
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        # Webhook senders never follow redirects; show the 3xx as it is.
        def redirect_request(  # noqa: PLR0913, PLR0917 - the signature of the base class
            self,
            req: urllib.request.Request,
            fp: IO[bytes],
            code: int,
            msg: str,
            headers: http.client.HTTPMessage,
            newurl: str,
        ) -> None:
            del req, fp, code, msg, headers, newurl

    handlers: list[urllib.request.BaseHandler] = [NoRedirect()]
    if urllib.parse.urlsplit(url).hostname in _LOOPBACK_HOSTS:
        handlers.append(urllib.request.ProxyHandler({}))  # a local server is never behind $http_proxy
    return urllib.request.build_opener(*handlers)
