"""Real servers on 127.0.0.1 for integration tests: the proxy and fake upstreams.

`FakeUpstream` is a tiny ASGI app that records every request it receives and
answers from a script of `Reply` values, in the real wire formats (the tests
build the bodies from the shapes in protocols.md).  Both it and the proxy run
under hypercorn's trio worker on an ephemeral port.

Faults for resilience tests: a `Reply` can ``hang`` (no head ever), ``stall``
after its pieces (the body never ends), or ``cut`` the connection after its
pieces (no end of body).  Each `Recorded` request notes when it arrived and,
if the proxy hung up before the reply was over, when (``closed_at``); the
fake counts the requests it is still answering (``active``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve


@attrs.define
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # trio.current_time() when the request had fully arrived
    closed_at: float | None = None  # when the client (the proxy) closed the connection mid-reply

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@attrs.define
class Reply:
    """What the fake sends back: a whole body, or pieces with a pause before each."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = attrs.field(factory=list)
    pieces: list[bytes] | None = None
    pause: float = 0.0
    hang: bool = False  # never answer (for timeout tests)
    stall: bool = False  # after the pieces, send nothing more and never end the body
    cut: bool = False  # after the pieces, drop the connection without ending the body


def json_reply(obj: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, json.dumps(obj).encode(), [("content-type", "application/json"), *(headers or [])])


def sse_reply(events: list[tuple[str | None, Any]], *, pause: float = 0.0, stall: bool = False,
              cut: bool = False) -> Reply:
    """An SSE body, one piece per event: (event name or None, JSON value or raw str).

    ``stall``: then go silent with the body unfinished; ``cut``: then drop the connection.
    """
    pieces = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        pieces.append((f"event: {name}\n" if name else "").encode() + f"data: {text}\n\n".encode())
    return Reply(200, b"", [("content-type", "text/event-stream")], pieces=pieces, pause=pause, stall=stall, cut=cut)


def ndjson_reply(lines: list[Any], *, pause: float = 0.0) -> Reply:
    pieces = [json.dumps(line).encode() + b"\n" for line in lines]
    return Reply(200, b"", [("content-type", "application/x-ndjson")], pieces=pieces, pause=pause)


class FakeUpstream:
    """An ASGI app: records requests, replies from `script` (a list or a function)."""

    def __init__(self, script: list[Reply] | Callable[[Recorded], Reply] | None = None) -> None:
        self.requests: list[Recorded] = []
        self.script = script if script is not None else []
        self.disconnected = trio.Event()
        self.url = ""
        self.active = 0  # requests being answered right now (each holds one connection)

    def _next_reply(self, recorded: Recorded) -> Reply:
        if callable(self.script):
            return self.script(recorded)
        if not self.script:
            return json_reply({"error": {"message": "fake upstream has no reply scripted"}}, 500)
        return self.script.pop(0)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        recorded = Recorded(
            method=scope["method"], path=scope["path"], query=scope["query_string"].decode(),
            headers={k.decode().lower(): v.decode() for k, v in scope["headers"]}, body=body,
            at=trio.current_time(),
        )
        self.requests.append(recorded)
        reply = self._next_reply(recorded)
        self.active += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_disconnect, receive, nursery.cancel_scope, recorded)
                await self._send(reply, send)
                nursery.cancel_scope.cancel()
        finally:
            self.active -= 1

    async def _watch_disconnect(self, receive: Callable, scope: trio.CancelScope, recorded: Recorded) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        recorded.closed_at = trio.current_time()
        self.disconnected.set()
        scope.cancel()

    async def _send(self, reply: Reply, send: Callable) -> None:
        if reply.hang:
            await trio.sleep_forever()
        headers = [(k.encode(), v.encode()) for k, v in reply.headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        for piece in reply.pieces or []:
            if reply.pause:
                await trio.sleep(reply.pause)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        if reply.stall:
            await trio.sleep_forever()
        if reply.cut:
            # Returning before the last body message makes hypercorn close the
            # connection mid-body: the client sees the body end without its
            # terminating chunk, i.e. a broken connection.
            return
        await send({"type": "http.response.body", "body": reply.body, "more_body": False})


async def start_server(nursery: trio.Nursery, app: Any) -> str:
    """Serve `app` on 127.0.0.1 at an ephemeral port; return its base URL."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    binds = await nursery.start(serve, app, config)
    return binds[0]
