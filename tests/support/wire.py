"""Upstream replies in each vendor's wire format, built from one description of an answer.

Theory of operation: an end-to-end test says once what the model "answered" (an
`Answer`: reasoning, text, tool calls, why it stopped, token counts) and asks
for that answer the way a given upstream would send it:

* OpenAI Chat Completions: `openai_completion` (one JSON body) or
  `openai_chunks` (``chat.completion.chunk`` items then ``"[DONE]"``, tool-call
  arguments split into fragments, id and name only on the first, protocols.md
  §1.3-1.4);
* Anthropic Messages: `anthropic_message` or `anthropic_events` (``message_start``,
  block start/delta/stop with ``input_json_delta`` fragments, a ``ping``,
  ``message_delta`` with cumulative usage, ``message_stop``, §2.3-2.4);
* Ollama ``/api/chat``: `ollama_response` or `ollama_lines` (NDJSON objects, each
  tool call whole with an *object* of arguments, a final ``done: true`` line with
  ``prompt_eval_count``/``eval_count``, §4.2).

So the streaming and the non-streaming path of one test see the same facts, and
the expected client-side values can be written once.

Around them: `openai_sse`, `anthropic_sse` and `ollama_ndjson` wrap items as
`FakeUpstream` replies; `fixture`, `golden_cases`, `golden_reply` and friends
turn the golden transcripts in ``tests/fixtures/`` into scripts and
expectations; `cut_every` re-cuts a reply at arbitrary byte boundaries (events,
lines and UTF-8 sequences then straddle reads); `parse_sse` reads a client
stream strictly (``event:``/``data:`` lines, a blank line after each frame);
`masked` hides the proxy's own ids and clock readings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from tests.support.servers import Reply, json_reply, ndjson_reply, sse_reply

__all__ = [
    "Answer",
    "ToolCall",
    "anthropic_events",
    "anthropic_message",
    "anthropic_sse",
    "cut_every",
    "fixture",
    "golden_cases",
    "golden_client_request",
    "golden_reply",
    "golden_upstream_request",
    "masked",
    "ollama_lines",
    "ollama_ndjson",
    "ollama_response",
    "openai_chunks",
    "openai_completion",
    "openai_sse",
    "parse_sse",
    "pieces",
]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CREATED = 1732600000

# What each wire says for "why the model stopped" (protocols.md §3.5, §4.2).
# Ollama has no tool-call reason: a reply with tool calls says "stop".
_STOP_WORDS = {
    "end": {"openai": "stop", "anthropic": "end_turn", "ollama": "stop"},
    "tool_use": {"openai": "tool_calls", "anthropic": "tool_use", "ollama": "stop"},
    "max_tokens": {"openai": "length", "anthropic": "max_tokens", "ollama": "length"},
}


@attrs.frozen
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        # The spacing OpenAI models produce: '{"city": "Paris"}'.
        return json.dumps(self.arguments, ensure_ascii=False)


@attrs.frozen
class Answer:
    """What the model said, independent of any wire format.

    `stop` is "end", "tool_use" or "max_tokens" (defaults to "tool_use" when
    there are tool calls).  `input_tokens` is the whole prompt; `cache_read` of
    it was read from the prompt cache (Anthropic reports it apart, OpenAI inside
    ``prompt_tokens``).
    """

    text: str = ""
    reasoning: str = ""
    signature: str = "EqQBCkYIBxgCKkDsig"
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=tuple)
    stop: str | None = None
    input_tokens: int = 21
    output_tokens: int = 9
    cache_read: int = 0

    @property
    def stop_kind(self) -> str:
        return self.stop or ("tool_use" if self.tool_calls else "end")

    def stop_word(self, wire: str) -> str:
        return _STOP_WORDS[self.stop_kind][wire]


def pieces(text: str, count: int = 2) -> list[str]:
    """`text` cut into `count` non-empty pieces (fewer if it is shorter)."""
    if not text:
        return []
    size = max(1, -(-len(text) // count))
    return [text[i:i + size] for i in range(0, len(text), size)]


def fixture(name: str) -> dict[str, Any]:
    """A golden transcript, e.g. ``fixture("openai_to_anthropic/text_with_usage")``."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


# -- OpenAI Chat Completions ----------------------------------------------------------------


def _openai_usage(answer: Answer) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
    }
    if answer.cache_read:
        usage["prompt_tokens_details"] = {"cached_tokens": answer.cache_read, "audio_tokens": 0}
    return usage


def openai_completion(answer: Answer, *, model: str = "gpt-4o-2024-08-06") -> dict[str, Any]:
    """A ``chat.completion`` body (reasoning as DeepSeek/vLLM's ``reasoning_content``)."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None, "refusal": None}
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in answer.tool_calls
        ]
    return {
        "id": "chatcmpl-B9wire", "object": "chat.completion", "created": CREATED, "model": model,
        "system_fingerprint": "fp_50cad350e4",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": answer.stop_word("openai")}],
        "usage": _openai_usage(answer),
    }


def _chunk(delta: dict[str, Any], finish: str | None = None, *, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9wire", "object": "chat.completion.chunk", "created": CREATED, "model": model,
        "system_fingerprint": "fp_50cad350e4",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], "usage": None,
    }


def _openai_tool_chunks(answer: Answer, model: str) -> list[dict[str, Any]]:
    out = []
    for index, call in enumerate(answer.tool_calls):
        first = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        out.append(_chunk({"tool_calls": [first]}, model=model))
        for fragment in pieces(call.arguments_json, 3):
            out.append(_chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}, model=model))
    return out


def openai_chunks(answer: Answer, *, usage_chunk: bool = True, model: str = "gpt-4o-2024-08-06") -> list[Any]:
    """The chunk stream for `answer`, ending with the usage chunk (if asked) and "[DONE]"."""
    out: list[Any] = [_chunk({"role": "assistant", "content": "", "refusal": None}, model=model)]
    out += [_chunk({"reasoning_content": part}, model=model) for part in pieces(answer.reasoning)]
    out += [_chunk({"content": part}, model=model) for part in pieces(answer.text)]
    out += _openai_tool_chunks(answer, model)
    out.append(_chunk({}, answer.stop_word("openai"), model=model))
    if usage_chunk:
        final = _chunk({}, model=model)
        out.append({**final, "choices": [], "usage": _openai_usage(answer)})
    return out + ["[DONE]"]


def openai_sse(items: list[Any]) -> Reply:
    """OpenAI SSE: ``data:`` lines only, no ``event:`` (protocols.md §1.4)."""
    return sse_reply([(None, item) for item in items])


# -- Anthropic Messages ---------------------------------------------------------------------


def _anthropic_usage(answer: Answer, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": answer.input_tokens - answer.cache_read,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": answer.cache_read,
        "output_tokens": output_tokens,
    }


def _anthropic_blocks(answer: Answer) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if answer.reasoning:
        blocks.append({"type": "thinking", "thinking": answer.reasoning, "signature": answer.signature})
    if answer.text:
        blocks.append({"type": "text", "text": answer.text})
    for call in answer.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
    return blocks


def anthropic_message(answer: Answer, *, model: str = "claude-sonnet-4-5-20250929") -> dict[str, Any]:
    return {
        "id": "msg_01WireAnswer", "type": "message", "role": "assistant", "model": model,
        "content": _anthropic_blocks(answer), "stop_reason": answer.stop_word("anthropic"),
        "stop_sequence": None, "usage": _anthropic_usage(answer, answer.output_tokens),
    }


def _block_events(index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
    kind = block["type"]
    if kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "text":
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"])]
    else:
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        arguments = json.dumps(block["input"], ensure_ascii=False)
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in ["", *pieces(arguments, 3)]]
    return [
        {"type": "content_block_start", "index": index, "content_block": start},
        *({"type": "content_block_delta", "index": index, "delta": d} for d in deltas),
        {"type": "content_block_stop", "index": index},
    ]


def anthropic_events(answer: Answer, *, model: str = "claude-sonnet-4-5-20250929") -> list[dict[str, Any]]:
    """The event stream for `answer`, as the Messages API sends it (with a ``ping``)."""
    start = {**anthropic_message(answer, model=model), "content": [], "stop_reason": None}
    start["usage"] = _anthropic_usage(answer, 1)
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, block in enumerate(_anthropic_blocks(answer)):
        events += _block_events(index, block)
    delta = {"stop_reason": answer.stop_word("anthropic"), "stop_sequence": None}
    events.append({"type": "message_delta", "delta": delta, "usage": {"output_tokens": answer.output_tokens}})
    return events + [{"type": "message_stop"}]


def anthropic_sse(events: list[dict[str, Any]]) -> Reply:
    """Anthropic SSE: every event has an ``event:`` line equal to its ``type`` (§2.4)."""
    return sse_reply([(event["type"], event) for event in events])


# -- Ollama /api/chat -----------------------------------------------------------------------


def _ollama_calls(answer: Answer) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "function": {"index": i, "name": c.name, "arguments": c.arguments}}
        for i, c in enumerate(answer.tool_calls)
    ]


def _ollama_done(answer: Answer, model: str) -> dict[str, Any]:
    return {
        "model": model, "created_at": "2025-11-26T06:00:01.5Z",
        "message": {"role": "assistant", "content": ""},
        "done": True, "done_reason": answer.stop_word("ollama"),
        "total_duration": 182242375, "load_duration": 41295167,
        "prompt_eval_count": answer.input_tokens, "prompt_eval_duration": 24573166,
        "eval_count": answer.output_tokens, "eval_duration": 115959084,
    }


def ollama_response(answer: Answer, *, model: str = "llama3.2") -> dict[str, Any]:
    """A non-streaming ``/api/chat`` reply (``"stream": false``)."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    if answer.reasoning:
        message["thinking"] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = _ollama_calls(answer)
    return {**_ollama_done(answer, model), "message": message}


def ollama_lines(answer: Answer, *, model: str = "llama3.2") -> list[dict[str, Any]]:
    """NDJSON lines: thinking, then content, then all tool calls whole in one line, then done."""

    def line(**message: Any) -> dict[str, Any]:
        return {"model": model, "created_at": "2025-11-26T06:00:01.0Z",
                "message": {"role": "assistant", "content": "", **message}, "done": False}

    out = [line(thinking=part) for part in pieces(answer.reasoning)]
    out += [line(content=part) for part in pieces(answer.text)]
    if answer.tool_calls:
        out.append(line(tool_calls=_ollama_calls(answer)))
    return out + [_ollama_done(answer, model)]


def ollama_ndjson(lines: list[Any]) -> Reply:
    return ndjson_reply(lines)


# -- transcripts and framing ----------------------------------------------------------------


def golden_cases(direction: str) -> list[tuple[str, bool]]:
    """(fixture name, stream?) for every recorded upstream answer under ``tests/fixtures/<direction>``."""
    cases = []
    for path in sorted((FIXTURES / direction).glob("*.json")):
        golden = json.loads(path.read_text())
        cases += [(f"{direction}/{path.stem}", True)] if "upstream_events" in golden else []
        cases += [(f"{direction}/{path.stem}", False)] if "upstream_response" in golden else []
    return cases


def golden_client_request(golden: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """The transcript's client request, streaming or not."""
    request = {k: v for k, v in golden["client_request"].items() if k not in ("stream", "stream_options")}
    if stream:
        request["stream"] = True
        if "stream_options" in golden["client_request"]:
            request["stream_options"] = golden["client_request"]["stream_options"]
    return request


def golden_upstream_request(golden: dict[str, Any], wire: str, *, stream: bool) -> dict[str, Any]:
    """The transcript's upstream request, adjusted when the same request is made without streaming."""
    expected = dict(golden["upstream_request"])
    if not stream:
        expected.pop("stream_options", None)
        expected.pop("stream", None)
        if wire == "ollama":
            expected["stream"] = False  # always explicit: Ollama defaults to true
    return expected


def masked(value: Any, keys: tuple[str, ...] = ("id", "created")) -> Any:
    """`value` with the proxy's own ids and clock readings replaced by a placeholder."""
    if isinstance(value, dict):
        return {k: f"<{k}>" if k in keys else masked(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, keys) for v in value]
    return value


def golden_reply(golden: dict[str, Any], wire: str, *, stream: bool) -> Reply:
    """The fake upstream's reply for a golden transcript: its events, or its whole response."""
    if not stream:
        return json_reply(golden["upstream_response"])
    events = golden["upstream_events"]
    if wire == "anthropic":
        return anthropic_sse(events)
    return ollama_ndjson(events) if wire == "ollama" else openai_sse(events)


def cut_every(reply: Reply, size: int) -> Reply:
    """The same reply with its body re-cut into `size`-byte pieces."""
    body = b"".join(reply.pieces or []) + reply.body
    return attrs.evolve(reply, body=b"", pieces=[body[i:i + size] for i in range(0, len(body), size)])


def parse_sse(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name, parsed data or "[DONE]") per frame; fails on anything but canonical framing."""
    text = raw.decode()
    assert text.endswith("\n\n"), "a stream must end with a complete frame"
    out: list[tuple[str | None, Any]] = []
    for frame in text[:-2].split("\n\n"):
        lines = frame.split("\n")
        name = lines.pop(0)[len("event: "):] if lines[0].startswith("event: ") else None
        assert len(lines) == 1 and lines[0].startswith("data: "), f"unexpected frame {frame!r}"
        data = lines[0][len("data: "):]
        out.append((name, data if data == "[DONE]" else json.loads(data)))
    return out
