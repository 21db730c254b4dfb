"""What a response said, for the log: text, tool calls, stop reason, usage, chunk count.

Theory of operation: the audit log records a streamed response once, at its
end, as if it had been one message.  A `StreamSummary` is fed the stream as it
goes by (`feed_bytes` with the wire bytes, or `feed_event` / `feed_item` with
already decoded events) and `result()` returns a `ResponseSummary`.  The same
value describes a non-streamed body (`summarize_response`), so a record has one
shape either way.  Three protocols are understood, as they appear on the wire:

* ``openai``: ``chat.completion.chunk`` events (protocols.md §1.4): text from
  ``choices[0].delta.content``, reasoning from ``delta.reasoning_content`` or
  ``delta.reasoning``, tool calls reassembled by ``tool_calls[].index``, the
  last ``finish_reason``, the last ``usage`` object, ``[DONE]`` as the end.
* ``anthropic``: Messages events (§2.4): text and thinking deltas, ``tool_use``
  blocks whose input is the concatenated ``partial_json``, ``stop_reason`` from
  ``message_delta``, usage from ``message_start`` then each ``message_delta``
  (cumulative: later values replace earlier ones), ``message_stop`` as the end.
* ``ollama``: NDJSON chat chunks (§4.2): ``message.content``/``thinking``,
  whole ``tool_calls``, ``done_reason``, ``prompt_eval_count``/``eval_count``.

An error event (OpenAI ``{"error": ...}``, Anthropic ``event: error``, Ollama
``{"error": "..."}``) is kept as ``error``.  Nothing here raises: the log must
never break a response, so an undecodable event is counted in ``malformed``.

Cost: memory is the accumulated text plus O(1) per event (fragments are kept
in lists and joined once in `result`; ``max_text_chars`` bounds them, setting
``truncated``).  With ``content=False`` only usage, stop reason, errors and the
chunk count are kept, and an event is JSON-parsed only when a cheap substring
test says it can carry one of those: the metadata-level log and the token
metrics cost one regex search per event on a pass-through stream.

Usage is normalised to OpenAI's meaning (§3.6, §6.2): ``prompt_tokens``
*includes* cached input, so an Anthropic count is ``input_tokens +
cache_creation_input_tokens + cache_read_input_tokens``; ``cache_read_tokens``
and ``cache_write_tokens`` are the cached subsets.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import attrs

from core.sse import DONE, SSEDecoder

__all__ = [
    "PROTOCOLS",
    "ResponseSummary",
    "StreamSummary",
    "ToolCall",
    "Usage",
    "summarize_response",
    "usage_from_anthropic",
    "usage_in_body",
    "usage_from_ollama",
    "usage_from_openai",
]

Protocol = Literal["openai", "anthropic", "ollama"]
PROTOCOLS: tuple[Protocol, ...] = ("openai", "anthropic", "ollama")

# OpenAI chunks worth parsing when content is not wanted: a usage object, a
# non-null finish_reason, or an error.  Most chunks carry ``"usage":null`` and
# ``"finish_reason":null`` and are skipped.
_OPENAI_META = re.compile(r'"usage"\s*:\s*\{|"finish_reason"\s*:\s*"|"error"\s*:')
_ANTHROPIC_META = frozenset({"message_start", "message_delta", "error"})


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@attrs.frozen
class Usage:
    """Token counts in OpenAI's meaning; None where the response did not say."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None

    @property
    def known(self) -> bool:
        return not (self.prompt_tokens is None and self.completion_tokens is None
                    and self.cache_read_tokens is None and self.cache_write_tokens is None)

    def as_dict(self) -> dict[str, int | None]:
        return attrs.asdict(self)


def usage_from_openai(usage: Any) -> Usage | None:
    """From an OpenAI ``usage`` object (``prompt_tokens`` already includes cached tokens)."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    write = details.get("cache_write_tokens", details.get("cache_creation_tokens"))
    return Usage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")),
                 _int(details.get("cached_tokens")), _int(write))


def usage_from_anthropic(usage: Any) -> Usage | None:
    """From Anthropic ``usage`` fields, whose ``input_tokens`` excludes the cache (§2.3)."""
    if not isinstance(usage, dict):
        return None
    fresh, read = _int(usage.get("input_tokens")), _int(usage.get("cache_read_input_tokens"))
    write = _int(usage.get("cache_creation_input_tokens"))
    prompt = None if fresh is None else fresh + (read or 0) + (write or 0)
    return Usage(prompt, _int(usage.get("output_tokens")), read, write)


def usage_from_ollama(chunk: Any) -> Usage | None:
    """From a final Ollama chunk (``prompt_eval_count``, ``eval_count``)."""
    if not isinstance(chunk, dict) or ("prompt_eval_count" not in chunk and "eval_count" not in chunk):
        return None
    return Usage(_int(chunk.get("prompt_eval_count")), _int(chunk.get("eval_count")))


@attrs.frozen
class ToolCall:
    """A reassembled tool call; `arguments` parsed from JSON, or the raw text if it is not JSON."""

    id: str | None
    name: str | None
    arguments: Any

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@attrs.frozen
class ResponseSummary:
    """One response as the log shows it, streamed or not."""

    text: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage = Usage()
    chunks: int = 0  # events seen (0 for a non-streamed body)
    complete: bool = False  # the protocol's end marker was seen
    error: dict[str, Any] | None = None
    malformed: int = 0
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self, recurse=False)
        out["tool_calls"] = [call.as_dict() for call in self.tool_calls]
        out["usage"] = self.usage.as_dict()
        return out


def _parsed_arguments(raw: str) -> Any:
    # An empty concatenation means no arguments (§2.4: LiteLLM emits "{}").
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _error_of(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {"type": value.get("type"), "message": value.get("message")}
    return {"type": None, "message": value if isinstance(value, str) else repr(value)}


class _Call:
    """A tool call being reassembled: id and name once, argument fragments appended."""

    __slots__ = ("id", "name", "parts", "whole")

    def __init__(self, id: Any = None, name: Any = None) -> None:
        self.id = id if isinstance(id, str) else None
        self.name = name if isinstance(name, str) else None
        self.parts: list[str] = []
        self.whole: Any = None  # Ollama sends arguments as an object

    def freeze(self) -> ToolCall:
        arguments = self.whole if self.whole is not None else _parsed_arguments("".join(self.parts))
        return ToolCall(self.id, self.name, arguments)


class _Lines:
    """NDJSON lines, tolerant: unlike `core.ndjson.NDJSONDecoder` (which stops the
    relay at the first bad line), a log keeps reading after one."""

    def __init__(self) -> None:
        self._partial: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\n" not in chunk:
            self._partial.append(chunk)
            return []
        lines = (b"".join(self._partial) + chunk).split(b"\n")
        tail = lines.pop()
        self._partial = [tail] if tail else []
        return [line for line in lines if line.strip()]

    def finish(self) -> list[bytes]:
        rest, self._partial = b"".join(self._partial), []
        return [rest] if rest.strip() else []


class StreamSummary:
    """Incremental reassembly of one stream; see the module docstring."""

    def __init__(self, protocol: Protocol, *, content: bool = True, max_text_chars: int | None = None) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
        if max_text_chars is not None and max_text_chars < 0:
            raise ValueError("max_text_chars must be >= 0")
        self.protocol = protocol
        self.content = content
        self._budget = max_text_chars
        self._decoder: SSEDecoder | _Lines | None = _Lines() if protocol == "ollama" else SSEDecoder()
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, _Call] = {}
        self._finish: str | None = None
        self._usage: dict[str, Any] = {}  # raw protocol fields, later values win
        self._chunks = 0
        self._complete = False
        self._error: dict[str, Any] | None = None
        self._malformed = 0
        self._truncated = False

    # -- input -------------------------------------------------------------------------

    def feed_bytes(self, data: bytes) -> None:
        """One piece of the wire body (any split; SSE for openai/anthropic, NDJSON for ollama)."""
        if self._decoder is not None and data:
            self._dispatch(self._decoder.feed(data))

    def feed_event(self, event: str | None, data: str) -> None:
        """One SSE event: its ``event:`` name (None or "message" if absent) and ``data``."""
        self._chunks += 1
        if self.protocol == "openai":
            if data == DONE:
                self._complete = True
            elif self.content or _OPENAI_META.search(data):
                self._parse_then(data, event)
            return
        if event == "message_stop" or (event in (None, "message") and '"message_stop"' in data):
            self._complete = True
        elif self.content or event in _ANTHROPIC_META or event in (None, "message"):
            self._parse_then(data, event)

    def feed_item(self, item: Any, event: str | None = None) -> None:
        """One decoded event (a JSON value; `DONE` for OpenAI's end marker)."""
        if event is None and self.protocol == "openai" and item == DONE:
            self.feed_event(None, DONE)
            return
        self._chunks += 1
        self._apply(item, event)

    def result(self) -> ResponseSummary:
        """The summary so far; flushes a last event that lacked its terminator."""
        if self._decoder is not None:
            self._dispatch(self._decoder.finish())
            self._decoder = None
        return ResponseSummary(
            text="".join(self._text), reasoning="".join(self._reasoning),
            tool_calls=tuple(call.freeze() for _, call in sorted(self._calls.items())),
            finish_reason=self._finish, usage=self._normalized_usage(), chunks=self._chunks,
            complete=self._complete, error=self._error, malformed=self._malformed, truncated=self._truncated,
        )

    # -- decoding ------------------------------------------------------------------------

    def _dispatch(self, decoded: list[Any]) -> None:
        if self.protocol == "ollama":
            for line in decoded:
                self._chunks += 1
                self._parse_then(line.decode("utf-8", "replace"), None)
            return
        for event in decoded:
            self.feed_event(event.event, event.data)

    def _parse_then(self, data: str, event: str | None) -> None:
        try:
            item = json.loads(data)
        except ValueError:
            self._malformed += 1
            return
        self._apply(item, event)

    def _apply(self, item: Any, event: str | None) -> None:
        if not isinstance(item, dict):
            self._malformed += 1
            return
        if self.protocol == "openai":
            self._openai(item)
        elif self.protocol == "anthropic":
            self._anthropic(item, item.get("type") if isinstance(item.get("type"), str) else event)
        else:
            self._ollama(item)

    def _keep(self, into: list[str], piece: Any) -> None:
        if not self.content or not isinstance(piece, str) or not piece:
            return
        if self._budget is not None:
            if len(piece) > self._budget:
                piece, self._truncated = piece[: self._budget], True
            self._budget -= len(piece)
        if piece:
            into.append(piece)

    # -- OpenAI chunks -------------------------------------------------------------------

    def _openai(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk:
            self._error = _error_of(chunk["error"])
            return
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._openai_choice(choice)

    def _openai_choice(self, choice: dict[str, Any]) -> None:
        if isinstance(choice.get("finish_reason"), str):
            self._finish = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, dict) or not self.content:
            return
        self._keep(self._text, delta.get("content"))
        self._keep(self._reasoning, delta.get("reasoning_content", delta.get("reasoning")))
        for fragment in delta.get("tool_calls") or ():
            if isinstance(fragment, dict):
                self._openai_tool_fragment(fragment)

    def _openai_tool_fragment(self, fragment: dict[str, Any]) -> None:
        index = fragment.get("index", 0)  # CCR defaults a missing index to 0 (§1.4)
        function = fragment.get("function") if isinstance(fragment.get("function"), dict) else {}
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _Call(fragment.get("id"), function.get("name"))
        self._keep(call.parts, function.get("arguments"))

    # -- Anthropic events ----------------------------------------------------------------

    def _anthropic(self, event: dict[str, Any], kind: str | None) -> None:
        if kind == "message_start" and isinstance(event.get("message"), dict):
            self._merge_usage(event["message"].get("usage"))
        elif kind == "message_delta":
            delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
            if isinstance(delta.get("stop_reason"), str):
                self._finish = delta["stop_reason"]
            self._merge_usage(event.get("usage"))
        elif kind == "error":
            self._error = _error_of(event.get("error"))
        elif kind == "message_stop":
            self._complete = True
        elif self.content and kind == "content_block_start":
            self._anthropic_block(event)
        elif self.content and kind == "content_block_delta":
            self._anthropic_delta(event)

    def _merge_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage.update({key: value for key, value in usage.items() if value is not None})

    def _anthropic_block(self, event: dict[str, Any]) -> None:
        block = event.get("content_block")
        if not isinstance(block, dict):
            return
        if block.get("type") in ("tool_use", "server_tool_use") and isinstance(event.get("index"), int):
            self._calls[event["index"]] = _Call(block.get("id"), block.get("name"))
        elif block.get("type") == "text":
            self._keep(self._text, block.get("text"))

    def _anthropic_delta(self, event: dict[str, Any]) -> None:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "text_delta":
            self._keep(self._text, delta.get("text"))
        elif kind == "thinking_delta":
            self._keep(self._reasoning, delta.get("thinking"))
        elif kind == "input_json_delta" and event.get("index") in self._calls:
            self._keep(self._calls[event["index"]].parts, delta.get("partial_json"))

    # -- Ollama chunks -------------------------------------------------------------------

    def _ollama(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk:
            self._error = _error_of(chunk["error"])
            return
        message = chunk.get("message") if isinstance(chunk.get("message"), dict) else {}
        self._keep(self._text, message.get("content"))
        self._keep(self._reasoning, message.get("thinking"))
        if self.content:
            for call in message.get("tool_calls") or ():
                self._ollama_call(call)
        if chunk.get("done") is True:
            self._complete = True
            self._finish = chunk["done_reason"] if isinstance(chunk.get("done_reason"), str) else self._finish
            self._usage = chunk

    def _ollama_call(self, call: Any) -> None:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            made = _Call(call.get("id"), function.get("name"))
            made.whole = function.get("arguments")
            self._calls[len(self._calls)] = made

    def _normalized_usage(self) -> Usage:
        parse = {"openai": usage_from_openai, "anthropic": usage_from_anthropic, "ollama": usage_from_ollama}
        return parse[self.protocol](self._usage) or Usage()


_USAGE_KEY = re.compile(rb'"usage"\s*:\s*')
_DECODER = json.JSONDecoder()


def usage_in_body(protocol: Protocol, body: bytes) -> Usage | None:
    """The ``usage`` of a whole OpenAI or Anthropic response body, without parsing the rest of it.

    For the token metrics of every successful response: a full parse would
    read the whole body a second time (a pass-through body is never parsed).
    Both vendors put ``usage`` at the top level; the last ``"usage":`` key in
    the bytes is taken (a ``"usage"`` inside a string is escaped, so it does
    not match).  None when there is none or it does not read as usage: the
    caller then parses the whole body.
    """
    start = body.rfind(b'"usage"')
    found = _USAGE_KEY.match(body, start) if start >= 0 else None
    if found is None:
        return None
    try:
        value, _ = _DECODER.raw_decode(body[found.end():].decode("utf-8"))
    except ValueError:
        return None
    usage = usage_from_anthropic(value) if protocol == "anthropic" else usage_from_openai(value)
    return usage if usage is not None and usage.known else None


def summarize_response(protocol: Protocol, body: Any) -> ResponseSummary:
    """A non-streamed response body (parsed JSON) as a `ResponseSummary` (chunks = 0)."""
    if not isinstance(body, dict):
        return ResponseSummary(malformed=1)
    if protocol == "openai":
        return _openai_body(body)
    if protocol == "anthropic":
        return _anthropic_body(body)
    summary = StreamSummary("ollama")
    summary.feed_item(body)
    return attrs.evolve(summary.result(), chunks=0)


def _openai_body(body: dict[str, Any]) -> ResponseSummary:
    if "error" in body:
        return ResponseSummary(error=_error_of(body["error"]), complete=True)
    choices = [c for c in body.get("choices") or () if isinstance(c, dict)]
    choice = choices[0] if choices else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    calls = tuple(
        ToolCall(call.get("id"), (call.get("function") or {}).get("name"),
                 _parsed_arguments((call.get("function") or {}).get("arguments") or ""))
        for call in message.get("tool_calls") or () if isinstance(call, dict)
    )
    text = message.get("content") if isinstance(message.get("content"), str) else ""
    reasoning = message.get("reasoning_content", message.get("reasoning"))
    return ResponseSummary(text=text, reasoning=reasoning if isinstance(reasoning, str) else "", tool_calls=calls,
                           finish_reason=choice.get("finish_reason"), complete=True,
                           usage=usage_from_openai(body.get("usage")) or Usage())


def _anthropic_body(body: dict[str, Any]) -> ResponseSummary:
    if body.get("type") == "error":
        return ResponseSummary(error=_error_of(body.get("error")), complete=True)
    blocks = [b for b in body.get("content") or () if isinstance(b, dict)]
    text = "".join(b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str))
    reasoning = "".join(b["thinking"] for b in blocks
                        if b.get("type") == "thinking" and isinstance(b.get("thinking"), str))
    calls = tuple(ToolCall(b.get("id"), b.get("name"), b.get("input"))
                  for b in blocks if b.get("type") in ("tool_use", "server_tool_use"))
    return ResponseSummary(text=text, reasoning=reasoning, tool_calls=calls, finish_reason=body.get("stop_reason"),
                           usage=usage_from_anthropic(body.get("usage")) or Usage(), complete=True)
