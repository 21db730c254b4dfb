"""A deterministic input-token estimate for ``POST /v1/messages/count_tokens``.

Theory of operation: Anthropic backends answer count_tokens themselves (the
adapter passes the request through).  OpenAI-compatible and Ollama backends use
other tokenizers and have no such endpoint, so the proxy answers with an
estimate.  Claude Code uses the count to decide when to compact a conversation,
so what matters is that the number grows with everything the model will read
and is stable for the same input; exactness is impossible without the
backend's tokenizer.

The rule (the constants below):

* every string the model reads - system text, message text, thinking, tool
  result contents, tool names and inputs, and each tool definition (its JSON) -
  costs one token per 4 bytes of UTF-8, rounded up over the whole request (about
  4 characters per token in English; CJK text, at 3 bytes a character, counts
  closer to its real cost than a per-character rule would);
* each message, and the system prompt, adds `MESSAGE_OVERHEAD` (role markers);
* each tool adds `TOOL_OVERHEAD` on top of its JSON;
* each image costs `IMAGE_TOKENS` (Anthropic's documented cost of a ~1.15
  megapixel image, width*height/750, the size images are scaled down to);
* each PDF costs `DOCUMENT_TOKENS` (Anthropic documents 1,500-3,000 tokens per
  page; the page count is unknown without parsing the PDF).

Opaque values (ids, signatures, cache_control, base64 image data) cost nothing.
JSON is dumped with sorted keys, so key order does not change the estimate.
"""

from __future__ import annotations

import json
import math
from typing import Any

from core.errors import ProxyError

__all__ = [
    "BYTES_PER_TOKEN",
    "DOCUMENT_TOKENS",
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD",
    "TOOL_OVERHEAD",
    "estimate_input_tokens",
]

BYTES_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
TOOL_OVERHEAD = 8
IMAGE_TOKENS = 1600
DOCUMENT_TOKENS = 3000

# Keys whose values the model does not read as text.
_OPAQUE_KEYS = frozenset({"type", "id", "tool_use_id", "signature", "cache_control", "citations", "media_type"})


class _Tally:
    """Running totals: text bytes, and tokens with a fixed cost."""

    def __init__(self) -> None:
        self.text_bytes = 0
        self.fixed = 0

    def text(self, value: str) -> None:
        self.text_bytes += len(value.encode("utf-8"))

    def json(self, value: Any) -> None:
        self.text(json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")))

    def content(self, value: Any) -> None:
        """A content value: a string, a block, or a list of either."""
        if isinstance(value, str):
            self.text(value)
        elif isinstance(value, list):
            for item in value:
                self.content(item)
        elif isinstance(value, dict):
            self.block(value)

    def block(self, block: dict[str, Any]) -> None:
        kind = block.get("type")
        source = block.get("source") if isinstance(block.get("source"), dict) else {}
        if kind == "image":
            self.fixed += IMAGE_TOKENS
        elif kind == "document" and source.get("type") in ("base64", "url", "file"):
            self.fixed += DOCUMENT_TOKENS
        elif kind == "tool_use":
            self.text(str(block.get("name") or ""))
            self.json(block.get("input", {}))
        else:
            for key, value in block.items():
                if key not in _OPAQUE_KEYS:
                    self.content(value)


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """Estimated input tokens of an Anthropic Messages (or count_tokens) request."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise ProxyError(400, "messages: must be a list", type="invalid_request_error", param="messages")
    tally = _Tally()
    overhead = 0
    if body.get("system"):
        tally.content(body["system"])
        overhead += MESSAGE_OVERHEAD
    for message in body["messages"]:
        overhead += MESSAGE_OVERHEAD
        tally.content(message.get("content") if isinstance(message, dict) else None)
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    for tool in tools:
        overhead += TOOL_OVERHEAD
        if isinstance(tool, dict):
            tally.json({k: v for k, v in tool.items() if k != "cache_control"})
    return math.ceil(tally.text_bytes / BYTES_PER_TOKEN) + tally.fixed + overhead
