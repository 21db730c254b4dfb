"""A lean HTTP/1.1 keep-alive connection pool on trio streams; the wire format is `core.http1`.

Theory of operation
-------------------
httpx costs about 1 ms of CPU per proxied request on our machines; this pool
about 0.1 ms (``python -m benchmarks.pool_bench``), so it is the default
`Transport`.

Pooling.  One `H11Pool` serves every origin.  Per ``(origin, ssl_verify)`` it
keeps a LIFO stack of idle connections (the most recently used one is the least
likely to have been closed by the server) and a semaphore of *in-flight
requests*.  A request takes a slot, then reuses an idle connection or opens a
new one only when there is none idle.  Idle connections hold no slot, yet the
number of open connections never exceeds the limit: a new connection is only
opened while the idle stack is empty, when every open connection belongs to
another slot holder.  (Had idle connections kept their slots, a waiter could
wait forever for a slot that an idle connection sits on.)

The wire.  `core.http1` builds the request bytes (validated before any I/O),
parses a plain response head and decodes its body, and hands every other
response to h11 (see its module docstring).  This module only moves bytes:
the request goes out in one ``send_all``; reads are fed to
`core.http1.parse_head` until it gives a head, or to an `H11HeadReader` once it
says h11's turn; the body decoder it returns is then fed one read at a time.

`request` returns when the response head is in; the body is then pulled by
`_PooledResponse.receive_some`, which returns whatever one socket read yielded
(several chunks of a chunked body come out as one piece, a slow stream's pieces
as they arrive).  At the end of the body the connection goes back on the idle
stack if the decoder says it is reusable (nothing follows the body in the
buffer and neither side asked to close, RFC 9112 §9.3); in every other case
(early close, error, cancellation) the connection is closed under a shielded
cancel scope and its slot released, so a cancelled request never leaves a
half-read connection behind.

Stale keep-alive connections: a server may close an idle connection at any
time (RFC 9112 §9.5).  Before reuse we drop connections idle for longer than
``keepalive_expiry`` and those whose socket is readable (the server sent EOF or
bytes nobody asked for).  That check can still lose the race with a close in
flight, so when a *reused* connection fails while sending or ends before any
response byte arrived, the request is sent once more on a fresh connection:
the server closed the connection without answering, the case RFC 9112 §9.3.1
says clients retry, and the one Go's net/http retries even for POST
(``errServerClosedIdle``).  Never after a response byte, never for a fresh
connection.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections import deque
from typing import Union

import h11
import trio

from core.http1 import (
    BodyDecoder,
    H11HeadReader,
    Head,
    HeaderNameCache,
    Headers,
    NoHead,
    Request,
    encode_request,
    parse_head,
)

from .base import Origin, UpstreamConnectError, UpstreamProtocolError, UpstreamResponse

__all__ = ["H11Pool"]


class _PlainStream:
    """A plain TCP connection, read and written without `trio.SocketStream`'s layers.

    Per request the pool makes one `send_all` and one or two `receive_some`
    calls, and one `receive_some` per relayed stream event.  trio's socket
    stream wraps each in conflict detectors and an exception-translating context
    manager, and adds a trip through the scheduler after a call that did not
    need to wait.  Here a call makes the system call and waits
    (`trio.lowlevel.wait_readable` / `wait_writable`) only when the socket is not
    ready, so a call that did not wait is not a checkpoint: the pool's callers
    reach one soon after (a request waits for its response head, a relayed event
    is written to the client).  Errors stay `OSError`s, which the pool counts as
    a broken connection like trio's `BrokenResourceError`.
    """

    __slots__ = ("sock",)

    def __init__(self, tcp: trio.SocketStream) -> None:
        # The socket, taken over from trio's stream (TCP_NODELAY, which trio set, stays set).
        self.sock = socket.socket(fileno=tcp.socket.detach())
        self.sock.setblocking(False)

    async def send_all(self, data: bytes) -> None:
        sock, view, sent = self.sock, memoryview(data), 0
        while sent < len(view):
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)

    async def receive_some(self, max_bytes: int) -> bytes:
        sock = self.sock
        while True:
            try:
                return sock.recv(max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)

    def is_readable(self) -> bool:
        """Whether the peer sent bytes or EOF: for an idle connection, that it cannot be reused."""
        poll = select.poll()
        poll.register(self.sock, select.POLLIN)
        return bool(poll.poll(0))

    async def aclose(self) -> None:
        if self.sock.fileno() != -1:
            trio.lowlevel.notify_closing(self.sock)  # wakes a task waiting on it, with ClosedResourceError
            self.sock.close()
        await trio.lowlevel.checkpoint()


_Stream = Union[_PlainStream, trio.SSLStream[trio.SocketStream]]

# What breaks a connection: socket errors, TLS errors (trio wraps them in
# BrokenResourceError), a stream we closed ourselves, a peer that is not HTTP
# (core.http1 raises h11's RemoteProtocolError too).
_BROKEN = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError)

# Closing never blocks (aclose_forcefully), but a cleanup path must not hang on
# a misbehaving stream either.
_CLOSE_TIMEOUT = 1.0


async def _close_stream(stream: _Stream) -> None:
    """Close a stream at once, even inside a cancelled scope; never raises."""
    with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
        try:
            await trio.aclose_forcefully(stream)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


class _Connection:
    """One upstream connection; between requests nothing of it is buffered."""

    __slots__ = ("idle_since", "received", "socket", "stream")

    def __init__(self, stream: _Stream, socket: _PlainStream | trio.socket.SocketType) -> None:
        self.stream = stream
        self.socket = socket  # the TCP socket under any TLS, for is_readable()
        self.idle_since = 0.0
        self.received = False  # has any byte of the current response arrived?


class _OriginPool:
    """Idle connections (LIFO) and the in-flight limit of one (origin, ssl_verify)."""

    __slots__ = ("host_header", "host_line", "idle", "label", "origin", "slots", "ssl_context")

    def __init__(self, origin: Origin, ssl_context: ssl.SSLContext | None, limit: int) -> None:
        self.origin = origin
        self.ssl_context = ssl_context  # None for plain http
        self.host_header = origin.host_header
        self.host_line = b"host: %s\r\n" % self.host_header
        self.label = f"{origin.scheme}://{origin.host_header.decode()}"
        self.idle: deque[_Connection] = deque()  # oldest left, newest right
        self.slots = trio.Semaphore(limit)


class H11Pool:
    """The default `Transport`: HTTP/1.1 keep-alive connections over trio.

    ``ssl_context`` is the verifying TLS context (default: the system's trust
    store); the pool sets its ALPN protocols to ``http/1.1``.  Connections made
    with ``ssl_verify=False`` skip certificate and host-name checks.
    """

    def __init__(
        self,
        *,
        max_connections_per_origin: int = 100,
        keepalive_expiry: float = 30.0,
        read_size: int = 65536,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections_per_origin < 1:
            raise ValueError("max_connections_per_origin must be at least 1")
        if keepalive_expiry < 0 or read_size < 1:
            raise ValueError("keepalive_expiry must be >= 0 and read_size >= 1")
        self._limit = max_connections_per_origin
        self._keepalive_expiry = keepalive_expiry
        self._read_size = read_size
        self._ssl_context = ssl_context
        self._tls: dict[bool, ssl.SSLContext] = {}  # by ssl_verify, built on first use
        self._pools: dict[tuple[Origin, bool], _OriginPool] = {}
        self._names: HeaderNameCache = {}  # request header names already validated
        self._closed = False

    async def request(
        self,
        method: bytes,
        origin: Origin,
        target: bytes,
        headers: Headers,
        body: bytes,
        *,
        connect_timeout: float,
        ssl_verify: bool = True,
    ) -> UpstreamResponse:
        """Send one request; return once the response head is in (see `Transport`)."""
        if self._closed:
            raise RuntimeError("the upstream pool is closed")
        pool = self._pools.get((origin, ssl_verify)) or self._add_pool(origin, ssl_verify)
        request = encode_request(method, target, pool.host_line, headers, body, self._names)
        try:
            pool.slots.acquire_nowait()  # the common case needs no trip to the scheduler
        except trio.WouldBlock:
            await pool.slots.acquire()
        try:
            conn, (status, response_headers, body_reader) = await self._exchange(pool, request, connect_timeout)
        except BaseException:
            pool.slots.release()
            raise
        return _PooledResponse(status, response_headers, body_reader, conn, pool, self)

    async def aclose(self) -> None:
        """Close the idle connections; responses still being read close theirs at the end."""
        self._closed = True
        idle = [conn for pool in self._pools.values() for conn in pool.idle]
        for pool in self._pools.values():
            pool.idle.clear()
        for conn in idle:
            await _close_stream(conn.stream)

    async def __aenter__(self) -> H11Pool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _add_pool(self, origin: Origin, ssl_verify: bool) -> _OriginPool:
        context = None
        if origin.scheme == "https":
            context = self._tls.get(ssl_verify)
            if context is None:
                context = self._tls[ssl_verify] = self._tls_context(ssl_verify)
        pool = self._pools[(origin, ssl_verify)] = _OriginPool(origin, context, self._limit)
        return pool

    def _tls_context(self, verify: bool) -> ssl.SSLContext:
        """One context per ssl_verify value for the pool's lifetime (loading CAs takes ~50 ms)."""
        if verify:
            context = self._ssl_context if self._ssl_context is not None else ssl.create_default_context()
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])  # RFC 7301; we speak nothing else
        return context

    async def _exchange(
        self, pool: _OriginPool, request: Request, connect_timeout: float
    ) -> tuple[_Connection, Head]:
        """Send on a reused connection, else (or once more, see above) on a new one."""
        conn, dead = self._pop_idle(pool)
        for stale in dead:
            await _close_stream(stale.stream)
        if conn is not None:
            try:
                return conn, await self._send(pool, conn, request)
            except UpstreamProtocolError as exc:
                if exc.response_started:
                    raise
        conn = await _connect(pool, connect_timeout)
        return conn, await self._send(pool, conn, request)

    def _pop_idle(self, pool: _OriginPool) -> tuple[_Connection | None, list[_Connection]]:
        """Decide which idle connection to reuse and which ones to close (no I/O)."""
        idle = pool.idle
        dead: list[_Connection] = []
        if not idle:
            return None, dead
        # Connections are appended as they go idle: the expired ones are on the left.
        oldest_allowed = trio.current_time() - self._keepalive_expiry
        while idle and idle[0].idle_since < oldest_allowed:
            dead.append(idle.popleft())
        while idle:
            conn = idle.pop()
            if not conn.socket.is_readable():
                return conn, dead
            dead.append(conn)  # EOF or unsolicited bytes: unusable
        return None, dead

    async def _send(self, pool: _OriginPool, conn: _Connection, request: Request) -> Head:
        """Write the request in one go and read the response head."""
        conn.received = False
        try:
            await conn.stream.send_all(request.wire)
            return await _receive_head(conn, request, pool.host_header, self._read_size)
        except _BROKEN as exc:
            await _close_stream(conn.stream)
            if conn.received:
                raise UpstreamProtocolError(f"{pool.label}: bad response: {exc}", response_started=True) from exc
            message = f"{pool.label}: connection closed before any response ({exc})"
            raise UpstreamProtocolError(message, response_started=False) from exc
        except BaseException:
            await _close_stream(conn.stream)
            raise

    def _give_back(self, pool: _OriginPool, conn: _Connection) -> bool:
        """Put a finished, reusable connection on the idle stack unless the pool is closed."""
        if self._closed:
            return False
        conn.idle_since = trio.current_time()
        pool.idle.append(conn)
        return True


async def _connect(pool: _OriginPool, timeout: float) -> _Connection:
    """Open a TCP (and TLS) connection; the handshake is part of the connect timeout."""
    origin = pool.origin
    stream: _Stream | None = None
    try:
        with trio.move_on_after(timeout):
            tcp = await trio.open_tcp_stream(origin.host, origin.port)
            if pool.ssl_context is None:
                plain = _PlainStream(tcp)
                return _Connection(plain, plain)
            stream = trio.SSLStream(tcp, pool.ssl_context, server_hostname=origin.host, https_compatible=True)
            await stream.do_handshake()
            return _Connection(stream, tcp.socket)
    except (OSError, trio.BrokenResourceError) as exc:
        if stream is not None:
            await _close_stream(stream)
        reason = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
        raise UpstreamConnectError(f"{pool.label}: cannot connect: {reason}") from exc
    except BaseException:
        if stream is not None:
            await _close_stream(stream)
        raise
    if stream is not None:
        await _close_stream(stream)
    raise UpstreamConnectError(f"{pool.label}: connect timed out after {timeout} s", timed_out=True)


async def _receive_head(conn: _Connection, request: Request, host: bytes, read_size: int) -> Head:
    """Read until core.http1 has the head; if it says so, let h11 read it from the bytes so far."""
    buf = b""
    while True:
        data = await conn.stream.receive_some(read_size)
        if not data:
            raise h11.RemoteProtocolError("peer closed the connection before a complete response head")
        conn.received = True
        buf = buf + data if buf else data
        head = parse_head(buf, request)
        if head is NoHead.USE_H11:
            return await _receive_head_h11(conn, H11HeadReader(request, host, buf), read_size)
        if head is not NoHead.NEED_DATA:
            return head


async def _receive_head_h11(conn: _Connection, reader: H11HeadReader, read_size: int) -> Head:
    """Feed h11 reads until it has the head.

    ``conn.received`` is already set: h11 only takes over once a byte has arrived.
    """
    while (head := reader.next()) is None:
        reader.feed(await conn.stream.receive_some(read_size))  # b"" tells h11 about EOF
    return head


class _PooledResponse(UpstreamResponse):
    """A response being read from a pooled connection; it owns the connection and a slot."""

    __slots__ = ("_body", "_complete", "_conn", "_owner", "_pool")

    def __init__(
        self,
        status: int,
        headers: Headers,
        body: BodyDecoder,
        conn: _Connection,
        pool: _OriginPool,
        owner: H11Pool,
    ) -> None:
        super().__init__(status, headers)
        self._body = body
        self._conn: _Connection | None = conn
        self._pool = pool
        self._owner = owner
        self._complete = False

    async def receive_some(self) -> bytes:
        conn = self._conn
        if conn is None:
            if self._complete:
                return b""
            raise UpstreamProtocolError("the response was closed before its end", response_started=True)
        body = self._body
        try:
            piece = body.next()
            while piece is None:  # nothing decodable yet: one read, however small
                body.feed(await conn.stream.receive_some(self._owner._read_size))
                piece = body.next()
            if body.done:
                self._complete = True
                if not (body.reusable and self._recycle()):
                    await self._release()
            return piece
        except _BROKEN as exc:
            await self._release()
            message = f"{self._pool.label}: response body broken: {exc}"
            raise UpstreamProtocolError(message, response_started=True) from exc
        except BaseException:
            await self._release()
            raise

    async def read(self) -> bytes:
        """The whole body; one that came in a single read is returned as cut from it, not joined again."""
        first = await self.receive_some()
        if not first or self._complete:
            return first
        pieces = [first]
        while piece := await self.receive_some():
            pieces.append(piece)
        return b"".join(pieces)

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._release()

    @property
    def open(self) -> bool:
        return self._conn is not None

    def _recycle(self) -> bool:
        """Give the connection of a completely read response back to the pool (no I/O, no checkpoint)."""
        conn = self._conn
        if conn is None or not self._owner._give_back(self._pool, conn):
            return False
        self._conn = None
        self._pool.slots.release()
        return True

    async def _release(self) -> None:
        """Close the connection, then free the slot."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await _close_stream(conn.stream)
        finally:
            self._pool.slots.release()
