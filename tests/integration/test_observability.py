"""Logs, audit records and metrics of real traffic through the proxy (issue 6, "Proof")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import UPSTREAM_KEY, model
from tests.support.servers import FakeUpstream, Reply, json_reply, ndjson_reply, sse_reply

ANTHROPIC_MESSAGE = {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Hi there!"}], "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100,
              "output_tokens": 3},
}
ANTHROPIC_STREAM = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_02", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5",
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "input_json_delta", "partial_json": "{\"q\": \"do"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "input_json_delta", "partial_json": "g\"}"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                       "usage": {"output_tokens": 60}}),
    ("message_stop", {"type": "message_stop"}),
]
ASK = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "say hi"}]}
HEADERS = {"x-api-key": "client-key-1", "anthropic-version": "2023-06-01", "x-request-id": "client-req-42"}


async def proxy_for(start_proxy, upstream: FakeUpstream, requests: Any) -> str:
    return await start_proxy({
        "logging": {"requests": requests},
        "models": {"claude-*": model("anthropic", upstream.url, api_key=UPSTREAM_KEY, retry={"max_attempts": 2,
                                                                                             "backoff_ms": 0})},
    })


async def records_in(path: Path, count: int) -> list[dict[str, Any]]:
    with trio.fail_after(5):
        while not path.exists() or len(path.read_text().splitlines()) < count:
            await trio.sleep(0.02)
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("level", ["metadata", "headers", "full"])
async def test_records_for_a_whole_and_a_streamed_request(start_proxy, upstream, tmp_path, level) -> None:
    audit = tmp_path / "requests.jsonl"
    upstream.script = [json_reply(ANTHROPIC_MESSAGE), sse_reply(ANTHROPIC_STREAM)]
    proxy = await proxy_for(start_proxy, upstream, {"level": level, "file": str(audit)})
    async with httpx.AsyncClient(base_url=proxy, headers=HEADERS) as client:
        whole = await client.post("/v1/messages", json=ASK)
        streamed = await client.post("/v1/messages", json={**ASK, "stream": True})
    assert whole.headers["x-request-id"] == "client-req-42"
    assert float(whole.headers["x-proxy-overhead-ms"]) >= 0
    first, second = await records_in(audit, 2)
    for record in (first, second):
        assert record["request_id"] == "client-req-42" and record["outcome"] == "ok"
        assert (record["model"], record["route"], record["backend"], record["status_code"]) == (
            "claude-sonnet-4-5", "claude-*", "anthropic", 200)
        assert record["upstream_url"] == f"{upstream.url}/v1/messages"
        assert record["duration_ms"] >= record["ttfb_ms"] >= 0 and record["attempts"] == 1
    assert first["usage"] == {"prompt_tokens": 112, "completion_tokens": 3, "cache_read_tokens": 100,
                              "cache_write_tokens": 0}
    assert second["stream"] is True and second["chunks"] == len(ANTHROPIC_STREAM)
    assert second["usage"]["completion_tokens"] == 60
    assert ("stages" in second) == (level != "metadata")
    if level == "full":
        stream = second["stages"]["client_response"]["stream"]
        assert stream["tool_calls"] == [{"id": "toolu_1", "name": "lookup", "arguments": {"q": "dog"}}]
        assert stream["finish_reason"] == "tool_use" and stream["complete"]
        assert first["stages"]["client_response"]["body"]["content"][0]["text"] == "Hi there!"
        sent = dict(map(tuple, first["stages"]["upstream_request"]["headers"]))
        assert sent["x-api-key"] == "[redacted]"


async def test_a_stream_cut_by_the_client_is_still_logged(start_proxy, upstream, tmp_path) -> None:
    audit = tmp_path / "requests.jsonl"
    upstream.script = [sse_reply(ANTHROPIC_STREAM[:3], stall=True)]
    proxy = await proxy_for(start_proxy, upstream, {"level": "full", "file": str(audit)})
    async with httpx.AsyncClient(base_url=proxy, headers=HEADERS) as client:
        async with client.stream("POST", "/v1/messages", json={**ASK, "stream": True}) as response:
            async for _ in response.aiter_bytes():
                break  # leave after the first piece
    (record,) = await records_in(audit, 1)
    assert record["outcome"] == "client_gone" and record["stream"] is True
    assert record["stages"]["client_response"]["stream"]["complete"] is False


async def test_metrics_after_traffic(start_proxy, upstream, tmp_path) -> None:
    upstream.script = [json_reply({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
                                  status=529), json_reply(ANTHROPIC_MESSAGE), sse_reply(ANTHROPIC_STREAM)]
    proxy = await proxy_for(start_proxy, upstream, {"level": "metadata", "file": str(tmp_path / "r.jsonl")})
    async with httpx.AsyncClient(base_url=proxy, headers=HEADERS) as client:
        await client.post("/v1/messages", json=ASK)  # 529, retried, then 200
        await client.post("/v1/messages", json={**ASK, "stream": True})
        await client.post("/v1/messages", json={**ASK, "model": "gpt-unknown"})  # 404: no model label
        scraped = await client.get("/metrics")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(scraped.text) for s in family.samples}

    def get(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert get("llm_proxy_requests_total", model="claude-*", backend="anthropic", status="200", outcome="ok") == 2
    assert get("llm_proxy_requests_total", model="none", backend="none", status="404", outcome="bad_request") == 1
    assert get("llm_proxy_retries_total", model="claude-*", backend="anthropic") == 1
    assert get("llm_proxy_tokens_total", model="claude-*", type="output") == 63
    assert get("llm_proxy_requests_in_flight") == 0 and get("llm_proxy_streams_in_flight") == 0
    assert not any("gpt-unknown" in json.dumps(labels) for _, labels in samples)


OPENAI_COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}


async def test_one_access_line_per_request_and_the_id_on_every_line(start_proxy, upstream, caplog) -> None:
    overloaded = {"error": {"message": "busy", "type": "server_error", "param": None, "code": None}}
    upstream.script = [json_reply(overloaded, status=503), json_reply(OPENAI_COMPLETION)]
    proxy = await start_proxy({"models": {"gpt-4o": model(
        "openai", upstream.url + "/v1", api_key=UPSTREAM_KEY, retry={"max_attempts": 2, "backoff_ms": 0})}})
    caplog.set_level("INFO")
    async with httpx.AsyncClient(base_url=proxy) as client:
        answer = await client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": []},
                                   headers={"x-request-id": "not \"a\" sane id"})
    request_id = answer.headers["x-request-id"]
    with trio.fail_after(5):  # the line is written once the last byte went out, after the client has it
        while not any(r.name == "llm_proxy.access" for r in caplog.records):
            await trio.sleep(0.01)
    assert answer.status_code == 200 and request_id != "not \"a\" sane id" and len(request_id) >= 16
    about = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    (access,) = [r for r in about if r.name == "llm_proxy.access"]
    assert access.levelname == "INFO"
    assert (access.method, access.path, access.model, access.backend, access.status, access.attempts) == (
        "POST", "/v1/chat/completions", "gpt-4o", "openai", 200, 2)
    assert access.duration_ms >= 0 and access.outcome == "ok"
    assert any(r.levelname == "WARNING" and "retrying" in r.getMessage() for r in about)


async def test_refusals_carry_an_id_and_are_counted(start_proxy, upstream) -> None:
    proxy = await start_proxy({
        "server": {"auth": {"keys": [{"name": "team", "key": "sk-team-key-000000000001"}]}},
        "models": {"gpt-4o": model("openai", upstream.url + "/v1", api_key=UPSTREAM_KEY)},
    })
    async with httpx.AsyncClient(base_url=proxy) as client:
        refused = await client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": []},
                                    headers={"x-request-id": "req-refused-1"})
        scraped = await client.get("/metrics", headers={"authorization": "Bearer sk-team-key-000000000001"})
    assert refused.status_code == 401 and refused.headers["x-request-id"] == "req-refused-1"
    assert scraped.status_code == 200 and scraped.headers["x-request-id"]
    lines = [line for line in scraped.text.splitlines() if line.startswith("llm_proxy_requests_total{")]
    assert any('status="401"' in line and line.endswith(" 1.0") for line in lines)


async def test_tokens_of_a_translated_stream_are_counted_without_include_usage(start_proxy, upstream) -> None:
    upstream.script = [sse_reply(ANTHROPIC_STREAM)]
    proxy = await proxy_for(start_proxy, upstream, None)
    async with httpx.AsyncClient(base_url=proxy) as client:
        streamed = await client.post("/v1/chat/completions", json={
            "model": "claude-sonnet-4-5", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        scraped = await client.get("/metrics")
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    assert 'llm_proxy_tokens_total{model="claude-*",type="output"} 60.0' in scraped.text
    assert 'llm_proxy_tokens_total{model="claude-*",type="input"} 25.0' in scraped.text


@pytest.mark.parametrize("backend", ["openai", "ollama"])
async def test_tokens_of_openai_and_ollama_streams_are_counted(start_proxy, upstream, backend) -> None:
    if backend == "openai":
        delta = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        upstream.script = [sse_reply([
            (None, {**delta, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}}]}),
            (None, {**delta, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            (None, {**delta, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 5,
                                                      "total_tokens": 12}}),
            (None, "[DONE]")])]
        endpoint = upstream.url + "/v1"
    else:
        upstream.script = [ndjson_reply([
            {"model": "m", "created_at": "2026-01-01T00:00:00Z", "message": {"role": "assistant", "content": "hi"},
             "done": False},
            {"model": "m", "created_at": "2026-01-01T00:00:01Z", "message": {"role": "assistant", "content": ""},
             "done": True, "done_reason": "stop", "prompt_eval_count": 7, "eval_count": 5}])]
        endpoint = upstream.url
    proxy = await start_proxy({"models": {"m": model(backend, endpoint, api_key=UPSTREAM_KEY)}})
    async with httpx.AsyncClient(base_url=proxy) as client:
        streamed = await client.post("/v1/chat/completions", json={
            "model": "m", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}]})
        scraped = await client.get("/metrics")
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    assert 'llm_proxy_tokens_total{model="m",type="input"} 7.0' in scraped.text
    assert 'llm_proxy_tokens_total{model="m",type="output"} 5.0' in scraped.text


async def test_the_audit_file_rotates_by_size_through_the_running_proxy(start_proxy, upstream, tmp_path) -> None:
    audit = tmp_path / "requests.jsonl"
    upstream.script = [json_reply(ANTHROPIC_MESSAGE) for _ in range(6)]
    proxy = await proxy_for(start_proxy, upstream, {"level": "full", "file": str(audit), "max_bytes": 1024,
                                                    "backups": 2})
    async with httpx.AsyncClient(base_url=proxy, headers={**HEADERS, "x-request-id": "x"}) as client:
        for number in range(6):
            await client.post("/v1/messages", json=ASK, headers={"x-request-id": f"req-{number}"})
    backups = [tmp_path / "requests.jsonl.1", tmp_path / "requests.jsonl.2"]
    with trio.fail_after(5):
        while not (audit.exists() and all(path.exists() for path in backups)
                   and "req-5" in audit.read_text()):
            await trio.sleep(0.02)
    assert not (tmp_path / "requests.jsonl.3").exists()
    kept = [json.loads(line) for path in (*reversed(backups), audit) for line in path.read_text().splitlines()]
    ids = [record["request_id"] for record in kept]
    assert ids == sorted(ids) and ids[-1] == "req-5" and len(ids) < 6  # the oldest were rotated away, whole


async def test_tokens_of_a_mock_stream_are_counted_with_the_audit_log_off(start_proxy) -> None:
    proxy = await start_proxy({"models": {"mock": model("mock")}})
    async with httpx.AsyncClient(base_url=proxy) as client:
        streamed = await client.post("/v1/chat/completions", json={
            "model": "mock", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hello there"}]})
        scraped = await client.get("/metrics")
    usage = [json.loads(line[6:]) for line in streamed.text.splitlines()
             if line.startswith("data: {") and '"usage":{' in line][-1]["usage"]
    assert f'llm_proxy_tokens_total{{model="mock",type="output"}} {float(usage["completion_tokens"])}' in scraped.text
