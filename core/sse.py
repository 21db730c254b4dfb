"""Server-Sent Events: bytes -> `ServerSentEvent` values, and strict encoders back to bytes.

Theory of operation
-------------------
`SSEDecoder` implements the event-stream interpretation of WHATWG HTML §9.2.6
(protocols.md §5) incrementally: the adapter calls `feed()` once per network
read and `finish()` once at end of stream; each call returns the events that
became complete.

The decoder works on *bytes* and decodes UTF-8 only per field value.  That is
exact, not an approximation: the only bytes the parser looks at (CR, LF, ``:``,
space, NUL) are ASCII, and in UTF-8 an ASCII byte never occurs inside a
multi-byte sequence.  So a character split across two reads simply stays in the
buffered partial line until its line is complete, and no streaming text decoder
is needed.  Invalid UTF-8 becomes U+FFFD (``errors="replace"``), as §9.2.6's
"UTF-8 decode" does.

Buffering: an incomplete trailing line is kept as a list of byte pieces and
joined only when a line terminator arrives, so a huge line that trickles in
over many small reads costs linear, not quadratic, time.

Line endings (§9.2.6 ABNF ``end-of-line = ( cr lf / cr / lf )``): the common
upstream stream uses only LF, so a chunk without CR takes the fast path
``bytes.split(b"\\n")``; otherwise a regex splits on CRLF, CR or LF.  A chunk
that ends in CR has already ended its line; we remember that, and drop an LF at
the very start of the next chunk so that a CRLF split between two reads is one
terminator, not a terminator plus an empty line (an empty line would dispatch
the pending event early: ``data: a\\r`` + ``\\ndata: b\\n\\n`` is one
event with data ``"a\\nb"``, not two).

Deviation from the spec, on purpose: at end of stream the spec discards a
pending event that was not terminated by a blank line (§9.2.6 "Once the end of
the file is reached, any pending data must be discarded").  Some upstreams
forget the final blank line (a last ``data: [DONE]`` with no ``\\n\\n``), and
dropping that event loses the end of a completion, so `finish()` first
interprets an unterminated last line and then dispatches a pending event that
has data.  We are tolerant when consuming and strict when producing: every
encoder here ends each event with a blank line.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

__all__ = [
    "DONE",
    "DONE_EVENT",
    "SSEDecoder",
    "ServerSentEvent",
    "encode_comment",
    "encode_event",
    "encode_json",
]

# The OpenAI end-of-stream sentinel (protocols.md §1.4): a data string that is
# not JSON and must never be handed to a JSON parser.
DONE = "[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"

_BOM = b"\xef\xbb\xbf"  # §9.2.6: one leading U+FEFF is dropped, only at stream start
_EOL = re.compile(rb"\r\n|\r|\n")
_EOL_STR = re.compile(r"\r\n|\r|\n")
_LF = 0x0A
_SURROGATE = re.compile("[\ud800-\udfff]")


@attrs.frozen
class ServerSentEvent:
    """One dispatched event (§9.2.6 "dispatch the event").

    `event` is the event type, ``"message"`` when the block had no or an empty
    ``event:`` field.  `data` is the ``data:`` lines joined with ``"\\n"``.
    `id` is the stream's last event ID at dispatch time: it persists across
    events until the server sends another ``id:`` (None if it never did; ``""``
    if it sent an empty one, which is how a server clears it).  `retry` is the
    reconnection time in milliseconds in force at dispatch time, likewise
    persistent (None until the server sends a valid ``retry:``).
    """

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None

    def __attrs_post_init__(self) -> None:
        # One hand-written check instead of four attrs validators: this value is
        # built once per streamed event; measured, the validators added ~60% to
        # construction, this check ~10%.
        if not isinstance(self.event, str) or not isinstance(self.data, str):
            raise TypeError(f"event and data must be str: {self.event!r}, {self.data!r}")
        if self.id is not None and not isinstance(self.id, str):
            raise TypeError(f"id must be a str or None, not {self.id!r}")
        retry = self.retry
        if retry is not None and (type(retry) is not int or retry < 0):  # bool is not a delay
            raise ValueError(f"retry must be a non-negative int or None, not {retry!r}")


class SSEDecoder:
    """Incremental event-stream parser: `feed(bytes)` -> events, then `finish()`.

    One decoder per stream.  After `finish()` the decoder is closed: `feed()`
    raises RuntimeError (a caller bug), `finish()` again returns ``[]``.
    """

    def __init__(self) -> None:
        self._partial: list[bytes] = []  # pieces of the current, unterminated line (no CR/LF inside)
        self._skip_lf = False  # the previous chunk ended in CR: an LF next completes that CRLF
        self._bom_checked = False
        self._closed = False
        self._data: list[bytes] = []  # data buffer, one entry per data: line
        self._event = ""  # event type buffer
        self._last_id: str | None = None  # last event ID buffer (persists, §9.2.6)
        self._retry: int | None = None  # reconnection time (persists)

    @property
    def last_event_id(self) -> str | None:
        """The last event ID the server set (what a reconnect sends as Last-Event-ID)."""
        return self._last_id

    @property
    def retry(self) -> int | None:
        """The reconnection time in milliseconds the server asked for, if any."""
        return self._retry

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Consume one network read; return the events it completed, in order."""
        if self._closed:
            raise RuntimeError("SSEDecoder.feed() called after finish()")
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
        if not self._bom_checked:
            chunk = self._strip_bom(chunk)
        if not chunk:
            return []
        if b"\n" not in chunk and b"\r" not in chunk:
            self._partial.append(chunk)  # no line ended: just remember the piece
            return []
        if self._partial:
            self._partial.append(chunk)
            chunk = b"".join(self._partial)
            self._partial = []
        if b"\r" in chunk:
            lines = _EOL.split(chunk)
            # A final CR ended its line already; an LF starting the next read is its tail.
            self._skip_lf = chunk[-1] == 0x0D
        else:
            lines = chunk.split(b"\n")  # fast path: LF-only streams (every major upstream)
        rest = lines.pop()
        if rest:
            self._partial.append(rest)
        return self._interpret(lines)

    def finish(self) -> list[ServerSentEvent]:
        """End of stream: interpret an unterminated last line, flush a pending event.

        Tolerant on purpose (see the module docstring): the spec would discard
        the pending event.
        """
        if self._closed:
            return []
        self._closed = True
        rest = b"".join(self._partial)
        self._partial = []
        events = self._interpret([rest]) if rest else []
        if self._data:
            events.append(self._dispatch())
        return events

    def _strip_bom(self, chunk: bytes) -> bytes:
        """Drop one UTF-8 BOM at the very start, even if it arrives split across reads."""
        head = b"".join(self._partial) + chunk
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._partial = [head] if head else []  # undecided yet: wait for more bytes
            return b""
        self._bom_checked = True
        self._partial = []
        return head[len(_BOM) :] if head.startswith(_BOM) else head

    def _interpret(self, lines: list[bytes]) -> list[ServerSentEvent]:
        """Apply §9.2.6 to complete lines; return the events they dispatched."""
        events: list[ServerSentEvent] = []
        for line in lines:
            if not line:  # blank line: dispatch, or just reset if there is no data
                if self._data:
                    events.append(self._dispatch())
                else:
                    self._event = ""
                continue
            name, colon, value = line.partition(b":")
            if colon:
                if not name:
                    continue  # ":" first: a comment (keep-alive heartbeats)
                if value[:1] == b" ":
                    value = value[1:]  # exactly one leading space, never more (§9.2.6)
            if name == b"data":
                self._data.append(value)
            else:
                self._set_field(name, value)
        return events

    def _set_field(self, name: bytes, value: bytes) -> None:
        """The fields other than data; unknown names are ignored (§9.2.6)."""
        if name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:  # an id containing NUL is ignored
                self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():  # bytes.isdigit(): ASCII digits only, and not empty
                self._retry = int(value)

    def _dispatch(self) -> ServerSentEvent:
        # Positional arguments: measurably cheaper than keywords on this hot path.
        event = ServerSentEvent(
            self._event or "message",  # event
            b"\n".join(self._data).decode("utf-8", "replace"),  # data
            self._last_id,  # id
            self._retry,  # retry
        )
        self._data = []
        self._event = ""
        return event


def _check_field(name: str, value: str) -> None:
    # A CR or LF would end the line early and smuggle in another field.
    if "\r" in value or "\n" in value:
        raise ValueError(f"SSE {name} must not contain CR or LF: {value!r}")


def _utf8(text: str) -> bytes:
    """UTF-8 bytes; lone surrogates (unencodable) become U+FFFD as in a USVString."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def encode_event(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    """One complete event, always terminated by a blank line.

    Each line of `data` (split at CRLF, CR or LF, the terminators a decoder
    recognises) becomes its own ``data:`` line, so the decoder gives back
    `data` with its line breaks normalised to ``"\\n"``.  `event` and `id` must
    be single lines; `id` must not contain NUL either, since a decoder ignores
    such an id (§9.2.6) and the event would silently lose it.
    """
    head = ""
    if event is not None:
        _check_field("event", event)
        head = f"event: {event}\n"
    if id is not None:
        _check_field("id", id)
        if "\x00" in id:
            raise ValueError(f"SSE id must not contain NUL: {id!r}")
        head += f"id: {id}\n"
    if "\n" in data or "\r" in data:
        body = "".join(f"data: {line}\n" for line in _EOL_STR.split(data))
    else:
        body = f"data: {data}\n"
    return _utf8(f"{head}{body}\n")



def encode_json(obj: Any, *, event: str | None = None) -> bytes:
    """``data: <compact JSON>`` as one event (plus ``event:`` if given).

    Compact JSON never contains a raw CR or LF (json.dumps escapes control
    characters), so it is always exactly one ``data:`` line.  A str holding a
    lone surrogate (json.loads accepts ``"\\ud83d"`` from upstream) cannot be
    UTF-8 encoded; we then fall back to ASCII escapes, which carry it through
    exactly as upstream sent it.
    """
    try:
        payload = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        payload = json.dumps(obj, separators=(",", ":")).encode("ascii")
    if event is None:
        return b"data: " + payload + b"\n\n"
    _check_field("event", event)
    return b"event: " + _utf8(event) + b"\ndata: " + payload + b"\n\n"


def encode_comment(text: str) -> bytes:
    """A comment line (``: text``) plus a blank line: a keep-alive that dispatches nothing."""
    _check_field("comment", text)
    return _utf8(f": {text}\n\n")
