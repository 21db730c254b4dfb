"""Errors as values, rendered in the protocol the client speaks.

Theory of operation: anything that goes wrong while serving a request becomes a
`ProxyError` carrying an HTTP status, a human message and, optionally, the
vendor error type it came from.  The adapter never formats an error itself: it
asks `openai_error_body` or `anthropic_error_body` for the body that matches the
client's protocol, so a client of either SDK always gets an error its SDK can
parse (OpenAI: ``{"error": {...}}``; Anthropic: ``{"type": "error", ...}``).

Error *types* are kept across protocols where the target can carry them (an
Anthropic ``overloaded_error`` reaches an OpenAI client as ``overloaded_error``
with status 529); otherwise the type follows from the status, as each vendor's
own table says (protocols.md §1.5, §2.5).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
    "ProxyError",
    "TranslationError",
    "anthropic_error_body",
    "anthropic_type_for_status",
    "error_from_anthropic_body",
    "error_from_openai_body",
    "openai_error_body",
    "openai_type_for_status",
    "status_for_error_type",
]

# Anthropic's documented error types by status (protocols.md §2.5).
_ANTHROPIC_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ANTHROPIC_ERROR_TYPES = frozenset(_ANTHROPIC_TYPE_BY_STATUS.values())

# OpenAI's error types by status (protocols.md §1.5).
_OPENAI_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ProxyError(Exception):
    """A failure with a status the client should see.

    `type` is the vendor error type when one is known (kept when relaying an
    upstream error); `param` and `code` follow OpenAI's error object;
    `should_retry` overrides the client SDK's own retry rule when not None.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        # Sent to the client as `x-should-retry`, which both official SDKs obey:
        # a configuration problem is a 5xx that retrying cannot fix.
        self.should_retry = should_retry

    def __repr__(self) -> str:
        return f"ProxyError({self.status}, {self.message!r}, type={self.type!r})"


class TranslationError(ProxyError):
    """An upstream message that makes no sense in the translator's state.

    It is the upstream's fault, so it maps to 502 Bad Gateway.
    """

    def __init__(self, message: str) -> None:
        super().__init__(502, message, type="api_error")


# The status a stream's error event stands for, when it can still be sent as
# one (the error came before any other event); unknown types are a bad gateway.
_STATUS_BY_ERROR_TYPE = {
    "overloaded_error": 529,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "timeout_error": 504,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "invalid_request_error": 400,
    "request_too_large": 413,
}


def status_for_error_type(kind: str) -> int:
    return _STATUS_BY_ERROR_TYPE.get(kind, 502)


def openai_type_for_status(status: int) -> str:
    if status in _OPENAI_TYPE_BY_STATUS:
        return _OPENAI_TYPE_BY_STATUS[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def anthropic_type_for_status(status: int) -> str:
    if status in _ANTHROPIC_TYPE_BY_STATUS:
        return _ANTHROPIC_TYPE_BY_STATUS[status]
    if status == 503:
        return "overloaded_error"
    return "api_error" if status >= 500 else "invalid_request_error"


def openai_error_body(err: ProxyError) -> dict[str, Any]:
    """The body an OpenAI client expects: ``{"error": {message, type, param, code}}``."""
    return {
        "error": {
            "message": err.message,
            "type": err.type or openai_type_for_status(err.status),
            "param": err.param,
            "code": err.code,
        }
    }


def anthropic_error_body(err: ProxyError) -> dict[str, Any]:
    """The body an Anthropic client expects: ``{"type": "error", "error": {type, message}}``."""
    kind = err.type if err.type in ANTHROPIC_ERROR_TYPES else anthropic_type_for_status(err.status)
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def _message_of(body: Any, default: str) -> tuple[str, str | None, Any]:
    """(message, type, error-object) from a parsed error body of unknown shape."""
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            msg = inner.get("message")
            kind = inner.get("type")
            return (msg if isinstance(msg, str) else default, kind if isinstance(kind, str) else None, inner)
        if isinstance(inner, str):  # Ollama: {"error": "..."}
            return inner, None, {}
        msg = body.get("message")
        if isinstance(msg, str):
            return msg, None, {}
    return default, None, {}


def error_from_openai_body(status: int, body: Any) -> ProxyError:
    """Turn an upstream OpenAI(-compatible) or Ollama error body into a ProxyError."""
    message, kind, inner = _message_of(body, f"upstream returned HTTP {status}")
    param = inner.get("param") if isinstance(inner.get("param"), str) else None
    code = inner.get("code") if isinstance(inner.get("code"), str) else None
    return ProxyError(status, message, type=kind, param=param, code=code)


def error_from_anthropic_body(status: int, body: Any) -> ProxyError:
    """Turn an upstream Anthropic error body into a ProxyError (type kept)."""
    message, kind, _ = _message_of(body, f"upstream returned HTTP {status}")
    return ProxyError(status, message, type=kind)
