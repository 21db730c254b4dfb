"""The `mock` backend: deterministic OpenAI-shaped replies, computed in-process.

It lets a newcomer run the proxy with no keys and lets tests exercise every
client path without a network.  The reply is a pure function of the request:

* with tools offered and ``tool_choice`` forcing a call (``"required"`` or a named
  function), it calls that tool (or the first one) with arguments built from the
  schema's required properties;
* otherwise it answers ``"Mock reply to: <last user text>"``.

Usage is counted in whitespace-separated words, which is deterministic and
close enough for a mock.  Replies are OpenAI Chat Completions shapes; Anthropic
clients get them through the same OpenAI->Anthropic translators as any
OpenAI-compatible backend, so the mock exercises those too.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ProxyError

__all__ = ["mock_completion", "mock_stream"]

_PLACEHOLDER_BY_TYPE: dict[str, Any] = {
    "string": "mock",
    "integer": 1,
    "number": 1.0,
    "boolean": True,
    "array": [],
    "object": {},
}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = body.get("tool_choice")
    if not tools or choice in (None, "auto", "none"):
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        for tool in tools:
            if tool["function"].get("name") == wanted:
                return tool["function"]
        raise ProxyError(400, f"tool_choice names unknown function {wanted!r}", param="tool_choice")
    return tools[0]["function"]


def _arguments_for(function: dict[str, Any]) -> str:
    schema = function.get("parameters") or {}
    properties = schema.get("properties") or {}
    args = {
        name: _PLACEHOLDER_BY_TYPE.get((properties.get(name) or {}).get("type"), "mock")
        for name in schema.get("required") or []
    }
    return json.dumps(args, separators=(",", ":"))


def _count(text: str) -> int:
    return len(text.split())


def _usage(body: dict[str, Any], output: str) -> dict[str, Any]:
    prompt = sum(_count(_text_of(m.get("content"))) for m in body.get("messages") or [] if isinstance(m, dict))
    completion = max(_count(output), 1)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _validate(body: dict[str, Any]) -> list[Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProxyError(400, "'messages' must be a non-empty array", param="messages")
    return messages


def mock_completion(body: dict[str, Any], *, model: str, created: int, completion_id: str) -> dict[str, Any]:
    """The non-streaming reply: a complete ``chat.completion``."""
    messages = _validate(body)
    tool = _forced_tool(body)
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    if tool is not None:
        arguments = _arguments_for(tool)
        call = {"id": f"call_{completion_id}_0", "type": "function",
                "function": {"name": tool.get("name", ""), "arguments": arguments}}
        message["tool_calls"] = [call]
        finish, output = "tool_calls", arguments
    else:
        output = f"Mock reply to: {_last_user_text(messages)}"
        message["content"] = output
        finish = "stop"
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(body, output),
    }


def _chunk(base: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def mock_stream(body: dict[str, Any], *, model: str, created: int, completion_id: str) -> list[Any]:
    """The streaming reply: ``chat.completion.chunk`` dicts then ``"[DONE]"``.

    Text comes one word per chunk (so clients really see several deltas); a tool
    call comes as id+name first, then its arguments in two fragments.  The usage
    chunk is included when ``stream_options.include_usage`` asks for it.
    """
    whole = mock_completion(body, model=model, created=created, completion_id=completion_id)
    message = whole["choices"][0]["message"]
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_mock"}
    out: list[Any] = [_chunk(base, {"role": "assistant", "content": ""})]
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        args = call["function"]["arguments"]
        half = len(args) // 2
        head = {"index": 0, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}
        out.append(_chunk(base, {"tool_calls": [head]}))
        for piece in (args[:half], args[half:]):
            out.append(_chunk(base, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    else:
        words = message["content"].split(" ")
        for i, word in enumerate(words):
            out.append(_chunk(base, {"content": word if i == 0 else " " + word}))
    out.append(_chunk(base, {}, whole["choices"][0]["finish_reason"]))
    if (body.get("stream_options") or {}).get("include_usage"):
        out.append({**base, "choices": [], "usage": whole["usage"]})
    out.append("[DONE]")
    return out
