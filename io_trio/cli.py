"""`llm-proxy serve` and `llm-proxy check-config`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from functools import partial

import trio

from core.config import ConfigError

from .loading import load_config_file

__all__ = ["main"]

DEFAULT_CONFIG = "config/example-config.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-proxy", description="An LLM proxy router.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", default=os.environ.get("LLM_PROXY_CONFIG", DEFAULT_CONFIG),
                       help="configuration file (YAML, or JSON by extension); default: $LLM_PROXY_CONFIG "
                            f"or {DEFAULT_CONFIG}")
    serve.add_argument("--host", help="listen address (beats server.host and LLM_PROXY_HOST)")
    serve.add_argument("--port", type=int, help="listen port (beats server.port and LLM_PROXY_PORT)")
    check = commands.add_parser("check-config", help="validate a configuration file and print every error")
    check.add_argument("config")
    return parser


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _until_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


def _serve(args: argparse.Namespace) -> int:
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio import serve

    from .app import create_app
    from .logs import configure_logging

    try:
        config = load_config_file(args.config, os.environ)
    except ConfigError as err:
        print(f"llm-proxy: {args.config} is not a valid configuration:\n{err}", file=sys.stderr)
        return 2
    configure_logging(config.logging)
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    hypercorn = HypercornConfig()
    hypercorn.bind = [_bind(host, port)]
    hypercorn.accesslog = None
    hypercorn.errorlog = "-"
    app = create_app(config)
    print(f"llm-proxy: serving {len(config.models)} model route(s) from {args.config} on "
          f"http://{_bind(host, port)}", file=sys.stderr, flush=True)
    trio.run(partial(serve, app, hypercorn, shutdown_trigger=_until_signal))
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_config_file(args.config, os.environ)
    except ConfigError as err:
        print(f"{args.config}: invalid configuration:\n{err}", file=sys.stderr)
        return 1
    print(f"{args.config}: OK ({len(config.models)} model route(s): {', '.join(config.models)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _serve(args) if args.command == "serve" else _check(args)


if __name__ == "__main__":
    sys.exit(main())
