"""OpenAI message content parts -> Anthropic content blocks.

Theory of operation: `content_blocks` turns one OpenAI ``content`` value (a
string or an array of parts) into a list of Anthropic blocks, checking each part
type against the set the message's role may carry (`USER_PARTS`, ...).  It is
the only place that knows about media:

* text parts -> ``text`` blocks, keeping a ``cache_control`` marker if the
  client sent one (LiteLLM honours it too); empty and whitespace-only text is
  skipped because Anthropic rejects such blocks (protocols.md §2.2);
* ``image_url`` parts: base64 data URLs -> ``image`` blocks with a ``base64``
  source (``application/pdf`` -> a ``document`` block, as Portkey does), http(s)
  URLs -> a ``url`` source (§3.2; newer Portkey's choice, not LiteLLM's
  download-and-inline: the core does no I/O);
* ``file`` parts with inline ``file_data`` (a data URL or bare base64, typed by
  its filename or its first bytes) -> ``document`` or ``image`` blocks.
  ``file_id`` references point into OpenAI's file store, which an Anthropic
  backend cannot read: 400.

Every error is a 400 ``invalid_request_error`` whose message and ``param`` name
the part (``messages[2].content[1].image_url.url``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from ..errors import ProxyError

__all__ = ["ASSISTANT_PARTS", "SYSTEM_PARTS", "TOOL_PARTS", "USER_PARTS", "content_blocks"]

# Content part types each role may carry (protocols.md §1.2).  Tool results may
# also carry images, which Anthropic's tool_result accepts.
SYSTEM_PARTS = frozenset({"text"})
USER_PARTS = frozenset({"text", "image_url", "file"})
ASSISTANT_PARTS = frozenset({"text", "refusal"})
TOOL_PARTS = frozenset({"text", "image_url"})

_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_DATA_URL = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),(.*)$", re.DOTALL)
# Leading base64 characters of common formats, for data URLs without a type.
_MEDIA_TYPE_BY_MAGIC = {
    "/9j/": "image/jpeg",
    "iVBORw0KGgo": "image/png",
    "R0lGOD": "image/gif",
    "UklGR": "image/webp",
    "JVBERi0": "application/pdf",
}
_MEDIA_TYPE_BY_SUFFIX = {
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}


def _invalid(message: str, param: str | None = None) -> ProxyError:
    return ProxyError(400, message, type="invalid_request_error", param=param)


def _text_block(text: str, part: dict[str, Any] | None = None) -> dict[str, Any] | None:
    # Anthropic rejects empty and whitespace-only text blocks (§2.2).
    if not text.strip():
        return None
    block: dict[str, Any] = {"type": "text", "text": text}
    if part is not None and isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _sniff_media_type(data: str, filename: Any = None) -> str | None:
    if isinstance(filename, str):
        for suffix, media_type in _MEDIA_TYPE_BY_SUFFIX.items():
            if filename.lower().endswith(suffix):
                return media_type
    return next((kind for magic, kind in _MEDIA_TYPE_BY_MAGIC.items() if data.startswith(magic)), None)


def _base64_block(media_type: str | None, data: str, where: str) -> dict[str, Any]:
    if not media_type:
        raise _invalid(f"{where}: cannot tell the media type of the inline data", where)
    media_type = "image/jpeg" if media_type == "image/jpg" else media_type
    kind = "document" if media_type == "application/pdf" else "image"
    if kind == "image" and not media_type.startswith("image/"):
        raise _invalid(f"{where}: unsupported media type {media_type!r} (images and PDF only)", where)
    return {"type": kind, "source": {"type": "base64", "media_type": media_type, "data": data}}


def _block_from_url(url: str, where: str, filename: Any = None) -> dict[str, Any]:
    """Data URL -> base64 image/document; http(s) URL -> url source (§3.2, §7.6).

    For http(s) URLs we follow newer Portkey (a ``url`` source that Anthropic
    fetches), not LiteLLM's download-and-inline: the core does no I/O.
    """
    match = _DATA_URL.match(url)
    if match:
        media_type, params, data = match.group(1).strip().lower(), match.group(2), match.group(3)
        if ";base64" not in params.lower():
            raise _invalid(f"{where}: only base64 data URLs are supported", where)
        return _base64_block(media_type or _sniff_media_type(data, filename), data, where)
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        kind = "document" if parts.path.lower().endswith(".pdf") else "image"
        return {"type": kind, "source": {"type": "url", "url": url}}
    raise _invalid(f"{where}: expected an http(s) URL or a base64 data URL", where)


def _image_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str) or not url:
        raise _invalid(f"{where}.image_url.url must be a non-empty string", f"{where}.image_url.url")
    return _block_from_url(url, f"{where}.image_url.url")


def _file_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    spec = part.get("file")
    spec = spec if isinstance(spec, dict) else {}
    data, filename = spec.get("file_data"), spec.get("filename")
    if not isinstance(data, str) or not data:
        raise _invalid(f"{where}.file: only inline 'file_data' is supported (no 'file_id')", f"{where}.file")
    if data.startswith("data:"):
        return _block_from_url(data, f"{where}.file.file_data", filename)
    if not _BASE64.fullmatch(data):
        raise _invalid(f"{where}.file.file_data is neither a data URL nor base64", f"{where}.file")
    return _base64_block(_sniff_media_type(data, filename), data, f"{where}.file.file_data")


def _part_block(part: Any, where: str, allowed: frozenset[str]) -> dict[str, Any] | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind not in allowed:
        raise _invalid(f"{where}: content part type {kind!r} is not supported here", where)
    if kind == "image_url":
        return _image_part(part, where)
    if kind == "file":
        return _file_part(part, where)
    text = part.get(kind)  # "text" or "refusal": both carry a string of the same name
    if not isinstance(text, str):
        raise _invalid(f"{where}.{kind} must be a string", where)
    return _text_block(text, part)


def content_blocks(content: Any, where: str, allowed: frozenset[str]) -> list[dict[str, Any]]:
    """Anthropic blocks for an OpenAI ``content`` value found at `where` (e.g. ``messages[2].content``).

    `allowed` is the set of part types the message's role may carry; empty text
    yields no block, so the result may be empty.
    """
    if content is None:
        return []
    if isinstance(content, str):
        block = _text_block(content)
        return [block] if block else []
    if not isinstance(content, list):
        raise _invalid(f"{where} must be a string or an array of content parts", where)
    blocks = (_part_block(part, f"{where}[{j}]", allowed) for j, part in enumerate(content))
    return [block for block in blocks if block is not None]
