"""The retry decision (core.retry): tables, backoff bounds, Retry-After parsing."""

from __future__ import annotations

import math
import random
import statistics
from email.utils import format_datetime
from datetime import datetime, timezone

import attrs
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.retry import (
    GiveUp,
    Outcome,
    OutcomeKind,
    Proceed,
    RetryAfter,
    backoff_cap,
    decide,
    parse_retry_after,
)

K = OutcomeKind
NOW = 1_760_000_000.0  # a Unix time in October 2025


@attrs.frozen
class Policy:
    """Shaped like core.config.RetryPolicy; core.retry must accept any such object."""

    max_attempts: int = 3
    backoff_ms: int = 500
    max_backoff_ms: int = 8_000
    jitter: bool = False
    max_retry_after_seconds: float = 60.0


# Response headers as real upstreams send them (protocols.md §1.5, §2.5).
OPENAI_429 = {
    "x-request-id": "req_4f3c2a",
    "retry-after": "1",
    "retry-after-ms": "850",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "850ms",
}
ANTHROPIC_529 = {
    "request-id": "req_011CQ", "x-should-retry": "true", "content-type": "application/json",
}


def http(status: int, headers: dict[str, str] | None = None, *, sent: bool = False) -> Outcome:
    return Outcome(K.HTTP_STATUS, status, headers, bytes_sent_to_client=sent)


def run(outcome: Outcome, *, attempt: int = 1, policy: Policy = Policy(), now: float = NOW,
        deadline: float | None = None, seed: int = 0) -> Proceed | RetryAfter | GiveUp:
    return decide(policy, attempt=attempt, outcome=outcome, now=now, deadline=deadline,
                  rng=random.Random(seed))


# --- the decision table -----------------------------------------------------------------------
# (outcome, attempt, expected): expected is Proceed, a delay (RetryAfter) or
# ("give up", fallback_ok).
RETRY = "retry"
TABLE = [
    # Success is relayed whatever else is said.
    (http(200), 1, Proceed),
    (http(200, {"x-should-retry": "true"}), 1, Proceed),
    (http(201, sent=True), 3, Proceed),
    (Outcome(K.OK, 200, bytes_sent_to_client=True), 1, Proceed),
    (Outcome(K.OK), 3, Proceed),
    # Transient statuses are retried with backoff (0.5 s after attempt 1, 1 s after attempt 2).
    *[(http(s), 1, 0.5) for s in (408, 409, 429, 500, 502, 503, 504, 529)],
    (http(503), 2, 1.0),
    (http(529, ANTHROPIC_529), 1, 0.5),
    # ...until the attempts run out: then a fallback may be tried.
    *[(http(s), 3, ("give up", True)) for s in (429, 500, 529)],
    (http(503), 7, ("give up", True)),
    # Bad input is never retried and never falls back, even if the upstream says retry.
    *[(http(s), 1, ("give up", False)) for s in (400, 401, 403, 404, 422)],
    *[(http(s, {"x-should-retry": "true"}), 1, ("give up", False))
      for s in (400, 401, 403, 404, 422)],
    # Statuses outside both lists: not retried unless the upstream asks for it.
    (http(413), 1, ("give up", False)),
    (http(501), 1, ("give up", False)),
    (http(302), 1, ("give up", False)),
    (http(413, {"x-should-retry": "true"}), 1, 0.5),
    (http(501, {"X-Should-Retry": "True"}), 2, 1.0),
    # x-should-retry: false wins over a retryable status; another backend may still help.
    (http(429, {"x-should-retry": "false"}), 1, ("give up", True)),
    (http(503, {"x-should-retry": " FALSE "}), 1, ("give up", True)),
    (http(400, {"x-should-retry": "false"}), 1, ("give up", False)),
    # An unrecognised x-should-retry value is ignored.
    (http(503, {"x-should-retry": "maybe"}), 1, 0.5),
    (http(418, {"x-should-retry": "1"}), 1, ("give up", False)),
    # Failures before the response started are retried.
    (Outcome(K.CONNECT_ERROR), 1, 0.5),
    (Outcome(K.TIMEOUT_BEFORE_RESPONSE), 2, 1.0),
    (Outcome(K.PROTOCOL_ERROR_BEFORE_RESPONSE), 1, 0.5),
    (Outcome(K.CONNECT_ERROR), 3, ("give up", True)),
    # Never once a byte reached the client, whatever the cause, and no fallback either.
    (Outcome(K.FAILED_AFTER_BYTES_SENT, bytes_sent_to_client=True), 1, ("give up", False)),
    (Outcome(K.FAILED_AFTER_BYTES_SENT, 200, bytes_sent_to_client=True), 1, ("give up", False)),
    (http(503, sent=True), 1, ("give up", False)),
    (http(429, {"x-should-retry": "true", "retry-after": "1"}, sent=True), 1, ("give up", False)),
    (Outcome(K.TIMEOUT_BEFORE_RESPONSE, bytes_sent_to_client=True), 1, ("give up", False)),
]


@pytest.mark.parametrize(("outcome", "attempt", "expected"), TABLE)
def test_decision_table(outcome: Outcome, attempt: int, expected: object) -> None:
    # Without server hints, so the delay is the plain backoff (jitter off).
    decision = run(outcome, attempt=attempt)
    if expected is Proceed:
        assert decision == Proceed()
    elif isinstance(expected, float):
        assert isinstance(decision, RetryAfter)
        assert decision.delay == pytest.approx(expected)
    else:
        assert isinstance(decision, GiveUp)
        assert decision.fallback_ok is expected[1]
        assert decision.reason


def test_reasons_say_what_happened() -> None:
    assert "429" in run(http(429), attempt=3).reason
    assert "3 of 3" in run(http(429), attempt=3).reason
    assert "client" in run(http(503, sent=True)).reason
    assert "connect error" in run(Outcome(K.CONNECT_ERROR)).reason


def test_single_attempt_policy_never_retries() -> None:
    decision = run(http(503), policy=Policy(max_attempts=1))
    assert decision == GiveUp(decision.reason, True)


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError):
        run(http(503), attempt=0)


# --- Retry-After sets the delay -----------------------------------------------------------------
def test_retry_after_sets_the_delay_without_jitter() -> None:
    policy = Policy(jitter=True)
    for seed in range(20):
        decision = run(http(429, {"retry-after": "7"}), policy=policy, seed=seed)
        assert decision == RetryAfter(7.0, decision.reason)


def test_retry_after_ms_wins_over_retry_after() -> None:
    decision = run(http(429, OPENAI_429))
    assert isinstance(decision, RetryAfter) and decision.delay == pytest.approx(0.85)


def test_retry_after_may_be_longer_than_the_backoff_cap() -> None:
    decision = run(http(503, {"retry-after": "30"}), policy=Policy(max_backoff_ms=1_000))
    assert isinstance(decision, RetryAfter) and decision.delay == 30.0


def test_retry_after_as_http_date() -> None:
    when = format_datetime(datetime.fromtimestamp(NOW + 12, timezone.utc), usegmt=True)
    decision = run(http(503, {"Retry-After": when}))
    assert isinstance(decision, RetryAfter) and decision.delay == pytest.approx(12.0)


def test_retry_after_zero_retries_at_once() -> None:
    decision = run(http(429, {"retry-after": "0"}), policy=Policy(backoff_ms=5_000))
    assert isinstance(decision, RetryAfter) and decision.delay == 0.0


def test_garbage_retry_after_falls_back_to_backoff() -> None:
    decision = run(http(429, {"retry-after": "soon"}))
    assert isinstance(decision, RetryAfter) and decision.delay == pytest.approx(0.5)


def test_retry_after_above_the_maximum_gives_up_at_once() -> None:
    policy = Policy(max_retry_after_seconds=20.0, max_attempts=10)
    decision = run(http(429, {"retry-after": "21"}), policy=policy)
    assert isinstance(decision, GiveUp) and decision.fallback_ok is True
    assert "21" in decision.reason
    at_the_limit = run(http(429, {"retry-after": "20"}), policy=policy)
    assert isinstance(at_the_limit, RetryAfter) and at_the_limit.delay == 20.0


def test_retry_after_on_a_non_retryable_status_is_ignored() -> None:
    decision = run(http(400, {"retry-after": "1"}))
    assert isinstance(decision, GiveUp) and decision.fallback_ok is False


# --- backoff ------------------------------------------------------------------------------------
def test_backoff_doubles_then_caps() -> None:
    policy = Policy(max_attempts=10, backoff_ms=500, max_backoff_ms=5_000)
    delays = [run(Outcome(K.CONNECT_ERROR), attempt=n, policy=policy).delay for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_backoff_cap_survives_huge_attempt_numbers() -> None:
    assert backoff_cap(Policy(max_backoff_ms=8_000), 10_000) == 8.0


def test_full_jitter_stays_within_bounds_with_a_plausible_mean() -> None:
    policy = Policy(max_attempts=100, backoff_ms=200, max_backoff_ms=3_000, jitter=True)
    rng = random.Random(20250101)
    for attempt, cap in [(1, 0.2), (2, 0.4), (3, 0.8), (4, 1.6), (5, 3.0), (9, 3.0)]:
        delays = []
        for _ in range(2_000):
            decision = decide(policy, attempt=attempt, outcome=Outcome(K.CONNECT_ERROR),
                              now=NOW, deadline=None, rng=rng)
            assert isinstance(decision, RetryAfter)
            delays.append(decision.delay)
        assert all(0.0 <= d <= cap for d in delays)
        # Uniform on [0, cap]: mean cap/2, sd cap/sqrt(12); 2000 draws put the mean within 3%.
        assert statistics.fmean(delays) == pytest.approx(cap / 2, rel=0.05)
        # Full jitter spreads over the whole range, not a narrow band near the cap.
        assert min(delays) < 0.05 * cap and max(delays) > 0.95 * cap


def test_jitter_is_reproducible_with_the_same_seed() -> None:
    policy = Policy(jitter=True)
    first = [run(http(503), attempt=2, policy=policy, seed=s).delay for s in range(5)]
    again = [run(http(503), attempt=2, policy=policy, seed=s).delay for s in range(5)]
    assert first == again and len(set(first)) == 5


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(1, 40),
    backoff_ms=st.integers(0, 10_000),
    max_backoff_ms=st.integers(0, 120_000),
    jitter=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_backoff_delay_is_always_within_zero_and_the_cap(
    attempt: int, backoff_ms: int, max_backoff_ms: int, jitter: bool, seed: int
) -> None:
    policy = Policy(max_attempts=50, backoff_ms=backoff_ms, max_backoff_ms=max_backoff_ms,
                    jitter=jitter)
    decision = run(http(500), attempt=attempt, policy=policy, seed=seed)
    assert isinstance(decision, RetryAfter)
    cap = min(backoff_ms * 2 ** (attempt - 1), max_backoff_ms) / 1000
    assert 0.0 <= decision.delay <= cap
    assert decision.delay <= max_backoff_ms / 1000


# --- the total deadline -------------------------------------------------------------------------
def test_retry_that_fits_before_the_deadline_goes_ahead() -> None:
    decision = run(http(503), now=NOW, deadline=NOW + 0.6)
    assert isinstance(decision, RetryAfter) and decision.delay == 0.5


def test_retry_that_would_pass_the_deadline_gives_up() -> None:
    decision = run(http(503), now=NOW, deadline=NOW + 0.4)
    assert isinstance(decision, GiveUp) and decision.fallback_ok is True
    assert "deadline" in decision.reason


def test_retry_starting_exactly_at_the_deadline_gives_up() -> None:
    assert isinstance(run(http(503), now=NOW, deadline=NOW + 0.5), GiveUp)


def test_deadline_already_past_gives_up_even_with_retry_after_zero() -> None:
    decision = run(http(429, {"retry-after": "0"}), now=NOW, deadline=NOW - 1)
    assert isinstance(decision, GiveUp)


def test_server_asked_delay_is_checked_against_the_deadline() -> None:
    decision = run(http(429, {"retry-after": "5"}), now=NOW, deadline=NOW + 4)
    assert isinstance(decision, GiveUp) and decision.fallback_ok is True


def test_jittered_delay_is_checked_against_the_deadline() -> None:
    policy = Policy(jitter=True, max_attempts=5, backoff_ms=1_000, max_backoff_ms=1_000)
    outcomes = {type(run(http(503), policy=policy, deadline=NOW + 0.5, seed=s)) for s in range(50)}
    # A draw below 0.5 s fits, one above does not: both happen over 50 seeds.
    assert outcomes == {RetryAfter, GiveUp}


def test_a_429_429_200_sequence_succeeds_on_the_third_attempt() -> None:
    """Drives decide() the way the adapter does, with a fake clock."""
    replies = iter(
        [http(429, {"retry-after": "1"}), http(429, {"retry-after-ms": "250"}), http(200)]
    )
    now, attempt, slept = NOW, 0, []
    while True:
        attempt += 1
        decision = run(next(replies), attempt=attempt, now=now, deadline=NOW + 30)
        if not isinstance(decision, RetryAfter):
            break
        slept.append(decision.delay)
        now += decision.delay
    assert decision == Proceed() and attempt == 3 and slept == [1.0, 0.25]


# --- parse_retry_after --------------------------------------------------------------------------
def http_date(t: float) -> str:
    return format_datetime(datetime.fromtimestamp(t, timezone.utc), usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, None),
        ({}, None),
        ({"content-type": "application/json"}, None),
        ({"retry-after": "120"}, 120.0),
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": " 2 "}, 2.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250.5"}, 0.2505),
        ({"Retry-After-Ms": "20"}, 0.02),
        ({"retry-after": "9", "retry-after-ms": "100"}, 0.1),  # both: ms is more precise
        ({"retry-after": "9", "retry-after-ms": "soon"}, 9.0),  # garbage ms: fall back
        ({"retry-after": "9", "retry-after-ms": "-100"}, 9.0),
        ({"retry-after": http_date(NOW + 30)}, 30.0),
        ({"retry-after": http_date(NOW - 3600)}, 0.0),  # in the past: now
        ({"retry-after": "Sun, 06 Nov 1994 08:49:37 GMT"}, 0.0),  # RFC 9110's example date
        ({"retry-after": "Sunday, 06-Nov-94 08:49:37 GMT"}, 0.0),  # obsolete RFC 850 form
        ({"retry-after": "soon"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "1e3"}, None),
        ({"retry-after": "1_000"}, None),
        ({"retry-after": "0x10"}, None),
        ({"retry-after": "\t5 "}, 5.0),  # optional whitespace is SP / HTAB
        ({"retry-after": "0\x1f"}, None),  # a control character is not whitespace in HTTP
        ({"retry-after": "\u0661\u0662"}, None),  # Arabic-Indic: float() takes them
        ({"retry-after": "\uff11\uff12"}, None),  # fullwidth digits
        ({"retry-after": "Mon, 99 Foo 2025 99:99:99 GMT"}, None),
        ({"retry-after-ms": "Infinity"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str] | None, expected: float | None) -> None:
    result = parse_retry_after(headers, NOW)
    assert result == (None if expected is None else pytest.approx(expected))


def test_parse_retry_after_http_date_with_a_numeric_zone() -> None:
    # Two hours ahead of NOW, written in a +02:00 zone: a sender in breach of RFC 9110 (GMT only)
    # still means the same instant.
    when = datetime.fromtimestamp(NOW + 7200, timezone.utc).astimezone()
    assert parse_retry_after({"retry-after": format_datetime(when)}, NOW) == pytest.approx(7200)


def test_parse_retry_after_accepts_httpx_headers() -> None:
    headers = httpx.Headers([("Retry-After", "4"), ("X-Request-Id", "req_1")])
    assert parse_retry_after(headers, NOW) == 4.0


DATE_LIKE = st.builds(
    "{}, {:02d} {} {} {:02d}:{:02d}:{:02d} {}".format,
    st.sampled_from(["Mon", "Sun", "Xyz"]), st.integers(0, 40),
    st.sampled_from(["Jan", "Feb", "Dec", "Foo"]), st.integers(0, 99_999),
    st.integers(0, 99), st.integers(0, 99), st.integers(0, 99),
    st.sampled_from(["GMT", "UTC", "-0000", "+2359", "-2359", "+9999", "PST", ""]),
)


@settings(max_examples=300, deadline=None)
@given(
    ms=st.one_of(st.none(), st.text(max_size=30)),
    seconds=st.one_of(st.none(), st.text(max_size=40), DATE_LIKE),
)
def test_parse_retry_after_never_raises_and_never_goes_negative(
    ms: str | None, seconds: str | None
) -> None:
    headers = {k: v for k, v in [("retry-after-ms", ms), ("retry-after", seconds)] if v is not None}
    result = parse_retry_after(headers, NOW)
    assert result is None or (math.isfinite(result) and result >= 0)


# --- Outcome ------------------------------------------------------------------------------------
def test_outcome_keeps_only_the_headers_the_decision_needs() -> None:
    outcome = http(429, {**OPENAI_429, "X-Should-Retry": "true"})
    assert dict(outcome.headers or {}) == {
        "retry-after": "1", "retry-after-ms": "850", "x-should-retry": "true",
    }


def test_outcome_copies_its_headers() -> None:
    headers = {"retry-after": "1"}
    outcome = http(429, headers)
    headers["retry-after"] = "999"
    assert parse_retry_after(outcome.headers, NOW) == 1.0
    with pytest.raises(TypeError):
        outcome.headers["retry-after"] = "2"  # type: ignore[index]


def test_outcomes_are_values() -> None:
    assert http(429, {"Retry-After": "1"}) == http(429, {"retry-after": "1"})
    assert len({http(429, {"retry-after": "1"}), http(429, {"retry-after": "1"})}) == 1
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        http(429).status = 200  # type: ignore[misc]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Outcome(K.HTTP_STATUS),
        lambda: Outcome(K.CONNECT_ERROR, 502),
        lambda: Outcome(K.TIMEOUT_BEFORE_RESPONSE, 504),
        lambda: Outcome(K.FAILED_AFTER_BYTES_SENT),
        lambda: Outcome(K.HTTP_STATUS, 42),
        lambda: Outcome(K.HTTP_STATUS, 600),
        lambda: Outcome("http_status", 200),  # type: ignore[arg-type]
    ],
)
def test_nonsense_outcomes_are_refused(make: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        make()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("outcome", "fails"),
    [
        (Outcome(K.OK), False),
        (http(200), False),
        (http(400), False),
        (http(401), False),
        (http(404), False),
        (http(409), False),
        (http(422), False),
        (http(408), True),
        (http(429), True),
        (http(500), True),
        (http(501), True),
        (http(503), True),
        (http(529), True),
        (Outcome(K.CONNECT_ERROR), True),
        (Outcome(K.TIMEOUT_BEFORE_RESPONSE), True),
        (Outcome(K.PROTOCOL_ERROR_BEFORE_RESPONSE), True),
        (Outcome(K.FAILED_AFTER_BYTES_SENT, bytes_sent_to_client=True), True),
    ],
)
def test_counts_as_backend_failure(outcome: Outcome, fails: bool) -> None:
    assert outcome.counts_as_backend_failure is fails
