"""The interface between the proxy and its upstream HTTP client.

Theory of operation: the proxy talks to a backend through a `Transport`. One
call to `Transport.request` sends a whole request (the body is already in
memory: LLM requests are JSON documents) and returns as soon as the response
*head* has arrived, as an `UpstreamResponse` whose body the caller pulls piece
by piece with `receive_some` (streaming) or all at once with `read`.

Everything that can go wrong on the wire becomes one of two exceptions:

* `UpstreamConnectError`: no connection could be made (DNS, refused, TLS
  handshake, connect timeout).  Nothing reached the upstream, so the request
  can always be retried elsewhere.
* `UpstreamProtocolError`: the connection broke or the upstream answered with
  something that is not HTTP/1.1.  ``response_started`` tells whether any of
  the response had arrived (the upstream certainly saw the request then).

Timeouts other than the connect timeout are the caller's business: it wraps
calls in trio cancel scopes, so every transport must be cancel-safe: a
cancelled call leaves no half-used connection in a pool and no slot taken.

Origins are parsed once, when the configuration is loaded (`Origin.parse`),
never per request.
"""

from __future__ import annotations

import abc
from typing import Protocol
from urllib.parse import urlsplit

import attrs

__all__ = [
    "Origin",
    "Transport",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamResponse",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _check_scheme(instance: Origin, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in _DEFAULT_PORTS:
        raise ValueError(f"scheme must be 'http' or 'https', not {value!r}")


def _check_host(instance: Origin, attribute: attrs.Attribute[str], value: str) -> None:
    # The host goes into a Host header and into getaddrinfo: it must be a plain
    # ASCII name or address (IDNA-encode international names before).
    if not value or not value.isascii() or any(c in value for c in " /?#@\r\n\t"):
        raise ValueError(f"invalid host {value!r}")


def _check_port(instance: Origin, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 < value < 65536:
        raise ValueError(f"port out of range: {value!r}")


@attrs.frozen(cache_hash=True)
class Origin:
    """Where to connect: scheme, host and port (RFC 6454 §4), hashable.

    ``host`` is stored without the brackets of an IPv6 literal, lower-cased.
    """

    scheme: str = attrs.field(validator=_check_scheme)
    host: str = attrs.field(validator=_check_host)
    port: int = attrs.field(validator=_check_port)

    @classmethod
    def parse(cls, url: str) -> tuple[Origin, str]:
        """Split a base URL into its origin and its base path (no trailing slash).

        ``Origin.parse("https://api.openai.com/v1/")`` returns
        ``(Origin("https", "api.openai.com", 443), "/v1")``.  Raises ValueError
        for anything that is not an absolute http(s) URL, and for URLs with
        credentials, a query or a fragment (they would be silently dropped).
        """
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"not an http(s) URL: {url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"credentials in an upstream URL are not supported: {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"an upstream base URL has no query or fragment: {url!r}")
        host = parts.hostname  # lower-cased, IPv6 brackets removed
        if not host:
            raise ValueError(f"no host in URL: {url!r}")
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        port = parts.port  # raises ValueError when not a number in range
        origin = cls(scheme, host, port if port is not None else _DEFAULT_PORTS[scheme])
        return origin, parts.path.rstrip("/")

    @property
    def host_header(self) -> bytes:
        """The Host header value (RFC 9110 §7.2): the port only when not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != _DEFAULT_PORTS[self.scheme]:
            host = f"{host}:{self.port}"
        return host.encode("ascii")


class UpstreamError(Exception):
    """Base of every error a transport raises for a failed upstream exchange."""


class UpstreamConnectError(UpstreamError):
    """No connection: DNS failure, refused, TLS handshake failure or connect timeout."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class UpstreamProtocolError(UpstreamError):
    """The connection broke, or the upstream's answer was not valid HTTP/1.1.

    ``response_started`` is True when some of the response had already arrived.
    """

    def __init__(self, message: str, *, response_started: bool) -> None:
        super().__init__(message)
        self.response_started = response_started


class UpstreamResponse(abc.ABC):
    """A response whose head has arrived; the body is pulled by the caller.

    Always close it (``async with`` or `aclose`): reading the body to its end
    hands a reusable connection back to the pool, while closing it earlier, or
    any error or cancellation, closes the connection.  `aclose` is idempotent.
    """

    __slots__ = ("headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.headers = headers  # names lower-cased, in the order received

    @abc.abstractmethod
    async def receive_some(self) -> bytes:
        """The next piece of the body as it arrives; ``b""`` at the end of the body."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the connection (to the pool if the body was read to its end)."""

    @property
    def open(self) -> bool:
        """Whether `aclose` may still have something to release (True unless the transport knows not)."""
        return True

    async def read(self) -> bytes:
        """The whole body."""
        pieces = []
        while piece := await self.receive_some():
            pieces.append(piece)
        return b"".join(pieces)

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Transport(Protocol):
    """An HTTP/1.1 client that can serve many origins."""

    async def request(
        self,
        method: bytes,
        origin: Origin,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        connect_timeout: float,
        ssl_verify: bool = True,
    ) -> UpstreamResponse:
        """Send a request; return once the response head is in.

        ``headers`` holds every header except ``host`` and ``content-length``,
        which the transport sets.  Raises `UpstreamConnectError`,
        `UpstreamProtocolError`, or ValueError for headers that are not valid
        HTTP (the caller's bug, found before anything is sent).
        """
        ...

    async def aclose(self) -> None:
        """Close every idle connection; the transport is unusable afterwards."""
        ...
