"""The Quart-Trio application: read, ask the core, do what it says.

Every decision (routing, what to send, how to translate, what error to return)
is the core's; this module owns the sockets, the cancel scopes and the clock.
Serve it with ``hypercorn -k trio io_trio.app:app`` (the config file comes from
``LLM_PROXY_CONFIG``, default ``config/example-config.yaml``) or with
``llm-proxy serve`` (which adds hot reload and graceful shutdown).

Requests pass the `io_trio.gate.Gate` first (CORS, client keys, limits); it
pins the config snapshot the whole request uses (`io_trio.state`), so a reload
never changes a request's config half-way.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import trio
from quart import Response, request
from quart.wrappers.response import IterableBody
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core.auth import authorize
from core.config import Config, ConfigError
from core.errors import ProxyError
from core.exchange import ClientProtocol, dumps
from core.limits import retry_after_headers
from core.models_list import anthropic_models_list, openai_models_list
from core.requests import parse_client_body

from .forward import Forwarder, error_response
from .gate import SNAPSHOT_KEY, Gate, client_of, close_when_done, protocol_of
from .loading import load_config_file
from .state import Backends, ProxyState, Snapshot

__all__ = ["Backends", "ProxyState", "Snapshot", "app", "create_app"]

log = logging.getLogger("llm_proxy")

JSON = "application/json"


def _client_headers() -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.scope["headers"]]


def create_app(config: Config, *, bind_host: str | None = None) -> QuartTrio:
    """A ready-to-serve app for a loaded, valid config.

    `bind_host` is the address it will be served on, when known: a reload
    that would leave it without client keys is refused.
    """
    app = QuartTrio("llm_proxy")
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.config["BODY_TIMEOUT"] = 300
    app.config["RESPONSE_TIMEOUT"] = None  # LLM streams run for minutes; we time them ourselves

    def on_swap(snapshot: Snapshot) -> None:
        # Read when Quart creates each request: new requests get the new limit.
        app.config["MAX_CONTENT_LENGTH"] = snapshot.config.server.max_body_bytes

    state = ProxyState(config, bind_host=bind_host, on_swap=on_swap)
    app.extensions["llm_proxy"] = state
    app.asgi_app = Gate(app.asgi_app, state)  # type: ignore[method-assign]

    def snapshot() -> Snapshot:
        return request.scope.get(SNAPSHOT_KEY) or state.current

    @app.before_serving
    async def _open() -> None:
        if state.transport is None:
            state.transport = state.open_transport()
        for model in state.config.models.values():
            for dep in model.deployments:
                if not dep.ssl_verify:
                    log.warning("TLS verification is OFF for %s (%s)", dep.label, dep.endpoint)

    @app.after_serving
    async def _close() -> None:
        transport, state.transport = state.transport, None
        if transport is not None:
            await transport.aclose()

    async def proxy(client: ClientProtocol, *, count_tokens: bool = False) -> Response:
        # Until the response is ready (its head, for a stream), graceful shutdown
        # may end the wait: the client then gets a clean 503 instead of a cut.
        with trio.CancelScope() as scope, state.drain.bound(scope):
            try:
                response = await _proxy(snapshot(), client, count_tokens=count_tokens)
            except ProxyError as err:
                return error_response(client, err)
            if isinstance(response.response, IterableBody):
                close_when_done(request.scope, response.response)
            return response
        response = error_response(client, state.drain.error())
        response.headers.update(retry_after_headers(1))
        return response

    @app.post("/v1/chat/completions")
    @app.post("/chat/completions")
    async def chat_completions() -> Response:
        return await proxy(ClientProtocol.OPENAI)

    @app.post("/v1/messages")
    @app.post("/messages")
    async def messages() -> Response:
        return await proxy(ClientProtocol.ANTHROPIC)

    @app.post("/v1/messages/count_tokens")
    @app.post("/messages/count_tokens")
    async def count_tokens() -> Response:
        return await proxy(ClientProtocol.ANTHROPIC, count_tokens=True)

    @app.get("/v1/models")
    @app.get("/models")
    async def models() -> Response:
        client = client_of(request.scope)
        names = [name for name in snapshot().config.router.listed() if client.may_use(name)]
        if "anthropic-version" in request.headers or "x-api-key" in request.headers:
            return Response(dumps(anthropic_models_list(names)), content_type=JSON)
        return Response(dumps(openai_models_list(names, created=int(time.time()))), content_type=JSON)

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', content_type=JSON)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        client = protocol_of(request.path, request.headers)
        if isinstance(exc, RequestEntityTooLarge):
            limit = snapshot().config.server.max_body_bytes
            err = ProxyError(413, f"request body is larger than the limit of {limit} bytes",
                             type="request_too_large")
        else:
            err = ProxyError(exc.code or 500, f"{exc.name}: {request.method} {request.path}")
        return error_response(client, err)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.error("unexpected error serving %s %s: %s", request.method, request.path, type(exc).__name__,
                  exc_info=exc)
        err = ProxyError(500, "internal error in the proxy (see its log)", type="api_error")
        return error_response(protocol_of(request.path, request.headers), err)

    return app


async def _proxy(snapshot: Snapshot, client: ClientProtocol, *, count_tokens: bool) -> Response:
    raw = await request.get_data(cache=False)
    body, model_name = parse_client_body(raw)
    denied = authorize(client_of(request.scope), model_name)
    if denied is not None:
        log.info("client %s may not use model %s", client_of(request.scope).name, model_name)
        raise denied
    model = snapshot.config.router.route(model_name)
    if model is None:
        raise ProxyError(404, f"The model {model_name!r} is not served by this proxy; "
                              "GET /v1/models lists the models it serves",
                         type="not_found_error", param="model", code="model_not_found")
    forwarder = Forwarder(snapshot, client=client, body=body, raw=raw, model_name=model_name, model=model,
                          client_headers=_client_headers(), count_tokens=count_tokens)
    return await forwarder.run()


def _load_default_app() -> QuartTrio:
    path = os.environ.get("LLM_PROXY_CONFIG", "config/example-config.yaml")
    try:
        config = load_config_file(path, os.environ)
    except ConfigError as err:
        print(f"llm-proxy: {path} is not a valid configuration:\n{err}", file=sys.stderr)
        raise SystemExit(2) from None
    from .logs import configure_logging

    configure_logging(config.logging)
    return create_app(config)


class DefaultApp:
    """``hypercorn -k trio io_trio.app:app``: the app for ``$LLM_PROXY_CONFIG``, built on first use.

    Hypercorn finds ``app`` with ``eval`` in this module's namespace, which a
    module ``__getattr__`` cannot serve, so ``app`` is this small ASGI
    callable; building the real app lazily keeps importing this module free of
    side effects (tests build their own apps), and each hypercorn worker
    process reads the configuration itself.
    """

    def __init__(self) -> None:
        self._app: QuartTrio | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = _load_default_app()
        await self._app(scope, receive, send)


app = DefaultApp()
