"""`H11Pool` on the wire, without sockets: its own HTTP/1.1 fast path checked against h11.

The pool writes request heads itself and parses plain response heads and
bodies itself (that wire code lives in core/http1.py), handing everything else
to h11 (see that module's docstring).  The promise is that nobody can tell: for
any response, cut into any pieces, the pool gives the status, headers, body and
keep-alive verdict that h11 gives, and fails where h11 fails (while reading the
head, or the body).  These tests drive the real `H11Pool` over a scripted
in-memory connection and compare it with a plain h11 client fed the same
pieces: every input whole, one byte at a time, split at every byte, and
hypothesis-generated, plain and odd.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import h11
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import http1
from io_trio.upstream import H11Pool, Origin, UpstreamProtocolError
from io_trio.upstream import h11_pool

ORIGIN = Origin("http", "upstream.test", 8080)
TARGET = b"/v1/chat/completions"
HEADERS = [(b"authorization", b"Bearer sk-test"), (b"content-type", b"application/json")]
BODY = b'{"model":"m","messages":[]}'
COMPLETION = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[]}'

Outcome = tuple[Any, ...]


class ScriptedStream:
    """A connection whose peer answers with `pieces`, one per read, then EOF."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = deque(pieces)
        self.sent = b""
        self.reads = 0
        self.eof_seen = False
        self.closed = False

    async def send_all(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.sent += data

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        self.reads += 1
        if self.pieces:
            return self.pieces.popleft()
        assert not self.eof_seen, "read again after EOF: the client would spin"
        self.eof_seen = True
        return b""

    async def aclose(self) -> None:
        self.closed = True

    def is_readable(self) -> bool:  # stands in for the socket too
        return False


@contextmanager
def scripted(streams: list[ScriptedStream]) -> Iterator[None]:
    """Make `H11Pool` connect to these streams, in order, instead of the network."""
    queue = deque(streams)

    async def connect(pool: object, timeout: float) -> h11_pool._Connection:
        stream = queue.popleft()
        return h11_pool._Connection(stream, stream)  # type: ignore[arg-type]

    with mock.patch.object(h11_pool, "_connect", connect):
        yield


async def pool_outcome(
    pieces: list[bytes], method: bytes = b"POST", headers: list[tuple[bytes, bytes]] = HEADERS, body: bytes = BODY
) -> Outcome:
    """What `H11Pool` makes of a response arriving as `pieces`."""
    stream = ScriptedStream(pieces)
    async with H11Pool() as pool:
        with scripted([stream]), trio.fail_after(5):
            try:
                resp = await pool.request(method, ORIGIN, TARGET, headers, body, connect_timeout=1.0)
            except UpstreamProtocolError as exc:
                return ("head error", exc.response_started)
            try:
                content = await resp.read()
            except UpstreamProtocolError:
                return ("body error",)
            finally:
                await resp.aclose()
        reused = list(pool._pools[(ORIGIN, True)].idle) != []
        assert stream.closed is not reused
        return ("ok", resp.status, resp.headers, content, reused)


def h11_outcome(
    pieces: list[bytes], method: bytes = b"POST", headers: list[tuple[bytes, bytes]] = HEADERS, body: bytes = BODY
) -> Outcome:
    """What a plain h11 client makes of the same (the pool before its fast path did exactly this)."""
    h = h11.Connection(h11.CLIENT)
    all_headers = [(b"host", ORIGIN.host_header), *headers]
    if body or method == b"POST":
        all_headers.append((b"content-length", b"%d" % len(body)))
    h.send(h11.Request(method=method, target=TARGET, headers=all_headers))
    if body:
        h.send(h11.Data(data=body))
    h.send(h11.EndOfMessage())
    queue, received = deque(pieces), False

    def next_event() -> Any:
        nonlocal received
        while (event := h.next_event()) is h11.NEED_DATA:
            data = queue.popleft() if queue else b""
            received = received or bool(data)
            h.receive_data(data)
        return event

    try:
        while type(head := next_event()) is h11.InformationalResponse:
            pass
        if type(head) is not h11.Response:
            raise h11.RemoteProtocolError(f"unexpected {head!r}")
    except h11.RemoteProtocolError:
        return ("head error", received)
    content = b""
    try:
        while type(event := next_event()) is h11.Data:
            content += event.data
        if type(event) is not h11.EndOfMessage:
            raise h11.RemoteProtocolError(f"unexpected {event!r}")
    except h11.RemoteProtocolError:
        return ("body error",)
    reusable = h.our_state is h11.DONE and h.their_state is h11.DONE and h.trailing_data == (b"", False)
    return ("ok", head.status_code, [(name, bytes(value)) for name, value in head.headers], content, reusable)


def response(status: bytes = b"200 OK", headers: list[bytes] | None = None, body: bytes = b"") -> bytes:
    lines = [b"HTTP/1.1 " + status, *(headers if headers is not None else [b"content-length: %d" % len(body)])]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(*chunks: bytes, trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n" + trailer + b"\r\n"


SSE = [b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n', b"data: [DONE]\n\n"]

# Whole responses as an upstream might send them; the first ones take the fast path.
WIRE = {
    "content-length": response(b"200 OK", [b"Content-Type: application/json", b"Content-Length: 59"], COMPLETION),
    "content-length, odd blanks": response(
        b"429", [b"retry-after:7", b"X-A: \t a  b \t", b"x-e:", b"content-length: 2"], b"{}"
    ),
    "empty body": response(b"200 OK", [b"content-length: 0"]),
    "chunked": response(b"200 OK", [b"Content-Type: text/event-stream", b"Transfer-Encoding: chunked"], chunked(*SSE)),
    "chunked, extensions and trailers": response(
        b"200 OK", [b"transfer-encoding: chunked"],
        b"1A;name=value\r\n" + SSE[1] * 2 + b"\r\nd  \r\n" + SSE[1] + b"\r\n0\r\nx-t: 1\r\ny: a\r\n  folded\r\n\r\n",
    ),
    "connection close": response(b"200 OK", [b"Connection: keep-alive, Close", b"content-length: 2"], b"ok"),
    "bytes after the body": response(body=b"ok") + b"H",
    "bytes after a chunked body": response(b"200 OK", [b"transfer-encoding: chunked"], chunked(b"ok")) + b"HTTP/1.1",
    # From here on h11 reads the response.
    "informational first": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
    + response(b"201 Created", body=b"made"),
    "read until close": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + COMPLETION,
    "http/1.0": b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    "204": b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
    "no reason phrase": b"HTTP/1.1 200\r\ncontent-length: 2\r\n\r\nok",
    "repeated content-length": response(b"200 OK", [b"content-length: 2", b"Content-Length: 2"], b"ok"),
    "listed content-length": response(b"200 OK", [b"content-length: 2, 2"], b"ok"),
    "capitalised chunked": response(b"200 OK", [b"transfer-encoding: Chunked"], chunked(b"ok")),
    "obs-fold": response(b"200 OK", [b"x-a: 1", b" 2", b"content-length: 2"], b"ok"),
    "bare LF": b"HTTP/1.1 200 OK\ncontent-length: 4\n\n\r\n\r\n",
    # Broken ones: h11 refuses them, and so must the pool, at the same point.
    "conflicting content-lengths": response(b"200 OK", [b"content-length: 2", b"content-length: 3"], b"ok"),
    "content-length and chunked": response(b"200 OK", [b"content-length: 2", b"transfer-encoding: chunked"], b"ok"),
    "gzip transfer coding": response(b"200 OK", [b"transfer-encoding: gzip"], b"ok"),
    "bad header line": response(b"200 OK", [b"x a: 1", b"content-length: 2"], b"ok"),
    "bad chunk size": response(b"200 OK", [b"transfer-encoding: chunked"], b"zz\r\nok\r\n0\r\n\r\n"),
    "bad chunk footer": response(b"200 OK", [b"transfer-encoding: chunked"], b"2\r\nokXX0\r\n\r\n"),
    "bad trailer": response(b"200 OK", [b"transfer-encoding: chunked"], b"2\r\nok\r\n0\r\nx y\r\n\r\n"),
    "truncated head": b"HTTP/1.1 200 OK\r\ncontent-le",
    "truncated body": response(body=COMPLETION)[:-10],
    "truncated chunked body": response(b"200 OK", [b"transfer-encoding: chunked"], chunked(*SSE))[:-3],
    "garbage": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "nothing": b"",
}


def splits(data: bytes) -> Iterator[list[bytes]]:
    """Every way to cut `data` in two, then one byte at a time."""
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]
    yield [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize("name", list(WIRE))
async def test_the_pool_reads_every_response_as_h11_does_at_every_split(name: str) -> None:
    data = WIRE[name]
    whole = await pool_outcome([data] if data else [])
    assert whole == h11_outcome([data] if data else [])
    for pieces in splits(data):
        assert await pool_outcome(pieces) == h11_outcome(pieces), pieces
        if not name.startswith("bytes after"):  # there, what follows the body may not have been read
            assert await pool_outcome(pieces) == whole


async def test_what_the_plain_responses_give() -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"59")]
    assert await pool_outcome([WIRE["content-length"]]) == ("ok", 200, headers, COMPLETION, True)
    status, _, content, reused = (await pool_outcome([WIRE["chunked"]]))[1:]
    assert (status, content, reused) == (200, b"".join(SSE), True)
    assert await pool_outcome([WIRE["content-length, odd blanks"]]) == (
        "ok", 429, [(b"retry-after", b"7"), (b"x-a", b"a  b"), (b"x-e", b""), (b"content-length", b"2")], b"{}", True
    )
    for name in ("connection close", "bytes after the body", "bytes after a chunked body", "read until close"):
        assert (await pool_outcome([WIRE[name]]))[-1] is False, name
    assert await pool_outcome([WIRE["truncated head"]]) == ("head error", True)
    assert await pool_outcome([]) == ("head error", False)
    assert await pool_outcome([WIRE["truncated body"]]) == ("body error",)


async def test_a_small_response_takes_one_read_and_is_not_copied_again() -> None:
    stream = ScriptedStream([WIRE["content-length"]])
    async with H11Pool() as pool:
        with scripted([stream]):
            resp = await pool.request(b"POST", ORIGIN, TARGET, HEADERS, BODY, connect_timeout=1.0)
            content = await resp.read()
    assert content == COMPLETION and stream.reads == 1
    assert await resp.receive_some() == b""  # stays at the end


async def test_a_head_request_has_no_body_whatever_the_headers_say() -> None:
    wire = response(b"200 OK", [b"content-length: 59"])
    assert await pool_outcome([wire], method=b"HEAD", body=b"") == h11_outcome([wire], method=b"HEAD", body=b"")
    assert await pool_outcome([wire], method=b"HEAD", body=b"") == ("ok", 200, [(b"content-length", b"59")], b"", True)


async def test_a_chunked_stream_comes_out_as_it_arrives() -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    pieces = [head + b"5\r\nHel", b"lo\r\n", b"1\r\n!", b"\r\n0\r", b"\n\r\n"]
    stream = ScriptedStream(pieces)
    async with H11Pool() as pool:
        with scripted([stream]):
            resp = await pool.request(b"POST", ORIGIN, TARGET, HEADERS, BODY, connect_timeout=1.0)
            got = [await resp.receive_some() for _ in range(4)]
            assert [conn.stream for conn in pool._pools[(ORIGIN, True)].idle] == [stream]
    assert got == [b"Hel", b"lo", b"!", b""]


async def test_a_reused_connection_carries_the_next_request() -> None:
    stream = ScriptedStream([response(body=b"one"), response(body=b"two")])
    async with H11Pool() as pool:
        with scripted([stream]):
            for expected in (b"one", b"two"):
                async with await pool.request(b"POST", ORIGIN, TARGET, HEADERS, BODY, connect_timeout=1.0) as resp:
                    assert await resp.read() == expected
    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: upstream.test:8080\r\n"
    request += b"authorization: Bearer sk-test\r\ncontent-type: application/json\r\n"
    request += b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
    assert stream.sent == request * 2


# --- the request side -----------------------------------------------------------------------------


async def test_requests_without_content_have_no_content_length() -> None:
    stream = ScriptedStream([response(body=b"[]")])
    async with H11Pool() as pool:
        with scripted([stream]):
            resp = await pool.request(b"GET", ORIGIN, b"/v1/models", [(b"Accept", b"*/*")], b"", connect_timeout=1.0)
            assert await resp.read() == b"[]"
    assert stream.sent == b"GET /v1/models HTTP/1.1\r\nhost: upstream.test:8080\r\nAccept: */*\r\n\r\n"


@pytest.mark.parametrize(
    ("method", "target", "header"),
    [
        (b"POST", TARGET, (b"x-evil", b"a\r\nhost: b")),
        (b"POST", TARGET, (b"x-evil", b"a\nb")),
        (b"POST", TARGET, (b"x-evil", b"a\x00b")),
        (b"POST", TARGET, (b"x-a", b" leading")),
        (b"POST", TARGET, (b"x-a", b"trailing\t")),
        (b"POST", TARGET, (b"x a", b"1")),
        (b"POST", TARGET, (b"x-a:", b"1")),
        (b"POST", TARGET, (b"", b"1")),
        (b"POST", TARGET, (b"Host", b"elsewhere")),
        (b"POST", TARGET, (b"Content-Length", b"2")),
        (b"POST", TARGET, (b"transfer-encoding", b"chunked")),
        (b"POST", b"/a b", (b"x-a", b"1")),
        (b"POST", b"", (b"x-a", b"1")),
        (b"PO ST", TARGET, (b"x-a", b"1")),
    ],
)
async def test_invalid_requests_are_value_errors_before_any_io(
    method: bytes, target: bytes, header: tuple[bytes, bytes]
) -> None:
    async with H11Pool() as pool:
        with scripted([]):  # connecting would fail: nothing may be sent
            for _ in range(2):  # the second time the header name is already known
                with pytest.raises(ValueError):
                    await pool.request(method, ORIGIN, target, [header], BODY, connect_timeout=1.0)


async def test_a_request_asking_to_close_does_not_leave_the_connection_in_the_pool() -> None:
    wire = response(body=b"ok")
    headers = [(b"Connection", b"close")]
    assert await pool_outcome([wire], headers=headers) == h11_outcome([wire], headers=headers)
    assert (await pool_outcome([wire], headers=headers))[-1] is False


_HEADER_BYTES = st.sampled_from(
    [b"a", b"Z", b"-", b"!", b":", b" ", b"\t", b"\r", b"\n", b"\x00", b"\x7f", b"\xe9", b"/"]
)


@given(
    name=st.lists(_HEADER_BYTES, max_size=4).map(b"".join),
    value=st.lists(_HEADER_BYTES, max_size=6).map(b"".join),
)
@settings(max_examples=400, deadline=None)
def test_request_headers_are_refused_exactly_when_h11_refuses_them(name: bytes, value: bytes) -> None:
    if name.lower() in (b"host", b"content-length", b"transfer-encoding"):
        return  # the transport's own: always refused (see above)
    try:
        h11.Request(method=b"POST", target=b"/", headers=[(b"host", b"h"), (name, value)])
        h11_accepts = True
    except h11.LocalProtocolError:
        h11_accepts = False
    try:
        http1.encode_request(b"POST", b"/", b"host: h\r\n", [(name, value)], b"", {})
        pool_accepts = True
    except ValueError:
        pool_accepts = False
    assert pool_accepts == h11_accepts


# --- any response, any pieces ---------------------------------------------------------------------

_PLAIN_LINES = [b"content-type: application/json", b"X-Request-ID: req_1", b"x-a:b", b"x-b: \t v  v \t", b"x-e:"]
_ODD_LINES = [b"x-bad : 1", b"x-nul: a\x00b", b" folded", b"x-cr: a\rb", b"\xe9: 1", b"x-obs: \x80\xff"]
_PLAIN_FRAMING = [[b"content-length: {n}"], [b"Content-Length: {n}"], [b"transfer-encoding: chunked"]]
_ODD_FRAMING = [
    [b"content-length: {n}", b"content-length: {n}"], [b"content-length: {n}, {n}"], [b"content-length: -1"],
    [b"content-length: {n}", b"content-length: 1{n}"], [b"content-length: 000000000000000000000000{n}"],
    [b"Transfer-Encoding: CHUNKED"], [b"transfer-encoding: chunked", b"content-length: {n}"],
    [b"transfer-encoding: gzip, chunked"], [],
]
_CONNECTION = [[], [], [b"connection: close"], [b"Connection: keep-alive"], [b"connection: Upgrade, close"]]
_PLAIN_STATUS = [b"HTTP/1.1 200 OK", b"HTTP/1.1 200", b"HTTP/1.1 404 Not\tFound", b"HTTP/1.1 503 \xe9"]
_ODD_STATUS = [
    b"HTTP/1.0 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 600 Odd",
    b"HTTP/2 200", b"HTTP/1.1 20 OK",
]


def mostly(plain: list[Any], odd: list[Any]) -> st.SearchStrategy[Any]:
    """Draw from `plain` four times in five: most generated responses should be worth parsing."""
    return st.sampled_from(plain * (4 * max(1, len(odd) // len(plain))) + odd)


@st.composite
def wire_responses(draw: st.DrawFn) -> bytes:
    """A response, plain or odd, maybe preceded by 1xx, maybe cut short or followed by more bytes."""
    status_line = draw(mostly(_PLAIN_STATUS, _ODD_STATUS))
    content = draw(st.binary(max_size=40) | st.sampled_from([b"\r\n\r\n", b"0\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"]))
    lines = draw(st.lists(mostly(_PLAIN_LINES, _ODD_LINES), max_size=3))
    framing = draw(mostly(_PLAIN_FRAMING, _ODD_FRAMING))
    lines += [line.replace(b"{n}", b"%d" % len(content)) for line in framing] + draw(st.sampled_from(_CONNECTION))
    lines = draw(st.permutations(lines))
    if any(b"chunked" in line.lower() for line in framing) and draw(st.sampled_from([True] * 4 + [False])):
        content = chunked_body(draw, content)
    eol = draw(mostly([b"\r\n"], [b"\n"]))
    interim = draw(mostly([b""], [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Hints\r\nlink: </a>\r\n\r\n"]))
    data = interim + eol.join([status_line, *lines]) + eol + eol + content
    cut = draw(st.integers(min_value=0, max_value=len(data)))
    return draw(mostly([data], [data[:cut], data + b"HTTP/1.1 200 OK\r\n\r\n", data + b"\r\n"]))


def chunked_body(draw: st.DrawFn, content: bytes) -> bytes:
    sizes = draw(st.lists(st.integers(min_value=1, max_value=9), max_size=5))
    chunks, rest = [], content
    for size in sizes:
        if rest:
            chunks.append(rest[:size])
            rest = rest[size:]
    if rest:
        chunks.append(rest)
    out = b""
    for piece in chunks:
        size = draw(st.sampled_from([b"%x" % len(piece), b"%X" % len(piece), b"0%x" % len(piece)]))
        ext = draw(st.sampled_from([b"", b"", b";a=b", b"  ", b";\r"]))
        footer = draw(st.sampled_from([b"\r\n"] * 8 + [b"\n", b"XY"]))
        out += size + ext + b"\r\n" + piece + footer
    trailer = draw(st.sampled_from([b"", b"", b"x-t: 1\r\n", b"x-t: 1\r\n folded\r\n", b" x\r\n", b"bad line\r\n"]))
    return out + b"0\r\n" + trailer + draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))


@given(
    data=wire_responses(),
    cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=6),
    method=st.sampled_from([b"POST", b"POST", b"GET", b"HEAD"]),
    close=st.booleans(),
)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_response_in_any_pieces_reads_as_h11_reads_it(
    data: bytes, cuts: list[int], method: bytes, close: bool
) -> None:
    points = sorted({c for c in cuts if c < len(data)})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if data[a:b]]
    headers = [*HEADERS, (b"connection", b"close")] if close else HEADERS
    body = BODY if method == b"POST" else b""
    assert trio.run(pool_outcome, pieces, method, headers, body) == h11_outcome(pieces, method, headers, body)
