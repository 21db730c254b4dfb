"""``python -m benchmarks.run``: the whole benchmark, one command (see benchmarks/README.md).

Starts the fakes on the load CPU, then for each scenario the proxy on the proxy
CPU, measures it against the direct call in alternating rounds, and writes a
Markdown report (printed, and saved with the raw numbers as JSON under
``benchmarks/results/``).  Every child process is killed when the run ends,
also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from .fakes import INSTALL_HINT, nginx_binary, start_fakes
from .load import load_tool
from .peers import install_portkey, portkey_entry
from .procs import Supervisor, cmdline, install_signal_handlers
from .report import machine, render, run_and_save, say
from .runner import Bench, Settings, run_scenario
from .scenarios import SCENARIOS

__all__ = ["main"]

HERE = Path(__file__).resolve().parent


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", action="append", choices=[*SCENARIOS, "all"],
                        help="scenario to run (repeat for several; default: all)")
    parser.add_argument("--quick", action="store_true", help="short runs, one round: a smoke test")
    parser.add_argument("--rounds", type=int, help="alternating rounds per point (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 4, quick 1)")
    parser.add_argument("--connections", type=_ints, default=(1, 32, 128), help="wrk connection counts")
    parser.add_argument("--streams", type=_ints, default=(1, 100), help="concurrent stream counts")
    parser.add_argument("--chunks", type=int, default=50, help="events per stream (default 50)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="ms between events (default 20)")
    parser.add_argument("--memory-requests", type=int, help="requests per memory step, two steps "
                        "(default 10000, quick 1000; 0 skips)")
    parser.add_argument("--app", default="io_trio.app:app", help="hypercorn application spec to serve")
    parser.add_argument("--launcher", choices=("hypercorn", "cli"), default="hypercorn",
                        help="start the proxy with `hypercorn -k trio -w 1` (master + worker; default) or "
                             "with `python -m io_trio.cli serve` (one process)")
    parser.add_argument("--interleave", type=int, default=0, metavar="N",
                        help="N rounds, each measuring every scenario once in turn (one round per point, no "
                             "memory steps): ratios to the calibration rows of the same round, which hold "
                             "while the machine's speed drifts")
    parser.add_argument("--install-peers", action="store_true",
                        help="install the Portkey gateway (npm) for the portkey scenario if it is not there")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="MINUTES",
                        help="first wait up to MINUTES for load average < 0.5 and no pytest running")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where to save the report")
    return parser


def _settings(args: argparse.Namespace, pin: bool) -> Settings:
    quick = args.quick
    steps = args.memory_requests if args.memory_requests is not None else (1000 if quick else 10_000)
    if args.interleave:  # the rounds are the interleaved ones: one measurement per point in each
        steps = 0
    return Settings(
        rounds=1 if args.interleave else args.rounds or (1 if quick else 3),
        duration=args.duration or (1.0 if quick else 4.0),
        warmup=1.0,
        connections=args.connections,
        stream_counts=args.streams,
        chunks=args.chunks,
        delay_ms=args.delay_ms,
        memory_steps=(steps, steps) if steps and not quick else ((steps,) if steps else ()),
        proxy_cpu=0 if pin else None,
        load_cpu=1 if pin else None,
        quick=quick,
        app=args.app,
        launcher=args.launcher,
    )


def _loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def _pytest_running() -> bool:
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and "pytest" in cmdline(int(entry)):
            return True
    return False


def wait_quiet(minutes: float) -> str:
    """Poll every 60 s until the machine is quiet; say how it went."""
    deadline = time.monotonic() + minutes * 60
    while True:
        load, busy = _loadavg(), _pytest_running()
        if load < 0.5 and not busy:
            return f"machine quiet at start (load average {load:.2f}, no pytest running)"
        if time.monotonic() >= deadline:
            return (f"machine NOT quiet after waiting {minutes:g} min (load average {load:.2f}, "
                    f"pytest running: {busy}): ran anyway")
        say(f"waiting for a quiet machine: load average {load:.2f}, pytest running: {busy}")
        time.sleep(60)


def _tools(pin: bool) -> tuple[list[str], bool]:
    """Notes about missing tools, and whether pinning is possible."""
    notes = []
    if not shutil.which("wrk"):
        notes.append(f"wrk is not installed ({INSTALL_HINT}): using the much slower Python load generator, "
                     "so direct numbers are the generator's ceiling, not nginx's")
    if nginx_binary() is None:
        notes.append(f"nginx is not installed ({INSTALL_HINT}): the fixed answers come from the Python fake, "
                     "and the nginx-floor scenario is skipped")
    cores = os.cpu_count() or 1
    if pin and cores < 2:
        notes.append("only one CPU: nothing is pinned, the proxy shares its core with the load generator")
        pin = False
    if pin and not shutil.which("taskset"):
        notes.append("taskset is not installed (util-linux): pinning with os.sched_setaffinity instead")
    return notes, pin


def _chosen(args: argparse.Namespace) -> list[str]:
    names = args.scenario or ["all"]
    default = [name for name, scenario in SCENARIOS.items() if scenario.in_all]
    chosen = [name for name in names if name != "all"]
    return list(dict.fromkeys((default if "all" in names else []) + chosen))


def _run(args: argparse.Namespace, report: dict[str, Any], settings: Settings, pin: bool) -> None:
    if pin:
        os.sched_setaffinity(0, {settings.load_cpu})  # the stream client runs here, next to the fakes
    with tempfile.TemporaryDirectory(prefix="llm-proxy-bench-") as tmp, Supervisor(pin=pin) as sup:
        workdir = Path(tmp)
        with open(workdir / "fakes.log", "wb") as log:
            fakes = start_fakes(sup, workdir, cpu=settings.load_cpu, chunks=settings.chunks,
                                delay_ms=settings.delay_ms, log=log)
            report["fake_tool"] = fakes.json_tool
            bench = Bench(sup, fakes, workdir, settings, log, say)
            for round_no in range(1, max(args.interleave, 1) + 1):
                for name in _chosen(args):
                    _one(bench, name, report, round_no if args.interleave else None)


def _one(bench: Bench, name: str, report: dict[str, Any], round_no: int | None) -> None:
    if name == "nginx-floor" and nginx_binary() is None or name == "portkey" and portkey_entry() is None:
        return
    say(f"== {name}: {SCENARIOS[name].summary}" + (f" (interleaved round {round_no})" if round_no else ""))
    started = time.monotonic()
    try:
        result = run_scenario(bench, SCENARIOS[name])
        if round_no is not None:
            result["round"] = round_no
        report["scenarios"].append(result)
    except Exception as err:  # noqa: BLE001 - one broken scenario must not lose the others
        say(traceback.format_exc())
        report["notes"].append(f"{name} failed: {type(err).__name__}: {str(err)[:500]}")
    say(f"   ({time.monotonic() - started:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    notes, pin = _tools(not args.no_pin)
    for note in notes:
        say("note: " + note)
    if args.wait_quiet > 0:
        notes.append(wait_quiet(args.wait_quiet))
        say(notes[-1])
    install_signal_handlers()
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), "load_tool": load_tool(),
        "fake_tool": "?", "loadavg_start": f"{_loadavg():.2f}", "scenarios": [], "notes": notes,
        "pinning": "proxy on CPU 0; wrk, fakes and stream client on CPU 1" if pin else "none",
        "launcher": ("hypercorn -k trio -w 1 " + args.app) if args.launcher == "hypercorn"
        else "python -m io_trio.cli serve (one process)",
    }
    if "portkey" in _chosen(args):
        problem = install_portkey(say) if args.install_peers else (
            None if portkey_entry() is not None else "not installed: add --install-peers (needs node and npm)")
        if problem:
            notes.append(f"portkey scenario skipped: {problem}")
            say(notes[-1])
    settings = _settings(args, pin)
    report.update(rounds=settings.rounds, duration_s=settings.duration, quick=settings.quick,
                  settings={k: v for k, v in vars(args).items() if k != "out"})
    def finish() -> None:
        report["loadavg_end"] = f"{_loadavg():.2f}"

    return run_and_save(lambda: _run(args, report, settings, pin), report, render=render, out_dir=args.out,
                        results="scenarios", finish=finish)

if __name__ == "__main__":
    sys.exit(main())
