"""The upstream HTTP/1.1 client of the adapter.

`H11Pool` (h11 on trio streams) is the default transport; `HttpxTransport` has
the same interface and exists to compare against and as a fallback.  Both are
described by `Transport` and return `UpstreamResponse`s.
"""

from __future__ import annotations

from .base import (
    Origin,
    Transport,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResponse,
)
from .h11_pool import H11Pool
from .httpx_transport import HttpxTransport

__all__ = [
    "H11Pool",
    "HttpxTransport",
    "Origin",
    "Transport",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamResponse",
]
