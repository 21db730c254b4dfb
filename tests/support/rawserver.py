"""A tiny HTTP/1.1 upstream for transport tests, on trio, bound to 127.0.0.1 only.

The server parses requests (enough of HTTP/1.1 for what a client sends:
content-length framed bodies) and leaves the response to the test's handler,
which writes raw bytes: so a test can send a body in timed pieces, use chunked
or read-until-close framing, send garbage, or close the connection at any
point.  The server counts connections (total, open now, most open at once) and
records every request; each connection, and the whole server, is bounded in
time so a broken test cannot hang.

    async def handler(conn: ServerConnection) -> None:
        while await conn.read_request() is not None:
            await conn.send(response(200, b"hello"))

    async with serve(handler) as server:
        ...  # talk to 127.0.0.1:server.port
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import attrs
import trio

__all__ = [
    "RawServer",
    "ReceivedRequest",
    "ServerConnection",
    "chunk",
    "filled_listener",
    "keep_alive_handler",
    "response",
    "serve",
]

Handler = Callable[["ServerConnection"], Awaitable[None]]


@attrs.frozen
class ReceivedRequest:
    """One request as the server read it (header names lower-cased)."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    connection_id: int

    def header(self, name: bytes) -> bytes | None:
        values = [value for key, value in self.headers if key == name]
        assert len(values) <= 1, f"header {name!r} sent {len(values)} times"
        return values[0] if values else None


def response(status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """A response with a content-length header, unless ``headers`` frames it otherwise."""
    head = [b"HTTP/1.1 %d X" % status]
    framing = headers or []
    if not any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in framing):
        framing = [*framing, (b"content-length", b"%d" % len(body))]
    head += [name + b": " + value for name, value in framing]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1); ``chunk(b"")`` ends the body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class ServerConnection:
    """The server side of one accepted connection, handed to the test's handler."""

    def __init__(self, server: RawServer, stream: trio.abc.Stream, connection_id: int) -> None:
        self.server = server
        self.stream = stream
        self.id = connection_id
        self.eof = trio.Event()  # set once the client closed (EOF or reset)
        self._buffer = b""

    async def read_request(self) -> ReceivedRequest | None:
        """The next request, or None if the client closed the connection first."""
        while b"\r\n\r\n" not in self._buffer:
            if not await self._fill():
                assert not self._buffer, f"client closed mid-request: {self._buffer!r}"
                return None
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        request_line, *lines = head.split(b"\r\n")
        method, target, version = request_line.split(b" ")
        assert version == b"HTTP/1.1", request_line
        headers = [(name.strip().lower(), value.strip()) for name, _, value in (line.partition(b":") for line in lines)]
        length = int(dict(headers).get(b"content-length", b"0"))
        self._buffer = rest
        while len(self._buffer) < length:
            assert await self._fill(), "client closed mid-body"
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        request = ReceivedRequest(method, target, headers, body, self.id)
        self.server.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def wait_eof(self) -> None:
        """Read (and discard) until the client closes the connection."""
        while await self._fill():
            self._buffer = b""

    async def close(self) -> None:
        await trio.aclose_forcefully(self.stream)

    async def _fill(self) -> bool:
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""  # a reset is the client going away too
        if not data:
            self.eof.set()
            return False
        self._buffer += data
        return True


@attrs.define
class RawServer:
    """What the tests inspect: the port and what happened so far."""

    port: int = 0
    connections: int = 0  # accepted so far
    open_connections: int = 0
    max_open_connections: int = 0
    requests: list[ReceivedRequest] = attrs.Factory(list)
    accepted: list[ServerConnection] = attrs.Factory(list)

    async def _run(self, handler: Handler, stream: trio.abc.Stream, time_limit: float) -> None:
        self.connections += 1
        self.open_connections += 1
        self.max_open_connections = max(self.max_open_connections, self.open_connections)
        conn = ServerConnection(self, stream, self.connections)
        self.accepted.append(conn)
        try:
            with trio.move_on_after(time_limit):
                await handler(conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away (or failed the TLS handshake)
        finally:
            self.open_connections -= 1
            await trio.aclose_forcefully(stream)


async def keep_alive_handler(conn: ServerConnection) -> None:
    """Answer every request with 200 and its target as the body."""
    while (request := await conn.read_request()) is not None:
        await conn.send(response(200, request.target))


@asynccontextmanager
async def serve(
    handler: Handler = keep_alive_handler,
    *,
    ssl_context: ssl.SSLContext | None = None,
    time_limit: float = 10.0,
) -> AsyncIterator[RawServer]:
    """Run a server on 127.0.0.1 (TLS if ``ssl_context``) for the duration of the block."""
    server = RawServer()

    async def run_connection(stream: trio.abc.Stream) -> None:
        await server._run(handler, stream, time_limit)

    with trio.fail_after(time_limit + 5):
        async with trio.open_nursery() as nursery:
            if ssl_context is None:
                start = partial(trio.serve_tcp, run_connection, 0, host="127.0.0.1")
            else:
                # https_compatible: a client closing without close_notify is an EOF, not an error.
                start = partial(
                    trio.serve_ssl_over_tcp, run_connection, 0, ssl_context, host="127.0.0.1", https_compatible=True
                )
            listeners = await nursery.start(start)
            listener = listeners[0]
            if isinstance(listener, trio.SSLListener):
                listener = listener.transport_listener
            server.port = listener.socket.getsockname()[1]
            yield server
            nursery.cancel_scope.cancel()


def filled_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A 127.0.0.1 listener whose accept queue is full, so new connects hang.

    Linux drops a SYN when the accept queue is full (tcp_conn_request), so a
    connect to it times out instead of being refused.  Close every socket after.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(listener.getsockname())
        except BlockingIOError:
            pass
        fillers.append(filler)
    return listener, fillers
