"""Request ids: a client's sane id is kept, anything else replaced; every log line carries it."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from core.redact import Redactor
from core.request_id import MAX_LENGTH, choose_request_id, sanitize_request_id
from io_trio.logs import JsonFormatter
from io_trio.logs_context import PRETTY_FORMAT, RequestIdFilter, bound_request_id, current_request_id, install

SAFE = re.compile(r"[A-Za-z0-9._:+/=\-]+")


@pytest.mark.parametrize("value", [
    "3f2b8c1e-9d4a-4c7e-8f00-1a2b3c4d5e6f",  # UUID
    "01HZX3KQ9V7WJ8Y2T5R6N4M3P1",  # ULID
    "req_011CSHxGwzr2AzRyYqgxgZmC",  # Anthropic
    "chatcmpl-B9x1",
    "dGVzdA==",  # base64
    "trace:span.1",
])
def test_real_world_ids_are_kept(value: str) -> None:
    assert sanitize_request_id(value) == value
    assert choose_request_id([("x-request-id", value)], "fresh") == value


@pytest.mark.parametrize("value", [
    "",
    "a" * (MAX_LENGTH + 1),
    "abc\r\nx-injected: 1",  # header/log-line injection
    'abc" , "admin":true',  # breaking out of a quoted field
    "abc def",
    "abc\x00",
    "naïve-id",
    "<script>",
    "${jndi:ldap://x}",
    "../../etc/passwd%00",
])
def test_unsafe_ids_are_refused_and_replaced(value: str) -> None:
    assert sanitize_request_id(value) is None
    assert choose_request_id([("x-request-id", value)], "fresh-1") == "fresh-1"


def test_surrounding_blanks_are_ignored() -> None:
    assert sanitize_request_id("  abc-1\t") == "abc-1"


def test_longest_allowed_id_is_kept() -> None:
    assert sanitize_request_id("a" * MAX_LENGTH) == "a" * MAX_LENGTH


def test_no_header_means_the_fresh_id() -> None:
    assert choose_request_id([("content-type", "application/json")], "abc123") == "abc123"


def test_only_the_first_request_id_header_counts() -> None:
    headers = [("x-request-id", "bad id"), ("X-Request-Id", "good-id")]
    assert choose_request_id(headers, "fresh") == "fresh"


def test_an_unsafe_fresh_id_is_a_bug_and_raises() -> None:
    with pytest.raises(ValueError):
        choose_request_id([], "not safe\n")


@given(st.text(max_size=200))
def test_property_whatever_arrives_the_id_is_safe(value: str) -> None:
    chosen = choose_request_id([("x-request-id", value)], "fresh")
    assert SAFE.fullmatch(chosen) and len(chosen) <= MAX_LENGTH


# -- the log context -----------------------------------------------------------------------------


def capture(fmt: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(fmt)
    logger = logging.getLogger(f"test.request_id.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_log_lines_carry_the_bound_id_and_a_dash_outside_requests() -> None:
    logger, stream = capture(logging.Formatter(PRETTY_FORMAT))
    install(Redactor(), logger)
    logger.info("before")
    with bound_request_id("req-1"):
        logger.info("inside")
        assert current_request_id() == "req-1"
    logger.info("after")
    lines = stream.getvalue().splitlines()
    assert [line.split(" [")[1].split("]")[0] for line in lines] == ["-", "req-1", "-"]


def test_json_lines_get_a_request_id_field() -> None:
    logger, stream = capture(JsonFormatter())
    install(Redactor(), logger)
    with bound_request_id("req-json"):
        logger.warning("retrying")
    assert json.loads(stream.getvalue())["request_id"] == "req-json"


def test_an_explicit_request_id_extra_is_not_overwritten() -> None:
    record = logging.makeLogRecord({"msg": "x", "request_id": "given"})
    with bound_request_id("bound"):
        RequestIdFilter().filter(record)
    assert record.request_id == "given"


async def test_concurrent_requests_never_see_each_others_id() -> None:
    logger, stream = capture(JsonFormatter())
    install(Redactor(), logger)

    async def request(rid: str, delay: float) -> None:
        with bound_request_id(rid):
            for step in range(3):
                await trio.sleep(delay)
                logger.info("step %d of %s", step, rid)

    async with trio.open_nursery() as nursery:
        for index, delay in enumerate((0.003, 0.001, 0.002)):
            nursery.start_soon(request, f"req-{index}", delay)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(records) == 9
    assert all(record["message"].endswith(record["request_id"]) for record in records)


def test_installing_twice_merges_secrets_instead_of_replacing() -> None:
    logger, stream = capture(logging.Formatter("%(message)s"))
    install(Redactor(secrets=["first-app-secret"]), logger)
    install(Redactor(secrets=["second-app-secret"]), logger)
    logger.info("first-app-secret second-app-secret")
    assert stream.getvalue().strip() == "[redacted] [redacted]"
    assert sum(isinstance(f, RequestIdFilter) for f in logger.handlers[0].filters) == 1
