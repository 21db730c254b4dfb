"""A lean HTTP/1.1 keep-alive connection pool: h11 on trio streams.

Theory of operation
-------------------
httpx costs about 1 ms of CPU per proxied request on our machines, an h11 pool
about 0.1 ms (performance-notes.md), so this is the default `Transport`.

One `H11Pool` serves every origin.  Per ``(origin, ssl_verify)`` it keeps a
LIFO stack of idle connections (the most recently used one is the least likely
to have been closed by the server) and a semaphore of *in-flight requests*.
A request takes a slot, then reuses an idle connection or opens a new one only
when there is none idle.  Idle connections hold no slot, yet the number of open
connections never exceeds the limit: a new connection is only opened while the
idle stack is empty, when every open connection belongs to another slot holder.
(Had idle connections kept their slots, a waiter could wait forever for a slot
that an idle connection sits on.)

A request is framed by h11 (``Request``, ``Data``, ``EndOfMessage``) and sent
with one socket write.  `request` returns when the response head is in; the
body is then pulled by `_H11Response.receive_some`, which returns whatever one
socket read yielded (several chunks of a chunked body come out as one piece,
a slow stream's pieces as they arrive).  At the end of the body the connection
goes back on the idle stack when h11 says both sides are DONE and nothing
follows the response (RFC 9112 §9.3: ``connection: close`` and read-until-close
bodies end the connection); in every other case (early close, error,
cancellation) the connection is closed under a shielded cancel scope and its
slot released, so a cancelled request never leaves a half-read connection
behind.

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

import ssl
from collections import deque
from typing import Union

import h11
import trio

from .base import Origin, UpstreamConnectError, UpstreamProtocolError, UpstreamResponse

__all__ = ["H11Pool"]

_Stream = Union[trio.SocketStream, trio.SSLStream[trio.SocketStream]]

# What breaks a connection: socket errors, TLS errors (trio wraps them in
# BrokenResourceError), a stream we closed ourselves, a peer that is not HTTP.
_BROKEN = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError)

# Closing never blocks (aclose_forcefully), but a cleanup path must not hang on
# a misbehaving stream either.
_CLOSE_TIMEOUT = 1.0

# RFC 9110 §8.6: a user agent SHOULD NOT send Content-Length when the request
# has no content and the method does not anticipate any.
_METHODS_WITH_CONTENT = frozenset({b"POST", b"PUT", b"PATCH"})


async def _close_stream(stream: _Stream) -> None:
    """Close a stream at once, even inside a cancelled scope; never raises."""
    with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
        try:
            await trio.aclose_forcefully(stream)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


class _Connection:
    """One upstream connection: a trio stream and its h11 state machine."""

    __slots__ = ("h11", "idle_since", "received", "socket", "stream")

    def __init__(self, stream: _Stream, socket: trio.socket.SocketType) -> None:
        self.stream = stream
        self.socket = socket  # the TCP socket under any TLS, for is_readable()
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        self.received = False  # has any byte of the current response arrived?

    async def receive(self, read_size: int) -> None:
        data = await self.stream.receive_some(read_size)
        if data:
            self.received = True
        self.h11.receive_data(data)  # b"" tells h11 about EOF

    def is_reusable(self) -> bool:
        h = self.h11
        # Bytes after the end of the response would be read as the next
        # response; a closed receive side means read-until-close framing.
        return h.our_state is h11.DONE and h.their_state is h11.DONE and h.trailing_data == (b"", False)


class _OriginPool:
    """Idle connections (LIFO) and the in-flight limit of one (origin, ssl_verify)."""

    __slots__ = ("host_header", "idle", "label", "origin", "slots", "ssl_context")

    def __init__(self, origin: Origin, ssl_context: ssl.SSLContext | None, limit: int) -> None:
        self.origin = origin
        self.ssl_context = ssl_context  # None for plain http
        self.host_header = origin.host_header
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
        self._closed = False

    async def request(
        self,
        method: bytes,
        origin: Origin,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        connect_timeout: float,
        ssl_verify: bool = True,
    ) -> UpstreamResponse:
        """Send one request; return once the response head is in (see `Transport`)."""
        if self._closed:
            raise RuntimeError("the upstream pool is closed")
        pool = self._pools.get((origin, ssl_verify)) or self._add_pool(origin, ssl_verify)
        event = _request_event(method, target, pool.host_header, headers, body)
        try:
            pool.slots.acquire_nowait()  # the common case needs no trip to the scheduler
        except trio.WouldBlock:
            await pool.slots.acquire()
        try:
            conn, head = await self._exchange(pool, event, body, connect_timeout)
        except BaseException:
            pool.slots.release()
            raise
        return _H11Response(head, conn, pool, self)

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
        self, pool: _OriginPool, event: h11.Request, body: bytes, connect_timeout: float
    ) -> tuple[_Connection, h11.Response]:
        """Send on a reused connection, else (or once more, see above) on a new one."""
        conn, dead = self._pop_idle(pool)
        for stale in dead:
            await _close_stream(stale.stream)
        if conn is not None:
            try:
                return conn, await self._send(pool, conn, event, body)
            except UpstreamProtocolError as exc:
                if exc.response_started:
                    raise
        conn = await _connect(pool, connect_timeout)
        return conn, await self._send(pool, conn, event, body)

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

    async def _send(
        self, pool: _OriginPool, conn: _Connection, event: h11.Request, body: bytes
    ) -> h11.Response:
        """Write the request in one go and read the response head."""
        h = conn.h11
        conn.received = False
        try:
            parts = [h.send(event)]
            if body:
                parts += h.send_with_data_passthrough(h11.Data(data=body))
            parts.append(h.send(h11.EndOfMessage()))
            await conn.stream.send_all(b"".join(parts))
            return await _receive_head(conn, self._read_size)
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
        """Put a finished connection on the idle stack if it can carry another request."""
        if self._closed or not conn.is_reusable():
            return False
        conn.h11.start_next_cycle()
        conn.idle_since = trio.current_time()
        pool.idle.append(conn)
        return True


def _request_event(
    method: bytes, target: bytes, host: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> h11.Request:
    """Build (and validate, before any I/O) the request head; RFC 9112 §3.2: Host first."""
    all_headers = [(b"host", host), *headers]
    if body or method in _METHODS_WITH_CONTENT:
        all_headers.append((b"content-length", b"%d" % len(body)))
    try:
        return h11.Request(method=method, target=target, headers=all_headers)
    except h11.LocalProtocolError as exc:
        raise ValueError(f"invalid upstream request: {exc}") from None


async def _connect(pool: _OriginPool, timeout: float) -> _Connection:
    """Open a TCP (and TLS) connection; the handshake is part of the connect timeout."""
    origin = pool.origin
    stream: _Stream | None = None
    try:
        with trio.move_on_after(timeout):
            stream = tcp = await trio.open_tcp_stream(origin.host, origin.port)
            if pool.ssl_context is not None:
                stream = trio.SSLStream(
                    tcp, pool.ssl_context, server_hostname=origin.host, https_compatible=True
                )
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


async def _receive_head(conn: _Connection, read_size: int) -> h11.Response:
    h = conn.h11
    while True:
        event = h.next_event()
        if event is h11.NEED_DATA:
            await conn.receive(read_size)
        elif type(event) is h11.Response:
            return event
        elif type(event) is not h11.InformationalResponse:  # 1xx: RFC 9110 §15.2, skip
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} instead of a response")


class _H11Response(UpstreamResponse):
    """A response being read from a pooled connection; it owns the connection and a slot."""

    __slots__ = ("_complete", "_conn", "_owner", "_pool")

    def __init__(self, head: h11.Response, conn: _Connection, pool: _OriginPool, owner: H11Pool) -> None:
        super().__init__(head.status_code, list(head.headers))
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
        h = conn.h11
        pieces: list[bytes | bytearray] = []
        try:
            while True:
                event = h.next_event()
                if type(event) is h11.Data:
                    pieces.append(event.data)
                elif event is h11.NEED_DATA:
                    if pieces:  # hand out what this read brought, don't wait for more
                        return b"".join(pieces)
                    await conn.receive(self._owner._read_size)
                elif type(event) is h11.EndOfMessage:
                    self._complete = True
                    await self._release(reuse=True)
                    return b"".join(pieces)
                else:
                    raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in a body")
        except _BROKEN as exc:
            await self._release(reuse=False)
            message = f"{self._pool.label}: response body broken: {exc}"
            raise UpstreamProtocolError(message, response_started=True) from exc
        except BaseException:
            await self._release(reuse=False)
            raise

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._release(reuse=False)

    async def _release(self, *, reuse: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not (reuse and self._owner._give_back(self._pool, conn)):
                await _close_stream(conn.stream)
        finally:
            self._pool.slots.release()
