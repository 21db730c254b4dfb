"""The ``logging`` block: ``requests`` (the audit log), ``loggers`` (per-logger levels), and
`io_trio.logs.configure_logging`, which applies them to the process's log output."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from core.audit import RedactConfig
from core.config import ConfigError, LoggingConfig, RequestLogConfig, load_config
from core.redact import Redactor
from io_trio.logs import configure_logging
from io_trio.logs_context import bound_request_id, install

MODELS = "models: {m: {backend_type: mock}}\n"
EXAMPLE = Path(__file__).parents[2] / "config" / "example-config.yaml"
OFF = RequestLogConfig()


def logging_of(block: str, env: Mapping[str, str] | None = None) -> LoggingConfig:
    return load_config(MODELS + block, fmt="yaml", env=env or {}).logging


def errors(block: str, env: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(MODELS + block, fmt="yaml", env=env or {})
    return caught.value.errors


# -- logging.requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("", OFF),
        ("logging: {level: info}\n", OFF),
        ("logging: {requests: null}\n", OFF),
        ("logging: {requests: false}\n", OFF),
        ("logging: {requests: true}\n", RequestLogConfig(enabled=True, level="metadata")),
        ("logging: {requests: full}\n", RequestLogConfig(enabled=True, level="full")),
        ("logging: {requests: Headers}\n", RequestLogConfig(enabled=True, level="headers")),
        # A mapping is on unless it says otherwise.
        ("logging: {requests: {}}\n", RequestLogConfig(enabled=True)),
        ("logging: {requests: {enabled: false, level: full}}\n", RequestLogConfig(enabled=False, level="full")),
    ],
)
def test_request_log_shorthands(block: str, expected: RequestLogConfig) -> None:
    assert logging_of(block).requests == expected


def test_request_log_block_of_the_issue() -> None:
    config = logging_of("""\
logging:
  requests:
    enabled: true
    level: full
    file: logs/requests.jsonl
    max_bytes: 1048576
    backups: 3
    queue_size: 500
    redact:
      headers: [X-Tenant-Token]
      body_paths: ["$.metadata.user_id", "$.messages[*].content"]
""")
    assert config.requests == RequestLogConfig(
        enabled=True, level="full", file="logs/requests.jsonl", max_bytes=1_048_576, backups=3, queue_size=500,
        redact=RedactConfig(headers=("x-tenant-token",), body_paths=("$.metadata.user_id", "$.messages[*].content")),
    )
    assert (config.level, config.format) == ("info", "pretty")


def test_request_log_values_come_from_the_environment() -> None:
    block = 'logging: {requests: {level: "${AUDIT_LEVEL:-metadata}", file: "${AUDIT_DIR}/r.jsonl"}}\n'
    requests = logging_of(block, {"AUDIT_LEVEL": "headers", "AUDIT_DIR": "/var/log/llm"}).requests
    assert (requests.enabled, requests.level, requests.file) == (True, "headers", "/var/log/llm/r.jsonl")


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("logging: {requests: loud}\n", ["logging.requests: expected one of metadata, headers, full, got 'loud'"]),
        ("logging: {requests: 3}\n", ["logging.requests: expected a mapping, got 3"]),
        ("logging: {requests: {levle: full}}\n", ["logging.requests.levle: unknown key (did you mean 'level'?)"]),
        ("logging: {request: full}\n", ["logging.request: unknown key (did you mean 'requests'?)"]),
        ("logging: {requests: {level: all}}\n",
         ["logging.requests.level: expected one of metadata, headers, full, got 'all'"]),
        ("logging: {requests: {enabled: maybe}}\n",
         ["logging.requests.enabled: expected a boolean (true or false), got 'maybe'"]),
        ("logging: {requests: {file: ' '}}\n", ["logging.requests.file: must not be empty (omit it to log to stdout)"]),
        ("logging: {requests: {max_bytes: 100}}\n",
         ["logging.requests.max_bytes: expected an integer >= 1024, got 100"]),
        ("logging: {requests: {backups: -1}}\n",
         ["logging.requests.backups: expected an integer between 0 and 1000, got -1"]),
        ("logging: {requests: {queue_size: 0}}\n", ["logging.requests.queue_size: expected an integer >= 1, got 0"]),
        ("logging: {requests: {redact: {headers: ['bad header']}}}\n",
         ["logging.requests.redact.headers[0]: invalid header name 'bad header'"]),
        ("logging: {requests: {redact: {body_paths: '$.x'}}}\n",
         ["logging.requests.redact.body_paths: expected a list, got '$.x'"]),
        ("logging: {requests: {redact: {secrets: [x]}}}\n", ["logging.requests.redact.secrets: unknown key"]),
    ],
)
def test_request_log_errors_name_their_path(block: str, expected: list[str]) -> None:
    assert errors(block) == expected


def test_a_bad_jsonpath_is_reported_with_its_index() -> None:
    [error] = errors("logging: {requests: {redact: {body_paths: ['$.ok', '$[']}}}\n")
    assert error.startswith("logging.requests.redact.body_paths[1]: invalid JSONPath '$['")


def test_request_log_errors_are_reported_with_every_other_error() -> None:
    found = errors("logging: {level: loud, loggers: {httpx: noisy}, requests: {level: all, queue_size: 0}}\n")
    assert found == [
        "logging.level: expected one of debug, info, warning, error, got 'loud'",
        "logging.loggers.httpx: expected one of debug, info, warning, error, got 'noisy'",
        "logging.requests.level: expected one of metadata, headers, full, got 'all'",
        "logging.requests.queue_size: expected an integer >= 1, got 0",
    ]


# -- logging.loggers ------------------------------------------------------------------------


def test_per_logger_levels() -> None:
    config = logging_of("logging:\n  level: warning\n  loggers:\n    llm_proxy.forward: DEBUG\n    httpx: error\n")
    assert config.level == "warning"
    assert config.loggers == {"llm_proxy.forward": "debug", "httpx": "error"}


def test_no_loggers_means_none_set() -> None:
    assert logging_of("").loggers == {}
    assert logging_of("logging: {loggers: null}\n").loggers == {}


def test_a_logger_level_may_come_from_the_environment() -> None:
    block = 'logging: {loggers: {llm_proxy.forward: "${FORWARD_LOG:-info}"}}\n'
    assert logging_of(block).loggers == {"llm_proxy.forward": "info"}
    assert logging_of(block, {"FORWARD_LOG": "debug"}).loggers == {"llm_proxy.forward": "debug"}


def test_the_level_override_beats_logging_level_but_not_the_per_logger_levels() -> None:
    block = "logging: {level: info, loggers: {llm_proxy.forward: warning}}\n"
    config = logging_of(block, {"LLM_PROXY_LOG_LEVEL": "debug"})
    assert (config.level, dict(config.loggers)) == ("debug", {"llm_proxy.forward": "warning"})


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("logging: {loggers: [llm_proxy]}\n", "logging.loggers: expected a mapping, got a list"),
        ("logging: {loggers: {llm_proxy: verbose}}\n",
         "logging.loggers.llm_proxy: expected one of debug, info, warning, error, got 'verbose'"),
        ("logging: {loggers: {llm_proxy.forward: }}\n",
         "logging.loggers.llm_proxy.forward: expected one of debug, info, warning, error, got null"),
        ("logging: {loggers: {httpx: off}}\n",  # YAML 1.1 reads `off` as false
         "logging.loggers.httpx: expected one of debug, info, warning, error, got False"),
        ("logging: {loggers: {httpx: 10}}\n",
         "logging.loggers.httpx: expected one of debug, info, warning, error, got 10"),
        ("logging: {loggers: {root: debug}}\n", "logging.loggers.root: the root logger's level is logging.level"),
        ("logging: {loggers: {'': debug}}\n", "logging.loggers.'': a logger name must be a non-empty string"),
        ("logging: {loggers: {' httpx': debug}}\n",
         "logging.loggers.' httpx': a logger name must not start or end with whitespace"),
        ("logging: {loggers: {3: debug}}\n", "logging.loggers.3: keys must be strings (quote it)"),
        ("logging: {loggers: {x: '${UNSET}'}}\n",
         "logging.loggers.x: environment variable UNSET is not set (use ${UNSET:-} to allow it to be empty)"),
    ],
)
def test_logger_errors_name_their_path(block: str, expected: str) -> None:
    assert errors(block) == [expected]


@pytest.mark.parametrize(
    "loggers", [{"root": "debug"}, {"": "info"}, {"httpx": "verbose"}, {"httpx": "DEBUG"}], ids=repr
)
def test_invalid_logger_levels_cannot_be_built_by_hand(loggers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        LoggingConfig(loggers=loggers)


def test_logging_config_stays_a_comparable_frozen_value() -> None:
    a = LoggingConfig(loggers={"httpx": "warning"})
    assert a == LoggingConfig(loggers={"httpx": "warning"}) != LoggingConfig()
    assert hash(a) == hash(LoggingConfig(loggers={"httpx": "warning"}))
    with pytest.raises(TypeError):
        a.loggers["httpx"] = "debug"  # type: ignore[index]


# -- the shipped example ------------------------------------------------------------------


def _uncommented_logging_block(text: str) -> str:
    """The example's ``logging:`` block with its commented-out settings switched on."""
    block = re.search(r"^logging:\n(?:(?:  .*)?\n)*", text, re.MULTILINE)
    assert block is not None
    return re.sub(r"^(\s*)# ", r"\1", block.group(), flags=re.MULTILINE)


def test_the_example_configs_commented_logging_settings_are_valid() -> None:
    config = logging_of(_uncommented_logging_block(EXAMPLE.read_text(encoding="utf-8")))
    assert config.loggers == {"llm_proxy.forward": "debug", "hypercorn.error": "warning"}
    assert config.requests.enabled and config.requests.file == "logs/requests.jsonl"
    assert config.requests.redact.headers and config.requests.redact.body_paths


# -- configure_logging --------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes the process's root logger: put it back as pytest had it."""
    root, last_resort = logging.getLogger(), logging.lastResort
    handlers, level = root.handlers[:], root.level
    wrapped = (last_resort.formatter, last_resort.filters[:]) if last_resort is not None else None
    # Start from no handler: an app built by an earlier test may have left a redacting one, whose
    # secrets configure_logging would carry over (as it must on a reload).
    root.handlers[:] = []
    try:
        yield
    finally:
        configure_logging(LoggingConfig())  # gives named loggers back their own levels
        root.handlers[:] = handlers
        root.setLevel(level)
        if last_resort is not None and wrapped is not None:  # `install` wraps it in place
            last_resort.formatter, last_resort.filters[:] = wrapped


def _emit_everywhere() -> None:
    logging.getLogger("llm_proxy.forward").debug("forward debug")
    logging.getLogger("llm_proxy.forward.h11").debug("forward child debug")
    logging.getLogger("llm_proxy.gate").info("gate info")
    logging.getLogger("httpx").info("httpx info")
    logging.getLogger("httpx").error("httpx error")


def test_pretty_lines_name_their_request(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingConfig(level="info", format="pretty"))
    log = logging.getLogger("llm_proxy.forward")
    with bound_request_id("req-7f3a"):
        log.info("upstream answered %d", 200)
    log.info("between requests")
    first, second = capsys.readouterr().err.splitlines()
    assert first.endswith(" INFO    llm_proxy.forward [req-7f3a]: upstream answered 200")
    assert second.endswith(" INFO    llm_proxy.forward [-]: between requests")


def test_json_lines_carry_the_request_id(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingConfig(level="info", format="json"))
    with bound_request_id("req-42"):
        logging.getLogger("llm_proxy.gate").warning("slow client", extra={"client": "ci"})
    line = json.loads(capsys.readouterr().err)
    assert (line["level"], line["logger"], line["message"]) == ("warning", "llm_proxy.gate", "slow client")
    assert (line["request_id"], line["client"]) == ("req-42", "ci")


def test_per_logger_levels_apply_in_both_directions(restore_logging: None,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingConfig(level="info", loggers={"llm_proxy.forward": "debug", "httpx": "warning"}))
    _emit_everywhere()
    out = capsys.readouterr().err
    assert "forward debug" in out and "forward child debug" in out  # below the root level, and children too
    assert "gate info" in out
    assert "httpx info" not in out and "httpx error" in out  # above the root level


def test_a_reload_drops_levels_the_new_configuration_no_longer_sets(restore_logging: None,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    chatty = logging.getLogger("chatty.library")
    chatty.setLevel(logging.ERROR)  # set by the library itself, before us
    configure_logging(LoggingConfig(level="info", loggers={"llm_proxy.forward": "debug", "chatty.library": "info"}))
    chatty.info("chatty info")
    assert "chatty info" in capsys.readouterr().err

    configure_logging(LoggingConfig(level="info"))  # the reload removed both entries
    _emit_everywhere()
    chatty.warning("chatty warning")
    chatty.error("chatty error")
    out = capsys.readouterr().err
    assert "forward debug" not in out and "gate info" in out
    assert "chatty warning" not in out and "chatty error" in out  # its own level is back
    assert len(logging.getLogger().handlers) == 1


def test_redaction_installed_by_the_app_wraps_the_configured_handler(restore_logging: None,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingConfig(level="info"))
    install(Redactor(secrets={"sk-configured-secret-0001"}))
    with bound_request_id("req-1"):
        logging.getLogger("llm_proxy").error("upstream said: bad key sk-configured-secret-0001")
    out = capsys.readouterr().err
    assert "sk-configured-secret-0001" not in out
    assert out.rstrip().endswith("[req-1]: upstream said: bad key [redacted]")


@pytest.mark.parametrize("fmt", ["pretty", "json"])
def test_redaction_survives_a_reload_that_rebuilds_the_handler(fmt: str, restore_logging: None,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingConfig(level="info"))
    install(Redactor(secrets={"sk-old-secret-000000001"}))
    configure_logging(LoggingConfig(level="debug", format=fmt))  # a reload changed the logging block
    log = logging.getLogger("llm_proxy")
    log.debug("still in flight with %s", "sk-old-secret-000000001")
    install(Redactor(secrets={"sk-new-secret-000000002"}))  # the app adds the new configuration's secrets
    log.info("new key %r, old key %s", "sk-new-secret-000000002", "sk-old-secret-000000001")
    out = capsys.readouterr().err
    assert "sk-old-secret" not in out and "sk-new-secret" not in out
    assert out.count("[redacted]") == 3
    assert len(logging.getLogger().handlers) == 1


# -- hypercorn's own loggers ----------------------------------------------------------------


@pytest.fixture
def hypercorn_loggers() -> Iterator[None]:
    """Hypercorn's loggers as its CLI leaves them; put back as they were afterwards."""
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
             for name in ("hypercorn.error", "hypercorn.access")}
    try:
        yield
    finally:
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate


def test_hypercorns_error_log_comes_out_once_in_our_format_and_redacted(
        restore_logging: None, hypercorn_loggers: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.logging import Logger as HypercornLogger

    from io_trio.logs import adopt_server_loggers

    configure_logging(LoggingConfig(level="info", format="json"))
    install(Redactor(secrets={"sk-configured-secret-0001"}))
    # What `hypercorn -k trio io_trio.app:app` does after the app started: its own stderr handler,
    # in a format that prints the process id (which our logging set-up must keep filling in).
    server = HypercornConfig()
    server.accesslog = str(tmp_path / "access.log")
    HypercornLogger(server)
    adopt_server_loggers()
    logging.getLogger("hypercorn.error").error("Error in ASGI Framework: key sk-configured-secret-0001")
    logging.getLogger("hypercorn.access").info("POST /v1/x?key=%s 200", "sk-configured-secret-0001")
    err = capsys.readouterr().err
    assert "Logging error" not in err
    (line,) = err.splitlines()  # once, through our handler
    record = json.loads(line)
    assert (record["logger"], record["message"]) == ("hypercorn.error", "Error in ASGI Framework: key [redacted]")
    for handler in logging.getLogger("hypercorn.access").handlers:
        handler.flush()
    assert (tmp_path / "access.log").read_text().strip().endswith("POST /v1/x?key=[redacted] 200")


def test_other_formats_still_get_the_process_id(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingConfig(level="info"))
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(process)d] [%(threadName)s] %(message)s"))
    logger = logging.getLogger("some.library")
    logger.addHandler(handler)
    try:
        logger.warning("hello")
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "Logging error" not in err
    assert re.search(r"^\[\d+\] \[MainThread\] hello$", err, re.MULTILINE)
