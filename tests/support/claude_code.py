"""Claude Code as a test client: install it, run it headless, script its backend.

Theory of operation: `install_claude_code` puts a pinned `@anthropic-ai/claude-code`
into a git-ignored cache folder inside the repository (npm's package ships the
native binary as a per-platform optional dependency, so nothing but the npm
registry is contacted) and reuses it on later runs; it raises
`ClaudeCodeUnavailable` instead of failing when npm is missing or the install
does not work, so that the test can skip.

`claude_env` is the whole environment Claude Code runs with, built from scratch
so that no real key or setting of the developer leaks in: the proxy as
`ANTHROPIC_BASE_URL`, a dummy key, a fresh HOME, every non-essential traffic
switch that 2.1.x reads, and HTTP(S)_PROXY pointing at an `EgressTrap` on
127.0.0.1 with NO_PROXY covering only loopback.  Anything Claude Code still tries
to fetch from the internet goes to the trap, which records the request line and
refuses it at once: it fails fast and locally, and the test can see it.

`ToolRoundTrip` is the fake OpenAI-compatible backend's brain: the main
conversation gets streamed tool calls first and, once a request carries the
`role: "tool"` results, a final answer that quotes the secret words it found in
them; Claude Code's side requests (the session title, when non-essential
traffic is on) get a plain text completion, streamed or not as they asked.
`RecordingApp` wraps the proxy to note what Claude Code sent it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from tests.support.servers import Recorded, Reply, json_reply, sse_reply

__all__ = [
    "CLAUDE_CODE_VERSION",
    "ClaudeCodeUnavailable",
    "EgressTrap",
    "RecordingApp",
    "ToolCall",
    "ToolRoundTrip",
    "claude_env",
    "completion_chunk",
    "install_claude_code",
    "text_completion",
]

# The version of the capture in shared/reference (2.1.197 speaks the 2026 wire
# format: `?beta=true`, system blocks with cache_control, thinking, 24 tools).
CLAUDE_CODE_VERSION = "2.1.197"
REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "claude-code"
INSTALL_TIMEOUT_SECONDS = 300

# The switches 2.1.197 reads (their names are in its binary) that stop a
# background call: feature flags (GrowthBook), error reports, telemetry, the
# auto-updater and update checks, surveys, the plugin marketplace, the IDE.
# The first one alone sufficed in our runs; the rest cost nothing and keep
# the guarantee if a later version splits a switch off.
QUIET_SWITCHES = (
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",  # the next four together, per Claude Code's settings docs
    "DISABLE_AUTOUPDATER",
    "DISABLE_BUG_COMMAND",
    "DISABLE_ERROR_REPORTING",
    "DISABLE_TELEMETRY",
    "DISABLE_GROWTHBOOK",
    "DISABLE_UPDATES",
    "DISABLE_INSTALLATION_CHECKS",
    "DISABLE_COST_WARNINGS",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY",
    "CLAUDE_CODE_DISABLE_TERMINAL_TITLE",
    "CLAUDE_CODE_IDE_SKIP_AUTO_INSTALL",
    "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL",
)
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")
LOOPBACK = "127.0.0.1,localhost,::1"


class ClaudeCodeUnavailable(Exception):
    """Claude Code cannot run here (no npm, no registry, unsupported platform)."""


# -- installing --------------------------------------------------------------------


def install_claude_code(*, version: str = CLAUDE_CODE_VERSION, cache: Path = CACHE,
                        timeout: float = INSTALL_TIMEOUT_SECONDS) -> Path:
    """The path of a working `claude` binary, installed into `cache/<version>` if needed."""
    prefix = cache / version
    binary = prefix / "node_modules" / ".bin" / "claude"
    if not _reports_version(binary, version):
        _npm_install(prefix, f"@anthropic-ai/claude-code@{version}", timeout)
        if not _reports_version(binary, version):
            raise ClaudeCodeUnavailable(f"npm installed Claude Code {version} in {prefix}, "
                                        "but `claude --version` does not run on this platform")
    return binary


def _npm_install(prefix: Path, spec: str, timeout: float) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise ClaudeCodeUnavailable("npm is not on PATH")
    prefix.mkdir(parents=True, exist_ok=True)
    # Fail in seconds, not minutes, when the registry cannot be reached.
    command = [npm, "install", "--prefix", str(prefix), "--no-save", "--no-audit", "--no-fund",
               "--loglevel=error", "--fetch-retries=1", "--fetch-retry-mintimeout=2000",
               "--fetch-retry-maxtimeout=5000", "--fetch-timeout=120000", spec]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ClaudeCodeUnavailable(f"`npm install {spec}` took longer than {timeout:g} s") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-600:]
        raise ClaudeCodeUnavailable(f"`npm install {spec}` failed ({done.returncode}): {tail}")


def _reports_version(binary: Path, version: str) -> bool:
    if not binary.exists():
        return False
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30,
                              check=False, env={"PATH": "/usr/bin:/bin", "HOME": str(binary.parent)})
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.startswith(version)


# -- running -----------------------------------------------------------------------


def claude_env(*, base_url: str, api_key: str, home: Path, trap_url: str, quiet: bool = True) -> dict[str, str]:
    """The complete environment for `claude -p`: nothing is inherited but PATH.

    `quiet=False` leaves the non-essential traffic on (title generation, feature
    flags, telemetry), still sent to the trap: the negative control.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": api_key,
        "NO_PROXY": LOOPBACK,
        "no_proxy": LOOPBACK,
    }
    if quiet:
        env.update(dict.fromkeys(QUIET_SWITCHES, "1"))
    env.update(dict.fromkeys(PROXY_VARIABLES, trap_url))
    return env


class EgressTrap:
    """An HTTP proxy on 127.0.0.1 that refuses everything and remembers what was asked.

    A client honouring HTTP(S)_PROXY sends `CONNECT host:443 HTTP/1.1` (or an
    absolute-form GET) here instead of opening a socket to the internet; the
    trap answers 403 and closes, so the attempt fails in milliseconds.
    """

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.url = ""

    async def start(self, nursery: trio.Nursery) -> str:
        listeners = await nursery.start(partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
        host, port = listeners[0].socket.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(5):
                head = await stream.receive_some(8192)
                self.attempts.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
                await stream.send_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")


class RecordingApp:
    """An ASGI wrapper that notes what the client sent the proxy (method, path, query, headers)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[Recorded] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            self.requests.append(Recorded(method=scope["method"], path=scope["path"],
                                          query=scope["query_string"].decode("latin-1"), headers=headers, body=b""))
        await self.app(scope, receive, send)


# -- the fake OpenAI-compatible backend ----------------------------------------------


def completion_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1764000000, "model": "fake-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1764000000, "model": "fake-model",
            "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                     "total_tokens": prompt + completion}}


def text_stream(text: str) -> Reply:
    """A streamed text answer, split in a few deltas as real servers do."""
    words = re.findall(r"\S+\s*", text) or [text]
    chunks = [completion_chunk({"role": "assistant", "content": ""})]
    chunks += [completion_chunk({"content": word}) for word in words]
    chunks += [completion_chunk({}, "stop"), usage_chunk(120, len(words))]
    return sse_reply([(None, c) for c in chunks] + [(None, "[DONE]")])


def tool_calls_stream(calls: Sequence[ToolCall], *, reasoning: str = "") -> Reply:
    """Streamed tool calls, one after the other as OpenAI sends parallel calls.

    Each call opens with its id and name, then its arguments come in two
    fragments that are not JSON on their own (protocols.md §1.4).  `reasoning`
    comes first as `reasoning_content` deltas, as DeepSeek and vLLM stream it.
    """
    chunks = [completion_chunk({"role": "assistant", "content": None})]
    chunks += [completion_chunk({"reasoning_content": word}) for word in re.findall(r"\S+\s*", reasoning)]
    for index, call in enumerate(calls):
        encoded = json.dumps(call.arguments)
        cut = len(encoded) // 2
        opening = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        chunks.append(completion_chunk({"tool_calls": [opening]}))
        for fragment in (encoded[:cut], encoded[cut:]):
            chunks.append(completion_chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}))
    chunks += [completion_chunk({}, "tool_calls"), usage_chunk(2000, 30)]
    return sse_reply([(None, c) for c in chunks] + [(None, "[DONE]")])


def text_completion(text: str) -> Reply:
    return json_reply({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1764000000, "model": "fake-model",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
    })


@attrs.frozen
class ToolCall:
    """One tool call the fake makes: Claude Code's tool `name` with its `arguments`."""

    id: str
    name: str
    arguments: dict[str, Any]


@attrs.define
class ToolRoundTrip:
    """Asks Claude Code to run `calls`, then reports the secret words their results carry.

    A `FakeUpstream` script function: it is called with each recorded request.
    The main conversation is the one that offers Claude Code's tools; the final
    answer quotes every `secret word: <word>` found in the `role: "tool"`
    messages, so it can only be right if the tools really ran.
    """

    calls: list[ToolCall]
    reasoning: str = ""
    side_answer: str = "Reading a file"
    main_requests: list[Recorded] = attrs.field(factory=list)

    def __call__(self, seen: Recorded) -> Reply:
        body = seen.json
        if not _is_main_conversation(body):
            return text_stream(self.side_answer) if body.get("stream") else text_completion(self.side_answer)
        self.main_requests.append(seen)
        results = [m for m in body["messages"] if m.get("role") == "tool"]
        if not results:
            return tool_calls_stream(self.calls, reasoning=self.reasoning)
        words = [secret_word(_text(result.get("content"))) for result in results]
        return text_stream(f"The secret words are: {', '.join(words)}.")


def _is_main_conversation(body: dict[str, Any]) -> bool:
    """The agent loop offers the Read tool; title and summary requests offer none."""
    names = {tool.get("function", {}).get("name") for tool in body.get("tools") or []}
    return "Read" in names


def secret_word(text: str) -> str:
    found = re.search(r"secret word: (\w+)", text)
    return found.group(1) if found else "<none: the tool result did not carry the file>"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""
