"""An in-memory `Transport` that plays a script: for adapter tests under a MockClock.

Theory of operation: the proxy's `Forwarder` only ever talks to its upstreams
through `io_trio.upstream.Transport`.  Replacing that one object with a
`ScriptedTransport` takes sockets out of the picture, so a test can run the
real Quart app under ``trio.testing.MockClock(autojump_threshold=0)``: every
wait below is a `trio.sleep` (or a sleep forever), the clock jumps straight to
the next deadline, and timeouts and retry delays become exact instants a test
can assert with ``trio.current_time()``.

Each upstream (keyed by ``host`` of the deployment's endpoint) has a script:
a list of steps played one per request, or a function of the `Call`.  A step
is one of

* `Reply`: a status line after ``head_delay`` seconds, then body ``pieces``:
  bytes, `Pause` (sleep), `CUT` (the connection breaks: `UpstreamProtocolError`)
  or `STALL` (nothing more ever arrives);
* `Hang`: the response head never arrives;
* `Refuse`: the connection is refused at once (`UpstreamConnectError`);
* `ConnectTimeout`: connecting takes the whole ``connect_timeout`` the proxy
  passed, then fails as a timeout, as the real transports do.

Every request is recorded as a `Call` with the time it was made and the time
the proxy let go of it (`Call.released`: body read to its end, response
closed, or the request cancelled), which is what cancellation tests assert.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import attrs
import trio

from io_trio.upstream import Origin, UpstreamConnectError, UpstreamProtocolError, UpstreamResponse

__all__ = [
    "CUT",
    "STALL",
    "Call",
    "ConnectTimeout",
    "Hang",
    "Pause",
    "Refuse",
    "Reply",
    "ScriptedTransport",
    "Step",
    "json_reply",
    "sse_reply",
]


@attrs.frozen
class Pause:
    """Inside `Reply.pieces`: nothing arrives for ``seconds``."""

    seconds: float = attrs.field(validator=attrs.validators.ge(0.0))


@attrs.frozen
class _Cut:
    """Inside `Reply.pieces`: the connection breaks here."""


@attrs.frozen
class _Stall:
    """Inside `Reply.pieces`: the upstream goes silent forever."""


CUT = _Cut()
STALL = _Stall()

Piece = Union[bytes, Pause, _Cut, _Stall]


def _check_pieces(instance: Reply, attribute: attrs.Attribute[Any], value: tuple[Piece, ...]) -> None:
    for piece in value:
        if not isinstance(piece, (bytes, Pause, _Cut, _Stall)):
            raise TypeError(f"a reply piece is bytes, Pause, CUT or STALL, not {piece!r}")
        if piece == b"":  # b"" means "end of body" to receive_some
            raise ValueError("a reply piece must not be empty")


@attrs.frozen
class Reply:
    """A response: its head after ``head_delay`` seconds, then ``pieces`` in order."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=tuple)
    pieces: tuple[Piece, ...] = attrs.field(default=(), converter=tuple, validator=_check_pieces)
    head_delay: float = 0.0


@attrs.frozen
class Hang:
    """The upstream accepts the request and never answers."""


@attrs.frozen
class Refuse:
    """Nobody listens: the connection is refused at once."""


@attrs.frozen
class ConnectTimeout:
    """The connection attempt takes the proxy's whole connect timeout, then fails."""


Step = Union[Reply, Hang, Refuse, ConnectTimeout]
Script = Union[list[Step], Callable[["Call"], Step]]


def json_reply(obj: Any, status: int = 200, headers: Sequence[tuple[str, str]] = (),
               head_delay: float = 0.0) -> Reply:
    return Reply(status, [("content-type", "application/json"), *headers], [json.dumps(obj).encode()],
                 head_delay=head_delay)


def sse_reply(events: Sequence[tuple[str | None, Any]], *, pause: float = 0.0,
              then: Sequence[Piece] = ()) -> Reply:
    """One piece per SSE event (``(event name or None, JSON value or raw str)``).

    ``pause`` seconds pass before each event; ``then`` is appended after the
    last one (e.g. ``[CUT]`` or ``[STALL]``).
    """
    pieces: list[Piece] = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        if pause:
            pieces.append(Pause(pause))
        pieces.append((f"event: {name}\n" if name else "").encode() + f"data: {text}\n\n".encode())
    return Reply(200, [("content-type", "text/event-stream")], [*pieces, *then])


@attrs.define
class Call:
    """One request the proxy made, as the scripted upstream saw it."""

    host: str
    target: bytes
    headers: dict[str, str]
    body: bytes
    connect_timeout: float
    started: float  # trio.current_time() when the request was made
    released: float | None = None  # when the proxy let go of it (see module docstring)
    how: str = "open"  # "read" (to the end), "closed" (by the proxy), "cancelled", "failed"

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def release(self, how: str) -> None:
        if self.released is None:
            self.released = trio.current_time()
            self.how = how


class ScriptedTransport:
    """A `Transport` whose upstreams answer from scripts, keyed by host."""

    def __init__(self, scripts: Mapping[str, Script]) -> None:
        self.scripts: dict[str, Script] = dict(scripts)
        self.calls: list[Call] = []
        self.closed = False

    def calls_to(self, host: str) -> list[Call]:
        return [call for call in self.calls if call.host == host]

    @property
    def open_calls(self) -> list[Call]:
        """Requests the proxy has not let go of yet (a leak once a test is over)."""
        return [call for call in self.calls if call.released is None]

    async def request(self, method: bytes, origin: Origin, target: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes, *, connect_timeout: float, ssl_verify: bool = True) -> UpstreamResponse:
        if method != b"POST":
            raise AssertionError(f"the proxy only POSTs upstream, got {method!r}")
        call = Call(host=origin.host, target=target, body=body, connect_timeout=connect_timeout,
                    headers={k.decode("latin-1"): v.decode("latin-1") for k, v in headers},
                    started=trio.current_time())
        self.calls.append(call)
        step = self._next_step(call)
        try:
            return await self._play_head(step, call)
        except trio.Cancelled:
            call.release("cancelled")
            raise
        except BaseException:
            call.release("failed")
            raise

    async def aclose(self) -> None:
        self.closed = True

    def _next_step(self, call: Call) -> Step:
        script = self.scripts.get(call.host)
        if script is None:
            raise AssertionError(f"no script for upstream {call.host!r}")
        if callable(script):
            return script(call)
        if not script:
            raise AssertionError(f"upstream {call.host!r} got more requests than scripted")
        return script.pop(0)

    async def _play_head(self, step: Step, call: Call) -> UpstreamResponse:
        if isinstance(step, Refuse):
            raise UpstreamConnectError(f"{call.host}: cannot connect: [Errno 111] Connection refused")
        if isinstance(step, ConnectTimeout):
            await trio.sleep(call.connect_timeout)
            raise UpstreamConnectError(f"{call.host}: connect timed out after {call.connect_timeout} s",
                                       timed_out=True)
        if isinstance(step, Hang):
            await trio.sleep_forever()
        assert isinstance(step, Reply)
        await trio.sleep(step.head_delay)
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in step.headers]
        return _ScriptedResponse(step, headers, call)


class _ScriptedResponse(UpstreamResponse):
    __slots__ = ("_call", "_pieces")

    def __init__(self, reply: Reply, headers: list[tuple[bytes, bytes]], call: Call) -> None:
        super().__init__(reply.status, headers)
        self._pieces = list(reply.pieces)
        self._call = call

    async def receive_some(self) -> bytes:
        if self._call.released is not None:
            if self._call.how == "read":
                return b""
            raise UpstreamProtocolError("the response was closed before its end", response_started=True)
        try:
            return await self._next_piece()
        except trio.Cancelled:
            self._call.release("cancelled")
            raise

    async def _next_piece(self) -> bytes:
        while self._pieces:
            piece = self._pieces.pop(0)
            if isinstance(piece, Pause):
                await trio.sleep(piece.seconds)
            elif isinstance(piece, _Stall):
                await trio.sleep_forever()
            elif isinstance(piece, _Cut):
                self._call.release("failed")
                raise UpstreamProtocolError(f"{self._call.host}: response body broken: connection reset",
                                            response_started=True)
            else:
                return piece
        self._call.release("read")
        return b""

    async def aclose(self) -> None:
        self._call.release("closed")
