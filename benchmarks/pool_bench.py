"""CPU per request of the upstream transports alone, against nginx on 127.0.0.1.

    .venv/bin/python -m benchmarks.pool_bench                      # H11Pool, httpx, the floor
    .venv/bin/python -m benchmarks.pool_bench --compare old=/tmp/h11_pool_orig.py

Theory of operation: the proxy's own benchmark (`benchmarks.run`) measures the
whole process, where the transport is one cost among many.  Here only the
transport runs: one trio process sends the 387-byte chat request of the load
runs to nginx's fixed 624-byte ``chat.completion`` (the same fake as
`benchmarks.run`), and `time.process_time` (this process only: nginx's CPU is
not counted) is divided by the requests made.  Three shapes:

* ``seq``: one task, N keep-alive requests one after another;
* ``conc``: C tasks sharing one transport, N requests in all;
* ``stream``: C tasks reading chunked SSE streams from the SSE fake, the cost
  per *stream*, the path of ``receive_some``.  The chunks are a few ms apart so
  each arrives in a read of its own whatever the transport: with no delay a
  faster client would make more, smaller reads and look more expensive.

Every transport runs in every round, in turn, and the report gives the median
round (a shared machine drifts, alternating keeps the comparison fair).
``floor`` is no transport at all but the least a trio client must do: one
``send_all`` of prebuilt bytes and ``receive_some`` until the content-length is
in, so it shows how much of a transport's cost is trio's and how much is ours.
``--compare NAME=PATH`` loads another version of ``h11_pool.py`` (say, the one
before a change) so both are measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from io_trio.upstream import H11Pool, HttpxTransport, Origin

from .fakes import start_fakes
from .payloads import openai_request
from .procs import Supervisor

__all__ = ["main"]

_HEADERS = [
    (b"authorization", b"Bearer sk-bench-0123456789abcdef"),
    (b"content-type", b"application/json"),
    (b"accept", b"application/json"),
    (b"user-agent", b"OpenAI/Python 1.57.0"),
    (b"x-request-id", b"req_0123456789abcdef"),
]
_TARGET = b"/v1/chat/completions"

Factory = Callable[..., Any]  # a transport class, or _Floor(origin, body)


class _Floor:
    """The least a trio client does per request: one send_all, reads until the body is in."""

    def __init__(self, origin: Origin, body: bytes) -> None:
        head = b"POST %s HTTP/1.1\r\nhost: %s\r\n" % (_TARGET, origin.host_header)
        head += b"".join(b"%s: %s\r\n" % pair for pair in _HEADERS)
        self._request = head + b"content-length: %d\r\n\r\n" % len(body) + body
        self._origin = origin
        self._idle: list[trio.SocketStream] = []

    async def fetch(self) -> bytes:
        stream = self._idle.pop() if self._idle else await trio.open_tcp_stream(self._origin.host, self._origin.port)
        await stream.send_all(self._request)
        data = await stream.receive_some(65536)
        end = data.index(b"\r\n\r\n") + 4
        start = data[:end].lower().index(b"content-length: ") + 16
        total = end + int(data[start:data.index(b"\r\n", start)])
        while len(data) < total:
            data += await stream.receive_some(65536)
        self._idle.append(stream)
        return data[end:]

    async def aclose(self) -> None:
        for stream in self._idle:
            await stream.aclose()


def _load_pool_module(name: str, path: Path) -> Any:
    """Import another version of h11_pool.py inside io_trio.upstream (for its relative imports)."""
    spec = importlib.util.spec_from_file_location(f"io_trio.upstream._bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _fetch_with(transport: Any, origin: Origin, body: bytes) -> Callable[[], Awaitable[object]]:
    """One whole request: send, read the whole body, release the connection."""
    if isinstance(transport, _Floor):
        return transport.fetch

    async def fetch() -> bytes:
        resp = await transport.request(b"POST", origin, _TARGET, _HEADERS, body, connect_timeout=5.0)
        async with resp:
            return await resp.read()

    return fetch


def _stream_with(transport: Any, origin: Origin, body: bytes) -> Callable[[], Awaitable[object]]:
    """One whole stream, read piece by piece as the proxy relays it."""
    async def stream() -> int:
        resp = await transport.request(b"POST", origin, _TARGET, _HEADERS, body, connect_timeout=5.0)
        async with resp:
            pieces = 0
            while await resp.receive_some():
                pieces += 1
            return pieces

    return stream


async def _run(call: Callable[[], Awaitable[object]], count: int, tasks: int) -> float:
    """CPU seconds for `count` calls spread over `tasks` tasks."""
    async def worker(share: int) -> None:
        for _ in range(share):
            await call()

    start = time.process_time()
    if tasks == 1:
        await worker(count)
    else:
        async with trio.open_nursery() as nursery:
            for i in range(tasks):
                nursery.start_soon(worker, count // tasks + (i < count % tasks))
    return time.process_time() - start


async def _measure(factories: dict[str, Factory], json_origin: Origin, sse_origin: Origin,
                   args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    plain, streaming = openai_request("gpt-4o"), openai_request("gpt-4o", stream=True)
    shapes = [("seq", args.requests, 1), ("conc", args.requests, args.concurrency)]
    if args.streams:
        shapes.append(("stream", args.streams, args.concurrency))
    results: dict[str, dict[str, list[float]]] = {shape: {name: [] for name in factories} for shape, _, _ in shapes}
    for _ in range(args.rounds):
        for shape, count, tasks in shapes:
            for name, factory in factories.items():
                if shape == "stream" and name == "floor":
                    continue
                transport = factory(json_origin, plain) if name == "floor" else factory()
                try:
                    if shape == "stream":
                        call = _stream_with(transport, sse_origin, streaming)
                    else:
                        call = _fetch_with(transport, json_origin, plain)
                    await _run(call, min(200, count), tasks)  # warm up: connections, caches
                    results[shape][name].append(await _run(call, count, tasks) / count)
                finally:
                    await transport.aclose()
    return results


def _report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> str:
    lines = [f"CPU per request (µs, median of {args.rounds} rounds; min-max), process_time of this process only",
             f"seq: {args.requests} sequential; conc: {args.requests} over {args.concurrency} tasks; "
             f"stream: {args.streams} SSE streams of {args.chunks} chunks {args.delay_ms:g} ms apart over "
             f"{args.concurrency} tasks (per stream)",
             ""]
    for shape, by_name in results.items():
        for name, values in by_name.items():
            if values:
                micro = [v * 1e6 for v in values]
                lines.append(f"{shape:7} {name:10} {statistics.median(micro):8.1f}   "
                             f"({min(micro):.1f}-{max(micro):.1f})")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pool_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per measurement (default 5000)")
    parser.add_argument("--concurrency", type=int, default=32, help="tasks of the conc and stream shapes (32)")
    parser.add_argument("--streams", type=int, default=200, help="SSE streams per measurement (0 skips; 200)")
    parser.add_argument("--chunks", type=int, default=50, help="chunks per SSE stream (default 50)")
    parser.add_argument("--delay-ms", type=float, default=2.0,
                        help="ms between SSE chunks (default 2: one chunk per read, as with a real model)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each transport in turn (default 3)")
    parser.add_argument("--only", action="append", default=[], help="measure only these transports")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=PATH",
                        help="another h11_pool.py to measure as NAME")
    args = parser.parse_args(argv)

    factories: dict[str, Factory] = {"h11": H11Pool}
    for spec in args.compare:
        name, _, path = spec.partition("=")
        factories[name] = _load_pool_module(name, Path(path)).H11Pool
    factories["httpx"] = HttpxTransport
    factories["floor"] = _Floor
    if args.only:
        factories = {name: f for name, f in factories.items() if name in args.only}

    with Supervisor(pin=False) as sup, tempfile.TemporaryDirectory() as tmp, \
            open(Path(tmp) / "fakes.log", "w") as log:
        fakes = start_fakes(sup, Path(tmp), cpu=None, chunks=args.chunks, delay_ms=args.delay_ms, log=log)
        json_origin = Origin("http", "127.0.0.1", fakes.json_port)
        sse_origin = Origin("http", "127.0.0.1", fakes.sse_port)
        print(f"fake upstream: {fakes.json_tool}", flush=True)
        results = trio.run(_measure, factories, json_origin, sse_origin, args)
    print(_report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
