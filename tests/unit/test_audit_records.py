"""Audit records: config, outcomes, one record per request at each level, never a key."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from core.audit import (
    OUTCOMES,
    RedactConfig,
    RequestLogConfig,
    RequestTrace,
    access_line,
    audit_line,
    build_record,
    validate_request_log,
)
from core.config import load_config, secrets
from core.redact import REDACTED, Redactor
from core.stream_summary import StreamSummary, summarize_response
from io_trio.logs import JsonFormatter
from io_trio.logs_context import PRETTY_FORMAT, RedactingFormatter, RequestIdFilter, bound_request_id

CAPTURES = Path("/work/shared/reference/captures")
UPSTREAM_KEY = "sk-canary-upstream-4f1c9a7e2b"
FORCED_TOKEN = "canary-forced-token-8d3e"
CLIENT_KEY = "sk-canary-client-71b0c2d9aa"
CANARIES = (UPSTREAM_KEY, FORCED_TOKEN, CLIENT_KEY)


SDK_FALLBACK = {"authorization": "<redacted>", "accept": "application/json", "content-type": "application/json",
                "user-agent": "OpenAI/Python 3.57.0", "x-stainless-lang": "python", "x-stainless-retry-count": "0"}


def sdk_headers(capture: str, index: int, key: str) -> list[tuple[str, str]]:
    """Headers exactly as the official SDK sent them (captures), with a real-looking key."""
    try:
        headers = json.loads((CAPTURES / capture).read_text())[index]["headers"]
    except (OSError, KeyError, IndexError, ValueError):
        headers = SDK_FALLBACK
    return [(name, f"Bearer {key}" if name == "authorization" else value) for name, value in headers.items()]


OPENAI_REQUEST = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"say hi"}]}'
OPENAI_REPLY = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12,
              "prompt_tokens_details": {"cached_tokens": 4}}}).encode()


def served_trace(**overrides: Any) -> RequestTrace:
    """A non-streamed OpenAI request served on the first attempt, every stage captured."""
    trace = RequestTrace(request_id="req-1", method="POST", path="/v1/chat/completions", client_ip="10.0.0.7",
                         started=50.0, timestamp=1767225600.5)
    trace.routed(model="gpt-4o-mini", route="gpt-4o*", stream=False)
    trace.captured("client_request", headers=sdk_headers("openai-python-3.57.0.json", 0, CLIENT_KEY),
                   body=OPENAI_REQUEST)
    trace.attempt_started(deployment="gpt-4o*", backend="openai",
                          url="https://api.openai.com/v1/chat/completions", now=50.002)
    trace.captured("upstream_request", url="https://api.openai.com/v1/chat/completions",
                   headers=[("authorization", f"Bearer {UPSTREAM_KEY}"), ("content-type", "application/json")],
                   body=OPENAI_REQUEST)
    trace.attempt_ended(result="http_status", status=200, now=50.402)
    trace.captured("upstream_response", status=200, headers=[("content-type", "application/json"),
                                                             ("set-cookie", "__cf_bm=abc")], body=OPENAI_REPLY)
    trace.summary = summarize_response("openai", json.loads(OPENAI_REPLY))
    trace.captured("client_response", status=200, headers=[("content-type", "application/json")], body=OPENAI_REPLY)
    trace.responded(status=200, now=50.405, served_by="gpt-4o*")
    for name, value in overrides.items():
        setattr(trace, name, value)
    trace.finish(50.406)
    return trace


# -- configuration -------------------------------------------------------------------------------


def test_the_issue_example_block_reads() -> None:
    node = {"enabled": True, "level": "metadata", "file": "logs/requests.jsonl",
            "redact": {"headers": ["X-Tenant-Token"], "body_paths": ["$.metadata.user_id"]}}
    value, errors = validate_request_log(node, {})
    assert errors == []
    assert value == RequestLogConfig(enabled=True, level="metadata", file="logs/requests.jsonl",
                                     redact=RedactConfig(headers=("x-tenant-token",),
                                                         body_paths=("$.metadata.user_id",)))


@pytest.mark.parametrize(("node", "expected"), [
    (None, RequestLogConfig()),
    (False, RequestLogConfig()),
    (True, RequestLogConfig(enabled=True)),
    ("full", RequestLogConfig(enabled=True, level="full")),  # benchmarks/configs/audit-full.yaml
    ({"level": "headers"}, RequestLogConfig(enabled=True, level="headers")),
    ({"enabled": "false", "level": "full"}, RequestLogConfig(enabled=False, level="full")),
])
def test_shorthands(node: Any, expected: RequestLogConfig) -> None:
    assert validate_request_log(node, {}) == (expected, [])


def test_every_error_is_reported_with_its_path() -> None:
    node = {"level": "verbose", "file": " ", "max_bytes": 10, "backups": -1, "queue_size": 0, "colour": "red",
            "redact": {"headers": ["bad header"], "body_paths": ["$.[", 3]}}
    value, errors = validate_request_log(node, {})
    assert value is None
    paths = sorted(error.split(":")[0] for error in errors)
    assert paths == sorted([
        "logging.requests.level", "logging.requests.file", "logging.requests.max_bytes",
        "logging.requests.backups", "logging.requests.queue_size", "logging.requests.colour",
        "logging.requests.redact.headers[0]", "logging.requests.redact.body_paths[0]",
        "logging.requests.redact.body_paths[1]"])


def test_environment_variables_are_substituted() -> None:
    value, errors = validate_request_log({"file": "${LOG_DIR}/requests.jsonl", "max_bytes": "${MAX}"},
                                         {"LOG_DIR": "/var/log/proxy", "MAX": "1048576"})
    assert errors == [] and value.file == "/var/log/proxy/requests.jsonl" and value.max_bytes == 1048576


def test_values_built_by_hand_are_validated_too() -> None:
    with pytest.raises(ValueError):
        RequestLogConfig(level="everything")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RedactConfig(headers=("bad name",))


# -- outcomes ------------------------------------------------------------------------------------


def new_trace() -> RequestTrace:
    trace = RequestTrace(request_id="r", method="POST", path="/v1/messages", client_ip=None, started=0.0,
                         timestamp=0.0)
    trace.routed(model="claude-sonnet-4-5", route="claude-*", stream=False)
    return trace


def attempt(trace: RequestTrace, result: str, status: int | None = None, at: float = 0.0) -> None:
    trace.attempt_started(deployment="claude-*", backend="anthropic", url="https://api.anthropic.com/v1/messages",
                          now=at)
    trace.attempt_ended(result=result, status=status, now=at + 0.5)


def test_outcome_ok() -> None:
    trace = new_trace()
    attempt(trace, "http_status", 200)
    trace.responded(status=200, now=1.0)
    assert trace.finish(1.0) == "ok"


@pytest.mark.parametrize("status", [401, 429, 503])
def test_outcome_refused_at_the_front_door_whatever_the_status(status: int) -> None:
    trace = RequestTrace(request_id="r", method="POST", path="/v1/messages", client_ip=None, started=0.0,
                         timestamp=0.0)
    trace.refused = True
    trace.failed(status=status, type="rate_limit_error", message="slow down")
    assert trace.finish(0.0) == "refused"


def test_outcome_upstream_error_for_a_relayed_error_status() -> None:
    trace = new_trace()
    attempt(trace, "http_status", 529)
    trace.failed(status=529, type="overloaded_error", message="Overloaded")
    assert trace.finish(1.0) == "upstream_error"


def test_outcome_upstream_error_for_a_connection_failure() -> None:
    trace = new_trace()
    attempt(trace, "connect_error")
    trace.failed(status=502, type="api_error", message="could not connect")
    assert trace.finish(1.0) == "upstream_error"


def test_outcome_timeout_before_the_response() -> None:
    trace = new_trace()
    attempt(trace, "timeout_before_response")
    trace.failed(status=504, type="timeout_error", message="no response within 30 s")
    assert trace.finish(1.0) == "timeout"


def test_outcome_timeout_in_the_middle_of_a_stream() -> None:
    trace = new_trace()
    attempt(trace, "ok", 200)
    trace.responded(status=200, now=0.6)
    summary = StreamSummary("anthropic")
    summary.feed_bytes(b'event: error\ndata: {"type":"error","error":{"type":"timeout_error",'
                       b'"message":"the upstream sent nothing for 300 s"}}\n\n')
    trace.stream_ended(summary.result(), chunks=1, now=2.0)
    assert trace.finish(2.0) == "timeout"


def test_outcome_upstream_error_for_an_error_event_after_200() -> None:
    trace = new_trace()
    attempt(trace, "ok", 200)
    trace.responded(status=200, now=0.6)
    summary = StreamSummary("anthropic")
    summary.feed_bytes(b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"x"}}\n\n')
    trace.stream_ended(summary.result(), chunks=1, now=2.0)
    assert trace.finish(2.0) == "upstream_error" and trace.status_code == 200


def test_outcome_client_gone_beats_everything_but_a_crash() -> None:
    trace = new_trace()
    attempt(trace, "ok", 200)
    trace.responded(status=200, now=0.6)
    assert trace.finish(1.0, client_gone=True) == "client_gone"


def test_outcome_bad_request_when_the_proxy_refuses() -> None:
    trace = new_trace()
    trace.failed(status=404, type="not_found_error", message="model not served")
    assert trace.finish(0.1) == "bad_request"


def test_outcome_error_for_a_crash_or_a_configuration_problem() -> None:
    crashed = new_trace()
    assert crashed.finish(0.1, crashed=True) == "error"
    no_key = new_trace()
    no_key.failed(status=500, type="configuration_error", message="no API key configured")
    assert no_key.finish(0.1) == "error"


def test_finish_is_idempotent_and_every_outcome_is_known() -> None:
    trace = new_trace()
    first = trace.finish(1.0, client_gone=True)
    assert trace.finish(9.0) == first and trace.ended == 1.0
    assert first in OUTCOMES


# -- the record ----------------------------------------------------------------------------------


def test_metadata_record_has_the_fields_of_the_issue() -> None:
    record = build_record(served_trace(), level="metadata")
    assert record["timestamp"] == "2026-01-01T00:00:00.500Z"
    assert {k: record[k] for k in ("request_id", "client_ip", "method", "path", "model", "route", "backend",
                                   "status_code", "attempts", "served_by", "outcome", "stream", "chunks")} == {
        "request_id": "req-1", "client_ip": "10.0.0.7", "method": "POST", "path": "/v1/chat/completions",
        "model": "gpt-4o-mini", "route": "gpt-4o*", "backend": "openai", "status_code": 200, "attempts": 1,
        "served_by": "gpt-4o*", "outcome": "ok", "stream": False, "chunks": 0}
    assert record["upstream_url"] == "https://api.openai.com/v1/chat/completions"
    assert (record["duration_ms"], record["ttfb_ms"], record["upstream_ms"]) == (406.0, 405.0, 400.0)
    assert record["overhead_ms"] == 6.0
    assert record["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "cache_read_tokens": 4,
                               "cache_write_tokens": None}
    assert "stages" not in record


def test_headers_level_has_four_stages_without_bodies() -> None:
    record = build_record(served_trace(), level="headers")
    client_headers = dict(map(tuple, record["stages"]["client_request"]["headers"]))
    assert client_headers["user-agent"].startswith("OpenAI/Python")
    assert list(record["stages"]) == ["client_request", "upstream_request", "upstream_response", "client_response"]
    assert all("body" not in stage for stage in record["stages"].values())
    assert record["stages"]["upstream_response"]["status"] == 200


def test_full_level_has_bodies_as_json() -> None:
    record = build_record(served_trace(), level="full")
    assert record["stages"]["client_request"]["body"]["messages"][0]["content"] == "say hi"
    assert record["stages"]["client_response"]["body"]["choices"][0]["message"]["content"] == "Hi!"


def test_a_body_that_is_not_json_is_kept_as_text() -> None:
    trace = served_trace()
    trace.captured("upstream_response", status=502, headers=[], body=b"<html>Bad Gateway</html>")
    assert build_record(trace, level="full")["stages"]["upstream_response"]["body"] == "<html>Bad Gateway</html>"


def test_a_streamed_body_is_logged_once_reassembled() -> None:
    trace = new_trace()
    trace.stream = True
    attempt(trace, "ok", 200)
    trace.responded(status=200, now=0.6)
    events = [
        {"type": "message_start", "message": {"usage": {"input_tokens": 25, "cache_read_input_tokens": 100,
                                                        "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
        {"type": "message_stop"},
    ]
    summary = StreamSummary("anthropic")
    for event in events:
        summary.feed_bytes(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
    result = summary.result()
    # The stage is captured when the response starts; the reassembled body joins it at the end.
    trace.captured("client_response", status=200, headers=[("content-type", "text/event-stream")])
    trace.stream_ended(result, chunks=len(events), now=3.0)
    trace.finish(3.0)
    record = build_record(trace, level="full")
    stream = record["stages"]["client_response"]["stream"]
    assert (stream["text"], stream["finish_reason"], stream["chunks"], stream["complete"]) == (
        "Hello", "end_turn", 7, True)
    assert "body" not in record["stages"]["client_response"]
    assert record["chunks"] == 7 and record["stream"] is True and record["outcome"] == "ok"
    assert record["usage"] == {"prompt_tokens": 125, "completion_tokens": 2, "cache_read_tokens": 100,
                               "cache_write_tokens": None}


def test_a_retried_request_logs_each_attempt_and_excludes_back_off_from_overhead() -> None:
    trace = new_trace()
    attempt(trace, "http_status", 529, at=0.01)
    trace.retried(waited=0.2)
    attempt(trace, "http_status", 200, at=0.72)
    trace.responded(status=200, now=1.23)
    trace.finish(1.25)
    record = build_record(trace, level="metadata")
    assert [a["status"] for a in record["attempt_log"]] == [529, 200]
    assert (record["attempts"], record["retries"]) == (2, 1)
    assert record["overhead_ms"] == pytest.approx(1250 - 1000 - 200, abs=0.2)


def test_access_line_is_one_readable_line() -> None:
    message, fields = access_line(served_trace())
    assert message == ("POST /v1/chat/completions model=gpt-4o-mini backend=openai status=200 406.0ms "
                       "attempts=1 outcome=ok")
    record = logging.makeLogRecord({"msg": message, **fields})  # extra fields must not clash with LogRecord
    assert record.outcome == "ok"


# -- redaction and the canaries --------------------------------------------------------------------


def canary_redactor() -> Redactor:
    """Secrets exactly as the adapter will gather them: core.config.secrets plus client keys."""
    config = load_config(json.dumps({"models": {
        "gpt-4o*": {"backend_type": "openai", "endpoint": "https://api.openai.com/v1", "api_key": "${OPENAI_KEY}",
                    "headers": {"force": {"x-api-key": FORCED_TOKEN}}}}}),
        fmt="json", env={"OPENAI_KEY": UPSTREAM_KEY})
    return Redactor(secrets={*secrets(config), CLIENT_KEY}, header_names=["x-tenant"],
                    body_paths=["$.metadata.user_id"])


def canary_trace() -> RequestTrace:
    trace = served_trace()
    echoed = json.dumps({"error": {"message": f"Incorrect API key provided: {UPSTREAM_KEY}",
                                   "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()
    trace.captured("client_request", headers=[("x-api-key", CLIENT_KEY), ("x-tenant", "acme"),
                                              ("x-debug", f"key={UPSTREAM_KEY}")],
                   body=json.dumps({"model": "gpt-4o-mini", "metadata": {"user_id": "u-9"}, "messages": [
                       {"role": "user", "content": f"my key is {CLIENT_KEY} and {FORCED_TOKEN}"}]}).encode())
    trace.captured("upstream_request", url=f"https://user:{UPSTREAM_KEY}@api.openai.com/v1/chat?key={UPSTREAM_KEY}",
                   headers=[("authorization", f"Bearer {UPSTREAM_KEY}"), ("x-api-key", FORCED_TOKEN)], body=b"{}")
    trace.captured("upstream_response", status=401, headers=[("content-type", "application/json")], body=echoed)
    trace.attempts[-1].url = f"https://api.openai.com/v1/chat/completions?api-key={UPSTREAM_KEY}"
    trace.error = {"type": "authentication_error", "message": f"upstream rejected key {UPSTREAM_KEY!r}"}
    return trace


@pytest.mark.parametrize("level", ["metadata", "headers", "full"])
def test_canaries_never_reach_an_audit_line(level: str) -> None:
    line = audit_line(build_record(canary_trace(), level=level), canary_redactor())
    assert not any(canary in line for canary in CANARIES)
    parsed = json.loads(line)  # still one valid JSON record
    if level == "full":
        request = parsed["stages"]["client_request"]
        assert dict(map(tuple, request["headers"]))["x-tenant"] == REDACTED
        assert request["body"]["metadata"]["user_id"] == REDACTED
        assert request["body"]["messages"][0]["content"] == f"my key is {REDACTED} and {REDACTED}"
        assert parsed["stages"]["upstream_request"]["url"].startswith("https://api.openai.com/")


def test_canaries_in_a_streamed_summary_are_redacted() -> None:
    summary = StreamSummary("openai")
    summary.feed_bytes(b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "c1", "function": {"name": "login", "arguments": json.dumps({"key": UPSTREAM_KEY})}}]}}]}
    ).encode() + b"\n\n")
    trace = served_trace()
    trace.captured("client_response", status=200, headers=[], summary=summary.result())
    line = audit_line(build_record(trace, level="full"), canary_redactor())
    assert UPSTREAM_KEY not in line


def log_record_with_traceback(logger_name: str) -> logging.LogRecord:
    try:
        raise RuntimeError(f"h11 refused header b'authorization: Bearer {UPSTREAM_KEY}'")
    except RuntimeError:
        info = sys.exc_info()
    record = logging.LogRecord(logger_name, logging.ERROR, __file__, 1,
                               "upstream %s failed with %r", ("gpt-4o*", {"x-api-key": FORCED_TOKEN}), info)
    record.upstream_url = f"https://api.openai.com/v1?key={CLIENT_KEY}"  # an `extra` field
    return record


@pytest.mark.parametrize("inner", [JsonFormatter(), logging.Formatter(PRETTY_FORMAT)], ids=["json", "pretty"])
def test_canaries_never_reach_a_log_line(inner: logging.Formatter) -> None:
    formatter = RedactingFormatter(inner, canary_redactor())
    record = log_record_with_traceback("llm_proxy.forward")
    with bound_request_id("req-canary"):
        RequestIdFilter().filter(record)
    line = formatter.format(record)
    assert not any(canary in line for canary in CANARIES)
    assert "req-canary" in line and "RuntimeError" in line
