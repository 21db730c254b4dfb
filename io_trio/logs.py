"""Process-wide logging set-up: ``logging.format``, ``logging.level`` and ``logging.loggers``.

`configure_logging` runs at start-up and again on each reload whose ``logging``
block changed.  It replaces the root logger's handlers with one stderr handler
(pretty or JSON) carrying a `RequestIdFilter`, so every line names its request
(``-`` outside one), and sets the per-logger levels of ``logging.loggers``.

Two things must survive a reload:

* Redaction.  `io_trio.logs_context.install` wraps the handlers that exist when
  the app starts with a `RedactingFormatter`; a reload builds a new handler, so
  the secrets of the old one are carried over onto it here (the app merges the
  new configuration's secrets in afterwards).  A handler is never left unwrapped
  once redaction was installed, not even between the two steps.
* The levels a previous configuration set.  A logger that the old configuration
  named and the new one does not gets back the level it had before we first set
  it, so ``llm_proxy.forward: debug`` removed from the file stops the debug lines.

Per record, the only added work is the filter's context-variable read.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping
from functools import reduce
from typing import Any

from core.config_schema import LoggingConfig
from core.redact import Redactor

from .logs_context import PRETTY_FORMAT, RedactingFormatter, RequestIdFilter, install

__all__ = ["SERVER_LOGGERS", "JsonFormatter", "adopt_server_loggers", "configure_logging"]

SERVER_LOGGERS = ("hypercorn.error", "hypercorn.access")

# Loggers whose level ``logging.loggers`` set -> the level each had before that.
_original_levels: dict[str, int] = {}
# The handler configure_logging installed last: the one whose redaction a reload carries over.
_ours: list[logging.Handler] = []


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the record's `extra` fields (and ``request_id``) kept.

    Written for the one-line-per-request hot path: the timestamp text is made
    once per second.
    """

    _SKIP = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
    # One encoder for every line: json.dumps with an argument builds a new one per call.
    _ENCODE = json.JSONEncoder(default=str).encode

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        fields = record.__dict__
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        out: dict[str, Any] = {
            "time": self._stamp,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        skip = self._SKIP
        out.update({key: value for key, value in fields.items() if key not in skip})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return self._ENCODE(out)


def configure_logging(config: LoggingConfig) -> None:
    """Send every log line to stderr in `config.format`, at `config.level` and the per-logger levels."""
    # The documented way to make a log call cheaper: no format of ours shows the caller, so the
    # logging module need not walk the stack for every record (a format that asks gets
    # "(unknown file)").  Thread and process fields stay: hypercorn's own format prints %(process)d.
    logging._srcfile = None  # type: ignore[attr-defined]
    root = logging.getLogger()
    # Only our own previous handler counts: another's (a test runner's, an embedder's) may have
    # been wrapped with the secrets of some other app in the same process.
    handler = _handler(config.format, redactor=_installed_redactor(h for h in _ours if h in root.handlers))
    root.handlers[:] = [handler]
    _ours[:] = [handler]
    root.setLevel(config.level.upper())
    _set_logger_levels(config.loggers)


def adopt_server_loggers(names: Iterable[str] = SERVER_LOGGERS) -> None:
    """Make the server's own loggers write like ours: once, in our format, redacted.

    Under ``hypercorn -k trio io_trio.app:app`` hypercorn gives ``hypercorn.error``
    a stderr handler of its own once the app has started (after
    `configure_logging`): each of its lines then came out twice, once unredacted
    in hypercorn's format.  A plain stderr handler is removed (its records reach
    our root handler, also on stderr); any other (``--error-logfile F``,
    ``--access-logfile -``) keeps writing where it writes, redacted with every
    secret our handler knows.
    """
    redactor = _installed_redactor(_ours)
    for name in names:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler and handler.stream is sys.stderr:
                logger.removeHandler(handler)
                logger.propagate = True
        if redactor is not None:
            install(redactor, logger)


def _handler(fmt: str, *, redactor: Redactor | None) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(PRETTY_FORMAT)
    handler.setFormatter(formatter if redactor is None else RedactingFormatter(formatter, redactor))
    handler.addFilter(RequestIdFilter())  # on the handler: a logger's filters miss propagated records
    return handler


def _installed_redactor(handlers: Iterable[logging.Handler]) -> Redactor | None:
    """What the handlers being replaced redact (every secret they knew), or None if they did not."""
    redactors = [h.formatter.redactor for h in handlers if isinstance(h.formatter, RedactingFormatter)]
    return reduce(Redactor.merged, redactors) if redactors else None


def _set_logger_levels(levels: Mapping[str, str]) -> None:
    for name in [name for name in _original_levels if name not in levels]:
        logging.getLogger(name).setLevel(_original_levels.pop(name))
    for name, level in levels.items():
        logger = logging.getLogger(name)
        _original_levels.setdefault(name, logger.level)
        logger.setLevel(level.upper())
