"""The proxy's POST routes, served as plain ASGI: the hot path, with no framework objects.

Theory of operation: the gate (`io_trio.gate`) hands every admitted
``POST /v1/chat/completions``, ``/v1/messages`` and ``/v1/messages/count_tokens``
(with or without ``/v1``) to `ProxyEndpoint`; everything else goes to the Quart
app.  For one request the endpoint

1. opens the request's trace (`io_trio.observe`), the source of its access log
   line, audit record and metrics;
2. reads the body (413 past ``server.max_body_bytes``, from ``Content-Length``
   before reading when the client declares it);
3. watches ``receive`` for the client's disconnect in a task of its own: a
   client that leaves cancels the upstream wait or the stream at once, since
   hypercorn does not cancel an application whose client is gone;
4. asks the `Forwarder` for a `Reply` while graceful shutdown may still cut the
   wait short (the client then gets a 503 in its protocol, not a cut
   connection);
5. writes the reply: one head and one body message, or the head and then one
   body message per relayed piece, so each upstream event reaches the client
   in its own write as soon as it arrives;
6. closes the stream (which releases the upstream connection) and completes the
   trace, on every path: normal end, client gone, shutdown, or a bug (a 500 in
   the client's protocol when the head has not gone out yet).

Messages are plain dicts and header values are encoded once, so a pass-through
request costs the proxy little more than its two JSON-free byte copies.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from core.auth import Client, authorize
from core.errors import ProxyError
from core.exchange import ClientProtocol
from core.limits import retry_after_headers
from core.requests import parse_client_body

from .forward import Forwarder, Reply, error_reply
from .state import ProxyState, Snapshot

__all__ = ["BODY_TIMEOUT_SECONDS", "ROUTES", "ProxyEndpoint"]

log = logging.getLogger("llm_proxy")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_OPENAI, _ANTHROPIC = ClientProtocol.OPENAI, ClientProtocol.ANTHROPIC
ROUTES: dict[str, tuple[ClientProtocol, bool]] = {
    "/v1/chat/completions": (_OPENAI, False), "/chat/completions": (_OPENAI, False),
    "/v1/messages": (_ANTHROPIC, False), "/messages": (_ANTHROPIC, False),
    "/v1/messages/count_tokens": (_ANTHROPIC, True), "/messages/count_tokens": (_ANTHROPIC, True),
}
"""POST path -> (the client's protocol, whether it is a token count)."""

BODY_TIMEOUT_SECONDS = 300.0  # a client that takes longer to send its body is holding a slot for nothing


class ClientGone(Exception):
    """The client disconnected before its request was complete."""


class _Run:
    """What one request's handler has done so far, for its ``finally``."""

    __slots__ = ("client", "crashed", "done", "reply", "started", "trace", "watch")

    def __init__(self, trace: Any, client: ClientProtocol) -> None:
        self.trace = trace
        self.client = client
        self.watch = _Watch()
        self.reply: Reply | None = None
        self.started = False  # the response head went out
        self.done = False  # the whole response went out
        self.crashed = False


class _Watch:
    """Cancels `scope` when the client disconnects before the response is over (step 3).

    A system task, not a child of the handler: the handler never waits for it
    or cancels it.  It ends on the ``http.disconnect`` that the server sends
    either way: when the client leaves, or when the response is over (hypercorn
    delivers it inside the response's last send, as the ASGI spec has servers
    do once the response is complete), which then cancels nothing.  A nursery
    child cost the handler a nursery, a cancellation and a wait: 5.6% of a
    pass-through request's instructions.
    """

    __slots__ = ("done", "gone", "scope")

    def __init__(self) -> None:
        self.gone = False
        self.done = False  # the whole response went out: a disconnect now is the normal end
        self.scope: trio.CancelScope | None = None

    async def run(self, receive: Receive) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except trio.Cancelled:  # the run is ending
            raise
        except Exception:  # noqa: BLE001 - a receive that fails has nothing more to tell
            return
        if not self.done and self.scope is not None:
            self.gone = True
            self.scope.cancel()


def _declared_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name == "content-length":
            return int(value) if value.isdigit() else None
    return None


def _too_large(limit: int) -> ProxyError:
    return ProxyError(413, f"request body is larger than the limit of {limit} bytes", type="request_too_large")


async def _read_body(receive: Receive, headers: list[tuple[str, str]], limit: int) -> bytes:
    declared = _declared_length(headers)
    if declared is not None and declared > limit:
        raise _too_large(limit)
    pieces: list[bytes] = []
    size = 0
    with trio.move_on_after(BODY_TIMEOUT_SECONDS):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            piece = message.get("body", b"")
            if piece:
                size += len(piece)
                if size > limit:
                    raise _too_large(limit)
                pieces.append(piece)
            if not message.get("more_body", False):
                return pieces[0] if len(pieces) == 1 else b"".join(pieces)
    raise ProxyError(408, f"the request body did not arrive within {BODY_TIMEOUT_SECONDS:g} s",
                     type="invalid_request_error")


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class ProxyEndpoint:
    """Serves the routes of `ROUTES`; see the module docstring."""

    def __init__(self, state: ProxyState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send, *, snapshot: Snapshot,
                       request_id: str, who: Client, client: ClientProtocol, count_tokens: bool) -> None:
        observe = self.state.observe
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
        peer = scope.get("client")
        trace = observe.begin(request_id=request_id, method="POST", path=scope["path"],
                              client_ip=peer[0] if peer else None, headers=headers)
        trace.client_protocol = client.value
        run = _Run(trace, client)
        try:
            await self._serve(run, receive, send, snapshot, who, count_tokens, headers)
        except ClientGone:
            run.watch.gone = True
        except Exception as exc:  # a bug: log it whole, answer 500 if the head has not gone out
            run.crashed = True
            if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]  # the nursery's wrapping of the one error
            log.error("unexpected error serving POST %s: %s", scope["path"], type(exc).__name__, exc_info=exc)
            if not run.started and not run.watch.gone:
                err = ProxyError(500, "internal error in the proxy (see its log)", type="api_error")
                await self._write(send, error_reply(client, err), run)
        finally:
            if run.reply is not None and run.reply.stream is not None:
                await run.reply.stream.aclose()  # releases the upstream; completes the trace if it was not yet
            observe.complete(trace, client_gone=run.watch.gone and not run.done, crashed=run.crashed)

    async def _serve(self, run: _Run, receive: Receive, send: Send, snapshot: Snapshot, who: Client,
                     count_tokens: bool, headers: list[tuple[str, str]]) -> None:
        try:
            raw = await _read_body(receive, headers, snapshot.config.server.max_body_bytes)
        except ProxyError as err:
            run.reply = error_reply(run.client, err)
            await self._write(send, run.reply, run)
            return
        self.state.observe.request_body(run.trace, headers, raw)
        with trio.CancelScope() as scope:
            run.watch.scope = scope
            trio.lowlevel.spawn_system_task(run.watch.run, receive)
            run.reply = await self._reply(snapshot, who, run.client, count_tokens, raw, headers, run.trace)
            await self._write(send, run.reply, run)
            run.done = run.watch.done = True  # the disconnect that follows is not a client gone

    async def _reply(self, snapshot: Snapshot, who: Client, client: ClientProtocol, count_tokens: bool,
                     raw: bytes, headers: list[tuple[str, str]], trace: Any) -> Reply:
        """The reply, or a 503 if graceful shutdown ran out of time before its head was ready."""
        drain = self.state.drain
        with trio.CancelScope() as scope:
            drain.register(scope)  # not drain.bound: a context manager more per request
            try:
                return await _forward(snapshot, who, client, count_tokens, raw, headers, trace)
            except ProxyError as err:
                return error_reply(client, err)
            finally:
                drain.unregister(scope)
        reply = error_reply(client, drain.error())
        reply.headers.extend(retry_after_headers(1))
        return reply

    async def _write(self, send: Send, reply: Reply, run: _Run) -> None:
        body = None if reply.stream is not None else reply.body
        headers = self.state.observe.responded(run.trace, reply.status, reply.headers, body, reply.error)
        if body is not None:
            headers.append(("content-length", str(len(body))))
        run.started = True
        await send({"type": "http.response.start", "status": reply.status, "headers": _encode(headers)})
        if reply.stream is not None:
            async def write(piece: bytes) -> None:
                await send({"type": "http.response.body", "body": piece, "more_body": True})

            await reply.stream.pour(write)
        # The last message is never cancelled half-way: see `io_trio.gate._finishing`.
        with trio.CancelScope(shield=True):
            await send({"type": "http.response.body", "body": body or b""})


async def _forward(snapshot: Snapshot, who: Client, client: ClientProtocol, count_tokens: bool, raw: bytes,
                   headers: list[tuple[str, str]], trace: Any) -> Reply:
    body, model_name = parse_client_body(raw)
    trace.model = model_name
    denied = authorize(who, model_name)
    if denied is not None:
        log.info("client %s may not use model %s", who.name, model_name)
        raise denied
    model = snapshot.config.router.route(model_name)
    if model is None:
        raise ProxyError(404, f"The model {model_name!r} is not served by this proxy; "
                              "GET /v1/models lists the models it serves",
                         type="not_found_error", param="model", code="model_not_found")
    trace.routed(model=model_name, route=model.name, stream=body.get("stream") is True and not count_tokens)
    forwarder = Forwarder(snapshot, client=client, body=body, raw=raw, model_name=model_name, model=model,
                          client_headers=headers, count_tokens=count_tokens, trace=trace)
    return await forwarder.run()
