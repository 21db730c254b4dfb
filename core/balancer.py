"""Which deployment of a model to try, and which to leave alone for a while.

Theory of operation: a model may be served by several deployments (backend
blocks with a ``weight``).  Each has a `CircuitBreaker`, a small state machine
driven by the outcomes the adapter reports and by an injected clock:

    CLOSED --failure #N in a row--> OPEN --cooldown elapsed--> HALF_OPEN
    HALF_OPEN --success--> CLOSED        HALF_OPEN --failure--> OPEN (again)

N is ``cooldown_after_failures``; OPEN lasts ``cooldown_seconds`` (issue 5:
such a deployment "is skipped for cooldown_seconds, and comes back
afterwards").  HALF_OPEN admits one trial request: `CircuitBreaker.acquire`
hands it out once; if no outcome is reported for it within another
``cooldown_seconds`` (the request was cancelled, or another deployment served
it) the trial is presumed lost and handed out again, so a deployment can never
stay stuck.  Outcomes that arrive while OPEN come from requests started
earlier: a success closes the breaker (the backend demonstrably works), a
failure changes nothing (it is old news and must not extend the cooldown).

`Balancer.choose` orders the deployments for one request: those whose breaker
admits traffic in weighted random order (each position drawn with probability
proportional to ``weight`` among those not yet placed); deployments in cooldown
are skipped.  Only when every deployment is cooling down does it return them
all, soonest-to-recover first, as a last resort, unless ``last_resort=False``
(a model with fallbacks should fail over at once rather than hammer a
backend known to be down).

What counts as a failure is the adapter's call; it should report
``ok = not outcome.counts_as_backend_failure`` (core.retry), so a 4xx from bad
input proves a backend alive instead of tripping its breaker.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

import attrs

__all__ = [
    "Balancer",
    "BreakerEvent",
    "BreakerState",
    "CircuitBreaker",
    "DeploymentLike",
    "TRANSITIONS",
]


class DeploymentLike(Protocol):
    """What the balancer reads from a deployment (core.config.Deployment)."""

    @property
    def weight(self) -> float: ...
    @property
    def label(self) -> str: ...  # unique among one model's deployments


class BreakerState(enum.Enum):
    CLOSED = "closed"  # traffic flows; consecutive failures are counted
    OPEN = "open"  # skipped until the cooldown ends
    HALF_OPEN = "half_open"  # one trial request decides


class BreakerEvent(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"  # a failure below the threshold
    TRIP = "trip"  # the failure that reaches cooldown_after_failures (CLOSED only)
    COOLDOWN_ELAPSED = "cooldown_elapsed"


# The whole state machine, as data.  A pair missing here is a bug in this
# module (the events are derived internally), so it raises rather than guess.
TRANSITIONS: dict[BreakerState, dict[BreakerEvent, BreakerState]] = {
    BreakerState.CLOSED: {
        BreakerEvent.SUCCESS: BreakerState.CLOSED,
        BreakerEvent.FAILURE: BreakerState.CLOSED,
        BreakerEvent.TRIP: BreakerState.OPEN,
    },
    BreakerState.OPEN: {
        BreakerEvent.SUCCESS: BreakerState.CLOSED,
        BreakerEvent.FAILURE: BreakerState.OPEN,
        BreakerEvent.COOLDOWN_ELAPSED: BreakerState.HALF_OPEN,
    },
    BreakerState.HALF_OPEN: {
        BreakerEvent.SUCCESS: BreakerState.CLOSED,
        # One failed trial is enough: the backend has not recovered.
        BreakerEvent.FAILURE: BreakerState.OPEN,
    },
}


def _finite_non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, got {value!r}")


@attrs.define(eq=False, kw_only=True)
class CircuitBreaker:
    """The health of one deployment; every method takes the current time."""

    cooldown_after_failures: int = attrs.field(validator=_positive_int)
    cooldown_seconds: float = attrs.field(validator=_finite_non_negative)
    _state: BreakerState = attrs.field(default=BreakerState.CLOSED, init=False)
    _failures: int = attrs.field(default=0, init=False)  # consecutive, while CLOSED
    _open_until: float = attrs.field(default=-math.inf, init=False)
    _trial_until: float | None = attrs.field(default=None, init=False)  # HALF_OPEN lease

    def state(self, now: float) -> BreakerState:
        self._tick(now)
        return self._state

    def available(self, now: float) -> bool:
        """Whether a request may be sent now (without claiming the trial)."""
        self._tick(now)
        if self._state is BreakerState.HALF_OPEN:
            return self._trial_until is None or now >= self._trial_until
        return self._state is BreakerState.CLOSED

    def acquire(self, now: float) -> bool:
        """`available`, and if HALF_OPEN, claim its one trial request."""
        if not self.available(now):
            return False
        if self._state is BreakerState.HALF_OPEN:
            self._trial_until = now + self.cooldown_seconds
        return True

    def available_at(self, now: float) -> float:
        """The earliest time at which `available` can be true again."""
        if self.available(now):
            return now
        if self._state is BreakerState.OPEN:
            return self._open_until
        assert self._trial_until is not None
        return self._trial_until

    def record_success(self, now: float) -> None:
        self._tick(now)
        self._apply(BreakerEvent.SUCCESS, now)

    def record_failure(self, now: float) -> None:
        self._tick(now)
        closed = self._state is BreakerState.CLOSED
        if closed and self._failures + 1 >= self.cooldown_after_failures:
            self._apply(BreakerEvent.TRIP, now)
        else:
            self._apply(BreakerEvent.FAILURE, now)
            if closed:
                self._failures += 1

    def _tick(self, now: float) -> None:
        # The only transition driven by time alone, applied lazily.
        if self._state is BreakerState.OPEN and now >= self._open_until:
            self._apply(BreakerEvent.COOLDOWN_ELAPSED, now)

    def _apply(self, event: BreakerEvent, now: float) -> None:
        new = TRANSITIONS[self._state][event]  # KeyError: a bug in this module
        if new is not self._state:
            self._enter(new, now)

    def _enter(self, state: BreakerState, now: float) -> None:
        self._state = state
        self._failures = 0
        self._trial_until = None
        if state is BreakerState.OPEN:
            self._open_until = now + self.cooldown_seconds


D = TypeVar("D", bound=DeploymentLike)


class Balancer(Generic[D]):
    """Weighted random choice among a model's deployments, skipping dead ones."""

    def __init__(
        self,
        deployments: Sequence[D],
        *,
        cooldown_after_failures: int,
        cooldown_seconds: float,
    ) -> None:
        if not deployments:
            raise ValueError("a balancer needs at least one deployment")
        labels = [d.label for d in deployments]
        if len(set(labels)) != len(labels):
            raise ValueError(f"deployment labels must be unique, got {labels}")
        for d in deployments:
            if not (math.isfinite(d.weight) and d.weight >= 0):
                raise ValueError(f"deployment {d.label!r}: weight must be finite and >= 0")
        self._deployments: tuple[D, ...] = tuple(deployments)
        self._breakers = {
            label: CircuitBreaker(
                cooldown_after_failures=cooldown_after_failures, cooldown_seconds=cooldown_seconds
            )
            for label in labels
        }

    @property
    def deployments(self) -> tuple[D, ...]:
        return self._deployments

    def state(self, deployment: D, now: float) -> BreakerState:
        return self._breaker(deployment).state(now)

    def choose(self, now: float, rng: random.Random, *, last_resort: bool = True) -> list[D]:
        """The deployments to try for one request, best first.

        Claims the HALF_OPEN trial of every recovering deployment it returns.
        Empty only when all are cooling down and ``last_resort`` is False.
        """
        ready = [d for d in self._deployments if self._breaker(d).acquire(now)]
        if ready:
            return _weighted_order(ready, rng)
        if not last_resort:
            return []
        # Everything is down: rather try what should recover soonest than
        # fail without trying; one success closes its breaker.
        return sorted(self._deployments, key=lambda d: self._breaker(d).available_at(now))

    def record(self, deployment: D, ok: bool, now: float) -> None:
        """Report how an attempt on ``deployment`` went (see module docstring)."""
        breaker = self._breaker(deployment)
        if ok:
            breaker.record_success(now)
        else:
            breaker.record_failure(now)

    def _breaker(self, deployment: D) -> CircuitBreaker:
        try:
            return self._breakers[deployment.label]
        except KeyError:
            raise ValueError(f"unknown deployment {deployment.label!r}") from None


def _weighted_order(deployments: list[D], rng: random.Random) -> list[D]:
    """A random order in which each next place is drawn proportionally to weight.

    Exponential race (Efraimidis-Spirakis): each deployment draws an
    Exp(weight) time and they are placed by arrival, which gives exactly that
    distribution with one draw each.  Weight 0 means "only when the others
    are exhausted": those come last, in configuration order.
    """
    weighted = [d for d in deployments if d.weight > 0]
    spares = [d for d in deployments if d.weight == 0]
    race = sorted((rng.expovariate(d.weight), i) for i, d in enumerate(weighted))
    return [weighted[i] for _, i in race] + spares
