"""The README's "Embedding the core" example runs as printed, with plain Python and no I/O stack.

The example is taken from README.md itself, so the documentation cannot drift
from the code: it is run in a fresh interpreter from the repository root, and
its output (the translated request, then the OpenAI stream) is checked for what
an OpenAI client would see.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from core.sse import SSEDecoder

REPO = Path(__file__).resolve().parents[2]
HEADING = "## Embedding the core"
IO_STACK = ("trio", "quart", "quart_trio", "hypercorn", "httpx")

# Makes importing any module of the I/O stack fail, as on a machine where it is not installed.
WITHOUT_IO_STACK = f"""
import sys
class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {IO_STACK!r}:
            raise ImportError(f"{{name}} is not installed here")
sys.meta_path.insert(0, _NotInstalled())
"""


def example() -> str:
    """The first python block of the README section."""
    text = (REPO / "README.md").read_text()
    assert HEADING in text, f"README.md has no {HEADING!r} section"
    section = re.split(r"^## ", text.split(HEADING, 1)[1], flags=re.MULTILINE)[0]
    found = re.search(r"^```python\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    assert found, f"the {HEADING!r} section has no python block"
    return found.group(1)


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)


def split_output(stdout: str) -> tuple[str, dict[str, Any], list[str]]:
    """(request line, request body, SSE data strings)."""
    first, _, stream = stdout.partition("\n")
    request_line, _, body = first.partition(" {")
    events = SSEDecoder().feed(stream.encode())
    return request_line, json.loads("{" + body), [event.data for event in events]


def reassemble(datas: list[str]) -> dict[str, Any]:
    """What an OpenAI client builds from the chunks: role, text, tool calls by index, finish reason."""
    message: dict[str, Any] = {"content": "", "tool_calls": {}, "finish_reason": None, "models": set()}
    for chunk in map(json.loads, datas):
        message["models"].add(chunk["model"])
        [choice] = chunk["choices"]
        delta = choice["delta"]
        message.setdefault("role", delta.get("role"))
        message["content"] += delta.get("content") or ""
        for call in delta.get("tool_calls", []):
            slot = message["tool_calls"].setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
            slot["id"] = call.get("id", slot["id"])
            slot["name"] += call.get("function", {}).get("name", "")
            slot["arguments"] += call.get("function", {}).get("arguments", "")
        message["finish_reason"] = choice["finish_reason"] or message["finish_reason"]
    return message


def test_the_example_translates_the_request_for_the_routed_anthropic_backend():
    done = run(example())
    assert done.returncode == 0, done.stderr
    request_line, body, _ = split_output(done.stdout)
    assert request_line == "POST https://api.anthropic.com/v1/messages"
    assert body["model"] == "claude-sonnet-4-5"
    assert body["max_tokens"] == 1024  # the routed model's default_max_tokens: Anthropic requires one
    assert body["system"] == [{"type": "text", "text": "Be brief."}]
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}]
    assert [tool["name"] for tool in body["tools"]] == ["get_weather"]
    assert body["tools"][0]["input_schema"]["properties"] == {"city": {"type": "string"}}
    assert body["stream"] is True


def test_the_example_prints_the_stream_an_openai_client_expects():
    done = run(example())
    assert done.returncode == 0, done.stderr
    _, _, datas = split_output(done.stdout)
    assert datas[-1] == "[DONE]" and "[DONE]" not in datas[:-1]
    message = reassemble(datas[:-1])
    assert message["role"] == "assistant" and message["content"] == ""
    assert message["tool_calls"] == {0: {"id": "toolu_01", "name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert message["finish_reason"] == "tool_calls"
    assert message["models"] == {"claude-sonnet-4-5"}


def test_the_example_runs_where_the_io_stack_is_not_installed():
    assert "sys.modules" in example().strip().splitlines()[-1]  # it checks its own imports, too
    # The blocker itself works (otherwise this test would prove nothing)...
    blocked = run(WITHOUT_IO_STACK + "import trio\n")
    assert blocked.returncode != 0 and "trio is not installed here" in blocked.stderr
    # ...and the example does not need any of it.
    done = run(WITHOUT_IO_STACK + example())
    assert done.returncode == 0, done.stderr
    assert done.stdout == run(example()).stdout
