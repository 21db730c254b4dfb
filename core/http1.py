"""HTTP/1.1 client wire format without I/O: request heads out, response heads and bodies in, h11 for the odd cases.

Theory of operation
-------------------
Driving h11 event by event costs about 95 µs of CPU per request, as much as
all of trio's socket work, so the common exchange is done here by hand, with
h11's grammar (the regular expressions below are those of ``h11/_abnf.py``),
and everything else is handed to h11.  Nothing here reads a socket or a clock:
the adapter (``io_trio/upstream/h11_pool.py``) reads, calls in, and does what
the returned values say.

* `encode_request` validates every part of a request (a bad one is a
  ValueError before any I/O, as with h11) and writes it as one ``bytes``:
  request line, ``host`` first (RFC 9112 §3.2), the caller's headers,
  ``content-length`` (RFC 9112 §6.2), the body.
* `parse_head` reads a response head only when it is the plain case: status
  line ``HTTP/1.1 2xx-5xx`` (not 204 or 304, RFC 9112 §6.3 rules 1-2), every
  line a well-formed ``name: value`` (RFC 9112 §5), and framed by exactly one
  all-digits ``content-length`` or by exactly ``transfer-encoding: chunked``
  (RFC 9112 §6.3 rules 3-5).  The body is then cut from the buffer
  (`LengthBodyDecoder`) or de-chunked (`ChunkedBodyDecoder`, RFC 9112 §7.1,
  h11's ChunkedReader rules).  A small response arriving in one read costs
  one parse.
* Anything else, a 1xx, a body read until close, HTTP/1.0, obs-fold, repeated
  or listed content-lengths, a HEAD or CONNECT request, garbage, makes
  `parse_head` answer `NoHead.USE_H11`: an `H11HeadReader` tells an
  ``h11.Connection`` what we sent (the same request as events), feeds it
  every byte received so far, and lets it parse the response
  (`H11BodyDecoder`).  So the fast path never accepts what h11 would reject,
  nor reads it differently; ``tests/unit/test_h11_pool_wire.py`` checks that
  against h11 itself.

Body decoders share one shape (`BodyDecoder`): ``feed(data)`` with what one
read returned (``b""``: the peer closed), ``next()`` for the body bytes
decodable now.  At the end of the body a decoder says whether the connection
may carry another request (``reusable``): only if nothing follows the body in
the buffer (those bytes would be read as the next response) and neither side
asked to close (RFC 9112 §9.3, §9.6); a read-until-close body never is.

Errors in what the peer sent are raised as ``h11.RemoteProtocolError``, the
same type h11 raises on the slow path, so the adapter has one thing to catch.
"""

from __future__ import annotations

import enum
import re
from typing import Protocol

import h11

__all__ = [
    "BodyDecoder",
    "ChunkedBodyDecoder",
    "H11BodyDecoder",
    "H11HeadReader",
    "Head",
    "HeaderNameCache",
    "Headers",
    "LengthBodyDecoder",
    "NoHead",
    "Request",
    "encode_request",
    "parse_head",
]

Headers = list[tuple[bytes, bytes]]
Head = tuple[int, Headers, "BodyDecoder"]  # status, headers (names lower-cased), body decoder
HeaderNameCache = dict[bytes, int]  # request header names already validated, by the name as given

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

# Kinds of request header names (the values of a HeaderNameCache).
_PLAIN, _CONNECTION, _OURS = 0, 1, 2
_MAX_CACHED_NAMES = 512


def _has_close(value: bytes) -> bool:
    """Does a Connection header value list ``close`` (RFC 9112 §9.6, case-insensitive)?"""
    return b"close" in [token.strip() for token in value.lower().split(b",")]


# --- the request --------------------------------------------------------------------------------


class Request:
    """One encoded request: its bytes on the wire, and what h11 needs to be told if it takes over.

    Built once by `encode_request` and never changed (a plain slotted class:
    it is built on every request, and this is the cheapest value to build).
    """

    __slots__ = ("body", "closes", "headers", "method", "target", "wire")

    def __init__(self, method: bytes, target: bytes, headers: Headers, body: bytes, wire: bytes, closes: bool) -> None:
        self.method = method
        self.target = target
        self.headers = headers  # the caller's, without host and content-length
        self.body = body
        self.wire = wire  # head and body, ready for one send
        self.closes = closes  # the caller sent "connection: close": the connection ends with the response


def _name_kind(name: bytes, cache: HeaderNameCache) -> int:
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


def encode_request(
    method: bytes, target: bytes, host_line: bytes, headers: Headers, body: bytes, names: HeaderNameCache
) -> Request:
    """Validate (before any I/O) and serialise a request; RFC 9112 §3.2: Host first.

    ``host_line`` is the whole ``host: ...\\r\\n`` line; ``names`` is a cache
    the caller keeps across requests (header names validated once, not per
    request).  The checks are h11's: method a token, target visible ASCII,
    names tokens, values without CR, LF, NUL or surrounding blanks (no header
    injection).  Host and Content-Length are ours to set, Transfer-Encoding
    would contradict the Content-Length we send: the caller may not pass them.
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
    return Request(method, target, headers, body, b"".join(parts), closes)


# --- the response head --------------------------------------------------------------------------


class NoHead(enum.Enum):
    """Why `parse_head` returned no head."""

    NEED_DATA = "need data"  # read more, then call again with every byte so far
    USE_H11 = "use h11"  # not the plain case: give every byte so far to an `H11HeadReader`


def parse_head(buf: bytes, request: Request) -> Head | NoHead:
    """The response head in `buf` (every byte received so far), if it is the plain case.

    Returns the status, the headers (names lower-cased, values without the
    surrounding blanks, as h11 gives them) and the body decoder, which already
    holds the bytes after the head.  `NoHead.USE_H11` as soon as h11 would
    end the head elsewhere or reject it early, `NoHead.NEED_DATA` otherwise.
    """
    end = buf.find(b"\r\n\r\n")
    if end >= 0:
        head = _parse_plain_head(buf, end, request.method, request.closes)
        return NoHead.USE_H11 if head is None else head
    # What h11 would end a head at (a bare-LF blank line), or reject early: its call.
    if buf and (buf[0] < 0x21 or len(buf) > _MAX_INCOMPLETE or _BLANK_LINE_RE.search(buf)):
        return NoHead.USE_H11
    return NoHead.NEED_DATA


def _parse_plain_head(buf: bytes, end: int, method: bytes, closes: bool) -> Head | None:
    """The head ``buf[:end + 4]`` if it is the plain case, else None (see the module doc)."""
    status_line = _STATUS_LINE_RE.match(buf, 0, end + 2)
    if status_line is None or method == b"HEAD" or method == b"CONNECT":
        return None
    block = buf[status_line.end() : end + 2]
    pairs = _HEADER_LINE_RE.findall(block)
    if len(pairs) != block.count(b"\n"):  # some line is not a plain header line
        return None
    headers = [(name.lower(), value) for name, value in pairs]
    framing = _framing(headers, closes)
    status = int(status_line[1])
    if framing is None or status == 204 or status == 304:
        return None
    length, chunked, keep_alive = framing
    rest = buf[end + 4 :]
    body: BodyDecoder = ChunkedBodyDecoder(rest, keep_alive) if chunked else LengthBodyDecoder(length, rest, keep_alive)
    return status, headers, body


def _framing(headers: Headers, closes: bool) -> tuple[int, bool, bool] | None:
    """(content-length, chunked, keep-alive) of a plain head; None unless exactly one framing (RFC 9112 §6.3)."""
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
    if (length is None) == (chunked is None):  # neither or both
        return None
    return length or 0, bool(chunked), keep_alive


class H11HeadReader:
    """Lets h11 read a response head that `parse_head` left to it; 1xx responses are skipped.

    ``received`` is every byte read so far.  h11 is first told the request,
    whose bytes are already out, so that it frames the response as it would
    had it sent the request itself (a HEAD response has no body, ...).
    """

    __slots__ = ("_h",)

    def __init__(self, request: Request, host: bytes, received: bytes) -> None:
        self._h = _h11_told(request, host)
        self._h.receive_data(received)

    def feed(self, data: bytes) -> None:
        """What one read returned; ``b""`` tells h11 about EOF."""
        self._h.receive_data(data)

    def next(self) -> Head | None:
        """The head once h11 has read it (its body decoder continues with h11), else None: read more."""
        h = self._h
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                return None
            if type(event) is h11.Response:
                return event.status_code, list(event.headers), H11BodyDecoder(h)
            if type(event) is not h11.InformationalResponse:  # 1xx: RFC 9110 §15.2, skip
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} instead of a response")


def _h11_told(request: Request, host: bytes) -> h11.Connection:
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


# --- the response body --------------------------------------------------------------------------


class BodyDecoder(Protocol):
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


class _Buffered:
    """What the two fast-path decoders share: unread bytes, EOF, and the reuse flags."""

    __slots__ = ("_buf", "_eof", "done", "keep_alive", "reusable")

    def __init__(self, rest: bytes, keep_alive: bool) -> None:
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


class LengthBodyDecoder(_Buffered):
    """A `BodyDecoder` for ``content-length`` bytes (RFC 9112 §6.2); hands out read buffers uncopied."""

    __slots__ = ("_length", "_remaining")

    def __init__(self, length: int, rest: bytes, keep_alive: bool) -> None:
        super().__init__(rest, keep_alive)
        self._length = self._remaining = length

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


class ChunkedBodyDecoder(_Buffered):
    """A `BodyDecoder` for chunked bodies (RFC 9112 §7.1), as h11's ChunkedReader; trailers are dropped.

    ``_left`` is what remains of the current chunk's data (0: a chunk header is
    next), ``_footer`` the part of the CRLF after a chunk's data still expected.
    """

    __slots__ = ("_footer", "_left", "_trailer")

    def __init__(self, rest: bytes, keep_alive: bool) -> None:
        super().__init__(rest, keep_alive)
        self._left = 0
        self._footer = b""
        self._trailer = False

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
                pos = self._skip_footer(buf, pos)
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
                pos = self._chunk_header(buf, pos, line_end)
        return pos

    def _skip_footer(self, buf: bytes, pos: int) -> int:
        """Consume (part of) the CRLF that ends a chunk's data."""
        got = buf[pos : pos + len(self._footer)]
        if not self._footer.startswith(got):
            raise h11.RemoteProtocolError(f"malformed chunk footer: {got!r}")
        self._footer = self._footer[len(got) :]
        return pos + len(got)

    def _chunk_header(self, buf: bytes, pos: int, line_end: int) -> int:
        """Read the chunk-size line ``buf[pos:line_end + 2]`` (extensions ignored); size 0 starts the trailers."""
        header = _CHUNK_HEADER_RE.fullmatch(buf, pos, line_end + 2)
        if header is None:
            raise h11.RemoteProtocolError(f"illegal chunk header: {buf[pos : line_end + 2]!r}")
        self._left = int(header[1], 16)
        self._trailer = not self._left
        return line_end + 2

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


class H11BodyDecoder:
    """A `BodyDecoder` that lets h11 read the body (the head did not take the fast path)."""

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
