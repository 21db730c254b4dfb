"""`core.http1` alone, no sockets and no trio: request bytes, response heads, body decoders.

The comparison with h11 on every kind of response lives in test_h11_pool_wire.py
(through `H11Pool`); here each piece is checked on its own, with inputs fed
whole, one byte at a time, and split at any point.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import http1
from core.http1 import NoHead

HOST_LINE = b"host: upstream.test\r\n"


def encode(method: bytes = b"POST", headers: http1.Headers | None = None, body: bytes = b"{}") -> http1.Request:
    return http1.encode_request(method, b"/v1/x", HOST_LINE, headers or [], body, {})


def drain(decoder: http1.BodyDecoder, pieces: list[bytes]) -> bytes:
    """Feed `pieces` one read at a time (then EOF) and collect the body until `done`."""
    out, reads = [], iter([*pieces, b""])
    while not decoder.done:
        piece = decoder.next()
        if piece is None:
            decoder.feed(next(reads))
        else:
            out.append(piece)
    return b"".join(out)


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# --- the request --------------------------------------------------------------------------------


def test_request_is_one_bytes_with_host_first_and_content_length_last() -> None:
    request = encode(headers=[(b"Authorization", b"Bearer k")], body=b'{"a":1}')
    assert request.wire == (
        b"POST /v1/x HTTP/1.1\r\nhost: upstream.test\r\nAuthorization: Bearer k\r\n"
        b'content-length: 7\r\n\r\n{"a":1}'
    )
    assert not request.closes


@pytest.mark.parametrize(
    ("method", "body", "length"), [(b"GET", b"", None), (b"POST", b"", b"0"), (b"GET", b"x", b"1")]
)
def test_content_length_only_when_there_is_or_could_be_content(
    method: bytes, body: bytes, length: bytes | None
) -> None:
    wire = encode(method, body=body).wire
    assert (b"content-length: %s\r\n" % length in wire) if length else (b"content-length" not in wire)


def test_connection_close_from_the_caller_is_noted() -> None:
    assert encode(headers=[(b"Connection", b"Upgrade, CLOSE")]).closes
    assert not encode(headers=[(b"connection", b"keep-alive")]).closes


@pytest.mark.parametrize("name", [b"Host", b"content-length", b"Transfer-Encoding"])
def test_headers_the_transport_sets_are_refused(name: bytes) -> None:
    with pytest.raises(ValueError, match="sets"):
        encode(headers=[(name, b"1")])


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [(b"PO ST", b"/", []), (b"POST", b"/a b", []), (b"POST", b"/", [(b"x y", b"1")]),
     (b"POST", b"/", [(b"x", b"a\r\nx-injected: 1")]), (b"POST", b"/", [(b"x", b" padded")])],
)
def test_invalid_requests_are_refused_before_any_io(method: bytes, target: bytes, headers: http1.Headers) -> None:
    with pytest.raises(ValueError):
        http1.encode_request(method, target, HOST_LINE, headers, b"", {})


def test_header_names_are_cached_once_validated() -> None:
    names: http1.HeaderNameCache = {}
    http1.encode_request(b"POST", b"/", HOST_LINE, [(b"X-A", b"1"), (b"Connection", b"close")], b"", names)
    assert set(names) == {b"X-A", b"Connection"}


# --- the response head --------------------------------------------------------------------------

PLAIN = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


def test_plain_head_is_parsed_with_the_body_bytes_after_it() -> None:
    head = http1.parse_head(PLAIN, encode())
    assert not isinstance(head, NoHead)
    status, headers, body = head
    assert (status, headers) == (200, [(b"content-type", b"text/plain"), (b"content-length", b"5")])
    assert drain(body, []) == b"hello" and body.reusable


def test_head_fed_one_byte_at_a_time_needs_data_until_it_is_complete() -> None:
    request, buf = encode(), b""
    end = PLAIN.index(b"\r\n\r\n") + 4
    for i, byte in enumerate(one_byte_at_a_time(PLAIN)):
        buf += byte
        head = http1.parse_head(buf, request)
        assert (head is NoHead.NEED_DATA) == (i + 1 < end)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",  # not HTTP/1.1
        b"HTTP/1.1 100 Continue\r\n\r\n",  # 1xx
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",  # read until close
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",  # bare LF: h11 ends the head there
        b" HTTP/1.1 200 OK",  # h11 rejects leading whitespace at once
        b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 17000,  # over h11's limit on an incomplete head
    ],
)
def test_anything_but_the_plain_case_goes_to_h11(response: bytes) -> None:
    assert http1.parse_head(response, encode()) is NoHead.USE_H11


def test_a_head_request_always_goes_to_h11() -> None:
    assert http1.parse_head(PLAIN, encode(b"HEAD", body=b"")) is NoHead.USE_H11


@pytest.mark.parametrize(
    ("request_headers", "response_header", "reusable"),
    [([], b"", True), ([(b"connection", b"close")], b"", False), ([], b"Connection: close\r\n", False)],
)
def test_either_side_asking_to_close_ends_the_connection(
    request_headers: http1.Headers, response_header: bytes, reusable: bool
) -> None:
    response = b"HTTP/1.1 200 OK\r\n" + response_header + b"content-length: 2\r\n\r\nok"
    head = http1.parse_head(response, encode(headers=request_headers))
    assert not isinstance(head, NoHead)
    assert drain(head[2], []) == b"ok" and head[2].reusable is reusable


def test_h11_head_reader_skips_1xx_and_reads_a_body_until_close() -> None:
    request = encode()
    reader = http1.H11HeadReader(request, b"upstream.test", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n")
    assert reader.next() is None
    reader.feed(b"\r\nhel")
    head = reader.next()
    assert head is not None
    status, headers, body = head
    assert (status, headers) == (200, [])
    assert drain(body, [b"lo"]) == b"hello" and not body.reusable


def test_h11_head_reader_raises_what_h11_raises() -> None:
    reader = http1.H11HeadReader(encode(), b"upstream.test", b"garbage\r\n\r\n")
    with pytest.raises(h11.RemoteProtocolError):
        reader.next()


# --- the body decoders --------------------------------------------------------------------------


def test_length_body_one_byte_at_a_time() -> None:
    body = http1.LengthBodyDecoder(5, b"", keep_alive=True)
    assert drain(body, one_byte_at_a_time(b"hello")) == b"hello" and body.reusable


def test_length_body_with_bytes_after_it_is_not_reusable() -> None:
    body = http1.LengthBodyDecoder(5, b"hello", keep_alive=True)
    body.feed(b"HTTP/1.1 200 OK\r\n")
    assert drain(body, []) == b"hello" and not body.reusable


def test_length_body_cut_short_is_an_error() -> None:
    with pytest.raises(h11.RemoteProtocolError, match="received 2 bytes, expected 5"):
        drain(http1.LengthBodyDecoder(5, b"he", keep_alive=True), [])


def chunked(data_pieces: list[bytes], trailer: bytes = b"") -> bytes:
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in data_pieces if p) + b"0\r\n" + trailer + b"\r\n"


@settings(max_examples=200, deadline=None)
@given(
    data_pieces=st.lists(st.binary(max_size=40), max_size=5),
    trailer=st.sampled_from([b"", b"x-t: 1\r\n", b"x-t: 1\r\n folded\r\n"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_chunked_encode_then_decode_at_any_split_points_round_trips(
    data_pieces: list[bytes], trailer: bytes, cuts: list[int]
) -> None:
    wire = chunked(data_pieces, trailer)
    bounds = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    pieces = [wire[a:b] for a, b in zip(bounds, bounds[1:])]
    body = http1.ChunkedBodyDecoder(b"", keep_alive=True)
    assert drain(body, pieces) == b"".join(data_pieces) and body.reusable


def test_chunked_body_one_byte_at_a_time() -> None:
    body = http1.ChunkedBodyDecoder(b"", keep_alive=True)
    assert drain(body, one_byte_at_a_time(chunked([b"hello", b" world"]))) == b"hello world" and body.reusable


def test_chunked_body_with_bytes_after_it_is_not_reusable() -> None:
    body = http1.ChunkedBodyDecoder(chunked([b"ok"]) + b"HTTP/1.1", keep_alive=True)
    assert drain(body, []) == b"ok" and not body.reusable


@pytest.mark.parametrize(
    ("wire", "error"),
    [(b"zz\r\n", "illegal chunk header"), (b"2\r\nokXX", "malformed chunk footer"),
     (b"0\r\n bad\r\n\r\n", "continuation line"), (b"0\r\nno colon\r\n\r\n", "illegal trailer line"),
     (b"5\r\nhe", "incomplete chunked read")],
)
def test_chunked_body_errors(wire: bytes, error: str) -> None:
    with pytest.raises(h11.RemoteProtocolError, match=error):
        drain(http1.ChunkedBodyDecoder(wire, keep_alive=True), [])
