"""One client request against one deployment, decided without doing any I/O.

Theory of operation: the adapter parses the client's body once and builds an
`Exchange` for the chosen deployment.  The exchange answers three questions,
all synchronously:

1. `upstream_request()`: what exactly to send (path below the deployment's
   endpoint, headers, body bytes, whether it is a stream);
2. `response(status, headers, body)`: what the client gets for a complete
   upstream reply (translated, transformed, or the very same bytes);
3. `stream()`: a `StreamRelay` that turns upstream body pieces into client
   body pieces as they arrive (one client write per upstream read).

The route decides how much work that is.  On a *pass-through* route (the client
and the backend speak the same protocol) with no transforms configured, the
request body is forwarded byte for byte (re-serialised only when the model name
must be rewritten) and stream events are re-framed from their decoded strings
without any JSON parsing.  A *translating* route runs the core translators, with
OpenAI Chat Completions as the pivot: an Anthropic client on an Ollama backend
goes Anthropic -> OpenAI -> Ollama on the way up and back the same way down.
The `mock` backend answers from `core.mock` through the same pivot.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import Any

import attrs

from .errors import (
    ProxyError,
    anthropic_error_body,
    error_from_anthropic_body,
    error_from_openai_body,
    openai_error_body,
)
from .headers import override
from .relay import StreamRelay, Translator
from .sse import SSEDecoder
from .ndjson import NDJSONDecoder
from .translate import anthropic_backend, count_tokens, ollama_backend, openai_backend
from . import mock

__all__ = ["ClientProtocol", "Exchange", "Ids", "UpstreamRequest", "error_body", "dumps"]

DEFAULT_ANTHROPIC_VERSION = "2023-06-01"


class ClientProtocol(enum.Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


# The wire protocol each backend type speaks, and the path below its endpoint.
_WIRE = {
    "openai": ("openai", "/chat/completions"),
    "openai-compatible": ("openai", "/chat/completions"),
    "anthropic": ("anthropic", "/v1/messages"),
    "ollama": ("ollama", "/api/chat"),
    "mock": ("mock", ""),
}
# On a translating route, the client's vendor-specific headers (SDK telemetry,
# `anthropic-beta`, `openai-organization`...) mean nothing to the other vendor.
_FOREIGN_PREFIXES = {
    "openai": ("x-stainless-", "anthropic-"),
    "anthropic": ("x-stainless-", "openai-"),
    "ollama": ("x-stainless-", "anthropic-", "openai-"),
    "mock": ("x-stainless-",),
}
# Backends that refuse requests without a key: a missing key is our config error.
_KEY_REQUIRED = frozenset({"openai", "anthropic"})


def dumps(obj: Any) -> bytes:
    """Compact JSON as every vendor sends it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def error_body(client: ClientProtocol, err: ProxyError) -> bytes:
    if client is ClientProtocol.ANTHROPIC:
        return dumps(anthropic_error_body(err))
    return dumps(openai_error_body(err))


@attrs.frozen
class Ids:
    """Fresh identifiers and the current time, supplied by the adapter."""

    token: str
    created: int

    @property
    def completion_id(self) -> str:
        return f"chatcmpl-{self.token}"

    @property
    def message_id(self) -> str:
        return f"msg_{self.token}"


@attrs.frozen
class UpstreamRequest:
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    stream: bool


@attrs.frozen
class ClientResponse:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = attrs.field(factory=list)


class Exchange:
    """See the module docstring.  Built per request and attempt; cheap to build."""

    def __init__(
        self,
        *,
        client: ClientProtocol,
        body: dict[str, Any],
        raw: bytes,
        model_name: str,
        model: Any,
        deployment: Any,
        client_headers: Sequence[tuple[str, str]],
        ids: Ids,
        count_tokens: bool = False,
        route_name: str | None = None,
    ) -> None:
        self.client = client
        self.body = body
        self.raw = raw
        self.model_name = model_name
        self.model = model
        self.deployment = deployment
        self.client_headers = client_headers
        self.ids = ids
        self.wire, self.path = _WIRE[deployment.backend_type]
        self.count_tokens = count_tokens
        if count_tokens:
            self.path += "/count_tokens"
        self.stream_requested = body.get("stream") is True and not count_tokens
        # A pattern route sends the name the client asked for; a fallback model
        # sends its own name; `upstream_model` overrides both.
        self.upstream_model = deployment.upstream_model or route_name or model_name
        self._translated: dict[str, Any] | None = None

    @property
    def is_mock(self) -> bool:
        return self.wire == "mock"

    @property
    def passthrough(self) -> bool:
        return self.wire == self.client.value

    @property
    def local_answer(self) -> bool:
        """Answered without an upstream: the mock, or a token count only Anthropic can do."""
        return self.is_mock or (self.count_tokens and self.wire != "anthropic")

    def local_response(self) -> ClientResponse | list[bytes]:
        if self.count_tokens:
            estimate = count_tokens.estimate_input_tokens(self.body)
            return ClientResponse(200, dumps({"input_tokens": estimate}))
        return self.mock_response()

    # -- the request --------------------------------------------------------------

    def upstream_request(self) -> UpstreamRequest:
        """What to send upstream.  Raises ProxyError for bad input or a missing key."""
        key = self._credential()
        body = self._upstream_body()
        forwarded = self.model.headers.apply(self.client_headers)
        if not self.passthrough:
            forwarded = [item for item in forwarded if not item[0].startswith(_FOREIGN_PREFIXES[self.wire])]
        headers = override(forwarded, self._protocol_headers(key, forwarded))
        self._request = UpstreamRequest(path=self.path, headers=headers, body=body, stream=self.stream_requested)
        return self._request

    def _credential(self) -> str | None:
        key = self.deployment.api_key
        if key is None and self.deployment.backend_type in _KEY_REQUIRED:
            where = f"set {self.deployment.api_key_env}" if self.deployment.api_key_env else "set its api_key"
            raise ProxyError(
                500,
                f"model {self.model.name!r} has no API key configured for its "
                f"{self.deployment.backend_type} backend: {where}",
                type="configuration_error",
                should_retry=False,
            )
        return key

    def _upstream_body(self) -> bytes:
        transforms = self.model.transforms.request
        if self.passthrough:
            if transforms.is_empty and self.upstream_model == self.model_name:
                return self.raw  # untouched bytes: the hot path
            translated = dict(self.body, model=self.upstream_model)
        else:
            translated = self._translate_request()
        if not transforms.is_empty:
            translated = transforms.apply(translated)
        self._translated = translated
        return dumps(translated)

    def retry_without_think(self, status: int, body: bytes) -> UpstreamRequest | None:
        """A second request for an Ollama model that refused `think`, else None.

        Claude Code asks for thinking on every request; many local models
        cannot think and Ollama answers 400.  The answer without reasoning is
        the one the model can give, so the exchange re-sends once without it.
        """
        if self.wire != "ollama" or status != 400 or self._translated is None:
            return None
        try:
            err = ollama_backend.error_from_ollama(status, json.loads(body))
        except ValueError:
            return None
        fixed = ollama_backend.request_without_think(self._translated, err)
        if fixed is None:
            return None
        self._translated = fixed
        return attrs.evolve(self._request, body=dumps(fixed))

    def _translate_request(self) -> dict[str, Any]:
        body = self.body
        if self.client is ClientProtocol.ANTHROPIC:
            body = openai_backend.request_to_openai(body, model=self.upstream_model)
            if self.wire == "ollama" and "top_k" in self.body:
                # OpenAI has no top_k, so the pivot drops it; Ollama has one.
                body["top_k"] = self.body["top_k"]
        if self.wire == "anthropic":
            return anthropic_backend.request_to_anthropic(
                body, model=self.upstream_model, default_max_tokens=self.model.default_max_tokens
            )
        if self.wire == "ollama":
            return ollama_backend.request_to_ollama(body, model=self.upstream_model)
        return body

    def _protocol_headers(self, key: str | None, forwarded: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Set last, replacing whatever the client sent under the same names.

        The proxy asks for `identity` so that it can decode streams itself; the
        backend credential is injected last and wins over any forwarded one.
        """
        headers = [("content-type", "application/json"), ("accept-encoding", "identity")]
        if self.wire == "anthropic":
            if key is not None:
                headers.append(("x-api-key", key))
            if not any(name == "anthropic-version" for name, _ in forwarded):
                headers.append(("anthropic-version", DEFAULT_ANTHROPIC_VERSION))
        elif key is not None:
            headers.append(("authorization", f"Bearer {key}"))
        return headers

    # -- a complete response ------------------------------------------------------

    def response(self, status: int, headers: Sequence[tuple[str, str]], body: bytes) -> ClientResponse:
        """The client's response for a complete upstream reply."""
        if status >= 400:
            return self._error_response(status, headers, body)
        transforms = self.model.transforms.response
        if self.passthrough and transforms.is_empty:
            return ClientResponse(status, body, _content_type(headers))
        try:
            parsed = json.loads(body)
        except ValueError:
            raise ProxyError(502, "upstream returned a body that is not JSON", type="api_error") from None
        if not isinstance(parsed, dict):
            raise ProxyError(502, "upstream returned JSON that is not an object", type="api_error")
        out = parsed if self.passthrough else self._translate_response(parsed)
        if not transforms.is_empty:
            out = transforms.apply(out)
        return ClientResponse(200 if not self.passthrough else status, dumps(out))

    def _translate_response(self, parsed: dict[str, Any]) -> dict[str, Any]:
        ids, name = self.ids, self.model_name
        if self.wire == "anthropic":
            return anthropic_backend.response_from_anthropic(parsed, model=name, created=ids.created)
        if self.wire == "ollama":
            parsed = ollama_backend.response_from_ollama(
                parsed, model=name, created=ids.created, completion_id=ids.completion_id
            )
        if self.client is ClientProtocol.ANTHROPIC:
            return openai_backend.response_from_openai(parsed, model=name, message_id=ids.message_id)
        return parsed

    def _error_response(self, status: int, headers: Sequence[tuple[str, str]], body: bytes) -> ClientResponse:
        if self.passthrough:
            return ClientResponse(status, body, _content_type(headers))
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = {"error": {"message": body[:500].decode(errors="replace") or f"HTTP {status}"}}
        if self.wire == "anthropic":
            err = error_from_anthropic_body(status, parsed)
        elif self.wire == "ollama":
            err = ollama_backend.error_from_ollama(status, parsed, model=self.upstream_model)
        else:
            err = error_from_openai_body(status, parsed)
        return ClientResponse(status, error_body(self.client, err))

    # -- mock -----------------------------------------------------------------------

    def mock_response(self) -> ClientResponse | list[bytes]:
        """The mock backend's reply: a ClientResponse, or the stream's pieces."""
        body = self.body
        if self.client is ClientProtocol.ANTHROPIC:
            body = openai_backend.request_to_openai(body, model=self.upstream_model)
        ids = self.ids
        if not self.stream_requested:
            reply = mock.mock_completion(body, model=self.model_name, created=ids.created,
                                         completion_id=ids.completion_id)
            return self.response(200, [], dumps(reply))
        chunks = mock.mock_stream(body, model=self.model_name, created=ids.created, completion_id=ids.completion_id)
        relay = self._relay(items=True)
        return [piece for piece in (relay.feed_items([chunk]) for chunk in chunks) if piece]

    # -- a stream -------------------------------------------------------------------

    def stream(self) -> StreamRelay:
        """A relay for the upstream's 2xx event stream."""
        return self._relay(items=False)

    def _relay(self, *, items: bool) -> StreamRelay:
        wire = "openai" if self.is_mock else self.wire
        decoder = None if items else (NDJSONDecoder() if wire == "ollama" else SSEDecoder())
        return StreamRelay(
            client=self.client.value,
            wire=wire,
            decoder=decoder,
            translators=self._translators(wire),
            transforms=self.model.transforms.response,
        )

    def _translators(self, wire: str) -> list[Translator]:
        ids, name = self.ids, self.model_name
        chain: list[Translator] = []
        include_usage = bool((self.body.get("stream_options") or {}).get("include_usage"))
        if wire == "anthropic" and self.client is ClientProtocol.OPENAI:
            chain.append(anthropic_backend.AnthropicToOpenAIStream(
                model=name, created=ids.created, message_id=ids.message_id, include_usage=include_usage))
        if wire == "ollama":
            chain.append(ollama_backend.OllamaToOpenAIStream(
                model=name, created=ids.created, completion_id=ids.completion_id,
                include_usage=include_usage or self.client is ClientProtocol.ANTHROPIC))
        if wire in ("openai", "ollama") and self.client is ClientProtocol.ANTHROPIC:
            # Anthropic clients read input tokens from message_start, before an
            # OpenAI upstream reports any: give them the core's estimate.
            estimate = count_tokens.estimate_input_tokens(self.body)
            chain.append(openai_backend.OpenAIToAnthropicStream(
                model=name, message_id=ids.message_id, input_tokens_estimate=estimate))
        return chain


def _content_type(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    for name, value in headers:
        if name == "content-type":
            return [(name, value)]
    return []

