"""The fixed bodies every benchmark sends and answers with, and the SSE events of the fake.

The sizes follow /work/shared/reference/performance-notes.md, so that our numbers
compare with the peers': a 387-byte chat request from the load generator and a
624-byte ``chat.completion`` from the fake upstream.  The shapes are those of
real traffic (openai-python 3.57 captures, protocols.md §1.3 and §2.3).

Streaming events carry a *marker* in their text content, ``@@<index>:<send
time>@@``, where the send time is the fake's ``time.monotonic()`` just before the
write.  Text deltas survive every translation the proxy does (OpenAI chunk ->
Anthropic ``text_delta`` and back), so a client can compute each chunk's lag
(arrival minus send time; CLOCK_MONOTONIC is system-wide on Linux) and see
drops or reordering from the indexes, without parsing any JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "ANTHROPIC_MESSAGE",
    "MARKER",
    "OPENAI_COMPLETION",
    "anthropic_request",
    "anthropic_stream_events",
    "marker",
    "openai_request",
    "openai_stream_events",
]

MARKER = re.compile(rb"@@(\d+):(\d+\.\d+)@@")
"""What a client looks for in the raw bytes it reads: index and send time."""

# Same JSON as every vendor's wire format: compact separators.
_SEPARATORS = (",", ":")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=_SEPARATORS).encode()


def _padded(build: Any, size: int) -> bytes:
    """`build(filler)` grown with filler text until it is exactly `size` bytes (when possible)."""
    body = build("")
    missing = size - len(body)
    return build("x" * missing) if missing > 0 else body


def _completion(filler: str) -> bytes:
    return _dumps({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4o-2024-08-06",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I assist you today?" + filler,
                        "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035",
    })


def _message(filler: str) -> bytes:
    return _dumps({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Hello! How can I assist you today?" + filler}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 19, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 10, "service_tier": "standard"},
    })


OPENAI_COMPLETION = _padded(_completion, 624)
"""The fixed upstream answer on ``/v1/chat/completions`` (624 bytes)."""

ANTHROPIC_MESSAGE = _padded(_message, 480)
"""The fixed upstream answer on ``/v1/messages`` (same text, Anthropic shape)."""

_PROMPT = ("Summarise the following note in one sentence for a busy reader: the quarterly "
           "report is due on Friday, the numbers from the sales team are still missing, and "
           "the review meeting moved to Thursday at ten.")


def openai_request(model: str, *, stream: bool = False, size: int = 387) -> bytes:
    """An openai-python-shaped chat request, padded to `size` bytes (387 for the load runs)."""
    def build(filler: str) -> bytes:
        body: dict[str, Any] = {
            "model": model,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant." + filler},
                {"role": "user", "content": _PROMPT},
            ],
            "max_tokens": 256,
            "temperature": 0.7,
        }
        if stream:
            body["stream"] = True
        return _dumps(body)

    return _padded(build, size)


def anthropic_request(model: str, *, stream: bool = False, size: int = 387) -> bytes:
    """An anthropic-python-shaped Messages request, padded to `size` bytes."""
    def build(filler: str) -> bytes:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": 256,
            "system": "You are a helpful assistant." + filler,
            "messages": [{"role": "user", "content": _PROMPT}],
        }
        if stream:
            body["stream"] = True
        return _dumps(body)

    return _padded(build, size)


def marker(index: int, sent: float) -> str:
    """The text a streamed event carries: its index and its send time (see the module doc)."""
    return f"@@{index}:{sent:.6f}@@ "


# -- streaming events: (head, per-chunk, tail) pieces of the fake's writes -----------

_CHUNK_HEAD = ('{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1741569952,'
               '"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_fc9f1d7035","choices":')


def _openai_event(choices: str, usage: str = "null") -> bytes:
    return f'data: {_CHUNK_HEAD}{choices},"usage":{usage}}}\n\n'.encode()


def openai_stream_events() -> tuple[bytes, Any, bytes]:
    """OpenAI SSE (protocols.md §1.4): role chunk; one content chunk per marker; finish, usage, [DONE]."""
    head = _openai_event('[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
                         '"logprobs":null,"finish_reason":null}]')

    def chunk(text: str) -> bytes:
        return _openai_event('[{"index":0,"delta":{"content":' + json.dumps(text) + '},'
                             '"logprobs":null,"finish_reason":null}]')

    tail = (_openai_event('[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]')
            + _openai_event("[]", '{"prompt_tokens":19,"completion_tokens":50,"total_tokens":69}')
            + b"data: [DONE]\n\n")
    return head, chunk, tail


def _anthropic_event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


def anthropic_stream_events() -> tuple[bytes, Any, bytes]:
    """Anthropic SSE (protocols.md §2.4): message_start, one text block of marker deltas, message_stop."""
    head = (_anthropic_event("message_start", '{"type":"message_start","message":{"id":"msg_bench","type":'
                             '"message","role":"assistant","content":[],"model":"claude-sonnet-4-5",'
                             '"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":19,'
                             '"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}')
            + _anthropic_event("content_block_start", '{"type":"content_block_start","index":0,'
                               '"content_block":{"type":"text","text":""}}'))

    def chunk(text: str) -> bytes:
        return _anthropic_event("content_block_delta", '{"type":"content_block_delta","index":0,'
                                '"delta":{"type":"text_delta","text":' + json.dumps(text) + '}}')

    tail = (_anthropic_event("content_block_stop", '{"type":"content_block_stop","index":0}')
            + _anthropic_event("message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn",'
                               '"stop_sequence":null},"usage":{"output_tokens":50}}')
            + _anthropic_event("message_stop", '{"type":"message_stop"}'))
    return head, chunk, tail
