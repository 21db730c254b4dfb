"""Anthropic content blocks -> OpenAI message content (parts, tool messages).

Used by `openai_request` for user turns, tool results and system prompts
(protocols.md §3.1, §3.2, §3.4):

* text blocks -> text parts; empty ones are skipped (Anthropic rejects them and
  they carry nothing); where OpenAI wants one string (system prompts, text-only
  tool results) the texts are joined with `TEXT_JOINER`;
* image blocks -> `image_url` parts: a base64 source becomes a data URL
  (media type defaulting to image/jpeg, as LiteLLM does), a url source its URL;
* document blocks -> a base64 PDF becomes a `file` part with a data URL and a
  filename (the title, else "document.pdf"); a plain-text or content document
  becomes text parts;
* a `tool_result` block -> one ``{"role": "tool"}`` message: string content
  stays a string, text blocks are joined, content with images becomes an array
  of parts; OpenAI has no error flag, so `is_error: true` prefixes the content
  with `TOOL_ERROR_PREFIX` to keep the failure visible to the model.

Sources an OpenAI-compatible backend cannot fetch (Anthropic file ids, document
URLs) and block types it cannot express are a 400 naming the offending field.
"""

from __future__ import annotations

from typing import Any

from core.errors import ProxyError

__all__ = [
    "CANNOT_SEND",
    "CAN_SEND",
    "TEXT_JOINER",
    "TOOL_ERROR_PREFIX",
    "block_list",
    "invalid_request",
    "system_messages",
    "text_of",
    "tool_message",
    "user_parts",
]

TOOL_ERROR_PREFIX = "Error: "
TEXT_JOINER = "\n"
CAN_SEND = "can be sent to an OpenAI-compatible backend"
CANNOT_SEND = "cannot be sent to an OpenAI-compatible backend"


def invalid_request(param: str, message: str) -> ProxyError:
    """A 400 naming the offending field, in Anthropic's ``messages.1.content.0: ...`` style."""
    return ProxyError(400, f"{param}: {message}", type="invalid_request_error", param=param)


def block_list(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise invalid_request(where, "must be a string or a list of content blocks")
    return content


def text_of(block: dict[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise invalid_request(f"{where}.text", "must be a string")
    return text


def _joined_text(content: Any, where: str) -> str:
    """String or list of text blocks (system prompts) -> one string."""
    if isinstance(content, str):
        return content
    texts = []
    for j, block in enumerate(block_list(content, where)):
        if block.get("type") != "text":
            raise invalid_request(f"{where}.{j}.type", "only text blocks are allowed here")
        texts.append(text_of(block, f"{where}.{j}"))
    return TEXT_JOINER.join(t for t in texts if t)


def system_messages(content: Any, where: str) -> list[dict[str, Any]]:
    text = _joined_text(content, where)
    return [{"role": "system", "content": text}] if text else []


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source.get("data"), str):
        media_type = source.get("media_type") or "image/jpeg"  # LiteLLM's default (§3.2)
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{source['data']}"}}
    if kind == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise invalid_request(f"{where}.source", f"only base64 and url image sources {CAN_SEND}")


def _document_parts(block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    title = block.get("title") if isinstance(block.get("title"), str) else ""
    if kind == "base64" and isinstance(source.get("data"), str):
        data_url = f"data:{source.get('media_type') or 'application/pdf'};base64,{source['data']}"
        return [{"type": "file", "file": {"filename": title or "document.pdf", "file_data": data_url}}]
    if kind == "text" and isinstance(source.get("data"), str):
        text = TEXT_JOINER.join(t for t in (title, source["data"]) if t)
        return [{"type": "text", "text": text}] if text else []
    if kind == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            return [{"type": "text", "text": inner}] if inner else []
        blocks = block_list(inner, f"{where}.source.content")
        return [p for j, b in enumerate(blocks) for p in user_parts(b, f"{where}.source.content.{j}")]
    raise invalid_request(f"{where}.source", f"only base64, text and content document sources {CAN_SEND}")


def user_parts(block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """One user content block -> OpenAI content parts (empty text -> none)."""
    kind = block.get("type")
    if kind == "text":
        text = text_of(block, where)
        return [{"type": "text", "text": text}] if text else []
    if kind == "image":
        return [_image_part(block, where)]
    if kind == "document":
        return _document_parts(block, where)
    raise invalid_request(f"{where}.type", f"a {kind!r} block in a user turn {CANNOT_SEND}")


def tool_message(block: dict[str, Any], where: str) -> dict[str, Any]:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise invalid_request(f"{where}.tool_use_id", "must be a non-empty string")
    content = block.get("content")
    result: str | list[dict[str, Any]]
    if content is None or isinstance(content, str):
        result = content or ""
    else:
        blocks = block_list(content, f"{where}.content")
        parts = [p for j, b in enumerate(blocks) for p in user_parts(b, f"{where}.content.{j}")]
        texts = [p["text"] for p in parts if p["type"] == "text"]
        result = TEXT_JOINER.join(texts) if len(texts) == len(parts) else parts
    if block.get("is_error") is True:
        result = _with_error_prefix(result)
    return {"role": "tool", "tool_call_id": tool_use_id, "content": result}


def _with_error_prefix(result: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if isinstance(result, str):
        return TOOL_ERROR_PREFIX + result
    if result and result[0]["type"] == "text":
        return [{"type": "text", "text": TOOL_ERROR_PREFIX + result[0]["text"]}, *result[1:]]
    return [{"type": "text", "text": TOOL_ERROR_PREFIX.rstrip()}, *result]
