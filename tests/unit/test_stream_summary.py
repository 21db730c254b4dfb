"""Reassembling a stream for the log: the same answer as the non-streamed body, at any split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.relay import StreamRelay
from core.sse import SSEDecoder
from core.stream_summary import (
    ResponseSummary,
    StreamSummary,
    ToolCall,
    Usage,
    summarize_response,
    usage_from_anthropic,
    usage_from_openai,
    usage_in_body,
)
from core.transforms import EMPTY_TRANSFORMS
from core.translate.anthropic_backend import AnthropicToOpenAIStream

FIXTURES = Path(__file__).parent.parent / "fixtures"
# Fixture folder -> (upstream protocol, client protocol).
DIRECTIONS = {
    "anthropic_to_openai": ("openai", "anthropic"),
    "openai_to_anthropic": ("anthropic", "openai"),
    "ollama": ("ollama", "openai"),
}
STREAMED = sorted(p for p in FIXTURES.glob("*/*.json") if "upstream_events" in json.loads(p.read_text()))
WITH_BODIES = [p for p in STREAMED if "upstream_response" in json.loads(p.read_text())]


def wire(protocol: str, events: list[Any]) -> bytes:
    """Events as their wire bytes: SSE (OpenAI data-only, Anthropic named) or NDJSON."""
    out = []
    for event in events:
        if protocol == "ollama":
            out.append(json.dumps(event).encode() + b"\n")
        elif event == "[DONE]":
            out.append(b"data: [DONE]\n\n")
        elif protocol == "anthropic":
            out.append(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        else:
            out.append(f"data: {json.dumps(event)}\n\n".encode())
    return b"".join(out)


def summarize(protocol: str, data: bytes, cuts: list[int] = (), **options: Any) -> ResponseSummary:
    summary = StreamSummary(protocol, **options)
    points = sorted({c % (len(data) + 1) for c in cuts})
    for start, end in zip([0, *points], [*points, len(data)]):
        summary.feed_bytes(data[start:end])
    return summary.result()


def fixture(path: Path) -> tuple[dict[str, Any], str, str]:
    upstream, client = DIRECTIONS[path.parent.name]
    return json.loads(path.read_text()), upstream, client


def what_was_said(summary: ResponseSummary) -> tuple[Any, ...]:
    calls = [(call.name, call.arguments) for call in summary.tool_calls]
    return summary.text, summary.reasoning, calls, summary.finish_reason


# -- golden transcripts ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", WITH_BODIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_stream_summarizes_to_what_the_whole_body_says(path: Path) -> None:
    data, upstream, client = fixture(path)
    for protocol, events, body in ((upstream, data["upstream_events"], data["upstream_response"]),
                                   (client, data["client_events"], data["client_response"])):
        streamed = summarize(protocol, wire(protocol, events))
        whole = summarize_response(protocol, body)
        assert what_was_said(streamed) == what_was_said(whole)
        assert streamed.complete and streamed.error is None and streamed.malformed == 0
        if streamed.usage.known:  # an OpenAI stream has usage only if the client asked for it
            assert streamed.usage == whole.usage


@pytest.mark.parametrize("path", STREAMED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_upstream_and_client_streams_tell_the_same_story(path: Path) -> None:
    data, upstream, client = fixture(path)
    up = summarize(upstream, wire(upstream, data["upstream_events"]))
    down = summarize(client, wire(client, data["client_events"]))
    assert (up.text, up.reasoning) == (down.text, down.reasoning)
    skipped_server_tools = {"web_search"}  # an OpenAI client never sees Anthropic server tools
    assert [(c.name, c.arguments) for c in down.tool_calls] == [
        (c.name, c.arguments) for c in up.tool_calls if not (client == "openai" and c.name in skipped_server_tools)]
    assert down.chunks == len(data["client_events"])


@settings(max_examples=40, deadline=None)
@given(index=st.integers(min_value=0, max_value=len(STREAMED) - 1),
       cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=12))
def test_any_split_of_the_bytes_gives_the_same_summary(index: int, cuts: list[int]) -> None:
    data, upstream, client = fixture(STREAMED[index])
    for protocol, events in ((upstream, data["upstream_events"]), (client, data["client_events"])):
        raw = wire(protocol, events)
        assert summarize(protocol, raw, cuts) == summarize(protocol, raw)


@pytest.mark.parametrize("path", STREAMED[:6], ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_one_byte_at_a_time(path: Path) -> None:
    data, upstream, _ = fixture(path)
    raw = wire(upstream, data["upstream_events"])
    assert summarize(upstream, raw, list(range(len(raw)))) == summarize(upstream, raw)


@pytest.mark.parametrize("path", STREAMED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_metadata_only_keeps_usage_stop_reason_errors_and_counts(path: Path) -> None:
    data, upstream, client = fixture(path)
    for protocol, events in ((upstream, data["upstream_events"]), (client, data["client_events"])):
        full = summarize(protocol, wire(protocol, events))
        lean = summarize(protocol, wire(protocol, events), content=False)
        assert (lean.text, lean.reasoning, lean.tool_calls) == ("", "", ())
        assert (lean.usage, lean.finish_reason, lean.chunks, lean.complete, lean.error) == (
            full.usage, full.finish_reason, full.chunks, full.complete, full.error)


# -- the relay's own output -------------------------------------------------------------------------


def test_summary_of_the_bytes_the_relay_sends_an_openai_client() -> None:
    data = json.loads((FIXTURES / "openai_to_anthropic" / "usage_with_cache_tokens.json").read_text())
    relay = StreamRelay(client="openai", wire="anthropic", decoder=SSEDecoder(), transforms=EMPTY_TRANSFORMS.response,
                        translators=[AnthropicToOpenAIStream(model="gpt-4o", created=1, message_id="msg_1",
                                                             include_usage=True)])
    client_summary = StreamSummary("openai")
    for piece in (wire("anthropic", [event]) for event in data["upstream_events"]):
        client_summary.feed_bytes(relay.feed(piece))
    client_summary.feed_bytes(relay.finish())
    result = client_summary.result()
    assert result.text == "It starts the server." and result.finish_reason == "stop" and result.complete
    assert result.usage == Usage(prompt_tokens=20012, completion_tokens=55, cache_read_tokens=18000,
                                 cache_write_tokens=2000)
    assert result.chunks == relay.events


# -- hand-made cases ----------------------------------------------------------------------------------


def test_openai_tool_call_fragments_reassemble_by_index() -> None:
    # protocols.md §1.4: id and name only on the first fragment; arguments spread over several.
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\":"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                                            "function": {"name": "lookup", "arguments": "{}"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"cat\"}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        "[DONE]",
    ]
    result = summarize("openai", wire("openai", chunks))
    assert result.tool_calls == (ToolCall("call_1", "lookup", {"q": "cat"}), ToolCall("call_2", "lookup", {}))
    assert result.finish_reason == "tool_calls" and result.complete


def test_unparseable_tool_arguments_are_kept_as_text() -> None:
    chunks = [{"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "c", "function": {"name": "f", "arguments": "{not json"}}]}}]}]
    assert summarize("openai", wire("openai", chunks)).tool_calls[0].arguments == "{not json"


def test_a_cut_stream_is_summarized_as_incomplete() -> None:
    raw = wire("anthropic", [
        {"type": "message_start", "message": {"usage": {"input_tokens": 7, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Once upon"}},
    ])
    result = summarize("anthropic", raw[:-5])  # the last event never finished arriving
    # The SSE decoder hands over a last unterminated event: its JSON is cut short.
    assert result.text == "" and not result.complete and result.malformed == 1
    assert result.usage.prompt_tokens == 7
    assert summarize("anthropic", raw).text == "Once upon"


def test_the_last_event_without_its_blank_line_still_counts() -> None:
    raw = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]'
    result = summarize("openai", raw)
    assert result.text == "hi" and result.complete


def test_error_events_are_kept() -> None:
    openai = summarize("openai", b'data: {"error":{"message":"boom","type":"server_error"}}\n\n')
    anthropic = summarize("anthropic", b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
                                       b'"message":"Overloaded"}}\n\n')
    ollama = summarize("ollama", b'{"error":"model runner stopped"}\n')
    assert openai.error == {"type": "server_error", "message": "boom"}
    assert anthropic.error == {"type": "overloaded_error", "message": "Overloaded"}
    assert ollama.error == {"type": None, "message": "model runner stopped"}


def test_garbage_is_counted_never_raised() -> None:
    assert summarize("openai", b"data: {not json\n\ndata: [1,2]\n\n").malformed == 2
    broken = summarize("ollama", b'{"message":{"content":"a"}}\nnot json\n{"message":{"content":"b"}}\n')
    assert broken.text == "ab" and broken.malformed == 1 and broken.chunks == 3


def test_text_budget_truncates_and_says_so() -> None:
    chunks = [{"choices": [{"index": 0, "delta": {"content": "abcdef"}}]} for _ in range(3)]
    result = summarize("openai", wire("openai", chunks), max_text_chars=10)
    assert result.text == "abcdefabcd" and result.truncated


def test_only_the_first_choice_is_reassembled() -> None:
    chunk = {"choices": [{"index": 1, "delta": {"content": "other"}}, {"index": 0, "delta": {"content": "main"}}]}
    assert summarize("openai", wire("openai", [chunk])).text == "main"


def test_feed_item_takes_decoded_events() -> None:
    summary = StreamSummary("openai")
    summary.feed_item({"choices": [{"index": 0, "delta": {"content": "x"}}]})
    summary.feed_item("[DONE]")
    result = summary.result()
    assert (result.text, result.complete, result.chunks) == ("x", True, 2)


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError):
        StreamSummary("gemini")  # type: ignore[arg-type]


# -- usage normalisation (protocols.md §3.6, §6.2) ------------------------------------------------------


def test_anthropic_usage_counts_cache_in_the_prompt() -> None:
    usage = usage_from_anthropic({"input_tokens": 12, "cache_creation_input_tokens": 2000,
                                  "cache_read_input_tokens": 18000, "output_tokens": 55})
    assert usage == Usage(prompt_tokens=20012, completion_tokens=55, cache_read_tokens=18000, cache_write_tokens=2000)


def test_openai_usage_keeps_prompt_tokens_and_reads_cache_details() -> None:
    usage = usage_from_openai({"prompt_tokens": 120, "completion_tokens": 18,
                               "prompt_tokens_details": {"cached_tokens": 64}})
    assert usage == Usage(prompt_tokens=120, completion_tokens=18, cache_read_tokens=64)


def test_nonsense_usage_values_are_ignored() -> None:
    assert usage_from_openai({"prompt_tokens": "12", "completion_tokens": True}) == Usage()
    assert usage_from_openai(None) is None


def test_summary_as_dict_is_json() -> None:
    result = summarize("openai", wire("openai", [{"choices": [{"index": 0, "delta": {"content": "x"}}]}]))
    assert json.loads(json.dumps(result.as_dict()))["text"] == "x"


# -- usage of a whole body, without parsing it all ---------------------------------------------------

_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
_COUNT = st.integers(min_value=0, max_value=10**6)


@settings(max_examples=150)
@given(text=_TEXT, prompt=_COUNT, completion=_COUNT, usage_first=st.booleans(), spaced=st.booleans())
def test_usage_in_an_openai_body_agrees_with_the_full_parse(text, prompt, completion, usage_first, spaced):
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": 3}}
    rest = {"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": f'{text} "usage": {{"prompt_tokens": 999}}'}}]}
    body = {"usage": usage, **rest} if usage_first else {**rest, "usage": usage}
    raw = json.dumps(body, separators=None if spaced else (",", ":"), ensure_ascii=False).encode()
    assert usage_in_body("openai", raw) == summarize_response("openai", json.loads(raw)).usage


@given(text=_TEXT, fresh=_COUNT, read=_COUNT, output=_COUNT)
def test_usage_in_an_anthropic_body_agrees_with_the_full_parse(text, fresh, read, output):
    body = {"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "usage": {"input_tokens": fresh, "cache_read_input_tokens": read,
                                                 "cache_creation_input_tokens": 0, "output_tokens": output}}
    raw = json.dumps(body).encode()
    assert usage_in_body("anthropic", raw) == summarize_response("anthropic", body).usage


@pytest.mark.parametrize("raw", [b'{"id":"c1","choices":[]}', b'{"usage":null}', b'{"usage":{"x":1}}',
                                 b'{"usage":{"prompt_tokens":1', b"not json", b""])
def test_no_readable_usage_means_none_so_the_caller_parses_the_whole_body(raw):
    assert usage_in_body("openai", raw) is None


@given(st.lists(st.one_of(st.none(), st.integers(0, 10**6)), min_size=4, max_size=4))
def test_usage_is_known_when_any_count_is(counts: list[int | None]) -> None:
    assert Usage(*counts).known == any(count is not None for count in counts)
