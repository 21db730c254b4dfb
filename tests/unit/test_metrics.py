"""Metrics: parsed back from the exposition, as a scraper would see them."""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.audit import RequestTrace
from core.stream_summary import ResponseSummary, Usage
from io_trio.metrics import ProxyMetrics

MODELS = ("claude-*", "gpt-4o", "local")


def scrape(metrics: ProxyMetrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} from the text exposition."""
    body, content_type = metrics.render("text/plain")
    assert content_type.startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def trace(*, model: str = "claude-sonnet-4-5", route: str | None = "claude-*", backend: str = "anthropic",
          status: int = 200, attempts: tuple[tuple[int | None, str, float], ...] = ((200, "http_status", 0.4),),
          usage: Usage | None = None, **finish: bool) -> RequestTrace:
    """A finished request: arrives at 0, attempts back to back from 0.01, responds at the end."""
    t = RequestTrace(request_id="req-raw-id", method="POST", path="/v1/messages?beta=true", client_ip="10.1.2.3",
                     started=0.0, timestamp=1.7e9)
    t.routed(model=model, route=route, stream=False)
    now = 0.01
    for index, (code, result, seconds) in enumerate(attempts):
        if index:
            t.retried(waited=0.0)
        t.attempt_started(deployment=route or "-", backend=backend, url="https://api.example/v1/messages", now=now)
        now += seconds
        t.attempt_ended(result=result, status=code, now=now)
    if status >= 400:
        timed_out = bool(attempts) and attempts[-1][1].startswith("timeout")
        t.failed(status=status, type="timeout_error" if timed_out else "api_error", message="x")
    else:
        t.responded(status=status, now=now + 0.002)
    t.summary = ResponseSummary(usage=usage or Usage())
    t.finish(now + 0.003, **finish)
    return t


def test_requests_are_counted_by_configured_model_backend_status_and_outcome() -> None:
    metrics = ProxyMetrics(MODELS)
    metrics.observe(trace())
    metrics.observe(trace(model="claude-haiku-4-5"))
    metrics.observe(trace(model="claude-opus", status=529, attempts=((529, "http_status", 0.1),)))
    samples = scrape(metrics)
    assert value(samples, "llm_proxy_requests_total", model="claude-*", backend="anthropic", status="200",
                 outcome="ok") == 2
    assert value(samples, "llm_proxy_requests_total", model="claude-*", backend="anthropic", status="529",
                 outcome="upstream_error") == 1


def test_latency_histograms_and_overhead() -> None:
    metrics = ProxyMetrics(MODELS)
    metrics.observe(trace(attempts=((200, "http_status", 0.4),)))  # total 0.413, upstream 0.4
    samples = scrape(metrics)
    labels = {"model": "claude-*", "backend": "anthropic"}
    assert value(samples, "llm_proxy_request_duration_seconds_sum", **labels) == pytest.approx(0.413)
    assert value(samples, "llm_proxy_time_to_first_byte_seconds_sum", **labels) == pytest.approx(0.412)
    assert value(samples, "llm_proxy_upstream_duration_seconds_sum", **labels) == pytest.approx(0.4)
    assert value(samples, "llm_proxy_overhead_seconds_sum", **labels) == pytest.approx(0.013)
    assert value(samples, "llm_proxy_overhead_seconds_bucket", le="0.025", **labels) == 1
    assert value(samples, "llm_proxy_overhead_seconds_bucket", le="0.01", **labels) == 0
    assert value(samples, "llm_proxy_request_duration_seconds_bucket", le="600.0", **labels) == 1


def test_retries_timeouts_fallbacks_and_tokens() -> None:
    metrics = ProxyMetrics(MODELS)
    metrics.observe(trace(attempts=((529, "http_status", 0.1), (None, "timeout_before_response", 1.0)),
                          status=504))
    fell_back = trace(usage=Usage(prompt_tokens=125, completion_tokens=60, cache_read_tokens=100))
    fell_back.fallbacks = 1
    metrics.observe(fell_back)
    samples = scrape(metrics)
    assert value(samples, "llm_proxy_retries_total", model="claude-*", backend="anthropic") == 1
    assert value(samples, "llm_proxy_timeouts_total", model="claude-*", backend="anthropic") == 1
    assert value(samples, "llm_proxy_fallbacks_total", model="claude-*") == 1
    assert value(samples, "llm_proxy_upstream_duration_seconds_count", model="claude-*", backend="anthropic") == 3
    assert [value(samples, "llm_proxy_tokens_total", model="claude-*", type=kind)
            for kind in ("input", "output", "cache_read", "cache_write")] == [125, 60, 100, 0]


def test_in_flight_gauges_and_dropped_audit_records() -> None:
    metrics = ProxyMetrics(MODELS)
    metrics.request_started()
    metrics.request_started()
    metrics.stream_started()
    metrics.request_finished()
    for reason in ("queue_full", "queue_full", "write_error", "/etc/passwd"):
        metrics.audit_dropped(reason)
    samples = scrape(metrics)
    assert value(samples, "llm_proxy_requests_in_flight") == 1
    assert value(samples, "llm_proxy_streams_in_flight") == 1
    assert value(samples, "llm_proxy_audit_records_dropped_total", reason="queue_full") == 2
    assert value(samples, "llm_proxy_audit_records_dropped_total", reason="write_error") == 1
    assert value(samples, "llm_proxy_audit_records_dropped_total", reason="other") == 1


def test_labels_never_carry_client_strings_paths_ids_or_keys() -> None:
    metrics = ProxyMetrics(MODELS)
    metrics.observe(trace(model="sk-ant-api03-leaked-as-a-model-name", route=None, status=404, attempts=()))
    metrics.observe(trace(model="gpt-4o-2024-08-06", route="gpt-4o", backend="openai"))
    metrics.observe(trace(route="not-configured", backend="made-up-backend"))
    label_values = {v for samples in scrape(metrics).values() for labels in samples for k, v in labels if k != "le"}
    assert label_values == {"gpt-4o", "none", "openai", "200", "404", "ok", "bad_request"}


def test_status_labels_are_bounded() -> None:
    assert ProxyMetrics.status_label(200) == "200"
    assert ProxyMetrics.status_label(99) == ProxyMetrics.status_label(1000) == ProxyMetrics.status_label(None) == "none"


def test_each_app_has_its_own_registry() -> None:
    first, second = ProxyMetrics(MODELS), ProxyMetrics(MODELS)  # no "Duplicated timeseries" error
    first.observe(trace())
    assert value(scrape(first), "llm_proxy_requests_total", model="claude-*", backend="anthropic", status="200",
                 outcome="ok") == 1
    assert "llm_proxy_requests_total" not in scrape(second)
    default = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "llm_proxy_" not in default


def test_openmetrics_is_served_when_asked_for() -> None:
    metrics = ProxyMetrics(MODELS)
    metrics.observe(trace())
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_a_reload_adds_model_labels_without_forgetting_old_ones() -> None:
    metrics = ProxyMetrics(["old-model"])
    metrics.allow_models(["new-*"])
    assert metrics.model_label("new-*") == "new-*" and metrics.model_label("old-model") == "old-model"
    assert metrics.model_label("new-model-from-a-client") == "none"
