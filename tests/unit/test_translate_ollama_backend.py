"""OpenAI <-> Ollama native (/api/chat) translation: tables, stream state machine, errors, golden transcripts.

Golden transcripts live in tests/fixtures/ollama/*.json (one scenario per file; adding a file adds a test). They
are replayed with completion_id=GOLDEN_ID and created=GOLDEN_CREATED; the upstream model is the one in
``upstream_request``, the client's model the one in ``client_request``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from core.errors import ProxyError, TranslationError, anthropic_error_body, openai_error_body
from core.ndjson import NDJSONDecoder, encode_ndjson
from core.translate.ollama_backend import (
    OllamaToOpenAIStream,
    error_from_ollama,
    request_to_ollama,
    request_without_think,
    response_from_ollama,
)

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "ollama"
GOLDEN_ID = "chatcmpl-ollama-fixture"
GOLDEN_CREATED = 1764100000
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def _req(**fields: Any) -> dict[str, Any]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return request_to_ollama(body, model="llama3.2")


def _image_message(url: str, *, role: str = "user") -> dict[str, Any]:
    return {"role": role, "content": [{"type": "image_url", "image_url": {"url": url}}]}


def _bad(**fields: Any) -> ProxyError:
    with pytest.raises(ProxyError) as info:
        _req(**fields)
    assert info.value.status == 400
    assert info.value.type == "invalid_request_error"
    return info.value


# --------------------------------------------------------------------------- request: what is sent


def test_minimal_request_always_states_stream_because_ollama_defaults_to_streaming() -> None:
    assert _req() == {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    assert _req(stream=True)["stream"] is True


@pytest.mark.parametrize(
    ("fields", "options"),
    [
        ({"max_tokens": 64}, {"num_predict": 64}),
        ({"max_completion_tokens": 64}, {"num_predict": 64}),
        ({"max_tokens": 999, "max_completion_tokens": 64}, {"num_predict": 64}),
        ({"temperature": 0, "top_p": 0.5, "top_k": 40}, {"temperature": 0, "top_p": 0.5, "top_k": 40}),
        ({"seed": 42, "presence_penalty": 0.5, "frequency_penalty": -1.0},
         {"seed": 42, "presence_penalty": 0.5, "frequency_penalty": -1.0}),
        ({"stop": "END"}, {"stop": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop": ["a", "b"]}),
        ({"stop": []}, None),
        ({"temperature": None, "max_tokens": None}, None),
    ],
)
def test_sampling_parameters_go_to_options(fields: dict[str, Any], options: dict[str, Any] | None) -> None:
    assert _req(**fields).get("options") == options


def test_unset_sampling_parameters_are_not_sent_so_modelfile_defaults_apply() -> None:
    assert "options" not in _req()


@pytest.mark.parametrize(
    ("fields", "fmt"),
    [
        ({"response_format": {"type": "text"}}, None),
        ({"response_format": {"type": "json_object"}}, "json"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True,
                                                                        "schema": {"type": "object"}}}},
            {"type": "object"},
        ),
    ],
)
def test_response_format_becomes_format(fields: dict[str, Any], fmt: Any) -> None:
    assert _req(**fields).get("format") == fmt


@pytest.mark.parametrize(
    ("fields", "think"),
    [
        ({"reasoning_effort": "none"}, False),
        ({"reasoning_effort": "minimal"}, "low"),
        ({"reasoning_effort": "low"}, "low"),
        ({"reasoning_effort": "medium"}, "medium"),
        ({"reasoning_effort": "high"}, "high"),
        ({"reasoning_effort": "xhigh"}, "high"),
        ({"reasoning_effort": "max"}, "max"),
        ({"reasoning": {"effort": "low"}}, "low"),
        ({}, None),
    ],
)
def test_reasoning_effort_becomes_think(fields: dict[str, Any], think: Any) -> None:
    assert _req(**fields).get("think") == think


def test_system_and_developer_become_system_in_place() -> None:
    messages = [
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]},
    ]
    assert _req(messages=messages)["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "A\nB"},
    ]


def test_user_parts_are_joined_and_images_become_bare_base64() -> None:
    content = [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}},
        {"type": "text", "text": "with this", "cache_control": {"type": "ephemeral"}},
        {"type": "image_url", "image_url": {"url": f"data:;base64,{PNG}"}},
    ]
    assert _req(messages=[{"role": "user", "content": content, "name": "ann"}])["messages"] == [
        {"role": "user", "content": "Compare\nwith this", "images": [PNG, PNG]}
    ]


def test_assistant_tool_calls_become_objects_and_tool_results_get_the_tool_name() -> None:
    messages = [
        {"role": "user", "content": "time and weather?"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Checking."}],
            "reasoning_content": "Two tools.",
            "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "12:00"}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "-3 C"},
    ]
    assert _req(messages=messages)["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "thinking": "Two tools.",
            "tool_calls": [
                {"id": "call_a", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}}},
                {"id": "call_b", "function": {"index": 1, "name": "get_time", "arguments": {}}},
            ],
        },
        {"role": "tool", "content": "12:00", "tool_call_id": "call_b", "tool_name": "get_time"},
        {"role": "tool", "content": "-3 C", "tool_call_id": "call_a", "tool_name": "get_weather"},
    ]


def test_assistant_reasoning_field_is_accepted_like_reasoning_content() -> None:
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning": "r"}]
    assert _req(messages=messages)["messages"][1] == {"role": "assistant", "content": "a", "thinking": "r"}


def test_tool_result_image_parts_are_kept() -> None:
    messages = [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1",
         "content": [{"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}}]},
    ]
    assert _req(messages=messages)["messages"][1] == {
        "role": "tool", "content": "", "tool_call_id": "c1", "tool_name": "shot", "images": [PNG]
    }


@pytest.mark.parametrize(
    ("tool_choice", "names"),
    [
        (None, ["get_weather", "get_time"]),
        ("auto", ["get_weather", "get_time"]),
        ("required", ["get_weather", "get_time"]),
        ("none", None),
        ({"type": "function", "function": {"name": "get_time"}}, ["get_time"]),
        (
            {"type": "allowed_tools",
             "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "get_weather"}}]}},
            ["get_weather"],
        ),
    ],
)
def test_tool_choice_selects_which_tools_are_sent(tool_choice: Any, names: list[str] | None) -> None:
    fields: dict[str, Any] = {"tools": [WEATHER, dict(TIME, function={**TIME["function"], "strict": True})]}
    if tool_choice is not None:
        fields["tool_choice"] = tool_choice
    tools = _req(**fields).get("tools")
    assert (None if tools is None else [t["function"]["name"] for t in tools]) == names
    for tool in tools or []:
        assert tool["type"] == "function" and "strict" not in tool["function"]


def test_tools_keep_description_and_schema() -> None:
    assert _req(tools=[WEATHER])["tools"] == [WEATHER]


def test_dropped_fields_do_not_reach_ollama() -> None:
    out = _req(
        stream=True, stream_options={"include_usage": True}, user="u1", metadata={"k": "v"}, store=False,
        parallel_tool_calls=False, n=1, logprobs=False, service_tier="auto", prompt_cache_key="p", some_future_field=1,
    )
    assert out == {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True}


# --------------------------------------------------------------------------- request: what is refused


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"n": 2}, "n", "single choice"),
        ({"logprobs": True}, "logprobs", "not supported"),
        ({"top_logprobs": 3}, "logprobs", "not supported"),
        ({"logit_bias": {"123": -100}}, "logit_bias", "not supported"),
        ({"functions": [{"name": "f"}]}, "functions", "use 'tools'"),
        ({"modalities": ["text", "audio"]}, "modalities", "text output"),
        ({"web_search_options": {}}, "web_search_options", "web search"),
        ({"messages": []}, "messages", "non-empty"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role", "not supported"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
         "messages[0].content[0]", "'input_audio'"),
        ({"messages": [_image_message("https://x/cat.png")]}, "messages[0].content[0]", "cannot fetch image URLs"),
        ({"messages": [_image_message("data:application/pdf;base64,AAAA")]}, "messages[0].content[0]", "only images"),
        ({"messages": [_image_message("data:image/svg+xml,<svg/>")]}, "messages[0].content[0]", "base64 data URLs"),
        ({"messages": [_image_message(f"data:image/png;base64,{PNG}", role="system")]},
         "messages[0].content[0]", "'image_url'"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                            "function": {"name": "f", "arguments": "{\"a\": "}}]}]},
         "messages[0].tool_calls[0].function.arguments", "not valid JSON"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                            "function": {"name": "f", "arguments": "[1]"}}]}]},
         "messages[0].tool_calls[0].function.arguments", "JSON object"),
        ({"messages": [{"role": "tool", "tool_call_id": "nowhere", "content": "x"}]},
         "messages[0].tool_call_id", "does not match any earlier assistant tool call"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", "non-empty string"),
        ({"tools": [{"type": "custom", "custom": {"name": "grep"}}]}, "tools[0]", "function tools only"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice", "nope"),
        ({"tools": [WEATHER], "tool_choice": {"type": "custom", "custom": {"name": "x"}}},
         "tool_choice", "not supported"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format", "JSON Schema"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort", "must be one of"),
        ({"max_tokens": 0}, "max_tokens", "integer >= 1"),
        ({"max_completion_tokens": "10"}, "max_completion_tokens", "integer"),
        ({"temperature": "hot"}, "temperature", "number"),
        ({"seed": 1.5}, "seed", "integer"),
        ({"stop": ["a", 1]}, "stop", "array of strings"),
        ({"stream": "yes"}, "stream", "boolean"),
    ],
)
def test_inexpressible_or_invalid_requests_are_a_clear_400(fields: dict[str, Any], param: str, words: str) -> None:
    err = _bad(**fields)
    assert err.param == param
    assert words in err.message


def test_tool_message_may_fall_back_to_its_own_name() -> None:
    out = _req(messages=[{"role": "tool", "tool_call_id": "c9", "name": "get_time", "content": "noon"}])
    assert out["messages"] == [{"role": "tool", "content": "noon", "tool_call_id": "c9", "tool_name": "get_time"}]


# --------------------------------------------------------------------------- non-streaming response


def _reply(message: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"model": "llama3.2", "created_at": "2025-07-07T20:22:19.2Z", "message": {"role": "assistant", **message},
            "done": True, "done_reason": "stop", "prompt_eval_count": 10, "eval_count": 5}
    body.update(fields)
    return body


def _complete(body: dict[str, Any]) -> dict[str, Any]:
    out = response_from_ollama(body, model="client-model", created=123, completion_id="chatcmpl-1")
    ChatCompletion.model_validate(out)  # the openai SDK accepts it
    return out


def test_text_reply_becomes_chat_completion_with_the_clients_model_name() -> None:
    assert _complete(_reply({"content": "Hello"})) == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 123,
        "model": "client-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "logprobs": None,
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


@pytest.mark.parametrize(
    ("done_reason", "tool_calls", "finish"),
    [
        ("stop", False, "stop"),
        ("length", False, "length"),
        ("load", False, "stop"),
        (None, False, "stop"),
        ("stop", True, "tool_calls"),
        ("length", True, "tool_calls"),
    ],
)
def test_finish_reason(done_reason: str | None, tool_calls: bool, finish: str) -> None:
    calls = [{"function": {"name": "f", "arguments": {}}}] if tool_calls else []
    out = _complete(_reply({"content": "", "tool_calls": calls}, done_reason=done_reason))
    assert out["choices"][0]["finish_reason"] == finish


def test_tool_calls_get_ids_and_string_arguments_and_thinking_becomes_reasoning_content() -> None:
    calls = [
        {"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Zürich", "days": [1, 2]}}},
        {"id": "call_up", "function": {"index": 1, "name": "get_time", "arguments": {}}},
    ]
    message = _complete(_reply({"content": "", "thinking": "Need both.", "tool_calls": calls}))["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": None,  # as OpenAI sends it beside tool calls; no empty text block downstream
        "reasoning_content": "Need both.",
        "tool_calls": [
            {"id": "call_chatcmpl-1_0", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Zürich\",\"days\":[1,2]}"}},
            {"id": "call_up", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ],
    }


def test_repeated_upstream_tool_call_ids_are_made_unique() -> None:
    calls = [{"id": "call_0", "function": {"name": "a"}}, {"id": "call_0", "function": {"name": "b"}}]
    message = _complete(_reply({"content": "", "tool_calls": calls}))["choices"][0]["message"]
    assert [c["id"] for c in message["tool_calls"]] == ["call_0", "call_chatcmpl-1_1"]
    s = _stream()
    out = s.feed(_line(tool_calls=calls[:1])) + s.feed(_line(tool_calls=calls[1:]))
    assert [c["choices"][0]["delta"]["tool_calls"][0]["id"] for c in out[1:]] == ["call_0", "call_chatcmpl-s_1"]


def test_missing_counters_are_zero_usage() -> None:
    body = _reply({"content": "x"})
    del body["prompt_eval_count"], body["eval_count"]
    assert _complete(body)["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


@pytest.mark.parametrize(
    "body",
    [
        [],
        _reply({"content": "x"}, done=False),
        _reply({"content": 3}),
        _reply({"content": "", "tool_calls": [{"function": {"arguments": {}}}]}),
        _reply({"content": "", "tool_calls": [{"function": {"name": "f", "arguments": [1]}}]}),
        _reply({"content": "x"}, eval_count="5"),
    ],
)
def test_malformed_replies_are_translation_errors(body: Any) -> None:
    with pytest.raises(TranslationError):
        response_from_ollama(body, model="m", created=1, completion_id="c")


def test_error_object_in_a_2xx_reply_is_an_upstream_error() -> None:
    with pytest.raises(ProxyError) as info:
        response_from_ollama({"error": "boom"}, model="m", created=1, completion_id="c")
    assert (info.value.status, info.value.message) == (502, "boom")


# --------------------------------------------------------------------------- stream state machine


def _line(content: str = "", *, done: bool = False, **message: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"model": "llama3.2", "message": {"role": "assistant", "content": content, **message},
                            "done": done}
    if done:
        line.update(done_reason="stop", prompt_eval_count=7, eval_count=2)
    return line


def _stream(include_usage: bool = False) -> OllamaToOpenAIStream:
    return OllamaToOpenAIStream(
        model="client-model", created=5, completion_id="chatcmpl-s", include_usage=include_usage
    )


def _deltas(items: list[Any]) -> list[Any]:
    return [item if isinstance(item, str) else
            (item["choices"][0]["delta"], item["choices"][0]["finish_reason"]) if item.get("choices") else item
            for item in items]


def test_each_line_yields_its_chunks_at_once() -> None:
    s = _stream()
    assert _deltas(s.feed(_line(thinking="hm"))) == [({"role": "assistant"}, None), ({"reasoning_content": "hm"}, None)]
    assert _deltas(s.feed(_line("Hi"))) == [({"content": "Hi"}, None)]
    assert s.feed(_line("")) == []  # empty content adds nothing
    assert _deltas(s.feed(_line(done=True))) == [({}, "stop"), "[DONE]"]
    assert s.finish() == []


def test_chunks_are_openai_chunk_objects_with_the_clients_model() -> None:
    s = _stream(include_usage=True)
    items = s.feed(_line("Hi")) + s.feed(_line(done=True))
    for item in items[:-1]:
        chunk = ChatCompletionChunk.model_validate(item)
        assert (chunk.id, chunk.model, chunk.created, chunk.object) == ("chatcmpl-s", "client-model", 5,
                                                                       "chat.completion.chunk")
    assert items[-2] == {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 5, "model": "client-model",
                         "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}


def test_content_thinking_and_tool_calls_in_one_line_come_out_in_that_order() -> None:
    s = _stream()
    s.feed(_line("first"))
    calls = [{"function": {"name": "a", "arguments": {"x": 1}}}, {"id": "up", "function": {"name": "b"}}]
    out = _deltas(s.feed(_line(" then", thinking="why", tool_calls=calls)))
    assert out == [
        ({"reasoning_content": "why"}, None),
        ({"content": " then"}, None),
        ({"tool_calls": [{"index": 0, "id": "call_chatcmpl-s_0", "type": "function",
                          "function": {"name": "a", "arguments": "{\"x\":1}"}}]}, None),
        ({"tool_calls": [{"index": 1, "id": "up", "type": "function",
                          "function": {"name": "b", "arguments": "{}"}}]}, None),
    ]
    later = _deltas(s.feed(_line(tool_calls=[{"function": {"name": "c", "arguments": {}}}], done=True)))
    assert later[0][0]["tool_calls"][0]["index"] == 2  # the running index continues across lines
    assert later[1:] == [({}, "tool_calls"), "[DONE]"]


def test_a_done_line_alone_still_starts_with_the_role_chunk() -> None:
    assert _deltas(_stream().feed(_line(done=True))) == [({"role": "assistant"}, None), ({}, "stop"), "[DONE]"]


def test_error_line_yields_one_error_chunk_and_nothing_after() -> None:
    s = _stream(include_usage=True)
    s.feed(_line("partial"))
    out = s.feed({"error": "an error was encountered while running the model: CUDA out of memory"})
    assert out == [{"error": {"message": "an error was encountered while running the model: CUDA out of memory",
                              "type": "api_error", "param": None, "code": None}}]
    assert s.finish() == []


def test_error_as_the_very_first_line_yields_only_the_error_chunk() -> None:
    assert [set(item) for item in _stream().feed({"error": "boom"})] == [{"error"}]


def test_body_ending_without_done_is_an_error_chunk_without_done_marker() -> None:
    s = _stream()
    s.feed(_line("partial"))
    out = s.finish()
    assert len(out) == 1 and out[0]["error"]["type"] == "api_error"
    assert "done" in out[0]["error"]["message"]


def test_empty_body_is_an_error_chunk() -> None:
    assert list(_stream().finish()[0]) == ["error"]


@pytest.mark.parametrize("after", ["done", "error"])
def test_anything_after_the_end_is_a_translation_error(after: str) -> None:
    s = _stream()
    s.feed(_line(done=True) if after == "done" else {"error": "x"})
    with pytest.raises(TranslationError):
        s.feed(_line("late"))
    with pytest.raises(TranslationError):  # and the machine stays broken
        s.finish()


def test_finish_twice_is_a_translation_error() -> None:
    s = _stream()
    s.feed(_line(done=True))
    s.finish()
    with pytest.raises(TranslationError):
        s.finish()


@pytest.mark.parametrize(
    "bad",
    [
        ["not", "an", "object"],
        {"message": "text", "done": False},
        {"message": {"role": "assistant", "content": ["x"]}, "done": False},
        {"message": {"role": "assistant", "tool_calls": [{"function": {}}]}, "done": False},
        {"message": {"role": "assistant", "content": ""}, "done": True, "eval_count": -1},
    ],
)
def test_malformed_lines_raise_and_break_the_machine(bad: Any) -> None:
    s = _stream()
    with pytest.raises(TranslationError):
        s.feed(bad)
    with pytest.raises(TranslationError):
        s.feed(_line("ok"))


# --------------------------------------------------------------------------- errors


def test_error_body_keeps_status_and_message_in_both_client_protocols() -> None:
    err = error_from_ollama(400, {"error": "registry.ollama.ai/library/gemma:2b does not support tools"})
    assert (err.status, err.message) == (400, "registry.ollama.ai/library/gemma:2b does not support tools")
    assert openai_error_body(err)["error"]["type"] == "invalid_request_error"
    assert anthropic_error_body(err)["error"]["type"] == "invalid_request_error"


def test_model_not_found_keeps_404_and_names_the_model() -> None:
    err = error_from_ollama(404, {"error": "model \"llama9\" not found, try pulling it first"}, model="llama9")
    assert (err.status, err.message) == (404, "model \"llama9\" not found, try pulling it first")
    assert openai_error_body(err)["error"]["type"] == "not_found_error"
    assert anthropic_error_body(err)["error"]["type"] == "not_found_error"
    bare = error_from_ollama(404, "404 page not found", model="llama9")
    assert bare.status == 404 and "'llama9'" in bare.message and "404 page not found" in bare.message


@pytest.mark.parametrize(
    ("status", "body", "message", "anthropic_type"),
    [
        (500, {"error": "llama runner process has terminated"}, "llama runner process has terminated", "api_error"),
        (503, None, "Ollama returned HTTP 503", "overloaded_error"),
        (429, {"error": {"message": "too many"}}, "too many", "rate_limit_error"),
        (502, "", "Ollama returned HTTP 502", "api_error"),
    ],
)
def test_other_statuses(status: int, body: Any, message: str, anthropic_type: str) -> None:
    err = error_from_ollama(status, body)
    assert (err.status, err.message) == (status, message)
    assert anthropic_error_body(err)["error"]["type"] == anthropic_type


def test_a_model_that_cannot_think_is_retried_without_think() -> None:
    sent = _req(reasoning_effort="high", max_tokens=9)
    refusal = error_from_ollama(400, {"error": "\"llama3.2\" does not support thinking"})
    assert request_without_think(sent, refusal) == {k: v for k, v in sent.items() if k != "think"}
    assert request_without_think(_req(), refusal) is None  # nothing to take away: no retry loop
    assert request_without_think(sent, error_from_ollama(400, {"error": "\"x\" does not support tools"})) is None
    assert request_without_think(sent, error_from_ollama(500, {"error": "does not support thinking"})) is None


# --------------------------------------------------------------------------- robustness (fuzzed)

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 3) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
def _mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values seven times in eight, anything JSON otherwise."""
    return st.one_of(*[valid] * 7, _json)


_parts = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": _mostly(st.text(max_size=4))}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": _mostly(st.fixed_dictionaries({
        "url": st.sampled_from([f"data:image/png;base64,{PNG}", f"data:;base64,{PNG}", "data:,x", "https://x/y.png"]),
    }))}),
    st.dictionaries(st.sampled_from(["type", "refusal", "text"]), _mostly(st.sampled_from(["refusal", "input_audio"]))),
), max_size=3)
_calls = st.lists(st.fixed_dictionaries({"function": _mostly(st.fixed_dictionaries({
    "name": _mostly(st.sampled_from(["f", "g"])),
    "arguments": _mostly(st.sampled_from(["{}", "{\"a\": [1]}", "", "[", "2"])),
}))}, optional={"id": _mostly(st.sampled_from(["c1", "c2"])), "type": st.sampled_from(["function", "custom"])}),
    max_size=2)
_messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "user", "assistant", "assistant", "tool", 7])},
    optional={
        "content": _mostly(st.none() | st.text(max_size=5) | _parts),
        "tool_calls": _mostly(_calls),
        "tool_call_id": _mostly(st.sampled_from(["c1", "c2", "zz"])),
        "reasoning_content": _mostly(st.text(max_size=3)),
        "name": st.text(max_size=3),
    },
), min_size=1, max_size=4)
_bodies = st.fixed_dictionaries({"messages": st.one_of(*[_messages] * 7, _json)}, optional={
    "stream": st.sampled_from([True, False, None, "yes"]),
    "tools": _mostly(st.lists(st.sampled_from([WEATHER, TIME, TIME, {"type": "custom"}]), max_size=2)),
    "tool_choice": _mostly(st.sampled_from(
        ["auto", "none", "required", {"type": "function", "function": {"name": "get_time"}}])),
    "max_tokens": _mostly(st.integers(1, 9)),
    "temperature": _mostly(st.floats(0, 2)),
    "seed": _mostly(st.integers()),
    "stop": _mostly(st.text(max_size=2) | st.lists(st.text(max_size=2), max_size=2)),
    "n": st.sampled_from([1, 1, 1, 2]),
    "response_format": _mostly(st.sampled_from([{"type": "json_object"}, {"type": "text"}])),
    "reasoning_effort": _mostly(st.sampled_from(["none", "minimal", "high", "max"])),
    "logprobs": st.sampled_from([False, False, False, True]),
})


@settings(max_examples=100, deadline=None)
@given(body=_bodies)
def test_any_request_translates_or_is_a_400_naming_a_field(body: dict[str, Any]) -> None:
    try:
        out = request_to_ollama(body, model="m")
    except ProxyError as err:
        assert err.status == 400 and isinstance(err.param, str) and err.message
        return
    assert isinstance(out["stream"], bool) and out["model"] == "m"
    json.dumps(out)  # a sendable body
    for message in out["messages"]:
        assert message["role"] in ("system", "user", "assistant", "tool") and isinstance(message["content"], str)
        for call in message.get("tool_calls", []):
            assert isinstance(call["function"]["arguments"], dict)


_lines = st.lists(
    st.fixed_dictionaries({}, optional={
        "message": st.fixed_dictionaries({}, optional={
            "content": st.text(max_size=3) | _json, "thinking": st.text(max_size=3) | _json,
            "tool_calls": st.lists(st.fixed_dictionaries({"function": st.fixed_dictionaries(
                {"name": st.sampled_from(["f", ""]) | _json}, optional={"arguments": _json})}), max_size=2) | _json,
        }) | _json,
        "done": st.booleans() | _json, "done_reason": st.sampled_from(["stop", "length"]) | _json,
        "eval_count": st.integers(0, 9) | _json, "error": st.text(max_size=5) | _json,
    }) | _json,
    max_size=5,
)


@settings(max_examples=100, deadline=None)
@given(lines=_lines, include_usage=st.booleans())
def test_any_line_sequence_gives_a_well_formed_stream_or_a_translation_error(
    lines: list[Any], include_usage: bool
) -> None:
    s = _stream(include_usage)
    out: list[Any] = []
    try:
        for line in lines:
            out += s.feed(line)
        out += s.finish()
    except TranslationError:
        pass
    ends = [i for i, item in enumerate(out) if item == "[DONE]" or "error" in item]
    assert ends in ([], [len(out) - 1])  # at most one ending, and nothing after it
    for item in out:
        if item != "[DONE]" and "error" not in item:
            ChatCompletionChunk.model_validate(item)


# --------------------------------------------------------------------------- golden transcripts


def _fixture_paths() -> list[pathlib.Path]:
    return sorted(FIXTURES.glob("*.json"))


def test_golden_transcripts_exist() -> None:
    assert len(_fixture_paths()) >= 7


@pytest.mark.parametrize("path", _fixture_paths(), ids=lambda p: p.stem)
def test_golden_transcript(path: pathlib.Path) -> None:
    fx = json.loads(path.read_text())
    client, upstream = fx["client_request"], fx["upstream_request"]
    assert request_to_ollama(client, model=upstream["model"]) == upstream
    if "upstream_events" in fx:
        include_usage = bool((client.get("stream_options") or {}).get("include_usage"))
        s = OllamaToOpenAIStream(model=client["model"], created=GOLDEN_CREATED, completion_id=GOLDEN_ID,
                                 include_usage=include_usage)
        out = [item for line in fx["upstream_events"] for item in s.feed(line)] + s.finish()
        assert out == fx["client_events"]
        for item in out:
            if isinstance(item, dict) and "error" not in item:
                ChatCompletionChunk.model_validate(item)
    if "upstream_response" in fx:
        got = response_from_ollama(fx["upstream_response"], model=client["model"], created=GOLDEN_CREATED,
                                   completion_id=GOLDEN_ID)
        assert got == fx["client_response"]
        ChatCompletion.model_validate(got)


@pytest.mark.parametrize("path", [p for p in _fixture_paths() if "upstream_events" in p.read_text()],
                         ids=lambda p: p.stem)
def test_golden_stream_from_ndjson_bytes_fed_one_byte_at_a_time(path: pathlib.Path) -> None:
    # The adapter's real pipeline: NDJSON bytes in any network split -> decoder -> translator.
    fx = json.loads(path.read_text())
    client = fx["client_request"]
    body = b"".join(encode_ndjson(line) for line in fx["upstream_events"])
    decoder = NDJSONDecoder()
    s = OllamaToOpenAIStream(model=client["model"], created=GOLDEN_CREATED, completion_id=GOLDEN_ID,
                             include_usage=bool((client.get("stream_options") or {}).get("include_usage")))
    out = [item for i in range(len(body)) for line in decoder.feed(body[i : i + 1]) for item in s.feed(line)]
    out += [item for line in decoder.finish() for item in s.feed(line)] + s.finish()
    assert out == fx["client_events"]
