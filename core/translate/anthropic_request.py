"""OpenAI Chat Completions request -> Anthropic Messages request.

Theory of operation
-------------------
`request_to_anthropic` is a pure function of the client's parsed JSON body.
It validates as it translates: anything it cannot express faithfully is a 400
``invalid_request_error`` naming the offending field, raised before any upstream
traffic.  The work splits in three:

1. **Messages** (`_Conversation`).  ``system`` and ``developer`` messages, wherever
   they appear, become top-level ``system`` text blocks in order (empty ones
   skipped; protocols.md §3.1).  ``user`` and ``tool`` messages become ``user``
   turns, ``assistant`` messages ``assistant`` turns; consecutive turns of the
   same role are merged into one, and in a merged user turn every
   ``tool_result`` block comes first, because Anthropic requires the results of
   a ``tool_use`` turn at the beginning of the next message (§2.2, §3.4;
   LiteLLM's behaviour, not Portkey's one-message-per-result).  An assistant
   turn starts with its ``thinking_blocks``, even when merged messages put them
   later (Anthropic rejects a tool-use continuation whose thinking is missing
   or moved), then its text, then one
   ``tool_use`` per tool call with the JSON-string arguments parsed into an
   object.  A trailing assistant prefill is right-stripped (Anthropic rejects
   trailing whitespace there).  Tool-call ids are sanitised to
   ``^[a-zA-Z0-9_-]+$`` by a deterministic function, so a ``tool_use`` and its
   ``tool_result`` always agree.
   Content parts (text, images, files) are converted by ``anthropic_content``.
2. **Tools** (``anthropic_tools.tools_and_choice``): function tools, every
   ``tool_choice`` form, ``parallel_tool_calls: false``.
3. **Parameters**: max tokens, sampling, stop sequences, user, reasoning effort,
   structured output.

``reasoning_effort`` becomes ``thinking: {"type": "enabled", "budget_tokens": N}``
(`THINKING_BUDGET_BY_EFFORT`).  To keep such a request valid: ``max_tokens`` is
raised by the budget when it is not above it (so the client's allowance still
covers the answer), ``temperature`` and ``top_k`` are dropped and ``top_p``
below 0.95 too (Anthropic rejects them with thinking), and thinking is not
enabled at all when ``tool_choice`` forces a tool (Anthropic rejects that
combination; the forced call is what the client's code relies on).

Dropped on purpose (they only tune sampling, storage or routing on OpenAI's
side, and nothing in the reply a client reads depends on them): ``seed``,
``frequency_penalty``, ``presence_penalty``, ``logit_bias``, ``prediction``,
``service_tier``, ``store``, ``metadata``, ``prompt_cache_key``,
``prompt_cache_retention``, ``verbosity``, ``stream_options`` (Anthropic
streams always carry usage), message ``name`` fields, ``image_url.detail``,
``response_format: {"type": "json_object"}`` (Anthropic has no schema-less
JSON mode; OpenAI already requires such prompts to ask for JSON), assistant
``reasoning_content`` without signed ``thinking_blocks`` and thinking blocks
without a signature (Anthropic verifies signatures and rejects unsigned
thinking), and any field this module does not know.

Rejected with 400, because dropping them would silently change what the client
gets: ``n > 1``, ``logprobs``/``top_logprobs``, audio output, the deprecated
``functions``/``function_call``, ``web_search_options``, ``custom`` tools,
``input_audio`` parts, ``file_id`` references, invalid tool-call arguments.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import attrs

from ..errors import ProxyError
from .anthropic_content import ASSISTANT_PARTS, SYSTEM_PARTS, TOOL_PARTS, USER_PARTS, content_blocks
from .anthropic_tools import tools_and_choice

__all__ = [
    "ANTHROPIC_MIN_THINKING_BUDGET",
    "THINKING_BUDGET_BY_EFFORT",
    "request_to_anthropic",
    "sanitize_tool_id",
]

# reasoning_effort -> thinking.budget_tokens (protocols.md §3.7, §7.10).  We
# follow LiteLLM's constants (low 1024, medium 2048, high 4096, xhigh 8192,
# max 16384) rather than CCR's reverse thresholds, because LiteLLM's are the
# budgets OpenAI-SDK users of Claude already get.  "minimal" is floored at
# Anthropic's minimum budget of 1024 (LiteLLM's 128 was rejected by the API and
# LiteLLM later floored it too).  "none" means no thinking.
ANTHROPIC_MIN_THINKING_BUDGET = 1024
THINKING_BUDGET_BY_EFFORT: dict[str, int] = {
    "minimal": ANTHROPIC_MIN_THINKING_BUDGET,
    "low": 1024,
    "medium": 2048,
    "high": 4096,
    "xhigh": 8192,
    "max": 16384,
}

# OpenAI's temperature range is 0-2, Anthropic's 0-1 (§3.7): higher values are
# clamped to 1.0 (Portkey's config does the same) rather than rejected.
_MAX_TEMPERATURE = 1.0
# With extended thinking Anthropic only accepts top_p in [0.95, 1] and rejects a
# non-default temperature or top_k (§2.2), so those are dropped when thinking is on.
_MIN_TOP_P_WITH_THINKING = 0.95

_SYSTEM_ROLES = frozenset({"system", "developer"})
_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")

# Request fields whose loss would change the reply the client gets.
_UNSUPPORTED: dict[str, str] = {
    "functions": "the deprecated 'functions' field is not supported; use 'tools'",
    "function_call": "the deprecated 'function_call' field is not supported; use 'tool_choice'",
    "web_search_options": "'web_search_options' is not supported by Anthropic backends",
    "audio": "audio output is not supported by Anthropic backends",
    "top_logprobs": "'top_logprobs' is not supported by Anthropic backends",
}


def _invalid(message: str, param: str | None = None) -> ProxyError:
    return ProxyError(400, message, type="invalid_request_error", param=param)


def sanitize_tool_id(raw: str) -> str:
    """A tool-call id Anthropic accepts (``^[a-zA-Z0-9_-]+$``, protocols.md §2.2).

    Valid ids are kept; others get their bad characters replaced and a short
    hash of the original appended, so two different ids never collide and the
    same id always maps to the same result (tool_use and tool_result agree).
    """
    if _TOOL_ID.fullmatch(raw):  # not match(): "$" would accept a trailing newline
        return raw
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:8]
    return f"{re.sub(r'[^a-zA-Z0-9_-]', '_', raw)}_{digest}"


# -- assistant messages -------------------------------------------------------------


def _thinking_blocks(value: Any, where: str) -> list[dict[str, Any]]:
    """LiteLLM-style ``thinking_blocks`` -> Anthropic thinking blocks, unsigned ones dropped."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(f"{where}.thinking_blocks must be an array", f"{where}.thinking_blocks")
    blocks = []
    for block in value:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "redacted_thinking" and isinstance(block.get("data"), str) and block["data"]:
            blocks.append({"type": kind, "data": block["data"]})
        elif kind == "thinking" and isinstance(block.get("signature"), str) and block["signature"]:
            blocks.append({"type": kind, "thinking": block.get("thinking") or "", "signature": block["signature"]})
    return blocks


def _arguments(raw: Any, where: str) -> dict[str, Any]:
    if isinstance(raw, dict):  # already an object (some clients send one)
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}  # a call without arguments
    if not isinstance(raw, str):
        raise _invalid(f"{where} must be a JSON string", where)
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise _invalid(f"{where} is not valid JSON: {exc}", where) from None
    if not isinstance(parsed, dict):
        raise _invalid(f"{where} must encode a JSON object", where)
    return parsed


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    if not isinstance(call, dict) or call.get("type", "function") != "function":
        raise _invalid(f"{where}: only function tool calls are supported", where)
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    call_id, name = call.get("id"), function.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{where}.id must be a non-empty string", f"{where}.id")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{where}.function.name must be a non-empty string", f"{where}.function.name")
    arguments = _arguments(function.get("arguments"), f"{where}.function.arguments")
    return {"type": "tool_use", "id": sanitize_tool_id(call_id), "name": name, "input": arguments}


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    # Thinking first: "ADD THIS FIRST, ELSE ANTHROPIC WILL RAISE AN ERROR" (LiteLLM, §3.4).
    blocks = _thinking_blocks(message.get("thinking_blocks"), where)
    blocks += content_blocks(message.get("content"), f"{where}.content", ASSISTANT_PARTS)
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _invalid(f"{where}.tool_calls must be an array", f"{where}.tool_calls")
    blocks += [_tool_use(call, f"{where}.tool_calls[{j}]") for j, call in enumerate(calls)]
    return blocks


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{where}.tool_call_id must be a non-empty string", f"{where}.tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": sanitize_tool_id(call_id)}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content is not None:
        blocks = content_blocks(content, f"{where}.content", TOOL_PARTS)
        if blocks:
            block["content"] = blocks
    return block


# -- the conversation ---------------------------------------------------------------


# Blocks that must open their turn even when merged messages put them later:
# tool results (Anthropic wants them at the beginning of the user turn after a
# tool_use) and thinking (it must precede the assistant's text and tool_use).
_LEADING_BLOCKS = frozenset({"tool_result", "thinking", "redacted_thinking"})


@attrs.define
class _Turn:
    role: str
    leading: list[dict[str, Any]] = attrs.Factory(list)  # see _LEADING_BLOCKS
    others: list[dict[str, Any]] = attrs.Factory(list)

    def as_message(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.leading + self.others}


@attrs.define
class _Conversation:
    """Accumulates system blocks and role-merged turns, message by message."""

    system: list[dict[str, Any]] = attrs.Factory(list)
    turns: list[_Turn] = attrs.Factory(list)

    def add(self, message: Any, index: int) -> None:
        where = f"messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in _SYSTEM_ROLES:
            self.system += content_blocks(message.get("content"), f"{where}.content", SYSTEM_PARTS)
        elif role == "assistant":
            self._append("assistant", _assistant_blocks(message, where))
        elif role == "user":
            self._append("user", content_blocks(message.get("content"), f"{where}.content", USER_PARTS))
        elif role == "tool":
            self._append("user", [_tool_result(message, where)])
        else:
            raise _invalid(f"{where}.role {role!r} is not supported", f"{where}.role")

    def _append(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return  # an empty message carries nothing; its neighbours may merge
        if not self.turns or self.turns[-1].role != role:
            self.turns.append(_Turn(role))
        turn = self.turns[-1]
        for block in blocks:
            (turn.leading if block["type"] in _LEADING_BLOCKS else turn.others).append(block)

    def messages(self) -> list[dict[str, Any]]:
        self._strip_prefill()
        if not self.turns:
            raise _invalid("messages must contain at least one non-empty user or assistant message", "messages")
        return [turn.as_message() for turn in self.turns]

    def _strip_prefill(self) -> None:
        # Anthropic: "final assistant content cannot end with trailing whitespace" (§3.4).
        if not self.turns or self.turns[-1].role != "assistant":
            return
        turn = self.turns[-1]
        blocks = turn.others
        while blocks and blocks[-1]["type"] == "text":
            stripped = blocks[-1]["text"].rstrip()
            if stripped:
                blocks[-1] = {**blocks[-1], "text": stripped}
                break
            blocks.pop()
        if not blocks and not turn.leading:
            self.turns.pop()


# -- parameters ---------------------------------------------------------------------


def _number(body: dict[str, Any], key: str, low: float, high: float | None) -> float | int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        raise _invalid(f"{key} must be a number >= {low}", key)
    if high is not None and value > high:
        raise _invalid(f"{key} must be <= {high}", key)
    return value


def _max_tokens(body: dict[str, Any], default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _invalid(f"{key} must be a positive integer", key)
        return value
    return default  # Anthropic requires max_tokens; OpenAI clients often omit it (§3.7)


def _stop_sequences(stop: Any) -> list[str]:
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else None
    if stops is None or not all(isinstance(s, str) for s in stops):
        raise _invalid("stop must be a string or an array of strings", "stop")
    return [s for s in stops if s.strip()]  # Anthropic rejects whitespace-only sequences (§3.7)


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    temperature = _number(body, "temperature", 0, None)
    if temperature is not None:
        out["temperature"] = min(temperature, _MAX_TEMPERATURE)
    top_p = _number(body, "top_p", 0, 1)
    if top_p is not None:
        out["top_p"] = top_p
    top_k = body.get("top_k")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise _invalid("top_k must be a positive integer", "top_k")
        out["top_k"] = top_k
    stops = _stop_sequences(body["stop"]) if body.get("stop") is not None else []
    if stops:
        out["stop_sequences"] = stops
    return out


def _metadata(body: dict[str, Any]) -> dict[str, Any]:
    # `user` is being replaced by `safety_identifier` in OpenAI's API (§1.2);
    # either identifies the end user, which is Anthropic's metadata.user_id.
    for key in ("user", "safety_identifier"):
        if isinstance(body.get(key), str) and body[key]:
            return {"metadata": {"user_id": body[key]}}
    return {}


def _output_config(response_format: Any) -> dict[str, Any]:
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if response_format is None or kind in ("text", "json_object"):
        return {}  # json_object: dropped, see the module docstring
    spec = response_format.get("json_schema") if kind == "json_schema" else None
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise _invalid("response_format must be text, json_object or json_schema with a schema", "response_format")
    return {"output_config": {"format": {"type": "json_schema", "schema": spec["schema"]}}}


def _apply_thinking(out: dict[str, Any], effort: Any) -> None:
    """reasoning_effort -> thinking, keeping the request valid for Anthropic (§2.2, §3.7)."""
    if effort is None or effort == "none":
        return
    if effort not in THINKING_BUDGET_BY_EFFORT:
        allowed = ", ".join(["none", *THINKING_BUDGET_BY_EFFORT])
        raise _invalid(f"reasoning_effort must be one of {allowed}", "reasoning_effort")
    if out.get("tool_choice", {}).get("type") in ("any", "tool"):
        return  # Anthropic rejects thinking with a forced tool; the forced call is what the client relies on
    budget = THINKING_BUDGET_BY_EFFORT[effort]
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if out["max_tokens"] <= budget:
        # budget_tokens must be < max_tokens; keep the client's max_tokens for the answer itself.
        out["max_tokens"] += budget
    out.pop("temperature", None)
    out.pop("top_k", None)
    if out.get("top_p", 1) < _MIN_TOP_P_WITH_THINKING:
        out.pop("top_p")


def _reject_unsupported(body: dict[str, Any]) -> None:
    for key, message in _UNSUPPORTED.items():
        if body.get(key) is not None:
            raise _invalid(message, key)
    if body.get("n") not in (None, 1):
        raise _invalid("n > 1 is not supported by Anthropic backends (one choice per request)", "n")
    if body.get("logprobs"):
        raise _invalid("'logprobs' is not supported by Anthropic backends", "logprobs")
    if "audio" in (body.get("modalities") or []):
        raise _invalid("audio output is not supported by Anthropic backends", "modalities")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise _invalid("stream must be a boolean", "stream")


def request_to_anthropic(body: dict[str, Any], *, model: str, default_max_tokens: int) -> dict[str, Any]:
    """Translate an OpenAI chat request into an Anthropic Messages request for upstream `model`.

    `default_max_tokens` is the per-model default used when the client sends
    neither ``max_completion_tokens`` nor ``max_tokens``.  Raises `ProxyError`
    (400, ``invalid_request_error``) naming the field for input that cannot be
    translated faithfully.
    """
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise _invalid("messages must be an array", "messages")
    _reject_unsupported(body)
    conversation = _Conversation()
    for index, message in enumerate(body["messages"]):
        conversation.add(message, index)
    out: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(body, default_max_tokens)}
    if conversation.system:
        out["system"] = conversation.system
    out["messages"] = conversation.messages()
    out.update(tools_and_choice(body))
    out.update(_sampling(body))
    out.update(_metadata(body))
    out.update(_output_config(body.get("response_format")))
    _apply_thinking(out, body.get("reasoning_effort"))
    if body.get("stream") is not None:
        out["stream"] = body["stream"]
    return out
