"""Anthropic Messages SSE events -> OpenAI ``chat.completion.chunk`` stream.

Theory of operation
-------------------
`AnthropicToOpenAIStream` is fed the parsed ``data:`` JSON of each Anthropic
SSE event (its ``type`` is the event name, protocols.md §2.4) and returns, at
once, the OpenAI chunks that event produces (§1.4).  Nothing is buffered except
the cumulative usage, which OpenAI reports in one chunk at the very end.

The message-level order is a transition table (`_TRANSITIONS`), as in h11: an
event type the protocol knows but that is not allowed in the current phase is
an upstream fault and raises `TranslationError` (the machine is then BROKEN and
every later call raises too).  Block-level order is checked per Anthropic block
index: a delta or stop for a block that is not open, a second start for the same
index, or a delta of the wrong kind for its block is an error as well.

Mapping (protocols.md §3.9):

* ``message_start`` -> role chunk ``{"role": "assistant", "content": ""}``;
  its ``message.id`` becomes the chunk id ``chatcmpl-<id>``.
* ``text_delta`` -> ``delta.content``.
* ``tool_use`` block start -> ``tool_calls[{index, id, type, function: {name,
  arguments: ""}}]`` where ``index`` is a running tool counter (0, 1, ...), NOT
  the Anthropic block index: thinking or text blocks before a tool must not shift
  it (old Portkey's ``block.index - 1`` bug, §7.9).  ``input_json_delta``
  fragments are passed on verbatim as ``function.arguments``; a tool block that
  ends without any fragment gets ``"{}"`` (LiteLLM), so the client always has
  parseable arguments.
* ``thinking_delta`` -> ``delta.reasoning_content`` plus, like LiteLLM,
  ``delta.thinking_blocks[{index, type, thinking}]``; ``signature_delta`` ->
  ``delta.thinking_blocks[{index, type, signature}]``; a ``redacted_thinking``
  block -> one ``thinking_blocks`` entry with its ``data``.  ``index`` is a
  running counter of thinking blocks.  The openai SDK's stream accumulator
  merges list entries by ``index`` and concatenates strings (replacing
  ``type``), so a client ends up with complete ``{type, thinking, signature}``
  blocks it can send back on the next turn, which Anthropic requires for tool
  use with thinking (§2.2).
* ``message_delta`` -> final chunk ``delta: {}`` with the mapped
  ``finish_reason`` (§3.5).  Later ``message_delta`` events (the protocol
  allows several) only update the usage.
* ``message_stop`` -> when ``include_usage``: a ``choices: []`` chunk with the
  usage (input from ``message_start``, every counter replaced by later
  ``message_delta`` values, since Anthropic's counts are cumulative), then
  ``"[DONE]"``.
* ``error`` event -> one OpenAI error chunk ``{"error": {...}}`` with the
  Anthropic error type kept (e.g. ``overloaded_error``) and nothing after it.
  `finish()` before ``message_stop`` -> an error chunk "upstream stream ended
  before message_stop".

Ignored, by design: ``ping``; unknown future event types; ``citations_delta``
and unknown delta types (OpenAI chat has no place for them); every block that is
not text, thinking, redacted_thinking or tool_use, with all its deltas.  Those
are server-tool blocks (``server_tool_use``, ``web_search_tool_result``, ...),
run by Anthropic itself: they are not function calls for the client to answer,
and skipping them does not disturb the tool counter.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Callable, NoReturn

import attrs

from ..errors import TranslationError, error_from_anthropic_body, openai_error_body
from ..sse import DONE  # the OpenAI end-of-stream sentinel, protocols.md §1.4
from .anthropic_response import finish_reason_from_stop_reason, openai_usage_from_anthropic

__all__ = ["AnthropicToOpenAIStream"]

Output = list[dict[str, Any] | str]


class _Phase(enum.Enum):
    AWAITING_START = "awaiting message_start"
    IN_MESSAGE = "in message"
    ENDING = "after message_delta"
    DONE = "done"
    FAILED = "failed (error chunk sent)"
    BROKEN = "broken (TranslationError raised)"


# Message-level order (protocols.md §2.4): event type -> next phase.  A known
# event type missing from the current phase's row is an error.  ``ping`` and
# ``error`` are allowed in every live phase and handled separately.
_TRANSITIONS: dict[_Phase, dict[str, _Phase]] = {
    _Phase.AWAITING_START: {"message_start": _Phase.IN_MESSAGE},
    _Phase.IN_MESSAGE: {
        "content_block_start": _Phase.IN_MESSAGE,
        "content_block_delta": _Phase.IN_MESSAGE,
        "content_block_stop": _Phase.IN_MESSAGE,
        "message_delta": _Phase.ENDING,
    },
    _Phase.ENDING: {"message_delta": _Phase.ENDING, "message_stop": _Phase.DONE},
}
_KNOWN_EVENTS = frozenset(
    {"message_start", "content_block_start", "content_block_delta", "content_block_stop"}
    | {"message_delta", "message_stop", "ping", "error"}
)
_LIVE = frozenset({_Phase.AWAITING_START, _Phase.IN_MESSAGE, _Phase.ENDING})

# Block kinds we translate; any other content_block type is skipped (see above).
_TEXT, _TOOL, _THINKING, _REDACTED, _SKIP = "text", "tool_use", "thinking", "redacted_thinking", "skip"

# Delta type -> (the only block kind it may appear in, the field holding its
# string) (protocols.md §2.4).  Delta types not listed here (citations_delta,
# future ones) are ignored.
_DELTA_RULES: dict[str, tuple[str, str]] = {
    "text_delta": (_TEXT, "text"),
    "input_json_delta": (_TOOL, "partial_json"),
    "thinking_delta": (_THINKING, "thinking"),
    "signature_delta": (_THINKING, "signature"),
}


@attrs.define
class _Block:
    """An open Anthropic content block and its OpenAI-side position."""

    kind: str
    position: int = 0  # tool_calls index for tools, thinking_blocks index for thinking
    has_content: bool = False  # a tool's arguments or a thinking block's text was sent


class AnthropicToOpenAIStream:
    """State machine: Anthropic SSE event dicts in, OpenAI chunk dicts (and "[DONE]") out.

    `model` is the client's model name, echoed in every chunk; `created` and
    `message_id` come from the adapter (the core reads no clock and no
    randomness); `message_id` is the chunk id, used verbatim, only if the
    upstream ``message_start`` carries no id.  `include_usage` mirrors the
    client's ``stream_options.include_usage``.
    """

    def __init__(self, *, model: str, created: int, message_id: str, include_usage: bool) -> None:
        self._model = model
        self._created = created
        self._id = message_id
        self._include_usage = include_usage
        self._phase = _Phase.AWAITING_START
        self._blocks: dict[int, _Block] = {}
        self._seen_indices: set[int] = set()
        self._tool_count = 0
        self._thinking_count = 0
        self._usage: dict[str, Any] = {}
        self._handlers: dict[str, Callable[[dict[str, Any]], Output]] = {
            "message_start": self._on_message_start,
            "content_block_start": self._on_block_start,
            "content_block_delta": self._on_block_delta,
            "content_block_stop": self._on_block_stop,
            "message_delta": self._on_message_delta,
            "message_stop": self._on_message_stop,
        }

    # -- public API ---------------------------------------------------------------

    def feed(self, event: dict[str, Any]) -> Output:
        """Translate one Anthropic event; returns the chunks to send now."""
        self._check_usable()
        if self._phase not in _LIVE:
            self._fail(f"Anthropic event after the end of the stream ({self._phase.value})")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self._fail("Anthropic stream event is not an object with a string type")
        kind = event["type"]
        if kind == "error":
            return self._on_error(event)
        if kind == "ping" or kind not in _KNOWN_EVENTS:
            return []  # keep-alive, or a future event type (protocols.md §2.4)
        next_phase = _TRANSITIONS[self._phase].get(kind)
        if next_phase is None:
            self._fail(f"Anthropic event {kind!r} is not allowed {self._phase.value}")
        try:
            out = self._handlers[kind](event)
        except TranslationError:
            self._phase = _Phase.BROKEN
            raise
        self._phase = next_phase
        return out

    def finish(self) -> Output:
        """The upstream body ended: an error chunk unless ``message_stop`` was seen."""
        self._check_usable()
        if self._phase in _LIVE:
            self._phase = _Phase.FAILED
            return [self._error_chunk("api_error", "upstream stream ended before message_stop")]
        return []

    # -- helpers ------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._phase is _Phase.BROKEN:
            raise TranslationError("Anthropic stream translator already failed")

    def _fail(self, message: str) -> NoReturn:
        self._phase = _Phase.BROKEN
        raise TranslationError(message)

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def _error_chunk(self, kind: str, message: str) -> dict[str, Any]:
        body = {"type": "error", "error": {"type": kind, "message": message}}
        return openai_error_body(error_from_anthropic_body(502, body))

    def _block_at(self, event: dict[str, Any]) -> tuple[int, _Block]:
        index = event.get("index")
        if not isinstance(index, int) or index not in self._blocks:
            raise TranslationError(f"Anthropic {event['type']} for content block {index!r}, which is not open")
        return index, self._blocks[index]

    # -- event handlers -----------------------------------------------------------

    def _on_error(self, event: dict[str, Any]) -> Output:
        error = event.get("error")
        error = error if isinstance(error, dict) else {}
        kind, message = error.get("type"), error.get("message")
        kind = kind if isinstance(kind, str) else "api_error"
        message = message if isinstance(message, str) else "upstream stream error"
        self._phase = _Phase.FAILED
        return [self._error_chunk(kind, message)]

    def _on_message_start(self, event: dict[str, Any]) -> Output:
        message = event.get("message")
        if not isinstance(message, dict):
            raise TranslationError("Anthropic message_start without a message object")
        if isinstance(message.get("id"), str) and message["id"]:
            self._id = f"chatcmpl-{message['id']}"
        self._merge_usage(message.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _on_block_start(self, event: dict[str, Any]) -> Output:
        index, block = event.get("index"), event.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            raise TranslationError("Anthropic content_block_start without an integer index and a block")
        if index in self._seen_indices:
            raise TranslationError(f"Anthropic content block {index} started twice")
        self._seen_indices.add(index)
        kind = block.get("type")
        if kind == _TOOL:
            return self._start_tool(index, block)
        if kind in (_THINKING, _REDACTED):
            return self._start_thinking(index, block)
        self._blocks[index] = _Block(_TEXT if kind == _TEXT else _SKIP)
        text = block.get("text") if kind == _TEXT else None
        return [self._chunk({"content": text})] if isinstance(text, str) and text else []

    def _start_tool(self, index: int, block: dict[str, Any]) -> Output:
        if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
            raise TranslationError("Anthropic tool_use block without a string id and name")
        state = _Block(_TOOL, self._tool_count)
        self._tool_count += 1
        self._blocks[index] = state
        # The start block's input is always {} on Anthropic (§2.4); a compatible
        # server that sends the whole input here gets it forwarded as arguments.
        initial = block.get("input")
        arguments = json.dumps(initial, ensure_ascii=False) if isinstance(initial, dict) and initial else ""
        state.has_content = bool(arguments)
        call = {"index": state.position, "id": block["id"], "type": "function"}
        call["function"] = {"name": block["name"], "arguments": arguments}
        return [self._chunk({"tool_calls": [call]})]

    def _start_thinking(self, index: int, block: dict[str, Any]) -> Output:
        state = _Block(block["type"], self._thinking_count)
        self._thinking_count += 1
        self._blocks[index] = state
        if state.kind == _REDACTED:
            return [self._thinking_chunk(state, data=block.get("data", ""))]
        out: Output = []
        if isinstance(block.get("thinking"), str) and block["thinking"]:
            out.append(self._thinking_chunk(state, thinking=block["thinking"]))
        if isinstance(block.get("signature"), str) and block["signature"]:
            out.append(self._thinking_chunk(state, signature=block["signature"]))
        return out

    def _thinking_chunk(self, block: _Block, **fields: str) -> dict[str, Any]:
        if block.kind == _THINKING and not block.has_content and "thinking" not in fields:
            fields = {"thinking": "", **fields}  # a thinking block with no text (display "omitted")
        entry = {"index": block.position, "type": block.kind, **fields}
        delta: dict[str, Any] = {"thinking_blocks": [entry]}
        if fields.get("thinking"):
            delta = {"reasoning_content": fields["thinking"], **delta}
        block.has_content = True
        return self._chunk(delta)

    def _on_block_delta(self, event: dict[str, Any]) -> Output:
        _, block = self._block_at(event)
        delta = event.get("delta")
        if not isinstance(delta, dict):
            raise TranslationError("Anthropic content_block_delta without a delta object")
        kind = delta.get("type")
        if not isinstance(kind, str) or kind not in _DELTA_RULES or block.kind == _SKIP:
            return []  # citations_delta, a future delta type, or a server-tool block
        expected_kind, field = _DELTA_RULES[kind]
        if block.kind != expected_kind:
            raise TranslationError(f"Anthropic {kind} inside a {block.kind} block")
        return self._translate_delta(block, kind, field, delta)

    def _translate_delta(self, block: _Block, kind: str, field: str, delta: dict[str, Any]) -> Output:
        value = delta.get(field)
        if not isinstance(value, str):
            raise TranslationError(f"Anthropic {kind} without a string {field}")
        if not value:
            return []  # an empty fragment changes nothing; OpenAI clients need no empty deltas
        if kind == "text_delta":
            return [self._chunk({"content": value})]
        if kind == "input_json_delta":
            block.has_content = True
            return [self._arguments_chunk(block, value)]
        return [self._thinking_chunk(block, **{field: value})]

    def _arguments_chunk(self, block: _Block, arguments: str) -> dict[str, Any]:
        return self._chunk({"tool_calls": [{"index": block.position, "function": {"arguments": arguments}}]})

    def _on_block_stop(self, event: dict[str, Any]) -> Output:
        index, block = self._block_at(event)
        del self._blocks[index]
        if block.kind == _TOOL and not block.has_content:
            return [self._arguments_chunk(block, "{}")]  # no input_json_delta: an empty input
        return []

    def _on_message_delta(self, event: dict[str, Any]) -> Output:
        if self._blocks:
            raise TranslationError(f"Anthropic message_delta while content block(s) {sorted(self._blocks)} are open")
        self._merge_usage(event.get("usage"))
        if self._phase is _Phase.ENDING:
            return []  # a further message_delta: cumulative usage only
        delta = event.get("delta")
        stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        return [self._chunk({}, finish_reason_from_stop_reason(stop_reason))]

    def _on_message_stop(self, event: dict[str, Any]) -> Output:
        out: Output = []
        if self._include_usage:
            usage_chunk = self._chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = openai_usage_from_anthropic(self._usage)
            out.append(usage_chunk)
        out.append(DONE)
        return out

    def _merge_usage(self, usage: Any) -> None:
        # Anthropic counters are cumulative: a later value replaces an earlier one.
        if isinstance(usage, dict):
            self._usage.update({key: value for key, value in usage.items() if value is not None})
