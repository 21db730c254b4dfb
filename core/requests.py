"""The first look at a client's body: parse it once, check what routing needs.

Everything else about the body is the business of the backend (pass-through)
or of the translators; here we only make sure that the body is a JSON object
with a usable `model`, so that every later step can rely on that.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ProxyError

__all__ = ["parse_client_body"]


def parse_client_body(raw: bytes) -> tuple[dict[str, Any], str]:
    """(body, model name) or a 400 ProxyError that says what is wrong."""
    if not raw:
        raise ProxyError(400, "the request body is empty: expected a JSON object", type="invalid_request_error")
    try:
        body = json.loads(raw.decode())  # JSON on the wire is UTF-8 (RFC 8259 §8.1)
    except UnicodeDecodeError:
        raise ProxyError(400, "the request body is not valid UTF-8", type="invalid_request_error") from None
    except ValueError as err:
        raise ProxyError(400, f"the request body is not valid JSON: {err}", type="invalid_request_error") from None
    if not isinstance(body, dict):
        raise ProxyError(400, "the request body must be a JSON object", type="invalid_request_error")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ProxyError(400, "'model' is required and must be a non-empty string",
                         type="invalid_request_error", param="model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ProxyError(400, "'stream' must be a boolean", type="invalid_request_error", param="stream")
    return body, model
