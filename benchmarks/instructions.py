"""``python -m benchmarks.instructions``: instructions per proxied request and per relayed stream event.

    .venv/bin/python -m benchmarks.instructions                  # the proxy's main routes and quart-ceiling
    .venv/bin/python -m benchmarks.instructions --scenario openai-passthrough --requests 50
    .venv/bin/python -m benchmarks.instructions --compare old=/tmp/proxy-old   # another checkout, same run

Theory of operation: this VM's speed drifts by up to 2x within minutes, so
times cannot tell a 10% change from noise.  The number of instructions the
server executes can: ``valgrind --tool=callgrind`` counts them, and the count
for the same work is the same whatever the machine is doing.

The fakes start as in `benchmarks.run` (CPU 1).  For each scenario the server
is one process under callgrind with instrumentation off, pinned to CPU 0,
started by `runner.start_proxy`: with ``-w 0`` hypercorn (0.18) runs its trio
worker in its own process instead of spawning one, so there is one PID to
control and to count.  After a warm-up (pools, caches and Python's specialised
bytecode filled), each measurement is bracketed by ``callgrind_control``:
zero the counters, instrumentation on, the workload, instrumentation off, dump;
the dump's ``totals:`` line is the workload's instruction count.

* requests: N requests one after another, 50 ms apart, on the keep-alive
  connection the warm-up requests used; instructions / N;
* streams: S concurrent streams of the scenario's stream request, events far
  enough apart (``--delay-ms``) that the proxy, ~50x slower under callgrind,
  still reads each upstream event on its own, as it does at full speed;
  instructions / (S x events), connection set-up and teardown included.

Every measurement is repeated in the same server process, so the spread shows
how deterministic the figure is.  Only the server is counted: the client's speed
does not matter, and neither does the kernel's work (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs

from .fakes import start_fakes
from .procs import Supervisor, install_signal_handlers
from .report import fmt, machine, median, run_and_save, say
from .runner import REPO, Bench, Launch, Settings, start_proxy
from .scenarios import SCENARIOS, LoadSpec, Scenario, StreamSpec
from .stream_client import StreamRun, run_streams

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
INSTALL_HINT = "apt-get install valgrind"
DEFAULT_SCENARIOS = ("openai-passthrough", "openai-to-anthropic", "anthropic-stream-to-openai", "quart-ceiling")
CEILING = "quart-ceiling"
# What runs under callgrind: our proxy and the Python calibration apps (nginx-floor is nginx).
MEASURABLE = tuple(name for name, scenario in SCENARIOS.items() if scenario.config is not None)
THIS = "this"  # the name of the checkout this module belongs to
SPREAD_WARNING = 0.02  # repeats further apart than this are not deterministic enough to A/B 10% changes
_TOTALS = re.compile(r"^totals:\s*(\d+)", re.MULTILINE)
T = TypeVar("T")


@attrs.frozen
class Checkout:
    """A version of the proxy's code to serve: this one, or a `git worktree` given with --compare."""

    name: str
    path: Path


class Callgrind:
    """`callgrind_control` for one server process running under callgrind, and its dump files.

    With `keep`, each measurement's dump is also copied to ``<keep>-<label>.callgrind``
    (for ``callgrind_annotate``: where did the instructions go).
    """

    def __init__(self, control: str, pid: int, out_dir: Path, *, keep: Path | None) -> None:
        self.control = control
        self.pid = pid
        self.out_dir = out_dir
        self.keep = keep

    def count(self, label: str, workload: Callable[[], T]) -> tuple[int, T]:
        """The server's instructions while `workload` runs, and what it returned."""
        self._send("-z")  # nothing before this point counts (instrumentation was off anyway)
        self._send("-i", "on")
        try:
            result = workload()
        finally:
            self._send("-i", "off")
        return self._dump_totals(label), result

    def _send(self, *args: str) -> None:
        # callgrind_control exits 0 even when it reaches no process: its output says how it went.
        out = subprocess.run([self.control, *args, str(self.pid)], capture_output=True, text=True, timeout=120)
        said = out.stdout + out.stderr
        if out.returncode != 0 or "OK." not in said:
            raise RuntimeError(f"callgrind_control {' '.join(args)} {self.pid} failed: {said.strip()}")

    def _dump_totals(self, label: str) -> int:
        """Dump the counters (callgrind zeroes them after a dump) and read the new file's totals."""
        before = set(self.out_dir.glob(f"cg.{self.pid}.*"))
        self._send("-d")
        new = sorted(set(self.out_dir.glob(f"cg.{self.pid}.*")) - before)
        if len(new) != 1:
            raise RuntimeError(f"expected one new callgrind dump in {self.out_dir}, found {new}")
        if self.keep is not None:
            shutil.copyfile(new[0], f"{self.keep}-{label}.callgrind")
        match = _TOTALS.search(new[0].read_text(errors="replace"))
        if match is None:
            raise RuntimeError(f"no totals line in {new[0]}")
        return int(match[1])


class KeepAliveClient:
    """Sequential requests on one HTTP/1.1 connection, `pause` seconds apart; every answer must be a 200.

    The pause lets the server finish what it does after an answer and go idle before the
    next request arrives, so every request takes the same path through trio's event loop.
    Without it, how far the server got when the request came in varies from run to run, and
    so does the count: 200 requests to quart-ceiling, 5 repeats, spread 1.1% without a
    pause, 0.5% with 50 ms.
    """

    def __init__(self, port: int, spec: LoadSpec, *, pause: float) -> None:
        self.spec = spec
        self.pause = pause
        self.headers = {"content-type": "application/json", **dict(spec.headers)}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def send(self, count: int) -> None:
        for _ in range(count):
            self.conn.request("POST", self.spec.path, body=self.spec.body, headers=self.headers)
            response = self.conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"{self.spec.path}: HTTP {response.status}: {body[:300]!r}")
            time.sleep(self.pause)

    def close(self) -> None:
        self.conn.close()


def _streams(port: int, spec: StreamSpec, streams: int, settings: Settings) -> StreamRun:
    """`streams` concurrent streams; every one must relay every event in order."""
    timeout = settings.chunks * settings.delay_ms / 1000 + 300  # callgrind makes the proxy ~50x slower
    run = asyncio.run(run_streams(port=port, path=spec.path, body=spec.body, streams=streams,
                                  expected_events=settings.chunks, headers=spec.headers, timeout=timeout))
    if run.ok != streams:
        raise RuntimeError(f"{spec.path}: {run.ok}/{streams} streams correct: {run.errors}")
    return run


def _valgrind_wrapper(valgrind: str, out_dir: Path) -> tuple[str, ...]:
    # %p: the file names carry the PID, which callgrind_control addresses the process by.
    return (valgrind, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_dir}/cg.%p")


def _measure(bench: Bench, scenario: Scenario, checkout: Checkout, args: argparse.Namespace,
             tools: dict[str, str]) -> dict[str, Any]:
    """One server under callgrind: warm up, then count each workload `args.repeat` times."""
    out_dir = bench.workdir / f"callgrind-{scenario.name}-{checkout.name}"
    out_dir.mkdir()
    # One hash seed for every server, so that two processes (two versions) lay out their dicts alike.
    launch = Launch(wrapper=_valgrind_wrapper(tools["valgrind"], out_dir), workers=0, source=checkout.path,
                    env=(("PYTHONHASHSEED", "0"),), timeout=args.start_timeout)
    started = time.monotonic()
    target = start_proxy(bench, scenario, launch)
    bench.say(f"    {checkout.name}: up under callgrind in {time.monotonic() - started:.0f} s")
    keep = args.dumps / f"{scenario.name}-{checkout.name}" if args.dumps else None
    callgrind = Callgrind(tools["callgrind_control"], target.proc.pid, out_dir, keep=keep)
    row: dict[str, Any] = {"scenario": scenario.name, "code": checkout.name}
    try:
        if scenario.loads:  # every scenario has at most one request kind and one stream kind
            row["request_totals"] = _count_requests(bench, callgrind, target.load_port, scenario.loads[0], args)
            row["requests"] = args.requests
        if scenario.streams:
            row.update(_count_streams(bench, callgrind, target.stream_port, scenario.streams[0], args))
    finally:
        bench.sup.stop(target.proc)
    return row


def _count_requests(bench: Bench, callgrind: Callgrind, port: int, spec: LoadSpec,
                    args: argparse.Namespace) -> list[int]:
    totals = []
    client = KeepAliveClient(port, spec, pause=args.pause_ms / 1000)
    try:
        client.send(args.warmup)
        for repeat in range(1, args.repeat + 1):
            total, _ = callgrind.count(f"requests-{repeat}", lambda: client.send(args.requests))
            totals.append(total)
            bench.say(f"      {args.requests} requests: {total / args.requests / 1000:,.0f} k instructions each")
    finally:
        client.close()
    return totals


def _count_streams(bench: Bench, callgrind: Callgrind, port: int, spec: StreamSpec,
                   args: argparse.Namespace) -> dict[str, Any]:
    events = args.streams * bench.settings.chunks
    _streams(port, spec, args.streams, bench.settings)  # warm-up
    totals, reads = [], []
    for repeat in range(1, args.repeat + 1):
        total, run = callgrind.count(f"streams-{repeat}", lambda: _streams(port, spec, args.streams, bench.settings))
        totals.append(total)
        reads.append(run.reads)
        bench.say(f"      {args.streams} streams x {bench.settings.chunks} events: "
                  f"{total / events / 1000:,.1f} k instructions per event, {run.reads:.0f} client reads per stream")
    return {"stream_totals": totals, "stream_events": events, "events_per_stream": bench.settings.chunks,
            "reads_per_stream": reads}


# -- the report -----------------------------------------------------------------------------


def _spread(values: list[float]) -> float:
    """(max - min) / median: how far apart the repeats of one measurement are."""
    return (max(values) - min(values)) / median(values) if values else 0.0


def _per_request(row: dict[str, Any]) -> list[float]:
    return [total / row["requests"] for total in row.get("request_totals", [])]


def _per_event(row: dict[str, Any]) -> list[float]:
    return [total / row["stream_events"] for total in row.get("stream_totals", [])]


def _cell(values: list[float]) -> str:
    """Median in thousands, then every repeat and their spread."""
    if not values:
        return "—"
    each = " / ".join(f"{v / 1000:,.1f}" for v in values)
    return f"**{median(values) / 1000:,.1f}** ({each}; {_spread(values):.2%})"


def _ratio(value: list[float], base: list[float]) -> str:
    return f"{median(value) / median(base):.2f}x" if value and base else "—"


def render(report: dict[str, Any]) -> str:
    rows = report["rows"]
    ceiling = next((_per_request(r) for r in rows if r["scenario"] == CEILING), [])
    lines = [f"# Instructions per request and per stream event (callgrind), {report['started']}", ""]
    lines += [f"* code: {c['name']} = {c['path']} at {c['commit']}" for c in report["checkouts"]]
    lines += [f"* {report['python']}, {report['valgrind']}; {report['machine']['cpu']}",
              f"* {report['method']}", "",
              "Each cell: the median in thousands of instructions, then each repeat and their spread "
              "((max - min) / median).", "",
              "| scenario | code | k instr / request | vs " + CEILING + " | k instr / stream event "
              "| client reads / stream |", "|---|---|---|---|---|---|"]
    for row in rows:
        reads = row.get("reads_per_stream")
        lines.append(f"| {row['scenario']} | {row['code']} | {_cell(_per_request(row))} "
                     f"| {_ratio(_per_request(row), ceiling)} | {_cell(_per_event(row))} "
                     f"| {fmt(median(reads), 0) if reads else '—'} |")
    lines += ["", *_compare_lines(rows), *_spread_lines(rows), *_behind_lines(rows)]
    lines += [f"* note: {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def _compare_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Each other checkout against this one, scenario by scenario."""
    ours = {row["scenario"]: row for row in rows if row["code"] == THIS}
    others = [row for row in rows if row["code"] != THIS and row["scenario"] in ours]
    if not others:
        return []
    lines = ["| scenario | code | instr / request vs " + THIS + " | instr / event vs " + THIS + " |",
             "|---|---|---|---|"]
    for row in others:
        base = ours[row["scenario"]]
        lines.append(f"| {row['scenario']} | {row['code']} | {_ratio(_per_request(row), _per_request(base))} "
                     f"| {_ratio(_per_event(row), _per_event(base))} |")
    return lines + [""]


def _spread_lines(rows: list[dict[str, Any]]) -> list[str]:
    spreads = [_spread(values) for row in rows for values in (_per_request(row), _per_event(row)) if values]
    if not spreads:
        return []
    worst = max(spreads)
    verdict = ("deterministic enough" if worst <= SPREAD_WARNING
               else f"MORE than {SPREAD_WARNING:.0%}: do not trust differences of that size")
    return [f"* largest spread between repeats: {worst:.2%} ({verdict})"]


def _behind_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Rows whose streams reached the client in fewer reads than events: the proxy fell behind."""
    lines = []
    for row in rows:
        reads = row.get("reads_per_stream", [])
        if reads and min(reads) < row["events_per_stream"]:
            lines.append(f"* {row['scenario']} ({row['code']}): {min(reads):.0f} client reads for "
                         f"{row['events_per_stream']} events per stream: the proxy fell behind and relayed "
                         "several events at once, so its per-event figure is too low (raise --delay-ms)")
    return lines


# -- the run --------------------------------------------------------------------------------


def _git(path: Path) -> str:
    """The commit checked out at `path`, and whether the tree differs from it (read-only git calls)."""
    def git(*args: str) -> str | None:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(path), *args], capture_output=True,
                             text=True, timeout=30)
        return out.stdout.strip() if out.returncode == 0 else None

    head = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no")
    if head is None or changed is None:
        return "no git commit (not a git checkout?)"
    return f"{head} ({'clean' if not changed else f'dirty: {len(changed.splitlines())} changed files'})"


def _checkouts(specs: list[str]) -> list[Checkout]:
    checkouts = [Checkout(THIS, REPO)]
    for spec in specs:
        name, _, path = spec.partition("=")
        if not name or not path or name == THIS or not (Path(path) / "io_trio").is_dir():
            raise ValueError(f"--compare {spec}: want NAME=PATH, PATH a checkout of this repository, "
                             f"NAME not {THIS!r}")
        checkouts.append(Checkout(name, Path(path).resolve()))
    return checkouts


def _chosen(names: list[str] | None) -> list[str]:
    if names and "all" in names:
        return list(MEASURABLE)
    return list(dict.fromkeys(names or DEFAULT_SCENARIOS))


def _run(args: argparse.Namespace, checkouts: list[Checkout], report: dict[str, Any],
         tools: dict[str, str]) -> None:
    settings = Settings(chunks=args.chunks, delay_ms=args.delay_ms)
    if args.dumps:
        args.dumps.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llm-proxy-instr-") as tmp, Supervisor(pin=True) as sup:
        if sup.pin and settings.load_cpu is not None:
            os.sched_setaffinity(0, {settings.load_cpu})  # the clients run next to the fakes
        workdir = Path(tmp)
        with open(workdir / "fakes.log", "wb") as log:
            fakes = start_fakes(sup, workdir, cpu=settings.load_cpu, chunks=settings.chunks,
                                delay_ms=settings.delay_ms, log=log)
            bench = Bench(sup, fakes, workdir, settings, log, say)
            for name in _chosen(args.scenario):
                scenario = SCENARIOS[name]
                # A calibration app lives in benchmarks/ and is the same whatever the proxy's version.
                for checkout in checkouts if scenario.app is None else checkouts[:1]:
                    _one(bench, scenario, checkout, args, tools, report)


def _one(bench: Bench, scenario: Scenario, checkout: Checkout, args: argparse.Namespace,
         tools: dict[str, str], report: dict[str, Any]) -> None:
    say(f"== {scenario.name} ({checkout.name}): {scenario.summary}")
    started = time.monotonic()
    try:
        report["rows"].append(_measure(bench, scenario, checkout, args, tools))
    except Exception as err:  # noqa: BLE001 - one broken scenario must not lose the others
        say(traceback.format_exc())
        report["notes"].append(f"{scenario.name} ({checkout.name}) failed: {type(err).__name__}: {str(err)[:500]}")
    say(f"   ({time.monotonic() - started:.0f} s)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", action="append", choices=[*MEASURABLE, "all"],
                        help=f"scenario to count (repeat for several; default: {', '.join(DEFAULT_SCENARIOS)})")
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement (default 200)")
    parser.add_argument("--pause-ms", type=float, default=50.0,
                        help="ms between one answer and the next request, so the server is idle (default 50)")
    parser.add_argument("--streams", type=int, default=4, help="concurrent streams per measurement (default 4)")
    parser.add_argument("--chunks", type=int, default=50, help="events per stream (default 50)")
    parser.add_argument("--delay-ms", type=float, default=250.0,
                        help="ms between upstream events (default 250: one upstream read per event under callgrind, "
                             "with room for a VM at half speed)")
    parser.add_argument("--repeat", type=int, default=2, help="measurements of each kind per server (default 2)")
    parser.add_argument("--warmup", type=int, default=50, help="requests before counting (default 50; "
                        "one batch of streams too)")
    parser.add_argument("--start-timeout", type=float, default=600.0,
                        help="seconds for a server under valgrind to answer GET /health (default 600)")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=PATH",
                        help="also count the proxy scenarios served from another checkout (a git worktree)")
    parser.add_argument("--dumps", type=Path, metavar="DIR",
                        help="keep every measurement's callgrind dump in DIR, for callgrind_annotate")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where to save the report")
    return parser


def _tools() -> dict[str, str] | None:
    """Where valgrind and callgrind_control are, or None if either is missing."""
    tools = {}
    for name in ("valgrind", "callgrind_control"):
        path = shutil.which(name)
        if path is None:
            return None
        tools[name] = path
    return tools


def _new_report(args: argparse.Namespace, checkouts: list[Checkout], tools: dict[str, str]) -> dict[str, Any]:
    """What was measured and how, before any row is in."""
    valgrind = subprocess.run([tools["valgrind"], "--version"], capture_output=True, text=True, timeout=30)
    method = (f"{args.requests} sequential requests {args.pause_ms:g} ms apart on one keep-alive connection; "
              f"{args.streams} concurrent streams of {args.chunks} events {args.delay_ms:g} ms apart; "
              f"{args.repeat} repeats per server (one process, hypercorn -w 0, under callgrind) after "
              f"{args.warmup} requests and one batch of streams of warm-up")
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(),
        "python": f"Python {platform.python_version()}", "valgrind": valgrind.stdout.strip(),
        "checkouts": [{"name": c.name, "path": str(c.path), "commit": _git(c.path)} for c in checkouts],
        "method": method, "settings": {k: v for k, v in vars(args).items() if k != "out"}, "rows": [], "notes": [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        checkouts = _checkouts(args.compare)
    except ValueError as err:
        parser.error(str(err))
    tools = _tools()
    if tools is None:
        print(f"valgrind and callgrind_control are needed: {INSTALL_HINT}", file=sys.stderr)
        return 2
    install_signal_handlers()
    report = _new_report(args, checkouts, tools)
    started = time.monotonic()

    def finish() -> None:
        report["seconds"] = round(time.monotonic() - started)

    return run_and_save(lambda: _run(args, checkouts, report, tools), report, render=render, out_dir=args.out,
                        results="rows", prefix="instructions-", finish=finish)

if __name__ == "__main__":
    sys.exit(main())
