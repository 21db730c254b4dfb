"""OpenAIToAnthropicStream: OpenAI chunks in, Anthropic stream events out.

Reassembly uses the anthropic SDK's own accumulator (`accumulate_event`, what
`messages.stream(...).get_final_message()` runs), so "the client sees X" means
exactly that.  `assert_well_formed` checks the event grammar of protocols.md
§2.4 / §3.8 on every output; the fixture replay test imports both helpers.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import TranslationError
from core.translate.openai_backend import OpenAIToAnthropicStream, response_from_openai

MODEL = "claude-sonnet-4-5"
FALLBACK_ID = "msg_fallback"

_EMPTY_DELTA_FIELD = {
    "text_delta": "text",
    "thinking_delta": "thinking",
    "input_json_delta": "partial_json",
    "signature_delta": "signature",
}


def assert_well_formed(events: list[dict[str, Any]]) -> None:
    """The Anthropic stream grammar: message_start, strictly nested gap-free
    blocks, no empty deltas, message_delta + message_stop last; an error event
    is always the very last event."""
    names = [e["type"] for e in events]
    if "error" in names:
        assert names.index("error") == len(names) - 1, names
        assert set(events[-1]["error"]) == {"type", "message"}
        events = events[:-1]
    if not events:
        return
    assert names[0] == "message_start"
    assert names.count("message_start") == 1
    open_index, next_index, ended = None, 0, False
    for event in events[1:]:
        kind = event["type"]
        assert not ended or kind == "message_stop", f"{kind} after message_delta"
        if kind == "content_block_start":
            assert open_index is None and event["index"] == next_index
            open_index, next_index = next_index, next_index + 1
        elif kind == "content_block_delta":
            assert event["index"] == open_index
            field = _EMPTY_DELTA_FIELD[event["delta"]["type"]]
            assert event["delta"][field], f"empty delta {event}"
        elif kind == "content_block_stop":
            assert event["index"] == open_index
            open_index = None
        elif kind == "message_delta":
            assert open_index is None
            assert event["delta"]["stop_reason"] is not None
            ended = True
        else:
            assert kind == "message_stop" and ended, kind
    if ended:
        assert names[-1] == "message_stop"


def reassemble(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The final message the anthropic SDK builds from these events."""
    snapshot, json_bufs = None, {}
    for event in events:
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    message = snapshot.to_dict()
    message.pop("stop_details", None)
    return message


def run(items: list[Any], *, eof: bool = True, estimate: int = 0) -> list[dict[str, Any]]:
    stream = OpenAIToAnthropicStream(model=MODEL, message_id=FALLBACK_ID, input_tokens_estimate=estimate)
    out = [event for item in items for event in stream.feed(item)]
    if eof:
        out += stream.finish()
    assert_well_formed(out)
    return out


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """A chat.completion.chunk as OpenAI sends it (protocols.md §1.4)."""
    body = {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1732600000, "model": "gpt-4o"}
    body["choices"] = [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
    return body | extra


def usage_chunk(prompt: int = 9, completion: int = 2, cached: int = 0) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "chatcmpl-7", "object": "chat.completion.chunk", "choices": [], "usage": usage}


def tool_fragment(
    index: int | None, arguments: str, *, id: str | None = None, name: str | None = None
) -> dict[str, Any]:
    call: dict[str, Any] = {"function": {"arguments": arguments}}
    if index is not None:
        call["index"] = index
    if id is not None:
        call |= {"id": id, "type": "function"}
    if name is not None:
        call["function"]["name"] = name
    return chunk({"tool_calls": [call]})


ROLE = chunk({"role": "assistant", "content": "", "refusal": None})


# -- ordinary streams -------------------------------------------------------------------------


def test_text_stream_is_message_start_block_and_held_message_delta():
    events = run(
        [ROLE, chunk({"content": "Hel"}), chunk({"content": "lo"}), chunk(finish="stop"), usage_chunk(), "[DONE]"],
        estimate=12,
    )
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0]["message"]
    assert start["id"] == "msg_chatcmpl-7" and start["model"] == MODEL and start["usage"]["input_tokens"] == 12
    assert events[5]["usage"] == {
        "input_tokens": 9,
        "output_tokens": 2,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    message = reassemble(events)
    assert message["content"] == [{"type": "text", "text": "Hello"}]
    assert message["stop_reason"] == "end_turn"


def test_finish_reason_is_held_until_the_usage_chunk():
    stream = OpenAIToAnthropicStream(model=MODEL, message_id=FALLBACK_ID)
    stream.feed(chunk({"content": "hi"}))
    assert [e["type"] for e in stream.feed(chunk(finish="stop"))] == ["content_block_stop"]
    assert stream.feed({"id": "chatcmpl-7", "choices": []}) == []  # a keep-alive without usage ends nothing
    tail = stream.feed(usage_chunk(prompt=100, completion=5, cached=60))
    assert [e["type"] for e in tail] == ["message_delta", "message_stop"]
    assert tail[0]["usage"]["input_tokens"] == 40 and tail[0]["usage"]["cache_read_input_tokens"] == 60
    assert stream.feed("[DONE]") == []
    assert stream.finish() == []


def test_content_and_finish_reason_in_one_chunk_are_content_first():
    last = chunk({"content": "!"}, finish="stop", usage={"prompt_tokens": 3, "completion_tokens": 1})
    events = run([chunk({"content": "Hi"}), last, "[DONE]"])
    assert [e["type"] for e in events][-5:] == [
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert reassemble(events)["content"] == [{"type": "text", "text": "Hi!"}]
    assert events[-2]["usage"]["output_tokens"] == 1


def test_finish_then_end_of_body_without_done_is_complete():
    events = run([chunk({"content": "ok"}, finish="length")])
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"
    assert events[-1] == {"type": "message_stop"}


def test_no_usage_at_all_reports_the_estimate_and_zero_output():
    events = run([chunk({"content": "ok"}, finish="stop"), "[DONE]"], estimate=77)
    assert events[-2]["usage"] == {
        "input_tokens": 77,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_usage_without_prompt_tokens_keeps_the_estimate():
    events = run([chunk({"content": "ok"}, finish="stop", usage={"completion_tokens": 4}), "[DONE]"], estimate=77)
    assert (events[-2]["usage"]["input_tokens"], events[-2]["usage"]["output_tokens"]) == (77, 4)


def test_message_id_falls_back_when_the_upstream_has_none():
    events = run([{"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]}, "[DONE]"])
    assert events[0]["message"]["id"] == FALLBACK_ID


def test_role_only_and_empty_deltas_produce_no_blocks():
    events = run(
        [
            ROLE,
            chunk({"content": ""}),
            chunk({"content": None, "reasoning_content": ""}),
            chunk(finish="stop"),
            "[DONE]",
        ]
    )
    assert [e["type"] for e in events] == ["message_start", "message_delta", "message_stop"]


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        ("eos", "end_turn"),
    ],
)
def test_finish_reason_maps_to_stop_reason(finish, stop_reason):
    events = run([chunk({"content": "x"}), chunk(finish=finish), "[DONE]"])
    assert events[-2]["delta"] == {"stop_reason": stop_reason, "stop_sequence": None}


def test_refusal_delta_becomes_text_with_refusal_stop_reason():
    events = run([chunk({"refusal": "I can't help with that."}), chunk(finish="stop"), "[DONE]"])
    message = reassemble(events)
    assert message["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert message["stop_reason"] == "refusal"


# -- thinking ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_becomes_a_thinking_block_before_text(field):
    events = run(
        [chunk({field: "Let me "}), chunk({field: "think."}), chunk({"content": "42"}), chunk(finish="stop"), "[DONE]"]
    )
    assert events[1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert reassemble(events)["content"] == [
        {"type": "thinking", "thinking": "Let me think.", "signature": ""},
        {"type": "text", "text": "42"},
    ]


def test_litellm_thinking_block_signature_becomes_signature_delta_and_closes_the_block():
    signed = chunk(
        {"reasoning_content": "", "thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "EuYB"}]}
    )
    events = run(
        [
            chunk(
                {
                    "reasoning_content": "hmm",
                    "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": None}],
                }
            ),
            signed,
            chunk({"content": "hi"}),
            chunk(finish="stop"),
            "[DONE]",
        ]
    )
    assert [e["delta"]["type"] for e in events if e["type"] == "content_block_delta"] == [
        "thinking_delta",
        "signature_delta",
        "text_delta",
    ]
    assert reassemble(events)["content"][0] == {"type": "thinking", "thinking": "hmm", "signature": "EuYB"}


def test_redacted_thinking_block_is_restored():
    events = run(
        [
            chunk({"thinking_blocks": [{"type": "redacted_thinking", "data": "opaque"}]}),
            chunk({"content": "hi"}, finish="stop"),
            "[DONE]",
        ]
    )
    assert reassemble(events)["content"] == [
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "hi"},
    ]


# -- tool calls -------------------------------------------------------------------------------


def test_parallel_tool_calls_become_separate_blocks_with_running_indices():
    items = [
        chunk({"content": "Checking."}),
        tool_fragment(0, "", id="call_1", name="get_weather"),
        tool_fragment(0, '{"city":'),
        tool_fragment(0, '"Paris"}'),
        tool_fragment(1, "", id="call_2", name="get_weather"),
        tool_fragment(1, '{"city":"London"}'),
        chunk(finish="tool_calls"),
        usage_chunk(),
        "[DONE]",
    ]
    events = run(items)
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1, 2]
    message = reassemble(events)
    assert message["content"][1:] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "London"}},
    ]
    assert message["stop_reason"] == "tool_use"


def test_two_calls_in_one_chunk_with_whole_arguments():
    calls = [
        {
            "index": 0,
            "id": "call_a",
            "type": "function",
            "function": {"name": "Read", "arguments": '{"file_path":"/a"}'},
        },
        {
            "index": 1,
            "id": "call_b",
            "type": "function",
            "function": {"name": "Read", "arguments": '{"file_path":"/b"}'},
        },
    ]
    events = run([chunk({"tool_calls": calls}), chunk(finish="stop"), "[DONE]"])  # Ollama /v1 says "stop"
    message = reassemble(events)
    assert [b["input"] for b in message["content"]] == [{"file_path": "/a"}, {"file_path": "/b"}]
    assert message["stop_reason"] == "tool_use"


def test_missing_index_and_id_default_to_zero_and_a_synthesised_id():
    events = run(
        [tool_fragment(None, '{"q":1}', name="lookup"), tool_fragment(None, ""), chunk(finish="tool_calls"), "[DONE]"]
    )
    block = reassemble(events)["content"][0]
    assert block == {"type": "tool_use", "id": "toolu_msg_chatcmpl-7_0", "name": "lookup", "input": {"q": 1}}


def test_repeated_id_and_name_on_later_fragments_are_ignored():
    events = run(
        [
            tool_fragment(0, '{"a"', id="call_1", name="f"),
            tool_fragment(0, ":1}", id="call_1", name="f"),
            chunk(finish="tool_calls"),
            "[DONE]",
        ]
    )
    assert [e["type"] for e in events].count("content_block_start") == 1
    assert reassemble(events)["content"][0]["input"] == {"a": 1}


def test_tool_without_arguments_gets_an_empty_object_before_it_closes():
    events = run([tool_fragment(0, "", id="call_1", name="list_files"), chunk(finish="tool_calls"), "[DONE]"])
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert deltas == [{"type": "input_json_delta", "partial_json": "{}"}]


def test_arguments_are_forwarded_verbatim_never_reparsed():
    fragments = ['{"cmd": "echo \\"', 'hi\\" && ls', '"}']
    events = run(
        [
            tool_fragment(0, fragments[0], id="c", name="Bash"),
            tool_fragment(0, fragments[1]),
            tool_fragment(0, fragments[2]),
            chunk(finish="tool_calls"),
            "[DONE]",
        ]
    )
    assert [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"] == fragments
    assert reassemble(events)["content"][0]["input"] == {"cmd": 'echo "hi" && ls'}


def test_text_after_a_tool_call_opens_a_new_block():
    events = run(
        [tool_fragment(0, "{}", id="c", name="f"), chunk({"content": "done"}), chunk(finish="tool_calls"), "[DONE]"]
    )
    assert [b["type"] for b in reassemble(events)["content"]] == ["tool_use", "text"]


def test_length_with_a_cut_tool_call_reports_max_tokens():
    events = run([tool_fragment(0, '{"path": "/tm', id="c", name="Write"), chunk(finish="length"), "[DONE]"])
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"


def test_tool_call_continued_after_its_block_closed_is_an_error():
    stream = OpenAIToAnthropicStream(model=MODEL, message_id=FALLBACK_ID)
    stream.feed(tool_fragment(0, "{", id="c", name="f"))
    stream.feed(chunk({"content": "interlude"}))
    with pytest.raises(TranslationError):
        stream.feed(tool_fragment(0, "}"))


def test_tool_call_without_a_name_is_an_error():
    with pytest.raises(TranslationError, match="without a function name"):
        OpenAIToAnthropicStream(model=MODEL, message_id=FALLBACK_ID).feed(tool_fragment(0, "{}", id="c"))


# -- endings and failures ---------------------------------------------------------------------


def test_done_without_finish_reason_ends_normally_when_content_arrived():
    events = run([chunk({"content": "partial answer"}), "[DONE]"])
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    with_tool = run([tool_fragment(0, "{}", id="c", name="f"), "[DONE]"])
    assert with_tool[-2]["delta"]["stop_reason"] == "tool_use"


def test_done_without_any_content_or_finish_reason_is_an_error():
    events = run([ROLE, "[DONE]"])
    assert [e["type"] for e in events] == ["message_start", "error"]
    assert run(["[DONE]"]) == [
        {
            "type": "error",
            "error": {
                "type": "api_error",
                "message": "upstream stream ended with [DONE] before any content or finish_reason",
            },
        }
    ]


def test_truncated_body_is_an_error_event_and_nothing_else():
    events = run([chunk({"content": "The answer is"})])
    assert events[-1]["type"] == "error" and "no finish_reason" in events[-1]["error"]["message"]
    assert "message_stop" not in [e["type"] for e in events]


def test_empty_body_is_an_error_event():
    assert [e["type"] for e in run([])] == ["error"]


@pytest.mark.parametrize(
    ("error", "anthropic_type"),
    [
        (
            {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit_exceeded"},
            "rate_limit_error",
        ),
        ({"message": "The server had an error", "type": "server_error", "param": None, "code": None}, "api_error"),
        ({"message": "Overloaded", "type": "overloaded_error"}, "overloaded_error"),
        ("model crashed", "api_error"),  # Ollama-style string error
    ],
)
def test_error_chunk_becomes_one_error_event_and_nothing_after(error, anthropic_type):
    stream = OpenAIToAnthropicStream(model=MODEL, message_id=FALLBACK_ID)
    events = stream.feed(chunk({"content": "Hi"}))
    tail = stream.feed({"error": error})
    assert tail == [
        {
            "type": "error",
            "error": {"type": anthropic_type, "message": error["message"] if isinstance(error, dict) else error},
        }
    ]
    assert stream.feed("[DONE]") == [] and stream.feed(chunk({"content": "more"})) == [] and stream.finish() == []
    assert_well_formed(events + tail)


def test_finish_reason_error_is_a_failure():
    events = run([chunk({"content": "Hi"}), chunk(finish="error")])
    assert events[-1]["type"] == "error"


def test_error_before_anything_else_is_only_an_error_event():
    events = run([{"error": {"message": "bad key", "type": "authentication_error"}}])
    assert events == [{"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}]


@pytest.mark.parametrize(
    "late",
    [chunk({"content": "late"}), usage_chunk(), {"error": {"message": "x"}}],
    ids=["content", "usage", "error"],
)
def test_anything_after_the_end_is_an_error(late):
    stream = OpenAIToAnthropicStream(model=MODEL, message_id=FALLBACK_ID)
    for item in [chunk({"content": "x"}, finish="stop"), usage_chunk()]:
        stream.feed(item)
    with pytest.raises(TranslationError):
        stream.feed(late)


def test_done_twice_is_an_error():
    stream = OpenAIToAnthropicStream(model=MODEL, message_id=FALLBACK_ID)
    stream.feed(chunk({"content": "x"}, finish="stop"))
    stream.feed("[DONE]")
    with pytest.raises(TranslationError):
        stream.feed("[DONE]")


def test_content_after_finish_reason_is_an_error_but_empty_chunks_are_not():
    stream = OpenAIToAnthropicStream(model=MODEL, message_id=FALLBACK_ID)
    stream.feed(chunk({"content": "x"}, finish="stop"))
    assert stream.feed(chunk({}, finish="stop")) == []
    with pytest.raises(TranslationError, match="after finish_reason"):
        stream.feed(chunk({"content": "y"}))


@pytest.mark.parametrize(
    "bad",
    [
        "data: not json",
        ["not", "a", "chunk"],
        {"choices": {"index": 0}},
        {"choices": [{"index": 1, "delta": {"content": "second choice"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": {"index": 0}}}]},
    ],
    ids=["string", "list", "choices-object", "n>1", "tool_calls-object"],
)
def test_malformed_items_are_translation_errors(bad):
    with pytest.raises(TranslationError):
        OpenAIToAnthropicStream(model=MODEL, message_id=FALLBACK_ID).feed(bad)


# -- property: the stream reassembles to the non-streaming translation ------------------------

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=8),
)
_json_object = st.dictionaries(
    st.text(min_size=1, max_size=6),
    st.recursive(
        _json_leaf,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=6,
    ),
    max_size=4,
)


def _split(draw: Any, text: str) -> list[str]:
    """`text` cut at random points (pieces may be empty)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=4)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def _merge_some(draw: Any, deltas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Randomly merge neighbouring deltas into one chunk, as servers do (reasoning
    and text together, several tool-call fragments in one `tool_calls` list)."""
    merged: list[dict[str, Any]] = []
    for delta in deltas:
        last = merged[-1] if merged else None
        if last is not None and draw(st.booleans()):
            if set(delta) == set(last) == {"tool_calls"}:
                last["tool_calls"] = last["tool_calls"] + delta["tool_calls"]
                continue
            if not set(delta) & set(last) and "tool_calls" not in last:
                last.update(delta)
                continue
        merged.append(dict(delta))
    return merged


@st.composite
def upstream_answers(draw: Any) -> tuple[dict[str, Any], list[Any]]:
    """(a complete chat.completion, the equivalent chunk stream)."""
    upstream_id = draw(st.sampled_from(["chatcmpl-abc", None]))
    reasoning_key = draw(st.sampled_from(["reasoning_content", "reasoning"]))
    reasoning, text = draw(st.text(max_size=30)), draw(st.text(max_size=40))
    calls = []
    for i in range(draw(st.integers(0, 3))):
        args = draw(_json_object)
        arguments = (
            ""
            if not args and draw(st.booleans())
            else json.dumps(args, separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])))
        )
        call_id = draw(st.sampled_from([f"call_{i}x", None]))
        calls.append((call_id, draw(st.sampled_from(["Read", "Bash", "get_weather"])), arguments))
    finish = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter"]))
    usage = None
    if draw(st.booleans()):
        prompt = draw(st.integers(0, 10_000))
        usage = {"prompt_tokens": prompt, "completion_tokens": draw(st.integers(0, 5000))}
        usage["prompt_tokens_details"] = {"cached_tokens": draw(st.integers(0, prompt))}

    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if reasoning:
        message[reasoning_key] = reasoning
    if calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}} for cid, name, args in calls
        ]
    complete = {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    complete |= ({"id": upstream_id} if upstream_id else {}) | ({"usage": usage} if usage else {})

    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}] if draw(st.booleans()) else []
    deltas += [{reasoning_key: piece} for piece in _split(draw, reasoning)]
    deltas += [{"content": piece} for piece in _split(draw, text)]
    omit_index = len(calls) == 1 and draw(st.booleans())
    for i, (cid, name, args) in enumerate(calls):
        for n, piece in enumerate(_split(draw, args)):
            call: dict[str, Any] = {"function": {"arguments": piece}} | ({} if omit_index else {"index": i})
            if n == 0:
                call["function"]["name"] = name
                call |= {"type": "function"} | ({"id": cid} if cid else {})
            deltas.append({"tool_calls": [call]})
    deltas = _merge_some(draw, deltas)
    chunks = [
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": d, "finish_reason": None}]}
        for d in deltas
    ]
    if chunks and draw(st.booleans()):
        chunks[-1]["choices"][0]["finish_reason"] = finish  # content and finish in one chunk
    else:
        chunks.append(
            {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
        )
    if usage is not None:
        if draw(st.booleans()):
            chunks.append({"object": "chat.completion.chunk", "choices": [], "usage": usage})
        else:
            chunks[-1]["usage"] = usage
    if upstream_id:
        chunks = [c | {"id": upstream_id} for c in chunks]
    return complete, chunks + (["[DONE]"] if draw(st.booleans()) else [])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(upstream_answers())
def test_stream_reassembles_to_the_non_streaming_translation(answer):
    complete, chunks = answer
    events = run(chunks)
    assert events[-1]["type"] == "message_stop"
    expected = response_from_openai(complete, model=MODEL, message_id=FALLBACK_ID)
    assert reassemble(events) == expected
