"""request_to_openai: Anthropic Messages request -> OpenAI chat request (table tests).

Inputs follow the shapes of real client captures (Claude Code 2.1.197,
anthropic-python 2.14); the Claude Code request is the one in the golden file
tests/fixtures/anthropic_to_openai/claude_code_tool_round_trip.json.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import ProxyError
from core.translate.openai_backend import RAW_ARGUMENTS_KEY, TOOL_ERROR_PREFIX, request_to_openai

CLAUDE_CODE_FIXTURE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "anthropic_to_openai" / "claude_code_tool_round_trip.json"
)
WEATHER = {
    "name": "get_weather",
    "description": "Get weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CLAUDE_CODE_USER_ID = json.dumps(
    {
        "device_id": "b1fda628171b9c1cdb75947d4a5ddc0f913a9cacb868ad5dba9f10a604a66b7f",
        "account_uuid": "",
        "session_id": "035b9a83-a8b9-47fa-854a-2256c1591726",
    },
    separators=(",", ":"),
)


def translate(**fields: Any) -> dict[str, Any]:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]} | fields
    return request_to_openai(body, model="gpt-4o")


def messages_of(*messages: dict[str, Any], **fields: Any) -> list[dict[str, Any]]:
    return translate(messages=list(messages), **fields)["messages"]


def rejected(**fields: Any) -> ProxyError:
    with pytest.raises(ProxyError) as info:
        translate(**fields)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    return info.value


# -- whole requests ---------------------------------------------------------------------------


def test_anthropic_sdk_create_with_system_string():
    body = {
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "say hi"}],
        "model": "claude-sonnet-4-5",
        "system": "be brief",
    }
    assert request_to_openai(body, model="gpt-4o-mini") == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hi"}],
        "max_tokens": 100,
    }


def test_claude_code_second_turn(claude_code_body):
    out = request_to_openai(claude_code_body, model="gpt-4o")
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "tool"]
    assert out["messages"][0]["content"].count("\n") == 2  # three system blocks in one string
    assert out["messages"][2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "toolu_9bbfeaa96ce943b8875f",
                "type": "function",
                "function": {"name": "Read", "arguments": '{"file_path":"/tmp/clients/hello.txt"}'},
            }
        ],
    }
    assert out["messages"][3] == {
        "role": "tool",
        "tool_call_id": "toolu_9bbfeaa96ce943b8875f",
        "content": "1\thello file contents\n2\t",
    }
    assert [t["function"]["name"] for t in out["tools"]] == ["Bash", "Edit", "Read"]
    assert out["max_tokens"] == 32000 and out["reasoning_effort"] == "high"
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert len(out["user"]) == 64
    assert "cache_control" not in json.dumps(out) and "context_management" not in out and "thinking" not in out


@pytest.fixture
def claude_code_body() -> dict[str, Any]:
    """Claude Code 2.1.197's second request of a tool round trip (tools trimmed to 3 of 24)."""
    return json.loads(CLAUDE_CODE_FIXTURE.read_text(encoding="utf-8"))["client_request"]


# -- system -----------------------------------------------------------------------------------


def test_system_blocks_join_into_one_first_message_and_skip_empty_ones():
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197"},
        {"type": "text", "text": ""},
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
    ]
    assert messages_of({"role": "user", "content": "hi"}, system=system)[0] == {
        "role": "system",
        "content": "x-anthropic-billing-header: cc_version=2.1.197\nYou are Claude Code.",
    }


def test_system_role_inside_messages_stays_at_its_position():
    out = messages_of(
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "system", "content": [{"type": "text", "text": "The user switched to plan mode."}]},
        {"role": "user", "content": "plan it"},
        system="base",
    )
    assert [(m["role"], m["content"]) for m in out] == [
        ("system", "base"),
        ("user", "hi"),
        ("assistant", "hello"),
        ("system", "The user switched to plan mode."),
        ("user", "plan it"),
    ]


def test_mid_conv_system_block_splits_the_user_turn():
    content = [
        {"type": "text", "text": "before"},
        {"type": "mid_conv_system", "content": [{"type": "text", "text": "reminder"}]},
        {"type": "text", "text": "after"},
    ]
    assert messages_of({"role": "user", "content": content}) == [
        {"role": "user", "content": [{"type": "text", "text": "before"}]},
        {"role": "system", "content": "reminder"},
        {"role": "user", "content": [{"type": "text", "text": "after"}]},
    ]


def test_mid_conv_system_block_in_an_assistant_turn_goes_before_it():
    content = [{"type": "mid_conv_system", "content": "note"}, {"type": "text", "text": "ok"}]
    assert messages_of({"role": "assistant", "content": content}) == [
        {"role": "system", "content": "note"},
        {"role": "assistant", "content": "ok"},
    ]


# -- user content -----------------------------------------------------------------------------


def test_images_become_image_url_parts():
    content = [
        {"type": "text", "text": "What's in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    assert messages_of({"role": "user", "content": content})[0]["content"] == [
        {"type": "text", "text": "What's in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]


def test_documents_become_file_and_text_parts():
    content = [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
            "title": "spec.pdf",
        },
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain notes"}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "chunk"}]}},
    ]
    assert messages_of({"role": "user", "content": content})[0]["content"] == [
        {"type": "file", "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
        {"type": "text", "text": "plain notes"},
        {"type": "text", "text": "chunk"},
    ]


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image", "source": {"type": "file", "file_id": "file_011"}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
        {"type": "search_result", "source": "https://x", "title": "t", "content": [{"type": "text", "text": "c"}]},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        {"type": "text", "text": 7},
    ],
    ids=["image-file-id", "document-url", "unknown-block", "tool_use-in-user-turn", "non-string-text"],
)
def test_user_blocks_an_openai_backend_cannot_take_are_rejected(block):
    err = rejected(messages=[{"role": "user", "content": [block]}])
    assert err.param.startswith("messages.0.content.0")


# -- tool results -----------------------------------------------------------------------------


def test_tool_results_come_first_as_tool_messages_then_the_rest_of_the_turn():
    content = [
        {"type": "text", "text": "here you go"},
        {"type": "tool_result", "tool_use_id": "toolu_A", "content": "21C"},
        {
            "type": "tool_result",
            "tool_use_id": "toolu_B",
            "content": [{"type": "text", "text": "line 1"}, {"type": "text", "text": "line 2"}],
        },
    ]
    assert messages_of({"role": "user", "content": content}) == [
        {"role": "tool", "tool_call_id": "toolu_A", "content": "21C"},
        {"role": "tool", "tool_call_id": "toolu_B", "content": "line 1\nline 2"},
        {"role": "user", "content": [{"type": "text", "text": "here you go"}]},
    ]


def test_tool_result_with_an_image_is_an_array_of_parts():
    content = [
        {"type": "text", "text": "screenshot:"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}},
    ]
    out = messages_of(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": content}]}
    )
    assert out == [
        {
            "role": "tool",
            "tool_call_id": "toolu_1",
            "content": [
                {"type": "text", "text": "screenshot:"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
            ],
        }
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "<tool_use_error>File does not exist.</tool_use_error>",
            TOOL_ERROR_PREFIX + "<tool_use_error>File does not exist.</tool_use_error>",
        ),
        ([{"type": "text", "text": "exit code 1"}], TOOL_ERROR_PREFIX + "exit code 1"),
        (None, TOOL_ERROR_PREFIX),
    ],
)
def test_tool_error_is_visible_in_the_content(content, expected):
    block = {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True} | (
        {"content": content} if content is not None else {}
    )
    assert messages_of({"role": "user", "content": [block]})[0]["content"] == expected


def test_tool_result_without_an_id_is_rejected():
    err = rejected(messages=[{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}])
    assert err.param == "messages.0.content.0.tool_use_id"


# -- assistant turns --------------------------------------------------------------------------


def test_assistant_text_and_tool_use_make_one_message():
    content = [
        {"type": "text", "text": "Let me check."},
        {
            "id": "toolu_1bb392fe3966444f9803",
            "caller": None,
            "input": {"city": "Paris"},
            "name": "get_weather",
            "type": "tool_use",
            "toolset_name": None,
        },
        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Zürich"}},
    ]
    assert messages_of({"role": "assistant", "content": content}) == [
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_1bb392fe3966444f9803",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Zürich"}'},
                },
            ],
        }
    ]


def test_thinking_blocks_become_reasoning_content_and_kept_thinking_blocks():
    content = [
        {"type": "thinking", "thinking": "The user wants a file.", "signature": "EuYBCkQ"},
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
        {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/a"}},
    ]
    (message,) = messages_of({"role": "assistant", "content": content})
    assert message["content"] is None
    assert message["reasoning_content"] == "The user wants a file."
    assert message["thinking_blocks"] == [
        {"type": "thinking", "thinking": "The user wants a file.", "signature": "EuYBCkQ"},
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
    ]


def test_empty_assistant_turn_has_empty_string_content():
    assert messages_of({"role": "assistant", "content": []}) == [{"role": "assistant", "content": ""}]


def test_raw_arguments_kept_by_the_response_translator_go_back_unchanged():
    block = {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {RAW_ARGUMENTS_KEY: '{"command": "ls'}}
    (message,) = messages_of({"role": "assistant", "content": [block]})
    assert message["tool_calls"][0]["function"]["arguments"] == '{"command": "ls'


@pytest.mark.parametrize(
    ("block", "param"),
    [
        ({"type": "tool_use", "name": "f", "input": {}}, "messages.0.content.0.id"),
        ({"type": "tool_use", "id": "t", "input": {}}, "messages.0.content.0.name"),
        ({"type": "tool_use", "id": "t", "name": "f", "input": "{}"}, "messages.0.content.0.input"),
        (
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
            "messages.0.content.0.type",
        ),
        ({"type": "tool_result", "tool_use_id": "t", "content": "x"}, "messages.0.content.0.type"),
    ],
)
def test_malformed_or_unservable_assistant_blocks_are_rejected(block, param):
    assert rejected(messages=[{"role": "assistant", "content": [block]}]).param == param


# -- roles and shapes -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["tool", "developer", "function", None])
def test_roles_other_than_user_assistant_system_are_rejected(role):
    err = rejected(messages=[{"role": "user", "content": "hi"}, {"role": role, "content": "x"}])
    assert err.param == "messages.1.role" and repr(role) in err.message


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": None}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
        ({"system": [{"type": "image", "source": {}}]}, "system.0.type"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"stream": "yes"}, "stream"),
        ({"tools": {"name": "f"}}, "tools"),
        ({"tools": [{"input_schema": {}}]}, "tools.0.name"),
        ({"tools": [{"name": "f", "input_schema": "object"}]}, "tools.0.input_schema"),
    ],
)
def test_malformed_fields_are_rejected_naming_the_field(fields, param):
    err = rejected(**fields)
    assert err.param == param and err.message.startswith(param)


def test_body_must_be_an_object():
    with pytest.raises(ProxyError):
        request_to_openai([], model="gpt-4o")  # type: ignore[arg-type]


# -- parameters -------------------------------------------------------------------------------


def test_sampling_parameters():
    out = translate(temperature=0.3, top_p=0.9, top_k=40, stop_sequences=["END", "\n\nHuman:"])
    assert (out["temperature"], out["top_p"], out["stop"]) == (0.3, 0.9, ["END", "\n\nHuman:"])
    assert "top_k" not in out


def test_absent_optional_parameters_are_not_invented():
    assert translate() == {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}


def test_function_tools_keep_schema_and_server_tools_are_dropped():
    tools = [
        WEATHER | {"cache_control": {"type": "ephemeral"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "custom", "name": "noop", "strict": True},
    ]
    assert translate(tools=tools)["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Get weather", "parameters": WEATHER["input_schema"]},
        },
        {
            "type": "function",
            "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}, "strict": True},
        },
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        ({"type": "auto", "disable_parallel_tool_use": True}, {"tool_choice": "auto", "parallel_tool_calls": False}),
        ({"type": "any", "disable_parallel_tool_use": True}, {"tool_choice": "required", "parallel_tool_calls": False}),
        (
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "parallel_tool_calls": False},
        ),
        ({"type": "none", "disable_parallel_tool_use": True}, {"tool_choice": "none"}),
    ],
)
def test_tool_choice_forms(choice, expected):
    out = translate(tools=[WEATHER], tool_choice=choice)
    assert {k: out[k] for k in ("tool_choice", "parallel_tool_calls") if k in out} == expected


def test_tool_choice_without_servable_tools():
    assert "tool_choice" not in translate(tool_choice={"type": "auto"})
    assert (
        rejected(tools=[{"type": "web_search_20250305", "name": "web_search"}], tool_choice={"type": "any"}).param
        == "tool_choice"
    )
    assert rejected(tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"}).param == "tool_choice.name"
    assert rejected(tools=[WEATHER], tool_choice={"type": "sometimes"}).param == "tool_choice.type"


@pytest.mark.parametrize(
    ("fields", "effort"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "low"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1025}}, "medium"),
        ({"thinking": {"type": "enabled", "budget_tokens": 8192}}, "medium"),
        ({"thinking": {"type": "enabled", "budget_tokens": 8193}}, "high"),
        ({"thinking": {"type": "enabled", "budget_tokens": 31999}}, "high"),
        ({"thinking": {"type": "adaptive"}}, "medium"),
        ({"thinking": {"type": "disabled"}}, None),
        ({}, None),
        ({"output_config": {"effort": "low"}}, "low"),
        ({"output_config": {"effort": "max"}}, "high"),
        ({"output_config": {"effort": "xhigh"}, "thinking": {"type": "enabled", "budget_tokens": 1024}}, "high"),
    ],
)
def test_thinking_and_effort_become_reasoning_effort(fields, effort):
    assert translate(**fields).get("reasoning_effort") == effort


def test_unknown_effort_is_rejected():
    assert rejected(output_config={"effort": "extreme"}).param == "output_config.effort"


def test_structured_output_becomes_response_format():
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": False,
    }
    expected = {"type": "json_schema", "json_schema": {"name": "structured_output", "schema": schema}}
    assert translate(output_config={"format": {"type": "json_schema", "schema": schema}})["response_format"] == expected
    assert translate(output_format={"type": "json_schema", "schema": schema})["response_format"] == expected
    assert rejected(output_config={"format": {"type": "xml"}}).param == "output_config.format"


def test_user_id_is_kept_when_short_and_hashed_to_64_chars_when_long():
    assert translate(metadata={"user_id": "u-123"})["user"] == "u-123"
    hashed = translate(metadata={"user_id": CLAUDE_CODE_USER_ID})["user"]
    assert len(CLAUDE_CODE_USER_ID) > 64 and len(hashed) == 64
    assert hashed == hashlib.sha256(CLAUDE_CODE_USER_ID.encode()).hexdigest()  # stable per user


def test_stream_asks_for_usage():
    assert translate(stream=True)["stream_options"] == {"include_usage": True}
    assert "stream" not in translate(stream=False) and "stream_options" not in translate(stream=False)


def test_the_input_body_is_not_modified(claude_code_body):
    before = json.dumps(claude_code_body, sort_keys=True)
    request_to_openai(claude_code_body, model="gpt-4o")
    assert json.dumps(claude_code_body, sort_keys=True) == before
