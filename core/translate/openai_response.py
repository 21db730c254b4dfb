"""OpenAI chat.completion -> Anthropic message (non-streaming), plus the mappings
the streaming translator shares with it.

Theory of operation: an Anthropic client (Claude Code, the anthropic SDK) is
served by an OpenAI-compatible upstream.  The upstream answers with one choice
whose message carries optional reasoning text, optional text and optional tool
calls; the client expects content blocks in the order thinking, text, tool_use
(protocols.md §3.4 "Response direction"), a `stop_reason` and Anthropic usage.
Everything that both the non-streaming and the streaming translation must agree
on (stop reason, usage, message and tool ids, tool input parsing) lives here, so
that a stream reassembles to exactly what the non-streaming translation gives.

Choices made where the peers disagree or the protocols leave a gap:

* `content_filter` -> `refusal` (protocols.md §3.5 / §7.3: CCR says
  `stop_sequence`, LiteLLM and Portkey `end_turn`).  `refusal` is the only
  Anthropic reason that tells the client the model declined; `end_turn` would
  present a filtered answer as complete.
* Tool calls present -> `tool_use`, even if the upstream said `stop` (Ollama
  `/v1` and other servers do) - except `length`: a call cut by the token limit
  has truncated arguments and Anthropic itself reports `max_tokens` then.
* `stop` -> `end_turn` always: OpenAI strips the matched stop sequence and does
  not say which one matched, so `stop_sequence` cannot be reported honestly.
* finish_reason `error` (OpenRouter's mid-generation failure) is a failure, not
  a stop.
* Unparsable tool arguments are kept as the raw string under `RAW_ARGUMENTS_KEY`
  (CCR substitutes `{"text": raw}`, which collides with real parameters named
  `text`); `request_to_openai` sends such an input back as the raw string.
"""

from __future__ import annotations

import json
import re
from typing import Any

from core.errors import ProxyError, TranslationError, error_from_openai_body

__all__ = [
    "FINISH_TO_STOP_REASON",
    "RAW_ARGUMENTS_KEY",
    "anthropic_message_id",
    "response_from_openai",
    "stop_reason_for",
    "synthesize_tool_id",
    "tool_input_from_arguments",
    "upstream_error",
    "usage_from_openai",
]

# OpenAI finish_reason -> Anthropic stop_reason (protocols.md §3.5, OpenAI ->
# Anthropic table).  Where peers disagree (content_filter) we follow none of
# them exactly: see the module docstring.  Unknown or null reasons -> end_turn,
# as LiteLLM, CCR and Portkey all do.
FINISH_TO_STOP_REASON: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# Where an unparsable `function.arguments` string is kept in `tool_use.input`.
RAW_ARGUMENTS_KEY = "_raw_arguments"

_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def anthropic_message_id(upstream_id: Any, fallback: str) -> str:
    """`msg_` + the upstream id when it has one, else the adapter's fallback."""
    if isinstance(upstream_id, str) and upstream_id:
        return upstream_id if upstream_id.startswith("msg_") else "msg_" + upstream_id
    return fallback


def synthesize_tool_id(message_id: str, index: int) -> str:
    """A deterministic tool_use id for a call the upstream sent without one.

    Anthropic ids must match ``^[a-zA-Z0-9_-]+$`` (protocols.md §2.2), so any
    other character of the message id is replaced.
    """
    return f"toolu_{_ID_UNSAFE.sub('_', message_id)}_{index}"


def tool_input_from_arguments(arguments: Any) -> dict[str, Any]:
    """OpenAI `function.arguments` (a JSON string) -> Anthropic `tool_use.input`.

    Empty -> ``{}`` (protocols.md §8).  Anything that is not a JSON object is
    kept raw under `RAW_ARGUMENTS_KEY` instead of failing the whole response.
    """
    if isinstance(arguments, dict):  # some servers send the object itself
        return arguments
    if arguments is None or arguments == "":
        return {}
    if not isinstance(arguments, str):
        return {RAW_ARGUMENTS_KEY: json.dumps(arguments)}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return {RAW_ARGUMENTS_KEY: arguments}
    return parsed if isinstance(parsed, dict) else {RAW_ARGUMENTS_KEY: arguments}


def stop_reason_for(finish_reason: Any, *, tool_calls: bool, refusal: bool) -> str:
    """Anthropic stop_reason for an OpenAI finish_reason (module docstring)."""
    if finish_reason == "length":
        return "max_tokens"
    if tool_calls:
        return "tool_use"
    if refusal:
        return "refusal"
    return FINISH_TO_STOP_REASON.get(finish_reason, "end_turn")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_openai(usage: Any) -> dict[str, int]:
    """OpenAI usage -> Anthropic usage (protocols.md §3.6, §6.2).

    `prompt_tokens` includes cached tokens while Anthropic's `input_tokens`
    excludes them, so cache reads and writes are subtracted.  Cache reads come
    from `prompt_tokens_details.cached_tokens` (OpenAI) or DeepSeek's
    `prompt_cache_hit_tokens`; cache writes from `cache_write_tokens` (2026
    OpenAI SDK) or LiteLLM's `cache_creation_tokens` / `cache_creation_input_tokens`.
    """
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    prompt = _count(usage.get("prompt_tokens"))
    cache_read = _count(details.get("cached_tokens")) or _count(usage.get("prompt_cache_hit_tokens"))
    cache_write = (
        _count(details.get("cache_write_tokens"))
        or _count(details.get("cache_creation_tokens"))
        or _count(usage.get("cache_creation_input_tokens"))
    )
    return {
        "input_tokens": max(prompt - cache_read - cache_write, 0),
        "output_tokens": _count(usage.get("completion_tokens")),
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
    }


# The HTTP status an error type is normally sent with (protocols.md §1.5,
# §2.5): an error that arrives inside a 2xx body or a stream has no status of
# its own, and the status decides whether the client's SDK retries.  OpenAI's
# rate-limit bodies use the types "requests" / "tokens".
_STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "requests": 429,
    "tokens": 429,
    "server_error": 500,
    "api_error": 500,
    "overloaded_error": 529,
}


def upstream_error(body: dict[str, Any]) -> ProxyError:
    """A ProxyError for an error object received after a 2xx status.

    The type is kept; the status follows from it (502 when unknown).
    """
    err = error_from_openai_body(502, body)
    err.status = _STATUS_BY_ERROR_TYPE.get(err.type or "", 502)
    return err


def _text_of(content: Any, where: str) -> str:
    """Message content (string, null or a list of text/refusal parts) -> text."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise TranslationError(f"upstream {where} is neither a string nor a list of parts")
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise TranslationError(f"upstream {where} has a part that is not text")
        texts.append(part.get("text") or part.get("refusal") or "")
    return "".join(texts)


def _thinking_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Thinking blocks: LiteLLM-style `thinking_blocks` (signatures kept) or
    plain `reasoning_content` / `reasoning` text (protocols.md §1.4)."""
    kept = message.get("thinking_blocks")
    if isinstance(kept, list) and kept:
        blocks = []
        for block in kept:
            if isinstance(block, dict) and block.get("type") == "redacted_thinking":
                blocks.append({"type": "redacted_thinking", "data": block.get("data") or ""})
            elif isinstance(block, dict) and block.get("type") == "thinking":
                thinking, signature = block.get("thinking") or "", block.get("signature") or ""
                blocks.append({"type": "thinking", "thinking": thinking, "signature": signature})
        if blocks:
            return blocks
    text = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(text, str) and text:
        return [{"type": "thinking", "thinking": text, "signature": ""}]
    return []


def _tool_calls_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = message.get("tool_calls")
    if calls is None:
        legacy = message.get("function_call")  # deprecated single-call form
        calls = [{"function": legacy}] if isinstance(legacy, dict) else []
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise TranslationError("upstream message.tool_calls is not a list of objects")
    return calls


def _tool_use_block(call: dict[str, Any], position: int, message_id: str) -> dict[str, Any]:
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise TranslationError(f"upstream tool call {position} has no function name")
    call_id = call.get("id")
    return {
        "type": "tool_use",
        "id": call_id if isinstance(call_id, str) and call_id else synthesize_tool_id(message_id, position),
        "name": function["name"],
        "input": tool_input_from_arguments(function.get("arguments")),
    }


def _first_choice(body: dict[str, Any]) -> dict[str, Any]:
    if body.get("error"):
        raise upstream_error(body)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TranslationError("upstream chat.completion has no choices")
    choice = choices[0]
    if choice.get("finish_reason") == "error":
        raise TranslationError("upstream reported finish_reason 'error'")
    if not isinstance(choice.get("message"), dict):
        raise TranslationError("upstream choice has no message object")
    return choice


def response_from_openai(body: dict[str, Any], *, model: str, message_id: str) -> dict[str, Any]:
    """Translate an upstream `chat.completion` into an Anthropic `message`.

    `model` is the model name the client asked for; `message_id` is used when
    the upstream body has no id.  Raises TranslationError (502) on a body that
    is not a completion, or the upstream's error when it sent one with 2xx.
    """
    if not isinstance(body, dict):
        raise TranslationError("upstream response is not a JSON object")
    choice = _first_choice(body)
    message = choice["message"]
    msg_id = anthropic_message_id(body.get("id"), message_id)
    text = _text_of(message.get("content"), "message.content")
    refusal = message.get("refusal") if isinstance(message.get("refusal"), str) else ""
    calls = _tool_calls_of(message)
    content = _thinking_blocks(message)
    if text + refusal:
        content.append({"type": "text", "text": text + refusal})
    content.extend(_tool_use_block(call, i, msg_id) for i, call in enumerate(calls))
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason_for(choice.get("finish_reason"), tool_calls=bool(calls), refusal=bool(refusal)),
        "stop_sequence": None,
        "usage": usage_from_openai(body.get("usage")),
    }
