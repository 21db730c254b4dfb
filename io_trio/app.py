"""The Quart-Trio application: read, ask the core, do what it says.

Every decision (routing, what to send, how to translate, what error to return)
is the core's; this module owns the sockets, the cancel scopes and the clock.
Serve it with ``hypercorn -k trio io_trio.app:app`` (the config file comes from
``LLM_PROXY_CONFIG``, default ``config/example-config.yaml``) or with
``llm-proxy serve``.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import sys
import time
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core.config import Config, ConfigError
from core.errors import ProxyError
from core.balancer import Balancer
from core.exchange import ClientProtocol, dumps
from core.requests import parse_client_body
from core.models_list import anthropic_models_list, openai_models_list

from .loading import load_config_file
from .forward import Forwarder, error_response
from .upstream import H11Pool, HttpxTransport, Origin, Transport

__all__ = ["create_app", "app"]

log = logging.getLogger("llm_proxy")

JSON = "application/json"


class Backends:
    """Per-deployment facts computed once at load time (origin, request target)."""

    def __init__(self, config: Config) -> None:
        self._targets: dict[int, tuple[Origin, str]] = {}
        for model in config.models.values():
            for dep in model.deployments:
                if dep.backend_type != "mock":
                    self._targets[id(dep)] = Origin.parse(dep.endpoint)

    def target(self, deployment: Any, path: str) -> tuple[Origin, bytes]:
        origin, base = self._targets[id(deployment)]
        return origin, (base + path).encode()


class ProxyState:
    """What every request shares: the config, the upstream pool, breaker state."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.backends = Backends(config)
        self.transport: Transport | None = None
        self.rng = random.Random()
        self._balancers = {
            name: Balancer(model.deployments, cooldown_after_failures=model.cooldown_after_failures,
                           cooldown_seconds=model.cooldown_seconds)
            for name, model in config.models.items()
        }

    def balancer(self, model: Any) -> Balancer:
        return self._balancers[model.name]

    @staticmethod
    def token() -> str:
        return secrets.token_hex(12)

    def open_transport(self) -> Transport:
        pool = self.config.server.upstream
        options = dict(
            max_connections_per_origin=pool.max_connections_per_origin,
            keepalive_expiry=pool.keepalive_expiry_seconds,
        )
        return HttpxTransport(**options) if pool.client == "httpx" else H11Pool(**options)


def _client_of_path(path: str, headers: Any) -> ClientProtocol:
    if "messages" in path or "anthropic-version" in headers or "x-api-key" in headers:
        return ClientProtocol.ANTHROPIC
    return ClientProtocol.OPENAI


def _client_headers() -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.scope["headers"]]


def create_app(config: Config) -> QuartTrio:
    """A ready-to-serve app for a loaded, valid config."""
    app = QuartTrio("llm_proxy")
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.config["BODY_TIMEOUT"] = 300
    app.config["RESPONSE_TIMEOUT"] = None  # LLM streams run for minutes; we time them ourselves
    state = ProxyState(config)
    app.extensions["llm_proxy"] = state

    @app.before_serving
    async def _open() -> None:
        state.transport = state.open_transport()
        for model in config.models.values():
            for dep in model.deployments:
                if not dep.ssl_verify:
                    log.warning("TLS verification is OFF for %s (%s)", dep.label, dep.endpoint)

    @app.after_serving
    async def _close() -> None:
        if state.transport is not None:
            await state.transport.aclose()

    async def proxy(client: ClientProtocol, *, count_tokens: bool = False) -> Response:
        try:
            return await _proxy(state, client, count_tokens=count_tokens)
        except ProxyError as err:
            return error_response(client, err)

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
        names = state.config.router.listed()
        if "anthropic-version" in request.headers or "x-api-key" in request.headers:
            return Response(dumps(anthropic_models_list(names)), content_type=JSON)
        return Response(dumps(openai_models_list(names, created=int(time.time()))), content_type=JSON)

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', content_type=JSON)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        client = _client_of_path(request.path, request.headers)
        if isinstance(exc, RequestEntityTooLarge):
            limit = state.config.server.max_body_bytes
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
        return error_response(_client_of_path(request.path, request.headers), err)

    return app


async def _proxy(state: ProxyState, client: ClientProtocol, *, count_tokens: bool) -> Response:
    raw = await request.get_data(cache=False)
    body, model_name = parse_client_body(raw)
    model = state.config.router.route(model_name)
    if model is None:
        raise ProxyError(404, f"The model {model_name!r} is not served by this proxy; "
                              "GET /v1/models lists the models it serves",
                         type="not_found_error", param="model", code="model_not_found")
    forwarder = Forwarder(state, client=client, body=body, raw=raw, model_name=model_name, model=model,
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


def __getattr__(name: str) -> Any:
    # `hypercorn io_trio.app:app` looks the app up here; building it lazily keeps
    # importing this module free of side effects (tests build their own apps).
    if name == "app":
        global app
        app = _load_default_app()
        return app
    raise AttributeError(name)
