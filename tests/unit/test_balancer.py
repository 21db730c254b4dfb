"""Circuit breakers and weighted choice of deployments (core.balancer), on an injected clock."""

from __future__ import annotations

import collections
import math
import random

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.balancer import Balancer, BreakerState, CircuitBreaker
from core.retry import Outcome, OutcomeKind

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
T0 = 1_000.0


@attrs.frozen
class Deployment:
    """Shaped like core.config.Deployment: the balancer reads only `label` and `weight`."""

    label: str
    weight: float = 1.0
    base_url: str = "http://127.0.0.1:9"


def breaker(failures: int = 3, cooldown: float = 30.0) -> CircuitBreaker:
    return CircuitBreaker(cooldown_after_failures=failures, cooldown_seconds=cooldown)


def tripped(failures: int = 3, cooldown: float = 30.0, at: float = T0) -> CircuitBreaker:
    b = breaker(failures, cooldown)
    for _ in range(failures):
        b.record_failure(at)
    return b


# --- the breaker's transitions -------------------------------------------------------------------
def test_closed_until_the_threshold_of_consecutive_failures() -> None:
    b = breaker(failures=3)
    b.record_failure(T0)
    b.record_failure(T0 + 1)
    assert b.state(T0 + 1) is CLOSED and b.available(T0 + 1)
    b.record_failure(T0 + 2)
    assert b.state(T0 + 2) is OPEN and not b.available(T0 + 2)


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    b = breaker(failures=3)
    for now in range(10):
        b.record_failure(T0 + now)
        b.record_failure(T0 + now)
        b.record_success(T0 + now)
    assert b.state(T0 + 10) is CLOSED


def test_open_for_exactly_the_cooldown_then_half_open() -> None:
    b = tripped(cooldown=30.0, at=T0)
    assert not b.available(T0 + 29.999)
    assert b.available_at(T0 + 10) == T0 + 30
    assert b.state(T0 + 30) is HALF_OPEN and b.available(T0 + 30)


def test_half_open_admits_one_trial_request() -> None:
    b = tripped(at=T0)
    assert b.acquire(T0 + 31) is True
    assert b.acquire(T0 + 31) is False
    assert not b.available(T0 + 40)
    assert b.state(T0 + 40) is HALF_OPEN


def test_successful_trial_closes_the_breaker() -> None:
    b = tripped(failures=2, at=T0)
    assert b.acquire(T0 + 30)
    b.record_success(T0 + 32)
    assert b.state(T0 + 32) is CLOSED
    assert b.acquire(T0 + 32) and b.acquire(T0 + 32)
    # Counting starts afresh: one failure does not reopen a 2-failure breaker.
    b.record_failure(T0 + 33)
    assert b.state(T0 + 33) is CLOSED


def test_failed_trial_opens_again_for_another_full_cooldown() -> None:
    b = tripped(failures=5, cooldown=30.0, at=T0)
    assert b.acquire(T0 + 35)
    b.record_failure(T0 + 40)  # one failure is enough in HALF_OPEN
    assert b.state(T0 + 40) is OPEN
    assert not b.available(T0 + 69.9)
    assert b.state(T0 + 70) is HALF_OPEN


def test_a_lost_trial_is_handed_out_again_after_a_cooldown() -> None:
    # The trial request was cancelled (client gone) and reported nothing.
    b = tripped(cooldown=30.0, at=T0)
    assert b.acquire(T0 + 30)
    assert not b.acquire(T0 + 59)
    assert b.available_at(T0 + 59) == T0 + 60
    assert b.acquire(T0 + 60)


def test_a_late_failure_while_open_does_not_extend_the_cooldown() -> None:
    b = tripped(cooldown=30.0, at=T0)
    b.record_failure(T0 + 20)  # a request started before the trip, failing late
    assert b.state(T0 + 30) is HALF_OPEN


def test_a_late_success_while_open_closes_the_breaker() -> None:
    b = tripped(at=T0)
    b.record_success(T0 + 5)  # the backend demonstrably works
    assert b.state(T0 + 5) is CLOSED and b.available(T0 + 5)


def test_threshold_of_one_opens_on_the_first_failure() -> None:
    b = breaker(failures=1, cooldown=10)
    b.record_failure(T0)
    assert b.state(T0) is OPEN
    b.record_failure(T0 + 1)  # still open, timer unchanged
    assert b.state(T0 + 10) is HALF_OPEN


def test_full_cycle_closed_open_half_open_open_half_open_closed() -> None:
    b = breaker(failures=2, cooldown=5)
    seen = [b.state(0)]
    b.record_failure(1); b.record_failure(2); seen.append(b.state(2))  # noqa: E702
    seen.append(b.state(7))
    b.acquire(7); b.record_failure(8); seen.append(b.state(8))  # noqa: E702
    seen.append(b.state(13))
    b.acquire(13); b.record_success(14); seen.append(b.state(14))  # noqa: E702
    assert seen == [CLOSED, OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


@pytest.mark.parametrize(
    ("failures", "cooldown"),
    [(0, 1.0), (-1, 1.0), (1.5, 1.0), (True, 1.0), (1, -1.0), (1, math.nan), (1, math.inf)],
)
def test_breaker_settings_are_validated(failures: object, cooldown: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(
            cooldown_after_failures=failures, cooldown_seconds=cooldown  # type: ignore[arg-type]
        )


EVENTS = st.lists(
    st.tuples(st.sampled_from(["success", "failure", "acquire", "available"]),
              st.floats(0, 50, allow_nan=False)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(events=EVENTS, failures=st.integers(1, 4), cooldown=st.floats(0, 60, allow_nan=False))
def test_a_deployment_always_comes_back_one_cooldown_after_the_last_event(
    events: list[tuple[str, float]], failures: int, cooldown: float
) -> None:
    b = breaker(failures, cooldown)
    now = T0
    for name, step in events:
        now += step
        getattr(b, f"record_{name}" if name in ("success", "failure") else name)(now)
    assert b.available(now + cooldown)
    assert b.available_at(now) <= now + cooldown


@settings(max_examples=200, deadline=None)
@given(events=EVENTS, failures=st.integers(1, 4))
def test_n_failures_in_a_row_always_take_a_deployment_out(
    events: list[tuple[str, float]], failures: int
) -> None:
    b = breaker(failures, 30.0)
    now = T0
    for name, step in events:
        now += step
        getattr(b, f"record_{name}" if name in ("success", "failure") else name)(now)
    b.record_success(now)
    for _ in range(failures):
        b.record_failure(now)
    assert not b.available(now) and b.state(now) is OPEN


# --- weighted choice -----------------------------------------------------------------------------
def balancer(
    *deployments: Deployment, failures: int = 3, cooldown: float = 30.0
) -> Balancer[Deployment]:
    return Balancer(deployments, cooldown_after_failures=failures, cooldown_seconds=cooldown)


def test_first_choice_follows_the_weights() -> None:
    b = balancer(Deployment("a", 1), Deployment("b", 2), Deployment("c", 7))
    rng = random.Random(5)
    draws = 20_000
    first = collections.Counter(b.choose(T0, rng)[0].label for _ in range(draws))
    # Binomial sd at p=0.7 over 20k draws is 0.0032: 0.015 is a generous 4.6 sd.
    for label, share in {"a": 0.1, "b": 0.2, "c": 0.7}.items():
        assert first[label] / draws == pytest.approx(share, abs=0.015)


def test_later_places_follow_the_weights_of_those_left() -> None:
    b = balancer(Deployment("a", 1), Deployment("b", 2), Deployment("c", 7))
    rng = random.Random(6)
    orders = [tuple(d.label for d in b.choose(T0, rng)) for _ in range(20_000)]
    assert all(sorted(order) == ["a", "b", "c"] for order in orders)
    after_c = collections.Counter(order[1] for order in orders if order[0] == "c")
    assert after_c["b"] / sum(after_c.values()) == pytest.approx(2 / 3, abs=0.02)


def test_equal_weights_spread_evenly() -> None:
    b = balancer(*(Deployment(f"d{i}") for i in range(4)))
    rng = random.Random(7)
    first = collections.Counter(b.choose(T0, rng)[0].label for _ in range(8_000))
    assert all(n / 8_000 == pytest.approx(0.25, abs=0.02) for n in first.values())


def test_zero_weight_deployments_are_spares_tried_last() -> None:
    spare = Deployment("spare", 0)
    b = balancer(Deployment("a", 1), spare, Deployment("b", 1))
    rng = random.Random(8)
    assert all(b.choose(T0, rng)[-1] is spare for _ in range(200))


def test_the_same_seed_gives_the_same_order() -> None:
    b = balancer(*(Deployment(f"d{i}", i + 1) for i in range(5)))
    assert b.choose(T0, random.Random(9)) == b.choose(T0, random.Random(9))


def test_a_single_deployment_is_always_chosen() -> None:
    only = Deployment("only")
    assert balancer(only).choose(T0, random.Random(0)) == [only]


# --- dead deployments ----------------------------------------------------------------------------
def test_a_dead_deployment_is_skipped_then_comes_back_after_cooldown() -> None:
    dead, live = Deployment("dead", 9), Deployment("live", 1)
    b = balancer(dead, live, failures=3, cooldown=30)
    for t in range(3):
        b.record(dead, False, T0 + t)
    rng = random.Random(10)
    assert all(b.choose(T0 + 2 + i * 0.01, rng) == [live] for i in range(2_000))
    # Cooldown over: the next request gets the one trial, the one after does not.
    trial = b.choose(T0 + 32, rng)
    assert dead in trial
    assert b.choose(T0 + 32, rng) == [live]
    b.record(dead, True, T0 + 33)
    assert b.state(dead, T0 + 33) is CLOSED
    firsts = collections.Counter(b.choose(T0 + 34, rng)[0].label for _ in range(1_000))
    assert firsts["dead"] > 800  # back in rotation with its weight of 9/10


def test_a_failed_trial_keeps_the_deployment_out_for_another_cooldown() -> None:
    dead, live = Deployment("dead"), Deployment("live")
    b = balancer(dead, live, failures=2, cooldown=10)
    b.record(dead, False, T0)
    b.record(dead, False, T0)
    assert dead in b.choose(T0 + 10, random.Random(0))
    b.record(dead, False, T0 + 11)
    assert b.choose(T0 + 20, random.Random(0)) == [live]
    assert dead in b.choose(T0 + 21, random.Random(0))


def test_when_all_are_down_they_are_tried_soonest_to_recover_first() -> None:
    a, b_, c = Deployment("a"), Deployment("b"), Deployment("c")
    b = balancer(a, b_, c, failures=1, cooldown=30)
    b.record(b_, False, T0)
    b.record(c, False, T0 + 5)
    b.record(a, False, T0 + 10)
    assert b.choose(T0 + 12, random.Random(0)) == [b_, c, a]


def test_when_all_are_down_and_last_resort_is_off_nothing_is_tried() -> None:
    a = Deployment("a")
    b = balancer(a, failures=1, cooldown=30)
    b.record(a, False, T0)
    assert b.choose(T0 + 1, random.Random(0), last_resort=False) == []
    assert b.choose(T0 + 30, random.Random(0), last_resort=False) == [a]


def test_bad_input_does_not_trip_the_breaker() -> None:
    """The adapter reports ok = not outcome.counts_as_backend_failure."""
    d, other = Deployment("d"), Deployment("other")
    b = balancer(d, other, failures=2)
    for t, outcome in enumerate([
        Outcome(OutcomeKind.HTTP_STATUS, 503),
        Outcome(OutcomeKind.HTTP_STATUS, 400),  # the backend answered: it is alive
        Outcome(OutcomeKind.CONNECT_ERROR),
        Outcome(OutcomeKind.HTTP_STATUS, 422),
        Outcome(OutcomeKind.HTTP_STATUS, 529),
    ]):
        b.record(d, not outcome.counts_as_backend_failure, T0 + t)
    assert b.state(d, T0 + 5) is CLOSED
    b.record(d, not Outcome(OutcomeKind.TIMEOUT_BEFORE_RESPONSE).counts_as_backend_failure, T0 + 6)
    assert b.state(d, T0 + 6) is OPEN


def test_breakers_are_per_deployment_and_found_by_label() -> None:
    a, b_ = Deployment("a"), Deployment("b")
    b = balancer(a, b_, failures=1)
    b.record(Deployment("a"), False, T0)  # an equal object rebuilt from configuration
    assert b.state(a, T0) is OPEN and b.state(b_, T0) is CLOSED


@pytest.mark.parametrize(
    "deployments",
    [
        [],
        [Deployment("a"), Deployment("a", 2)],
        [Deployment("a", -1)],
        [Deployment("a", math.nan)],
        [Deployment("a", math.inf)],
    ],
)
def test_bad_deployment_lists_are_refused(deployments: list[Deployment]) -> None:
    with pytest.raises(ValueError):
        balancer(*deployments)


def test_an_unknown_deployment_is_refused() -> None:
    with pytest.raises(ValueError, match="ghost"):
        balancer(Deployment("a")).record(Deployment("ghost"), True, T0)
