"""Limits and timeouts of the REST port, and problem answers from the HTTP layer itself.

The API's bodies are tiny (a slotmap is about 80 bytes), so a request may bring at most
``MAX_BODY_SIZE``: a larger ``Content-Length`` is answered 413 before a byte of the body is
read, and a chunked body is read only up to the limit (``BodyLimit``). A request line
and headers longer than ``MAX_HEADER_SIZE`` are refused with 431.
A client must send a whole request within ``REQUEST_TIMEOUT`` of connecting or of the
previous answer (slowloris: a trickle of header bytes no longer keeps a connection open);
an idle keep-alive connection is closed after ``KEEPALIVE_TIMEOUT``. With
``max_connections`` (what the file descriptor limit leaves room for), a connection beyond
that many is closed at once, unread (uvicorn has no such limit of its own).

uvicorn answers malformed HTTP (two ``Content-Length`` headers, an oversized header) with
plain text; ``ApiProtocol``, its h11 protocol with these timeouts, answers with RFC 9457
problems like the API. ``http_options(settings)`` are the ``uvicorn.Config`` arguments of
``remsim-api`` and of the API embedded in ``remsim-server``.

Every refusal counts in ``remsim_http_refused_total{cause}`` and is logged at most once per
``LOG_INTERVAL`` per cause.

uvicorn writes an answer's head and body separately; ``ApiProtocol`` sends what it writes
within one event-loop iteration together (``CoalescedWrites``): one ``send`` per answer
rather than two (on loopback a ``send`` costs as much as the request's routing).
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from remsim_api.metrics import HTTP_REFUSED
from remsim_api.problems import PROBLEM_JSON, problem
from remsim_common.logs import RateLimitedLog

log = logging.getLogger("remsim.api.http")

MAX_BODY_SIZE = 64 * 1024
"""Bytes of a request body; beyond: 413."""
MAX_HEADER_SIZE = 16 * 1024
"""Bytes of a request line and its headers; beyond: 431."""
REQUEST_TIMEOUT = 10.0
"""Seconds for a whole request (head and body) to arrive; then: 408, closed."""
KEEPALIVE_TIMEOUT = 5
"""Seconds an idle keep-alive connection stays open (uvicorn's ``timeout_keep_alive``)."""
LOG_INTERVAL = 60.0
"""At most one log line per cause in this many seconds."""

_refusals_log = RateLimitedLog(log, LOG_INTERVAL)
_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
COALESCE_LIMIT = 64 * 1024
"""Bytes held back at most before ``CoalescedWrites`` sends them (a streamed answer's
chunks: the transport's flow control then sees them at once)."""


def refused(cause: str, message: str, *args: object) -> None:
    """Count a refusal of ``cause`` and log it, unless it was logged less than
    ``LOG_INTERVAL`` ago."""
    HTTP_REFUSED.labels(cause).inc()
    _refusals_log.log(logging.WARNING, cause, message, *args, extra={"cause": cause})


class BodyLimit:
    """ASGI middleware: 413 (and the connection closed) for a body over ``max_size``,
    decided on ``Content-Length`` without reading the body, or for a chunked body as soon
    as it passes the limit; a body within it reaches the app unchanged."""

    def __init__(self, app: ASGIApp, max_size: int = MAX_BODY_SIZE) -> None:
        self.app = app
        self.max_size = max_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:  # h11 has checked it is one decimal number
            if int(length) > self.max_size:
                await self._refuse(scope, receive, send, f"Content-Length {int(length)}")
                return
            await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:  # no body
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_size:
                await self._refuse(scope, receive, send, f"more than {self.max_size} bytes")
                return
        await self.app(scope, replay(bytes(body), receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        client = scope.get("client") or ("?", 0)
        refused("body-too-large", "REST request from %s refused: body of %s", client[0], size)
        detail = f"a request body may have at most {self.max_size} bytes"
        response = problem(413, detail, instance=scope["path"], headers={"Connection": "close"})
        await response(scope, receive, send)


def replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` that first gives ``body`` as one message, then the client's next one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def problem_bytes(status: int, detail: str) -> bytes:
    """The JSON body ``problems.problem`` would send."""
    return bytes(problem(status, detail).body)


class CoalescedWrites:
    """A transport whose writes of one event-loop iteration go out as one write of
    ``transport`` (at the end of the iteration, or at ``COALESCE_LIMIT`` bytes), in order;
    ``close``, ``write_eof`` and ``abort`` see the writes before them. Everything else is
    ``transport``'s."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))
        self._size += len(data)
        if self._size >= COALESCE_LIMIT:
            self.flush()

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Write what is held back now."""
        if not self._pending:
            return
        pending, self._pending, self._size = self._pending, [], 0
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._size

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending, self._size = [], 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ApiProtocol(H11Protocol):
    """uvicorn's h11 protocol with problem answers for malformed HTTP,
    ``request_timeout`` for a request to arrive (from the connection or the previous
    answer on) and at most ``max_connections`` connections open (None: no limit)."""

    request_timeout: float = REQUEST_TIMEOUT
    max_connections: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalesced = CoalescedWrites(transport, self.loop)
        super().connection_made(coalesced)  # type: ignore[arg-type]
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            client = self.client[0] if self.client else "?"
            refused("connections", "REST connection from %s refused: %d connections open",
                    client, self.max_connections)  # fmt: skip
            transport.abort()
            return
        self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and _head_too_large(self.conn.trailing_data[0] + data):
            self._unset_keepalive_if_required()
            client = self.client[0] if self.client else "?"
            refused("malformed-http", "REST request from %s refused: head too large", client)
            self._send_problem(431, f"request line and headers may have {MAX_HEADER_SIZE} bytes")
            return
        super().data_received(data)
        if self.conn.their_state is h11.DONE:  # a whole request is in
            self._cancel_request_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is not h11.DONE:
            self._await_request()

    def send_400_response(self, msg: str) -> None:
        """Called by ``handle_events`` while it handles h11's ``RemoteProtocolError``: the
        answer is h11's status hint (400, or 431 for an oversized head) as a problem."""
        error = sys.exc_info()[1]
        status = error.error_status_hint if isinstance(error, h11.RemoteProtocolError) else 400
        client = self.client[0] if self.client else "?"
        refused("malformed-http", "REST request from %s refused: %s", client, error or msg)
        self._send_problem(status, str(error) if error else msg)

    def _send_problem(self, status: int, detail: str) -> None:
        self._cancel_request_timer()
        body = problem_bytes(status, detail)
        headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            reason = http.HTTPStatus(status).phrase.encode()
            response = h11.Response(status_code=status, headers=headers, reason=reason)
            for event in (response, h11.Data(body)):
                self.transport.write(self.conn.send(event) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # a response had already begun: nothing more to say
            pass
        self.transport.close()

    def _await_request(self) -> None:
        self._cancel_request_timer()
        self._request_timer = self.loop.call_later(self.request_timeout, self._request_late)

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_late(self) -> None:
        self._request_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            if self.conn.their_state is h11.SEND_BODY:  # the app waits for the rest: it
                self._refused_late()  # sees the client disconnect
                self.transport.close()
            return
        if not self.conn.trailing_data[0]:
            self.transport.close()  # nothing sent: closed like an idle keep-alive connection
            return
        self._refused_late()
        self._send_problem(408, f"the request did not arrive within {self.request_timeout} s")

    def _refused_late(self) -> None:
        client = self.client[0] if self.client else "?"
        refused("request-timeout", "REST request from %s not complete in time", client)


def _head_too_large(buffered: bytes) -> bool:
    """Whether no request head ends within the first ``MAX_HEADER_SIZE`` bytes."""
    if len(buffered) <= MAX_HEADER_SIZE:
        return False
    return _END_OF_HEAD.search(buffered, 0, MAX_HEADER_SIZE + 4) is None


def protocol(request_timeout: float, max_connections: int | None = None) -> type[ApiProtocol]:
    """``ApiProtocol`` with this request timeout and connection limit (uvicorn
    instantiates the class)."""
    options = {"request_timeout": request_timeout, "max_connections": max_connections}
    return type("ApiProtocol", (ApiProtocol,), options)


class _UvicornBadRequestLine(logging.Filter):
    """Drops uvicorn's own line for malformed HTTP: ``ApiProtocol`` logs a rate-limited one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Invalid HTTP request received."


_UVICORN_FILTER = _UvicornBadRequestLine()


def http_options(settings: Any, max_connections: int | None = None) -> dict[str, Any]:
    """``uvicorn.Config`` arguments: this protocol (with ``max_connections``), the head
    limit and the timeouts from ``settings`` (``rest_request_timeout``,
    ``rest_keepalive_timeout``)."""
    logging.getLogger("uvicorn.error").addFilter(_UVICORN_FILTER)  # once: the same filter
    return {
        "http": protocol(settings.rest_request_timeout, max_connections),
        "h11_max_incomplete_event_size": MAX_HEADER_SIZE,
        "timeout_keep_alive": settings.rest_keepalive_timeout,
    }


__all__ = [
    "KEEPALIVE_TIMEOUT",
    "MAX_BODY_SIZE",
    "MAX_HEADER_SIZE",
    "REQUEST_TIMEOUT",
    "ApiProtocol",
    "BodyLimit",
    "CoalescedWrites",
    "http_options",
    "protocol",
    "replay",
]
