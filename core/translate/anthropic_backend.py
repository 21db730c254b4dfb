"""OpenAI clients on Anthropic backends: the three translators in one place.

* `request_to_anthropic` (``anthropic_request``): OpenAI chat request ->
  Anthropic Messages request.
* `response_from_anthropic` (``anthropic_response``): Anthropic message ->
  OpenAI ``chat.completion``.
* `AnthropicToOpenAIStream` (``anthropic_stream``): Anthropic SSE events ->
  OpenAI ``chat.completion.chunk`` items and ``"[DONE]"``.

All are pure: parsed JSON in, parsed JSON out; the adapter owns bytes, clocks
and ids.  Each module's docstring explains its mapping and cites
protocols.md.
"""

from __future__ import annotations

from .anthropic_request import THINKING_BUDGET_BY_EFFORT, request_to_anthropic, sanitize_tool_id
from .anthropic_response import (
    FINISH_REASON_BY_STOP_REASON,
    finish_reason_from_stop_reason,
    openai_usage_from_anthropic,
    response_from_anthropic,
)
from .anthropic_stream import AnthropicToOpenAIStream

__all__ = [
    "FINISH_REASON_BY_STOP_REASON",
    "THINKING_BUDGET_BY_EFFORT",
    "AnthropicToOpenAIStream",
    "finish_reason_from_stop_reason",
    "openai_usage_from_anthropic",
    "request_to_anthropic",
    "response_from_anthropic",
    "sanitize_tool_id",
]
