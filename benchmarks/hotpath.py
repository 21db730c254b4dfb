"""``python -m benchmarks.hotpath``: profile the proxy worker under load with py-spy.

Starts the fakes and the proxy for one scenario (default ``openai-passthrough``)
exactly as ``benchmarks.run`` does, warms it up, then drives wrk at c=32 (or,
with ``--streams N``, back-to-back batches of N concurrent streams) while
``py-spy record`` samples the hypercorn worker.  py-spy pauses the worker for
each sample (exact stacks; ``--nonblocking`` avoids the pause but then about a
quarter of the stacks come out torn), and records no idle samples, so the
shares below are shares of busy CPU.  It prints:

* the top functions by *self* time (where the CPU actually goes),
* the top functions by *inclusive* time (which call trees are expensive),
* self time grouped by package (hypercorn, quart, h11, trio, our core/io_trio, stdlib ...).

py-spy must be installed in the virtualenv (``.venv/bin/pip install py-spy``);
the collapsed stacks are saved next to the report for flame graphs
(``flamegraph.pl`` or speedscope).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from .fakes import start_fakes
from .procs import Supervisor, install_signal_handlers
from .report import median
from .runner import Bench, Settings, Target, direct_load, proxied_load, start_proxy
from .scenarios import SCENARIOS, Scenario
from .stream_client import StreamRun, run_streams

__all__ = ["main", "summarise_folded"]

HERE = Path(__file__).resolve().parent
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def _py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


_STDLIB = re.compile(r"/lib/python3\.\d+/(?!site-packages/)")


def _short(path: str) -> str:
    """The path below site-packages, the stdlib or the repository."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    stdlib = _STDLIB.search(path)
    if stdlib:
        return path[stdlib.end():]
    for ours in ("/core/", "/io_trio/"):
        if ours in path:
            return ours.strip("/") + "/" + path.rsplit(ours, 1)[1]
    return path


def _package(path: str) -> str:
    """Who owns a source file: a distribution, the stdlib (per module), or our file."""
    short = _short(path)
    if short.startswith(("core/", "io_trio/")):
        return short
    top = short.split("/", 1)[0].removesuffix(".py")
    return f"stdlib {top}" if _STDLIB.search(path) and "site-packages/" not in path else top


def _frame_name(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), "?"
    return f"{match['func']} ({_short(match['file'])})", _package(match["file"])


_OWNERS = (
    ("core/", "core/ (parse, route, exchange, headers, relay)"),
    ("io_trio/upstream/", "io_trio/upstream (the upstream client, with the h11/trio work it causes)"),
    ("io_trio/", "io_trio adapter (app, forwarding, gates, with the work it causes)"),
    ("hypercorn", "hypercorn (server side HTTP, with its h11/trio work)"),
    ("quart", "Quart / quart-trio / werkzeug (request and response objects, contexts)"),
    ("werkzeug", "Quart / quart-trio / werkzeug (request and response objects, contexts)"),
    ("flask", "Quart / quart-trio / werkzeug (request and response objects, contexts)"),
    ("blinker", "Quart / quart-trio / werkzeug (request and response objects, contexts)"),
)
_SCHEDULER = "trio scheduler (no application frame on the stack)"


def _owner(frames: list[tuple[str, str]]) -> str:
    """Who caused a sample: the deepest frame that belongs to an application layer.

    Generic machinery (trio, h11, outcome, the stdlib) is charged to whoever called it,
    so h11 work inside the upstream pool counts for the pool, not for hypercorn.  Only
    the running task's frames count (those below trio's ``unrolled_run``): above it sit
    hypercorn's worker start-up frames, on every stack.
    """
    runs = [i for i, (name, _) in enumerate(frames) if name.startswith("unrolled_run ")]
    task = frames[runs[-1] + 1:] if runs else frames
    for _, package in reversed(task):
        for prefix, owner in _OWNERS:
            if package.startswith(prefix):
                return owner
    return _SCHEDULER


def summarise_folded(text: str, *, top: int = 25) -> str:
    """Markdown tables of self, inclusive and per-package shares from py-spy's raw (folded) output."""
    self_counts: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    owners: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(frame) for frame in stack.split(";") if frame.strip()]
        frames = [f for f in frames if not f[0].startswith("process ") and not f[0].startswith("thread ")]
        if not frames:
            continue
        leaf_name, leaf_package = frames[-1]
        self_counts[leaf_name] += count
        packages[leaf_package] += count
        owners[_owner(frames)] += count
        for name in {name for name, _ in frames}:
            inclusive[name] += count
    if not total:
        return "no samples (was the worker busy?)\n"

    def table(title: str, counter: collections.Counter[str]) -> list[str]:
        rows = [f"### {title}", "", "| share | samples | name |", "|---|---|---|"]
        rows += [f"| {n / total:6.1%} | {n} | `{name}` |" for name, n in counter.most_common(top)]
        return rows + [""]

    out = [f"{total} busy samples", ""]
    out += table("Who caused the CPU time (deepest application frame of each sample)", owners)
    out += table("Self time by function", self_counts)
    out += table("Inclusive time by function", inclusive)
    out += table("Self time by package", packages)
    return "\n".join(out)


def _drive_streams(bench: Bench, target: Target, scenario: Scenario, streams: int, seconds: float) -> str:
    """Back-to-back batches of `streams` concurrent streams for `seconds`; a one-line summary."""
    spec = scenario.streams[0]
    runs: list[StreamRun] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        runs.append(asyncio.run(run_streams(port=target.stream_port, path=spec.path, body=spec.body,
                                            streams=streams, expected_events=bench.settings.chunks,
                                            headers=spec.headers)))
    return (f"{len(runs)} batches of {streams} streams: median chunk lag "
            f"{median(r.lag_p50_ms for r in runs):.1f} ms, reads/stream {median(r.reads for r in runs):.0f}, "
            f"ok {sum(r.ok for r in runs)}/{sum(r.streams for r in runs)}")


def _drive_load(bench: Bench, target: Target, scenario: Scenario, connections: int, seconds: float) -> str:
    spec = scenario.loads[0]
    result = proxied_load(bench, target, spec, connections, seconds)
    direct = direct_load(bench, spec, connections, 2)
    return (f"c={connections}: {result.rps:,.0f} RPS, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
            f"CPU {result.cpu_us_per_request or 0:,.0f} µs/request, non-2xx {result.non_2xx}; "
            f"direct: {direct.rps:,.0f} RPS")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hotpath", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="openai-passthrough", choices=list(SCENARIOS))
    parser.add_argument("--seconds", type=int, default=20, help="profiled run length (default 20)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--streams", type=int, default=0,
                        help="profile N concurrent streams (back to back) instead of wrk load")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--nonblocking", action="store_true", help="do not pause the worker to sample it")
    parser.add_argument("--app", default="io_trio.app:app")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    return parser


def _record(sup: Supervisor, spy: str, pid: int, args: argparse.Namespace, folded: Path) -> Any:
    argv = [spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--duration", str(args.seconds + 1),
            "--format", "raw", "--full-filenames", "--output", str(folded)]
    return sup.start(argv + (["--nonblocking"] if args.nonblocking else []), cpu=1,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    spy = _py_spy()
    if spy is None:
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    scenario = SCENARIOS[args.scenario]
    if scenario.config is None or not (scenario.streams if args.streams else scenario.loads):
        print(f"{args.scenario} has nothing to profile that way", file=sys.stderr)
        return 2
    install_signal_handlers()
    settings = Settings(app=args.app)
    with tempfile.TemporaryDirectory(prefix="llm-proxy-prof-") as tmp, Supervisor(pin=True) as sup:
        workdir = Path(tmp)
        with open(workdir / "fakes.log", "wb") as log:
            fakes = start_fakes(sup, workdir, cpu=settings.load_cpu, chunks=settings.chunks,
                                delay_ms=settings.delay_ms, log=log)
            bench = Bench(sup, fakes, workdir, settings, log, lambda text: print(text, file=sys.stderr))
            target = start_proxy(bench, scenario)
            drive = (partial(_drive_streams, streams=args.streams) if args.streams
                     else partial(_drive_load, connections=args.connections))
            drive(bench, target, scenario, seconds=2)  # warm-up
            folded = workdir / "profile.folded"
            spy_proc = _record(sup, spy, target.worker(), args, folded)
            time.sleep(0.5)
            summary = drive(bench, target, scenario, seconds=args.seconds)
            spy_proc.wait(args.seconds + 30)
            text = folded.read_text() if folded.exists() else ""
    args.out.mkdir(parents=True, exist_ok=True)
    load = f"{args.streams} streams" if args.streams else f"c={args.connections}"
    stem = args.out / time.strftime(f"profile-{args.scenario}-{load.replace(' ', '')}-%Y%m%d-%H%M%S")
    stem.with_suffix(".folded").write_text(text)
    report = (f"# Profile of {args.scenario} at {load} ({args.seconds} s, py-spy {args.rate} Hz)\n\n"
              f"Under profiling: {summary}.\n\n" + summarise_folded(text, top=args.top))
    stem.with_suffix(".md").write_text(report)
    print(report)
    print(f"saved {stem.with_suffix('.md')} and {stem.with_suffix('.folded')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
