"""Newline-delimited JSON (Ollama's native streaming format): bytes <-> values.

Theory of operation: Ollama streams one JSON object per ``\\n``-terminated line
(protocols.md §4.2) and is not SSE.  `NDJSONDecoder.feed()` splits each network
read on LF, keeps an unterminated tail (as pieces, joined only once its line
ends, so a long line arriving in many small reads costs linear time), tolerates
CRLF by dropping one trailing CR, skips blank lines and parses the rest with
`json.loads`.  `finish()` parses a final line that lacks its LF.

A line that is not JSON is the upstream's fault: it raises
`TranslationError` (502) quoting the start of the line.  The decoder is then
broken, and later calls raise RuntimeError rather than silently resynchronise
on a stream already known to be corrupt.  A mid-stream ``{"error": ...}`` line
is valid JSON and is returned like any other object: recognising it is the
translator's job (§4.3).
"""

from __future__ import annotations

import json
from typing import Any

from core.errors import TranslationError

__all__ = ["NDJSONDecoder", "encode_ndjson"]

_QUOTE_LIMIT = 200  # characters of a bad line quoted in the error message


class NDJSONDecoder:
    """Incremental NDJSON parser: `feed(bytes)` -> parsed values, then `finish()`."""

    def __init__(self) -> None:
        self._partial: list[bytes] = []  # pieces of the current, unterminated line (no LF inside)
        self._closed = False
        self._failed = False

    def feed(self, chunk: bytes) -> list[Any]:
        """Consume one network read; return the values of the lines it completed."""
        self._check_usable()
        if self._closed:
            raise RuntimeError("NDJSONDecoder.feed() called after finish()")
        if b"\n" not in chunk:
            if chunk:
                self._partial.append(chunk)
            return []
        if self._partial:
            self._partial.append(chunk)
            chunk = b"".join(self._partial)
            self._partial = []
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if rest:
            self._partial.append(rest)
        return [self._parse(line) for line in lines if line.strip()]

    def finish(self) -> list[Any]:
        """End of stream: parse a last line that had no terminating LF."""
        self._check_usable()
        if self._closed:
            return []
        self._closed = True
        rest = b"".join(self._partial)
        self._partial = []
        return [self._parse(rest)] if rest.strip() else []

    def _check_usable(self) -> None:
        if self._failed:
            raise RuntimeError("NDJSONDecoder used after it reported a malformed line")

    def _parse(self, line: bytes) -> Any:
        # Decode explicitly: json.loads(bytes) would guess UTF-16/32 from NUL
        # patterns; the stream is UTF-8, and bad bytes become U+FFFD, as in SSE.
        # A trailing CR (CRLF line ending) is JSON whitespace, so loads ignores it.
        text = line.decode("utf-8", "replace")
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            self._failed = True
            quoted = text.strip()[:_QUOTE_LIMIT]
            raise TranslationError(
                f"upstream sent an NDJSON line that is not valid JSON ({exc.msg} at column {exc.colno}): {quoted!r}"
            ) from None


def encode_ndjson(obj: Any) -> bytes:
    """Compact JSON plus LF: one NDJSON line.

    json.dumps escapes control characters, so the line never contains a raw
    LF.  A str holding a lone surrogate cannot be UTF-8 encoded; we then fall
    back to ASCII escapes, which carry it through unchanged.
    """
    try:
        payload = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        payload = json.dumps(obj, separators=(",", ":")).encode("ascii")
    return payload + b"\n"
