"""A lean streaming client: first-event time, per-chunk lag and reads per stream.

Each stream is one HTTP/1.1 connection (``Connection: close``) driven by an
asyncio `Protocol`: asyncio's selector loop does one ``recv`` per readiness
event and hands each non-empty result to `data_received`, so counting calls
counts "client reads that returned data".  The client never parses HTTP
chunking or JSON: it looks for the fake's markers (`benchmarks.payloads.MARKER`)
in the raw bytes, timestamps each read with ``time.monotonic()`` (the clock the
fake embedded), and keeps only a short tail between reads in case a marker is
split across two of them.  The stream ends at the chunked terminator (or when
the server closes).

The same code measures the fake directly and through the proxy, so whatever it
costs itself is in the baseline too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import attrs

from .payloads import MARKER
from .report import median, percentile

__all__ = ["StreamResult", "StreamRun", "run_streams"]

_END = b"\r\n0\r\n\r\n"
_TAIL = 256  # bytes kept between reads: longer than any marker


@attrs.define
class StreamResult:
    """What one stream saw.  Times are seconds, from ``time.monotonic()``."""

    sent_at: float = 0.0
    status: int | None = None
    first_event_at: float | None = None
    first_event_lag: float | None = None
    ended_at: float | None = None
    reads: int = 0
    lags: list[float] = attrs.Factory(list)
    indexes: list[int] = attrs.Factory(list)
    error: str | None = None

    @property
    def events(self) -> int:
        return len(self.indexes)

    def problem(self, expected_events: int) -> str | None:
        """Why this stream does not count as a correct relay, or None."""
        if self.error:
            return self.error
        if self.status != 200:
            return f"status {self.status}"
        if self.indexes != list(range(expected_events)):
            return f"events {self.events}/{expected_events} (or out of order)"
        if self.ended_at is None:
            return "no end of stream"
        return None


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, request: bytes, result: StreamResult, done: asyncio.Future[None]) -> None:
        self.request = request
        self.result = result
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.result.sent_at = time.monotonic()
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        result = self.result
        result.reads += 1
        buf = self.tail + data
        if result.status is None:
            result.status = _status(buf)
        last = 0
        for match in MARKER.finditer(buf):
            sent = float(match[2])
            if result.first_event_at is None:
                result.first_event_at, result.first_event_lag = now, now - sent
            result.lags.append(now - sent)
            result.indexes.append(int(match[1]))
            last = match.end()
        self.tail = buf[last:][-_TAIL:]
        if buf.endswith(_END):
            result.ended_at = now
            self._finish()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.result.ended_at is None and self.result.status != 200:
            self.result.ended_at = time.monotonic()  # an error body ends with the connection
        if exc is not None and self.result.error is None and self.result.ended_at is None:
            self.result.error = f"connection lost: {exc!r}"
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if self.transport is not None:
            self.transport.close()


def _status(head: bytes) -> int | None:
    parts = head.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def _request(port: int, path: str, body: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: 127.0.0.1:{port}", "content-type: application/json",
             "accept: text/event-stream", f"content-length: {len(body)}", "connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _one(port: int, request: bytes, timeout: float) -> StreamResult:
    loop = asyncio.get_running_loop()
    result = StreamResult()
    done: asyncio.Future[None] = loop.create_future()
    try:
        transport, _ = await loop.create_connection(lambda: _StreamProtocol(request, result, done),
                                                    "127.0.0.1", port)
    except OSError as err:
        result.error = f"connect: {err}"
        return result
    try:
        await asyncio.wait_for(done, timeout)
    except asyncio.TimeoutError:
        result.error = f"timed out after {timeout:g} s"
    finally:
        transport.close()
    return result


@attrs.frozen
class StreamRun:
    """The summary of `streams` concurrent streams (one run of one target)."""

    streams: int
    ok: int
    errors: list[str]
    ttfb_ms: float  # median over streams: request written -> first event read
    first_lag_ms: float  # median over streams: first event read - its send time
    lag_p50_ms: float  # over every chunk of every stream
    lag_p99_ms: float
    total_ms: float  # median over streams: request written -> end of stream
    total_max_ms: float
    reads: float  # median reads per stream
    events: float  # median events per stream
    cpu_us_per_event: float | None = None  # the proxy's CPU per relayed event (filled in by the runner)

    def as_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def summarise(results: list[StreamResult], expected_events: int) -> StreamRun:
    problems = [p for p in (r.problem(expected_events) for r in results) if p]
    good = [r for r in results if r.first_event_at is not None]
    lags = [lag for r in good for lag in r.lags]
    totals = [(r.ended_at - r.sent_at) * 1000 for r in good if r.ended_at is not None]
    return StreamRun(
        streams=len(results),
        ok=len(results) - len(problems),
        errors=sorted(set(problems))[:5],
        ttfb_ms=median([(r.first_event_at - r.sent_at) * 1000 for r in good]),  # type: ignore[operator]
        first_lag_ms=median([r.first_event_lag * 1000 for r in good]),  # type: ignore[operator]
        lag_p50_ms=median(lags) * 1000,
        lag_p99_ms=percentile(lags, 99) * 1000,
        total_ms=median(totals),
        total_max_ms=max(totals, default=float("nan")),
        reads=median([float(r.reads) for r in results]),
        events=median([float(r.events) for r in results]),
    )


async def run_streams(*, port: int, path: str, body: bytes, streams: int, expected_events: int,
                      headers: Sequence[tuple[str, str]] = (), timeout: float = 60.0) -> StreamRun:
    """Open `streams` streams at once against 127.0.0.1:`port` and summarise them."""
    request = _request(port, path, body, headers)
    results = await asyncio.gather(*(_one(port, request, timeout) for _ in range(streams)))
    return summarise(list(results), expected_events)
