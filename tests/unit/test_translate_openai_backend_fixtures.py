"""Golden transcripts in tests/fixtures/anthropic_to_openai/: replay every file.

Each file holds an Anthropic client request, the OpenAI request we must send,
the upstream's chunks (dicts, "[DONE]"; the list ending = the body ending) and
the exact Anthropic events the client must get; some also hold a non-streaming
upstream response and the Anthropic message it becomes.  Optional keys
`message_id` (default "msg_fallback") and `input_tokens_estimate` (default 0)
are what the adapter would pass to the stream translator.  Adding a file adds
its tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from core.translate.openai_backend import OpenAIToAnthropicStream, request_to_openai, response_from_openai
from tests.unit.test_translate_openai_backend_stream import assert_well_formed, reassemble

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic_to_openai"
FILES = sorted(FIXTURES.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def replay(fixture: dict[str, Any]) -> list[dict[str, Any]]:
    stream = OpenAIToAnthropicStream(
        model=fixture["client_request"]["model"],
        message_id=fixture.get("message_id", "msg_fallback"),
        input_tokens_estimate=fixture.get("input_tokens_estimate", 0),
    )
    events = [event for item in fixture["upstream_events"] for event in stream.feed(item)]
    return events + stream.finish()


def test_the_required_scenarios_are_covered():
    names = {path.stem for path in FILES}
    required = {
        "text",
        "parallel_tool_calls",
        "thinking_reasoning",
        "usage_cache_tokens",
        "max_tokens_stop",
        "mid_stream_error",
        "truncated_stream",
    }
    assert required <= names


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_request_translation(path):
    fixture = load(path)
    translated = request_to_openai(fixture["client_request"], model=fixture["upstream_request"]["model"])
    assert translated == fixture["upstream_request"]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_stream_translation(path):
    fixture = load(path)
    events = replay(fixture)
    assert events == fixture["client_events"]
    assert_well_formed(events)


@pytest.mark.parametrize("path", [p for p in FILES if "upstream_response" in load(p)], ids=lambda p: p.stem)
def test_non_streaming_translation_agrees_with_the_stream(path):
    fixture = load(path)
    message = response_from_openai(
        fixture["upstream_response"],
        model=fixture["client_request"]["model"],
        message_id=fixture.get("message_id", "msg_fallback"),
    )
    assert message == fixture["client_response"]
    assert reassemble(fixture["client_events"]) == message


def sdk_client_serving(events: list[dict[str, Any]]) -> anthropic.Anthropic:
    """An anthropic SDK client whose transport answers with these events as SSE
    frames (``event:`` + ``data:``, protocols.md §3.8 rule 8), in memory."""
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    transport = httpx2.MockTransport(handler)
    return anthropic.Anthropic(
        api_key="test", base_url="http://proxy.test", max_retries=0, http_client=httpx2.Client(transport=transport)
    )


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_the_anthropic_sdk_reads_the_client_stream(path):
    events = load(path)["client_events"]
    client = sdk_client_serving(events)
    request = {"model": "qwen3-coder", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    if events[-1]["type"] == "error":
        with pytest.raises(anthropic.APIStatusError, match=events[-1]["error"]["message"][:20]):
            with client.messages.stream(**request) as stream:
                stream.get_final_message()
    else:
        with client.messages.stream(**request) as stream:
            final = stream.get_final_message().to_dict()
        final.pop("stop_details", None)
        assert final == reassemble(events)
