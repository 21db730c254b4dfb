"""CORS for browser clients (the Fetch standard's CORS protocol), off unless configured.

Theory of operation: a browser calling the proxy from a page on another origin
first sends a *preflight* (``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``), because the SDKs' requests carry a JSON body
and ``Authorization``/``x-api-key``.  `CorsPolicy.preflight` answers it; then
every actual response (errors and streams included) carries
`CorsPolicy.response_headers`, or the page cannot read it.  The adapter strips
any ``Access-Control-*`` header an upstream sent (it speaks for the upstream's
origin, not ours) before adding these.

Rules from the Fetch standard (§3.2.3 "HTTP responses", §3.2.5 "CORS check"):

* ``Access-Control-Allow-Origin`` holds ``*`` or exactly one origin; with
  credentials it must be the request's origin, never ``*`` (so ``*`` together with
  ``allow_credentials`` is refused at load time);
* a response whose allow-origin depends on the request's ``Origin`` says
  ``Vary: Origin`` so caches keep them apart;
* the ``*`` wildcard in ``Access-Control-Allow-Headers`` never covers
  ``Authorization``; so ``allow_headers: ["*"]`` (the default) is answered by
  echoing the headers the browser asked for, which works for every header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

__all__ = ["DEFAULT_EXPOSE_HEADERS", "CorsPolicy", "origin_problem"]

# What a browser SDK needs to see besides the CORS-safelisted response headers:
# retry hints (both SDKs honour them) and the request ids users quote in bug reports.
DEFAULT_EXPOSE_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry", "x-request-id", "request-id")
DEFAULT_METHODS = ("GET", "POST", "OPTIONS")
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s@]+")


def origin_problem(origin: str) -> str | None:
    """Why `origin` cannot be an ``allow_origins`` entry, or None (``*`` is allowed)."""
    if origin == "*":
        return None
    if not _ORIGIN.fullmatch(origin.lower().rstrip("/")):
        return f"expected '*' or an origin such as 'https://app.example.com' (no path), got {origin!r}"
    return None


def _origins(values: Sequence[str]) -> tuple[str, ...]:
    # Browsers serialise an origin with a lower-case scheme and host and no trailing '/'.
    return tuple(value if value == "*" else value.lower().rstrip("/") for value in values)


def _upper(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(value.upper() for value in values)


def _lower(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(value.lower() for value in values)


@attrs.frozen
class CorsPolicy:
    """``server.cors``; see the module docstring."""

    allow_origins: tuple[str, ...] = attrs.field(converter=_origins)
    allow_headers: tuple[str, ...] = attrs.field(default=("*",), converter=_lower)
    allow_methods: tuple[str, ...] = attrs.field(default=DEFAULT_METHODS, converter=_upper)
    expose_headers: tuple[str, ...] = attrs.field(default=DEFAULT_EXPOSE_HEADERS, converter=_lower)
    max_age_seconds: int = 600
    allow_credentials: bool = False

    def __attrs_post_init__(self) -> None:
        if not self.allow_origins:
            raise ValueError("allow_origins must list at least one origin (or '*')")
        problems = [p for p in map(origin_problem, self.allow_origins) if p]
        if problems:
            raise ValueError(problems[0])
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("allow_credentials cannot be combined with the '*' origin (Fetch standard §3.2.5)")
        if isinstance(self.max_age_seconds, bool) or self.max_age_seconds < 0:
            raise ValueError("max_age_seconds must be >= 0")

    @property
    def any_origin(self) -> bool:
        return "*" in self.allow_origins

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin.lower().rstrip("/") in self.allow_origins

    def response_headers(self, origin: str) -> list[tuple[str, str]]:
        """Headers for an actual response to a request from `origin` ([] if not allowed)."""
        if not self.allows(origin):
            return []
        headers = self._origin_headers(origin)
        if self.expose_headers:
            headers.append(("access-control-expose-headers", ", ".join(self.expose_headers)))
        return headers

    def preflight(self, origin: str, request_method: str, request_headers: str) -> list[tuple[str, str]] | None:
        """Headers answering a preflight from `origin`, or None when the origin is not allowed.

        `request_headers` is the raw ``Access-Control-Request-Headers`` value ("" if absent).
        """
        if not self.allows(origin):
            return None
        headers = self._origin_headers(origin)
        methods = request_method.upper() if "*" in self.allow_methods else ", ".join(self.allow_methods)
        headers.append(("access-control-allow-methods", methods))
        asked = request_headers.strip()
        if "*" in self.allow_headers:
            if asked:
                headers.append(("access-control-allow-headers", asked))
            headers.append(("vary", "Access-Control-Request-Headers"))
        else:
            headers.append(("access-control-allow-headers", ", ".join(self.allow_headers)))
        headers.append(("access-control-max-age", str(self.max_age_seconds)))
        return headers

    def _origin_headers(self, origin: str) -> list[tuple[str, str]]:
        if self.any_origin and not self.allow_credentials:
            return [("access-control-allow-origin", "*")]
        headers = [("access-control-allow-origin", origin), ("vary", "Origin")]
        if self.allow_credentials:
            headers.append(("access-control-allow-credentials", "true"))
        return headers
