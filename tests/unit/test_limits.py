"""Admission limits (core.limits): per-client requests per minute on an injected clock, and in-flight counts."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import anthropic_error_body, openai_error_body
from core.limits import (
    ConcurrencyLimit,
    RateLimit,
    RateLimiter,
    busy_error,
    rate_limited_error,
    retry_after_headers,
)

# -- requests per minute -----------------------------------------------------------------------


def test_a_client_may_burst_its_whole_minute_then_waits_for_the_next_token():
    limiter = RateLimiter()
    assert [limiter.acquire("alice", per_minute=3, now=100.0) for _ in range(3)] == [None, None, None]
    assert limiter.acquire("alice", per_minute=3, now=100.0) == pytest.approx(20.0)  # 60 s / 3
    assert limiter.acquire("alice", per_minute=3, now=110.0) == pytest.approx(10.0)
    assert limiter.acquire("alice", per_minute=3, now=119.999) == pytest.approx(0.001)
    assert limiter.acquire("alice", per_minute=3, now=120.0) is None
    assert limiter.acquire("alice", per_minute=3, now=120.0) == pytest.approx(20.0)


def test_refusals_do_not_spend_tokens():
    limiter = RateLimiter()
    limiter.acquire("a", per_minute=1, now=0.0)
    for t in (1.0, 10.0, 59.0):
        assert limiter.acquire("a", per_minute=1, now=t) == pytest.approx(60.0 - t)
    assert limiter.acquire("a", per_minute=1, now=60.0) is None


def test_clients_have_separate_buckets():
    limiter = RateLimiter()
    assert limiter.acquire("alice", per_minute=1, now=0.0) is None
    assert limiter.acquire("alice", per_minute=1, now=0.0) is not None
    assert limiter.acquire("bob", per_minute=1, now=0.0) is None


def test_an_idle_bucket_refills_to_its_capacity_not_beyond():
    limiter = RateLimiter()
    limiter.acquire("a", per_minute=2, now=0.0)
    admitted = [limiter.acquire("a", per_minute=2, now=3600.0) is None for _ in range(3)]
    assert admitted == [True, True, False]


def test_a_clock_stepping_back_neither_credits_nor_drains():
    limiter = RateLimiter()
    limiter.acquire("a", per_minute=2, now=50.0)
    assert limiter.acquire("a", per_minute=2, now=10.0) is None  # the one token left
    assert limiter.acquire("a", per_minute=2, now=10.0) == pytest.approx(30.0)
    assert limiter.acquire("a", per_minute=2, now=80.0) is None  # 30 s after the latest reading


def test_retain_forgets_clients_no_longer_configured():
    limiter = RateLimiter()
    for name in ("alice", "bob", "carol"):
        limiter.acquire(name, per_minute=1, now=0.0)
    limiter.retain({"bob"})
    assert len(limiter) == 1
    assert limiter.acquire("alice", per_minute=1, now=0.0) is None  # a fresh bucket
    assert limiter.acquire("bob", per_minute=1, now=0.0) is not None


@settings(max_examples=80, deadline=None)
@given(per_minute=st.integers(1, 20),
       gaps=st.lists(st.floats(0.0, 15.0, allow_nan=False), min_size=1, max_size=60))
def test_no_window_admits_more_than_the_budget_allows(per_minute, gaps):
    """Over any interval of T seconds at most rpm + rpm*T/60 requests get in."""
    limiter = RateLimiter()
    now, admitted = 0.0, []
    for gap in gaps:
        now += gap
        if limiter.acquire("k", per_minute=per_minute, now=now) is None:
            admitted.append(now)
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            span = admitted[j] - start
            assert j - i + 1 <= per_minute + per_minute * span / 60.0 + 1e-9


@settings(max_examples=80, deadline=None)
@given(per_minute=st.integers(1, 600), burst=st.integers(0, 50), later=st.floats(0.0, 30.0, allow_nan=False))
def test_retry_after_is_exact(per_minute, burst, later):
    """A refused client that waits exactly the time it was told is admitted, and not a moment before."""
    limiter = RateLimiter()
    wait = None
    for _ in range(burst):
        wait = limiter.acquire("k", per_minute=per_minute, now=0.0)
    wait = limiter.acquire("k", per_minute=per_minute, now=later)
    if wait is None:
        return
    assert 0 < wait <= 60.0 / per_minute + 1e-9
    probe = copy.deepcopy(limiter)
    if wait > 1e-3:
        assert probe.acquire("k", per_minute=per_minute, now=later + wait * 0.999) is not None
    assert limiter.acquire("k", per_minute=per_minute, now=later + wait + 1e-9) is None


def test_rate_limit_values_validate():
    assert RateLimit(60).requests_per_minute == 60
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError):
            RateLimit(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RateLimiter().acquire("a", per_minute=0, now=0.0)


# -- requests in flight ------------------------------------------------------------------------


def test_the_concurrency_limit_admits_up_to_the_limit_and_frees_slots_on_release():
    limit = ConcurrencyLimit(2)
    assert [limit.try_acquire() for _ in range(3)] == [True, True, False]
    limit.release()
    assert limit.try_acquire() and limit.active == 2


def test_lowering_the_limit_lets_requests_in_flight_finish():
    limit = ConcurrencyLimit(3)
    for _ in range(3):
        limit.try_acquire()
    limit.limit = 1  # a reload
    assert not limit.try_acquire()
    limit.release()
    limit.release()
    assert not limit.try_acquire()  # still one in flight: at the new limit
    limit.release()
    assert limit.try_acquire()


def test_no_limit_admits_everything_and_release_must_match():
    limit = ConcurrencyLimit(None)
    assert all(limit.try_acquire() for _ in range(1000))
    fresh = ConcurrencyLimit(1)
    with pytest.raises(RuntimeError):
        fresh.release()


# -- what the client is told -------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "header", "ms"), [
    (0.0004, "1", "1"), (0.2, "1", "200"), (1.0, "1", "1000"), (1.01, "2", "1010"), (29.5, "30", "29500"),
])
def test_retry_after_is_whole_seconds_rounded_up_with_the_finer_ms_variant(seconds, header, ms):
    assert retry_after_headers(seconds) == [("retry-after", header), ("retry-after-ms", ms)]


def test_refusals_in_both_protocols():
    limited = rate_limited_error(30, 1.5)
    assert limited.status == 429 and "30 requests per minute" in limited.message and "2 s" in limited.message
    assert openai_error_body(limited)["error"]["code"] == "rate_limit_exceeded"
    assert anthropic_error_body(limited)["error"]["type"] == "rate_limit_error"
    busy = busy_error(8)
    assert busy.status == 503 and "8 concurrent" in busy.message
    assert anthropic_error_body(busy)["error"]["type"] == "overloaded_error"
