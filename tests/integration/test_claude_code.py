"""Claude Code through the proxy to an OpenAI-compatible model (issue 3).

The real `claude` CLI (pinned, installed by `tests.support.claude_code` into
the git-ignored `.cache/claude-code/`) runs headless (`claude -p`) with
`ANTHROPIC_BASE_URL` pointing at the proxy, which routes every model name to a
fake OpenAI-compatible upstream.  The fake answers the agent loop with streamed
OpenAI tool calls; Claude Code runs its real tools on a real file and sends the
results back; the fake's final answer quotes what the tools found.  So a pass
means the whole Anthropic <-> OpenAI translation, streaming and tool calls,
works for the client that needs it most.

The tests skip (never fail) when npm or the registry is unavailable.  Claude
Code runs with every non-essential traffic switch on and its HTTP(S) proxy set
to a local trap, and a test asserts that nothing tried to leave 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from core.config import load_config
from io_trio.app import create_app
from tests.integration.conftest import CLIENT_KEY, UPSTREAM_KEY, model
from tests.support.claude_code import (
    CLAUDE_CODE_VERSION,
    ClaudeCodeUnavailable,
    EgressTrap,
    RecordingApp,
    ToolCall,
    ToolRoundTrip,
    claude_env,
    completion_chunk,
    text_completion,
    install_claude_code,
)
from tests.support.servers import FakeUpstream, Recorded, json_reply, sse_reply, start_server

RUN_TIMEOUT_SECONDS = 60
NOTES = "Meeting notes, Tuesday.\nsecret word: pelican\n"


@pytest.fixture(scope="module")
def claude() -> Path:
    try:
        return install_claude_code()
    except ClaudeCodeUnavailable as err:
        pytest.skip(f"Claude Code {CLAUDE_CODE_VERSION} is not available: {err}")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text(NOTES)
    return folder


class Session:
    """The proxy (recorded), its upstream and the egress trap, ready for `claude -p`."""

    def __init__(self, claude: Path, project: Path, upstream: FakeUpstream) -> None:
        self.claude, self.project, self.upstream = claude, project, upstream
        self.trap = EgressTrap()
        self.proxy: RecordingApp | None = None
        self.proxy_url = ""

    async def start(self, nursery: trio.Nursery) -> Session:
        config = {"models": {"*": model("openai-compatible", f"{self.upstream.url}/v1", api_key=UPSTREAM_KEY)}}
        loaded = load_config(json.dumps(config), fmt="json", env={}, source="<claude-code test>")
        self.proxy = RecordingApp(create_app(loaded))
        self.proxy_url = await start_server(nursery, self.proxy)
        await self.trap.start(nursery)
        return self

    async def run(self, prompt: str, *flags: str, quiet: bool = True) -> tuple[int, list[dict[str, Any]], str]:
        """Claude Code's exit code, its stream-json events and its stderr."""
        home = self.project.parent / "home"
        home.mkdir(exist_ok=True)
        env = claude_env(base_url=self.proxy_url, api_key=CLIENT_KEY, home=home, trap_url=self.trap.url, quiet=quiet)
        command = [str(self.claude), "-p", prompt, "--output-format", "stream-json", "--verbose",
                   "--no-session-persistence", *flags]
        started = time.monotonic()
        with trio.fail_after(RUN_TIMEOUT_SECONDS):
            done = await trio.run_process(command, cwd=self.project, env=env, stdin=b"",
                                          capture_stdout=True, capture_stderr=True, check=False)
        print(f"claude -p ran for {time.monotonic() - started:.1f} s")
        events = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
        return done.returncode, events, done.stderr.decode()

    @property
    def client_requests(self) -> list[Recorded]:
        assert self.proxy is not None
        return self.proxy.requests


async def session(claude: Path, project: Path, upstream: FakeUpstream, nursery: trio.Nursery) -> Session:
    return await Session(claude, project, upstream).start(nursery)


def the_result(events: list[dict[str, Any]]) -> dict[str, Any]:
    [result] = [event for event in events if event["type"] == "result"]
    return result


def blocks(events: list[dict[str, Any]], role: str, kind: str) -> list[dict[str, Any]]:
    """Content blocks of one kind from Claude Code's transcript of the session."""
    messages = [event["message"] for event in events if event["type"] == role]
    return [block for message in messages for block in message["content"] if block.get("type") == kind]


def tool_messages(request: Recorded) -> list[dict[str, Any]]:
    return [message for message in request.json["messages"] if message["role"] == "tool"]


def assert_nothing_left_the_machine(s: Session) -> None:
    assert s.trap.attempts == [], "Claude Code tried to reach the internet"


def assert_the_client_key_stayed_at_the_proxy(s: Session) -> None:
    messages = [r for r in s.client_requests if r.method == "POST"]
    assert messages and all(r.headers.get("x-api-key") == CLIENT_KEY for r in messages)
    for seen in s.upstream.requests:
        assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert "x-api-key" not in seen.headers
        assert CLIENT_KEY not in json.dumps(seen.headers) and CLIENT_KEY.encode() not in seen.body
        # Anthropic-only headers mean nothing to an OpenAI backend.
        assert not [name for name in seen.headers if name.startswith(("anthropic-", "x-stainless-"))]


async def test_a_read_tool_round_trip(claude, project, upstream, nursery):
    notes = str(project / "notes.txt")
    brain = ToolRoundTrip([ToolCall("call_read_0", "Read", {"file_path": notes})])
    upstream.script = brain
    s = await session(claude, project, upstream, nursery)

    code, events, stderr = await s.run("Read notes.txt and tell me the secret word.", "--allowedTools", "Read")

    assert code == 0, stderr
    result = the_result(events)
    assert result["is_error"] is False and result["subtype"] == "success"
    assert result["result"] == "The secret words are: pelican."
    # Claude Code parsed the translated stream into a real tool_use block...
    [tool_use] = blocks(events, "assistant", "tool_use")
    assert (tool_use["id"], tool_use["name"], tool_use["input"]) == ("call_read_0", "Read", {"file_path": notes})
    # ... ran its Read tool on the file, and the result went upstream as a tool message.
    first, second = brain.main_requests
    assert tool_messages(first) == []
    [result_message] = tool_messages(second)
    assert result_message["tool_call_id"] == "call_read_0"
    assert "secret word: pelican" in result_message["content"]
    [call] = [m for m in second.json["messages"] if m["role"] == "assistant"][-1]["tool_calls"]
    assert call["function"]["name"] == "Read" and json.loads(call["function"]["arguments"]) == {"file_path": notes}
    assert_the_client_key_stayed_at_the_proxy(s)
    assert_nothing_left_the_machine(s)


async def test_claude_code_speaks_anthropic_and_the_upstream_hears_openai(claude, project, upstream, nursery):
    notes = str(project / "notes.txt")
    upstream.script = ToolRoundTrip([ToolCall("call_read_0", "Read", {"file_path": notes})])
    s = await session(claude, project, upstream, nursery)

    code, _, stderr = await s.run("Read notes.txt.", "--allowedTools", "Read")

    assert code == 0, stderr
    posts = [r for r in s.client_requests if r.method == "POST"]
    assert {(r.path, r.query) for r in posts} == {("/v1/messages", "beta=true")}
    assert all(r.headers["anthropic-version"] == "2023-06-01" for r in posts)
    for seen in upstream.requests:
        assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
        body = seen.json
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert body["messages"][0]["role"] == "system"
        assert {tool["type"] for tool in body["tools"]} == {"function"}
        assert "Read" in {tool["function"]["name"] for tool in body["tools"]}


async def test_reasoning_becomes_thinking_and_goes_back_up(claude, project, upstream, nursery):
    thought = "The user wants the secret word. I should read notes.txt first."
    brain = ToolRoundTrip([ToolCall("call_read_0", "Read", {"file_path": str(project / "notes.txt")})],
                          reasoning=thought)
    upstream.script = brain
    s = await session(claude, project, upstream, nursery)

    code, events, stderr = await s.run("What is the secret word in notes.txt?", "--allowedTools", "Read")

    assert code == 0, stderr
    assert the_result(events)["result"] == "The secret words are: pelican."
    assert [block["thinking"] for block in blocks(events, "assistant", "thinking")] == [thought]
    [turn] = [m for m in brain.main_requests[-1].json["messages"] if m["role"] == "assistant"]
    assert turn["reasoning_content"] == thought
    assert [call["id"] for call in turn["tool_calls"]] == ["call_read_0"]


async def test_parallel_tool_calls_run_both_tools(claude, project, upstream, nursery):
    (project / "todo.txt").write_text("secret word: walrus\n")
    brain = ToolRoundTrip([
        ToolCall("call_read_0", "Read", {"file_path": str(project / "notes.txt")}),
        ToolCall("call_bash_1", "Bash", {"command": "cat todo.txt", "description": "Show the to-do list"}),
    ])
    upstream.script = brain
    s = await session(claude, project, upstream, nursery)

    code, events, stderr = await s.run("Read both files.", "--allowedTools", "Read", "Bash")

    assert code == 0, stderr
    assert the_result(events)["result"] == "The secret words are: pelican, walrus."
    assert [(b["id"], b["name"]) for b in blocks(events, "assistant", "tool_use")] == [
        ("call_read_0", "Read"), ("call_bash_1", "Bash")]
    results = {r["tool_use_id"]: r for r in blocks(events, "user", "tool_result")}
    assert results.keys() == {"call_read_0", "call_bash_1"}
    assert not any(r.get("is_error") for r in results.values())
    sent = {m["tool_call_id"]: m["content"] for m in tool_messages(brain.main_requests[-1])}
    assert "secret word: pelican" in sent["call_read_0"] and "secret word: walrus" in sent["call_bash_1"]
    assert_the_client_key_stayed_at_the_proxy(s)
    assert_nothing_left_the_machine(s)


async def test_side_requests_are_answered_and_egress_fails_locally(claude, project, upstream, nursery):
    # The negative control for `assert_nothing_left_the_machine`: with the
    # non-essential traffic left on, Claude Code also asks for a session title
    # (a request without tools) and calls api.anthropic.com directly, which the
    # trap refuses at once; the session still succeeds.
    brain = ToolRoundTrip([ToolCall("call_read_0", "Read", {"file_path": str(project / "notes.txt")})])
    upstream.script = brain
    s = await session(claude, project, upstream, nursery)

    code, events, stderr = await s.run("Read notes.txt.", "--allowedTools", "Read", quiet=False)

    assert code == 0, stderr
    assert the_result(events)["result"] == "The secret words are: pelican."
    side = [seen for seen in upstream.requests if seen not in brain.main_requests]
    assert side and all(not seen.json.get("tools") for seen in side)
    assert s.trap.attempts and all(a.startswith("CONNECT ") and a.endswith(":443 HTTP/1.1") for a in s.trap.attempts)
    assert_the_client_key_stayed_at_the_proxy(s)


async def test_after_a_mid_stream_failure_the_non_streaming_retry_is_translated_too(claude, project, upstream,
                                                                                  nursery):
    # Claude Code answers an `error` event in the stream by asking again with
    # `stream: false`; both shapes must come back translated.
    crash = {"error": {"message": "the model server crashed", "type": "server_error", "param": None, "code": None}}
    broken = sse_reply([(None, completion_chunk({"role": "assistant", "content": ""})),
                        (None, completion_chunk({"content": "Let me "})), (None, crash)])
    upstream.script = lambda seen: broken if seen.json.get("stream") else text_completion("Answered in one piece.")
    s = await session(claude, project, upstream, nursery)

    code, events, stderr = await s.run("Hello?")

    assert code == 0, stderr
    assert the_result(events)["result"] == "Answered in one piece."
    assert [seen.json.get("stream", False) for seen in upstream.requests] == [True, False]
    assert_nothing_left_the_machine(s)


async def test_an_upstream_error_reaches_claude_code_readably(claude, project, upstream, nursery):
    refusal = {"error": {"message": "quota of project p-123 exhausted", "type": "invalid_request_error",
                         "param": None, "code": "quota_exhausted"}}
    upstream.script = lambda seen: json_reply(refusal, 400)
    s = await session(claude, project, upstream, nursery)

    code, events, _ = await s.run("Hello?")

    assert code == 1
    result = the_result(events)
    assert result["is_error"] is True and result["api_error_status"] == 400
    assert result["result"] == "API Error: 400 quota of project p-123 exhausted"
    assert len(upstream.requests) == 1  # a 400 is final: neither the proxy nor Claude Code retried
    assert_nothing_left_the_machine(s)
