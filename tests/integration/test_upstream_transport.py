"""The upstream transports against real trio servers on 127.0.0.1.

Behaviour both transports share runs against both (`transport_cls`); what only
the h11 pool promises (the retry of a request on a stale keep-alive connection,
the exact ``response_started`` of a truncated head) runs against `H11Pool`.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
import trustme

from io_trio.upstream import (
    H11Pool,
    HttpxTransport,
    Origin,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamResponse,
)
from tests.support.rawserver import (
    RawServer,
    ServerConnection,
    chunk,
    filled_listener,
    response,
    serve,
)

# A request as the proxy forwards it (shape of openai-python 3.57.0 in the captures).
CHAT_BODY = json.dumps(
    {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "say hi"}],
     "stream_options": {"include_usage": True}},
    separators=(",", ":"),
).encode()
CHAT_HEADERS = [
    (b"authorization", b"Bearer sk-test"),
    (b"content-type", b"application/json"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"identity"),
    (b"user-agent", b"llm-proxy/0.1"),
]
COMPLETION = json.dumps(
    {"id": "chatcmpl-1", "object": "chat.completion", "created": 1764133200, "model": "gpt-4o-mini",
     "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
     "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}
).encode()
SSE_EVENTS = [
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi!"}}]}\n\n',
    b"data: [DONE]\n\n",
]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

Transport = H11Pool | HttpxTransport


@pytest.fixture(params=[H11Pool, HttpxTransport], ids=["h11", "httpx"])
def transport_cls(request: pytest.FixtureRequest) -> type[Transport]:
    return request.param


def origin_of(server: RawServer, scheme: str = "http") -> Origin:
    return Origin(scheme, "127.0.0.1", server.port)


async def post(
    transport: Transport, origin: Origin, target: bytes = b"/v1/chat/completions", **kwargs: object
) -> UpstreamResponse:
    return await transport.request(
        b"POST", origin, target, CHAT_HEADERS, CHAT_BODY, connect_timeout=5.0, **kwargs  # type: ignore[arg-type]
    )


async def fetch(transport: Transport, origin: Origin, target: bytes = b"/v1/chat/completions") -> bytes:
    async with await post(transport, origin, target) as resp:
        assert resp.status == 200
        return await resp.read()


Responder = Callable[[ServerConnection, int], Awaitable[bool]]


def handler_from(respond: Responder) -> Callable[[ServerConnection], Awaitable[None]]:
    """A keep-alive handler; ``respond(conn, n)`` answers the n-th request overall, False ends the connection."""
    count = 0

    async def handler(conn: ServerConnection) -> None:
        nonlocal count
        while await conn.read_request() is not None:
            count += 1
            if not await respond(conn, count):
                return

    return handler


# --- Origin --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin", "path"),
    [
        ("https://api.openai.com/v1", Origin("https", "api.openai.com", 443), "/v1"),
        ("https://API.Anthropic.com/", Origin("https", "api.anthropic.com", 443), ""),
        ("http://127.0.0.1:11434", Origin("http", "127.0.0.1", 11434), ""),
        ("http://[::1]:8080/openai/v1/", Origin("http", "::1", 8080), "/openai/v1"),
    ],
)
def test_origin_parse(url: str, origin: Origin, path: str) -> None:
    assert Origin.parse(url) == (origin, path)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "api.openai.com/v1", "https://", "http://h:99999/", "https://u:p@h/", "http://h/?a=1"]
)
def test_origin_parse_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        Origin.parse(url)


def test_origin_host_header() -> None:
    assert Origin("https", "api.openai.com", 443).host_header == b"api.openai.com"
    assert Origin("http", "127.0.0.1", 8080).host_header == b"127.0.0.1:8080"
    assert Origin("http", "::1", 80).host_header == b"[::1]"


# --- framing --------------------------------------------------------------------------------------


async def test_request_on_the_wire(transport_cls: type[Transport]) -> None:
    async with serve() as server, transport_cls() as transport:
        assert await fetch(transport, origin_of(server), b"/v1/chat/completions?x=1") == b"/v1/chat/completions?x=1"
        get = await transport.request(b"GET", origin_of(server), b"/v1/models", [], b"", connect_timeout=5.0)
        assert await get.read() == b"/v1/models"
    post_seen, get_seen = server.requests
    assert (post_seen.method, post_seen.target, post_seen.body) == (b"POST", b"/v1/chat/completions?x=1", CHAT_BODY)
    # The caller's headers go out unchanged and in order; the transport adds only Host and Content-Length.
    assert post_seen.headers == [
        (b"host", b"127.0.0.1:%d" % server.port), *CHAT_HEADERS, (b"content-length", b"%d" % len(CHAT_BODY))
    ]
    assert get_seen.headers == [(b"host", b"127.0.0.1:%d" % server.port)]  # RFC 9110 §8.6: no content, no length


@pytest.mark.parametrize("framing", ["content-length", "chunked", "read-until-close"])
async def test_response_body_framings(transport_cls: type[Transport], framing: str) -> None:
    async def respond(conn: ServerConnection, n: int) -> bool:
        if framing == "content-length":
            await conn.send(response(200, COMPLETION, [(b"content-type", b"application/json")]))
        elif framing == "chunked":
            await conn.send(response(200, b"", [*SSE_HEADERS, (b"transfer-encoding", b"chunked")]))
            for event in SSE_EVENTS:
                await conn.send(chunk(event))
            await conn.send(chunk(b""))
        else:  # RFC 9112 §6.3 rule 8: no framing header, the body ends when the server closes
            await conn.send(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + COMPLETION)
            return False
        return True

    expected = b"".join(SSE_EVENTS) if framing == "chunked" else COMPLETION
    async with serve(handler_from(respond)) as server, transport_cls() as transport:
        for _ in range(2):
            async with await post(transport, origin_of(server)) as resp:
                assert resp.status == 200
                content_type = b"text/event-stream" if framing == "chunked" else b"application/json"
                assert (b"content-type", content_type) in resp.headers
                assert await resp.read() == expected
                assert await resp.receive_some() == b""  # stays at the end
    # A body framed by the close cannot leave a reusable connection behind.
    assert server.connections == (2 if framing == "read-until-close" else 1)


async def test_informational_responses_are_skipped(transport_cls: type[Transport]) -> None:
    async def respond(conn: ServerConnection, n: int) -> bool:
        await conn.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n")
        await conn.send(response(201, b"made"))
        return True

    async with serve(handler_from(respond)) as server, transport_cls() as transport:
        async with await post(transport, origin_of(server)) as resp:
            assert (resp.status, await resp.read()) == (201, b"made")


async def test_response_headers_are_lower_cased_and_kept_in_order(transport_cls: type[Transport]) -> None:
    async def respond(conn: ServerConnection, n: int) -> bool:
        headers = [(b"Retry-After", b"7"), (b"X-Request-ID", b"req_1")]
        headers += [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")]
        await conn.send(response(429, b"{}", headers))
        return True

    async with serve(handler_from(respond)) as server, transport_cls() as transport:
        async with await post(transport, origin_of(server)) as resp:
            assert resp.status == 429
            assert resp.headers == [
                (b"retry-after", b"7"), (b"x-request-id", b"req_1"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"),
                (b"content-length", b"2"),
            ]


async def test_invalid_request_header_is_a_value_error(transport_cls: type[Transport]) -> None:
    async with serve() as server, transport_cls() as transport:
        with pytest.raises(ValueError):
            await transport.request(
                b"POST", origin_of(server), b"/", [(b"x-evil", b"a\r\nhost: b")], b"{}", connect_timeout=5.0
            )
        assert await fetch(transport, origin_of(server), b"/after") == b"/after"  # the slot was given back


# --- keep-alive -----------------------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(transport_cls: type[Transport]) -> None:
    async with serve() as server, transport_cls() as transport:
        for i in range(5):
            assert await fetch(transport, origin_of(server), b"/%d" % i) == b"/%d" % i
    assert server.connections == 1
    assert [r.connection_id for r in server.requests] == [1] * 5


async def test_a_body_read_to_its_end_leaves_nothing_to_release() -> None:
    """The h11 pool says so (the forwarder then skips a shielded aclose); the connection is reused."""
    async with serve() as server, H11Pool() as transport:
        for _ in range(2):
            resp = await post(transport, origin_of(server))
            assert resp.open
            assert await resp.read() == b"/v1/chat/completions"  # the default server echoes the target
            assert not resp.open
    assert server.connections == 1


async def test_connection_close_responses_are_not_reused(transport_cls: type[Transport]) -> None:
    async def respond(conn: ServerConnection, n: int) -> bool:
        await conn.send(response(200, COMPLETION, [(b"connection", b"close")]))
        await conn.wait_eof()  # the client must close it: we never do
        return False

    async with serve(handler_from(respond)) as server, transport_cls() as transport:
        for _ in range(3):
            assert await fetch(transport, origin_of(server)) == COMPLETION
    assert server.connections == 3


async def test_server_closing_an_idle_connection_is_transparent(transport_cls: type[Transport]) -> None:
    async def respond(conn: ServerConnection, n: int) -> bool:
        await conn.send(response(200, b"n%d" % n))
        return n != 1  # the server's keep-alive timeout fires after the first response

    async with serve(handler_from(respond)) as server, transport_cls() as transport:
        assert await fetch(transport, origin_of(server)) == b"n1"
        with trio.fail_after(2):
            while server.open_connections:
                await trio.sleep(0.01)
        assert await fetch(transport, origin_of(server)) == b"n2"
    assert server.connections == 2


async def test_idle_connections_expire(transport_cls: type[Transport]) -> None:
    async with serve() as server, transport_cls(keepalive_expiry=0.2) as transport:
        await fetch(transport, origin_of(server))
        await fetch(transport, origin_of(server))
        await trio.sleep(0.4)
        await fetch(transport, origin_of(server))
    assert [r.connection_id for r in server.requests] == [1, 1, 2]


async def test_stale_connection_race_is_retried_once_on_a_new_connection() -> None:
    # The server's close crosses the second request: the socket was not readable
    # when the pool reused it, the request is read and dropped without an answer.
    async def handler(conn: ServerConnection) -> None:
        while await conn.read_request() is not None:
            if conn.id == 1 and len(server.requests) == 2:
                return
            await conn.send(response(200, b"c%d" % conn.id))

    async with serve(handler) as server, H11Pool() as pool:
        assert await fetch(pool, origin_of(server)) == b"c1"
        assert await fetch(pool, origin_of(server)) == b"c2"
    assert [r.connection_id for r in server.requests] == [1, 1, 2]


async def test_fresh_connection_closed_without_response_is_not_retried(transport_cls: type[Transport]) -> None:
    async def handler(conn: ServerConnection) -> None:
        await conn.read_request()

    async with serve(handler) as server, transport_cls() as transport:
        with pytest.raises(UpstreamProtocolError) as caught:
            await post(transport, origin_of(server))
    assert caught.value.response_started is False
    assert server.connections == 1 and len(server.requests) == 1


async def test_reused_connection_failing_after_response_bytes_is_not_retried() -> None:
    async def respond(conn: ServerConnection, n: int) -> bool:
        if n == 1:
            await conn.send(response(200, b"ok"))
            return True
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-le")  # the head breaks off
        return False

    async with serve(handler_from(respond)) as server, H11Pool() as pool:
        await fetch(pool, origin_of(server))
        with pytest.raises(UpstreamProtocolError) as caught:
            await post(pool, origin_of(server))
    assert caught.value.response_started is True
    assert server.connections == 1 and len(server.requests) == 2


async def test_garbage_response_is_a_protocol_error(transport_cls: type[Transport]) -> None:
    async def respond(conn: ServerConnection, n: int) -> bool:
        await conn.send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        return False

    async with serve(handler_from(respond)) as server, transport_cls() as transport:
        with pytest.raises(UpstreamProtocolError):
            await post(transport, origin_of(server))


async def test_truncated_body_is_a_protocol_error(transport_cls: type[Transport]) -> None:
    async def respond(conn: ServerConnection, n: int) -> bool:
        if n == 1:
            await conn.send(response(200, COMPLETION)[:-10])
            return False
        await conn.send(response(200, COMPLETION))
        return True

    async with serve(handler_from(respond)) as server, transport_cls() as transport:
        resp = await post(transport, origin_of(server))
        with pytest.raises(UpstreamProtocolError) as caught:
            await resp.read()
        assert caught.value.response_started is True
        await resp.aclose()
        assert await fetch(transport, origin_of(server)) == COMPLETION  # on a new connection
    assert server.connections == 2


# --- connecting -----------------------------------------------------------------------------------


async def test_connection_refused(transport_cls: type[Transport]) -> None:
    with trio.socket.socket() as bound:  # bound, not listening: connecting gets a reset
        await bound.bind(("127.0.0.1", 0))
        origin = Origin("http", "127.0.0.1", bound.getsockname()[1])
        async with transport_cls() as transport:
            with pytest.raises(UpstreamConnectError) as caught:
                await post(transport, origin)
    assert caught.value.timed_out is False


async def test_connect_timeout(transport_cls: type[Transport]) -> None:
    listener, fillers = filled_listener()
    try:
        origin = Origin("http", "127.0.0.1", listener.getsockname()[1])
        async with transport_cls() as transport:
            start = trio.current_time()
            with pytest.raises(UpstreamConnectError) as caught:
                await transport.request(b"POST", origin, b"/", [], b"{}", connect_timeout=0.2)
            assert 0.15 < trio.current_time() - start < 2
    finally:
        for sock in [listener, *fillers]:
            sock.close()
    assert caught.value.timed_out is True


async def test_tls_handshake_counts_toward_the_connect_timeout(transport_cls: type[Transport]) -> None:
    async def silent(conn: ServerConnection) -> None:
        await conn.wait_eof()  # plain TCP server: never answers the ClientHello

    async with serve(silent) as server, transport_cls() as transport:
        with pytest.raises(UpstreamConnectError) as caught:
            await transport.request(b"GET", origin_of(server, "https"), b"/", [], b"", connect_timeout=0.2)
    assert caught.value.timed_out is True


# --- cancellation ---------------------------------------------------------------------------------


async def post_cancelled_once_sent(transport: Transport, server: RawServer) -> None:
    """Post, and cancel the call as soon as the server has read the request."""
    already_seen = len(server.requests)

    async def cancel_when_seen(scope: trio.CancelScope) -> None:
        while len(server.requests) == already_seen:
            await trio.sleep(0.005)
        await trio.sleep(0.01)
        scope.cancel()

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_when_seen, scope)
            await post(transport, origin_of(server))
    assert scope.cancelled_caught


async def test_cancel_while_waiting_for_the_head_closes_the_connection(transport_cls: type[Transport]) -> None:
    async def respond(conn: ServerConnection, n: int) -> bool:
        if n <= 5:
            await conn.wait_eof()  # a slow model: no head yet
            return False
        await conn.send(response(200, b"fine"))
        return True

    async with serve(handler_from(respond)) as server, transport_cls(max_connections_per_origin=1) as transport:
        for i in range(5):
            await post_cancelled_once_sent(transport, server)
            with trio.fail_after(1):  # the upstream sees the connection go promptly
                await server.accepted[i].eof.wait()
        with trio.fail_after(2):  # and the one slot was freed every time
            assert await fetch(transport, origin_of(server)) == b"fine"
    assert server.connections == 6


async def test_megabytes_each_way_arrive_whole_on_a_reused_connection(transport_cls: type[Transport]) -> None:
    # More than the socket buffers hold: the request's write must wait for a server that reads
    # late, and the response arrives in many reads that never have to wait.
    big_request = bytes(range(256)) * 16384  # 4 MiB
    big_response = b"".join(b"%08d" % i for i in range(512 * 1024))  # 4 MiB

    async def respond(conn: ServerConnection, n: int) -> bool:
        await conn.send(response(200, big_response if n == 1 else b"fine"))
        return True

    async def late_reader(conn: ServerConnection) -> None:
        await trio.sleep(0.2)
        await handler_from(respond)(conn)

    async with serve(late_reader) as server, transport_cls() as transport:
        async with await transport.request(b"POST", origin_of(server), b"/v1/x", CHAT_HEADERS, big_request,
                                           connect_timeout=5.0) as resp:
            assert resp.status == 200
            assert await resp.read() == big_response
        assert await fetch(transport, origin_of(server)) == b"fine"
    assert server.requests[0].body == big_request
    assert server.connections == 1


async def test_cancel_while_reading_the_body_closes_the_connection(transport_cls: type[Transport]) -> None:
    async def respond(conn: ServerConnection, n: int) -> bool:
        if n == 1:
            head = response(200, b"", [*SSE_HEADERS, (b"transfer-encoding", b"chunked")])
            await conn.send(head + chunk(SSE_EVENTS[0]))
            await conn.wait_eof()  # the stream stalls
            return False
        await conn.send(response(200, b"fine"))
        return True

    async with serve(handler_from(respond)) as server, transport_cls(max_connections_per_origin=1) as transport:
        resp = await post(transport, origin_of(server))
        assert await resp.receive_some() == SSE_EVENTS[0]
        with trio.move_on_after(0.1) as scope:
            await resp.receive_some()
        assert scope.cancelled_caught
        with trio.fail_after(1):
            await server.accepted[0].eof.wait()
        with pytest.raises(UpstreamProtocolError):
            await resp.receive_some()  # a cut-off body never looks complete
        await resp.aclose()
        with trio.fail_after(2):
            assert await fetch(transport, origin_of(server)) == b"fine"
    assert server.connections == 2


async def test_aclose_before_the_end_closes_the_connection(transport_cls: type[Transport]) -> None:
    async def respond(conn: ServerConnection, n: int) -> bool:
        await conn.send(response(200, COMPLETION)[:-20])
        if n == 1:
            await conn.wait_eof()
            return False
        await conn.send(response(200, COMPLETION)[-20:])
        return True

    async with serve(handler_from(respond)) as server, transport_cls(max_connections_per_origin=1) as transport:
        resp = await post(transport, origin_of(server))
        assert await resp.receive_some()
        assert resp.open
        await resp.aclose()
        await resp.aclose()  # idempotent
        with trio.fail_after(1):
            await server.accepted[0].eof.wait()
        with trio.fail_after(2):
            assert await fetch(transport, origin_of(server)) == COMPLETION
    assert server.connections == 2


# --- streaming ------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
async def test_receive_some_returns_pieces_as_they_arrive(transport_cls: type[Transport], chunked: bool) -> None:
    async def respond(conn: ServerConnection, n: int) -> bool:
        if chunked:
            await conn.send(response(200, b"", [*SSE_HEADERS, (b"transfer-encoding", b"chunked")]))
        else:
            await conn.send(response(200, b"", [*SSE_HEADERS, (b"content-length", b"%d" % len(b"".join(SSE_EVENTS)))]))
        for event in SSE_EVENTS:
            await trio.sleep(0.1)  # a model thinking between tokens
            await conn.send(chunk(event) if chunked else event)
        if chunked:
            await conn.send(chunk(b""))
        return True

    async with serve(handler_from(respond)) as server, transport_cls() as transport:
        async with await post(transport, origin_of(server)) as resp:
            pieces = []
            while piece := await resp.receive_some():
                pieces.append(piece)
        assert pieces == SSE_EVENTS
        await fetch(transport, origin_of(server))
    assert server.connections == 1


async def test_max_connections_per_origin_is_respected(transport_cls: type[Transport]) -> None:
    async def respond(conn: ServerConnection, n: int) -> bool:
        await trio.sleep(0.05)
        await conn.send(response(200, b"ok"))
        return True

    results = []

    async def one(transport: Transport, origin: Origin) -> None:
        results.append(await fetch(transport, origin))

    async with serve(handler_from(respond)) as server, transport_cls(max_connections_per_origin=3) as transport:
        async with trio.open_nursery() as nursery:
            for _ in range(12):
                nursery.start_soon(one, transport, origin_of(server))
    assert results == [b"ok"] * 12
    assert server.max_open_connections == 3
    assert server.connections == 3


# --- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_tls_with_a_trusted_ca(
    transport_cls: type[Transport], ca: trustme.CA, server_tls: ssl.SSLContext
) -> None:
    async with serve(ssl_context=server_tls) as server, transport_cls(ssl_context=trusting(ca)) as transport:
        for _ in range(3):
            assert await fetch(transport, origin_of(server, "https"), b"/v1/messages") == b"/v1/messages"
    assert server.connections == 1


async def test_tls_without_verification_accepts_an_unknown_ca(
    transport_cls: type[Transport], server_tls: ssl.SSLContext
) -> None:
    async with serve(ssl_context=server_tls) as server, transport_cls() as transport:
        async with await post(transport, origin_of(server, "https"), ssl_verify=False) as resp:
            assert await resp.read() == b"/v1/chat/completions"


async def test_tls_verification_rejects_an_unknown_ca(
    transport_cls: type[Transport], server_tls: ssl.SSLContext
) -> None:
    system_trust = ssl.create_default_context()  # does not know the test CA
    async with serve(ssl_context=server_tls) as server, transport_cls(ssl_context=system_trust) as transport:
        with pytest.raises(UpstreamConnectError) as caught:
            await post(transport, origin_of(server, "https"))
    assert caught.value.timed_out is False
    assert server.requests == []


async def test_idle_connection_with_unsolicited_bytes_is_not_reused(transport_cls: type[Transport]) -> None:
    # Some servers announce their idle timeout with a 408 before closing: that
    # must not be read as the answer to the next request.
    timed_out = trio.Event()

    async def respond(conn: ServerConnection, n: int) -> bool:
        await conn.send(response(200, b"n%d" % n))
        if n == 1:
            await trio.sleep(0.02)
            await conn.send(response(408, b"idle", [(b"connection", b"close")]))
            timed_out.set()
            await conn.wait_eof()
            return False
        return True

    async with serve(handler_from(respond)) as server, transport_cls() as transport:
        assert await fetch(transport, origin_of(server)) == b"n1"
        await timed_out.wait()
        assert await fetch(transport, origin_of(server)) == b"n2"
    assert server.connections == 2


async def test_bytes_after_a_response_are_not_taken_as_the_next_response(
    transport_cls: type[Transport], request: pytest.FixtureRequest
) -> None:
    # An upstream that sends more than its content-length (or a stray response)
    # would otherwise answer the next request with stale bytes: a response
    # desync, possibly across two clients of the proxy.
    if transport_cls is HttpxTransport:
        reason = "httpcore 1.0.9 pools a connection with unread bytes"
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))

    async def respond(conn: ServerConnection, n: int) -> bool:
        extra = response(200, b"bogus") if n == 1 else b""
        await conn.send(response(200, b"n%d" % n) + extra)
        return True

    async with serve(handler_from(respond)) as server, transport_cls() as transport:
        assert await fetch(transport, origin_of(server)) == b"n1"
        assert await fetch(transport, origin_of(server)) == b"n2"


# --- the h11 pool's own wire code on real sockets (tests/unit/test_h11_pool_wire.py has the rest) --


async def test_pool_connections_have_tcp_nodelay() -> None:
    # The request goes out in one write, but a stream's next request must not
    # wait for the ACK of the last one (Nagle): trio sets TCP_NODELAY, checked here.
    async with serve() as server, H11Pool() as pool:
        await fetch(pool, origin_of(server))
        (conn,) = pool._pools[(origin_of(server), True)].idle
        assert conn.stream.sock.getsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY) != 0


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_response_trickling_in_byte_by_byte(framing: str) -> None:
    if framing == "chunked":
        wire = response(200, b"", [*SSE_HEADERS, (b"transfer-encoding", b"chunked")])
        wire += b"".join(chunk(event) for event in SSE_EVENTS) + chunk(b"")
    else:
        wire = response(200, COMPLETION, [(b"content-type", b"application/json")])

    async def respond(conn: ServerConnection, n: int) -> bool:
        if n == 1:
            for i in range(len(wire)):
                await conn.send(wire[i : i + 1])
                await trio.sleep(0)
        else:
            await conn.send(wire)
        return True

    expected = b"".join(SSE_EVENTS) if framing == "chunked" else COMPLETION
    async with serve(handler_from(respond)) as server, H11Pool() as pool:
        assert await fetch(pool, origin_of(server)) == expected
        assert await fetch(pool, origin_of(server)) == expected
    assert server.connections == 1


async def test_bytes_after_a_chunked_response_are_not_taken_as_the_next_response() -> None:
    async def respond(conn: ServerConnection, n: int) -> bool:
        head = response(200, b"", [(b"transfer-encoding", b"chunked")])
        extra = response(200, b"bogus") if n == 1 else b""
        await conn.send(head + chunk(b"n%d" % n) + chunk(b"") + extra)
        return True

    async with serve(handler_from(respond)) as server, H11Pool() as pool:
        assert await fetch(pool, origin_of(server)) == b"n1"
        assert await fetch(pool, origin_of(server)) == b"n2"
    assert server.connections == 2
