"""Anthropic Messages response -> OpenAI ``chat.completion`` (non-streaming).

Theory of operation: one pure function walks the Anthropic ``content`` blocks
in order and sorts them into the three places an OpenAI message has room for:

* ``text`` blocks are concatenated (no separator, as LiteLLM does; the stream
  translator emits the same pieces back to back, so both paths agree);
* ``tool_use`` blocks become ``tool_calls`` with ``arguments = json.dumps(input)``;
* ``thinking`` blocks become ``message.reasoning_content`` (the de-facto field
  of DeepSeek, vLLM and LiteLLM) *and* ``message.thinking_blocks``
  (LiteLLM's field) carrying the signature, so an OpenAI client can send the
  blocks back on the next turn; Anthropic rejects a tool-use continuation whose
  thinking blocks are missing or altered (protocols.md §2.2).
  ``redacted_thinking`` only goes to ``thinking_blocks`` (it has no text).

Server-tool blocks (``server_tool_use``, ``web_search_tool_result``, ...) were
executed by Anthropic itself; they are not function calls the client must
answer, so they are skipped.  Unknown future block types are skipped too.

The stop-reason table and the usage arithmetic live here because the stream
translator (``anthropic_stream``) must give exactly the same answers.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import TranslationError

__all__ = [
    "FINISH_REASON_BY_STOP_REASON",
    "finish_reason_from_stop_reason",
    "openai_usage_from_anthropic",
    "response_from_anthropic",
]

# protocols.md §3.5 (Anthropic -> OpenAI).  LiteLLM and Portkey agree on the
# first four rows.  Where they disagree or say nothing we choose:
# * refusal -> content_filter (LiteLLM; Portkey passes the raw value through,
#   which the OpenAI SDK's Literal type does not accept);
# * pause_turn -> stop (Portkey; LiteLLM reaches the same via its default);
# * model_context_window_exceeded -> length (neither maps it; the generation was
#   cut short by a token limit, which is what "length" tells an OpenAI client).
# Anything else (a future stop reason) -> stop, LiteLLM's default.
FINISH_REASON_BY_STOP_REASON: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}

# Anthropic content blocks the OpenAI message can carry; everything else
# (server tools and their results, future types) is skipped, see the docstring.
_TEXT, _TOOL, _THINKING, _REDACTED = "text", "tool_use", "thinking", "redacted_thinking"


def finish_reason_from_stop_reason(stop_reason: Any) -> str:
    """Map an Anthropic ``stop_reason`` to an OpenAI ``finish_reason`` (§3.5)."""
    if isinstance(stop_reason, str):
        return FINISH_REASON_BY_STOP_REASON.get(stop_reason, "stop")
    return "stop"


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def openai_usage_from_anthropic(usage: Any) -> dict[str, Any]:
    """OpenAI ``usage`` from Anthropic ``usage`` (protocols.md §3.6, §6.2).

    Anthropic's ``input_tokens`` excludes cache traffic while OpenAI's
    ``prompt_tokens`` includes it, so the prompt is the sum of all three input
    counters (current LiteLLM; older LiteLLM and Portkey undercount).  Cache
    reads are OpenAI's ``cached_tokens``; cache writes go to the SDK's
    ``cache_write_tokens``.
    """
    usage = usage if isinstance(usage, dict) else {}
    cache_read = _count(usage, "cache_read_input_tokens")
    cache_write = _count(usage, "cache_creation_input_tokens")
    prompt = _count(usage, "input_tokens") + cache_read + cache_write
    completion = _count(usage, "output_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read, "cache_write_tokens": cache_write},
    }


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    tool_input = block.get("input")
    if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
        raise TranslationError("Anthropic tool_use block without a string id and name")
    if not isinstance(tool_input, dict):
        raise TranslationError(f"Anthropic tool_use block {block['id']} has a non-object input")
    return {
        "id": block["id"],
        "type": "function",
        "function": {"name": block["name"], "arguments": json.dumps(tool_input, ensure_ascii=False)},
    }


def _thinking_block(block: dict[str, Any]) -> dict[str, Any]:
    if block["type"] == _REDACTED:
        return {"type": _REDACTED, "data": block.get("data", "")}
    return {"type": _THINKING, "thinking": block.get("thinking", ""), "signature": block.get("signature", "")}


def _message_from_content(content: list[Any]) -> dict[str, Any]:
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            raise TranslationError("Anthropic content block is not an object")
        kind = block.get("type")
        if kind == _TEXT:
            texts.append(block.get("text") or "")
        elif kind == _TOOL:
            tool_calls.append(_tool_call(block))
        elif kind in (_THINKING, _REDACTED):
            thinking.append(_thinking_block(block))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    reasoning = "".join(block.get("thinking", "") for block in thinking)
    if reasoning:  # omitted-display thinking has a signature but no text
        message["reasoning_content"] = reasoning
    if thinking:
        message["thinking_blocks"] = thinking
    return message


def response_from_anthropic(body: dict[str, Any], *, model: str, created: int) -> dict[str, Any]:
    """Translate an Anthropic ``message`` (2xx body) into an OpenAI ``chat.completion``.

    `model` is the name the client asked for; `created` is the adapter's clock
    reading (Anthropic responses carry no timestamp).
    """
    if not isinstance(body, dict) or body.get("type", "message") != "message":
        raise TranslationError("Anthropic response is not a message object")
    content = body.get("content")
    if not isinstance(content, list):
        raise TranslationError("Anthropic message has no content list")
    message_id = body.get("id")
    return {
        "id": f"chatcmpl-{message_id}" if isinstance(message_id, str) and message_id else "chatcmpl-anthropic",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": _message_from_content(content),
                "logprobs": None,
                "finish_reason": finish_reason_from_stop_reason(body.get("stop_reason")),
            }
        ],
        "usage": openai_usage_from_anthropic(body.get("usage")),
    }
