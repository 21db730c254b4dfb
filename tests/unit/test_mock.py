"""The mock backend's replies are deterministic and in the exact OpenAI shapes."""

from __future__ import annotations

import json

import pytest

from core.errors import ProxyError
from core.mock import mock_completion, mock_stream

IDS = dict(model="mock", created=1700000000, completion_id="chatcmpl-x")
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}, "required": ["q", "n"]}}},
    {"type": "function", "function": {"name": "other"}}]


def test_echoes_the_last_user_message_with_usage():
    body = {"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi there"},
                         {"role": "assistant", "content": "yes"},
                         {"role": "user", "content": [{"type": "text", "text": "second one"}]}]}
    reply = mock_completion(body, **IDS)
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"] == "Mock reply to: second one"
    assert reply["choices"][0]["finish_reason"] == "stop"
    usage = reply["usage"]
    assert usage["prompt_tokens"] == 7 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert reply == mock_completion(body, **IDS)


@pytest.mark.parametrize(("choice", "name"), [("required", "lookup"),
                                              ({"type": "function", "function": {"name": "other"}}, "other")])
def test_forced_tool_choice_calls_the_tool(choice, name):
    reply = mock_completion({"messages": [{"role": "user", "content": "x"}], "tools": TOOLS,
                             "tool_choice": choice}, **IDS)
    message = reply["choices"][0]["message"]
    assert reply["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"][0]["function"]["name"] == name
    args = json.loads(message["tool_calls"][0]["function"]["arguments"])
    assert args == ({"q": "mock", "n": 1} if name == "lookup" else {})


def test_auto_tool_choice_answers_with_text():
    reply = mock_completion({"messages": [{"role": "user", "content": "x"}], "tools": TOOLS}, **IDS)
    assert reply["choices"][0]["message"]["content"] == "Mock reply to: x"


@pytest.mark.parametrize("body", [{}, {"messages": []}, {"messages": "hi"},
                                  {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS,
                                   "tool_choice": {"type": "function", "function": {"name": "nope"}}}])
def test_bad_requests_are_400s(body):
    with pytest.raises(ProxyError) as caught:
        mock_completion(body, **IDS)
    assert caught.value.status == 400


def reassemble(chunks):
    text, calls, finish, usage = "", {}, None, None
    for chunk in chunks[:-1]:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call["index"], {"name": "", "arguments": ""})
                slot["name"] += call.get("function", {}).get("name", "")
                slot["arguments"] += call.get("function", {}).get("arguments", "")
            finish = choice["finish_reason"] or finish
    return text, calls, finish, usage


@pytest.mark.parametrize("extra", [{}, {"tools": TOOLS, "tool_choice": "required"}])
def test_stream_reassembles_to_the_completion(extra):
    body = {"messages": [{"role": "user", "content": "one two three"}], "stream_options": {"include_usage": True},
            **extra}
    whole = mock_completion(body, **IDS)
    chunks = mock_stream(body, **IDS)
    assert chunks[-1] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text, calls, finish, usage = reassemble(chunks)
    message = whole["choices"][0]["message"]
    assert text == (message["content"] or "")
    assert [c["arguments"] for c in calls.values()] == [c["function"]["arguments"]
                                                        for c in message.get("tool_calls") or []]
    assert finish == whole["choices"][0]["finish_reason"]
    assert usage == whole["usage"]


def test_stream_without_include_usage_has_no_usage_chunk():
    chunks = mock_stream({"messages": [{"role": "user", "content": "a"}]}, **IDS)
    assert all(chunk["choices"] for chunk in chunks[:-1])
