"""`llm-proxy serve` and `llm-proxy check-config`.

`serve` runs hypercorn's trio worker in this process and owns its signals:

* SIGHUP re-reads the config file (so does ``--watch``, polling it every
  second); an invalid file is logged and the old config keeps serving;
* SIGTERM or SIGINT starts a graceful shutdown: hypercorn stops accepting
  connections, requests and streams in flight get ``server.shutdown_grace_seconds``
  to finish, then the app ends what is left with an error in the client's
  protocol (`io_trio.state.Drain`), and the process exits 0.  A second signal
  ends them at once.  Hypercorn's own ``graceful_timeout`` is set a little
  beyond the grace period, as the backstop that closes whatever still runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from functools import partial
from typing import TYPE_CHECKING

import trio

from core.auth import exposure_problem, is_loopback
from core.config import ConfigError, ServerConfig

from .loading import config_error_text, load_config_file

if TYPE_CHECKING:
    from hypercorn.config import Config as HypercornConfig
    from quart_trio import QuartTrio

    from .state import ProxyState

__all__ = ["hypercorn_config", "main"]

log = logging.getLogger("llm_proxy")

DEFAULT_CONFIG = "config/example-config.yaml"
# Time after the grace period for the error events to go out and connections to
# close before hypercorn cancels what is left.
SHUTDOWN_MARGIN_SECONDS = 2.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-proxy", description="An LLM proxy router.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", default=os.environ.get("LLM_PROXY_CONFIG", DEFAULT_CONFIG),
                       help="configuration file (YAML, or JSON by extension); default: $LLM_PROXY_CONFIG "
                            f"or {DEFAULT_CONFIG}")
    serve.add_argument("--host", help="listen address (beats server.host and LLM_PROXY_HOST)")
    serve.add_argument("--port", type=int, help="listen port (beats server.port and LLM_PROXY_PORT)")
    serve.add_argument("--watch", action="store_true",
                       help="reload the configuration when the file changes (SIGHUP always reloads it)")
    check = commands.add_parser("check-config", help="validate a configuration file and print every error")
    check.add_argument("config")
    return parser


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(server: ServerConfig, host: str, port: int) -> HypercornConfig:
    """The hypercorn settings `serve` uses for `server` (header limit, shutdown backstop)."""
    from hypercorn.config import Config as HypercornConfig

    hypercorn = HypercornConfig()
    hypercorn.bind = [_bind(host, port)]
    hypercorn.accesslog = None
    hypercorn.errorlog = logging.getLogger("hypercorn.error")  # through our handler, once
    # An HTTP/1.1 request head larger than this is answered 431 by h11 (RFC 6585 §5).
    hypercorn.h11_max_incomplete_size = server.max_header_bytes
    hypercorn.h2_max_header_list_size = server.max_header_bytes
    hypercorn.graceful_timeout = server.shutdown_grace_seconds + SHUTDOWN_MARGIN_SECONDS
    return hypercorn


async def _handle_signals(state: ProxyState, hypercorn: HypercornConfig, path: str, stop: trio.Event, *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    wanted = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    with trio.open_signal_receiver(*wanted) as signals:
        task_status.started()
        async for signum in signals:
            if signum == getattr(signal, "SIGHUP", None):
                log.info("SIGHUP: reloading %s", path)
                await state.reload_file(path)
            elif not stop.is_set():
                grace = state.current.config.server.shutdown_grace_seconds
                hypercorn.graceful_timeout = grace + SHUTDOWN_MARGIN_SECONDS
                state.drain.begin(trio.current_time() + grace)
                log.info("%s: shutting down; requests in flight have %g s to finish",
                         signal.Signals(signum).name, grace)
                stop.set()
            else:
                log.warning("%s again: ending the requests in flight now", signal.Signals(signum).name)
                state.drain.begin(trio.current_time())


async def _run(app: QuartTrio, hypercorn: HypercornConfig, path: str, watch: bool) -> None:
    from hypercorn.trio import serve

    from .state import watch_config_file

    state: ProxyState = app.extensions["llm_proxy"]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        # Signals are ours before the socket opens: an early SIGTERM is still graceful.
        await nursery.start(_handle_signals, state, hypercorn, path, stop)
        if watch:
            nursery.start_soon(partial(watch_config_file, state, path))
        await serve(app, hypercorn, shutdown_trigger=stop.wait)
        nursery.cancel_scope.cancel()


def _serve(args: argparse.Namespace) -> int:
    from .app import create_app
    from .logs import configure_logging

    try:
        config = load_config_file(args.config, os.environ)
    except ConfigError as err:
        print(f"llm-proxy: {args.config} is not a valid configuration:\n"
              f"{config_error_text(args.config, err, os.environ)}", file=sys.stderr)
        return 2
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    problem = exposure_problem(host, config.server.auth)
    if problem:  # --host can expose what the file kept on loopback
        print(f"llm-proxy: refusing to start: --host {host}: {problem}", file=sys.stderr)
        return 2
    configure_logging(config.logging)
    if not config.server.auth.required and not is_loopback(host):
        log.warning("serving on %s WITHOUT client keys (server.auth.allow_unauthenticated is true): whoever "
                    "can connect can use every configured backend", host)
    hypercorn = hypercorn_config(config.server, host, port)
    app = create_app(config, bind_host=host)
    print(f"llm-proxy: serving {len(config.models)} model route(s) from {args.config} on "
          f"http://{_bind(host, port)}" + (" (watching the file)" if args.watch else ""),
          file=sys.stderr, flush=True)
    trio.run(_run, app, hypercorn, args.config, args.watch)
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_config_file(args.config, os.environ)
    except ConfigError as err:
        print(f"{args.config}: invalid configuration:\n{config_error_text(args.config, err, os.environ)}",
              file=sys.stderr)
        return 1
    print(f"{args.config}: OK ({len(config.models)} model route(s): {', '.join(config.models)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _serve(args) if args.command == "serve" else _check(args)


if __name__ == "__main__":
    sys.exit(main())
