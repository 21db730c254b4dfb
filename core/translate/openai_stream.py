"""OpenAI chat.completion.chunk stream -> Anthropic Messages stream events.

Theory of operation (protocols.md §3.8): `OpenAIToAnthropicStream` is fed the
upstream's parsed chunks one at a time (and the string "[DONE]") and returns,
for each, the Anthropic events it causes, right away.  The adapter encodes each
event as ``event: <type>`` + ``data: <json>``.

The upstream interleaves nothing: reasoning, text and tool-call fragments
arrive in order, each kind possibly split over many chunks.  The machine keeps
at most one Anthropic content block open; input of another kind closes it and
opens the next block at the next index, so indices are gap-free and
start/delta/stop strictly nested.  Within one chunk the order is reasoning,
text, tool calls, finish_reason (LiteLLM's `_CombinedChunkSplitter`, §3.8 rule
5).  Tool calls are keyed by their `index` (missing -> 0, as CCR does); a new
index opens a new `tool_use` block, `id`/`name` are taken from its first
fragment (later repeats are ignored; some servers resend them), and argument
fragments are forwarded verbatim as `input_json_delta` - never parsed, so a
first fragment carrying the whole arguments works like any other.  A tool block
that received no arguments gets ``{}`` before it closes (LiteLLM's
`check_empty_tool_call_args`), because some clients JSON-parse the
concatenation and "" is not JSON.

States (anything not listed raises TranslationError, like h11):

    IDLE --chunk--> STREAMING --finish_reason--> FINISHING
    FINISHING --usage chunk--> ENDED --"[DONE]"--> CLOSED
    FINISHING --"[DONE]" / finish()--> CLOSED
    STREAMING --"[DONE]" after some content--> CLOSED (end_turn / tool_use)
    any --error chunk / premature end--> FAILED

`message_start` goes out with the first chunk, carrying the adapter's input
estimate (OpenAI only reports usage at the end, §3.6).  The `message_delta`
with the stop reason is HELD after `finish_reason` until the usage-only chunk
(`choices: []`), "[DONE]" or the end of the body, so it carries real usage
(§3.8 rule 6).

Decisions where the protocols leave room:

* "[DONE]" without any finish_reason: ends normally if some content block was
  produced (servers that omit finish_reason exist; the answer is complete as far
  as the upstream is concerned), else it is an `error` event - an empty answer
  with no reason is a failure, not a turn.
* The body ending without "[DONE]" and without finish_reason is truncation:
  an `error` event.  Ending after finish_reason without "[DONE]" is complete.
* An error chunk (``{"error": ...}``) -> one `error` event; after a failure all
  further input is discarded (the client already has the error and the upstream
  often follows it with "[DONE]").
* Chunks that carry nothing (role-only deltas, empty strings, keep-alive chunks
  without choices) produce nothing; repeated finish_reasons are ignored;
  content after finish_reason is an error (it cannot be delivered).
"""

from __future__ import annotations

import enum
import json
from typing import Any

from core.errors import TranslationError, anthropic_error_body
from core.sse import DONE
from core.translate.openai_response import (
    anthropic_message_id,
    stop_reason_for,
    synthesize_tool_id,
    upstream_error,
    usage_from_openai,
)

__all__ = ["OpenAIToAnthropicStream"]


class _State(enum.Enum):
    IDLE = "idle"
    STREAMING = "streaming"
    FINISHING = "finishing"
    ENDED = "ended"
    CLOSED = "closed"
    FAILED = "failed"


def _block_event(kind: str, index: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "index": index, **fields}


class OpenAIToAnthropicStream:
    """Translate one OpenAI chunk stream into Anthropic stream events.

    `model` is the client's model name; `message_id` the id used when the
    upstream chunks carry none; `input_tokens_estimate` goes into
    `message_start` until the real usage arrives with `message_delta`.
    """

    def __init__(self, *, model: str, message_id: str, input_tokens_estimate: int = 0) -> None:
        self._model = model
        self._message_id = message_id
        self._estimate = input_tokens_estimate
        self._state = _State.IDLE
        self._next_index = 0
        self._open: str | None = None  # kind of the open block: thinking, text, tool, redacted_thinking
        self._open_tool: int | None = None  # upstream tool index of the open tool block
        self._open_has_args = False
        self._tools_seen: set[int] = set()
        self._produced_content = False
        self._refusal = False
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None

    # -- public interface -------------------------------------------------------------------

    def feed(self, item: dict[str, Any] | str) -> list[dict[str, Any]]:
        """Events caused by one upstream chunk (a parsed dict) or "[DONE]"."""
        if self._state is _State.FAILED:
            return []
        if item == DONE:
            return self._on_done()
        if not isinstance(item, dict):
            raise TranslationError(f"unexpected upstream stream item {item!r}")
        if self._state in (_State.ENDED, _State.CLOSED):
            raise TranslationError("upstream sent a chunk after the end of the stream")
        if item.get("error") is not None:
            return self._fail_with(anthropic_error_body(upstream_error(item)))
        out = self._start(item) if self._state is _State.IDLE else []
        if isinstance(item.get("usage"), dict):
            self._usage = item["usage"]
        choices = item.get("choices") or []
        if not isinstance(choices, list):
            raise TranslationError("upstream chunk 'choices' is not a list")
        if not choices and self._state is _State.FINISHING and isinstance(item.get("usage"), dict):
            return out + self._end()  # the usage-only chunk that follows finish_reason
        for choice in choices:
            out += self._on_choice(choice)
        return out

    def finish(self) -> list[dict[str, Any]]:
        """Events due when the upstream body ends."""
        if self._state is _State.IDLE:
            return self._fail("upstream stream ended without sending any chunk")
        if self._state is _State.STREAMING:
            return self._fail("upstream stream ended before it was complete (no finish_reason)")
        out = self._end() if self._state is _State.FINISHING else []
        if self._state is not _State.FAILED:
            self._state = _State.CLOSED
        return out

    # -- chunk handling ---------------------------------------------------------------------

    def _start(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        self._state = _State.STREAMING
        self._message_id = anthropic_message_id(chunk.get("id"), self._message_id)
        message = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self._model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self._estimate,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        return [{"type": "message_start", "message": message}]

    def _on_choice(self, choice: Any) -> list[dict[str, Any]]:
        if not isinstance(choice, dict) or not isinstance(choice.get("delta", {}), dict):
            raise TranslationError("upstream chunk has a malformed choice")
        if choice.get("index", 0) not in (0, None):
            raise TranslationError("upstream sent more than one choice; only n=1 is supported")
        delta = choice.get("delta") or {}
        if self._state is _State.FINISHING:
            if _has_content(delta):
                raise TranslationError("upstream sent content after finish_reason")
            return []
        out = self._on_reasoning(delta) + self._on_text(delta) + self._on_tool_calls(delta)
        finish = choice.get("finish_reason")
        if finish is not None:
            out += self._on_finish(finish)
        return out

    def _on_reasoning(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        text = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(text, str) and text:
            out += self._ensure_open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out.append(self._delta({"type": "thinking_delta", "thinking": text}))
        blocks = delta.get("thinking_blocks")  # LiteLLM-style; its text duplicates reasoning_content
        for block in blocks if isinstance(blocks, list) else []:
            out += self._on_thinking_block(block)
        return out

    def _on_thinking_block(self, block: Any) -> list[dict[str, Any]]:
        if not isinstance(block, dict):
            return []
        if block.get("type") == "redacted_thinking" and block.get("data"):
            out = self._close()
            out.append(self._open_block("redacted_thinking", {"type": "redacted_thinking", "data": block["data"]}))
            return out + self._close()
        signature = block.get("signature")
        if block.get("type") != "thinking" or not isinstance(signature, str) or not signature:
            return []
        # A provider signature ends its thinking block (protocols.md §3.8 rule 2).
        out = self._ensure_open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        return out + [self._delta({"type": "signature_delta", "signature": signature})] + self._close()

    def _on_text(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        content = delta.get("content")
        if isinstance(content, list):  # a list of text parts (Mistral and others)
            texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            content = "".join(t for t in texts if isinstance(t, str))
        refusal = delta.get("refusal")
        out = []
        for text, is_refusal in ((content, False), (refusal, True)):
            if isinstance(text, str) and text:
                self._refusal = self._refusal or is_refusal
                out += self._ensure_open("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": text}))
        return out

    def _on_tool_calls(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        calls = delta.get("tool_calls")
        if calls is None and isinstance(delta.get("function_call"), dict):
            calls = [{"index": 0, "function": delta["function_call"]}]  # deprecated single-call form
        if calls is None:
            return []
        if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
            raise TranslationError("upstream delta.tool_calls is not a list of objects")
        return [event for call in calls for event in self._on_tool_fragment(call)]

    def _on_tool_fragment(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        index = call.get("index")
        index = 0 if index is None else index  # CCR: `index ?? 0`
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        out = []
        if index not in self._tools_seen:
            out += self._open_tool_block(index, call.get("id"), function.get("name"))
        elif self._open_tool != index:
            raise TranslationError(f"upstream continued tool call {index} after another block started")
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        if isinstance(arguments, str) and arguments:
            self._open_has_args = True
            out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return out

    def _open_tool_block(self, index: Any, call_id: Any, name: Any) -> list[dict[str, Any]]:
        if not isinstance(index, int) or isinstance(index, bool):
            raise TranslationError(f"upstream tool call index {index!r} is not an integer")
        if not isinstance(name, str) or not name:
            raise TranslationError(f"upstream tool call {index} started without a function name")
        out = self._close()
        self._tools_seen.add(index)
        if not isinstance(call_id, str) or not call_id:
            call_id = synthesize_tool_id(self._message_id, index)
        out.append(self._open_block("tool", {"type": "tool_use", "id": call_id, "name": name, "input": {}}))
        self._open_tool = index
        return out

    def _on_finish(self, finish_reason: Any) -> list[dict[str, Any]]:
        if finish_reason == "error":  # OpenRouter's mid-generation failure
            return self._fail("upstream reported finish_reason 'error'")
        self._finish_reason = finish_reason if isinstance(finish_reason, str) else None
        self._state = _State.FINISHING
        return self._close()

    def _on_done(self) -> list[dict[str, Any]]:
        if self._state is _State.CLOSED:
            raise TranslationError("upstream sent [DONE] twice")
        if self._state in (_State.IDLE, _State.STREAMING) and not self._produced_content:
            return self._fail("upstream stream ended with [DONE] before any content or finish_reason")
        out = self._close() + self._end() if self._state is not _State.ENDED else []
        self._state = _State.CLOSED
        return out

    # -- blocks and endings -----------------------------------------------------------------

    def _open_block(self, kind: str, block: dict[str, Any]) -> dict[str, Any]:
        self._open, self._open_has_args = kind, False
        self._produced_content = True
        self._next_index += 1
        return _block_event("content_block_start", self._next_index - 1, content_block=block)

    def _ensure_open(self, kind: str, block: dict[str, Any]) -> list[dict[str, Any]]:
        if self._open == kind:
            return []
        return self._close() + [self._open_block(kind, block)]

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return _block_event("content_block_delta", self._next_index - 1, delta=delta)

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        out = []
        if self._open == "tool" and not self._open_has_args:
            out.append(self._delta({"type": "input_json_delta", "partial_json": "{}"}))
        out.append(_block_event("content_block_stop", self._next_index - 1))
        self._open, self._open_tool = None, None
        return out

    def _end(self) -> list[dict[str, Any]]:
        self._state = _State.ENDED
        usage = usage_from_openai(self._usage)
        if not isinstance((self._usage or {}).get("prompt_tokens"), int):  # no real input count: keep the estimate
            usage["input_tokens"] = self._estimate
        reason = stop_reason_for(self._finish_reason, tool_calls=bool(self._tools_seen), refusal=self._refusal)
        return [
            {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None}, "usage": usage},
            {"type": "message_stop"},
        ]

    def _fail(self, message: str) -> list[dict[str, Any]]:
        """An upstream that broke off: Anthropic's generic server error type."""
        return self._fail_with({"type": "error", "error": {"type": "api_error", "message": message}})

    def _fail_with(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        self._state = _State.FAILED
        return [event]


def _has_content(delta: dict[str, Any]) -> bool:
    keys = ("content", "refusal", "reasoning_content", "reasoning", "tool_calls", "function_call")
    return any(delta.get(key) for key in keys)
