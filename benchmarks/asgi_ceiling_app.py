"""The hypercorn ceiling: a raw ASGI app answering by itself, no framework, no upstream.

The proxy's POST routes are plain ASGI under hypercorn (`io_trio.endpoint`), so
this is the floor under everything the proxy does on them: served exactly as
the proxy is (``hypercorn -k trio -w 1``, pinned) by the ``asgi-ceiling``
scenario, it shows what hypercorn, h11 and trio cost per request and per
streamed event on this machine.  The proxy's figures minus these are what our
own code (gate, endpoint, core, upstream client) adds; `ceiling_app` does the
same with Quart on top, as performance-notes.md measured it.

* A request whose body has ``"stream": true`` gets the SSE fake's stream, made
  here: `BENCH_CHUNKS` events `BENCH_DELAY_MS` apart on an absolute schedule,
  each stamped with its index and ``time.monotonic()`` at its write (the same
  bytes `benchmarks.fake_sse` sends), one ASGI body message per event, as the
  proxy relays them.
* Any other POST gets the fixed 624-byte ``chat.completion``.
* ``GET /health`` answers ``{"status":"ok"}`` (the harness waits for it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from benchmarks.payloads import OPENAI_COMPLETION, marker, openai_stream_events

__all__ = ["app"]

_CHUNKS = int(os.environ.get("BENCH_CHUNKS", "50"))
_DELAY = float(os.environ.get("BENCH_DELAY_MS", "20")) / 1000.0
_HEAD, _EVENT, _TAIL = openai_stream_events()

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["method"] != "POST":
        await _whole(send, b'{"status":"ok"}')
        return
    body = b""
    while True:  # read the body, as the proxy must
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    if b'"stream":true' in body.replace(b" ", b""):
        await _stream(send)
    else:
        await _whole(send, OPENAI_COMPLETION)


async def _whole(send: Send, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [*_JSON, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _stream(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _SSE})
    start = trio.current_time()
    for index in range(_CHUNKS):
        await trio.sleep_until(start + index * _DELAY)
        piece = _EVENT(marker(index, time.monotonic()))
        if index == 0:
            piece = _HEAD + piece
        if index == _CHUNKS - 1:
            piece += _TAIL
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
