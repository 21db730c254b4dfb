"""The Forwarder's retries, timeouts, fallbacks and cancellation, on a mock clock.

Each test drives the real app (its gate included) through one direct
ASGI call, as hypercorn would make it, with the upstream transport replaced by
a `ScriptedTransport`.  Nothing touches a socket, and under
``MockClock(autojump_threshold=0)`` every sleep ends the moment nothing else
can run: a 30 s cooldown takes no time, and each timeout and retry delay can
be asserted to the exact instant with ``trio.current_time()``.  (Each test
takes pytest-trio's ``autojump_clock`` fixture: that is how pytest-trio is
told to run it on that clock.)  Every test checks both sides: what the client
got, and what each upstream saw and when.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import attrs
import pytest
import trio
from quart_trio import QuartTrio
from trio.testing import MockClock

from core.config import load_config
from io_trio.app import ProxyState, create_app
from io_trio.upstream import UpstreamProtocolError, UpstreamResponse
from tests.support.samples import ANTHROPIC_EVENTS, ANTHROPIC_MESSAGE, COMPLETION, OPENAI_EVENTS, chunk
from tests.support.scripted_transport import (
    CUT,
    STALL,
    Call,
    ConnectTimeout,
    Hang,
    Pause,
    Refuse,
    Reply,
    ScriptedTransport,
    json_reply,
    sse_reply,
)

CLIENT_KEY = "sk-client-key-should-never-travel"
OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"

# -- wire data (shapes from protocols.md §1.3-1.5 and §2.3-2.5) -------------------------------


def openai_error(status: int, message: str = "upstream says no", code: str | None = None,
                 headers: list[tuple[str, str]] | None = None) -> Reply:
    kind = {400: "invalid_request_error", 401: "invalid_request_error", 429: "requests"}.get(status, "server_error")
    return json_reply({"error": {"message": message, "type": kind, "param": None, "code": code}}, status,
                      headers or [])


def anthropic_error(status: int, kind: str, message: str = "upstream says no") -> Reply:
    return json_reply({"type": "error", "error": {"type": kind, "message": message},
                       "request_id": "req_011CUp"}, status, [("request-id", "req_011CUp")])


OVERLOADED = openai_error(503, "The server is overloaded", headers=[("x-request-id", "req_up")])

# -- the proxy and its client ----------------------------------------------------------------


def openai_model(host: str = "up.test", **extra: Any) -> dict[str, Any]:
    return {"backend_type": "openai", "endpoint": f"http://{host}/v1", "api_key": "sk-up-openai", **extra}


def anthropic_model(host: str = "claude.test", **extra: Any) -> dict[str, Any]:
    return {"backend_type": "anthropic", "endpoint": f"http://{host}", "api_key": "sk-ant-up", **extra}


def fixed_backoff(ms: int, attempts: int = 3) -> dict[str, Any]:
    """A retry policy without jitter whose every delay is ``ms``."""
    return {"max_attempts": attempts, "backoff_ms": ms, "max_backoff_ms": ms, "jitter": False}


def make_proxy(models: dict[str, Any], scripts: dict[str, Any], *, seed: int = 0,
               **server: Any) -> tuple[QuartTrio, ScriptedTransport]:
    config = {"models": models, **({"server": server} if server else {})}
    app = create_app(load_config(json.dumps(config), fmt="json", env={}, source="<test>"))
    state: ProxyState = app.extensions["llm_proxy"]
    state.transport = transport = ScriptedTransport(scripts)
    state.rng = random.Random(seed)
    return app, transport


@attrs.define
class ClientSaw:
    """Everything the client received, each body piece with its arrival time."""

    status: int = 0
    headers: dict[str, str] = attrs.Factory(dict)
    started: float | None = None  # when the response head arrived
    pieces: list[tuple[float, bytes]] = attrs.Factory(list)
    ended: float | None = None  # when the body ended cleanly (None: the client left first)

    @property
    def body(self) -> bytes:
        return b"".join(piece for _, piece in self.pieces)

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[tuple[str | None, Any]]:
        """The SSE events received: (event name or None, parsed data or "[DONE]")."""
        found: list[tuple[str | None, Any]] = []
        for block in self.body.decode().split("\n\n"):
            if not block.strip():
                continue
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            data = fields["data"]
            found.append((fields.get("event"), data if data == "[DONE]" else json.loads(data)))
        return found

    def event_times(self) -> list[float]:
        return [at for at, piece in self.pieces if piece]


async def post(app: QuartTrio, payload: dict[str, Any], *, path: str = OPENAI_PATH,
               leave_at: float | None = None, leave_after_pieces: int | None = None,
               leave_on_head: bool = False, write_takes: float = 0.0) -> ClientSaw:
    """One request through the app's ASGI interface, as hypercorn makes it.

    ``leave_at`` / ``leave_after_pieces``: the client disconnects at that time,
    or once it has received that many non-empty body pieces.  ``leave_on_head``:
    it disconnects while the response head is being written, and the write is a
    checkpoint (hypercorn's is: it takes a lock), where the cancellation lands.
    ``write_takes``: each body write takes that long (a client that reads slowly).
    """
    saw = ClientSaw()
    gone = trio.Event()  # the client left
    over = trio.Event()  # the connection has nothing more for this request: it is over or the client left
    body = json.dumps(payload).encode()
    body_sent = False

    def leave() -> None:
        gone.set()
        over.set()

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if leave_at is not None:
            with trio.move_on_at(leave_at):
                await over.wait()
            if not over.is_set():
                leave()
        await over.wait()
        return {"type": "http.disconnect"}  # as hypercorn: when the client leaves, or once the response is over

    async def send(message: dict[str, Any]) -> None:
        assert not gone.is_set(), "the app wrote to a client that had left"
        now = trio.current_time()
        if message["type"] == "http.response.start":
            saw.status, saw.started = message["status"], now
            saw.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            if leave_on_head:
                leave()
                await trio.sleep(0.001)  # let the endpoint see the disconnect and cancel the handler
            return
        if write_takes:
            await trio.sleep(write_takes)
        saw.pieces.append((now, message.get("body", b"")))
        if not message.get("more_body", False):
            saw.ended = now
            over.set()
        if leave_after_pieces is not None and len(saw.event_times()) >= leave_after_pieces:
            leave()

    await app(_scope(path), receive, send)
    return saw


def _scope(path: str) -> dict[str, Any]:
    if path == ANTHROPIC_PATH:
        headers = [(b"x-api-key", CLIENT_KEY.encode()), (b"anthropic-version", b"2023-06-01")]
    else:
        headers = [(b"authorization", f"Bearer {CLIENT_KEY}".encode())]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"proxy.test"), (b"content-type", b"application/json"), *headers],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080), "extensions": {}}


def chat(model: str = "m", *, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "say hi"}]}
    return {**body, "stream": True} if stream else body


def claude(model: str = "claude", *, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "say hi"}]}
    return {**body, "stream": True} if stream else body


def starts(calls: list[Call]) -> list[float]:
    return [call.started for call in calls]


# -- retries ---------------------------------------------------------------------------------


async def test_429_429_200_waits_exactly_as_the_upstream_asked(autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": openai_model()}, {"up.test": [
        openai_error(429, "Rate limit reached", "rate_limit_exceeded", [("retry-after-ms", "1500")]),
        openai_error(429, "Rate limit reached", "rate_limit_exceeded", [("retry-after", "2")]),
        json_reply(COMPLETION),
    ]})
    saw = await post(app, chat())
    assert saw.status == 200 and saw.json == COMPLETION
    assert saw.headers["x-proxy-attempts"] == "3"
    assert starts(up.calls) == [0.0, 1.5, 3.5]  # retry-after-ms 1500, then Retry-After 2 s
    assert saw.ended == 3.5
    assert len({call.body for call in up.calls}) == 1  # the same request each time


async def test_retry_after_as_an_http_date_is_honoured(autojump_clock: MockClock) -> None:
    # HTTP-dates are wall-clock (RFC 9110 §10.2.3) with 1 s resolution.
    date = formatdate(time.time() + 3, usegmt=True)
    app, up = make_proxy({"m": openai_model()}, {"up.test": [
        openai_error(503, headers=[("retry-after", date)]), json_reply(COMPLETION)]})
    saw = await post(app, chat())
    assert saw.status == 200
    assert 1.9 < up.calls[1].started <= 3.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_bad_input_statuses_are_relayed_and_never_retried(autojump_clock: MockClock, status: int) -> None:
    app, up = make_proxy({"m": openai_model(retry=fixed_backoff(100, attempts=5))}, {"up.test": [
        openai_error(status, f"upstream status {status}", headers=[("x-should-retry", "true")])]})
    saw = await post(app, chat())
    assert saw.status == status
    assert saw.json["error"]["message"] == f"upstream status {status}"
    assert saw.headers["x-proxy-attempts"] == "1"
    assert len(up.calls) == 1 and saw.ended == 0.0


@pytest.mark.parametrize("status", [400, 404])
async def test_bad_input_statuses_reach_an_anthropic_client_in_its_protocol(
        autojump_clock: MockClock, status: int) -> None:
    kind = {400: "invalid_request_error", 404: "not_found_error"}[status]
    app, up = make_proxy({"claude": anthropic_model()}, {"claude.test": [anthropic_error(status, kind)]})
    saw = await post(app, claude(), path=ANTHROPIC_PATH)
    assert saw.status == status
    assert saw.json["type"] == "error" and saw.json["error"]["type"] == kind
    assert len(up.calls) == 1


async def test_x_should_retry_false_stops_retrying_a_503(autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": openai_model(retry=fixed_backoff(100, attempts=5))}, {"up.test": [
        openai_error(503, "overloaded", headers=[("x-should-retry", "false")])]})
    saw = await post(app, chat())
    assert saw.status == 503 and saw.json["error"]["message"] == "overloaded"
    assert len(up.calls) == 1 and saw.headers["x-proxy-attempts"] == "1"


async def test_x_should_retry_true_makes_an_unlisted_status_retryable(autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": openai_model(retry=fixed_backoff(250))}, {"up.test": [
        openai_error(418, "teapot busy", headers=[("x-should-retry", "true")]), json_reply(COMPLETION)]})
    saw = await post(app, chat())
    assert saw.status == 200 and starts(up.calls) == [0.0, 0.25]


async def test_retry_after_above_the_maximum_gives_up_at_once_with_the_upstream_429(autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": openai_model(retry={"max_attempts": 5, "max_retry_after_seconds": 10})},
                         {"up.test": [openai_error(429, "slow down", "rate_limit_exceeded",
                                                   [("retry-after", "30")])]})
    saw = await post(app, chat())
    assert saw.status == 429 and saw.ended == 0.0
    assert saw.headers["retry-after"] == "30"  # the client's SDK can wait itself
    assert saw.json["error"]["code"] == "rate_limit_exceeded"
    assert len(up.calls) == 1


async def test_backoff_without_jitter_doubles_up_to_the_cap(autojump_clock: MockClock) -> None:
    policy = {"max_attempts": 5, "backoff_ms": 1000, "max_backoff_ms": 3000, "jitter": False}
    app, up = make_proxy({"m": openai_model(retry=policy)}, {"up.test": [OVERLOADED] * 5})
    saw = await post(app, chat())
    assert starts(up.calls) == [0.0, 1.0, 3.0, 6.0, 9.0]  # waits 1, 2, 3 (capped), 3
    assert saw.status == 503 and saw.ended == 9.0
    assert saw.json["error"]["message"] == "The server is overloaded"
    assert saw.headers["x-proxy-attempts"] == "5"


async def _jittered_delays(seed: int) -> list[float]:
    policy = {"max_attempts": 6, "backoff_ms": 1000, "max_backoff_ms": 8000, "jitter": True}
    app, up = make_proxy({"m": openai_model(retry=policy)}, {"up.test": [OVERLOADED] * 6}, seed=seed)
    await post(app, chat())
    times = starts(up.calls)
    return [later - earlier for earlier, later in zip(times, times[1:])]


async def test_full_jitter_stays_within_the_exponential_bounds_and_follows_the_seed(autojump_clock: MockClock) -> None:
    runs = {seed: await _jittered_delays(seed) for seed in range(12)}
    caps = [1.0, 2.0, 4.0, 8.0, 8.0]
    for delays in runs.values():
        assert len(delays) == 5
        assert all(0.0 <= delay <= cap for delay, cap in zip(delays, caps))
    assert await _jittered_delays(3) == pytest.approx(runs[3], abs=1e-9)  # reproducible with the same seed
    assert len({tuple(delays) for delays in runs.values()}) == len(runs)  # and really random
    fifth = [delays[4] for delays in runs.values()]
    assert min(fifth) < 4.0 < max(fifth)  # full jitter: anywhere in [0, cap], not cap/2 .. cap


# -- timeouts --------------------------------------------------------------------------------


async def test_connect_timeout_is_a_504_after_exactly_the_connect_timeout(autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": openai_model(connect_timeout_seconds=4, retry={"max_attempts": 1})},
                         {"up.test": [ConnectTimeout()]})
    saw = await post(app, chat())
    assert saw.status == 504 and saw.ended == 4.0
    assert saw.json["error"]["type"] == "timeout_error"
    assert "connecting" in saw.json["error"]["message"]
    assert up.calls[0].connect_timeout == 4


async def test_a_connect_timeout_is_retried(autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": openai_model(connect_timeout_seconds=4, retry=fixed_backoff(500))},
                         {"up.test": [ConnectTimeout(), json_reply(COMPLETION)]})
    saw = await post(app, chat())
    assert saw.status == 200 and saw.headers["x-proxy-attempts"] == "2"
    assert starts(up.calls) == [0.0, 4.5]


async def test_refused_connections_are_retried_then_a_502(autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": openai_model(retry=fixed_backoff(200))}, {"up.test": [Refuse()] * 3})
    saw = await post(app, chat())
    assert saw.status == 502 and "could not connect" in saw.json["error"]["message"]
    assert starts(up.calls) == [0.0, 0.2, 0.4]
    assert "sk-up-openai" not in saw.body.decode()


@pytest.mark.parametrize("client", ["openai", "anthropic"])
async def test_first_byte_timeout_is_a_504_in_the_clients_protocol(autojump_clock: MockClock, client: str) -> None:
    model = openai_model if client == "openai" else anthropic_model
    app, up = make_proxy({"m": model("up.test", first_byte_timeout_seconds=7, retry={"max_attempts": 1})},
                         {"up.test": [Hang()]})
    saw = await post(app, chat() if client == "openai" else claude("m"),
                     path=OPENAI_PATH if client == "openai" else ANTHROPIC_PATH)
    assert saw.status == 504 and saw.ended == 7.0
    if client == "openai":
        assert saw.json["error"]["type"] == "timeout_error"
    else:
        assert saw.json["type"] == "error" and saw.json["error"]["type"] == "timeout_error"
    [call] = up.calls
    assert (call.released, call.how) == (7.0, "cancelled")  # the upstream request was abandoned


async def test_a_stream_whose_first_event_never_comes_is_retried_after_the_first_byte_timeout(
        autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": openai_model(first_byte_timeout_seconds=7, retry=fixed_backoff(1000))},
                         {"up.test": [sse_reply([], then=[STALL]), sse_reply(OPENAI_EVENTS)]})
    saw = await post(app, chat(stream=True))
    assert saw.status == 200 and saw.started == 8.0
    assert saw.events() == OPENAI_EVENTS  # one clean stream
    assert starts(up.calls) == [0.0, 8.0]
    assert (up.calls[0].released, up.calls[0].how) == (7.0, "cancelled")


@pytest.mark.parametrize("client", ["openai", "anthropic"])
async def test_idle_timeout_mid_stream_is_an_error_event_then_a_clean_end(
        autojump_clock: MockClock, client: str) -> None:
    events = OPENAI_EVENTS if client == "openai" else ANTHROPIC_EVENTS
    model = openai_model if client == "openai" else anthropic_model
    app, up = make_proxy({"m": model("up.test", idle_timeout_seconds=5, retry=fixed_backoff(100))},
                         {"up.test": [sse_reply(events[:2], pause=1.0, then=[STALL])]})
    saw = await post(app, chat(stream=True) if client == "openai" else claude("m", stream=True),
                     path=OPENAI_PATH if client == "openai" else ANTHROPIC_PATH)
    assert saw.status == 200
    got = saw.events()
    assert got[:2] == events[:2] and len(got) == 3
    name, error = got[2]
    if client == "openai":
        assert name is None and error["error"]["type"] == "timeout_error"
    else:
        assert name == "error" and error["type"] == "error" and error["error"]["type"] == "timeout_error"
    assert "5 s" in json.dumps(error)
    assert saw.event_times() == [1.0, 2.0, 7.0] and saw.ended == 7.0
    [call] = up.calls  # no retry once the client got bytes
    assert call.released == 7.0


async def test_the_idle_timeout_counts_each_wait_on_the_upstream_afresh(autojump_clock: MockClock) -> None:
    """Events 4 s apart under a 5 s idle timeout: 24 s of stream, never idle."""
    app, up = make_proxy({"m": openai_model(idle_timeout_seconds=5)},
                         {"up.test": [sse_reply(OPENAI_EVENTS, pause=4.0)]})
    saw = await post(app, chat(stream=True))
    assert saw.events() == OPENAI_EVENTS
    assert saw.event_times() == [4.0 * n for n in range(1, len(OPENAI_EVENTS) + 1)]
    assert up.calls[0].how == "read"


async def test_a_slow_client_is_not_the_upstreams_idleness(autojump_clock: MockClock) -> None:
    """Writes that take 8 s each under a 5 s idle timeout: the upstream was never waited on
    that long, so the stream arrives whole, and no write is cut short."""
    app, up = make_proxy({"m": openai_model(idle_timeout_seconds=5)},
                         {"up.test": [sse_reply(OPENAI_EVENTS, pause=1.0)]})
    saw = await post(app, chat(stream=True), write_takes=8.0)
    assert saw.events() == OPENAI_EVENTS and saw.ended is not None


@pytest.mark.parametrize("run", range(6))
async def test_events_due_at_the_idle_timeout_itself_make_a_well_formed_stream(
        autojump_clock: MockClock, run: int) -> None:
    """Each event and the timeout fall due at the same instant, so trio may run either first.
    Either way the client gets whole events and one clean end: the whole stream, or some
    of it and then the timeout's error event, and nothing after that."""
    app, up = make_proxy({"m": openai_model(idle_timeout_seconds=5)},
                         {"up.test": [sse_reply(OPENAI_EVENTS, pause=5.0)]})
    saw = await post(app, chat(stream=True))
    got = saw.events()
    relayed = len(got) if got == OPENAI_EVENTS else len(got) - 1
    assert relayed >= 1 and got[:relayed] == OPENAI_EVENTS[:relayed]
    if relayed < len(OPENAI_EVENTS):
        assert got[-1][1]["error"]["type"] == "timeout_error"
    assert saw.ended == up.calls[0].released == 5.0 * (relayed + (relayed < len(OPENAI_EVENTS)))


async def test_timeout_seconds_holds_for_a_read_begun_while_the_client_was_slow(autojump_clock: MockClock) -> None:
    """Event 2 comes at 6 s and its write takes until 8 s; the read begun then stalls.  The
    attempt's end (10 s) cuts it, not the idle timeout (13 s) nor the watchdog's last look."""
    first, second = sse_reply(OPENAI_EVENTS[:1]).pieces, sse_reply(OPENAI_EVENTS[1:2]).pieces
    reply = Reply(200, [("content-type", "text/event-stream")], [*first, Pause(4.0), *second, STALL])
    app, up = make_proxy({"m": openai_model(timeout_seconds=10, idle_timeout_seconds=5, retry={"max_attempts": 1})},
                         {"up.test": [reply]})
    saw = await post(app, chat(stream=True), write_takes=2.0)
    assert saw.events()[-1][1]["error"]["type"] == "timeout_error"
    assert up.calls[0].released == 10.0


class _WatchdogSteps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("_watchdog"):
            self.steps += 1


async def test_the_watchdog_sleeps_through_a_write_that_outlasts_the_shutdown_deadline() -> None:
    """Real clock: the shutdown's deadline passes during a 0.5 s client write.  The watchdog has
    nothing to do until the next read (which fails by itself), so it must not spin."""
    app, _ = make_proxy({"m": openai_model(idle_timeout_seconds=5)}, {"up.test": [sse_reply(OPENAI_EVENTS[:3])]})
    counter = _WatchdogSteps()
    trio.lowlevel.add_instrument(counter)
    try:
        app.extensions["llm_proxy"].drain.begin(trio.current_time() + 0.7)
        saw = await post(app, chat(stream=True), write_takes=0.5)
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert saw.events()[-1][1]["error"]["code"] == "shutting_down"
    assert counter.steps < 50


class _BreaksAt(UpstreamResponse):
    """One event, then a connection reset at `at`, delivered like I/O (not by a deadline)."""

    def __init__(self, at: float) -> None:
        super().__init__(200, [(b"content-type", b"text/event-stream")])
        self.first = sse_reply(OPENAI_EVENTS[:1]).pieces[0]
        self.broken = trio.Event()
        self.at = at
        self.released = False

    async def receive_some(self) -> bytes:
        if self.first:
            first, self.first = self.first, b""
            return first
        await self.broken.wait()
        raise UpstreamProtocolError("up.test: response body broken: connection reset", response_started=True)

    async def aclose(self) -> None:
        self.released = True


class _BreakingTransport(ScriptedTransport):
    def __init__(self, nursery: trio.Nursery) -> None:
        super().__init__({})
        self.nursery = nursery
        self.responses: list[_BreaksAt] = []

    async def request(self, *args: Any, **kwargs: Any) -> UpstreamResponse:
        response = _BreaksAt(trio.current_time() + 5.0)
        self.responses.append(response)

        async def breaker() -> None:
            await trio.sleep_until(response.at)
            response.broken.set()

        self.nursery.start_soon(breaker)
        return response


@pytest.mark.parametrize("run", range(4))
async def test_a_break_at_the_idle_deadline_still_ends_with_an_error_event(autojump_clock: MockClock,
                                                                            run: int) -> None:
    """The reset and the idle timeout fall due together; whichever trio runs first, the client's
    stream ends with one error event (never silently)."""
    app, _ = make_proxy({"m": openai_model(idle_timeout_seconds=5, retry={"max_attempts": 1})}, {})
    async with trio.open_nursery() as nursery:
        transport = _BreakingTransport(nursery)
        app.extensions["llm_proxy"].transport = transport
        saw = await post(app, chat(stream=True))
    got = saw.events()
    assert got[0] == OPENAI_EVENTS[0] and len(got) == 2 and "error" in got[1][1]
    assert saw.ended == 5.0 and transport.responses[0].released


async def test_timeout_seconds_bounds_the_whole_attempt_from_the_request_on(autojump_clock: MockClock) -> None:
    """A stream that never idles is still cut timeout_seconds after its request was sent."""
    steady = sse_reply([(None, chunk({"content": str(n)})) for n in range(20)], pause=1.0)
    steady = attrs.evolve(steady, pieces=steady.pieces[1:], head_delay=2.0)  # first event with the head
    app, up = make_proxy({"m": openai_model(timeout_seconds=5.5, idle_timeout_seconds=3)}, {"up.test": [steady]})
    saw = await post(app, chat(stream=True))
    got = saw.events()
    assert [data["choices"][0]["delta"]["content"] for _, data in got[:-1]] == ["0", "1", "2", "3"]
    assert got[-1][1]["error"]["type"] == "timeout_error"
    assert saw.event_times() == [2.0, 3.0, 4.0, 5.0, 5.5] and saw.ended == 5.5
    assert up.calls[0].released == 5.5 and len(up.calls) == 1


async def test_timeout_seconds_bounds_a_non_streaming_body(autojump_clock: MockClock) -> None:
    slow = Reply(200, [("content-type", "application/json")], [b'{"id": "chatcmpl-abc",', Pause(10), b"}"],
                 head_delay=1.0)
    app, up = make_proxy({"m": openai_model(timeout_seconds=5, retry={"max_attempts": 1})}, {"up.test": [slow]})
    saw = await post(app, chat())
    assert saw.status == 504 and saw.ended == 5.0
    assert up.calls[0].released == 5.0


async def test_deadline_bounds_the_retries(autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": openai_model(deadline_seconds=10, retry=fixed_backoff(3000, attempts=10))},
                         {"up.test": [OVERLOADED] * 10})
    saw = await post(app, chat())
    # attempts at 0, 3, 6, 9; one at 12 would start after the deadline: give up at 9.
    assert starts(up.calls) == [0.0, 3.0, 6.0, 9.0]
    assert saw.status == 503 and saw.ended == 9.0
    assert saw.headers["x-proxy-attempts"] == "4"


async def test_deadline_cuts_an_attempt_in_flight(autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": openai_model(deadline_seconds=10)}, {"up.test": [Hang()]})
    saw = await post(app, chat())
    assert saw.status == 504 and saw.ended == 10.0
    assert up.calls[0].released == 10.0 and len(up.calls) == 1


async def test_deadline_bounds_retries_and_fallbacks_together(autojump_clock: MockClock) -> None:
    app, up = make_proxy({
        "m": openai_model(deadline_seconds=10, retry=fixed_backoff(2000, attempts=2), fallbacks=["claude"]),
        "claude": anthropic_model(),
    }, {"up.test": [OVERLOADED, OVERLOADED], "claude.test": [Hang()]})
    saw = await post(app, chat())
    assert starts(up.calls_to("up.test")) == [0.0, 2.0]
    [fallback] = up.calls_to("claude.test")
    assert fallback.started == 2.0 and fallback.released == 10.0
    assert saw.status == 504 and saw.ended == 10.0
    assert saw.headers["x-proxy-served-by"] == "claude"


# -- streams ---------------------------------------------------------------------------------


async def test_a_stream_cut_before_its_first_event_is_retried_and_the_client_sees_one_stream(
        autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": openai_model(retry=fixed_backoff(300))},
                         {"up.test": [sse_reply([], then=[CUT]), sse_reply(OPENAI_EVENTS)]})
    saw = await post(app, chat(stream=True))
    assert saw.status == 200 and saw.events() == OPENAI_EVENTS
    assert saw.headers["x-proxy-attempts"] == "2"
    assert starts(up.calls) == [0.0, 0.3]


async def test_a_stream_cut_inside_its_first_event_is_retried(autojump_clock: MockClock) -> None:
    """Half an event is not an event: nothing reached the client, so it is retried."""
    first = f"data: {json.dumps(OPENAI_EVENTS[0][1])}\n\n".encode()
    broken = Reply(200, [("content-type", "text/event-stream")], [first[:25], CUT])
    app, up = make_proxy({"m": openai_model(retry=fixed_backoff(300))},
                         {"up.test": [broken, sse_reply(OPENAI_EVENTS)]})
    saw = await post(app, chat(stream=True))
    assert saw.status == 200 and saw.events() == OPENAI_EVENTS
    assert len(up.calls) == 2


@pytest.mark.parametrize("client", ["openai", "anthropic"])
async def test_a_stream_cut_after_three_events_ends_with_an_error_event_and_no_retry(
        autojump_clock: MockClock, client: str) -> None:
    events = OPENAI_EVENTS if client == "openai" else ANTHROPIC_EVENTS
    model = openai_model if client == "openai" else anthropic_model
    app, up = make_proxy({"m": model("up.test", retry=fixed_backoff(100, attempts=5))},
                         {"up.test": [sse_reply(events[:3], then=[CUT])]})
    saw = await post(app, chat(stream=True) if client == "openai" else claude("m", stream=True),
                     path=OPENAI_PATH if client == "openai" else ANTHROPIC_PATH)
    got = saw.events()
    assert got[:3] == events[:3] and len(got) == 4
    name, error = got[3]
    if client == "openai":
        assert name is None and set(error) == {"error"} and error["error"]["type"] == "api_error"
    else:
        assert name == "error" and error["type"] == "error" and error["error"]["type"] == "api_error"
    assert saw.ended is not None  # a clean end of the body
    assert len(up.calls) == 1 and saw.headers["x-proxy-attempts"] == "1"


async def test_a_translated_stream_cut_mid_way_ends_with_an_openai_error_chunk(autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": anthropic_model("up.test")},
                         {"up.test": [sse_reply(ANTHROPIC_EVENTS[:3], then=[CUT])]})
    saw = await post(app, chat(stream=True))
    got = saw.events()
    assert [data["choices"][0]["delta"] for _, data in got[:2]] == [
        {"role": "assistant", "content": ""}, {"content": "Hel"}]
    assert "error" in got[-1][1] and len(got) == 3
    assert len(up.calls) == 1


# -- cancellation ----------------------------------------------------------------------------


async def test_a_client_leaving_mid_stream_releases_the_upstream_at_once(autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": openai_model()}, {"up.test": [sse_reply(OPENAI_EVENTS, pause=1.0)]})
    saw = await post(app, chat(stream=True), leave_at=2.5)
    assert saw.event_times() == [1.0, 2.0] and saw.ended is None
    [call] = up.calls
    assert (call.released, call.how) == (2.5, "cancelled")


async def test_a_client_leaving_as_the_stream_starts_releases_the_upstream(autojump_clock: MockClock) -> None:
    """The race between the first upstream event and writing the response head.

    The endpoint has its streaming reply and is cancelled (the client left)
    while writing the head, before it iterated the body: its ``finally`` closes
    the body, which must release the upstream although its iteration never
    started.  Otherwise the upstream connection and its pool slot leak.
    """
    app, up = make_proxy({"m": openai_model()}, {"up.test": [sse_reply(OPENAI_EVENTS[:2], then=[STALL])]})
    saw = await post(app, chat(stream=True), leave_on_head=True)
    assert saw.status == 200 and saw.pieces == []
    await trio.sleep(1)
    [call] = up.calls
    assert (call.released, call.how) == (saw.started, "closed")


async def test_a_client_leaving_while_the_proxy_waits_for_the_first_byte_releases_the_upstream(
        autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": openai_model(retry=fixed_backoff(100))}, {"up.test": [Hang(), Hang()]})
    await post(app, chat(stream=True), leave_at=3.0)
    await trio.sleep(1000)  # long after: no retry ever started
    [call] = up.calls
    assert (call.released, call.how) == (3.0, "cancelled")


async def test_a_client_leaving_during_a_retry_delay_starts_no_retry(autojump_clock: MockClock) -> None:
    app, up = make_proxy({"m": openai_model()}, {"up.test": [
        openai_error(429, headers=[("retry-after-ms", "5000")]), json_reply(COMPLETION)]})
    saw = await post(app, chat(), leave_at=2.0)
    assert saw.status == 0  # nothing was sent
    await trio.sleep(1000)
    assert len(up.calls) == 1 and up.open_calls == []


async def test_a_client_leaving_does_not_count_against_the_deployment(autojump_clock: MockClock) -> None:
    """Disconnects are the client's doing: the breaker must not trip on them."""
    app, up = make_proxy({"m": openai_model(cooldown_after_failures=1, cooldown_seconds=60, fallbacks=["claude"]),
                          "claude": anthropic_model()},
                         {"up.test": [Hang(), json_reply(COMPLETION)], "claude.test": []})
    await post(app, chat(), leave_at=1.0)
    saw = await post(app, chat())  # were "m" cooling down, this would go to "claude"
    assert saw.status == 200 and saw.headers["x-proxy-served-by"] == "m"
    assert len(up.calls_to("up.test")) == 2


def _task_count() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

    return count(trio.lowlevel.current_root_task())


async def test_finished_requests_leave_no_task_behind(autojump_clock: MockClock) -> None:
    """The disconnect watcher is not the handler's child: it must end by itself on the
    disconnect that follows every response, whole or streamed, error or not."""
    def script(call: Call) -> Any:
        if call.json.get("stream"):
            return sse_reply(OPENAI_EVENTS, pause=0.1)
        return json_reply(COMPLETION) if call.json["model"] == "m" else openai_error(400)

    app, up = make_proxy({"m": openai_model(), "bad": openai_model()}, {"up.test": script})
    baseline = _task_count()
    for n in range(30):
        saw = await post(app, chat(stream=n % 3 == 1) if n % 3 != 2 else chat("bad"))
        assert saw.status == (400 if n % 3 == 2 else 200) and saw.ended is not None
    await trio.testing.wait_all_tasks_blocked()
    assert _task_count() == baseline
    assert up.open_calls == []


async def test_many_disconnects_leave_no_upstream_request_or_task_behind(autojump_clock: MockClock) -> None:
    def script(call: Call) -> Any:
        return sse_reply(OPENAI_EVENTS[:2], pause=0.5, then=[STALL]) if call.json.get("stream") else Hang()

    app, up = make_proxy({"m": openai_model()}, {"up.test": script})
    baseline = _task_count()
    for n in range(200):
        if n % 4 == 3:  # waiting for a first byte
            await post(app, chat(), leave_at=trio.current_time() + 5)
        else:  # mid-stream, after the first event
            await post(app, chat(stream=True), leave_after_pieces=1)
    assert len(up.calls) == 200  # no retry ever started
    assert up.open_calls == []
    assert {call.released - call.started for call in up.calls} == {0.5, 5.0}  # each released at once
    assert _task_count() == baseline


# -- fallbacks -------------------------------------------------------------------------------


async def test_503s_fall_back_to_a_model_with_another_protocol(autojump_clock: MockClock) -> None:
    app, up = make_proxy({
        "m": openai_model(retry=fixed_backoff(500, attempts=2), fallbacks=["claude"]),
        "claude": anthropic_model(),
    }, {"up.test": [OVERLOADED, OVERLOADED], "claude.test": [json_reply(ANTHROPIC_MESSAGE)]})
    saw = await post(app, chat())
    assert saw.status == 200
    assert saw.json["object"] == "chat.completion"
    assert saw.json["choices"][0]["message"]["content"] == "Hello from Claude!"
    assert saw.headers["x-proxy-served-by"] == "claude"
    assert saw.headers["x-proxy-attempts"] == "3"
    [sent] = up.calls_to("claude.test")
    assert sent.target == b"/v1/messages" and sent.started == 0.5  # no wait before a fallback
    assert sent.json["model"] == "claude" and sent.json["max_tokens"] > 0
    assert sent.headers["x-api-key"] == "sk-ant-up" and "authorization" not in sent.headers


async def test_an_unreachable_primary_falls_back(autojump_clock: MockClock) -> None:
    app, up = make_proxy({
        "m": openai_model(retry=fixed_backoff(100, attempts=2), fallbacks=["claude"]),
        "claude": anthropic_model(),
    }, {"up.test": [Refuse(), Refuse()], "claude.test": [json_reply(ANTHROPIC_MESSAGE)]})
    saw = await post(app, chat())
    assert saw.status == 200 and saw.headers["x-proxy-served-by"] == "claude"
    assert len(up.calls_to("up.test")) == 2


async def test_a_hung_stream_falls_back_to_a_translated_stream(autojump_clock: MockClock) -> None:
    app, up = make_proxy({
        "m": openai_model(first_byte_timeout_seconds=4, retry={"max_attempts": 1}, fallbacks=["claude"]),
        "claude": anthropic_model(),
    }, {"up.test": [Hang()], "claude.test": [sse_reply(ANTHROPIC_EVENTS)]})
    saw = await post(app, chat(stream=True))
    assert saw.status == 200 and saw.started == 4.0
    got = saw.events()
    text = "".join(data["choices"][0]["delta"].get("content") or "" for _, data in got if data != "[DONE]")
    assert text == "Hello!" and got[-1] == (None, "[DONE]")
    assert saw.headers["x-proxy-served-by"] == "claude"


async def test_a_400_from_the_primary_does_not_fall_back(autojump_clock: MockClock) -> None:
    app, up = make_proxy({
        "m": openai_model(fallbacks=["claude"]), "claude": anthropic_model(),
    }, {"up.test": [openai_error(400, "context_length_exceeded")], "claude.test": []})
    saw = await post(app, chat())
    assert saw.status == 400 and saw.json["error"]["message"] == "context_length_exceeded"
    assert saw.headers["x-proxy-served-by"] == "m"
    assert up.calls_to("claude.test") == []


# -- deployments -----------------------------------------------------------------------------


def deployments(*weights: float, **extra: Any) -> dict[str, Any]:
    return {"deployments": [{"backend_type": "openai", "endpoint": f"http://d{i}.test/v1", "api_key": "k",
                             "weight": w} for i, w in enumerate(weights)], **extra}


def always(reply: Callable[[], Reply]) -> Callable[[Call], Reply]:
    return lambda call: reply()


async def test_weighted_choice_across_deployments_follows_the_weights(autojump_clock: MockClock) -> None:
    ok = always(lambda: json_reply(COMPLETION))
    app, up = make_proxy({"m": deployments(3, 1)}, {"d0.test": ok, "d1.test": ok}, seed=7)
    for _ in range(400):
        assert (await post(app, chat())).status == 200
    heavy, light = len(up.calls_to("d0.test")), len(up.calls_to("d1.test"))
    assert heavy + light == 400
    assert 260 <= heavy <= 340  # expected 300; sd ~8.7


async def test_a_failing_deployment_cools_down_then_comes_back(autojump_clock: MockClock) -> None:
    # d0 is preferred 100:1.  It fails twice (each request then retries on d1),
    # is skipped for the 30 s cooldown, then takes traffic again: it recovered.
    def d0(call: Call) -> Reply:
        return OVERLOADED if len(up.calls_to("d0.test")) <= 2 else json_reply(COMPLETION)

    app, up = make_proxy({"m": deployments(100, 1, cooldown_after_failures=2, cooldown_seconds=30,
                                           retry=fixed_backoff(0, attempts=2))},
                         {"d0.test": d0, "d1.test": always(lambda: json_reply(COMPLETION))}, seed=1)
    for _ in range(36):  # one request a second, t = 0 .. 35
        saw = await post(app, chat())
        assert saw.status == 200
        await trio.sleep(1.0)
    d0_calls = starts(up.calls_to("d0.test"))
    assert d0_calls[:3] == [0.0, 1.0, 31.0]  # two failures in a row, then exactly 30 s of silence
    assert len(d0_calls) >= 5  # and it serves again afterwards
    assert set(starts(up.calls_to("d1.test"))) >= {float(t) for t in range(31)}  # d1 took over meanwhile
