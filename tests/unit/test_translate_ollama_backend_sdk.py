"""The official SDKs as judges of the Ollama translation (no network: their HTTP clients get a MockTransport).

Properties:
* for generated Ollama NDJSON line sequences, the translated stream, read by the openai SDK's own
  ``chat.completions.stream(...)`` accumulation, gives exactly the completion that the non-streaming translation
  of the equivalent single Ollama reply gives (text, reasoning, tool ids/names/arguments, finish reason, usage);
* an assistant turn translated from Ollama and sent back as history reaches Ollama again as the same message, and
  every tool result is matched to its call's name (the multi-turn tool loop works);
* composed with the OpenAI->Anthropic translators (core/translate/openai_backend.py), as an Anthropic client on an
  Ollama backend is served, the anthropic SDK's ``messages.stream(...).get_final_message()`` gives the same text,
  thinking, tool uses, stop_reason and usage as the composed non-streaming translation.
Ollama sends tool calls whole (protocols.md §4.2), so there are no argument fragments to split here; the lines are
split and interleaved instead.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion

from core.translate.ollama_backend import OllamaToOpenAIStream, request_to_ollama, response_from_ollama
from core.translate.openai_backend import OpenAIToAnthropicStream, response_from_openai

COMPLETION_ID = "chatcmpl-prop"
CREATED = 1764100000
MODEL = "client-model"


def _sse(items: list[Any]) -> bytes:
    return b"".join(b"data: " + (i if isinstance(i, str) else json.dumps(i)).encode() + b"\n\n" for i in items)


def _http(body: bytes) -> httpx2.Client:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx2.Client(transport=httpx2.MockTransport(handler))


def _client(body: bytes) -> openai.OpenAI:
    return openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1", http_client=_http(body))


def _sdk_final_completion(items: list[Any], include_usage: bool) -> Any:
    """What `client.chat.completions.stream(...).get_final_completion()` makes of our chunks."""
    client = _client(_sse(items))
    options = {"include_usage": True} if include_usage else openai.omit
    with client.chat.completions.stream(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                        stream_options=options) as stream:
        for _ in stream:
            pass
        try:
            return stream.get_final_completion()
        except openai.LengthFinishReasonError as exc:  # the helper refuses to "parse" a cut-off answer
            return exc.completion  # ... and hands over the accumulated completion instead


def _translate_stream(lines: list[dict[str, Any]], include_usage: bool) -> list[Any]:
    s = OllamaToOpenAIStream(model=MODEL, created=CREATED, completion_id=COMPLETION_ID, include_usage=include_usage)
    return [item for line in lines for item in s.feed(line)] + s.finish()


def _summary(completion: Any) -> dict[str, Any]:
    choice = completion.choices[0]
    message = choice.message
    return {
        "content": message.content,
        "reasoning_content": (message.model_extra or {}).get("reasoning_content"),
        "tool_calls": [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []],
        "finish_reason": choice.finish_reason,
        "usage": completion.usage.model_dump(exclude_none=True) if completion.usage else None,
    }


# --------------------------------------------------------------------------- generated Ollama replies

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
tool_calls = st.builds(
    lambda name, args, call_id: {"function": {"name": name, "arguments": args}} | ({"id": call_id} if call_id else {}),
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=20),
    st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    st.none() | st.sampled_from(["call_0", "call_1", "call_x9"]),  # repeats on purpose: ids must stay unique
)


@st.composite
def ollama_replies(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(stream lines, the equivalent non-streaming reply)."""
    thinking = draw(st.lists(st.text(max_size=10), max_size=4))
    content = draw(st.lists(st.text(max_size=10), max_size=5))
    groups = draw(st.lists(st.lists(tool_calls, min_size=1, max_size=3), max_size=3))
    empties = draw(st.integers(0, 2))
    tags = draw(st.permutations(["t"] * len(thinking) + ["c"] * len(content) + ["k"] * len(groups) + ["e"] * empties))
    pools = {"t": iter(thinking), "c": iter(content), "k": iter(groups)}
    lines = [_line(tag, next(pools[tag]) if tag != "e" else None) for tag in tags]
    done_reason = draw(st.sampled_from(["stop", "length", "load", None]))
    counts = {"prompt_eval_count": draw(st.integers(0, 10**6)), "eval_count": draw(st.integers(0, 10**6))}
    done_fields = {"done": True, **counts} | ({"done_reason": done_reason} if done_reason else {})
    lines.append({"model": "m", "message": {"role": "assistant", "content": ""}, **done_fields})
    message = {"role": "assistant", "content": "".join(content), "thinking": "".join(thinking),
               "tool_calls": [call for group in groups for call in group]}
    return lines, {"model": "m", "message": message, **done_fields}


def _line(tag: str, value: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": ""}
    if tag == "t":
        message["thinking"] = value
    elif tag == "c":
        message["content"] = value
    elif tag == "k":
        message["tool_calls"] = value
    return {"model": "m", "created_at": "2025-07-07T20:22:19Z", "message": message, "done": False}


@settings(max_examples=80, deadline=None)
@given(reply=ollama_replies(), include_usage=st.booleans())
def test_stream_reassembles_to_the_non_streaming_translation(
    reply: tuple[list[dict[str, Any]], dict[str, Any]], include_usage: bool
) -> None:
    lines, whole = reply
    streamed = _summary(_sdk_final_completion(_translate_stream(lines, include_usage), include_usage))
    expected = _summary(ChatCompletion.model_validate(
        response_from_ollama(whole, model=MODEL, created=CREATED, completion_id=COMPLETION_ID)))
    if not include_usage:
        expected["usage"] = None  # the SDK only sees usage when it asked for it
    assert streamed == expected
    calls = whole["message"]["tool_calls"]
    ids = [call_id for call_id, _, _ in streamed["tool_calls"]]
    assert len(set(ids)) == len(ids)  # every tool result can be matched to its call
    assert [json.loads(args) for _, _, args in streamed["tool_calls"]] == [c["function"]["arguments"] for c in calls]
    assert streamed["content"] == (whole["message"]["content"] or None)
    assert streamed["finish_reason"] == (
        "tool_calls" if calls else "length" if whole.get("done_reason") == "length" else "stop")


@settings(max_examples=60, deadline=None)
@given(reply=ollama_replies())
def test_an_ollama_turn_sent_back_as_history_reaches_ollama_unchanged(
    reply: tuple[list[dict[str, Any]], dict[str, Any]]
) -> None:
    _, whole = reply
    assistant = response_from_ollama(whole, model=MODEL, created=CREATED, completion_id=COMPLETION_ID)
    assistant_message = assistant["choices"][0]["message"]
    results = [{"role": "tool", "tool_call_id": c["id"], "content": f"result {i}"}
               for i, c in enumerate(assistant_message.get("tool_calls", []))]
    history = [{"role": "user", "content": "go"}, assistant_message, *results]
    sent = request_to_ollama({"model": MODEL, "messages": history}, model="m")["messages"]
    original = whole["message"]
    echoed = sent[1]
    assert echoed["content"] == original["content"]
    assert echoed.get("thinking", "") == original["thinking"]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in echoed.get("tool_calls", [])] == [
        (c["function"]["name"], c["function"]["arguments"]) for c in original["tool_calls"]]
    assert [m["tool_name"] for m in sent[2:]] == [c["function"]["name"] for c in original["tool_calls"]]


def _anthropic_summary(message: Any) -> dict[str, Any]:
    blocks = [b if isinstance(b, dict) else b.model_dump() for b in message["content"]]
    return {
        "text": "".join(b["text"] for b in blocks if b["type"] == "text"),
        "thinking": "".join(b["thinking"] for b in blocks if b["type"] == "thinking"),
        "tool_uses": [(b["id"], b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"],
        "stop_reason": message["stop_reason"],
        "usage": (message["usage"]["input_tokens"], message["usage"]["output_tokens"]),
    }


@settings(max_examples=60, deadline=None)
@given(reply=ollama_replies())
def test_composed_with_openai_to_anthropic_the_anthropic_sdk_sees_the_non_streaming_answer(
    reply: tuple[list[dict[str, Any]], dict[str, Any]]
) -> None:
    lines, whole = reply
    to_openai = OllamaToOpenAIStream(model="m", created=CREATED, completion_id=COMPLETION_ID, include_usage=True)
    to_anthropic = OpenAIToAnthropicStream(model="claude-x", message_id="msg_prop")
    events = [e for line in lines for chunk in to_openai.feed(line) for e in to_anthropic.feed(chunk)]
    events += [e for chunk in to_openai.finish() for e in to_anthropic.feed(chunk)] + to_anthropic.finish()
    sse = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
    client = anthropic.Anthropic(api_key="k", base_url="http://127.0.0.1:9", http_client=_http(sse))
    with client.messages.stream(model="claude-x", max_tokens=64, messages=[{"role": "user", "content": "x"}]) as stream:
        streamed = stream.get_final_message().model_dump()
    completion = response_from_ollama(whole, model="m", created=CREATED, completion_id=COMPLETION_ID)
    expected = response_from_openai(completion, model="claude-x", message_id="msg_prop")
    assert _anthropic_summary(streamed) == _anthropic_summary(expected)


# --------------------------------------------------------------------------- the SDK raises on failures


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{"message": {"role": "assistant", "content": "Once"}, "done": False}, {"error": "model runner crashed"}],
         "model runner crashed"),
        ([{"message": {"role": "assistant", "content": "Once"}, "done": False}], "ended before its final line"),
    ],
)
def test_openai_sdk_raises_on_a_failed_stream(lines: list[dict[str, Any]], message: str) -> None:
    items = _translate_stream(lines, include_usage=True)
    assert "[DONE]" not in items
    client = _client(_sse(items))
    seen = []
    with pytest.raises(openai.APIError, match=message):
        for chunk in client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                                    stream=True):
            seen.append(chunk.choices[0].delta.content)
    assert seen == [None, "Once"]  # what arrived before the failure was delivered


def test_openai_sdk_parses_a_tool_call_stream_into_tool_calls() -> None:
    lines = [
        {"message": {"role": "assistant", "content": "",
                     "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                                    {"function": {"name": "get_weather", "arguments": {"city": "Lyon"}}}]},
         "done": False},
        {"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
         "prompt_eval_count": 20, "eval_count": 8},
    ]
    final = _sdk_final_completion(_translate_stream(lines, include_usage=True), include_usage=True)
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("call_chatcmpl-prop_0", "get_weather", {"city": "Paris"}),
        ("call_chatcmpl-prop_1", "get_weather", {"city": "Lyon"}),
    ]
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.total_tokens) == (20, 8, 28)
