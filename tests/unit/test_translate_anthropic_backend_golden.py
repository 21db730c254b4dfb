"""Replay every golden transcript in tests/fixtures/openai_to_anthropic/.

Each file is one scenario of an OpenAI client on an Anthropic backend: the
client's request, the Anthropic request we must send, the Anthropic SSE events
(parsed ``data:`` JSON) and the OpenAI chunks the client must receive, and
optionally a non-streaming response pair.  Adding a file adds a test.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from core.translate.anthropic_backend import AnthropicToOpenAIStream, request_to_anthropic, response_from_anthropic

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "openai_to_anthropic"
FIXTURES = sorted(FIXTURE_DIR.glob("*.json"))

# What the adapter would pass; the fixtures were written against these values.
DEFAULT_MAX_TOKENS = 4096
CREATED = 1732600000
FALLBACK_ID = "chatcmpl-fallback"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _replay_stream(fixture: dict[str, Any]) -> list[Any]:
    request = fixture["client_request"]
    stream = AnthropicToOpenAIStream(
        model=request["model"],
        created=CREATED,
        message_id=FALLBACK_ID,
        include_usage=bool((request.get("stream_options") or {}).get("include_usage")),
    )
    out: list[Any] = []
    for event in copy.deepcopy(fixture["upstream_events"]):
        out += stream.feed(event)
    return out + stream.finish()


def test_fixture_directory_covers_the_required_scenarios() -> None:
    names = {path.stem for path in FIXTURES}
    assert {"text_with_usage", "parallel_tool_calls", "thinking_tool_round_trip", "usage_with_cache_tokens"} <= names
    assert {"max_tokens_stop", "mid_stream_error", "truncated_stream"} <= names


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_request_translation(path: Path) -> None:
    fixture = _load(path)
    upstream = fixture["upstream_request"]
    got = request_to_anthropic(
        copy.deepcopy(fixture["client_request"]), model=upstream["model"], default_max_tokens=DEFAULT_MAX_TOKENS
    )
    assert got == upstream


@pytest.mark.parametrize("path", [p for p in FIXTURES if "upstream_events" in _load(p)], ids=lambda p: p.stem)
def test_stream_translation(path: Path) -> None:
    fixture = _load(path)
    assert _replay_stream(fixture) == fixture["client_events"]


@pytest.mark.parametrize("path", [p for p in FIXTURES if "upstream_events" in _load(p)], ids=lambda p: p.stem)
def test_stream_is_what_the_openai_sdk_accepts(path: Path) -> None:
    """Every chunk validates as the SDK's type; a completed stream ends in [DONE]
    and accumulates with the SDK's own helper; a failed one ends in one error chunk."""
    events = _load(path)["client_events"]
    state = ChatCompletionStreamState()
    for item in events[:-1]:
        assert isinstance(item, dict) and "error" not in item
        chunk = ChatCompletionChunk.model_validate(item)
        assert (chunk.id, chunk.object, chunk.created) == (item["id"], "chat.completion.chunk", CREATED)
        assert all(choice.index == 0 for choice in chunk.choices)
        list(state.handle_chunk(chunk))  # run the SDK's event builder too
    if events[-1] == "[DONE]":
        assert state.current_completion_snapshot.choices[0].finish_reason is not None
    else:
        assert set(events[-1]) == {"error"}
        assert set(events[-1]["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("path", [p for p in FIXTURES if "upstream_response" in _load(p)], ids=lambda p: p.stem)
def test_response_translation(path: Path) -> None:
    fixture = _load(path)
    model = fixture["client_request"]["model"]
    got = response_from_anthropic(copy.deepcopy(fixture["upstream_response"]), model=model, created=CREATED)
    assert got == fixture["client_response"]
    ChatCompletion.model_validate(got)


@pytest.mark.parametrize(
    "path",
    [p for p in FIXTURES if {"upstream_response", "upstream_events"} <= set(_load(p))],
    ids=lambda p: p.stem,
)
def test_stream_and_response_fixtures_tell_the_same_story(path: Path) -> None:
    """The stream, reassembled by the openai SDK, gives the non-streaming answer."""
    fixture = _load(path)
    state = ChatCompletionStreamState()
    for item in fixture["client_events"][:-1]:
        list(state.handle_chunk(ChatCompletionChunk.model_validate(item)))
    streamed = state.current_completion_snapshot.choices[0]
    expected = fixture["client_response"]["choices"][0]
    assert streamed.finish_reason == expected["finish_reason"]
    assert (streamed.message.content or None) == expected["message"]["content"]
    calls = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in streamed.message.tool_calls or []]
    want = [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in expected["message"].get("tool_calls", [])
    ]
    assert calls == want
