"""A lean HTTP/1.1 keep-alive connection pool on trio streams, with h11 as the authority.

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

The wire, fast path and h11.  Driving h11 event by event cost about 95 µs of
CPU per request, as much as all of trio's socket work, so the common exchange
is done here, with h11's grammar (the regular expressions below are those of
``h11/_abnf.py``):

* the request head is written as one ``bytes`` (request line, ``host``, the
  caller's headers, ``content-length``) and sent with the body in one
  ``send_all``; every header is validated first, so a bad one is a ValueError
  before any I/O, as with h11;
* `_parse_head` reads a response head only when it is the plain case: status
  line ``HTTP/1.1 2xx-5xx`` (not 204 or 304), every line a well-formed
  ``name: value``, and framed by exactly one all-digits ``content-length`` or
  by exactly ``transfer-encoding: chunked``.  The body is then cut from the
  buffer (`_LengthBody`) or de-chunked (`_ChunkedBody`, h11's ChunkedReader
  rules).  A small response arrives in one 64 KiB read and costs one parse.
* Anything else, a 1xx, a body read until close, HTTP/1.0, obs-fold, repeated
  or listed content-lengths, a HEAD request, garbage, goes to h11: an
  ``h11.Connection`` is told what we sent (the same request as events) and fed
  every byte received so far, and it parses that response (`_H11Body`).  So
  the fast path never accepts what h11 would reject, nor reads it differently:
  ``tests/unit/test_h11_pool_wire.py`` checks that against h11 itself.

`request` returns when the response head is in; the body is then pulled by
`_PooledResponse.receive_some`, which returns whatever one socket read yielded
(several chunks of a chunked body come out as one piece, a slow stream's pieces
as they arrive).  At the end of the body the connection goes back on the idle
stack if nothing follows the body in the buffer and neither side asked to
close (RFC 9112 §9.3: ``connection: close`` and read-until-close bodies end
the connection); in every other case (early close, error, cancellation) the
connection is closed under a shielded cancel scope and its slot released, so a
cancelled request never leaves a half-read connection behind.

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

import re
import ssl
from collections import deque
from typing import Protocol, Union

import h11
import trio

from .base import Origin, UpstreamConnectError, UpstreamProtocolError, UpstreamResponse

__all__ = ["H11Pool"]

_Stream = Union[trio.SocketStream, trio.SSLStream[trio.SocketStream]]
_Head = tuple[int, list[tuple[bytes, bytes]], "_BodyDecoder"]  # status, headers, body decoder

# What breaks a connection: socket errors, TLS errors (trio wraps them in
# BrokenResourceError), a stream we closed ourselves, a peer that is not HTTP
# (the fast path raises h11's RemoteProtocolError too).
_BROKEN = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError)

# Closing never blocks (aclose_forcefully), but a cleanup path must not hang on
# a misbehaving stream either.
_CLOSE_TIMEOUT = 1.0

# RFC 9110 §8.6: a user agent SHOULD NOT send Content-Length when the request
# has no content and the method does not anticipate any.
_METHODS_WITH_CONTENT = frozenset({b"POST", b"PUT", b"PATCH"})

# --- the grammar (RFC 9110 §5.5, RFC 9112 §3, §4, §5, §7.1), as h11/_abnf.py spells it ----------

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_FIELD_VALUE = rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?"  # no leading/trailing blanks, no CR/LF/NUL
_TOKEN_RE = re.compile(_TOKEN)
_FIELD_VALUE_RE = re.compile(_FIELD_VALUE)
_TARGET_RE = re.compile(rb"[\x21-\x7e]+")
_HEADER_FIELD_RE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _FIELD_VALUE + rb")[ \t]*")
# The fast path's own subset: HTTP/1.1, a final status that can have a body.
_STATUS_LINE_RE = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9])(?: [^\x00\n\r\f\v]*)?\r\n")
# One header line per match, anchored at a line start: a line that does not
# match whole yields no match at all, which the line count then notices.
_HEADER_LINE_RE = re.compile(rb"^(" + _TOKEN + rb"):[ \t]*(" + _FIELD_VALUE + rb")[ \t]*\r\n", re.MULTILINE)
_CHUNK_HEADER_RE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*\r\n")
_DIGITS_RE = re.compile(rb"[0-9]{1,20}")  # h11 refuses longer content-lengths
_BLANK_LINE_RE = re.compile(rb"\n\r?\n")  # h11 ends a head at a bare-LF blank line too
_FOLD_RE = re.compile(rb"[ \t]+")

# h11's limit on a head (or a chunk header, or trailers) still incomplete.
_MAX_INCOMPLETE = 16 * 1024

# Kinds of request header names, by the name as given (cached per pool).
_PLAIN, _CONNECTION, _OURS = 0, 1, 2
_MAX_CACHED_NAMES = 512


async def _close_stream(stream: _Stream) -> None:
    """Close a stream at once, even inside a cancelled scope; never raises."""
    with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
        try:
            await trio.aclose_forcefully(stream)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _has_close(value: bytes) -> bool:
    """Does a Connection header value list ``close`` (RFC 9112 §9.6, case-insensitive)?"""
    return b"close" in [token.strip() for token in value.lower().split(b",")]


# --- the request --------------------------------------------------------------------------------


class _Request:
    """One request: its bytes on the wire, and what h11 needs to be told if it takes over."""

    __slots__ = ("body", "closes", "headers", "method", "target", "wire")

    def __init__(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, wire: bytes, closes: bool
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.wire = wire
        self.closes = closes  # the caller sent "connection: close": the connection ends with the response


def _name_kind(name: bytes, cache: dict[bytes, int]) -> int:
    """Validate a request header name once; remember what it is."""
    if _TOKEN_RE.fullmatch(name) is None:
        raise ValueError(f"invalid upstream request: illegal header name {name!r}")
    lower = name.lower()
    if lower == b"connection":
        kind = _CONNECTION
    elif lower in (b"host", b"content-length", b"transfer-encoding"):
        kind = _OURS
    else:
        kind = _PLAIN
    if len(cache) >= _MAX_CACHED_NAMES:
        cache.clear()
    cache[name] = kind
    return kind


def _encode_request(
    method: bytes, target: bytes, host_line: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
    names: dict[bytes, int],
) -> _Request:
    """Validate (before any I/O) and serialise a request; RFC 9112 §3.2: Host first.

    The checks are h11's: method a token, target visible ASCII, names tokens,
    values without CR, LF, NUL or surrounding blanks (no header injection).
    Host and Content-Length are ours to set, Transfer-Encoding would contradict
    the Content-Length we send: the caller may not pass them.
    """
    if _TOKEN_RE.fullmatch(method) is None or _TARGET_RE.fullmatch(target) is None:
        raise ValueError(f"invalid upstream request line: {method!r} {target!r}")
    parts = [method, b" ", target, b" HTTP/1.1\r\n", host_line]
    closes = False
    for name, value in headers:
        kind = names.get(name)
        if kind is None:
            kind = _name_kind(name, names)
        if _FIELD_VALUE_RE.fullmatch(value) is None:
            raise ValueError(f"invalid upstream request: illegal value of header {name!r}")
        if kind:
            if kind == _OURS:
                raise ValueError(f"invalid upstream request: the transport sets {name!r} itself")
            closes = closes or _has_close(value)
        parts += (name, b": ", value, b"\r\n")
    if body or method in _METHODS_WITH_CONTENT:
        parts.append(b"content-length: %d\r\n" % len(body))
    parts += (b"\r\n", body)
    return _Request(method, target, headers, body, b"".join(parts), closes)


def _h11_told(request: _Request, host: bytes) -> h11.Connection:
    """An h11 client that believes it has just sent `request` (its bytes are already out)."""
    h = h11.Connection(h11.CLIENT)
    headers = [(b"host", host), *request.headers]
    if request.body or request.method in _METHODS_WITH_CONTENT:
        headers.append((b"content-length", b"%d" % len(request.body)))
    h.send(h11.Request(method=request.method, target=request.target, headers=headers))
    if request.body:
        h.send_with_data_passthrough(h11.Data(data=request.body))
    h.send(h11.EndOfMessage())
    return h


# --- the response -------------------------------------------------------------------------------


class _BodyDecoder(Protocol):
    """Turns what socket reads return into body bytes (no I/O).

    `feed` takes what one read returned (``b""``: the peer closed); `next`
    returns the body bytes decodable now, ``b""`` once the body is complete, or
    None when it needs another read.  Once `next` has returned the end,
    ``done`` is True and ``reusable`` says whether the connection can carry
    another request: nothing followed the body and neither side asked to close.
    """

    done: bool
    reusable: bool

    def feed(self, data: bytes) -> None: ...

    def next(self) -> bytes | None: ...


def _parse_head(buf: bytes, end: int, method: bytes, closes: bool) -> _Head | None:
    """The plain response head ``buf[:end + 4]``, or None to let h11 read it (see the module doc).

    Returns the status, the headers (names lower-cased, values without the
    surrounding blanks, as h11 gives them) and the body decoder, which already
    holds the bytes after the head.
    """
    status_line = _STATUS_LINE_RE.match(buf, 0, end + 2)
    if status_line is None or method == b"HEAD" or method == b"CONNECT":
        return None
    block = buf[status_line.end() : end + 2]
    pairs = _HEADER_LINE_RE.findall(block)
    if len(pairs) != block.count(b"\n"):  # some line is not a plain header line
        return None
    headers = [(name.lower(), value) for name, value in pairs]
    length = chunked = None
    keep_alive = not closes
    for name, value in headers:
        if name == b"content-length":
            if length is not None or _DIGITS_RE.fullmatch(value) is None:
                return None
            length = int(value)
        elif name == b"transfer-encoding":
            if chunked is not None or value != b"chunked":
                return None
            chunked = True
        elif name == b"connection" and keep_alive:
            keep_alive = not _has_close(value)
    status = int(status_line[1])
    if status == 204 or status == 304 or (length is None) == (chunked is None):  # neither or both
        return None
    rest = buf[end + 4 :]
    body: _BodyDecoder = _ChunkedBody(rest, keep_alive) if chunked else _LengthBody(length or 0, rest, keep_alive)
    return status, headers, body


class _LengthBody:
    """A `_BodyDecoder` for ``content-length`` bytes (RFC 9112 §6.2); hands out read buffers uncopied."""

    __slots__ = ("_buf", "_eof", "_length", "_remaining", "done", "keep_alive", "reusable")

    def __init__(self, length: int, rest: bytes, keep_alive: bool) -> None:
        self._length = self._remaining = length
        self._buf = rest
        self._eof = False
        self.keep_alive = keep_alive
        self.done = False
        self.reusable = False

    def feed(self, data: bytes) -> None:
        if data:
            self._buf = self._buf + data if self._buf else data
        else:
            self._eof = True

    def next(self) -> bytes | None:
        buf, remaining = self._buf, self._remaining
        if len(buf) >= remaining:  # the end is in: the common case, all at once
            self.done = True
            # Bytes after the body would be read as the next response.
            self.reusable = self.keep_alive and len(buf) == remaining
            self._buf, self._remaining = b"", 0
            return buf if len(buf) == remaining else buf[:remaining]
        if buf:
            self._buf, self._remaining = b"", remaining - len(buf)
            return buf
        if self._eof:
            received = self._length - remaining
            raise h11.RemoteProtocolError(
                "peer closed connection without sending complete message body "
                f"(received {received} bytes, expected {self._length})"
            )
        return None


class _ChunkedBody:
    """A `_BodyDecoder` for chunked bodies (RFC 9112 §7.1), as h11's ChunkedReader; trailers are dropped.

    ``_left`` is what remains of the current chunk's data (0: a chunk header is
    next), ``_footer`` the part of the CRLF after a chunk's data still expected.
    """

    __slots__ = ("_buf", "_eof", "_footer", "_left", "_trailer", "done", "keep_alive", "reusable")

    def __init__(self, rest: bytes, keep_alive: bool) -> None:
        self._buf = rest
        self._eof = False
        self._left = 0
        self._footer = b""
        self._trailer = False
        self.keep_alive = keep_alive
        self.done = False
        self.reusable = False

    def feed(self, data: bytes) -> None:
        if data:
            self._buf = self._buf + data if self._buf else data
        else:
            self._eof = True

    def next(self) -> bytes | None:
        if self.done:
            return b""
        buf = self._buf
        pieces: list[bytes] = []
        pos = self._decode(buf, pieces)
        self._buf = buf[pos:] if pos else buf
        if pieces:
            return b"".join(pieces)
        if self.done:
            return b""
        if self._eof:
            raise h11.RemoteProtocolError(
                "peer closed connection without sending complete message body (incomplete chunked read)"
            )
        if len(self._buf) > _MAX_INCOMPLETE:
            raise h11.RemoteProtocolError("chunk header or trailer too long")
        return None

    def _decode(self, buf: bytes, pieces: list[bytes]) -> int:
        """Append the chunk data in `buf` to `pieces`; return how much of `buf` was used."""
        pos, size = 0, len(buf)
        while pos < size:
            if self._footer:
                got = buf[pos : pos + len(self._footer)]
                if not self._footer.startswith(got):
                    raise h11.RemoteProtocolError(f"malformed chunk footer: {got!r}")
                self._footer = self._footer[len(got) :]
                pos += len(got)
            elif self._trailer:
                return self._end(buf, pos)
            elif self._left:
                take = min(self._left, size - pos)
                pieces.append(buf[pos : pos + take] if take < size else buf)
                self._left -= take
                pos += take
                if not self._left:
                    self._footer = b"\r\n"
            else:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    break
                header = _CHUNK_HEADER_RE.fullmatch(buf, pos, line_end + 2)
                if header is None:
                    raise h11.RemoteProtocolError(f"illegal chunk header: {buf[pos : line_end + 2]!r}")
                self._left = int(header[1], 16)
                self._trailer = not self._left
                pos = line_end + 2
        return pos

    def _end(self, buf: bytes, pos: int) -> int:
        """Skip the trailer section (h11 accepts a bare-LF blank line here); set done when it is in."""
        if buf.startswith(b"\n", pos):
            end = pos + 1
        elif buf.startswith(b"\r\n", pos):
            end = pos + 2
        else:
            blank = _BLANK_LINE_RE.search(buf, pos)
            if blank is None:
                return pos
            end = blank.end()
            _check_trailer(buf[pos:end])
        self.done = True
        self.reusable = self.keep_alive and end == len(buf)
        return end


def _check_trailer(section: bytes) -> None:
    """Raise unless every trailer line is ``name: value`` (obs-fold joined first, as h11 does)."""
    lines = [line[:-1] if line.endswith(b"\r") else line for line in section.split(b"\n")[:-2]]
    unfolded: list[bytes] = []
    for line in lines:
        fold = _FOLD_RE.match(line)
        if fold is None:
            unfolded.append(line)
        elif not unfolded:
            raise h11.RemoteProtocolError("continuation line at start of trailers")
        else:
            unfolded[-1] += b" " + line[fold.end() :]
    for line in unfolded:
        if _HEADER_FIELD_RE.fullmatch(line) is None:
            raise h11.RemoteProtocolError(f"illegal trailer line: {line!r}")


class _H11Body:
    """A `_BodyDecoder` that lets h11 read the body (the head did not take the fast path)."""

    __slots__ = ("_h", "done", "reusable")

    def __init__(self, h: h11.Connection) -> None:
        self._h = h
        self.done = False
        self.reusable = False

    def feed(self, data: bytes) -> None:
        self._h.receive_data(data)  # b"" tells h11 about EOF

    def next(self) -> bytes | None:
        h = self._h
        pieces: list[bytes | bytearray] = []
        while True:
            event = h.next_event()
            if type(event) is h11.Data:
                pieces.append(event.data)
            elif event is h11.NEED_DATA:
                return b"".join(pieces) if pieces else None
            elif type(event) is h11.EndOfMessage:
                self.done = True
                # Bytes after the response would be read as the next response;
                # a closed receive side means read-until-close framing.
                self.reusable = (
                    h.our_state is h11.DONE and h.their_state is h11.DONE and h.trailing_data == (b"", False)
                )
                return b"".join(pieces)
            else:
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in a body")


# --- the pool -----------------------------------------------------------------------------------


class _Connection:
    """One upstream connection; between requests nothing of it is buffered."""

    __slots__ = ("idle_since", "received", "socket", "stream")

    def __init__(self, stream: _Stream, socket: trio.socket.SocketType) -> None:
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
        self._names: dict[bytes, int] = {}  # request header names already validated
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
        request = _encode_request(method, target, pool.host_line, headers, body, self._names)
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
        self, pool: _OriginPool, request: _Request, connect_timeout: float
    ) -> tuple[_Connection, _Head]:
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

    async def _send(self, pool: _OriginPool, conn: _Connection, request: _Request) -> _Head:
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


async def _receive_head(conn: _Connection, request: _Request, host: bytes, read_size: int) -> _Head:
    """Read until the head is complete; parse a plain one here, hand anything else to h11."""
    buf = b""
    while True:
        data = await conn.stream.receive_some(read_size)
        if not data:
            raise h11.RemoteProtocolError("peer closed the connection before a complete response head")
        conn.received = True
        buf = buf + data if buf else data
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = _parse_head(buf, end, request.method, request.closes)
            if head is not None:
                return head
            break
        # What h11 would end a head at, or reject early: its call from here on.
        if buf[0] < 0x21 or len(buf) > _MAX_INCOMPLETE or _BLANK_LINE_RE.search(buf):
            break
    return await _receive_head_h11(conn, _h11_told(request, host), buf, read_size)


async def _receive_head_h11(conn: _Connection, h: h11.Connection, buf: bytes, read_size: int) -> _Head:
    """Let h11 read the head from `buf` on (the bytes so far), skipping 1xx responses.

    ``conn.received`` is already set: h11 only takes over once a byte has arrived.
    """
    h.receive_data(buf)
    while True:
        event = h.next_event()
        if event is h11.NEED_DATA:
            data = await conn.stream.receive_some(read_size)
            h.receive_data(data)  # b"" tells h11 about EOF
        elif type(event) is h11.Response:
            return event.status_code, list(event.headers), _H11Body(h)
        elif type(event) is not h11.InformationalResponse:  # 1xx: RFC 9110 §15.2, skip
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} instead of a response")


class _PooledResponse(UpstreamResponse):
    """A response being read from a pooled connection; it owns the connection and a slot."""

    __slots__ = ("_body", "_complete", "_conn", "_owner", "_pool")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: _BodyDecoder,
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
