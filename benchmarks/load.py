"""Request/response load: wrk with `wrk_post.lua`, or a Python fallback with the same output.

`run_load` starts one load-generator process (pinned to the load CPU), waits
for it and returns a `LoadResult`.  wrk is what the peers were measured with
(performance-notes.md: ``wrk -t1``, keep-alive connections, a 387-byte POST);
when it is missing, ``python -m benchmarks.load`` is a keep-alive asyncio
client that prints the same ``BENCH_JSON`` line.  The fallback is far slower
than wrk (it cannot saturate nginx, so "direct" numbers are its own ceiling),
but it still loads a Python proxy on the other core properly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from .procs import Supervisor
from .report import percentile

__all__ = ["LoadResult", "LoadTarget", "load_tool", "run_load"]

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = HERE / "wrk_post.lua"


@attrs.frozen
class LoadTarget:
    """Where and what to POST."""

    port: int
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class LoadResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    non_2xx: int
    errors: int  # connect + read + write errors and timeouts
    cpu_us_per_request: float | None = None  # filled in for the proxy

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadResult:
        duration = data["duration_us"] / 1e6
        return cls(
            requests=data["requests"], duration_s=duration,
            rps=data["requests"] / duration if duration else 0.0,
            p50_ms=data["p50_us"] / 1000, p90_ms=data["p90_us"] / 1000, p99_ms=data["p99_us"] / 1000,
            mean_ms=data["mean_us"] / 1000, max_ms=data["max_us"] / 1000,
            non_2xx=data["status_errors"],
            errors=data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"],
        )

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def load_tool() -> str:
    """``wrk`` if installed, else ``python`` (the fallback)."""
    return "wrk" if shutil.which("wrk") else "python"


def run_load(sup: Supervisor, target: LoadTarget, *, connections: int, duration: float, cpu: int | None,
             max_requests: int | None = None, workdir: Path) -> LoadResult:
    """One load run; `max_requests` stops it early (the memory runs)."""
    body_file = workdir / "load-body.json"
    body_file.write_bytes(target.body)
    header_file = workdir / "load-headers.txt"
    header_file.write_text("".join(f"{name}: {value}\n" for name, value in target.headers))
    env = dict(os.environ, BENCH_BODY=str(body_file), BENCH_PATH=target.path, BENCH_HEADERS=str(header_file))
    if max_requests:
        env["BENCH_MAX_REQUESTS"] = str(max_requests)
    url = f"http://127.0.0.1:{target.port}"
    seconds = max(1, round(duration))
    if load_tool() == "wrk":
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
                "-s", str(WRK_SCRIPT), url]
    else:
        argv = [sys.executable, "-m", "benchmarks.load", "--url", url, "-c", str(connections),
                "-d", str(seconds)]
    with tempfile.TemporaryFile("w+", dir=workdir) as out:
        proc = sup.start(argv, cpu=cpu, env=env, cwd=HERE.parent, stdout=out, stderr=subprocess.STDOUT)
        try:
            proc.wait(seconds * 3 + 30)
        finally:
            sup.stop(proc)
        out.seek(0)
        text = out.read()
    for line in text.splitlines():
        if line.startswith("BENCH_JSON "):
            return LoadResult.from_json(json.loads(line[len("BENCH_JSON "):]))
    raise RuntimeError(f"{argv[0]} printed no result; its output:\n{text[-2000:]}")


# -- the Python fallback load generator --------------------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive connection sending the same request back to back."""

    def __init__(self, request: bytes, stats: dict[str, Any], stop_at: float) -> None:
        self.request, self.stats, self.stop_at = request, stats, stop_at
        self.buf = b""
        self.started = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        if time.monotonic() >= self.stop_at or self.stats["requests"] >= self.stats["limit"]:
            self.transport.close()
            return
        self.started = time.monotonic()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = _response_end(self.buf)
        if end is None:
            return
        status = int(self.buf.split(b" ", 2)[1])
        self.buf = self.buf[end:]
        self.stats["latencies"].append(time.monotonic() - self.started)
        self.stats["requests"] += 1
        self.stats["bytes"] += end
        if not 200 <= status < 400:
            self.stats["status_errors"] += 1
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if time.monotonic() < self.stop_at and self.stats["requests"] < self.stats["limit"]:
            self.stats["read_errors"] += 1
        if not self.closed.done():
            self.closed.set_result(None)


def _response_end(buf: bytes) -> int | None:
    """Where the first complete response in `buf` ends (content-length or chunked), else None."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = buf[:head_end].lower()
    body_start = head_end + 4
    marker = head.find(b"content-length:")
    if marker >= 0:
        length = int(head[marker + 15:].split(b"\r\n", 1)[0])
        return body_start + length if len(buf) >= body_start + length else None
    if b"transfer-encoding: chunked" in head:
        end = buf.find(b"\r\n0\r\n\r\n", body_start - 2)
        return end + 7 if end >= 0 else None
    return None


async def _fallback(url: str, connections: int, duration: float, body: bytes, path: str,
                    headers: Sequence[tuple[str, str]], limit: int) -> dict[str, Any]:
    port = int(url.rsplit(":", 1)[1])
    lines = [f"POST {path} HTTP/1.1", f"host: 127.0.0.1:{port}", "content-type: application/json",
             f"content-length: {len(body)}", *(f"{n}: {v}" for n, v in headers)]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    stats: dict[str, Any] = {"requests": 0, "bytes": 0, "status_errors": 0, "read_errors": 0,
                             "connect_errors": 0, "latencies": [], "limit": limit}
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    conns = []
    for _ in range(connections):
        try:
            _, proto = await loop.create_connection(lambda: _Conn(request, stats, start + duration),
                                                    "127.0.0.1", port)
            conns.append(proto)
        except OSError:
            stats["connect_errors"] += 1
    await asyncio.gather(*(c.closed for c in conns))
    elapsed = time.monotonic() - start
    lat = [x * 1e6 for x in stats["latencies"]]
    return {"requests": stats["requests"], "duration_us": int(elapsed * 1e6), "bytes": stats["bytes"],
            "connect_errors": stats["connect_errors"], "read_errors": stats["read_errors"], "write_errors": 0,
            "status_errors": stats["status_errors"], "timeouts": 0,
            "p50_us": int(percentile(lat, 50) or 0), "p90_us": int(percentile(lat, 90) or 0),
            "p99_us": int(percentile(lat, 99) or 0), "mean_us": sum(lat) / len(lat) if lat else 0.0,
            "max_us": int(max(lat, default=0))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load",
                                     description="keep-alive POST load (wrk's fallback); env as wrk_post.lua")
    parser.add_argument("--url", required=True)
    parser.add_argument("-c", type=int, default=32)
    parser.add_argument("-d", type=float, default=5.0)
    args = parser.parse_args(argv)
    body = Path(os.environ["BENCH_BODY"]).read_bytes()
    headers = []
    if os.environ.get("BENCH_HEADERS"):
        for line in Path(os.environ["BENCH_HEADERS"]).read_text().splitlines():
            name, sep, value = line.partition(":")
            if sep:
                headers.append((name.strip(), value.strip()))
    limit = int(os.environ.get("BENCH_MAX_REQUESTS") or 1 << 62)
    result = asyncio.run(_fallback(args.url, args.c, args.d, body, os.environ.get("BENCH_PATH", "/"),
                                   headers, limit))
    print("BENCH_JSON " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
