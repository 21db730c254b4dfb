"""Running one scenario: start the target, check it answers, then measure in alternating rounds.

Order of work for a scenario (each step's numbers land in the scenario's dict):

1. start the target (``hypercorn -k trio -w 1 io_trio.app:app`` pinned to the
   proxy CPU, or the nginx floor) and check one request of each kind through
   it: a benchmark of wrong answers is worthless, so failures become notes;
2. warm up (wrk, direct and through the target);
3. memory: the worker's RSS after warm-up, then after each step of N requests;
4. load: for each round, for each connection count, direct then target;
   proxy CPU per request from /proc (utime+stime of the process tree);
5. streams: for each round, for 1 and 100 streams, direct then target;
6. peak RSS (VmHWM) of the target's processes; scan its log for errors.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import attrs

from .fakes import Fakes, start_floor
from .load import LoadResult, LoadTarget, run_load
from .peers import portkey_argv
from .procs import Supervisor, cmdline, cpu_seconds, process_tree, status_kib, wait_for_port, free_port
from .report import median
from .scenarios import LoadSpec, Scenario, StreamSpec
from .stream_client import StreamRun, run_streams

__all__ = ["Bench", "Launch", "Settings", "Target", "direct_load", "proxied_load", "run_scenario", "start_proxy"]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Group|Exit|Interrupt|Cancelled)\b.*")
MIB = 1024.0


@attrs.frozen
class Settings:
    rounds: int = 3
    duration: float = 4.0
    warmup: float = 1.0
    connections: tuple[int, ...] = (1, 32, 128)
    stream_counts: tuple[int, ...] = (1, 100)
    chunks: int = 50
    delay_ms: float = 20.0
    memory_steps: tuple[int, ...] = (10_000, 10_000)
    memory_connections: int = 32
    proxy_cpu: int | None = 0
    load_cpu: int | None = 1
    quick: bool = False
    app: str = "io_trio.app:app"  # hypercorn's application spec
    launcher: str = "hypercorn"  # or "cli": `python -m io_trio.cli serve`, one process


@attrs.define
class Bench:
    """What every scenario shares: the supervisor, the fakes, the temp dir, the settings."""

    sup: Supervisor
    fakes: Fakes
    workdir: Path
    settings: Settings
    log: IO[Any]
    say: Callable[[str], None]


@attrs.define
class Target:
    """The thing measured against the direct call: our proxy, or the nginx floor."""

    proc: subprocess.Popen[Any]
    load_port: int
    stream_port: int
    log_path: Path | None = None

    def serving(self) -> list[int]:
        """The master and its workers (not multiprocessing's resource tracker)."""
        return [pid for pid in process_tree(self.proc.pid) if "resource_tracker" not in cmdline(pid)]

    def worker(self) -> int:
        pids = self.serving()
        return pids[-1] if pids else self.proc.pid


@attrs.frozen
class Launch:
    """How `start_proxy` starts the server; the defaults are what `benchmarks.run` measures."""

    wrapper: tuple[str, ...] = ()  # argv that runs the interpreter, e.g. valgrind and its options
    workers: int = 1  # hypercorn -w; 0 serves from hypercorn's own process (no master, no worker)
    source: Path = REPO  # the checkout whose code is served: the server's cwd and PYTHONPATH
    env: tuple[tuple[str, str], ...] = ()  # added to the clean environment
    timeout: float = 60.0  # seconds to listen, and again to answer GET /health


def start_proxy(bench: Bench, scenario: Scenario, launch: Launch = Launch()) -> Target:
    assert scenario.config is not None
    port = free_port()
    log_path = bench.workdir / f"proxy-{scenario.name}.log"
    env = {**_base_env(), "LLM_PROXY_CONFIG": str(scenario.config),
           "BENCH_FAKE_URL": f"http://127.0.0.1:{bench.fakes.json_port}",
           "BENCH_SSE_URL": f"http://127.0.0.1:{bench.fakes.sse_port}",
           "BENCH_AUDIT_DIR": str(bench.workdir / "audit"),
           # the asgi-ceiling app makes its streams itself, like the SSE fake
           "BENCH_CHUNKS": str(bench.settings.chunks), "BENCH_DELAY_MS": str(bench.settings.delay_ms),
           # Another checkout's packages must win over the editable install of this one.
           "PYTHONPATH": str(launch.source), **dict(launch.env)}
    argv = [sys.executable, "-m", "hypercorn", "-k", "trio", "-w", str(launch.workers),
            "--bind", f"127.0.0.1:{port}", scenario.app or bench.settings.app]
    if bench.settings.launcher == "cli" and scenario.app is None:
        argv = [sys.executable, "-m", "io_trio.cli", "serve", "--config", str(scenario.config),
                "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = bench.sup.start([*launch.wrapper, *argv], cpu=bench.settings.proxy_cpu, env=env,
                               cwd=launch.source, stdout=log, stderr=log)
    target = Target(proc, port, port, log_path)
    try:
        wait_for_port(port, proc=proc, timeout=launch.timeout)
        _wait_health(port, timeout=launch.timeout)
    except RuntimeError as err:
        bench.sup.stop(proc)
        raise RuntimeError(f"{err}\nproxy log:\n{log_path.read_text(errors='replace')[-3000:]}") from None
    return target


def _start_portkey(bench: Bench) -> Target:
    port = free_port()
    log_path = bench.workdir / "portkey.log"
    with open(log_path, "wb") as log:
        proc = bench.sup.start(portkey_argv(port), cpu=bench.settings.proxy_cpu, env=_base_env(),
                               cwd=bench.workdir, stdout=log, stderr=log)
    wait_for_port(port, proc=proc, timeout=60)
    return Target(proc, port, port)


def _base_env() -> dict[str, str]:
    """The proxy gets a clean environment: no stray API keys or LLM_PROXY_* overrides."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k in keep}


def _wait_health(port: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _ = _http(port, "GET", "/health", b"", ())
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"GET /health on 127.0.0.1:{port} never answered 200 in {timeout:g} s")


def _http(port: int, method: str, path: str, body: bytes,
          headers: Iterable[tuple[str, str]]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body or None,
                     headers={"content-type": "application/json", **dict(headers)})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- correctness checks before measuring -------------------------------------------------


def _check_load(port: int, spec: LoadSpec) -> str | None:
    status, body = _http(port, "POST", spec.path, spec.body, spec.headers)
    if status != 200:
        return f"{spec.label} {spec.path}: HTTP {status}: {body[:300]!r}"
    try:
        reply = json.loads(body)
        text = (reply["choices"][0]["message"]["content"] if spec.expect == "openai"
                else reply["content"][0]["text"])
    except (ValueError, KeyError, IndexError, TypeError):
        return f"{spec.label} {spec.path}: unexpected answer {body[:300]!r}"
    if not str(text).startswith("Hello! How can I assist you today?"):
        return f"{spec.label} {spec.path}: answer text changed: {str(text)[:100]!r}"
    return None


def _check_stream(bench: Bench, port: int, spec: StreamSpec) -> str | None:
    run = asyncio.run(run_streams(port=port, path=spec.path, body=spec.body, streams=1,
                                  expected_events=bench.settings.chunks, headers=spec.headers,
                                  timeout=_stream_timeout(bench)))
    return None if run.ok == 1 else f"{spec.label} {spec.path}: stream check failed: {run.errors}"


def _stream_timeout(bench: Bench) -> float:
    return bench.settings.chunks * bench.settings.delay_ms / 1000 * 4 + 30


# -- measuring --------------------------------------------------------------------------


def _load(bench: Bench, port: int, path: str, body: bytes, headers: tuple[tuple[str, str], ...],
          connections: int, duration: float, max_requests: int | None = None) -> LoadResult:
    return run_load(bench.sup, LoadTarget(port, path, body, headers), connections=connections,
                    duration=duration, cpu=bench.settings.load_cpu, max_requests=max_requests,
                    workdir=bench.workdir)


def direct_load(bench: Bench, spec: LoadSpec, connections: int, duration: float) -> LoadResult:
    return _load(bench, bench.fakes.json_port, spec.direct_path, spec.direct_body, spec.headers,
                 connections, duration)


def proxied_load(bench: Bench, target: Target, spec: LoadSpec, connections: int, duration: float,
             max_requests: int | None = None) -> LoadResult:
    pids = target.serving()
    before = cpu_seconds(pids)
    result = _load(bench, target.load_port, spec.path, spec.body, spec.headers, connections, duration,
                   max_requests)
    used = cpu_seconds(pids) - before
    per_request = used / result.requests * 1e6 if result.requests else None
    return attrs.evolve(result, cpu_us_per_request=per_request)


def _rss_mib(pid: int) -> float | None:
    kib = status_kib(pid, "VmRSS")
    return kib / MIB if kib is not None else None


def _memory(bench: Bench, target: Target, spec: LoadSpec, rps_hint: float) -> dict[str, Any]:
    worker = target.worker()
    out: dict[str, Any] = {"warm_rss_mib": _rss_mib(worker), "steps": []}
    done = 0
    for step in bench.settings.memory_steps:
        seconds = math.ceil(step / max(rps_hint, 20.0) * 1.2) + 1
        result = proxied_load(bench, target, spec, bench.settings.memory_connections, seconds, max_requests=step)
        done += result.requests
        out["steps"].append({"requests": done, "rss_mib": _rss_mib(worker),
                             "non_2xx": result.non_2xx, "errors": result.errors})
        bench.say(f"    memory: {done:,} requests, worker RSS {out['steps'][-1]['rss_mib']:.1f} MiB")
    steps = out["steps"]
    first, last = (steps[0], steps[-1]) if len(steps) > 1 else ({"requests": 0, "rss_mib": out["warm_rss_mib"]},
                                                                  steps[-1] if steps else None)
    if last and first["rss_mib"] is not None and last["rss_mib"] is not None and last["requests"] > first["requests"]:
        out["growth_kib_per_1k"] = (last["rss_mib"] - first["rss_mib"]) * MIB / (last["requests"] - first["requests"]) * 1000
    return out


def _median_load(results: list[LoadResult]) -> dict[str, Any]:
    fields = ("rps", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms", "cpu_us_per_request")
    out: dict[str, Any] = {f: median(getattr(r, f) for r in results) for f in fields}
    out["non_2xx"] = sum(r.non_2xx for r in results)
    out["errors"] = sum(r.errors for r in results)
    out["requests"] = sum(r.requests for r in results)
    out["rounds"] = [r.as_dict() for r in results]
    return out


def _median_streams(runs: list[StreamRun]) -> dict[str, Any]:
    fields = ("ttfb_ms", "first_lag_ms", "lag_p50_ms", "lag_p99_ms", "total_ms", "total_max_ms", "reads", "events",
              "cpu_us_per_event")
    out: dict[str, Any] = {f: median(getattr(r, f) for r in runs) for f in fields}
    out["streams"] = sum(r.streams for r in runs)
    out["ok"] = sum(r.ok for r in runs)
    out["errors"] = sorted({e for r in runs for e in r.errors})[:5]
    out["rounds"] = [r.as_dict() for r in runs]
    return out


def _load_rounds(bench: Bench, target: Target, scenario: Scenario) -> list[dict[str, Any]]:
    s = bench.settings
    keys = [(spec, c) for spec in scenario.loads for c in s.connections]
    direct: dict[int, list[LoadResult]] = {i: [] for i in range(len(keys))}
    proxy: dict[int, list[LoadResult]] = {i: [] for i in range(len(keys))}
    for round_no in range(s.rounds):
        for i, (spec, c) in enumerate(keys):
            direct[i].append(direct_load(bench, spec, c, s.duration))
            proxy[i].append(proxied_load(bench, target, spec, c, s.duration))
            d, p = direct[i][-1], proxy[i][-1]
            bench.say(f"    round {round_no + 1} {spec.label} c={c}: direct {d.rps:,.0f} rps p50 {d.p50_ms:.3f} ms"
                      f" | proxy {p.rps:,.0f} rps p50 {p.p50_ms:.3f} ms p99 {p.p99_ms:.1f} ms"
                      f" cpu {p.cpu_us_per_request or 0:,.0f} us/req non-2xx {p.non_2xx} err {p.errors}")
    return [{"label": spec.label, "connections": c, "direct": _median_load(direct[i]),
             "proxy": _median_load(proxy[i])} for i, (spec, c) in enumerate(keys)]


def _streams(bench: Bench, port: int, path: str, body: bytes, headers: tuple[tuple[str, str], ...],
             count: int) -> StreamRun:
    return asyncio.run(run_streams(port=port, path=path, body=body, streams=count,
                                   expected_events=bench.settings.chunks, headers=headers,
                                   timeout=_stream_timeout(bench)))


def _proxied_streams(bench: Bench, target: Target, spec: StreamSpec, count: int) -> StreamRun:
    pids = target.serving()
    before = cpu_seconds(pids)
    run = _streams(bench, target.stream_port, spec.path, spec.body, spec.headers, count)
    events = run.events * run.streams
    per_event = (cpu_seconds(pids) - before) / events * 1e6 if events else None
    return attrs.evolve(run, cpu_us_per_event=per_event)


def _stream_rounds(bench: Bench, target: Target, scenario: Scenario) -> list[dict[str, Any]]:
    s = bench.settings
    keys = [(spec, n) for spec in scenario.streams for n in s.stream_counts]
    direct: dict[int, list[StreamRun]] = {i: [] for i in range(len(keys))}
    proxy: dict[int, list[StreamRun]] = {i: [] for i in range(len(keys))}
    for round_no in range(s.rounds):
        for i, (spec, n) in enumerate(keys):
            direct[i].append(_streams(bench, bench.fakes.sse_port, spec.direct_path, spec.direct_body,
                                      spec.headers, n))
            proxy[i].append(_proxied_streams(bench, target, spec, n))
            d, p = direct[i][-1], proxy[i][-1]
            bench.say(f"    round {round_no + 1} {n} stream(s): direct lag {d.lag_p50_ms:.2f} ms first {d.ttfb_ms:.2f}"
                      f" ms | proxy lag {p.lag_p50_ms:.2f}/{p.lag_p99_ms:.2f} ms first {p.ttfb_ms:.2f} ms"
                      f" total {p.total_ms:,.0f} ms reads {p.reads:.0f} cpu {p.cpu_us_per_event or 0:,.0f} us/event"
                      f" ok {p.ok}/{p.streams}")
    return [{"label": spec.label, "streams": n, "expected_events": s.chunks, "direct": _median_streams(direct[i]),
             "proxy": _median_streams(proxy[i])} for i, (spec, n) in enumerate(keys)]


def _peak_rss(target: Target) -> dict[str, Any]:
    pids = target.serving()
    processes = [{"pid": pid, "cmd": cmdline(pid)[:120], "hwm_mib": (status_kib(pid, "VmHWM") or 0) / MIB}
                 for pid in pids]
    return {"tree_hwm_mib": sum(p["hwm_mib"] for p in processes),
            "worker_hwm_mib": (status_kib(target.worker(), "VmHWM") or 0) / MIB, "processes": processes}


def _log_problems(target: Target) -> list[str]:
    if target.log_path is None or not target.log_path.exists():
        return []
    lines = target.log_path.read_text(errors="replace").splitlines()
    bad = [line for line in lines if any(word in line for word in ('"level": "error"', "Traceback", "ERROR",
                                                                     '"level": "warning"', "Exception"))]
    if not bad:
        return []
    sample = "; ".join(sorted(set(line[:200] for line in bad))[:3])
    # A traceback's first line says nothing: name the exceptions, and keep the log for reading.
    raised = sorted({line.strip()[:200] for line in lines if _EXCEPTION_LINE.match(line)})
    kept = RESULTS / f"proxy-log-{time.strftime('%Y%m%d-%H%M%S')}-{target.log_path.name}"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(target.log_path.read_text(errors="replace"))
    return [f"the proxy log has {len(bad)} error/warning line(s), e.g.: {sample}"
            + (f"; exceptions: {'; '.join(raised[:3])}" if raised else "") + f" (log kept as {kept})"]


def run_scenario(bench: Bench, scenario: Scenario) -> dict[str, Any]:
    out: dict[str, Any] = {"name": scenario.name, "summary": scenario.summary, "notes": []}
    if scenario.peer == "portkey":
        scenario = scenario.upstream(f"http://127.0.0.1:{bench.fakes.json_port}")
        target = _start_portkey(bench)
    elif scenario.config is None:
        proc, load_port, stream_port = start_floor(bench.sup, bench.workdir, bench.fakes,
                                                   cpu=bench.settings.proxy_cpu, log=bench.log)
        target = Target(proc, load_port, stream_port)
    else:
        target = start_proxy(bench, scenario)
    try:
        _measure(bench, target, scenario, out)
    finally:
        bench.sup.stop(target.proc)
        out["notes"] += [f"{scenario.name}: {note}" for note in _log_problems(target)]
    return out


def _measure(bench: Bench, target: Target, scenario: Scenario, out: dict[str, Any]) -> None:
    s = bench.settings
    problems = [p for p in (_check_load(target.load_port, spec) for spec in scenario.loads) if p]
    problems += [p for p in (_check_stream(bench, target.stream_port, spec) for spec in scenario.streams) if p]
    out["notes"] += [f"{scenario.name}: check failed before measuring: {p}" for p in problems]
    for problem in problems:
        bench.say(f"    CHECK FAILED: {problem}")
    rps_hint = 100.0
    for spec in scenario.loads:
        direct_load(bench, spec, 32, s.warmup)
        rps_hint = proxied_load(bench, target, spec, 32, max(s.warmup, scenario.warmup)).rps
    if scenario.memory and scenario.loads:
        out["memory"] = _memory(bench, target, scenario.loads[0], rps_hint)
    if scenario.loads:
        out["load"] = _load_rounds(bench, target, scenario)
    if scenario.streams:
        out["streams"] = _stream_rounds(bench, target, scenario)
    out["rss"] = _peak_rss(target)
    bench.say(f"    peak RSS: tree {out['rss']['tree_hwm_mib']:.1f} MiB, worker {out['rss']['worker_hwm_mib']:.1f} MiB")
