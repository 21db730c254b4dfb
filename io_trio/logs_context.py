"""Per-request log context and last-step redaction for the stdlib logging handlers.

Theory of operation: the adapter binds the request id to a context variable
(`bound_request_id`) at the top of each request.  Trio gives every task a copy
of its parent's context, so the id follows the request's code and the tasks it
spawns, and never leaks into another request.  `RequestIdFilter`, attached to
each *handler* (a logger's own filters do not see records propagated from child
loggers), copies it onto every record as ``request_id`` (``-`` outside a
request), for the JSON formatter's fields and the pretty format's
``%(request_id)s``.

`RedactingFormatter` wraps a handler's formatter and runs
`core.redact.Redactor.text` over the whole formatted line, traceback and stack
included: the last step before the handler writes, so no code path (an
exception message quoting a header, an upstream error echoing a key, a
third-party logger) can put a configured secret in the log.  `install` wraps
every handler of the root logger, plus `logging.lastResort`; installing again
(another app in the same process) merges the secrets instead of replacing them,
so every app's secrets stay covered.  Handlers added *after* `install` are not
wrapped: configure logging first, then build the app.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from core.redact import Redactor

__all__ = [
    "PRETTY_FORMAT",
    "RedactingFormatter",
    "RequestIdFilter",
    "bound_request_id",
    "current_request_id",
    "install",
    "set_request_id",
]

PRETTY_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s]: %(message)s"
_NO_REQUEST = "-"
_request_id: ContextVar[str | None] = ContextVar("llm_proxy_request_id", default=None)


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(request_id: str) -> None:
    """Bind `request_id` for the rest of the current task.

    For the adapter's request task, which also writes the response body: a
    ``with bound_request_id`` block in the handler would end before a stream
    does.  Trio tasks start with a copy of their parent's context, so this
    never leaks into another request.
    """
    _request_id.set(request_id)


@contextmanager
def bound_request_id(request_id: str) -> Iterator[None]:
    """Log lines written inside the block (and in tasks it spawns) carry `request_id`."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the bound id, or ``-``); never rejects a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(getattr(record, "request_id", None), str):
            record.request_id = _request_id.get() or _NO_REQUEST
        return True


class RedactingFormatter(logging.Formatter):
    """Formats with `inner`, then redacts the result (see the module docstring)."""

    def __init__(self, inner: logging.Formatter | None, redactor: Redactor) -> None:
        super().__init__()
        self.inner = inner if inner is not None else logging.Formatter()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        try:
            text = self.inner.format(record)
        except Exception as exc:  # noqa: BLE001 - a bad %-format must not print its raw args
            text = f"unformattable log record from {record.name} ({type(exc).__name__}): {record.msg!r}"
        return self.redactor.text(text)

    def merge(self, redactor: Redactor) -> None:
        self.redactor = self.redactor.merged(redactor)


def _wrap(handler: logging.Handler, redactor: Redactor) -> None:
    if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
        handler.addFilter(RequestIdFilter())
    current = handler.formatter
    if isinstance(current, RedactingFormatter):
        current.merge(redactor)
    else:
        handler.setFormatter(RedactingFormatter(current, redactor))


def install(redactor: Redactor, logger: logging.Logger | None = None) -> None:
    """Wrap every handler of `logger` (the root logger) and `logging.lastResort`."""
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        _wrap(handler, redactor)
    if logging.lastResort is not None:
        _wrap(logging.lastResort, redactor)
