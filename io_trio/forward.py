"""Serving one client request: attempts, retries, deployments and fallbacks.

Theory of operation: a `Forwarder` walks the request's chain of models (the
routed model, then its `fallbacks`).  For each model the balancer orders its
deployments; each attempt goes to the next one in that order.  An attempt
ends in an `Attempt`: how it went (a `core.retry.Outcome`) and what the client
would get if it were the last one.  `core.retry.decide` says whether to relay
it, sleep and retry, or give up (and maybe fall back).  The only sleeps, clocks
and cancel scopes of the proxy are here and in the stream relay below.

Nothing is retried once a byte went to the client: a streamed response is
committed only once the relay has turned the upstream's first event into client
bytes (a piece holding half an event, or only SSE comments, commits nothing),
so a stream that fails before its first event is retried like any other
failure, and one that fails later ends with an error event in the client's
protocol.  The streamed body is a `RelayedStream`, which owns the upstream
response from then on and releases it when closed, poured or not.

Two clocks: every timeout, sleep and breaker reading uses trio's clock (which
tests replace with a MockClock); `decide` also gets Unix time, because a
Retry-After may be an HTTP-date, and the request's deadline translated onto it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from core.audit import RequestTrace
from core.errors import ProxyError
from core.exchange import ClientProtocol, ClientResponse, Exchange, Ids, UpstreamRequest, error_body
from core.relay import StreamRelay
from core.retry import Decision, GiveUp, Outcome, OutcomeKind, RetryAfter, decide

from .observe import Observer, StreamTap
from .state import Drain
from .upstream import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamResponse

__all__ = ["Forwarder", "RelayedStream", "Reply", "error_reply"]

log = logging.getLogger("llm_proxy.forward")

JSON = "application/json"
SSE_HEADERS = [("cache-control", "no-cache"), ("x-accel-buffering", "no")]


@attrs.define(slots=True)
class Reply:
    """What the client gets: status, headers, and a whole `body` or a `stream` of pieces.

    Plain data for `io_trio.endpoint` to write as ASGI messages: the request
    path never builds a framework response object.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    stream: RelayedStream | LocalStream | None = None
    error: ProxyError | None = None  # the proxy's own error, for the log


def error_reply(client: ClientProtocol, err: ProxyError) -> Reply:
    headers = [("content-type", JSON)]
    if err.should_retry is not None:
        headers.append(("x-should-retry", "true" if err.should_retry else "false"))
    return Reply(err.status, headers, error_body(client, err), error=err)


def _stream_reply(status: int, headers: list[tuple[str, str]], stream: RelayedStream | LocalStream) -> Reply:
    kept = [(name, value) for name, value in headers if name != "content-type"]
    return Reply(status, [("content-type", "text/event-stream"), *kept, *SSE_HEADERS], stream=stream)


@attrs.define
class Attempt:
    """One attempt's ending: the outcome for `decide`, and what the client would get."""

    outcome: Outcome
    error: ProxyError | None = None  # no usable response (connect failure, timeout...)
    upstream: UpstreamResponse | None = None  # open: a 2xx stream, relayed by `relay`
    relay: StreamRelay | None = None  # has already turned the first event into `first`
    first: bytes = b""  # client bytes: the stream's first event(s)
    heard: list[Any] = attrs.field(factory=list)  # the upstream events `first` was made from (for the log)
    until: float = math.inf  # trio time at which the attempt's time is up (timeout_seconds, deadline)
    status: int = 0
    headers: list[tuple[str, str]] = attrs.field(factory=list)
    body: bytes = b""

    async def close(self) -> None:
        if self.upstream is not None:
            with trio.CancelScope(shield=True):
                await self.upstream.aclose()
            self.upstream = None


def _failure(kind: OutcomeKind, err: ProxyError) -> Attempt:
    return Attempt(Outcome(kind), error=err)


def _decode_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]


class Forwarder:
    """Serves one request; see the module docstring."""

    def __init__(self, state: Any, *, client: ClientProtocol, body: dict[str, Any], raw: bytes,
                 model_name: str, model: Any, client_headers: list[tuple[str, str]], count_tokens: bool,
                 trace: RequestTrace) -> None:
        self.state = state
        self.client = client
        self.body = body
        self.raw = raw
        self.model_name = model_name
        self.model = model
        self.client_headers = client_headers
        self.count_tokens = count_tokens
        self.trace = trace
        self.observe: Observer = state.process.observe
        self.ids = Ids(token=state.token(), created=int(time.time()))
        self.attempts = 0
        deadline = model.deadline_seconds
        self.deadline = trio.current_time() + deadline if deadline is not None else math.inf

    async def run(self) -> Reply:
        chain = self._chain()
        for index, (model, route_name) in enumerate(chain):
            # Past the deadline a fallback could only time out at once.
            more = index + 1 < len(chain) and trio.current_time() < self.deadline
            response, final = await self._serve_model(model, route_name, fallback_left=more)
            if final or not more:
                return self._stamp(response, model)
            log.warning("model %s failed; falling back to %s", model.name, chain[index + 1][0].name)
            self.trace.fell_back()
        raise AssertionError("unreachable: the chain is never empty")

    def _chain(self) -> list[tuple[Any, str]]:
        router = self.state.config.router
        chain = [(self.model, self.model_name)]
        for name in self.model.fallbacks:
            fallback = router.route(name)
            if fallback is not None:
                chain.append((fallback, name))
        return chain

    def _stamp(self, reply: Reply, model: Any) -> Reply:
        reply.headers.append(("x-proxy-attempts", str(self.attempts)))
        reply.headers.append(("x-proxy-served-by", model.name))
        self.trace.served_by = model.name
        return reply

    async def _serve_model(self, model: Any, route_name: str, *, fallback_left: bool) -> tuple[Reply, bool]:
        """(response, final): final unless a fallback should be tried instead."""
        balancer = self.state.balancer(model)
        order = balancer.choose(trio.current_time(), self.state.rng, last_resort=not fallback_left)
        if not order:
            err = ProxyError(503, f"every deployment of {model.name} is cooling down after failures",
                             type="overloaded_error")
            return error_reply(self.client, err), False
        attempt_number = 0
        while True:
            attempt_number += 1
            deployment = order[(attempt_number - 1) % len(order)]
            exchange = self._exchange(model, deployment, route_name)
            if exchange.local_answer:
                self.attempts += 1
                now = trio.current_time()
                self.trace.attempt_started(deployment=deployment.label, backend=deployment.backend_type, url=None,
                                           now=now)
                self.trace.attempt_ended(result="ok", status=200, now=now)
                return self._local_response(exchange), True
            attempt = await self._attempt(exchange, exchange.upstream_request())
            balancer.record(deployment, not attempt.outcome.counts_as_backend_failure, trio.current_time())
            decision = self._decide(model, attempt_number, attempt.outcome)
            if isinstance(decision, RetryAfter):
                await attempt.close()
                log.warning("retrying %s in %.2f s: %s", deployment.label, decision.delay, decision.reason)
                slept_from = trio.current_time()
                await trio.sleep(decision.delay)
                # Measured, not planned: a sleep overshoots, and the overhead metric must not absorb it.
                self.trace.retried(waited=trio.current_time() - slept_from)
                continue
            if isinstance(decision, GiveUp) and decision.fallback_ok and fallback_left:
                await attempt.close()
                return Reply(0, []), False
            return self._client_response(exchange, attempt), True

    def _decide(self, model: Any, attempt_number: int, outcome: Outcome) -> Decision:
        """`decide` on Unix time, with the deadline (kept on trio's clock) carried over to it."""
        now = time.time()
        left = self.deadline - trio.current_time()
        deadline = None if left == math.inf else now + left
        return decide(model.retry, attempt=attempt_number, outcome=outcome, now=now, deadline=deadline,
                      rng=self.state.rng)

    def _exchange(self, model: Any, deployment: Any, route_name: str) -> Exchange:
        return Exchange(client=self.client, body=self.body, raw=self.raw, model_name=self.model_name,
                        model=model, deployment=deployment, client_headers=self.client_headers, ids=self.ids,
                        count_tokens=self.count_tokens, route_name=route_name)

    def _local_response(self, exchange: Exchange) -> Reply:
        reply = exchange.local_response()
        if isinstance(reply, list):
            return _stream_reply(200, [], LocalStream(reply, self.observe.tap(self.trace, wire=None)))
        return Reply(reply.status, [("content-type", JSON)], reply.body)

    # -- one attempt -------------------------------------------------------------------

    async def _attempt(self, exchange: Exchange, request: UpstreamRequest) -> Attempt:
        self.attempts += 1
        attempt = await self._send_traced(exchange, request)
        if attempt.upstream is None and attempt.error is None:
            retry = exchange.retry_without_think(attempt.status, attempt.body)
            if retry is not None:
                log.info("%s cannot think; asking again without thinking", exchange.deployment.label)
                attempt = await self._send_traced(exchange, retry)
        return attempt

    async def _send_traced(self, exchange: Exchange, request: UpstreamRequest) -> Attempt:
        """`_send`, reported to the trace (with the stages the audit level keeps)."""
        dep, observe, trace = exchange.deployment, self.observe, self.trace
        url = dep.endpoint + request.path
        trace.attempt_started(deployment=dep.label, backend=dep.backend_type, url=url, now=trio.current_time())
        if observe.headers_level:
            trace.captured("upstream_request", url=url, headers=request.headers,
                           body=request.body if observe.full_level else None)
        attempt = await self._send(exchange, request)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("attempt %d of %s to %s: %s (status %s)", len(trace.attempts), self.model_name, dep.label,
                      attempt.outcome.kind.value, attempt.status or "-")
        trace.attempt_ended(result=attempt.outcome.kind.value, status=attempt.status or None,
                            now=trio.current_time(), done=attempt.upstream is None)
        if observe.headers_level and attempt.status:
            trace.captured("upstream_response", status=attempt.status, headers=attempt.headers,
                           body=attempt.body if observe.full_level and attempt.upstream is None else None)
        return attempt

    async def _send(self, exchange: Exchange, request: UpstreamRequest) -> Attempt:
        model, dep = exchange.model, exchange.deployment
        origin, target = self.state.backends.target(dep, request.path)
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in request.headers]
        now = trio.current_time()
        whole = min(now + model.timeout_seconds, self.deadline)
        first_by = now + model.first_byte_timeout_seconds
        upstream: UpstreamResponse | None = None
        relay, first, heard = None, b"", []
        try:
            # One scope for the whole exchange: its deadline moves from the first byte's to the
            # attempt's end once a whole body is to be read.
            with trio.move_on_at(min(first_by, whole)) as scope:
                upstream = await self.state.transport.request(
                    b"POST", origin, target, headers, request.body,
                    connect_timeout=model.connect_timeout_seconds, ssl_verify=dep.ssl_verify)
                if not (request.stream and 200 <= upstream.status < 300):
                    scope.deadline = whole
                    body = await upstream.read()
                    received = _decode_headers(upstream.headers)
                    outcome = Outcome(OutcomeKind.HTTP_STATUS, status=upstream.status, headers=dict(received))
                    return Attempt(outcome, status=upstream.status, headers=received, body=body)
                relay = exchange.stream()
                relay.listener = heard.append
                first = await _first_event(upstream, relay)
            if scope.cancelled_caught:
                if upstream is not None and relay is None:  # the head came in time, the whole body did not
                    return _failure(OutcomeKind.TIMEOUT_BEFORE_RESPONSE, ProxyError(
                        504, f"the upstream of {dep.label} did not finish within {model.timeout_seconds:g} s",
                        type="timeout_error"))
                return _failure(OutcomeKind.TIMEOUT_BEFORE_RESPONSE, _late(exchange, first_by <= whole))
            assert upstream is not None and relay is not None
            attempt = Attempt(Outcome(OutcomeKind.OK), upstream=upstream, relay=relay, first=first, heard=heard,
                              status=upstream.status, headers=_decode_headers(upstream.headers), until=whole)
            upstream = None  # now owned by the attempt
            return attempt
        except UpstreamConnectError as err:
            kind = OutcomeKind.TIMEOUT_BEFORE_RESPONSE if err.timed_out else OutcomeKind.CONNECT_ERROR
            return _failure(kind, upstream_failure(err, dep))
        except UpstreamProtocolError as err:
            return _failure(OutcomeKind.PROTOCOL_ERROR_BEFORE_RESPONSE, upstream_failure(err, dep))
        except FirstEventError as err:
            return Attempt(Outcome(OutcomeKind.HTTP_STATUS, status=err.error.status), error=err.error)
        finally:
            if upstream is not None and upstream.open:  # a body read to its end left nothing to release
                with trio.CancelScope(shield=True):
                    await upstream.aclose()

    # -- what the client gets ------------------------------------------------------------

    def _client_response(self, exchange: Exchange, attempt: Attempt) -> Reply:
        if attempt.error is not None:
            return error_reply(self.client, attempt.error)
        headers = exchange.model.response_headers.apply_response(attempt.headers)
        if attempt.upstream is not None:
            assert attempt.relay is not None
            tap = self.observe.tap(self.trace, wire=exchange.wire)
            for event in attempt.heard:
                tap.upstream(event)
            attempt.relay.listener = tap.upstream if tap.wants_upstream else None
            body = RelayedStream(attempt.upstream, attempt.first, attempt.relay, exchange, until=attempt.until,
                                 drain=self.state.drain, tap=tap)
            attempt.upstream = None  # now owned by the body
            return _stream_reply(attempt.status, headers, body)
        try:
            reply: ClientResponse = exchange.response(attempt.status, attempt.headers, attempt.body)
        except ProxyError as err:
            return error_reply(self.client, err)
        content_type = next((v for k, v in reply.headers if k == "content-type"), JSON)
        kept = [(name, value) for name, value in headers if name != "content-type"]
        return Reply(reply.status, [("content-type", content_type), *kept], reply.body)


def _late(exchange: Exchange, first_byte: bool) -> ProxyError:
    """The 504 for an attempt that got no response (or no first event) in time."""
    model, dep = exchange.model, exchange.deployment
    if first_byte:
        what = f"no response within first_byte_timeout_seconds ({model.first_byte_timeout_seconds:g} s)"
    else:
        what = "no response before the request ran out of time (timeout_seconds or deadline_seconds)"
    return ProxyError(504, f"the upstream of {dep.label} sent {what}", type="timeout_error")


def upstream_failure(err: UpstreamError, dep: Any) -> ProxyError:
    """The client's view of a transport failure; never names a credential."""
    if isinstance(err, UpstreamConnectError) and err.timed_out:
        return ProxyError(504, f"timed out connecting to the upstream of {dep.label}", type="timeout_error")
    if isinstance(err, UpstreamConnectError):
        return ProxyError(502, f"could not connect to the upstream of {dep.label}: {err}", type="api_error")
    return ProxyError(502, f"the upstream of {dep.label} broke the connection: {err}", type="api_error")


Write = Callable[[bytes], Awaitable[None]]
"""Sends one piece of a streamed body to the client."""


class LocalStream:
    """The body of a streamed local answer (the mock backend): pieces already made.

    A class for the same reason as `RelayedStream`: `aclose` must end the
    request's trace even if `pour` never ran.
    """

    def __init__(self, pieces: list[bytes], tap: StreamTap) -> None:
        self._pieces = pieces
        self._tap = tap
        self._count = 0

    async def pour(self, write: Write) -> None:
        for piece in self._pieces:
            self._count += 1
            self._tap.client(piece)
            await write(piece)
        self._tap.finish(chunks=self._count, client_gone=False)

    async def aclose(self) -> None:
        self._tap.finish(chunks=self._count, client_gone=True)  # a no-op after a whole pour


async def _first_event(upstream: UpstreamResponse, relay: StreamRelay) -> bytes:
    """Feed the relay until it has client bytes: what commits a stream to the client.

    Until then nothing has reached the client, so a stream that ends or breaks
    here is an ordinary failure that may be retried (issue 5, "Retry").
    """
    while True:
        data = await upstream.receive_some()
        if not data:
            raise UpstreamProtocolError("the stream ended before its first event", response_started=True)
        out = relay.feed(data)
        if out and relay.error is not None and relay.events == 1:
            raise FirstEventError(relay.error)
        if out:
            return out


class FirstEventError(Exception):
    """The stream's first event was an error: nothing was sent, so it is an
    ordinary failed attempt with that error's status (529, 429...)."""

    def __init__(self, error: ProxyError) -> None:
        super().__init__(error.message)
        self.error = error


class RelayedStream:
    """The body of a streamed response: client bytes from an open upstream stream.

    `pour` relays the upstream's pieces through the relay to the client until
    the upstream body ends; a timeout, graceful shutdown's deadline or a broken
    upstream ends it with one error event in the client's protocol.

    Each read of the upstream may wait ``idle_timeout_seconds``, and none may
    outlast the attempt (``until``) or the shutdown's deadline.  A watchdog
    task, one per stream, enforces the three: it sleeps until the read in
    progress would be overdue and then cancels the relay's scope.  Per event
    the relay only notes when its read began.  (A cancel scope around each
    read cost 9% of a relayed event's instructions: see README "Performance".)
    A write to the client is never cut short by these deadlines; a read that
    would start past ``until`` or the shutdown's deadline fails without waiting.

    A class, not an async generator, so that `aclose` releases the upstream
    even if `pour` never ran: a client that leaves between the handler's
    return and the first write cancels the response before its body is
    entered, and a generator that never ran has no ``finally`` to run.
    """

    def __init__(self, upstream: UpstreamResponse, first: bytes, relay: StreamRelay, exchange: Exchange, *,
                 until: float, drain: Drain | None = None, tap: StreamTap | None = None) -> None:
        self._drain = drain if drain is not None else Drain()
        self._upstream: UpstreamResponse | None = upstream
        self._first = first
        self._relay = relay
        self._model, self._dep = exchange.model, exchange.deployment
        self._until = until
        self._reading_since: float | None = None  # trio time the read in progress began; None between reads
        self._overdue: ProxyError | None = None  # why the watchdog cut a read short
        self._tap = tap  # the log's and the metrics' view of the stream
        self._complete = False  # the client got the whole stream

    async def pour(self, write: Write) -> None:
        try:
            await self._out(write, self._first)
            last = b""
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watchdog, nursery.cancel_scope)
                last = await self._relay_all(write, nursery.cancel_scope)
                nursery.cancel_scope.cancel()
            # Written outside the nursery, whose scope the watchdog may have cancelled.
            await self._out(write, last if self._overdue is None else self._relay.fail(self._overdue))
            self._complete = True
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Release the upstream (idempotent, safe in a cancelled scope)."""
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            with trio.CancelScope(shield=True):
                await upstream.aclose()
        if self._tap is not None:
            self._tap.finish(chunks=self._relay.events, client_gone=not self._complete)

    async def _out(self, write: Write, piece: bytes) -> None:
        if piece:
            if self._tap is not None:
                self._tap.client(piece)
            await write(piece)

    async def _relay_all(self, write: Write, scope: trio.CancelScope) -> bytes:
        """Relay until the upstream ends; the stream's last piece (its end, or an error event) is returned."""
        upstream, relay, drain = self._upstream, self._relay, self._drain
        assert upstream is not None
        while True:
            now = trio.current_time()
            if now >= self._until or now >= drain.deadline:  # out of time already: no read to wait on
                return relay.fail(self._late(now, now))
            self._reading_since = now
            try:
                data = await upstream.receive_some()
            except UpstreamError as err:
                # The watchdog's verdict, if it came in the same pass, stands (pour reports it).
                return b"" if scope.cancel_called else relay.fail(upstream_failure(err, self._dep))
            finally:
                self._reading_since = None
            if scope.cancel_called:  # the watchdog's verdict came in with this data: it stands
                return b""
            if not data:
                return relay.finish()
            await self._out(write, relay.feed(data))

    async def _watchdog(self, scope: trio.CancelScope) -> None:
        """Cancel `scope` when the read in progress is overdue (see the class docstring)."""
        idle, drain = self._model.idle_timeout_seconds, self._drain
        while True:
            now, since = trio.current_time(), self._reading_since
            limit = min(self._until, drain.deadline)
            if since is None:  # between reads (the client is being written to)
                if now >= limit:  # the next read fails by itself before it waits: nothing to wake for
                    await trio.sleep_forever()
                # A read that begins before the next look is due idle seconds later, or at the limit.
                due = min(now + idle, limit)
            else:
                due = min(since + idle, limit)
                if now >= due:
                    self._overdue = self._late(since, now)
                    scope.cancel()
                    return
            with trio.CancelScope(deadline=due) as nap, drain.bound(nap):  # shutdown may bring it forward
                await trio.sleep_forever()

    def _late(self, since: float, now: float) -> ProxyError:
        """The error event for a read begun at `since` that is out of time at `now`."""
        if self._drain.expired(now):  # graceful shutdown (io_trio.state.Drain)
            return self._drain.error()
        idle = self._model.idle_timeout_seconds
        if since + idle <= now and since + idle < self._until:
            return ProxyError(504, f"the upstream of {self._dep.label} sent nothing for {idle:g} s",
                              type="timeout_error")
        return ProxyError(504, f"the upstream of {self._dep.label} did not finish in time (timeout_seconds or "
                               "deadline_seconds)", type="timeout_error")
