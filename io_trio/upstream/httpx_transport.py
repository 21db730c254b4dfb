"""The same `Transport` over `httpx.AsyncClient`: the benchmark baseline and a fallback.

Theory of operation: one `httpx.AsyncClient` per ``ssl_verify`` value, created
on first use (so inside the running trio loop, as httpx requires).  httpx
limits connections per client, not per origin, so the client is unlimited and
a per-``(origin, ssl_verify)`` semaphore of in-flight requests enforces
``max_connections_per_origin``; like `H11Pool`, httpcore opens a connection only
when no idle one exists for the origin, so open connections stay within it.

The client sends what the caller gives: httpx's default headers (user-agent,
accept, accept-encoding, connection) are removed, so both transports put the
same request on the wire, and bodies are passed on raw (``aiter_raw``: no
content-encoding decoding; the proxy asks upstreams for ``identity``).
httpx exceptions are translated here, in one place, to the `UpstreamError`s.
``read_size`` is accepted for interface parity; httpcore reads 64 KiB at a time.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import httpx
import trio

from .base import Origin, UpstreamConnectError, UpstreamProtocolError, UpstreamResponse

__all__ = ["HttpxTransport"]

_CLOSE_TIMEOUT = 1.0
_BROKEN = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError)


class HttpxTransport:
    """A `Transport` over httpx, with the options of `H11Pool`."""

    def __init__(
        self,
        *,
        max_connections_per_origin: int = 100,
        keepalive_expiry: float = 30.0,
        read_size: int = 65536,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections_per_origin < 1:
            raise ValueError("max_connections_per_origin must be at least 1")
        if keepalive_expiry < 0 or read_size < 1:
            raise ValueError("keepalive_expiry must be >= 0 and read_size >= 1")
        self._limit = max_connections_per_origin
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._clients: dict[bool, httpx.AsyncClient] = {}
        self._slots: dict[tuple[Origin, bool], trio.Semaphore] = {}
        self._closed = False

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
        """Send one request; return once the response head is in (see `Transport`)."""
        if self._closed:
            raise RuntimeError("the upstream transport is closed")
        client = self._clients.get(ssl_verify) or self._add_client(ssl_verify)
        slots = self._slots.get((origin, ssl_verify))
        if slots is None:
            slots = self._slots[(origin, ssl_verify)] = trio.Semaphore(self._limit)
        request = _build_request(client, method, origin, target, headers, body, connect_timeout)
        await slots.acquire()
        try:
            response = await _send(client, request)
        except BaseException:
            slots.release()
            raise
        return _HttpxResponse(response, slots)

    async def aclose(self) -> None:
        """Close the clients (and with them every idle connection)."""
        self._closed = True
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await client.aclose()

    async def __aenter__(self) -> HttpxTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _add_client(self, ssl_verify: bool) -> httpx.AsyncClient:
        verify: ssl.SSLContext | bool = False
        if ssl_verify:
            verify = self._ssl_context if self._ssl_context is not None else True
        limits = httpx.Limits(
            max_connections=None, max_keepalive_connections=None, keepalive_expiry=self._keepalive_expiry
        )
        client = httpx.AsyncClient(verify=verify, limits=limits, trust_env=False, timeout=None)
        client.headers.clear()  # send only what the caller gives (see module docstring)
        self._clients[ssl_verify] = client
        return client


def _build_request(
    client: httpx.AsyncClient,
    method: bytes,
    origin: Origin,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    connect_timeout: float,
) -> httpx.Request:
    url = httpx.URL(scheme=origin.scheme, host=origin.host, port=origin.port, raw_path=target)
    try:
        return client.build_request(
            method.decode("ascii"),
            url,
            headers=headers,
            content=body or None,
            timeout=httpx.Timeout(None, connect=connect_timeout),
        )
    except (httpx.InvalidURL, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid upstream request: {exc}") from None


async def _send(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send and return with the head in; httpx errors become `UpstreamError`s."""
    label = f"{request.url.scheme}://{request.url.netloc.decode()}"
    try:
        return await client.send(request, stream=True)
    except httpx.ConnectTimeout as exc:
        raise UpstreamConnectError(f"{label}: connect timed out", timed_out=True) from exc
    except httpx.ConnectError as exc:
        raise UpstreamConnectError(f"{label}: cannot connect: {exc}") from exc
    except _BROKEN as exc:
        # httpx cannot tell whether part of the head had arrived: report the usual case.
        raise UpstreamProtocolError(f"{label}: no valid response: {exc}", response_started=False) from exc
    except httpx.LocalProtocolError as exc:
        raise ValueError(f"invalid upstream request: {exc}") from exc


class _HttpxResponse(UpstreamResponse):
    """An httpx streaming response; it owns one slot until its end or `aclose`."""

    __slots__ = ("_chunks", "_complete", "_response", "_slots")

    def __init__(self, response: httpx.Response, slots: trio.Semaphore) -> None:
        headers = [(name.lower(), value) for name, value in response.headers.raw]
        super().__init__(response.status_code, headers)
        self._response = response
        self._chunks: AsyncIterator[bytes] = response.aiter_raw()
        self._slots: trio.Semaphore | None = slots
        self._complete = False

    async def receive_some(self) -> bytes:
        if self._slots is None:
            if self._complete:
                return b""
            raise UpstreamProtocolError("the response was closed before its end", response_started=True)
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self._complete = True
            await self._release()
            return b""
        except _BROKEN as exc:
            await self._release()
            label = f"{self._response.url.scheme}://{self._response.url.netloc.decode()}"
            raise UpstreamProtocolError(f"{label}: response body broken: {exc}", response_started=True) from exc
        except BaseException:
            await self._release()
            raise

    async def aclose(self) -> None:
        await self._release()

    async def _release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is None:
            return
        try:
            # httpcore pools the connection if the body was read to its end, else closes it.
            with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await self._chunks.aclose()  # type: ignore[attr-defined]
                await self._response.aclose()
        except httpx.TransportError:
            pass  # the connection is gone either way
        finally:
            slots.release()
