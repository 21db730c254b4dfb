"""Admission limits: requests per minute per client, and requests in flight per proxy.

Theory of operation: `RateLimiter` keeps one token bucket per client (keyed by
the client's name).  A bucket holds at most ``requests_per_minute`` tokens and
refills continuously at ``requests_per_minute / 60`` tokens per second; each
admitted request takes one.  So a client may burst up to its whole minute's
budget at once, and over any interval of T seconds it is admitted at most
``rpm + rpm * T / 60`` requests.  A refused request learns exactly when the
next token arrives, which becomes its ``retry-after``.  The clock is a
parameter (monotonic seconds, e.g. ``trio.current_time()``): the limiter never
reads one, so tests drive time by hand.

`ConcurrencyLimit` counts requests in flight (a streamed response counts until
its last byte); over the limit the proxy answers 503 at once rather than queue
work it cannot start.  Both are plain counters: they hold state but do no I/O.

Both limits are per process: several workers (``hypercorn -w N``) or instances
each enforce their own.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable

import attrs

from core.errors import ProxyError

__all__ = [
    "BUSY_RETRY_AFTER_SECONDS",
    "ConcurrencyLimit",
    "RateLimit",
    "RateLimiter",
    "busy_error",
    "rate_limited_error",
    "retry_after_headers",
]

# How long a client refused for concurrency should wait: requests in flight end
# at unknown times, so this is a hint, not a promise.
BUSY_RETRY_AFTER_SECONDS = 1.0


def _at_least_one(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, got {value!r}")


@attrs.frozen
class RateLimit:
    """``server.rate_limit``: each client key's budget (a key may override it)."""

    requests_per_minute: int = attrs.field(validator=_at_least_one)


@attrs.define
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets per client; see the module docstring."""

    def __init__(self) -> None:
        self._buckets: dict[Hashable, _Bucket] = {}

    def acquire(self, key: Hashable, *, per_minute: int, now: float) -> float | None:
        """Take a token for `key`: None when admitted, else seconds until one is available."""
        if per_minute < 1:
            raise ValueError("per_minute must be >= 1")
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(per_minute), now)
        rate = per_minute / 60.0
        # max(0, ...): a clock that steps back must not drain the bucket.
        bucket.tokens = min(float(per_minute), bucket.tokens + max(0.0, now - bucket.stamp) * rate)
        bucket.stamp = max(bucket.stamp, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / rate

    def retain(self, keys: Collection[Hashable]) -> None:
        """Forget the buckets of clients no longer configured (after a reload)."""
        for key in [k for k in self._buckets if k not in keys]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


class ConcurrencyLimit:
    """Requests in flight, against a limit that may change (None: unlimited)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.active = 0

    def try_acquire(self) -> bool:
        if self.limit is not None and self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        if self.active <= 0:
            raise RuntimeError("release() without a matching try_acquire()")
        self.active -= 1


def retry_after_headers(seconds: float) -> list[tuple[str, str]]:
    """``retry-after`` in whole seconds, rounded up (RFC 9110 §10.2.3), and the
    finer ``retry-after-ms`` that the OpenAI SDK reads first (protocols.md §1.5)."""
    return [("retry-after", str(max(1, math.ceil(seconds)))),
            ("retry-after-ms", str(max(1, math.ceil(seconds * 1000))))]


def rate_limited_error(per_minute: int, wait: float) -> ProxyError:
    return ProxyError(429, f"rate limit of {per_minute} requests per minute reached for this API key; "
                           f"retry in {max(1, math.ceil(wait))} s",
                      type="rate_limit_error", code="rate_limit_exceeded")


def busy_error(limit: int) -> ProxyError:
    # 503, not 429: the proxy as a whole is full (RFC 9110 §15.6.4); 429 would
    # tell the client that *its* quota is spent.
    return ProxyError(503, f"the proxy is serving its maximum of {limit} concurrent requests; retry shortly",
                      type="overloaded_error", code="server_busy")
