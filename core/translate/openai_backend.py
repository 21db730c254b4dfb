"""Anthropic clients on OpenAI-compatible backends: the whole translation.

This is what Claude Code and anthropic-SDK applications need when the route
points at an OpenAI, vLLM, DeepSeek, OpenRouter or Ollama ``/v1`` backend.  The
adapter uses four pure pieces:

1. `request_to_openai(body, model=...)` turns the client's Messages request into
   a Chat Completions request (`openai_request`);
2. for a non-streaming answer, `response_from_openai(body, model=..., message_id=...)`
   turns the upstream's `chat.completion` into an Anthropic `message`
   (`openai_response`);
3. for a streaming answer, an `OpenAIToAnthropicStream` is fed every decoded SSE
   chunk (and "[DONE]"), then `finish()` at the end of the body, and returns the
   Anthropic events to encode as ``event:``/``data:`` frames (`openai_stream`);
4. `estimate_input_tokens(body)` answers ``/v1/messages/count_tokens`` and gives
   the stream its `message_start` input estimate (`count_tokens`).

Nothing here does I/O, reads a clock or draws random numbers: message ids and
estimates come in as arguments.
"""

from __future__ import annotations

from core.translate.count_tokens import estimate_input_tokens
from core.translate.openai_content import TOOL_ERROR_PREFIX
from core.translate.openai_request import effort_for_budget, request_to_openai
from core.translate.openai_response import (
    FINISH_TO_STOP_REASON,
    RAW_ARGUMENTS_KEY,
    response_from_openai,
    usage_from_openai,
)
from core.translate.openai_stream import OpenAIToAnthropicStream

__all__ = [
    "FINISH_TO_STOP_REASON",
    "RAW_ARGUMENTS_KEY",
    "TOOL_ERROR_PREFIX",
    "OpenAIToAnthropicStream",
    "effort_for_budget",
    "estimate_input_tokens",
    "request_to_openai",
    "response_from_openai",
    "usage_from_openai",
]
