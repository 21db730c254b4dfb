"""The request audit log: configuration, the per-request trace, and one record per request.

Theory of operation: while a request is served, the adapter fills a
`RequestTrace` (a plain mutable value; every clock reading is passed in):
`routed`, then `attempt_started` / `attempt_ended` per upstream attempt,
`retried` / `fell_back` between them, `responded` when the client's response
starts, `stream_ended` when a stream's body ends, and `finish` last, on every
path (also when the client went away or the handler crashed).  `finish` derives
the outcome from what was reported, using `OUTCOME_RULES` in order.

`build_record(trace, level=...)` is then a pure function of that value: the
metadata every level has (``timestamp``, ``request_id``, ``client_ip``, ...,
``outcome``), plus, at ``headers`` and ``full``, the four stages (client request,
upstream request, upstream response, client response) with their headers, and
at ``full`` their bodies.  A streamed body is never listed chunk by chunk: its
stage holds the `core.stream_summary.ResponseSummary` reassembled at the end.

Redaction is not optional and comes last: `audit_line(record, redactor)` blanks
credential headers by name, configured JSONPaths in bodies, and every secret by
value (structured, then once more over the encoded line), and is the only way
this module produces text.  Timings are reported in milliseconds, rounded to
0.1 ms.

`RequestLogConfig` is the ``logging.requests`` block; `read_request_log` reads
it with a `core.config_reader.Reader` so its errors carry their paths.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Final, Literal

import attrs
from attrs import validators as v
from jsonpath_ng.ext import parse as parse_jsonpath

from core.config_reader import INVALID, Reader, any_invalid, join
from core.headers import name_problem
from core.redact import Redactor
from core.stream_summary import ResponseSummary, Usage

__all__ = [
    "LEVELS",
    "OUTCOMES",
    "OUTCOME_RULES",
    "AttemptTrace",
    "RedactConfig",
    "RequestLogConfig",
    "RequestTrace",
    "STAGES",
    "Stage",
    "access_line",
    "audit_line",
    "build_record",
    "read_request_log",
    "redact_record",
    "validate_request_log",
]

Level = Literal["metadata", "headers", "full"]
LEVELS: tuple[Level, ...] = ("metadata", "headers", "full")
OUTCOMES = ("ok", "upstream_error", "timeout", "client_gone", "bad_request", "refused", "error")
STAGES = ("client_request", "upstream_request", "upstream_response", "client_response")
_TIMEOUT_RESULTS = frozenset({"timeout_before_response"})
_TRANSPORT_RESULTS = frozenset({"connect_error", "protocol_error_before_response", "failed_after_bytes_sent"})


# -- configuration ---------------------------------------------------------------------------


def _names(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(value.lower() for value in values)


@attrs.frozen
class RedactConfig:
    """``logging.requests.redact``: header names and body JSONPaths to blank, on top of the built-ins."""

    headers: tuple[str, ...] = attrs.field(default=(), converter=_names)
    body_paths: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        for name in self.headers:
            if name_problem(name):
                raise ValueError(name_problem(name))
        for path in self.body_paths:
            parse_jsonpath(path)  # raises on a bad path


@attrs.frozen
class RequestLogConfig:
    """``logging.requests``: the audit log.  No `file` means JSON lines on stdout.

    `queue_size` bounds the records waiting to be written: when the writer falls
    behind, new records are dropped and counted, never the request delayed.
    """

    enabled: bool = attrs.field(default=False, validator=v.instance_of(bool))
    level: Level = attrs.field(default="metadata", validator=v.in_(LEVELS))
    file: str | None = attrs.field(default=None, validator=v.optional(v.min_len(1)))
    max_bytes: int = attrs.field(default=50 * 1024 * 1024, validator=[v.instance_of(int), v.ge(1024)])
    backups: int = attrs.field(default=5, validator=[v.instance_of(int), v.ge(0), v.le(1000)])
    queue_size: int = attrs.field(default=1000, validator=[v.instance_of(int), v.ge(1)])
    redact: RedactConfig = attrs.field(factory=RedactConfig)


_KEYS = ("enabled", "level", "file", "max_bytes", "backups", "queue_size", "redact")


def read_request_log(r: Reader, node: Any, path: str = "logging.requests") -> Any:
    """The ``logging.requests`` value as a `RequestLogConfig`, or `INVALID` (errors recorded in `r`).

    Shorthands: absent, null or ``false`` -> disabled; ``true`` -> enabled at
    ``metadata``; a level name (``requests: full``) -> enabled at that level.  A
    mapping is enabled unless it says ``enabled: false``.
    """
    if node is None or node is False:
        return RequestLogConfig()
    if node is True:
        return RequestLogConfig(enabled=True)
    if isinstance(node, str):
        level = r.check_choice(node.strip().lower(), path, LEVELS, shown=node)
        return INVALID if level is INVALID else RequestLogConfig(enabled=True, level=level)
    block = r.block(node, path, _KEYS)
    if block is None:
        return INVALID
    fields = {
        "enabled": r.boolean(block, "enabled", path, True),
        "level": r.choice(block, "level", path, "metadata", LEVELS),
        "file": _read_file(r, block, path),
        "max_bytes": r.integer(block, "max_bytes", path, 50 * 1024 * 1024, minimum=1024),
        "backups": r.integer(block, "backups", path, 5, minimum=0, maximum=1000),
        "queue_size": r.integer(block, "queue_size", path, 1000, minimum=1),
        "redact": _read_redact(r, block.get("redact"), join(path, "redact")),
    }
    return INVALID if any_invalid(*fields.values()) else RequestLogConfig(**fields)


def _read_file(r: Reader, block: Mapping[str, Any], path: str) -> Any:
    value = r.text(block, "file", path)
    if isinstance(value, str) and not value.strip():
        return r.error(join(path, "file"), "must not be empty (omit it to log to stdout)")
    return value.strip() if isinstance(value, str) else value


def _read_redact(r: Reader, node: Any, path: str) -> Any:
    block = r.block(node, path, ("headers", "body_paths"))
    if block is None:
        return INVALID
    headers = _read_strings(r, block, "headers", path, name_problem)
    paths = _read_strings(r, block, "body_paths", path, _jsonpath_problem)
    return INVALID if any_invalid(headers, paths) else RedactConfig(headers=headers, body_paths=paths)


def _read_strings(r: Reader, block: Mapping[str, Any], key: str, path: str, problem_of: Any) -> Any:
    path = join(path, key)
    items = r.items(block.get(key), path)
    if items is None:
        return INVALID
    values = []
    for index, item in enumerate(items):
        found = r.sourced(item, join(path, index))
        problem = None if found is INVALID else problem_of(found.value.strip())
        values.append(r.error(join(path, index), problem) if problem else found)
    return INVALID if any_invalid(*values) else tuple(found.value.strip() for found in values)


def _jsonpath_problem(path: str) -> str | None:
    try:
        parse_jsonpath(path)
    except Exception as exc:  # noqa: BLE001 - jsonpath-ng raises several unrelated types
        return f"invalid JSONPath {path!r}: {exc}"
    return None


def validate_request_log(node: Any, env: Mapping[str, str]) -> tuple[RequestLogConfig | None, list[str]]:
    """(value or None, every error with its path) for a raw ``logging.requests`` node."""
    reader = Reader(env)
    value = read_request_log(reader, node)
    if reader.errors or value is INVALID:
        return None, reader.errors
    return value, []


# -- the trace of one request ----------------------------------------------------------------


@attrs.frozen
class Stage:
    """One of the four messages of a request, as it crossed the proxy."""

    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=lambda h: tuple(map(tuple, h)))
    body: bytes | None = None
    status: int | None = None
    url: str | None = None
    summary: ResponseSummary | None = None  # a streamed body, reassembled


@attrs.define
class AttemptTrace:
    """One upstream attempt; `result` is a `core.retry.OutcomeKind` value."""

    deployment: str
    backend: str
    url: str | None  # None for a local answer (the mock backend)
    started: float
    ended: float | None = None
    status: int | None = None
    result: str | None = None


@attrs.define
class RequestTrace:
    """Everything the log and the metrics need about one request; see the module docstring.

    `started` and every ``now`` are monotonic seconds (the adapter's clock);
    `timestamp` is the wall-clock time the request arrived, for the record.
    """

    request_id: str
    method: str
    path: str
    client_ip: str | None
    started: float
    timestamp: float
    client_protocol: str | None = None
    model: str | None = None  # as the client asked
    route: str | None = None  # the configured model name that matched (a pattern as written)
    served_by: str | None = None
    stream: bool = False
    attempts: list[AttemptTrace] = attrs.field(factory=list)
    retries: int = 0
    fallbacks: int = 0
    waited: float = 0.0  # retry back-off, neither upstream nor proxy time
    first_byte: float | None = None
    ended: float | None = None
    status_code: int | None = None
    error: dict[str, Any] | None = None
    client_gone: bool = False
    crashed: bool = False
    refused: bool = False  # turned away at the front door (key, limits, CORS) before any routing
    chunks: int = 0
    summary: ResponseSummary | None = None  # what the client got, streamed or not
    upstream_summary: ResponseSummary | None = None
    stages: dict[str, Stage] = attrs.field(factory=dict)
    outcome: str | None = None

    # -- reported by the adapter ---------------------------------------------------------

    def routed(self, *, model: str, route: str | None, stream: bool) -> None:
        self.model, self.route, self.stream = model, route, stream

    def attempt_started(self, *, deployment: str, backend: str, url: str | None, now: float) -> None:
        self.attempts.append(AttemptTrace(deployment, backend, url, now))

    def attempt_ended(self, *, result: str, now: float, status: int | None = None, done: bool = True) -> None:
        """The last attempt's result; `done=False` while a stream's body is still being read."""
        attempt = self.attempts[-1]
        attempt.result, attempt.status = result, status if status is not None else attempt.status
        if done:
            attempt.ended = now

    def upstream_done(self, now: float) -> None:
        """The last attempt's upstream body ended (a stream, after `attempt_ended(done=False)`)."""
        if self.attempts and self.attempts[-1].ended is None:
            self.attempts[-1].ended = now

    def retried(self, waited: float) -> None:
        """A retry after `waited` seconds of back-off (measured: a sleep can overshoot its delay)."""
        self.retries += 1
        self.waited += waited

    def fell_back(self) -> None:
        self.fallbacks += 1

    def captured(self, stage: str, **fields: Any) -> None:
        """Keep a stage (`STAGES`) for the ``headers``/``full`` levels."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        self.stages[stage] = Stage(**fields)

    def failed(self, *, status: int, type: str | None, message: str) -> None:
        """The client is getting an error response (the proxy's own, or an upstream's relayed)."""
        self.status_code = status
        self.error = {"type": type, "message": message}

    def responded(self, *, status: int, now: float, served_by: str | None = None) -> None:
        """The client's response (status line and headers) is going out now."""
        self.status_code = status
        self.served_by = served_by if served_by is not None else self.served_by
        if self.first_byte is None:
            self.first_byte = now

    def stream_ended(self, summary: ResponseSummary | None, *, chunks: int, now: float,
                     upstream: ResponseSummary | None = None) -> None:
        """A streamed body ended (completely or not); the summaries join their captured stages."""
        self.summary, self.upstream_summary, self.chunks = summary, upstream, chunks
        self.upstream_done(now)
        for stage, value in (("client_response", summary), ("upstream_response", upstream)):
            if value is not None and stage in self.stages:
                self.stages[stage] = attrs.evolve(self.stages[stage], summary=value, body=None)
        if summary is not None and summary.error is not None and self.error is None:
            self.error = dict(summary.error)

    def finish(self, now: float, *, client_gone: bool = False, crashed: bool = False) -> str:
        """Close the trace (idempotent); returns the outcome."""
        if self.ended is None:
            self.ended = now
            self.client_gone = self.client_gone or client_gone
            self.crashed = self.crashed or crashed
            self.upstream_done(now)
            self.outcome = next(name for name, rule in OUTCOME_RULES if rule(self))
        assert self.outcome is not None
        return self.outcome

    # -- derived -------------------------------------------------------------------------

    @property
    def backend(self) -> str | None:
        return self.attempts[-1].backend if self.attempts else None

    @property
    def usage(self) -> Usage:
        """Upstream's word first (a translated stream may not pass usage on), then the client's."""
        for summary in (self.upstream_summary, self.summary):
            if summary is not None and summary.usage.known:
                return summary.usage
        return Usage()

    def upstream_seconds(self, now: float) -> float:
        """Time spent waiting for upstreams so far (open attempts count until `now`)."""
        return sum((a.ended if a.ended is not None else now) - a.started for a in self.attempts)

    def overhead_seconds(self, now: float) -> float:
        """The proxy's own time so far: elapsed minus upstream time minus retry back-off."""
        return max(0.0, (now - self.started) - self.upstream_seconds(now) - self.waited)


def _is_timeout(t: RequestTrace) -> bool:
    if t.error is not None and t.error.get("type") == "timeout_error":
        return True
    return bool(t.attempts) and t.attempts[-1].result in _TIMEOUT_RESULTS and (t.status_code or 0) >= 400


def _upstream_failed(t: RequestTrace) -> bool:
    if t.status_code is None or (t.status_code < 400 and t.error is None):
        return False
    last = t.attempts[-1] if t.attempts else None
    return last is not None and (last.status is not None or last.result in _TRANSPORT_RESULTS)


# First matching rule wins; the last always matches.
OUTCOME_RULES: Final = (
    ("error", lambda t: t.crashed),
    ("refused", lambda t: t.refused),
    ("client_gone", lambda t: t.client_gone),
    ("timeout", _is_timeout),
    ("ok", lambda t: t.status_code is not None and t.status_code < 400 and t.error is None),
    ("upstream_error", _upstream_failed),
    ("bad_request", lambda t: 400 <= (t.status_code or 0) < 500),  # refused before any upstream answered
    ("error", lambda t: True),
)


# -- the record -------------------------------------------------------------------------------


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_record(trace: RequestTrace, *, level: Level) -> dict[str, Any]:
    """The audit record of a finished trace (unredacted: pass it to `audit_line`)."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}")
    end = trace.ended if trace.ended is not None else trace.started
    last = trace.attempts[-1] if trace.attempts else None
    record: dict[str, Any] = {
        "timestamp": _iso(trace.timestamp), "request_id": trace.request_id, "client_ip": trace.client_ip,
        "method": trace.method, "path": trace.path, "model": trace.model, "route": trace.route,
        "backend": trace.backend, "upstream_url": last.url if last else None, "status_code": trace.status_code,
        "duration_ms": _ms(end - trace.started),
        "ttfb_ms": _ms(None if trace.first_byte is None else trace.first_byte - trace.started),
        "upstream_ms": _ms(trace.upstream_seconds(end)), "overhead_ms": _ms(trace.overhead_seconds(end)),
        "attempts": len(trace.attempts), "retries": trace.retries, "fallbacks": trace.fallbacks,
        "served_by": trace.served_by, "usage": trace.usage.as_dict(), "outcome": trace.outcome,
        "error": trace.error, "stream": trace.stream, "chunks": trace.chunks,
        "attempt_log": [_attempt(a, trace.started) for a in trace.attempts],
    }
    if level != "metadata":
        record["stages"] = {name: _stage(trace.stages[name], level) for name in STAGES if name in trace.stages}
    return record


def _attempt(attempt: AttemptTrace, started: float) -> dict[str, Any]:
    return {
        "deployment": attempt.deployment, "backend": attempt.backend, "status": attempt.status,
        "result": attempt.result, "started_ms": _ms(attempt.started - started),
        "duration_ms": _ms(None if attempt.ended is None else attempt.ended - attempt.started),
    }


def _stage(stage: Stage, level: Level) -> dict[str, Any]:
    out: dict[str, Any] = {"headers": [list(pair) for pair in stage.headers]}
    if stage.url is not None:
        out["url"] = stage.url
    if stage.status is not None:
        out["status"] = stage.status
    if level == "full":
        if stage.summary is not None:
            out["stream"] = stage.summary.as_dict()
        elif stage.body is not None:
            out["body"] = _body_value(stage.body)
    return out


def _body_value(body: bytes) -> Any:
    """A body as JSON when it is JSON (so it reads as data, and paths can blank parts), else text."""
    text = body.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def access_line(trace: RequestTrace) -> tuple[str, dict[str, Any]]:
    """The one info-level log line per request: (message, fields for the JSON formatter).

    Field names avoid `logging.LogRecord` attributes (``extra`` may not override them).
    """
    end = trace.ended if trace.ended is not None else trace.started
    fields = {
        "method": trace.method, "path": trace.path, "model": trace.model, "backend": trace.backend,
        "status": trace.status_code, "duration_ms": _ms(end - trace.started), "attempts": len(trace.attempts),
        "outcome": trace.outcome,
    }
    message = (f"{trace.method} {trace.path} model={trace.model} backend={trace.backend} "
               f"status={trace.status_code} {fields['duration_ms']}ms attempts={len(trace.attempts)} "
               f"outcome={trace.outcome}")
    return message, fields


# -- redaction, always last -------------------------------------------------------------------


def redact_record(record: Mapping[str, Any], redactor: Redactor) -> dict[str, Any]:
    """A copy of `record` with credential headers, configured body paths and secrets blanked."""
    out = dict(record)
    if isinstance(out.get("upstream_url"), str):
        out["upstream_url"] = redactor.url(out["upstream_url"])
    stages = out.pop("stages", None)
    out = redactor.scrub(out)
    if isinstance(stages, Mapping):
        out["stages"] = {name: _redact_stage(stage, redactor) for name, stage in stages.items()}
    return out


def _redact_stage(stage: Mapping[str, Any], redactor: Redactor) -> dict[str, Any]:
    out = {key: redactor.scrub(value) for key, value in stage.items() if key not in _STAGE_SPECIAL}
    out["headers"] = [list(pair) for pair in redactor.headers(_pairs(stage.get("headers", ())))]
    if isinstance(stage.get("url"), str):
        out["url"] = redactor.url(stage["url"])
    for key in ("body", "stream"):
        if key in stage:
            out[key] = redactor.body(stage[key])
    return out


_STAGE_SPECIAL = frozenset({"headers", "url", "body", "stream"})


def _pairs(headers: Sequence[Any]) -> list[tuple[str, str]]:
    return [(str(pair[0]), str(pair[1])) for pair in headers if len(pair) == 2]


def audit_line(record: Mapping[str, Any], redactor: Redactor) -> str:
    """One JSONL line (no newline) for `record`, redacted structurally and then as text."""
    encoded = json.dumps(redact_record(record, redactor), ensure_ascii=False, separators=(",", ":"), default=str)
    return redactor.text(encoded)
