"""A fake LLM upstream on asyncio: SSE streams with timestamps, and fixed JSON answers.

    python -m benchmarks.fake_sse --port 0 --chunks 50 --delay-ms 20

prints ``LISTENING <port>`` once it accepts connections, then serves, on
127.0.0.1 only, until killed:

* ``POST .../chat/completions`` -> the OpenAI format, ``POST .../messages`` ->
  the Anthropic format (protocols.md §1.4, §2.4);
* a request whose JSON body has ``"stream": true`` gets `chunks` events, one
  write every `delay_ms` milliseconds on an absolute schedule (no drift), each
  carrying its index and the ``time.monotonic()`` of its write (see
  `benchmarks.payloads`).  Write 0 also carries the response head and the
  stream's opening events, the last write also the closing events and the end of
  the chunked body, so the upstream makes exactly `chunks` writes per stream: a
  proxy that relays chunk by chunk gives its client one read per write;
* any other request gets the fixed 624-byte ``chat.completion`` (or the fixed
  Anthropic message) with a content-length: the fallback when nginx is missing.

Connections are kept alive (HTTP/1.1), so a proxy's connection pool is
exercised as with a real upstream.  This is deliberately a raw asyncio server:
it is the lightest thing that can keep 100 timed streams on schedule on a core
it shares with the client.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Callable

from .payloads import (
    ANTHROPIC_MESSAGE,
    OPENAI_COMPLETION,
    anthropic_stream_events,
    marker,
    openai_stream_events,
)

__all__ = ["FakeUpstream", "main"]

_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
             b"transfer-encoding: chunked\r\n\r\n")
_MAX_HEAD = 64 * 1024


def _json_response(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)) + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class FakeUpstream:
    """The connection handler; `chunks` events per stream, `delay` seconds apart."""

    def __init__(self, *, chunks: int, delay: float) -> None:
        if chunks < 1 or delay < 0:
            raise ValueError("chunks must be >= 1 and delay >= 0")
        self.chunks = chunks
        self.delay = delay
        self._formats = {"openai": openai_stream_events(), "anthropic": anthropic_stream_events()}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                path, body = request
                kind = "anthropic" if b"/messages" in path else "openai"
                if _STREAM_TRUE.search(body):
                    await self._stream(writer, kind)
                else:
                    writer.write(_json_response(ANTHROPIC_MESSAGE if kind == "anthropic" else OPENAI_COMPLETION))
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the client went away or sent garbage: just drop the connection
        finally:
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter, kind: str) -> None:
        head, event, tail = self._formats[kind]
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in range(self.chunks):
            wait = start + index * self.delay - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            piece = event(marker(index, time.monotonic()))
            if index == 0:
                piece = head + piece
            if index == self.chunks - 1:
                writer.write((_SSE_HEAD if index == 0 else b"") + _chunk(piece + tail) + b"0\r\n\r\n")
            else:
                writer.write((_SSE_HEAD if index == 0 else b"") + _chunk(piece))
            await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """(path, body) of the next request on the connection, None at a clean end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as err:
        if err.partial:
            raise
        return None
    except asyncio.LimitOverrunError:
        raise ValueError("request head too large") from None
    lines = head.split(b"\r\n")
    path = lines[0].split(b" ")[1] if lines[0].count(b" ") >= 2 else b"/"
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        elif name.strip().lower() == b"transfer-encoding":
            raise ValueError("chunked request bodies are not supported by the fake")
    body = await reader.readexactly(length) if length else b""
    return path, body


async def serve(*, port: int, chunks: int, delay: float, ready: Callable[[int], None]) -> None:
    fake = FakeUpstream(chunks=chunks, delay=delay)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", port, backlog=1024, limit=_MAX_HEAD)
    ready(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fake_sse", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--chunks", type=int, default=50, help="events per stream (default 50)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="milliseconds between events (default 20)")
    args = parser.parse_args(argv)

    def ready(port: int) -> None:
        print(f"LISTENING {port}", flush=True)

    try:
        asyncio.run(serve(port=args.port, chunks=args.chunks, delay=args.delay_ms / 1000, ready=ready))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
