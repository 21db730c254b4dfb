"""Statistics and output: medians over rounds, the Markdown tables, machine details.

Every number in a table is a median over alternating rounds (direct, proxy,
direct, proxy, ...), so slow drift of the machine hits both sides alike.
Added latency is quoted both as a difference and as a ratio to the direct call,
because absolute times drift 10-25% between runs on a shared VM while ratios
measured in the same run hold (performance-notes.md).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "machine",
    "median",
    "percentile",
    "fmt",
    "render",
    "save",
    "say",
]

NAN = float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile with linear interpolation (NaN for no values)."""
    if not values:
        return NAN
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Iterable[float | None]) -> float:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return percentile(present, 50)


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: NaN/None as an em dash, large numbers with thousands separators."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def say(text: str) -> None:
    """Progress on stderr (the report itself goes to stdout)."""
    print(text, file=sys.stderr, flush=True)


def save(report: dict[str, Any], text: str, out_dir: Path, prefix: str = "") -> Path:
    """Write `text` as ``<prefix><start time>.md`` and the raw `report` next to it as ``.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / (prefix + report["started"].replace("-", "").replace(":", "").replace("T", "-"))
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    return stem.with_suffix(".md")


def run_and_save(work: Callable[[], None], report: dict[str, Any], *, render: Callable[[dict[str, Any]], str],
                 out_dir: Path, results: str, prefix: str = "", finish: Callable[[], None] | None = None) -> int:
    """Run `work`; what it measured (also when interrupted) is saved, printed and named.

    `results` is the report's list of measurements: a report with none and no
    notes is not saved.  `finish` completes the report first (end time, load).
    Returns the exit status: 130 after Ctrl-C, else 0.
    """
    interrupted = False
    try:
        work()
    except KeyboardInterrupt:
        interrupted = True
        report["notes"].append("INTERRUPTED: partial results")
    finally:
        if finish is not None:
            finish()
        if report[results] or report["notes"]:
            text = render(report)
            path = save(report, text, out_dir, prefix)
            print(text)
            say(f"saved {path} and {path.with_suffix('.json')}")
    return 130 if interrupted else 0


def machine() -> dict[str, Any]:
    """CPU model, cores, kernel and Python, as the README's Performance section quotes them."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _ratio(proxy: float, direct: float) -> str:
    if math.isnan(proxy) or math.isnan(direct) or direct <= 0:
        return "—"
    return f"{proxy / direct:.1f}x"


def _load_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for scenario in results:
        for load in scenario.get("load", []):
            d, p = load["direct"], load["proxy"]
            rows.append([
                scenario["name"], load["label"], str(load["connections"]),
                fmt(d["rps"], 0), fmt(p["rps"], 0), _ratio(d["rps"], p["rps"]),
                fmt(d["p50_ms"], 3), fmt(p["p50_ms"], 3), fmt(p["p50_ms"] - d["p50_ms"], 3),
                _ratio(p["p50_ms"], d["p50_ms"]),
                fmt(d["p99_ms"], 2), fmt(p["p99_ms"], 2),
                fmt(p.get("cpu_us_per_request"), 0),
                f"{p['non_2xx']}/{p['errors']}",
            ])
    return rows


def _stream_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for scenario in results:
        for stream in scenario.get("streams", []):
            for target in ("direct", "proxy"):
                s = stream[target]
                rows.append([
                    scenario["name"], stream["label"], str(stream["streams"]), target,
                    fmt(s["ttfb_ms"]), fmt(s["first_lag_ms"]), fmt(s["lag_p50_ms"]), fmt(s["lag_p99_ms"]),
                    fmt(s["total_ms"], 0), fmt(s["reads"], 1), f"{fmt(s['events'], 0)}/{stream['expected_events']}",
                    fmt(s.get("cpu_us_per_event"), 0), f"{s['ok']}/{s['streams']}",
                ])
    return rows


def _memory_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for scenario in results:
        mem = scenario.get("memory")
        rss = scenario.get("rss")
        if not mem and not rss:
            continue
        mem = mem or {}
        rss = rss or {}
        steps = mem.get("steps", [])
        rows.append([
            scenario["name"],
            fmt(rss.get("tree_hwm_mib"), 1), fmt(rss.get("worker_hwm_mib"), 1),
            fmt(mem.get("warm_rss_mib"), 1),
            " → ".join(f"{fmt(s['rss_mib'], 1)} ({s['requests']:,})" for s in steps) or "—",
            fmt(mem.get("growth_kib_per_1k"), 1),
        ])
    return rows


def _added(stream: dict[str, Any] | None, field: str) -> str:
    return fmt(stream["proxy"][field] - stream["direct"][field], 2) if stream else "—"


def _headline_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for scenario in results:
        loads = {load["connections"]: load for load in scenario.get("load", []) if load["label"] == "non-stream"}
        streams = {s["streams"]: s for s in scenario.get("streams", [])}
        rss = scenario.get("rss") or {}
        memory = scenario.get("memory") or {}
        c32, c1, s1, s100 = loads.get(32), loads.get(1), streams.get(1), streams.get(100)
        rows.append([
            scenario["name"],
            fmt(c32["proxy"]["rps"], 0) if c32 else "—",
            fmt(c1["proxy"]["p50_ms"] - c1["direct"]["p50_ms"], 3) if c1 else "—",
            fmt(c32["proxy"]["p99_ms"], 1) if c32 else "—",
            fmt(c32["proxy"].get("cpu_us_per_request"), 0) if c32 else "—",
            fmt(rss.get("tree_hwm_mib"), 1),
            fmt(memory.get("growth_kib_per_1k"), 1),
            _added(s1, "first_lag_ms"),
            _added(s100, "lag_p50_ms"),
            _added(s100, "first_lag_ms"),
            f"{fmt(s100['proxy']['reads'], 0)} / {fmt(s100['direct']['reads'], 0)}" if s100 else "—",
        ])
    return rows


# The rows an interleaved run sets every other scenario against, round by round: the
# calibrations, and the peer measured beside the proxy (benchmarks.peers).
REFERENCES = ("asgi-ceiling", "quart-ceiling", "portkey")


def _headline_values(scenario: dict[str, Any]) -> dict[str, float]:
    """The interleaved section's numbers of one scenario's run (NaN where it measured nothing)."""
    loads = {load["connections"]: load for load in scenario.get("load", []) if load["label"] == "non-stream"}
    streams = {s["streams"]: s for s in scenario.get("streams", [])}
    c32, c1, s100 = loads.get(32), loads.get(1), streams.get(100)
    return {
        "rps": c32["proxy"]["rps"] if c32 else NAN,
        "cpu": (c32["proxy"].get("cpu_us_per_request") or NAN) if c32 else NAN,
        "p50_added": c1["proxy"]["p50_ms"] - c1["direct"]["p50_ms"] if c1 else NAN,
        "p99": c32["proxy"]["p99_ms"] if c32 else NAN,
        "lag_added": s100["proxy"]["lag_p50_ms"] - s100["direct"]["lag_p50_ms"] if s100 else NAN,
        "cpu_event": (s100["proxy"].get("cpu_us_per_event") or NAN) if s100 else NAN,
    }


def _median_range(values: Sequence[float], digits: int = 2) -> str:
    """'median (min–max)' of the values that exist."""
    present = [v for v in values if not math.isnan(v)]
    if not present:
        return "—"
    return f"{fmt(median(present), digits)} ({fmt(min(present), digits)}–{fmt(max(present), digits)})"


def _interleaved(results: list[dict[str, Any]]) -> list[str]:
    """Medians over the interleaved rounds, and each scenario's per-round ratios to the reference rows."""
    rounds: dict[int, dict[str, dict[str, float]]] = {}
    for scenario in results:
        if "round" in scenario:
            rounds.setdefault(scenario["round"], {})[scenario["name"]] = _headline_values(scenario)
    if not rounds:
        return []
    names = list(dict.fromkeys(name for per_round in rounds.values() for name in per_round))

    def each(name: str, key: str) -> list[float]:
        return [per_round[name][key] for per_round in rounds.values() if name in per_round]

    medians = [[name, _median_range(each(name, "rps"), 0), _median_range(each(name, "cpu"), 0),
                _median_range(each(name, "p50_added"), 3), _median_range(each(name, "p99"), 1),
                _median_range(each(name, "lag_added")), _median_range(each(name, "cpu_event"), 0)]
               for name in names]
    ratios = []
    for name in names:
        for reference in REFERENCES:
            if name == reference or not any(reference in per_round for per_round in rounds.values()):
                continue
            pairs = [(per_round[name], per_round[reference]) for per_round in rounds.values()
                     if name in per_round and reference in per_round]
            ratios.append([name, reference,
                           _median_range([ours["rps"] / theirs["rps"] for ours, theirs in pairs]),
                           _median_range([ours["cpu"] / theirs["cpu"] for ours, theirs in pairs]),
                           _median_range([ours["cpu_event"] / theirs["cpu_event"] for ours, theirs in pairs])])
    return [
        f"## Interleaved: {len(rounds)} rounds, each scenario once per round",
        "",
        "Medians over the rounds (min–max).  The machine's speed drifts between rounds; the ratios below, "
        "taken within each round, are what holds.",
        "",
        *_table(["scenario", "RPS c=32", "CPU/req c=32 (µs)", "added p50 c=1 (ms)", "p99 c=32 (ms)",
                 "100 streams: added median chunk lag (ms)", "100 streams: CPU/event (µs)"], medians),
        "",
        *(_table(["scenario", "against (same round)", "RPS c=32 ratio", "CPU/req ratio", "CPU/event ratio"],
                 ratios) + [""] if ratios else []),
    ]


def render(report: dict[str, Any]) -> str:
    """The whole Markdown report."""
    m = report["machine"]
    out = [
        f"# Benchmark run {report['started']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}.  "
        f"Proxy: {report.get('launcher', '?')}.  Pinning: {report['pinning']}.  "
        f"Load generator: {report['load_tool']}.  Fake upstream: "
        f"{report['fake_tool']}.  Rounds: {report['rounds']} x {report['duration_s']:g} s per point"
        f"{' (QUICK run: not for quoting)' if report['quick'] else ''}.",
        f"Load average at start: {report['loadavg_start']}; at end: {report.get('loadavg_end', '?')}.",
        "",
        "## Headline (targets from issue 8)",
        "",
        *_table(["scenario", "RPS c=32", "added p50 c=1 (ms)", "p99 c=32 (ms)", "CPU/req c=32 (µs)",
                 "peak RSS tree (MiB)", "RSS growth (KiB/1k req)", "1 stream: added first-event lag (ms)",
                 "100 streams: added median chunk lag (ms)", "100 streams: added first-event lag (ms)",
                 "100 streams: reads/stream proxy / direct"], _headline_rows(report["scenarios"])),
        "",
        "Targets: RPS c=32 > Portkey (~1,000) and >= 10x LiteLLM (~90); added p50 c=1 < 0.7 ms; "
        "p99 c=32 < 30 ms; peak RSS < 80 MiB; added median chunk lag < 5 ms at 100 streams; "
        "first event < 2 ms after the upstream's; memory flat over 10,000 requests; one client read per "
        "upstream event (50 direct; 52 through hypercorn, which writes the head and the body's end "
        "separately).  Peers on this kind of machine (performance-notes.md): nginx proxy_pass ~54,000 RPS, "
        "Portkey ~1,025 RPS / +0.86 ms / 230 MiB, LiteLLM ~83 RPS / +11.3 ms / 353 MiB.  `nginx-floor` and "
        "`quart-ceiling` rows are calibration, not products: compare the proxy with them *in the same run*.  "
        "A `portkey` row is the peer itself, measured in this run (`--scenario portkey --install-peers`).",
        "",
        *_interleaved(report["scenarios"]),
        "## Request/response load (wrk; direct = the fake upstream itself)",
        "",
        *_table(["scenario", "request", "c", "RPS direct", "RPS proxy", "direct/proxy",
                 "p50 direct (ms)", "p50 proxy (ms)", "added p50 (ms)", "p50 ratio", "p99 direct (ms)",
                 "p99 proxy (ms)", "proxy CPU/req (µs)", "proxy non-2xx/socket errors"],
                _load_rows(report["scenarios"])),
        "",
        "## Streaming (chunks x delay per stream; lag = client read time - the fake's send time)",
        "",
        *_table(["scenario", "request", "streams", "target", "first event (ms)", "first-event lag (ms)",
                 "chunk lag p50 (ms)", "chunk lag p99 (ms)", "stream time (ms)", "reads/stream",
                 "events/stream", "proxy CPU/event (µs)", "ok streams"], _stream_rows(report["scenarios"])),
        "",
        "## Memory (proxy process tree: hypercorn master + worker)",
        "",
        *_table(["scenario", "peak RSS tree (MiB)", "peak RSS worker (MiB)", "worker RSS after warm-up (MiB)",
                 "worker RSS after N requests", "growth (KiB per 1k requests, after the first step)"],
                _memory_rows(report["scenarios"])),
        "",
    ]
    notes = [note for scenario in report["scenarios"] for note in scenario.get("notes", [])]
    notes += report.get("notes", [])
    if notes:
        out += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(out)
