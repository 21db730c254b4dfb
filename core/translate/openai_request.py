"""Anthropic Messages request -> OpenAI Chat Completions request.

Theory of operation: one pure function, `request_to_openai`, walks the Anthropic
request once and builds the OpenAI request an OpenAI-compatible backend (OpenAI,
vLLM, DeepSeek, Ollama `/v1`, ...) understands.  OpenAI Chat Completions is the
pivot protocol of the proxy, so the result is also what the OpenAI -> Ollama
translator receives when an Anthropic client talks to an Ollama backend.

Messages (protocols.md §3.1, §3.2, §3.4):

* Top-level `system` -> one `system` message first; `role: "system"` entries in
  `messages` and `mid_conv_system` blocks -> `system` messages at that position
  (a `mid_conv_system` block inside an assistant turn goes just before it, so the
  assistant's tool calls stay adjacent to their results).  System text blocks
  are joined into one string: several OpenAI-compatible servers accept only
  string content for system messages.
* User text / image / document blocks -> content parts; string content stays
  a string (the block-level rules live in `openai_content`).
* Each user `tool_result` -> one `{"role": "tool"}` message, all of them BEFORE
  the rest of that turn, which follows as one user message: OpenAI requires
  tool messages right after the assistant message that made the calls.
* Assistant text -> `content` (joined; null when the turn only calls tools),
  `tool_use` -> `tool_calls` (arguments = the input as a JSON string), thinking
  -> `reasoning_content` (joined text) plus LiteLLM-style `thinking_blocks`
  carrying signatures so an OpenAI -> Anthropic hop can restore them.
* Text blocks are joined with `TEXT_JOINER` ("\\n"); empty ones are skipped.

Parameters: `max_tokens`, `stop_sequences` -> `stop`, `temperature`, `top_p`,
`tools` (`input_schema` -> `parameters`), every `tool_choice` form
(`disable_parallel_tool_use` -> `parallel_tool_calls: false`), `thinking` and
`output_config.effort` -> `reasoning_effort` (`effort_for_budget`),
`output_config.format` -> `response_format`, `metadata.user_id` -> `user`,
`stream: true` -> `stream` + `stream_options.include_usage` (protocols.md §3.6:
otherwise the usage never arrives).

Dropped, because an OpenAI backend cannot express them and no answer depends on
them: `top_k` (OpenAI has none), `cache_control` everywhere (OpenAI caches
prompts automatically), `thinking.display`, `context_management`,
`service_tier`, `inference_geo`, unknown top-level fields.  Dropped because only
Anthropic can run them: server tools (any tool with a versioned `type`, e.g.
`web_search_20250305`, `bash_20250124`), `mcp_servers`, `container`; the model
answers without them.

Rejected with 400 (their loss would silently change the answer): roles other
than user/assistant/system, unknown content block types, images or documents
the backend cannot fetch (file ids, document URLs), a `tool_choice` that forces
a tool the request does not define (or only defines as a dropped server tool),
and malformed fields.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from core.translate.openai_content import (
    CAN_SEND,
    CANNOT_SEND,
    TEXT_JOINER,
    block_list,
    invalid_request,
    system_messages,
    text_of,
    tool_message,
    user_parts,
)
from core.translate.openai_response import RAW_ARGUMENTS_KEY

__all__ = ["effort_for_budget", "request_to_openai"]

# Anthropic `thinking.budget_tokens` -> OpenAI `reasoning_effort` (protocols.md
# §3.7, §7.10).  LiteLLM (1024/2048/4096 buckets) and CCR (<=1024 low, <=8192
# medium, else high) DISAGREE; we follow CCR, because Claude Code's budgets
# (31999 by default) would all read as "high" under either, while CCR keeps
# mid-sized budgets at "medium" instead of jumping to "high" at 4097.
_EFFORT_BUDGETS = ((1024, "low"), (8192, "medium"))

# Anthropic `output_config.effort` -> `reasoning_effort` (protocols.md §2.2,
# §7.11).  xhigh/max exist only in the 2026 OpenAI SDK and not on most
# OpenAI-compatible servers, so they are clamped to "high".
_EFFORT_LEVELS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}

# OpenAI rejects a `user` longer than 64 characters (Bifrost's
# MaxUserFieldLength); Claude Code's user_id is a ~150-character JSON string.
_MAX_USER_LENGTH = 64


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def effort_for_budget(budget: int) -> str:
    """OpenAI reasoning effort for an Anthropic thinking budget (CCR thresholds)."""
    for ceiling, effort in _EFFORT_BUDGETS:
        if budget <= ceiling:
            return effort
    return "high"


# -- turns ------------------------------------------------------------------------------------


def _user_turn(content: Any, where: str) -> list[dict[str, Any]]:
    """A user turn -> its tool messages first, then user/system messages in order."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tools: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(block_list(content, f"{where}.content")):
        bwhere = f"{where}.content.{j}"
        if block.get("type") == "tool_result":
            tools.append(tool_message(block, bwhere))
        elif block.get("type") == "mid_conv_system":
            rest += [{"role": "user", "content": parts}] if parts else []
            rest += system_messages(block.get("content"), f"{bwhere}.content")
            parts = []
        else:
            parts += user_parts(block, bwhere)
    rest += [{"role": "user", "content": parts}] if parts else []
    return tools + rest


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, name, tool_input = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise invalid_request(f"{where}.id", "must be a non-empty string")
    if not isinstance(name, str) or not name:
        raise invalid_request(f"{where}.name", "must be a non-empty string")
    if not isinstance(tool_input, dict):
        raise invalid_request(f"{where}.input", "must be an object")
    raw = tool_input.get(RAW_ARGUMENTS_KEY)
    if len(tool_input) == 1 and isinstance(raw, str):  # unparsable arguments we kept: send them back as they were
        arguments = raw
    else:
        arguments = json.dumps(tool_input, ensure_ascii=False, separators=(",", ":"))
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


class _AssistantTurn:
    """Collects one assistant turn's blocks into an OpenAI assistant message."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.reasoning: list[str] = []
        self.kept: list[dict[str, Any]] = []  # thinking blocks with signatures, LiteLLM-style
        self.systems: list[dict[str, Any]] = []

    def add(self, block: dict[str, Any], where: str) -> None:
        kind = block.get("type")
        if kind == "text":
            self.texts += [t for t in [text_of(block, where)] if t]
        elif kind == "tool_use":
            self.calls.append(_tool_call(block, where))
        elif kind == "thinking":
            thinking = block.get("thinking") if isinstance(block.get("thinking"), str) else ""
            self.reasoning += [thinking] if thinking else []
            self.kept.append({"type": "thinking", "thinking": thinking, "signature": block.get("signature") or ""})
        elif kind == "redacted_thinking":
            self.kept.append({"type": "redacted_thinking", "data": block.get("data") or ""})
        elif kind == "mid_conv_system":
            self.systems += system_messages(block.get("content"), f"{where}.content")
        else:
            raise invalid_request(f"{where}.type", f"a {kind!r} block in an assistant turn {CANNOT_SEND}")

    def messages(self) -> list[dict[str, Any]]:
        content = TEXT_JOINER.join(self.texts) if self.texts or not self.calls else None
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.reasoning:
            message["reasoning_content"] = TEXT_JOINER.join(self.reasoning)
        if self.kept:
            message["thinking_blocks"] = self.kept
        if self.calls:
            message["tool_calls"] = self.calls
        return [*self.systems, message]


def _assistant_turn(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "assistant", "content": content}]
    turn = _AssistantTurn()
    for j, block in enumerate(block_list(content, f"{where}.content")):
        turn.add(block, f"{where}.content.{j}")
    return turn.messages()


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise invalid_request("messages", "must be a list of message objects")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role == "user":
            out += _user_turn(content, f"messages.{i}")
        elif role == "assistant":
            out += _assistant_turn(content, f"messages.{i}")
        elif role == "system":
            out += system_messages(content, f"messages.{i}.content")
        else:
            expected = "expected 'user', 'assistant' or 'system'"
            raise invalid_request(f"messages.{i}.role", f"unsupported role {role!r}; {expected}")
    return out


# -- parameters -------------------------------------------------------------------------------


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise invalid_request("tools", "must be a list of tool objects")
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") not in (None, "custom"):
            continue  # a server tool only Anthropic can run (module docstring)
        name, schema = tool.get("name"), tool.get("input_schema", {"type": "object", "properties": {}})
        if not isinstance(name, str) or not name:
            raise invalid_request(f"tools.{i}.name", "must be a non-empty string")
        if not isinstance(schema, dict):
            raise invalid_request(f"tools.{i}.input_schema", "must be a JSON Schema object")
        function: dict[str, Any] = {"name": name}
        if isinstance(tool.get("description"), str) and tool["description"]:
            function["description"] = tool["description"]
        function["parameters"] = schema
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


# Anthropic tool_choice type -> OpenAI tool_choice (protocols.md §3.3).
_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}


def _tool_choice(choice: Any, names: set[str]) -> dict[str, Any]:
    if choice is None:
        return {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "none", "tool"):
        raise invalid_request("tool_choice.type", "must be one of 'auto', 'any', 'tool', 'none'")
    if not names:  # OpenAI rejects tool_choice without tools
        if kind in ("any", "tool"):
            raise invalid_request("tool_choice", f"forces a tool call, but none of the request's tools {CAN_SEND}")
        return {}
    out: dict[str, Any] = {}
    if kind == "tool":
        if choice.get("name") not in names:
            raise invalid_request("tool_choice.name", "must name one of the request's tools")
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        out["tool_choice"] = _TOOL_CHOICE[kind]
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False
    return out


def _reasoning_effort(body: dict[str, Any]) -> str | None:
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    if effort is not None:
        if effort not in _EFFORT_LEVELS:
            raise invalid_request("output_config.effort", f"must be one of {', '.join(_EFFORT_LEVELS)}")
        return _EFFORT_LEVELS[effort]
    thinking = body.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        return effort_for_budget(budget) if isinstance(budget, int) and not isinstance(budget, bool) else "medium"
    return "medium" if kind == "adaptive" else None  # adaptive -> medium, as LiteLLM (§3.7)


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    fmt = fmt if fmt is not None else body.get("output_format")  # LiteLLM's legacy spelling
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise invalid_request("output_config.format", "must be {'type': 'json_schema', 'schema': {...}}")
    # No "strict": OpenAI's strict mode rejects schemas with optional properties,
    # which Anthropic accepts; the schema is still enforced by servers that do
    # guided decoding (vLLM, Ollama) and followed by OpenAI models.
    return {"type": "json_schema", "json_schema": {"name": "structured_output", "schema": fmt["schema"]}}


def _user(metadata: Any) -> str | None:
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(user_id, str) or not user_id:
        return None
    if len(user_id) <= _MAX_USER_LENGTH:
        return user_id
    return hashlib.sha256(user_id.encode()).hexdigest()  # 64 hex digits, stable per user


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
            raise invalid_request("max_tokens", "must be a non-negative integer")
        out["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            if not _is_number(body[name]):
                raise invalid_request(name, "must be a number")
            out[name] = body[name]
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise invalid_request("stop_sequences", "must be a list of strings")
        if stops:
            out["stop"] = list(stops)
    return out


def _stream(stream: Any) -> dict[str, Any]:
    if stream is not None and not isinstance(stream, bool):
        raise invalid_request("stream", "must be a boolean")
    # Without include_usage an OpenAI stream carries no usage at all (protocols.md §3.6).
    return {"stream": True, "stream_options": {"include_usage": True}} if stream else {}


def request_to_openai(body: dict[str, Any], *, model: str) -> dict[str, Any]:
    """Translate an Anthropic Messages request into an OpenAI chat request for `model`.

    Raises ProxyError(400, type="invalid_request_error") on client input that is
    malformed or that an OpenAI-compatible backend cannot serve faithfully.
    """
    if not isinstance(body, dict):
        raise invalid_request("body", "must be a JSON object")
    system = system_messages(body["system"], "system") if body.get("system") is not None else []
    out: dict[str, Any] = {"model": model, "messages": system + _messages(body.get("messages"))}
    out.update(_sampling(body))
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
    out.update(_tool_choice(body.get("tool_choice"), {t["function"]["name"] for t in tools}))
    optional = {
        "reasoning_effort": _reasoning_effort(body),
        "response_format": _response_format(body),
        "user": _user(body.get("metadata")),
    }
    out.update({key: value for key, value in optional.items() if value is not None})
    return out | _stream(body.get("stream"))
