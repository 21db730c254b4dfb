"""Canary keys through every path; no log line and no audit record may ever show one.

Every configured secret (a backend key, a forced credential header, a client key)
is a recognisable canary.  Requests then take each path the issue names, with
upstreams that echo the key back: success (whole and streamed), upstream error,
timeout, an exception inside the proxy, and a configuration that fails to load.
All log output (the root logger, JSON format, tracebacks included) and every
audit file are then searched for the canaries.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from core.exchange import Exchange
from io_trio.logs import JsonFormatter
from tests.integration.conftest import model
from tests.support.servers import FakeUpstream, Reply, json_reply, sse_reply


UPSTREAM_CANARY = "sk-canary-upstream-9f8e7d6c5b4a"
FORCED_CANARY = "canary-forced-header-1a2b3c4d"
CLIENT_CANARY = "sk-canary-client-0f1e2d3c4b5a"
CANARIES = (UPSTREAM_CANARY, FORCED_CANARY, CLIENT_CANARY)
ENV = {"CANARY_UPSTREAM_KEY": UPSTREAM_CANARY, "CANARY_CLIENT_KEY": CLIENT_CANARY}


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-canary",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


ECHOING_COMPLETION = {
    "id": "chatcmpl-c", "object": "chat.completion", "created": 1, "model": "gpt-canary",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": f"you sent {UPSTREAM_CANARY}"}}],
    "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
}
ECHOING_STREAM = [
    (None, chunk({"role": "assistant", "content": ""})),
    (None, chunk({"content": f"key {FORCED_CANARY} "})),
    (None, chunk({"content": f"and {CLIENT_CANARY}"})),
    (None, chunk({}, "stop")),
    (None, {"id": "chatcmpl-c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-canary",
            "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}}),
    (None, "[DONE]"),
]
UPSTREAM_401 = json_reply({"error": {"message": f"Incorrect API key provided: {UPSTREAM_CANARY}",
                                     "type": "invalid_request_error", "code": "invalid_api_key"}}, status=401)


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything the process logs, as the JSON formatter writes it (installed before the app)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


def canary_config(upstream: FakeUpstream, audit_file: Path) -> dict[str, Any]:
    openai_like = {"api_key": "${CANARY_UPSTREAM_KEY}", "retry": {"max_attempts": 1},
                   "headers": {"force": {"x-api-key": FORCED_CANARY}}}
    return {
        "server": {"auth": {"keys": [{"key": "${CANARY_CLIENT_KEY}", "name": "canary-client"}]}},
        "logging": {"level": "debug", "format": "json",
                    "requests": {"level": "full", "file": str(audit_file), "redact": {"headers": ["x-tenant"]}}},
        "models": {
            "gpt-canary": model("openai", f"{upstream.url}/v1", **openai_like),
            "gpt-slow": model("openai", f"{upstream.url}/v1", first_byte_timeout_seconds=0.3, **openai_like),
        },
    }


async def audit_records(path: Path, count: int) -> list[dict[str, Any]]:
    """The audit file once it holds `count` records (the writer is asynchronous)."""
    with trio.fail_after(5):
        while not path.exists() or len(path.read_text().splitlines()) < count:
            await trio.sleep(0.02)
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_no_canary(text: str, where: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"{canary} leaked into {where}"


async def test_canaries_never_reach_logs_or_audit_records(start_proxy, upstream: FakeUpstream, tmp_path: Path,
                                                         log_output: io.StringIO, monkeypatch) -> None:
    audit_file = tmp_path / "audit" / "requests.jsonl"
    upstream.script = [json_reply(ECHOING_COMPLETION), sse_reply(ECHOING_STREAM), UPSTREAM_401,
                       Reply(hang=True), json_reply(ECHOING_COMPLETION)]
    proxy = await start_proxy(canary_config(upstream, audit_file), env=ENV)
    headers = {"authorization": f"Bearer {CLIENT_CANARY}", "x-tenant": "acme", "x-debug": f"key={UPSTREAM_CANARY}"}
    ask = {"model": "gpt-canary", "messages": [{"role": "user", "content": f"is {UPSTREAM_CANARY} my key?"}]}
    async with httpx.AsyncClient(base_url=proxy, headers=headers, timeout=10) as client:
        ok = await client.post("/v1/chat/completions", json=ask)
        streamed = await client.post("/v1/chat/completions", json={**ask, "stream": True,
                                                                   "stream_options": {"include_usage": True}})
        rejected = await client.post("/v1/chat/completions", json=ask)
        timed_out = await client.post("/v1/chat/completions", json={**ask, "model": "gpt-slow"})

        def broken(self: Exchange) -> Any:  # a bug in the proxy whose message quotes the key
            raise RuntimeError(f"could not build headers from {self.deployment.api_key!r}")

        monkeypatch.setattr(Exchange, "upstream_request", broken)
        crashed = await client.post("/v1/chat/completions", json=ask)
    assert [r.status_code for r in (ok, streamed, rejected, timed_out, crashed)] == [200, 200, 401, 504, 500]
    assert all(r.headers.get("x-request-id") for r in (ok, streamed, rejected, timed_out, crashed))

    records = await audit_records(audit_file, 5)
    assert [r["outcome"] for r in records] == ["ok", "ok", "upstream_error", "timeout", "error"]
    assert records[1]["stages"]["client_response"]["stream"]["text"] == "key [redacted] and [redacted]"
    assert records[1]["usage"]["completion_tokens"] == 6
    logs = log_output.getvalue()
    assert "Traceback" in logs and "RuntimeError" in logs  # the exception was logged, scrubbed
    for record in records:
        assert record["request_id"] in logs  # every log line about it carries its id
    assert_no_canary(logs, "the log")
    for path in audit_file.parent.iterdir():
        assert_no_canary(path.read_text(), path.name)


def test_a_configuration_error_never_prints_a_key(tmp_path: Path, monkeypatch, capsys) -> None:
    from io_trio.cli import main

    # An endpoint with the key in its query string is refused, and the error quotes the URL.
    config = tmp_path / "bad.yaml"
    config.write_text("models:\n  gpt:\n    backend_type: openai\n"
                      "    endpoint: https://api.example.test/v1?key=${CANARY_UPSTREAM_KEY}\n"
                      f"    api_key: {FORCED_CANARY}\n    ssl_verify: maybe\n")
    monkeypatch.setenv("CANARY_UPSTREAM_KEY", UPSTREAM_CANARY)
    assert main(["check-config", str(config)]) != 0
    err = capsys.readouterr().err
    assert "endpoint" in err and "ssl_verify" in err
    assert_no_canary(err, "check-config's output")
