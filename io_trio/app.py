"""The Quart-Trio application: read, ask the core, do what it says.

Every decision (routing, what to send, how to translate, what error to return)
is the core's; this module owns the sockets, the cancel scopes and the clock.
Serve it with ``hypercorn -k trio io_trio.app:app`` (the config file comes from
``LLM_PROXY_CONFIG``, default ``config/example-config.yaml``) or with
``llm-proxy serve`` (which adds hot reload and graceful shutdown).

Requests pass the `io_trio.gate.Gate` first (CORS, client keys, limits, the
request id); it pins the config snapshot the whole request uses
(`io_trio.state`), so a reload never changes a request's config half-way, and
hands the proxy's POST routes to `io_trio.endpoint` (plain ASGI: the hot path).
Quart serves the rest: ``/v1/models``, ``/health``, ``/metrics``, and the
JSON errors for unknown paths and methods.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from core.config import Config, ConfigError
from core.errors import ProxyError
from core.exchange import ClientProtocol, dumps, error_body
from core.models_list import anthropic_model, anthropic_models_list, openai_model, openai_models_list

from .gate import SNAPSHOT_KEY, Gate, client_of, protocol_of
from .loading import config_error_text, load_config_file
from .state import Backends, ProxyState, Snapshot

__all__ = ["Backends", "ProxyState", "Snapshot", "app", "create_app"]

log = logging.getLogger("llm_proxy")

JSON = "application/json"


def error_response(client: ClientProtocol, err: ProxyError) -> Response:
    response = Response(error_body(client, err), status=err.status, content_type=JSON)
    if err.should_retry is not None:
        response.headers["x-should-retry"] = "true" if err.should_retry else "false"
    return response


def create_app(config: Config, *, bind_host: str | None = None) -> QuartTrio:
    """A ready-to-serve app for a loaded, valid config.

    `bind_host` is the address it will be served on, when known: a reload
    that would leave it without client keys is refused.
    """
    app = QuartTrio("llm_proxy")
    # The Quart routes take no request body; the proxy's POST routes (io_trio.endpoint) apply
    # server.max_body_bytes themselves.
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024

    state = ProxyState(config, bind_host=bind_host)
    app.extensions["llm_proxy"] = state
    app.asgi_app = Gate(app.asgi_app, state)  # type: ignore[method-assign]

    def snapshot() -> Snapshot:
        return request.scope.get(SNAPSHOT_KEY) or state.current

    @app.before_serving
    async def _open() -> None:
        state.observe.start(app.nursery)
        if state.transport is None:
            state.transport = state.open_transport()
        for model in state.config.models.values():
            for dep in model.deployments:
                if not dep.ssl_verify:
                    log.warning("TLS verification is OFF for %s (%s)", dep.label, dep.endpoint)

    @app.after_serving
    async def _close() -> None:
        await state.observe.stop()
        transport, state.transport = state.transport, None
        if transport is not None:
            await transport.aclose()

    @app.get("/v1/models")
    @app.get("/models")
    async def models() -> Response:
        client = client_of(request.scope)
        names = [name for name in snapshot().config.router.listed() if client.may_use(name)]
        if "anthropic-version" in request.headers or "x-api-key" in request.headers:
            return Response(dumps(anthropic_models_list(names)), content_type=JSON)
        return Response(dumps(openai_models_list(names, created=int(time.time()))), content_type=JSON)

    @app.get("/v1/models/<path:model_id>")
    @app.get("/models/<path:model_id>")
    async def model(model_id: str) -> Response:
        anthropic = "anthropic-version" in request.headers or "x-api-key" in request.headers
        client = client_of(request.scope)
        if snapshot().config.router.route(model_id) is None or not client.may_use(model_id):
            err = ProxyError(404, f"The model {model_id!r} is not served by this proxy; GET /v1/models lists "
                                  "the models it serves", type="not_found_error", param="model",
                             code="model_not_found")
            return error_response(ClientProtocol.ANTHROPIC if anthropic else ClientProtocol.OPENAI, err)
        if anthropic:
            return Response(dumps(anthropic_model(model_id)), content_type=JSON)
        return Response(dumps(openai_model(model_id, created=int(time.time()))), content_type=JSON)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = state.observe.metrics.render(request.headers.get("accept"))
        return Response(body, content_type=content_type)

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', content_type=JSON)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        client = protocol_of(request.path, request.headers)
        err = ProxyError(exc.code or 500, f"{exc.name}: {request.method} {request.path}")
        return error_response(client, err)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.error("unexpected error serving %s %s: %s", request.method, request.path, type(exc).__name__,
                  exc_info=exc)
        err = ProxyError(500, "internal error in the proxy (see its log)", type="api_error")
        return error_response(protocol_of(request.path, request.headers), err)

    return app


def _load_default_app() -> QuartTrio:
    path = os.environ.get("LLM_PROXY_CONFIG", "config/example-config.yaml")
    try:
        config = load_config_file(path, os.environ)
    except ConfigError as err:
        print(f"llm-proxy: {path} is not a valid configuration:\n{config_error_text(path, err, os.environ)}",
              file=sys.stderr)
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
        self._adopted = False  # hypercorn's own loggers write through ours (io_trio.logs)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = _load_default_app()
        elif not self._adopted and scope["type"] == "http":
            # Hypercorn set its loggers up after the app's start-up: the first request is the first
            # moment they exist.
            from .logs import adopt_server_loggers

            adopt_server_loggers()
            self._adopted = True
        await self._app(scope, receive, send)


app = DefaultApp()
