"""Observability glue for the adapter: one `Observer` per app, one `RequestTrace` per request.

Theory of operation: the app builds an `Observer` with its config (redactor,
metrics registry, audit config) and starts it with the serving nursery (the
audit writer's drain task).  Each proxied request gets a trace from `begin`;
the `Forwarder` reports attempts into it; `io_trio.endpoint` reports the response
(`responded`); and exactly one `complete` call ends it, from the endpoint for a
whole response or from the stream's `StreamTap` when a streamed body ends (or
the client leaves).  `complete` feeds the metrics, writes the one access log
line and queues the audit record; it never raises and never waits.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import trio

from core.audit import RequestTrace, access_line, build_record
from core.config import Config, secrets
from core.redact import Redactor
from core.sse import ServerSentEvent
from core.stream_summary import PROTOCOLS, ResponseSummary, StreamSummary, summarize_response, usage_in_body

from .audit_writer import AuditWriter, open_audit_writer
from .logs_context import install
from .metrics import ProxyMetrics

__all__ = ["Observer", "StreamTap", "stamp_request_id"]

UPSTREAM_REQUEST_ID = "x-upstream-request-id"

log = logging.getLogger("llm_proxy.access")
_LEVEL_BY_OUTCOME = {"upstream_error": logging.WARNING, "timeout": logging.WARNING, "error": logging.ERROR}


def stamp_request_id(headers: list[tuple[str, str]], request_id: str) -> list[tuple[str, str]]:
    """``x-request-id`` is the proxy's id; an upstream's own (OpenAI sends one) moves to ``x-upstream-request-id``."""
    out = [(UPSTREAM_REQUEST_ID if name == "x-request-id" else name, value) for name, value in headers]
    out.append(("x-request-id", request_id))
    return out


def _redactor(config: Config) -> Redactor:
    redact = config.logging.requests.redact
    return Redactor(secrets=secrets(config), header_names=redact.headers, body_paths=redact.body_paths)


class Observer:
    """Per-app logging, audit and metrics state; see the module docstring."""

    def __init__(self, config: Config) -> None:
        self.config = config.logging.requests
        self.redactor = _redactor(config)
        self.metrics = ProxyMetrics(config.models)
        self.audit: AuditWriter | None = None

    def reconfigure(self, config: Config) -> None:
        """After a reload: the new secrets join the old ones (records in flight may hold either)."""
        self.redactor = self.redactor.merged(_redactor(config))
        self.metrics.allow_models(config.models)
        install(self.redactor)
        if self.audit is not None:
            self.audit.redactor = self.redactor
        if config.logging.requests != self.config:
            logging.getLogger("llm_proxy").warning("logging.requests changed: that takes effect at the next restart")

    # -- app lifetime ----------------------------------------------------------------------

    def start(self, nursery: trio.Nursery) -> None:
        install(self.redactor)
        if self.redactor.short_secrets:
            logging.getLogger("llm_proxy").warning(
                "%d configured secret(s) are shorter than 8 characters; redacting them may blank "
                "unrelated text in logs", self.redactor.short_secrets)
        if self.config.enabled:
            self.audit = open_audit_writer(self.config, self.redactor, on_drop=self.metrics.audit_dropped)
            nursery.start_soon(self.audit.run)

    async def stop(self) -> None:
        if self.audit is not None:
            await self.audit.aclose()

    @property
    def headers_level(self) -> bool:
        return self.config.enabled and self.config.level != "metadata"

    @property
    def full_level(self) -> bool:
        return self.config.enabled and self.config.level == "full"

    # -- one request -----------------------------------------------------------------------

    def begin(self, *, request_id: str, method: str, path: str, client_ip: str | None,
              headers: Sequence[tuple[str, str]]) -> RequestTrace:
        self.metrics.request_started()
        trace = RequestTrace(request_id=request_id, method=method, path=path, client_ip=client_ip,
                             started=trio.current_time(), timestamp=time.time())
        if self.headers_level:
            trace.captured("client_request", headers=headers)
        return trace

    def refused(self, *, request_id: str, method: str, path: str, client_ip: str | None, client: str,
                error: Any) -> None:
        """A request the gate turned away (401, 403, 429, 503...): logged, counted and audited all the same."""
        trace = self.begin(request_id=request_id, method=method, path=path, client_ip=client_ip, headers=())
        trace.client_protocol = client
        trace.refused = True
        trace.failed(status=error.status, type=error.type, message=error.message)
        trace.responded(status=error.status, now=trio.current_time())
        self.complete(trace)

    def request_body(self, trace: RequestTrace, headers: Sequence[tuple[str, str]], raw: bytes) -> None:
        if self.full_level:
            trace.captured("client_request", headers=headers, body=raw)

    def responded(self, trace: RequestTrace, status: int, headers: list[tuple[str, str]], body: bytes | None,
                  error: Any = None) -> list[tuple[str, str]]:
        """The client's response head goes out now: its final headers (request id, overhead).

        `body` is a whole body (None for a stream); `error` the proxy's own
        `ProxyError` when it answers with one.
        """
        now = trio.current_time()
        if error is not None:
            trace.failed(status=status, type=error.type, message=error.message)
        if body is not None:
            self._whole_body(trace, status, body)  # usage for the token metrics, the error for the log
        trace.responded(status=status, now=now)
        headers = stamp_request_id(headers, trace.request_id)
        headers.append(("x-proxy-overhead-ms", f"{trace.overhead_seconds(now) * 1000:.1f}"))
        if self.headers_level:
            trace.captured("client_response", status=status, headers=headers,
                           body=body if self.full_level else None)
        return headers

    def _whole_body(self, trace: RequestTrace, status: int, body: bytes) -> None:
        if status < 400:  # only the usage is needed: read just that, not the whole body again
            usage = usage_in_body(trace.client_protocol or "openai", body)
            if usage is not None:
                trace.summary = ResponseSummary(usage=usage, complete=True)
                return
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            return
        summary = summarize_response(trace.client_protocol or "openai", parsed)
        trace.summary = summary
        if status >= 400 and trace.error is None:
            error = summary.error or {"type": None, "message": None}
            trace.failed(status=status, type=error.get("type"), message=error.get("message") or "")

    def complete(self, trace: RequestTrace, *, client_gone: bool = False, crashed: bool = False) -> None:
        """End the request: metrics, the access line, the audit record.  Called exactly once."""
        if trace.ended is not None:
            return
        trace.finish(trio.current_time(), client_gone=client_gone, crashed=crashed)
        self.metrics.request_finished()
        self.metrics.observe(trace)
        message, fields = access_line(trace)
        log.log(_LEVEL_BY_OUTCOME.get(trace.outcome or "", logging.INFO), "%s", message,
                extra={**fields, "request_id": trace.request_id})
        if self.audit is not None:
            self.audit.submit(build_record(trace, level=self.config.level))

    def tap(self, trace: RequestTrace, *, wire: str | None) -> StreamTap:
        """A stream's tap; `wire` None for a local answer, whose usage is then read from the client side."""
        return StreamTap(self, trace, wire=wire)


class StreamTap:
    """Watches a streamed body: upstream events (usage), client bytes (the log), and its end."""

    def __init__(self, observer: Observer, trace: RequestTrace, *, wire: str | None) -> None:
        self.observer = observer
        self.trace = trace
        full = observer.full_level
        self.metrics = observer.metrics
        client = trace.client_protocol or "openai"
        wanted = observer.config.enabled or wire is None  # a local stream's usage is only on the client side
        self._client = StreamSummary(client, content=full) if wanted else None
        self._upstream = StreamSummary(wire, content=full) if wire in PROTOCOLS else None
        self._finished = False
        self.metrics.stream_started()

    @property
    def wants_upstream(self) -> bool:
        return self._upstream is not None

    def upstream(self, event: Any) -> None:
        """One decoded upstream event, as the relay heard it (an SSE event, or a parsed NDJSON line)."""
        if self._upstream is None:
            return
        if isinstance(event, ServerSentEvent):
            self._upstream.feed_event(event.event, event.data)
        else:
            self._upstream.feed_item(event)

    def client(self, data: bytes) -> None:
        if self._client is not None:
            self._client.feed_bytes(data)

    def finish(self, *, chunks: int, client_gone: bool) -> None:
        """The body ended or was closed; idempotent (only the first call counts)."""
        if self._finished:
            return
        self._finished = True
        self.metrics.stream_finished()
        client = self._client.result() if self._client is not None else None
        upstream = self._upstream.result() if self._upstream is not None else None
        self.trace.stream_ended(client, chunks=chunks, now=trio.current_time(), upstream=upstream)
        self.observer.complete(self.trace, client_gone=client_gone)
