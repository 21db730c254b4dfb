"""What requests share: one immutable config snapshot at a time, and the process's resources.

Theory of operation: everything a request needs from the configuration (the
config itself, the per-deployment upstream targets, the per-model balancers)
is one frozen `Snapshot`.  The front door (`io_trio.gate`) takes
`ProxyState.current` once when a request arrives and the request uses that
snapshot until its last byte, so a reload can never show a request half of
one config and half of another.  `ProxyState.reload` builds the next snapshot
completely, then swaps it in with a single assignment (trio runs one task at
a time, so no request can observe the swap half done).

What outlives a snapshot belongs to the process and is shared by all of them:
the upstream connection pool (keyed by origin, so connections to backends that
are unchanged by a reload keep being reused), the random generator, the
rate-limit buckets and the in-flight counter, and the `Drain` that graceful
shutdown sets.  A model whose deployments and breaker settings are unchanged by
a reload keeps its `Balancer`, so its circuit-breaker state survives.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from core.auth import ANONYMOUS, exposure_problem
from core.balancer import Balancer
from core.config import Config, ConfigError
from core.errors import ProxyError
from core.limits import ConcurrencyLimit, RateLimiter

from .loading import config_error_text, load_config_file
from .logs import configure_logging
from .observe import Observer
from .upstream import H11Pool, HttpxTransport, Origin, Transport

__all__ = ["Backends", "Drain", "ProxyState", "Snapshot", "watch_config_file"]

log = logging.getLogger("llm_proxy")


class Backends:
    """Per-deployment facts computed once per snapshot (origin, request target)."""

    def __init__(self, deployments: Iterator[Any]) -> None:
        # Keyed by identity: the balancer hands out these very objects.
        self._targets: dict[int, tuple[Origin, str]] = {}
        for dep in deployments:
            if dep.backend_type != "mock":
                self._targets[id(dep)] = Origin.parse(dep.endpoint)

    def target(self, deployment: Any, path: str) -> tuple[Origin, bytes]:
        origin, base = self._targets[id(deployment)]
        return origin, (base + path).encode()


class Drain:
    """The graceful-shutdown deadline, observed by request handlers and stream relays.

    `deadline` is infinite until `begin`; from then on every cancel scope
    registered with `bound` fires at the deadline at the latest (scopes entered
    later get it on entry), and `expired` tells the code that caught the
    cancellation that it was the shutdown, so it can end the response in the
    client's protocol instead of cutting the connection.
    """

    def __init__(self) -> None:
        self.deadline = math.inf
        self._scopes: set[trio.CancelScope] = set()

    @property
    def draining(self) -> bool:
        return self.deadline != math.inf

    def begin(self, deadline: float) -> None:
        """Start draining (or bring the deadline forward); never moves it later."""
        self.deadline = min(self.deadline, deadline)
        for scope in self._scopes:
            scope.deadline = min(scope.deadline, self.deadline)

    @contextmanager
    def bound(self, scope: trio.CancelScope) -> Iterator[trio.CancelScope]:
        self.register(scope)
        try:
            yield scope
        finally:
            self.unregister(scope)

    def register(self, scope: trio.CancelScope) -> None:
        """`bound` without the context manager, for the hot path."""
        if self.deadline < scope.deadline:
            scope.deadline = self.deadline
        self._scopes.add(scope)

    def unregister(self, scope: trio.CancelScope) -> None:
        self._scopes.discard(scope)

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    @staticmethod
    def error() -> ProxyError:
        """What a request or stream cut short by the shutdown tells its client (503: retry elsewhere)."""
        return ProxyError(503, "the proxy is shutting down and could not finish this request; retry",
                          type="overloaded_error", code="shutting_down")


@attrs.frozen(eq=False)
class Snapshot:
    """Everything one request needs from one configuration; see the module docstring.

    It also answers what `io_trio.forward.Forwarder` asks its state for
    (`config`, `backends`, `balancer`, `transport`, `rng`, `token`, `drain`),
    the process-wide ones through `process`.
    """

    config: Config
    generation: int
    backends: Backends = attrs.field(repr=False)
    balancers: Mapping[str, Balancer[Any]] = attrs.field(repr=False)
    process: ProxyState = attrs.field(repr=False)

    def balancer(self, model: Any) -> Balancer[Any]:
        return self.balancers[model.name]

    @property
    def transport(self) -> Transport:
        transport = self.process.transport
        assert transport is not None, "the upstream pool opens when the app starts serving"
        return transport

    @property
    def rng(self) -> random.Random:
        return self.process.rng

    @property
    def drain(self) -> Drain:
        return self.process.drain

    def token(self) -> str:
        return self.process.token()


def _same_breakers(old: Any, new: Any) -> bool:
    return (old.deployments == new.deployments and old.cooldown_after_failures == new.cooldown_after_failures
            and old.cooldown_seconds == new.cooldown_seconds)


class ProxyState:
    """The process: the current snapshot plus what outlives snapshots.

    `bind_host` is the address actually served (``llm-proxy serve --host``
    may differ from ``server.host``): a reload is refused if it would leave
    that address without client keys.  `on_swap` runs after each swap.
    """

    def __init__(self, config: Config, *, bind_host: str | None = None,
                 on_swap: Callable[[Snapshot], None] | None = None) -> None:
        self.bind_host = bind_host
        self.transport: Transport | None = None
        self.rng = random.Random()
        self.drain = Drain()
        self.limiter = RateLimiter()
        self.concurrency = ConcurrencyLimit(config.server.max_concurrent_requests)
        self.on_swap = on_swap
        self.observe = Observer(config)  # metrics, the audit log and the log handlers outlive snapshots
        self.current = self._build(config, previous=None)

    # What existing callers read from the state: the current snapshot's view.
    @property
    def config(self) -> Config:
        return self.current.config

    @property
    def backends(self) -> Backends:
        return self.current.backends

    def balancer(self, model: Any) -> Balancer[Any]:
        return self.current.balancer(model)

    def token(self) -> str:
        """24 hex characters for request and response ids: unique, not secret, so no system call each."""
        return f"{self.rng.getrandbits(96):024x}"

    def open_transport(self) -> Transport:
        pool = self.config.server.upstream
        options = dict(
            max_connections_per_origin=pool.max_connections_per_origin,
            keepalive_expiry=pool.keepalive_expiry_seconds,
        )
        return HttpxTransport(**options) if pool.client == "httpx" else H11Pool(**options)

    # -- reloading -----------------------------------------------------------------------

    def reload(self, config: Config) -> Snapshot:
        """Serve `config` from now on; requests in flight keep their snapshot.

        Raises `ConfigError` (and changes nothing) if `config` would leave the
        served address without client keys.
        """
        if self.bind_host is not None:
            problem = exposure_problem(self.bind_host, config.server.auth)
            if problem:
                raise ConfigError([f"server.auth: {problem}"])
        previous = self.current
        snapshot = self._build(config, previous=previous)
        self.concurrency.limit = config.server.max_concurrent_requests
        self.limiter.retain({key.client.name for key in config.server.auth.keys} | {ANONYMOUS.name})
        self.current = snapshot  # the swap
        if config.logging != previous.config.logging:
            configure_logging(config.logging)
        self.observe.reconfigure(config)  # after configure_logging: it wraps the (new) handlers
        _log_changes(previous.config, config)
        if self.on_swap is not None:
            self.on_swap(snapshot)
        return snapshot

    async def reload_file(self, path: str | Path, env: Mapping[str, str] | None = None) -> bool:
        """Re-read `path` and serve it; on any error log every problem and keep serving the old config."""
        env = os.environ if env is None else env
        try:
            config = await trio.to_thread.run_sync(load_config_file, path, env)
            self.reload(config)
        except ConfigError as err:
            # The message may quote a value substituted from the environment; the log's redactor
            # only knows the secrets of the configuration being served, not of this new file.
            log.error("configuration reload from %s rejected; still serving the previous configuration:\n%s",
                      path, config_error_text(path, err, env))
            return False
        log.info("configuration reloaded from %s (generation %d)", path, self.current.generation)
        return True

    def _build(self, config: Config, *, previous: Snapshot | None) -> Snapshot:
        balancers: dict[str, Balancer[Any]] = {}
        for name, model in config.models.items():
            old_model = previous.config.models.get(name) if previous else None
            if previous is not None and old_model is not None and _same_breakers(old_model, model):
                balancers[name] = previous.balancers[name]  # keeps breaker state
            else:
                balancers[name] = Balancer(model.deployments, cooldown_after_failures=model.cooldown_after_failures,
                                           cooldown_seconds=model.cooldown_seconds)
        deployments = (dep for balancer in balancers.values() for dep in balancer.deployments)
        generation = previous.generation + 1 if previous else 1
        return Snapshot(config, generation, Backends(deployments), balancers, self)


def _log_changes(old: Config, new: Config) -> None:
    added = [name for name in new.models if name not in old.models]
    removed = [name for name in old.models if name not in new.models]
    changed = [name for name in new.models if name in old.models and new.models[name] != old.models[name]]
    log.info("models: %d served; added: %s; removed: %s; changed: %s", len(new.models),
             ", ".join(added) or "-", ", ".join(removed) or "-", ", ".join(changed) or "-")
    restart = [field for field in ("host", "port", "max_header_bytes", "upstream")
               if getattr(old.server, field) != getattr(new.server, field)]
    if restart:
        log.warning("server.%s changed: that takes effect at the next restart", ", server.".join(restart))


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


async def watch_config_file(state: ProxyState, path: str | Path, *, interval: float = 1.0) -> None:
    """Reload `path` whenever its modification time, size or inode changes (polled every `interval`).

    A file that is briefly missing (an editor replacing it) is waited for, not reported.
    """
    path = Path(path)
    last = _file_stamp(path)
    while True:
        await trio.sleep(interval)
        stamp = _file_stamp(path)
        if stamp is None or stamp == last:
            continue
        last = stamp
        await state.reload_file(path)
