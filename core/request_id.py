"""Request ids: the client's ``x-request-id`` when it is sane, else a fresh one.

A request id ends up in every log line, every audit record and the response's
``x-request-id`` header, so a client-chosen value must not be able to forge a
log line (CR/LF), break out of a quoted field (``"``, ``\\``), smuggle a header
(RFC 9110 §5.5 forbids CR, LF and NUL in field values), or bloat every record.
It is therefore accepted only when it is 1 to `MAX_LENGTH` characters from a
small charset that covers UUIDs, ULIDs, hex, base64/base64url ids and vendor
ids such as ``req_011CS...`` or ``chatcmpl-...``; anything else is ignored
(not cleaned up: a half-kept id would correlate with nothing) and the adapter's
fresh id is used.  The fresh id comes in as an argument: the core has no
randomness of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MAX_LENGTH", "REQUEST_ID_HEADER", "choose_request_id", "sanitize_request_id"]

REQUEST_ID_HEADER = "x-request-id"
MAX_LENGTH = 128
_SAFE = re.compile(rf"[A-Za-z0-9._:+/=\-]{{1,{MAX_LENGTH}}}")


def sanitize_request_id(value: str | None) -> str | None:
    """`value` if it is a safe request id, else None (surrounding blanks are ignored)."""
    if not isinstance(value, str):
        return None
    value = value.strip(" \t")  # RFC 9110 §5.5: optional whitespace around a field value
    return value if _SAFE.fullmatch(value) else None


def choose_request_id(headers: Iterable[tuple[str, str]], fresh: str) -> str:
    """The id for a request: its (first) ``x-request-id`` header if sane, else `fresh`.

    `headers` are (lower-case name, value) pairs as the adapter decoded them;
    `fresh` is a new random token from the adapter, itself checked so that a
    bug there cannot put an unsafe value in the logs.
    """
    for name, value in headers:
        if name.lower() == REQUEST_ID_HEADER:
            chosen = sanitize_request_id(value)
            if chosen is not None:
                return chosen
            break
    checked = sanitize_request_id(fresh)
    if checked is None:
        raise ValueError("the fresh request id must itself be a safe id")
    return checked
