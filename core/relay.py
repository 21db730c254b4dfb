"""Stream relay: upstream body pieces in, client body pieces out.

Theory of operation: a relay is the streaming half of an exchange.  The adapter
feeds it each piece of upstream body as it arrives and writes whatever it
returns to the client at once, so the client sees one write per upstream read
and nothing is buffered beyond an incomplete event.

    bytes -> decoder (SSE or NDJSON) -> items -> translators -> transforms -> encoder -> bytes

* Pass-through (no translators, no response transforms): events are re-framed
  from their decoded strings, never JSON-parsed, so unknown event types and
  fields reach the client intact.
* Translating: each decoded event becomes a JSON item and goes through the chain
  of stream translators (OpenAI chunks are the pivot), then through the
  response transforms, then the client's encoder.

The relay knows when the client's stream is complete (OpenAI ``[DONE]``,
Anthropic ``message_stop``, or an error event).  If the upstream body ends
before that, or anything fails on the way, the client gets one error event in
its own protocol and the stream ends cleanly; after that, nothing more is sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from .errors import ProxyError, TranslationError, anthropic_error_body, openai_error_body, status_for_error_type
from .sse import DONE, DONE_EVENT, ServerSentEvent, encode_event, encode_json

__all__ = ["StreamRelay", "Translator"]


class Translator(Protocol):
    def feed(self, item: Any) -> list[Any]: ...
    def finish(self) -> list[Any]: ...


class Decoder(Protocol):
    def feed(self, chunk: bytes) -> list[Any]: ...
    def finish(self) -> list[Any]: ...


_TRUNCATED = "upstream stream ended before it was complete"


class StreamRelay:
    def __init__(
        self,
        *,
        client: str,
        wire: str,
        decoder: Decoder | None,
        translators: list[Translator],
        transforms: Any,
    ) -> None:
        self.client = client
        self.wire = wire
        self.decoder = decoder
        self.translators = translators
        self.transforms = None if transforms.is_empty else transforms
        self.raw = not translators and self.transforms is None
        # Called with each decoded upstream event (an SSE event, or a parsed NDJSON line),
        # before translation: the adapter's log summary reads them without decoding twice.
        self.listener: Callable[[Any], None] | None = None
        self.done = False
        self.events = 0  # client events written, for logs
        # The failure the client's stream ended with, if it ended with one: when
        # it is the very first event, the adapter may still answer with a real
        # status (or retry) instead of a 200 carrying only an error.
        self.error: ProxyError | None = None

    # -- the adapter's calls ----------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Client bytes for one upstream piece (possibly b"")."""
        if self.done or self.decoder is None:
            return b""
        try:
            return self._handle(self._heard(self.decoder.feed(data)))
        except ProxyError as err:
            return self.fail(err)

    def feed_items(self, items: list[Any]) -> bytes:
        """Client bytes for already-decoded upstream items (the mock backend)."""
        try:
            return b"".join(self._translated(item) for item in items)
        except ProxyError as err:
            return self.fail(err)

    def finish(self) -> bytes:
        """Client bytes at the end of the upstream body."""
        if self.done:
            return b""
        out = b""
        try:
            if self.decoder is not None:
                out += self._handle(self._heard(self.decoder.finish()))
            out += self._drain_translators()
        except ProxyError as err:
            return out + self.fail(err)
        if not self.done:
            out += self.fail(TranslationError(_TRUNCATED))
        return out

    def fail(self, err: ProxyError) -> bytes:
        """One error event in the client's protocol; the stream is over."""
        if self.done:
            return b""
        self.done = True
        self.events += 1
        self.error = err
        if self.client == "anthropic":
            return encode_json(anthropic_error_body(err), event="error")
        return encode_json(openai_error_body(err))

    # -- internals ---------------------------------------------------------------------

    def _heard(self, decoded: list[Any]) -> list[Any]:
        if self.listener is not None:
            for event in decoded:
                self.listener(event)
        return decoded

    def _handle(self, decoded: list[Any]) -> bytes:
        if not decoded:
            return b""
        if self.raw:
            return b"".join(self._reframed(event) for event in decoded)
        return b"".join(self._translated(self._item(event)) for event in decoded)

    def _reframed(self, event: ServerSentEvent) -> bytes:
        if self.done:
            return b""
        self.events += 1
        if self.client == "openai":
            if event.data == DONE:
                self.done = True
                return DONE_EVENT
            if event.data.startswith('{"error"'):
                self._note_error(event.data)
            return encode_event(event.data)
        if event.event == "message_stop":
            self.done = True
        elif event.event == "error":
            self._note_error(event.data)
        return encode_event(event.data, event=event.event)

    def _note_error(self, data: str | dict[str, Any]) -> None:
        """Remember an error event passing through; the stream is over."""
        self.done = True
        try:
            body = json.loads(data) if isinstance(data, str) else data
        except ValueError:
            body = {}
        inner = body.get("error") if isinstance(body, dict) else None
        inner = inner if isinstance(inner, dict) else {}
        kind = inner.get("type") if isinstance(inner.get("type"), str) else "api_error"
        message = inner.get("message") if isinstance(inner.get("message"), str) else "upstream stream failed"
        self.error = ProxyError(status_for_error_type(kind), message, type=kind)

    def _item(self, event: Any) -> Any:
        if self.wire == "ollama":
            return event  # NDJSON: already parsed
        if self.wire == "openai" and event.data == DONE:
            return DONE
        try:
            item = json.loads(event.data)
        except ValueError:
            raise TranslationError(f"upstream sent an event that is not JSON: {event.data[:200]!r}") from None
        if self.wire == "anthropic" and isinstance(item, dict) and "type" not in item:
            item["type"] = event.event
        return item

    def _translated(self, item: Any) -> bytes:
        outputs = [item]
        for translator in self.translators:
            outputs = [out for each in outputs for out in translator.feed(each)]
        return self._encode_all(outputs)

    def _drain_translators(self) -> bytes:
        outputs: list[Any] = []
        for translator in self.translators:
            outputs = [out for each in outputs for out in translator.feed(each)]
            outputs.extend(translator.finish())
        return self._encode_all(outputs)

    def _encode_all(self, outputs: list[Any]) -> bytes:
        return b"".join(self._encode(out) for out in outputs)

    def _encode(self, out: Any) -> bytes:
        if self.done:
            return b""
        self.events += 1
        if out == DONE:
            self.done = True
            return DONE_EVENT
        if self.transforms is not None:
            out = self.transforms.apply(out)
        if self.client == "anthropic":
            name = out.get("type", "message")
            if name == "message_stop":
                self.done = True
            elif name == "error":
                self._note_error(out)
            return encode_json(out, event=name)
        if "error" in out:
            self._note_error(out)
        return encode_json(out)

