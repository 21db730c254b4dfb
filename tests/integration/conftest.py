"""Fixtures that start the real proxy and fake upstreams on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from core.config import load_config
from io_trio.app import create_app
from tests.support.servers import FakeUpstream, start_server

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
CLIENT_KEY = "sk-client-key-should-never-travel"


@pytest.fixture
async def upstream(nursery: trio.Nursery) -> FakeUpstream:
    fake = FakeUpstream()
    fake.url = await start_server(nursery, fake)
    return fake


@pytest.fixture
async def second_upstream(nursery: trio.Nursery) -> FakeUpstream:
    fake = FakeUpstream()
    fake.url = await start_server(nursery, fake)
    return fake


ProxyFactory = Callable[[dict[str, Any]], Awaitable[str]]


@pytest.fixture
def start_proxy(nursery: trio.Nursery) -> ProxyFactory:
    """`await start_proxy({"models": {...}})` -> the proxy's base URL."""

    async def start(config: dict[str, Any], env: dict[str, str] | None = None) -> str:
        loaded = load_config(json.dumps(config), fmt="json", env=env or {}, source="<test>")
        return await start_server(nursery, create_app(loaded))

    return start


def model(backend_type: str, endpoint: str = "", **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"backend_type": backend_type, **extra}
    if endpoint:
        entry["endpoint"] = endpoint
    return entry


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Run a blocking SDK call without blocking the trio loop serving it."""
    return await trio.to_thread.run_sync(fn)
