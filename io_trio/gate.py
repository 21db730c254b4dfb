"""The front door: an ASGI middleware deciding who gets in, before Quart sees the request.

Theory of operation: for each HTTP request the gate, in this order,

1. takes the current config snapshot (`io_trio.state`) and pins it in the
   ASGI scope, so the handler, the relay and this gate all use one config;
2. answers a CORS preflight itself (no key needed: browsers send none), and
   for a browser request (one with ``Origin``) replaces any upstream
   ``Access-Control-*`` response header with the configured policy's;
3. refuses a request head over ``server.max_header_bytes`` (431);
4. lets ``/health`` through untouched;
5. authenticates the key (401), or, with no keys configured, refuses browser
   requests from origins CORS does not allow (any web page could otherwise make
   a visitor's browser spend the proxy's provider keys with a plain form post)
   and requests that reached a non-loopback address without
   ``allow_unauthenticated`` (the same open-relay rule the loader applies,
   for when hypercorn was started by hand with ``-b 0.0.0.0``);
6. admits the request into the in-flight count (503 when full) and the
   client's requests-per-minute budget (429), each with ``retry-after``;
7. hands the proxy's POST routes to `io_trio.endpoint.ProxyEndpoint` (the hot
   path, plain ASGI) and everything else to the Quart app; when that returns
   (for a stream: after its last byte went out, or the client left) releases
   the in-flight slot.

Every request gets an id first (the client's ``x-request-id`` if it is sane,
else a fresh one, `core.request_id`): bound to the task for every log line
about the request, and returned as ``x-request-id`` on every response,
refusals included.  Refusals are logged, counted and audited like any other
request (`io_trio.observe`).

Every refusal is an error body in the protocol the client speaks (judged by
path and headers, as the app does).  Model permissions (403) need the request
body, so the app checks them with `core.auth.authorize`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from core.auth import ANONYMOUS, Client, is_loopback
from core.errors import ProxyError
from core.exchange import ClientProtocol, error_body
from core.limits import BUSY_RETRY_AFTER_SECONDS, busy_error, rate_limited_error, retry_after_headers
from core.request_id import sanitize_request_id

from .endpoint import ROUTES, ProxyEndpoint
from .logs_context import set_request_id
from .state import ProxyState, Snapshot

__all__ = ["CLIENT_KEY", "REQUEST_ID_KEY", "SNAPSHOT_KEY", "Gate", "client_of", "protocol_of"]

log = logging.getLogger("llm_proxy.gate")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SNAPSHOT_KEY = "llm_proxy.snapshot"
CLIENT_KEY = "llm_proxy.client"
REQUEST_ID_KEY = "llm_proxy.request_id"
OPEN_PATHS = frozenset({"/health"})
_WWW_AUTHENTICATE = [("www-authenticate", 'Bearer realm="llm-proxy"')]  # RFC 9110 §11.6.1: a 401 names a scheme


def protocol_of(path: str, headers: Any) -> ClientProtocol:
    """The protocol to answer an error in, before the route is known."""
    if "messages" in path or "anthropic-version" in headers or "x-api-key" in headers:
        return ClientProtocol.ANTHROPIC
    return ClientProtocol.OPENAI


def client_of(scope: Scope) -> Client:
    """The client the gate admitted this request as (`ANONYMOUS` when no keys are configured)."""
    return scope.get(CLIENT_KEY, ANONYMOUS)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _header_problem(headers: list[tuple[bytes, bytes]], limit: int) -> ProxyError | None:
    """431 when the header fields exceed `limit` bytes as sent (``name: value`` and CRLF each).

    Hypercorn's h11 limit only bounds a head still *incomplete* in its buffer; a
    head that arrives whole in one read is checked here (RFC 6585 §5).
    """
    size = sum(len(name) + len(value) + 4 for name, value in headers)
    if size <= limit:
        return None
    return ProxyError(431, f"the request headers ({size} bytes) are larger than the limit of {limit} bytes",
                      type="invalid_request_error", should_retry=False)


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def _reply(send: Send, scope: Scope, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    if scope["method"] == "HEAD":
        body = b""
    # RFC 9110 §8.6: no Content-Length in a 204.
    head = headers if status == 204 else [("content-length", str(len(body))), *headers]
    head = [*head, ("x-request-id", scope[REQUEST_ID_KEY])]
    await send({"type": "http.response.start", "status": status, "headers": _encode(head)})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _finishing(send: Send) -> Send:
    """`send` whose last body message cannot be cancelled half-way.

    Hypercorn closes a connection after its last response once shutdown began,
    from inside that final send; Quart-Trio meanwhile cancels the handler on the
    ``http.disconnect`` that hypercorn queues just before, and the cancellation
    lands in hypercorn's close, leaving the socket open: a keep-alive client
    would then hold the shutdown until hypercorn's backstop.  The final send
    only writes the end of the body (hypercorn already shields that write).
    """

    async def send_finishing(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True):
                await send(message)
        else:
            await send(message)

    return send_finishing


def _with_request_id(send: Send, request_id: bytes) -> Send:
    """`send` that adds ``x-request-id`` to the response head (the Quart routes)."""

    async def send_with_request_id(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", request_id)]}
        await send(message)

    return send_with_request_id


def _with_cors(send: Send, cors_headers: list[tuple[bytes, bytes]]) -> Send:
    """`send` that swaps any Access-Control-* response headers for ours."""

    async def send_with_cors(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            kept = [(k, v) for k, v in message.get("headers", ()) if not k.lower().startswith(b"access-control-")]
            message = {**message, "headers": kept + cors_headers}
        await send(message)

    return send_with_cors


class Gate:
    """ASGI middleware in front of the Quart app; see the module docstring."""

    def __init__(self, app: ASGIApp, state: ProxyState) -> None:
        self.app = app
        self.state = state
        self.endpoint = ProxyEndpoint(state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        snapshot = self.state.current
        scope[SNAPSHOT_KEY] = snapshot
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        request_id = sanitize_request_id(_header(headers, b"x-request-id")) or self.state.token()
        scope[REQUEST_ID_KEY] = request_id
        set_request_id(request_id)  # this task serves this one request: every log line carries the id
        plain = send  # for the endpoint, which shields its own last message (one wrapper less per event)
        send = _finishing(send)
        origin = _header(headers, b"origin")
        cors = snapshot.config.server.cors
        if origin is not None:
            if cors is not None and scope["method"] == "OPTIONS" and _header(headers, b"access-control-request-method"):
                await self._preflight(scope, send, origin, headers)
                return
            allowed = _encode(cors.response_headers(origin)) if cors is not None else []
            send, plain = _with_cors(send, allowed), _with_cors(plain, allowed)
        too_big = _header_problem(headers, snapshot.config.server.max_header_bytes)
        if too_big is not None:
            await self._refuse(scope, send, too_big, [])
            return
        if scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, _with_request_id(send, request_id.encode()))
            return
        await self._admit(snapshot, scope, receive, send, origin, plain)

    async def _admit(self, snapshot: Snapshot, scope: Scope, receive: Receive, send: Send,
                     origin: str | None, plain: Send) -> None:
        verdict = self._authenticate(snapshot, scope, origin)
        if isinstance(verdict, ProxyError):
            extra = _WWW_AUTHENTICATE if verdict.status == 401 else []
            await self._refuse(scope, send, verdict, extra)
            return
        scope[CLIENT_KEY] = verdict
        concurrency = self.state.concurrency
        if not concurrency.try_acquire():
            assert concurrency.limit is not None
            await self._refuse(scope, send, busy_error(concurrency.limit),
                               retry_after_headers(BUSY_RETRY_AFTER_SECONDS))
            return
        try:
            wait, per_minute = self._rate(snapshot, verdict)
            if wait is not None:
                log.info("rate limit reached for client %s (%d/min)", verdict.name, per_minute)
                await self._refuse(scope, send, rate_limited_error(per_minute, wait), retry_after_headers(wait))
                return
            route = ROUTES.get(scope["path"]) if scope["method"] == "POST" else None
            if route is None:
                await self.app(scope, receive, _with_request_id(send, scope[REQUEST_ID_KEY].encode()))
                return
            await self.endpoint(scope, receive, plain, snapshot=snapshot, request_id=scope[REQUEST_ID_KEY],
                                who=verdict, client=route[0], count_tokens=route[1])
        finally:
            concurrency.release()

    def _authenticate(self, snapshot: Snapshot, scope: Scope, origin: str | None) -> Client | ProxyError:
        auth = snapshot.config.server.auth
        if auth.required:
            verdict = auth.authenticate(scope["headers"])
            if isinstance(verdict, ProxyError):
                log.info("refused %s %s from %s: %s", scope["method"], scope["path"], _peer(scope), verdict.message)
            return verdict
        cors = snapshot.config.server.cors
        if origin is not None and (cors is None or not cors.allows(origin)):
            return ProxyError(403, f"cross-origin browser requests from {origin} are refused: list the origin in "
                                   "server.cors.allow_origins to allow them", type="permission_error")
        server = scope.get("server")
        if not auth.allow_unauthenticated and server and server[1] is not None and not is_loopback(server[0]):
            return ProxyError(403, "this proxy has no client keys and refuses requests on a non-loopback address: "
                                   "configure server.auth.keys (or server.auth.allow_unauthenticated: true)",
                              type="permission_error")
        return ANONYMOUS

    def _rate(self, snapshot: Snapshot, client: Client) -> tuple[float | None, int]:
        limit = snapshot.config.server.rate_limit
        per_minute = client.requests_per_minute or (limit.requests_per_minute if limit else None)
        if per_minute is None:
            return None, 0
        return self.state.limiter.acquire(client.name, per_minute=per_minute, now=trio.current_time()), per_minute

    async def _refuse(self, scope: Scope, send: Send, err: ProxyError, headers: list[tuple[str, str]]) -> None:
        client = protocol_of(scope["path"], _HeaderNames(scope["headers"]))
        peer = scope.get("client")
        self.state.observe.refused(request_id=scope[REQUEST_ID_KEY], method=scope["method"], path=scope["path"],
                                   client_ip=peer[0] if peer else None, client=client.value, error=err)
        if err.should_retry is not None:
            headers = [*headers, ("x-should-retry", "true" if err.should_retry else "false")]
        await _reply(send, scope, err.status, [("content-type", "application/json"), *headers],
                     error_body(client, err))

    async def _preflight(self, scope: Scope, send: Send, origin: str, headers: list[tuple[bytes, bytes]]) -> None:
        cors = scope[SNAPSHOT_KEY].config.server.cors
        answer = cors.preflight(origin, _header(headers, b"access-control-request-method") or "",
                                _header(headers, b"access-control-request-headers") or "")
        if answer is None:
            # No CORS headers: the browser blocks the request; the body helps whoever reads the network log.
            body = b'{"error":"origin not allowed by server.cors.allow_origins"}'
            await _reply(send, scope, 403, [("content-type", "application/json")], body)
            return
        await _reply(send, scope, 204, answer, b"")


class _HeaderNames:
    """``name in headers`` over ASGI header pairs, for `protocol_of`."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._names = {name.decode("latin-1") for name, _ in headers}

    def __contains__(self, name: object) -> bool:
        return name in self._names


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"
