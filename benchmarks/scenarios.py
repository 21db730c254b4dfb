"""The scenarios: which proxy configuration, which requests, what the fakes answer.

A scenario names a config file under ``benchmarks/configs/`` and lists what to
measure against it: request/response *load* specs (wrk against the nginx fake
directly, then through the proxy) and *stream* specs (the stream client against
the SSE fake directly, then through the proxy).  "Direct" always calls the very
upstream endpoint the proxy calls for that request, with the body in the
upstream's protocol, so the difference is what the proxy adds.

``nginx-floor`` is a calibration row, not a product: nginx ``proxy_pass`` pinned
like our proxy, the floor the peers were compared with (performance-notes.md).
``quart-ceiling`` is the other calibration: quart-trio under hypercorn
answering by itself, what the framework costs before any proxying.
``asgi-ceiling`` is the same without Quart, as the proxy's POST routes are
served: what hypercorn, h11 and trio cost per request and per streamed event
(its streams are made by the app itself, stamped like the SSE fake's).
"""

from __future__ import annotations

from pathlib import Path

import attrs

from .payloads import anthropic_request, openai_request

__all__ = ["SCENARIOS", "LoadSpec", "Scenario", "StreamSpec"]

CONFIGS = Path(__file__).resolve().parent / "configs"

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"

# What an SDK sends besides the body (openai-python 3.57 / anthropic-python captures).
OPENAI_HEADERS = (("authorization", "Bearer sk-bench-client-key"),)
ANTHROPIC_HEADERS = (("x-api-key", "sk-ant-bench-client-key"), ("anthropic-version", "2023-06-01"))
OPENAI_SDK_HEADERS = OPENAI_HEADERS + (
    ("accept", "application/json"),
    ("user-agent", "OpenAI/Python 3.57.0"),
    ("x-stainless-lang", "python"),
    ("x-stainless-package-version", "3.57.0"),
    ("x-stainless-os", "Linux"),
    ("x-stainless-arch", "x64"),
    ("x-stainless-runtime", "CPython"),
    ("x-stainless-runtime-version", "3.11.7"),
    ("x-stainless-async", "false"),
    ("x-stainless-retry-count", "0"),
    ("x-stainless-read-timeout", "20"),
)
# How a Portkey client names the upstream: the provider's protocol and its address (the fake's).
PORTKEY_ROUTE = (("x-portkey-provider", "openai"), ("x-portkey-custom-host", "{fake_url}/v1"))


@attrs.frozen
class LoadSpec:
    """One request kind under wrk: `path`/`body` to the proxy, `direct_path`/`direct_body` to the fake."""

    label: str
    path: str
    body: bytes
    direct_path: str
    direct_body: bytes
    headers: tuple[tuple[str, str], ...] = OPENAI_HEADERS
    expect: str = "openai"  # the client protocol: what a correct answer looks like


@attrs.frozen
class StreamSpec:
    """One streamed request kind: through the proxy, and its upstream equivalent direct to the SSE fake."""

    label: str
    path: str
    body: bytes
    direct_path: str
    direct_body: bytes
    headers: tuple[tuple[str, str], ...] = OPENAI_HEADERS


@attrs.frozen
class Scenario:
    name: str
    summary: str
    config: Path | None  # None: not our proxy (nginx-floor)
    loads: tuple[LoadSpec, ...] = ()
    streams: tuple[StreamSpec, ...] = ()
    memory: bool = True
    app: str | None = None  # another hypercorn application spec than the proxy's
    in_all: bool = True  # part of the default run
    peer: str | None = None  # another gateway (benchmarks.peers), started instead of the proxy
    warmup: float = 0.0  # seconds of warm-up load at least (a JIT needs more than the default)

    def upstream(self, fake_url: str) -> Scenario:
        """The scenario with ``{fake_url}`` in its header values filled in (a peer routes by header)."""
        def fill(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
            return tuple((name, value.replace("{fake_url}", fake_url)) for name, value in headers)
        return attrs.evolve(self, loads=tuple(attrs.evolve(spec, headers=fill(spec.headers)) for spec in self.loads))


def _openai_load(model: str, headers: tuple[tuple[str, str], ...] = OPENAI_HEADERS) -> LoadSpec:
    return LoadSpec("non-stream", OPENAI_PATH, openai_request(model), OPENAI_PATH, openai_request(model), headers)


def _openai_stream(model: str) -> StreamSpec:
    body = openai_request(model, stream=True)
    return StreamSpec("stream", OPENAI_PATH, body, OPENAI_PATH, body)


_PASSTHROUGH_LOAD = _openai_load("bench-gpt")
_PASSTHROUGH_STREAM = _openai_stream("bench-gpt-stream")

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "openai-passthrough", "OpenAI client -> OpenAI backend, bytes untouched",
            CONFIGS / "openai-passthrough.yaml", loads=(_PASSTHROUGH_LOAD,), streams=(_PASSTHROUGH_STREAM,),
        ),
        Scenario(
            "openai-to-anthropic", "OpenAI client -> Anthropic backend (translation both ways)",
            CONFIGS / "openai-to-anthropic.yaml",
            loads=(LoadSpec("non-stream", OPENAI_PATH, openai_request("bench-claude"), ANTHROPIC_PATH,
                            anthropic_request("bench-claude"), OPENAI_HEADERS),),
            streams=(StreamSpec("stream", OPENAI_PATH, openai_request("bench-claude-stream", stream=True),
                                ANTHROPIC_PATH, anthropic_request("bench-claude-stream", stream=True)),),
        ),
        Scenario(
            "anthropic-stream-to-openai", "Anthropic client streaming -> OpenAI backend",
            CONFIGS / "anthropic-stream-to-openai.yaml",
            streams=(StreamSpec("stream", ANTHROPIC_PATH, anthropic_request("bench-gpt-stream", stream=True),
                                OPENAI_PATH, openai_request("bench-gpt-stream", stream=True), ANTHROPIC_HEADERS),),
            memory=False,
        ),
        Scenario(
            "policy-transforms", "pass-through + header whitelist + jsonpath_add + regex request transform",
            CONFIGS / "policy-transforms.yaml", loads=(_openai_load("bench-gpt", OPENAI_SDK_HEADERS),),
        ),
        Scenario(
            "httpx-client", "openai-passthrough with server.upstream.client: httpx",
            CONFIGS / "httpx-client.yaml", loads=(_PASSTHROUGH_LOAD,), streams=(_PASSTHROUGH_STREAM,),
            memory=False,
        ),
        Scenario(
            "audit-full", "openai-passthrough with the request audit log at full",
            CONFIGS / "audit-full.yaml", loads=(_PASSTHROUGH_LOAD,), streams=(_PASSTHROUGH_STREAM,),
        ),
        Scenario(
            "portkey", "peer: the Portkey gateway 1.15.2 (Node), one process pinned like the proxy",
            None, loads=(_openai_load("bench-gpt", OPENAI_HEADERS + PORTKEY_ROUTE),), memory=False, in_all=False,
            peer="portkey", warmup=15.0,  # V8 reaches its speed after ~10 s of load (131 -> 310 RPS here)
        ),
        Scenario(
            "nginx-floor", "calibration: nginx proxy_pass pinned like the proxy (the floor)",
            None, loads=(_PASSTHROUGH_LOAD,), streams=(_PASSTHROUGH_STREAM,), memory=False,
        ),
        Scenario(
            "quart-ceiling", "calibration: quart-trio answering by itself, no upstream (the framework's cost)",
            CONFIGS / "openai-passthrough.yaml", loads=(_PASSTHROUGH_LOAD,), memory=False,
            app="benchmarks.ceiling_app:app",
        ),
        Scenario(
            "asgi-ceiling", "calibration: raw ASGI under hypercorn answering and streaming by itself (the server's cost)",
            CONFIGS / "openai-passthrough.yaml", loads=(_PASSTHROUGH_LOAD,), streams=(_PASSTHROUGH_STREAM,),
            memory=False, app="benchmarks.asgi_ceiling_app:app",
        ),
    )
}
