"""Prometheus metrics, one registry per app, labels that cannot leak or explode.

Theory of operation: `ProxyMetrics` owns a private `CollectorRegistry` (never
the process-wide default, so tests and embedders can build several apps).  The
adapter reports three kinds of fact:

* gauges while things are open: `request_started` / `request_finished` and
  `stream_started` / `stream_finished` (in-flight requests and streams);
* `observe(trace)` once per request, from its finished `core.audit.RequestTrace`:
  the request count, latencies, proxy overhead, retries, fallbacks, timeouts,
  tokens;
* `audit_dropped(reason)` for each audit record the writer had to drop.

Labels are bounded by construction, because a label value is a time series
forever: ``model`` is a *configured* model name (a pattern as written, e.g.
``claude-*``; never the string the client sent; ``none`` when nothing
matched), ``backend`` a backend type, ``status`` a three-digit code,
``outcome`` one of `core.audit.OUTCOMES`.  No path, request id, user or key is
ever a label.  `render(accept)` produces the exposition for ``GET /metrics``
(Prometheus text, or OpenMetrics when the scraper asks for it).

Latency buckets span 5 ms to 10 min (LLM calls are long; the default
prometheus-client buckets stop at 10 s); overhead buckets span 0.1 ms to 1 s.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from core.audit import OUTCOMES, RequestTrace
from core.config_schema import BACKEND_TYPES

__all__ = ["LATENCY_BUCKETS", "NO_LABEL", "OVERHEAD_BUCKETS", "ProxyMetrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
NO_LABEL = "none"
_BACKENDS = frozenset(BACKEND_TYPES)
_OUTCOMES = frozenset(OUTCOMES)
_TOKEN_KINDS = (("input", "prompt_tokens"), ("output", "completion_tokens"),
                ("cache_read", "cache_read_tokens"), ("cache_write", "cache_write_tokens"))


class ProxyMetrics:
    """See the module docstring.  `model_names`: the configured ``models:`` keys."""

    def __init__(self, model_names: Iterable[str], *, prefix: str = "llm_proxy") -> None:
        self.models = frozenset(model_names)
        self.registry = CollectorRegistry(auto_describe=True)
        self._build(prefix, self.registry)
        # Labelled children, looked up once per label set: `labels()` takes a lock and builds
        # a key every call, a cost paid several times per request otherwise.  Bounded, like the labels.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _build(self, p: str, reg: CollectorRegistry) -> None:
        mb = ("model", "backend")
        self.requests = Counter(f"{p}_requests", "Requests served, by configured model, backend, status and outcome",
                                [*mb, "status", "outcome"], registry=reg)
        self.duration = Histogram(f"{p}_request_duration_seconds", "Whole request, arrival to last byte",
                                  mb, buckets=LATENCY_BUCKETS, registry=reg)
        self.ttfb = Histogram(f"{p}_time_to_first_byte_seconds", "Arrival to the response's first byte",
                              mb, buckets=LATENCY_BUCKETS, registry=reg)
        self.upstream = Histogram(f"{p}_upstream_duration_seconds", "One upstream attempt, request to body end",
                                  mb, buckets=LATENCY_BUCKETS, registry=reg)
        self.overhead = Histogram(f"{p}_overhead_seconds", "Proxy's own time: total minus upstream minus back-off",
                                  mb, buckets=OVERHEAD_BUCKETS, registry=reg)
        self.retries = Counter(f"{p}_retries", "Attempts retried after a failure", mb, registry=reg)
        self.fallbacks = Counter(f"{p}_fallbacks", "Switches to a fallback model", ["model"], registry=reg)
        self.timeouts = Counter(f"{p}_timeouts", "Requests that ended in a timeout", mb, registry=reg)
        self.tokens = Counter(f"{p}_tokens", "Tokens reported by upstreams", ["model", "type"], registry=reg)
        self.in_flight = Gauge(f"{p}_requests_in_flight", "Requests being served", registry=reg)
        self.streams = Gauge(f"{p}_streams_in_flight", "Streamed responses being relayed", registry=reg)
        self.dropped = Counter(f"{p}_audit_records_dropped", "Audit records not written", ["reason"], registry=reg)

    def allow_models(self, model_names: Iterable[str]) -> None:
        """After a config reload: new model names become labels too (old ones stay: their series exist)."""
        self.models = self.models | frozenset(model_names)

    # -- label guards ----------------------------------------------------------------------

    def model_label(self, route: str | None) -> str:
        """A configured model name, else ``none``: never a client-supplied string."""
        return route if route in self.models else NO_LABEL

    @staticmethod
    def backend_label(backend: str | None) -> str:
        return backend if backend in _BACKENDS else NO_LABEL

    @staticmethod
    def status_label(status: int | None) -> str:
        return str(status) if isinstance(status, int) and 100 <= status <= 599 else NO_LABEL

    # -- gauges ----------------------------------------------------------------------------

    def request_started(self) -> None:
        self.in_flight.inc()

    def request_finished(self) -> None:
        self.in_flight.dec()

    def stream_started(self) -> None:
        self.streams.inc()

    def stream_finished(self) -> None:
        self.streams.dec()

    def audit_dropped(self, reason: str) -> None:
        self.dropped.labels(reason if reason in ("queue_full", "write_error") else "other").inc()

    # -- one finished request --------------------------------------------------------------

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, trace: RequestTrace) -> None:
        """Count a finished request (call after `trace.finish`)."""
        model, backend = self.model_label(trace.route), self.backend_label(trace.backend)
        end = trace.ended if trace.ended is not None else trace.started
        outcome = trace.outcome if trace.outcome in _OUTCOMES else NO_LABEL
        child = self._child
        child(self.requests, model, backend, self.status_label(trace.status_code), outcome).inc()
        child(self.duration, model, backend).observe(end - trace.started)
        if trace.first_byte is not None:
            child(self.ttfb, model, backend).observe(trace.first_byte - trace.started)
        child(self.overhead, model, backend).observe(trace.overhead_seconds(end))
        for attempt in trace.attempts:
            if attempt.ended is not None:
                child(self.upstream, model, self.backend_label(attempt.backend)).observe(
                    attempt.ended - attempt.started)
        self._count_events(trace, model, backend, outcome)

    def _count_events(self, trace: RequestTrace, model: str, backend: str, outcome: str) -> None:
        if trace.retries:
            self._child(self.retries, model, backend).inc(trace.retries)
        if trace.fallbacks:
            self._child(self.fallbacks, model).inc(trace.fallbacks)
        if outcome == "timeout":
            self._child(self.timeouts, model, backend).inc()
        usage = trace.usage
        for kind, field in _TOKEN_KINDS:
            count = getattr(usage, field)
            if count:
                self._child(self.tokens, model, kind).inc(count)

    # -- exposition ------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type) for ``GET /metrics``, negotiated from the Accept header."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
