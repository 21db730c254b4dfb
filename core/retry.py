"""Whether, and when, to try an upstream request again: a pure decision.

Theory of operation: the adapter makes one attempt, describes how it ended as
an `Outcome` (what it saw, not what it thinks should happen) and asks
`decide(policy, attempt=..., outcome=..., now=..., deadline=..., rng=...)`.
The answer is one of three values:

* `Proceed`: the attempt succeeded; relay it.
* `RetryAfter(delay)`: sleep `delay` seconds, then make attempt ``attempt + 1``.
* `GiveUp(fallback_ok)`: stop retrying this model.  The adapter relays the
  upstream's own error when there is one (a 4xx, or a 429 whose Retry-After is
  too long), otherwise synthesises one; ``fallback_ok`` says whether a
  configured fallback model may be tried next.

The rules are applied in this order, first match wins (issue 5, "Retry"):

1. A 2xx, or a finished response (`OK`), proceeds.
2. Once a byte of the response reached the client nothing is retried or
   replaced by a fallback: a second response would duplicate or corrupt the
   first.  The adapter ends the stream with a protocol-correct error event.
3. Upstream ``x-should-retry: false`` wins over the status; 400, 401, 403,
   404 and 422 are never retried (bad input stays bad), even under
   ``x-should-retry: true``.  Other statuses are retried when listed in
   `RETRYABLE_STATUSES` or when the upstream says ``x-should-retry: true``
   (the header the official SDKs obey, protocols.md §1.5 and §2.5).
4. Connection failures, timeouts and protocol errors before the response
   started are retryable.
5. At most ``policy.max_attempts`` attempts in total (the first included).
6. The delay is ``retry-after-ms`` or ``Retry-After`` when the upstream sent
   one (it knows its own load better than we do), else exponential backoff
   with optional full jitter.  A server hint longer than
   ``policy.max_retry_after_seconds`` ends retrying at once.
7. No retry may start at or after the request's total deadline.

Time and randomness come in as arguments (``now`` is Unix time, so HTTP-dates
in Retry-After can be resolved; ``deadline`` is on the same clock), which is
what makes every branch here testable with a table.
"""

from __future__ import annotations

import datetime
import enum
import math
import random
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Protocol

import attrs

__all__ = [
    "NEVER_RETRYABLE_STATUSES",
    "RETRYABLE_STATUSES",
    "Decision",
    "GiveUp",
    "Outcome",
    "OutcomeKind",
    "Proceed",
    "RetryAfter",
    "RetryPolicyLike",
    "backoff_cap",
    "decide",
    "parse_retry_after",
]

# Issue 5: transient conditions worth a second try.  408 request timeout,
# 409 conflict (the SDKs retry it too: lock contention), 429 rate limit,
# 5xx gateway/overload, 529 Anthropic "overloaded_error" (protocols.md §2.5).
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# Issue 5: the request itself is wrong; repeating it cannot help.
NEVER_RETRYABLE_STATUSES = frozenset({400, 401, 403, 404, 422})

# Only these headers take part in a decision; `Outcome` keeps nothing else.
_DECISION_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")
# RFC 9110 §10.2.3 defines delay-seconds as digits; a fraction is accepted as
# the SDKs do.  A strict ASCII pattern keeps "nan", "inf", "-1", "1e9", "1_0"
# and non-ASCII digits such as "١٢" (all accepted by float()) out.
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Optional whitespace around a field value is SP and HTAB only (RFC 9110 §5.6.3);
# str.strip() would also eat control characters such as \x1f.
_OWS = " \t"


class RetryPolicyLike(Protocol):
    """What `decide` reads from a model's retry policy (core.config.RetryPolicy)."""

    @property
    def max_attempts(self) -> int: ...  # attempts in total, the first included
    @property
    def backoff_ms(self) -> int: ...
    @property
    def max_backoff_ms(self) -> int: ...
    @property
    def jitter(self) -> bool: ...
    @property
    def max_retry_after_seconds(self) -> float: ...


class OutcomeKind(enum.Enum):
    """How one attempt ended, as the adapter saw it.

    "Before response" means before the client-facing response started: a
    stream whose upstream stalls or breaks before its first event is still
    "before response", because nothing has been relayed yet.
    """

    CONNECT_ERROR = "connect_error"
    TIMEOUT_BEFORE_RESPONSE = "timeout_before_response"
    PROTOCOL_ERROR_BEFORE_RESPONSE = "protocol_error_before_response"
    HTTP_STATUS = "http_status"  # the upstream answered with a status line
    FAILED_AFTER_BYTES_SENT = "failed_after_bytes_sent"
    OK = "ok"  # the response was relayed in full


_NO_STATUS_KINDS = frozenset(
    {
        OutcomeKind.CONNECT_ERROR,
        OutcomeKind.TIMEOUT_BEFORE_RESPONSE,
        OutcomeKind.PROTOCOL_ERROR_BEFORE_RESPONSE,
    }
)


def _decision_headers(headers: Mapping[str, str] | None) -> Mapping[str, str] | None:
    if headers is None:
        return None
    kept = {name.lower(): value for name, value in headers.items()}
    return MappingProxyType({k: kept[k] for k in _DECISION_HEADERS if k in kept})


def _check_status(
    instance: Outcome, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None and not 100 <= value <= 599:
        raise ValueError(f"status must be a 3-digit HTTP status, got {value!r}")


@attrs.frozen
class Outcome:
    """One finished attempt.

    ``headers`` may be any mapping (an ``httpx.Headers`` is fine); only
    retry-after, retry-after-ms and x-should-retry are kept, names lower-cased.
    """

    kind: OutcomeKind = attrs.field(validator=attrs.validators.instance_of(OutcomeKind))
    status: int | None = attrs.field(default=None, validator=_check_status)
    headers: Mapping[str, str] | None = attrs.field(
        default=None, converter=_decision_headers, hash=False
    )
    bytes_sent_to_client: bool = False

    def __attrs_post_init__(self) -> None:
        if self.kind is OutcomeKind.HTTP_STATUS and self.status is None:
            raise ValueError("an HTTP_STATUS outcome needs a status")
        if self.kind in _NO_STATUS_KINDS and self.status is not None:
            raise ValueError(f"{self.kind.name} happens before any status is received")
        if self.kind is OutcomeKind.FAILED_AFTER_BYTES_SENT and not self.bytes_sent_to_client:
            raise ValueError("FAILED_AFTER_BYTES_SENT implies bytes_sent_to_client=True")

    @property
    def counts_as_backend_failure(self) -> bool:
        """Whether this outcome is evidence the deployment is unhealthy.

        For the circuit breaker: transport failures, a response cut mid-way,
        408, 429 and every 5xx (529 included) count.  A 4xx from bad input
        (or 409) is the client's problem and proves the backend is alive.
        Record a client disconnect as nothing at all.
        """
        if self.kind is OutcomeKind.OK:
            return False
        if self.kind is OutcomeKind.HTTP_STATUS:
            assert self.status is not None
            return self.status in (408, 429) or self.status >= 500
        return True


@attrs.frozen
class Proceed:
    """The attempt succeeded: relay the response as it is."""


@attrs.frozen
class RetryAfter:
    """Sleep ``delay`` seconds, then try the same model again."""

    delay: float = attrs.field(validator=attrs.validators.ge(0.0))
    reason: str


@attrs.frozen
class GiveUp:
    """Stop retrying.  ``fallback_ok``: a configured fallback model may be tried."""

    reason: str
    fallback_ok: bool


Decision = Proceed | RetryAfter | GiveUp


def parse_retry_after(headers: Mapping[str, str] | None, now: float) -> float | None:
    """The delay, in seconds, an upstream asked for; None when it asked for none.

    ``retry-after-ms`` (OpenAI's non-standard header, milliseconds, may be
    fractional) is preferred to ``Retry-After`` (RFC 9110 §10.2.3: seconds, or
    an HTTP-date resolved against ``now``, Unix time), which is the order the
    official SDKs use.  A garbage or negative value counts as absent, so a
    garbage ``retry-after-ms`` falls back to ``Retry-After``.  A date in the
    past means "now": 0.
    """
    if not headers:
        return None
    lowered = {name.lower(): value for name, value in headers.items()}
    millis = _parse_decimal(lowered.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    value = lowered.get("retry-after")
    if value is None:
        return None
    seconds = _parse_decimal(value)
    if seconds is not None:
        return seconds
    return _seconds_until_http_date(value, now)


def _parse_decimal(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip(_OWS)
    if not _DECIMAL.fullmatch(value):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _seconds_until_http_date(value: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(value.strip(_OWS))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: RFC 5322 says UTC
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - now)


def backoff_cap(policy: RetryPolicyLike, attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based), before jitter.

    ``backoff_ms * 2**(attempt-1)``, capped at ``max_backoff_ms``.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    # Integer arithmetic: no float overflow however large the attempt.
    return min(policy.backoff_ms * 2 ** (attempt - 1), policy.max_backoff_ms) / 1000.0


def decide(
    policy: RetryPolicyLike,
    *,
    attempt: int,
    outcome: Outcome,
    now: float,
    deadline: float | None,
    rng: random.Random,
) -> Decision:
    """What to do after attempt ``attempt`` (1-based) ended with ``outcome``.

    ``now`` and ``deadline`` are Unix times (``deadline`` None: unbounded);
    ``rng`` draws the jitter.  Running out of attempts, a Retry-After above the
    maximum or a deadline too close all give up with ``fallback_ok=True``: a
    fallback starts at once, and the adapter bounds it by the same deadline.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    if _succeeded(outcome):
        return Proceed()
    refusal = _refusal(outcome)
    if refusal is not None:
        return refusal
    what = _describe(outcome)
    if attempt >= policy.max_attempts:
        return GiveUp(f"{what}; {attempt} of {policy.max_attempts} attempts used", fallback_ok=True)
    return _schedule(policy, attempt, outcome, now, deadline, rng, what)


def _succeeded(outcome: Outcome) -> bool:
    if outcome.kind is OutcomeKind.OK:
        return True
    return outcome.kind is OutcomeKind.HTTP_STATUS and 200 <= (outcome.status or 0) < 300


def _refusal(outcome: Outcome) -> GiveUp | None:
    """The `GiveUp` for a failure that must not be retried; None if it may be."""
    if outcome.bytes_sent_to_client:
        return GiveUp(f"{_describe(outcome)} after bytes reached the client", fallback_ok=False)
    if outcome.kind is not OutcomeKind.HTTP_STATUS:
        return None
    status = outcome.status
    hint = (outcome.headers or {}).get("x-should-retry", "").strip().lower()
    if hint == "false":
        # A server-side status is still fine for another backend: the header
        # vetoes retrying *this* upstream, not every upstream.
        return GiveUp(
            f"upstream status {status} with x-should-retry: false",
            fallback_ok=status in RETRYABLE_STATUSES,
        )
    if status in NEVER_RETRYABLE_STATUSES:
        return GiveUp(f"upstream status {status} is not retryable", fallback_ok=False)
    if status in RETRYABLE_STATUSES or hint == "true":
        return None
    return GiveUp(f"upstream status {status} is not retryable", fallback_ok=False)


def _describe(outcome: Outcome) -> str:
    if outcome.kind is OutcomeKind.HTTP_STATUS:
        return f"upstream status {outcome.status}"
    return outcome.kind.value.replace("_", " ")


def _schedule(
    policy: RetryPolicyLike,
    attempt: int,
    outcome: Outcome,
    now: float,
    deadline: float | None,
    rng: random.Random,
    what: str,
) -> RetryAfter | GiveUp:
    asked = parse_retry_after(outcome.headers, now)
    if asked is not None and asked > policy.max_retry_after_seconds:
        return GiveUp(
            f"{what} asks to wait {asked:g}s, more than {policy.max_retry_after_seconds:g}s",
            fallback_ok=True,
        )
    if asked is not None:
        delay, source = asked, "as the upstream asked"
    else:
        cap = backoff_cap(policy, attempt)
        delay = rng.uniform(0.0, cap) if policy.jitter else cap
        source = "backoff"
    # Starting at the deadline leaves no time for the attempt itself.
    if deadline is not None and now + delay >= deadline:
        return GiveUp(f"{what}; a retry in {delay:g}s would pass the deadline", fallback_ok=True)
    return RetryAfter(delay, f"{what}; retry {attempt + 1} in {delay:g}s ({source})")
