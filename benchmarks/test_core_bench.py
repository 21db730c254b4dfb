"""Core micro-benchmarks: what the sans-IO core costs per event and per byte.

    .venv/bin/python -m pytest benchmarks/ -q --benchmark-only
    .venv/bin/python -m pytest benchmarks/ -q --benchmark-only --benchmark-group-by=group \\
        --benchmark-columns=median,ops,rounds --benchmark-sort=name

Each benchmark is parametrised by size (10 / 1,000 / 10,000 stream events;
1 KiB / 64 KiB / 1 MiB request bodies), so a table shows whether the cost grows
linearly: the per-event or per-KiB figure should stay flat across a row.  The
inputs are shaped like real traffic (protocols.md §1.4 and §2.4 streams; tool
round-trips as in the Claude Code and openai-python captures), and every
benchmark checks its output, so a broken translation cannot pass for a fast one.
Nothing asserts on wall-clock time: these numbers are for reading and for
catching regressions by comparison (``--benchmark-save`` / ``--benchmark-compare``).

The stream benchmarks feed one upstream read per event, as the adapter does
when the upstream writes each event separately; the relay benchmarks run the
real `StreamRelay` an `Exchange` builds (decoder, translators, encoder), bytes in
and bytes out.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.config import Config, load_config
from core.exchange import ClientProtocol, Exchange, Ids
from core.headers import HeaderPolicy
from core.requests import parse_client_body
from core.sse import SSEDecoder
from core.transforms import JsonPathAdd, JsonPathDrop, RegexTransform, TransformChain
from core.translate.anthropic_backend import AnthropicToOpenAIStream
from core.translate.openai_backend import OpenAIToAnthropicStream

from .payloads import MARKER, anthropic_stream_events, marker, openai_stream_events

pytestmark = pytest.mark.benchmark(min_rounds=5, max_time=0.5, warmup=False)

EVENT_COUNTS = [10, 1_000, 10_000]
BODY_SIZES = {"1KiB": 1 << 10, "64KiB": 64 << 10, "1MiB": 1 << 20}

_PROSE = ("The quarterly report is due on Friday; the numbers from the sales team are still missing and "
          "the review meeting moved to Thursday at ten, so the summary has to be ready a day earlier. ") * 2
_IDS = Ids(token="0123456789abcdef01234567", created=1741569952)


# -- inputs ------------------------------------------------------------------------------


def _stream_reads(kind: str, events: int) -> list[bytes]:
    """One read per event: the head rides with the first, the tail with the last (as the fake writes)."""
    head, chunk, tail = openai_stream_events() if kind == "openai" else anthropic_stream_events()
    reads = [chunk(marker(i, 1000.0 + i / 1000)) for i in range(events)]
    reads[0] = head + reads[0]
    reads[-1] += tail
    return reads


def _items(reads: list[bytes], kind: str) -> list[Any]:
    """The decoded, parsed upstream items a stream translator is fed."""
    decoder = SSEDecoder()
    events = [event for read in reads for event in decoder.feed(read)] + decoder.finish()
    if kind == "openai":
        return [event.data if event.data == "[DONE]" else json.loads(event.data) for event in events]
    return [json.loads(event.data) for event in events]


def _grow(build: Any, size: int) -> bytes:
    """`build(turns)` with the most turns that stay within `size` bytes (at least one user turn)."""
    per_turn = len(build(1)) - len(build(0))
    turns = max(0, (size - len(build(0))) // per_turn)
    return build(turns)


def _openai_body(turns: int) -> bytes:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a helpful assistant. " + _PROSE}]
    for i in range(turns):
        call = {"id": f"call_{i}", "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "day": i})}}
        messages += [
            {"role": "user", "content": f"Question {i}: {_PROSE}"},
            {"role": "assistant", "content": "Let me look that up.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": "sunny, 21 C. " + _PROSE[:120]},
            {"role": "assistant", "content": "It is sunny in Paris. " + _PROSE[:150]},
        ]
    messages.append({"role": "user", "content": "And tomorrow?"})
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Get the weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "day": {"type": "integer"}},
                           "required": ["city"]}}}
    body = {"model": "bench", "messages": messages, "tools": [tool], "max_tokens": 1024, "temperature": 0.7}
    return json.dumps(body, separators=(",", ":")).encode()


def _anthropic_body(turns: int) -> bytes:
    messages: list[dict[str, Any]] = []
    for i in range(turns):
        messages += [
            {"role": "user", "content": [{"type": "text", "text": f"Question {i}: {_PROSE}"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look that up."},
                {"type": "tool_use", "id": f"toolu_{i:04d}", "name": "get_weather",
                 "input": {"city": "Paris", "day": i}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i:04d}",
                                          "content": "sunny, 21 C. " + _PROSE[:120]}]},
            {"role": "assistant", "content": [{"type": "text", "text": "It is sunny in Paris. " + _PROSE[:150]}]},
        ]
    messages.append({"role": "user", "content": [{"type": "text", "text": "And tomorrow?",
                                                  "cache_control": {"type": "ephemeral"}}]})
    tool = {"name": "get_weather", "description": "Get the weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "day": {"type": "integer"}},
                             "required": ["city"]}}
    body = {"model": "bench", "max_tokens": 1024, "system": [{"type": "text", "text": "You are Claude. " + _PROSE}],
            "messages": messages, "tools": [tool], "metadata": {"user_id": "user_bench"}}
    return json.dumps(body, separators=(",", ":")).encode()


def _config(backend: str, *, transforms: bool = False) -> Config:
    model: dict[str, Any] = {"backend_type": backend, "endpoint": "http://127.0.0.1:9", "api_key": "sk-bench"}
    if transforms:
        model["transforms"] = {"request": [
            {"type": "jsonpath_add", "path": "$.user", "value": "team-a"},
            {"type": "regex", "pattern": "You are a helpful assistant\\.", "replacement": "You are concise."},
        ]}
    return load_config(json.dumps({"models": {"bench": model}}), fmt="json", env={}, source="<bench>")


def _exchange(config: Config, client: ClientProtocol, raw: bytes) -> Exchange:
    body, name = parse_client_body(raw)
    model = config.router.route(name)
    assert model is not None
    return Exchange(client=client, body=body, raw=raw, model_name=name, model=model,
                    deployment=model.deployments[0], client_headers=[("authorization", "Bearer sk-client")],
                    ids=_IDS)


# -- SSE decoding -----------------------------------------------------------------------


@pytest.mark.parametrize("events", EVENT_COUNTS, ids=lambda n: f"events={n}")
def test_sse_decode(benchmark: Any, events: int) -> None:
    benchmark.group = "sse decode (OpenAI chunks, one read per event)"
    reads = _stream_reads("openai", events)

    def decode() -> int:
        decoder = SSEDecoder()
        count = sum(len(decoder.feed(read)) for read in reads)
        return count + len(decoder.finish())

    assert benchmark(decode) == events + 4  # role chunk, finish chunk, usage chunk, [DONE]


# -- stream translators (parsed items in, items out) ------------------------------------


@pytest.mark.parametrize("events", EVENT_COUNTS, ids=lambda n: f"events={n}")
def test_translate_openai_chunks_to_anthropic_events(benchmark: Any, events: int) -> None:
    benchmark.group = "stream translation: OpenAI chunks -> Anthropic events"
    items = _items(_stream_reads("openai", events), "openai")

    def translate() -> list[Any]:
        translator = OpenAIToAnthropicStream(model="bench", message_id="msg_bench")
        out = [event for item in items for event in translator.feed(item)]
        return out + translator.finish()

    out = benchmark(translate)
    assert sum(e["type"] == "content_block_delta" for e in out) == events
    assert out[-1]["type"] == "message_stop"


@pytest.mark.parametrize("events", EVENT_COUNTS, ids=lambda n: f"events={n}")
def test_translate_anthropic_events_to_openai_chunks(benchmark: Any, events: int) -> None:
    benchmark.group = "stream translation: Anthropic events -> OpenAI chunks"
    items = _items(_stream_reads("anthropic", events), "anthropic")

    def translate() -> list[Any]:
        translator = AnthropicToOpenAIStream(model="bench", created=1741569952, message_id="chatcmpl-bench",
                                             include_usage=True)
        out = [chunk for item in items for chunk in translator.feed(item)]
        return out + translator.finish()

    out = benchmark(translate)
    deltas = [c for c in out if isinstance(c, dict) and c["choices"] and "content" in c["choices"][0]["delta"]]
    assert len(deltas) >= events
    assert out[-1] == "[DONE]"


# -- the whole relay: upstream bytes in, client bytes out -------------------------------

_RELAYS = {
    "openai-passthrough": ("openai", ClientProtocol.OPENAI, "openai"),
    "anthropic-to-openai-client": ("anthropic", ClientProtocol.OPENAI, "anthropic"),
    "openai-to-anthropic-client": ("openai", ClientProtocol.ANTHROPIC, "openai"),
}


@pytest.mark.parametrize("events", EVENT_COUNTS, ids=lambda n: f"events={n}")
@pytest.mark.parametrize("route", list(_RELAYS))
def test_stream_relay(benchmark: Any, route: str, events: int) -> None:
    backend, client, wire = _RELAYS[route]
    benchmark.group = f"stream relay bytes->bytes: {route}"
    config = _config(backend)
    raw = (_anthropic_body(0) if client is ClientProtocol.ANTHROPIC else _openai_body(0))
    raw = raw.replace(b'"max_tokens":1024', b'"max_tokens":1024,"stream":true')
    reads = _stream_reads(wire, events)

    def relay() -> bytes:
        stream = _exchange(config, client, raw).stream()
        return b"".join(stream.feed(read) for read in reads) + stream.finish()

    out = benchmark(relay)
    assert [int(m[1]) for m in MARKER.finditer(out)] == list(range(events))
    assert out.endswith(b"data: [DONE]\n\n" if client is ClientProtocol.OPENAI else b'{"type":"message_stop"}\n\n')


# -- request translation: client bytes in, upstream bytes out ----------------------------

_REQUESTS = {
    "openai-passthrough": ("openai", ClientProtocol.OPENAI, _openai_body),
    "openai-to-anthropic": ("anthropic", ClientProtocol.OPENAI, _openai_body),
    "anthropic-to-openai": ("openai", ClientProtocol.ANTHROPIC, _anthropic_body),
}


@pytest.mark.parametrize("size", list(BODY_SIZES))
@pytest.mark.parametrize("route", list(_REQUESTS))
def test_request_translation(benchmark: Any, route: str, size: str) -> None:
    backend, client, build = _REQUESTS[route]
    benchmark.group = f"request bytes->bytes (parse, route, translate, serialise): {route}"
    config = _config(backend)
    raw = _grow(build, BODY_SIZES[size])

    def translate() -> bytes:
        return _exchange(config, client, raw).upstream_request().body

    out = json.loads(benchmark(translate))
    assert out["model"] == "bench"
    assert out["messages"][-1]["content"] in ("And tomorrow?", [{"type": "text", "text": "And tomorrow?"}]) \
        or "And tomorrow?" in json.dumps(out["messages"][-1])


@pytest.mark.parametrize("size", list(BODY_SIZES))
def test_response_translation_anthropic_to_openai(benchmark: Any, size: str) -> None:
    benchmark.group = "response bytes->bytes: Anthropic message -> OpenAI chat.completion"
    config = _config("anthropic")
    exchange = _exchange(config, ClientProtocol.OPENAI, _openai_body(0))
    text = ("x" * 1000 + " ") * (BODY_SIZES[size] // 1001)
    upstream = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                           "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                           "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 7}}).encode()

    out = benchmark(exchange.response, 200, [("content-type", "application/json")], upstream)
    assert json.loads(out.body)["choices"][0]["message"]["content"] == text


# -- transforms and header policy -------------------------------------------------------


@pytest.mark.parametrize("size", list(BODY_SIZES))
def test_transforms(benchmark: Any, size: str) -> None:
    benchmark.group = "request transforms: jsonpath_add + regex + jsonpath_drop"
    chain = TransformChain((JsonPathAdd("$.user", "team-a"),
                            RegexTransform(r"You are a helpful assistant\.", "You are concise."),
                            JsonPathDrop("$.messages[*].name")), side="request")
    body = json.loads(_grow(_openai_body, BODY_SIZES[size]))

    out = benchmark(chain.apply, body)
    assert out["user"] == "team-a"
    assert out["messages"][0]["content"].startswith("You are concise.")


@pytest.mark.parametrize("size", list(BODY_SIZES))
def test_request_with_transforms(benchmark: Any, size: str) -> None:
    benchmark.group = "request bytes->bytes with transforms (the policy-transforms scenario)"
    config = _config("openai", transforms=True)
    raw = _grow(_openai_body, BODY_SIZES[size])

    out = json.loads(benchmark(lambda: _exchange(config, ClientProtocol.OPENAI, raw).upstream_request().body))
    assert out["user"] == "team-a"


def test_header_whitelist(benchmark: Any) -> None:
    benchmark.group = "header policy"
    policy = HeaderPolicy(mode="whitelist", allow=["user-agent", "accept", "x-stainless-*"], add={"x-tenant": "a"})
    headers = [("host", "127.0.0.1:8080"), ("accept-encoding", "gzip, deflate"), ("connection", "keep-alive"),
               ("authorization", "Bearer sk-client"), ("accept", "application/json"),
               ("content-type", "application/json"), ("user-agent", "OpenAI/Python 3.57.0"),
               *((f"x-stainless-{k}", "v") for k in ("lang", "package-version", "os", "arch", "runtime",
                                                     "runtime-version", "async", "retry-count", "read-timeout")),
               ("content-length", "387")]

    out = benchmark(policy.apply, headers)
    names = [name for name, _ in out]
    assert "authorization" not in names and "user-agent" in names and ("x-tenant", "a") in out
