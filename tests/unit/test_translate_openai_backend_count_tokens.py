"""estimate_input_tokens: the count_tokens answer for non-Anthropic backends."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import ProxyError
from core.translate.count_tokens import (
    DOCUMENT_TOKENS,
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    TOOL_OVERHEAD,
    estimate_input_tokens,
)

WEATHER = {
    "name": "get_weather",
    "description": "Get weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CLAUDE_CODE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "anthropic_to_openai" / "claude_code_tool_round_trip.json"
)


def body(*messages: Any, **fields: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "messages": list(messages) or [{"role": "user", "content": "hi"}]} | fields


def test_anthropic_sdk_count_tokens_request_is_small():
    # anthropic-python 2.14 `messages.count_tokens(messages=[{"role": "user", "content": "hi"}])`
    assert estimate_input_tokens(body()) == 1 + MESSAGE_OVERHEAD


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("abcd", 1), ("abcde", 2), ("a" * 400, 100), ("日本語", 3)],  # 4 bytes of UTF-8 per token, rounded up
)
def test_text_costs_a_token_per_four_bytes(text, tokens):
    assert estimate_input_tokens(body({"role": "user", "content": text})) == tokens + MESSAGE_OVERHEAD


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        (body({"role": "user", "content": "hi"}), body({"role": "user", "content": "hi " * 50})),
        (body(), body(system="You are Claude Code, Anthropic's official CLI. " * 10)),
        (body(), body(tools=[WEATHER])),
        (body(tools=[WEATHER]), body(tools=[WEATHER, WEATHER | {"name": "get_time"}])),
        (
            body(),
            body(
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "bye"},
            ),
        ),
        (
            body(),
            body(
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hi"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    ],
                }
            ),
        ),
        (
            body({"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Read", "input": {}}]}),
            body(
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "t",
                            "name": "Read",
                            "input": {"file_path": "/tmp/clients/hello.txt"},
                        }
                    ],
                }
            ),
        ),
        (
            body({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}),
            body(
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [{"type": "text", "text": "1\thello file contents\n" * 20}],
                        }
                    ],
                }
            ),
        ),
    ],
    ids=["longer-text", "system", "a-tool", "more-tools", "more-messages", "an-image", "tool-input", "tool-result"],
)
def test_estimate_grows_with_input(smaller, larger):
    assert estimate_input_tokens(larger) > estimate_input_tokens(smaller)


def test_images_and_pdfs_have_a_fixed_cost_whatever_their_bytes():
    def with_block(block: dict[str, Any]) -> int:
        return estimate_input_tokens(body({"role": "user", "content": [block]}))

    small = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 10}}
    big = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 100_000}}
    assert with_block(small) == with_block(big) == IMAGE_TOKENS + MESSAGE_OVERHEAD
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x" * 1000}}
    assert with_block(pdf) == DOCUMENT_TOKENS + MESSAGE_OVERHEAD


def test_opaque_fields_cost_nothing():
    plain = body({"role": "assistant", "content": [{"type": "thinking", "thinking": "plan"}]})
    signed = body(
        {
            "role": "assistant",
            "content": [
                {
                    "type": "thinking",
                    "thinking": "plan",
                    "signature": "EuYB" * 200,
                    "cache_control": {"type": "ephemeral"},
                }
            ],
        }
    )
    assert estimate_input_tokens(plain) == estimate_input_tokens(signed)


def test_tool_overhead():
    without = estimate_input_tokens(body())
    one_tool = estimate_input_tokens(body(tools=[{"name": "f", "input_schema": {}}]))
    assert (
        one_tool - without == TOOL_OVERHEAD + 7
    )  # '{"input_schema":{},"name":"f"}' is 30 bytes: 8 tokens with the message's 2 bytes


def test_estimate_is_stable_and_ignores_key_order():
    request = json.loads(CLAUDE_CODE.read_text(encoding="utf-8"))["client_request"]
    reordered = copy.deepcopy(request)
    reordered["tools"] = [dict(reversed(list(t.items()))) for t in reordered["tools"]]
    first = estimate_input_tokens(request)
    assert first == estimate_input_tokens(request) == estimate_input_tokens(reordered)
    # The capture's prose is elided; what remains is schema-heavy: 3 tools, 4 messages, a system prompt.
    assert first > 3 * TOOL_OVERHEAD + 5 * MESSAGE_OVERHEAD + len(json.dumps(request["tools"])) // 8


@pytest.mark.parametrize("bad", [{"model": "m"}, {"messages": "hi"}, []])
def test_a_request_without_a_message_list_is_rejected(bad):
    with pytest.raises(ProxyError) as info:
        estimate_input_tokens(bad)
    assert info.value.status == 400
