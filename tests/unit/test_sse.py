"""SSE byte decoder and encoders (core/sse.py), against WHATWG HTML §9.2.6 / protocols.md §5.

Every decoding case is checked fed whole, one byte at a time and at
hypothesis-chosen split points: a network read may end anywhere.
"""

from __future__ import annotations

import json
import re

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.sse import (
    DONE,
    DONE_EVENT,
    SSEDecoder,
    ServerSentEvent,
    encode_comment,
    encode_event,
    encode_json,
)

E = ServerSentEvent


# -- feeding helpers ---------------------------------------------------------------------------


def feed_pieces(pieces: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.finish()


def split_at(raw: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({0, len(raw), *points})
    return [raw[a:b] for a, b in zip(cuts, cuts[1:])]


def bytewise(raw: bytes) -> list[bytes]:
    return [raw[i : i + 1] for i in range(len(raw))]


def decode_every_way(raw: bytes) -> list[ServerSentEvent]:
    """Decode whole and byte by byte; both must agree. Returns the events."""
    whole = feed_pieces([raw])
    assert feed_pieces(bytewise(raw)) == whole
    return whole


def split_points(raw: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(raw)), max_size=12)


# -- the rules, as a table -----------------------------------------------------------------------

RULES: list[tuple[str, bytes, list[ServerSentEvent]]] = [
    ("one event", b"data: hello\n\n", [E(data="hello")]),
    ("named event", b"event: ping\ndata: {}\n\n", [E(event="ping", data="{}")]),
    ("empty event name means message", b"event:\ndata: x\n\n", [E(data="x")]),
    ("event field without colon means message", b"event\ndata: x\n\n", [E(data="x")]),
    ("event name keeps what follows one space", b"event:  spaced \ndata: x\n\n", [E(event=" spaced ", data="x")]),
    ("multi-line data joined with LF", b"data: a\ndata: b\ndata: c\n\n", [E(data="a\nb\nc")]),
    ("empty data line still dispatches", b"data:\n\n", [E(data="")]),
    ("data without colon is an empty value", b"data\n\n", [E(data="")]),
    ("two empty data lines", b"data\ndata\n\n", [E(data="\n")]),
    ("exactly one leading space stripped", b"data:  two spaces\n\n", [E(data=" two spaces")]),
    ("no space after colon", b"data:tight\n\n", [E(data="tight")]),
    ("tab is not stripped", b"data:\tx\n\n", [E(data="\tx")]),
    ("trailing spaces kept", b"data: x  \n\n", [E(data="x  ")]),
    ("colons in the value kept", b"data: a:b::c\n\n", [E(data="a:b::c")]),
    ("value starting with a colon", b"data::x\n\n", [E(data=":x")]),
    ("comment ignored", b": keep-alive\n\ndata: x\n\n", [E(data="x")]),
    ("comment between data lines", b"data: a\n: tick\ndata: b\n\n", [E(data="a\nb")]),
    ("bare colon is a comment", b":\ndata: x\n\n", [E(data="x")]),
    ("blank line without data dispatches nothing", b"\n\n\n", []),
    ("blank line without data resets the event name", b"event: foo\n\ndata: x\n\n", [E(data="x")]),
    ("event name does not leak into the next event", b"event: a\ndata: 1\n\ndata: 2\n\n", [E("a", "1"), E(data="2")]),
    ("unknown field ignored", b"foo: bar\ndata: x\nfoo\n\n", [E(data="x")]),
    ("field names are case-sensitive", b"Data: x\nEVENT: y\n\n", []),
    ("field name with a space is not data", b"data : x\n\n", []),
    ("many events in one read", b"data: 1\n\ndata: 2\n\nevent: e\ndata: 3\n\n",
     [E(data="1"), E(data="2"), E("e", "3")]),
    ("id set and kept on later events", b"id: 1\ndata: a\n\ndata: b\n\n", [E(data="a", id="1"), E(data="b", id="1")]),
    ("id replaced by a later id", b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n", [E(data="a", id="1"), E(data="b", id="2")]),
    ("empty id clears it to empty", b"id: 1\ndata: a\n\nid\ndata: b\n\n", [E(data="a", id="1"), E(data="b", id="")]),
    ("id containing NUL ignored", b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
     [E(data="a", id="1"), E(data="b", id="1")]),
    ("id from a block without data persists", b"id: 7\n\ndata: x\n\n", [E(data="x", id="7")]),
    ("retry with digits", b"retry: 3000\ndata: x\n\n", [E(data="x", retry=3000)]),
    ("retry persists", b"retry: 10\n\ndata: x\n\ndata: y\n\n", [E(data="x", retry=10), E(data="y", retry=10)]),
    ("retry with a unit ignored", b"retry: 3s\ndata: x\n\n", [E(data="x")]),
    ("negative retry ignored", b"retry: -1\ndata: x\n\n", [E(data="x")]),
    ("decimal retry ignored", b"retry: 1.5\ndata: x\n\n", [E(data="x")]),
    ("empty retry ignored", b"retry:\ndata: x\n\n", [E(data="x")]),
    ("non-ASCII digits in retry ignored", "retry: ３٣\ndata: x\n\n".encode(), [E(data="x")]),
    ("bad retry keeps the previous one", b"retry: 5\nretry: x\ndata: x\n\n", [E(data="x", retry=5)]),
    ("leading BOM dropped", b"\xef\xbb\xbfdata: x\n\n", [E(data="x")]),
    ("only one BOM dropped", b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", []),
    ("BOM later in the stream is not dropped", b"data: a\n\n\xef\xbb\xbfdata: b\n\n", [E(data="a")]),
    ("BOM inside a value kept", b"data: \xef\xbb\xbfx\n\n", [E(data="\ufeffx")]),
    ("UTF-8 text", "data: héllo 😀 日本\n\n".encode(), [E(data="héllo 😀 日本")]),
    ("UTF-8 event name", "event: évènement\ndata: x\n\n".encode(), [E("évènement", "x")]),
    ("invalid UTF-8 replaced", b"data: a\xffb\n\n", [E(data="a\ufffdb")]),
    ("truncated UTF-8 at line end replaced", b"data: \xe2\x82\n\n", [E(data="\ufffd")]),
    # Unicode line breaks are data, not line endings (str.splitlines / aiter_lines get this wrong).
    ("U+2028, NEL, VT, FF are not line endings", "data: a\u2028b\x85c\x0bd\x0ce\n\n".encode(),
     [E(data="a\u2028b\x85c\x0bd\x0ce")]),
    ("CR line endings", b"event: e\rdata: a\rdata: b\r\r", [E("e", "a\nb")]),
    ("CRLF line endings", b"event: e\r\ndata: a\r\ndata: b\r\n\r\n", [E("e", "a\nb")]),
    ("mixed line endings", b"data: a\rdata: b\ndata: c\r\n\r\ndata: d\n\r", [E(data="a\nb\nc"), E(data="d")]),
    ("CR CR is two line endings", b"data: a\r\r", [E(data="a")]),
    ("LF CR is two line endings", b"data: a\n\r", [E(data="a")]),
    # End of stream: tolerant, unlike the spec (see core/sse.py docstring).
    ("unterminated last event dispatched", b"data: 1\n\ndata: [DONE]", [E(data="1"), E(data=DONE)]),
    ("last event missing its blank line", b"data: a\ndata: b\n", [E(data="a\nb")]),
    ("unterminated event keeps its name", b"event: message_stop\ndata: {}", [E("message_stop", "{}")]),
    ("pending block without data dropped", b"data: x\n\nevent: foo\nid: 9\n", [E(data="x")]),
    ("trailing comment dispatches nothing", b"data: x\n\n: bye", [E(data="x")]),
    ("empty stream", b"", []),
    ("BOM only", b"\xef\xbb\xbf", []),
]


@pytest.mark.parametrize(("raw", "expected"), [pytest.param(r, e, id=n) for n, r, e in RULES])
def test_rule_whole_and_byte_at_a_time(raw: bytes, expected: list[ServerSentEvent]) -> None:
    assert decode_every_way(raw) == expected


@settings(max_examples=300)
@given(st.data())
def test_rules_at_any_split_points(data: st.DataObject) -> None:
    _, raw, expected = data.draw(st.sampled_from(RULES))
    points = data.draw(split_points(raw))
    assert feed_pieces(split_at(raw, points)) == expected


# -- realistic upstream streams (protocols.md §1.4, §2.4) -----------------------------------------


def _chunk(delta: dict, finish: str | None = None, **extra: object) -> dict:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "created": 1732600000,
        "model": "gpt-4o",
        "system_fingerprint": "fp_x",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
        **extra,
    }


OPENAI_CHUNKS = [
    _chunk({"role": "assistant", "content": "", "refusal": None}),
    _chunk({"content": "Hel"}),
    _chunk({"content": "lo — ça va? 👋"}),
    _chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ""}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\":"}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"cat\\n\"}"}}]}),
    _chunk({}, "tool_calls"),
    {**_chunk({}), "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
]
OPENAI_STREAM = b"".join(
    b"data: " + json.dumps(c, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n" for c in OPENAI_CHUNKS
) + b"data: [DONE]\n\n"

ANTHROPIC_EVENTS = [
    {"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant", "content": [],
                                          "model": "claude-sonnet-4-5", "stop_reason": None, "stop_sequence": None,
                                          "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0,
                                                    "cache_read_input_tokens": 0, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EuYB…"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Looking\nit up ✓"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2,
     "content_block": {"type": "tool_use", "id": "toolu_02", "name": "lookup", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"q\": \"do"}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "g\"}"}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 60}},
    {"type": "message_stop"},
]
ANTHROPIC_STREAM = b"".join(
    f"event: {e['type']}\ndata: {json.dumps(e, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()
    for e in ANTHROPIC_EVENTS
)


def test_openai_stream_decoded() -> None:
    events = decode_every_way(OPENAI_STREAM)
    assert [e.event for e in events] == ["message"] * (len(OPENAI_CHUNKS) + 1)
    assert [json.loads(e.data) for e in events[:-1]] == OPENAI_CHUNKS
    assert events[-1].data == DONE  # the sentinel arrives as plain data, never as JSON


def test_anthropic_stream_decoded_with_event_names() -> None:
    events = decode_every_way(ANTHROPIC_STREAM)
    assert [json.loads(e.data) for e in events] == ANTHROPIC_EVENTS
    # The Anthropic SDK dispatches on the SSE event name, so it must match the JSON type.
    assert [e.event for e in events] == [e["type"] for e in ANTHROPIC_EVENTS]


def test_anthropic_error_event_after_keepalive_comments() -> None:
    raw = (
        b": keep-alive\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n: keep-alive\n\n"
        b"event: error\ndata: {\"type\":\"error\",\"error\":"
        b"{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
    )
    events = decode_every_way(raw)
    assert [e.event for e in events] == ["ping", "error"]
    assert json.loads(events[1].data)["error"]["type"] == "overloaded_error"


@settings(max_examples=100)
@given(st.data())
def test_realistic_streams_at_any_split_points(data: st.DataObject) -> None:
    raw = data.draw(st.sampled_from([OPENAI_STREAM, ANTHROPIC_STREAM]))
    points = data.draw(split_points(raw))
    assert feed_pieces(split_at(raw, points)) == feed_pieces([raw])


# -- line endings --------------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\r", b"\r\n"], ids=["CR", "CRLF"])
@pytest.mark.parametrize("raw", [OPENAI_STREAM, ANTHROPIC_STREAM], ids=["openai", "anthropic"])
def test_cr_and_crlf_streams_give_the_same_events(raw: bytes, eol: bytes) -> None:
    assert decode_every_way(raw.replace(b"\n", eol)) == feed_pieces([raw])


@settings(max_examples=100)
@given(st.data())
def test_any_mix_of_line_endings_at_any_split_points(data: st.DataObject) -> None:
    lines = ANTHROPIC_STREAM.split(b"\n")[:-1]
    eols = data.draw(st.lists(st.sampled_from([b"\n", b"\r", b"\r\n"]), min_size=len(lines), max_size=len(lines)))
    for i in range(1, len(lines)):
        if eols[i - 1] == b"\r" and not lines[i] and eols[i] == b"\n":
            eols[i] = b"\r"  # CR then LF would be one CRLF, swallowing this blank line
    raw = b"".join(line + eol for line, eol in zip(lines, eols))
    points = data.draw(split_points(raw))
    assert feed_pieces(split_at(raw, points)) == feed_pieces([ANTHROPIC_STREAM])


def test_crlf_split_between_reads_is_one_line_ending() -> None:
    # "data: a" CRLF "data: b": one event with two data lines, not an early dispatch of "a".
    assert feed_pieces([b"data: a\r", b"\ndata: b\r\n\r\n"]) == [E(data="a\nb")]


def test_cr_ending_a_read_survives_empty_reads() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n") == []  # the LF completes the CRLF; it is not a blank line
    assert decoder.feed(b"\n") == [E(data="a")]


def test_only_one_lf_after_a_split_cr_is_swallowed() -> None:
    assert feed_pieces([b"data: a\r", b"\n\n"]) == [E(data="a")]
    assert feed_pieces([b"data: a\r", b"\n\ndata: b\n\n"]) == [E(data="a"), E(data="b")]


# -- delivery timing and decoder lifecycle ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "completing_byte"),
    [(b"data: x\n\n", 8), (b"data: x\r\r", 8), (b"data: x\r\n\r\n", 9)],
    ids=["LF", "CR", "CRLF"],
)
def test_event_delivered_by_the_read_that_completes_it(raw: bytes, completing_byte: int) -> None:
    # Latency: an event comes out as soon as its blank line is certain (for CRLF that is
    # the second CR: the LF after it cannot change anything), never one read later.
    decoder = SSEDecoder()
    outputs = [decoder.feed(b) for b in bytewise(raw)]
    assert outputs[completing_byte] == [E(data="x")]
    assert sum(outputs, []) == [E(data="x")]


def test_split_multibyte_character_is_reassembled() -> None:
    raw = "data: 😀é\n\n".encode()
    for cut in range(len(raw) + 1):
        assert feed_pieces([raw[:cut], raw[cut:]]) == [E(data="😀é")], cut


def test_bom_split_across_reads_is_dropped() -> None:
    assert feed_pieces([b"\xef", b"\xbb", b"\xbfdata: x\n\n"]) == [E(data="x")]
    assert feed_pieces([b"\xef\xbb", b"\xbf", b"data: x\n\n"]) == [E(data="x")]


def test_decoder_exposes_last_event_id_and_retry() -> None:
    decoder = SSEDecoder()
    assert (decoder.last_event_id, decoder.retry) == (None, None)
    decoder.feed(b"id: 42\nretry: 1500\n\n")
    assert (decoder.last_event_id, decoder.retry) == ("42", 1500)


def test_feed_after_finish_is_an_error_and_finish_is_idempotent() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x") == []
    assert decoder.finish() == [E(data="x")]
    assert decoder.finish() == []
    with pytest.raises(RuntimeError):
        decoder.feed(b"data: y\n\n")


def test_very_long_line_in_small_reads() -> None:
    # A tool call whose arguments arrive in one huge data line, read in small pieces.
    payload = "x" * (4 * 1024 * 1024)
    raw = f"data: {payload}\n\n".encode()
    decoder = SSEDecoder()
    events = []
    for i in range(0, len(raw), 512):
        events += decoder.feed(raw[i : i + 512])
    assert events == [E(data=payload)]


# -- the value type ------------------------------------------------------------------------------


def test_server_sent_event_defaults_and_immutability() -> None:
    event = ServerSentEvent()
    assert (event.event, event.data, event.id, event.retry) == ("message", "", None, None)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.data = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [{"event": None}, {"data": b"bytes"}, {"id": 1}, {"retry": -1}, {"retry": "10"}, {"retry": True}],
)
def test_server_sent_event_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises((TypeError, ValueError)):
        ServerSentEvent(**kwargs)


# -- encoders ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "wire"),
    [
        (("hi",), {}, b"data: hi\n\n"),
        (("",), {}, b"data: \n\n"),
        (("{}",), {"event": "ping"}, b"event: ping\ndata: {}\n\n"),
        (("x",), {"event": "e", "id": "7"}, b"event: e\nid: 7\ndata: x\n\n"),
        (("a\nb",), {}, b"data: a\ndata: b\n\n"),
        (("a\r\nb\rc",), {}, b"data: a\ndata: b\ndata: c\n\n"),
        (("a\n",), {}, b"data: a\ndata: \n\n"),
        ((" lead",), {}, b"data:  lead\n\n"),
        (("é😀",), {}, "data: é😀\n\n".encode()),
        (("\ud83d",), {}, "data: \ufffd\n\n".encode()),  # lone surrogate: U+FFFD, never a crash
    ],
)
def test_encode_event_wire_bytes(args: tuple, kwargs: dict, wire: bytes) -> None:
    assert encode_event(*args, **kwargs) == wire


@pytest.mark.parametrize(
    "kwargs",
    [{"event": "a\nb"}, {"event": "a\r"}, {"id": "1\n2"}, {"id": "\r"}, {"id": "1\x002"}],
)
def test_encode_event_rejects_fields_that_would_break_framing(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        encode_event("x", **kwargs)


def test_encode_json_is_compact_utf8_on_one_line() -> None:
    obj = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "ça\nva 😀"}}
    wire = encode_json(obj, event="content_block_delta")
    assert wire == (
        'event: content_block_delta\ndata: {"type":"content_block_delta",'
        '"delta":{"type":"text_delta","text":"ça\\nva 😀"}}\n\n'
    ).encode()
    [event] = decode_every_way(wire)
    assert (event.event, json.loads(event.data)) == ("content_block_delta", obj)
    assert encode_json([1, None]) == b"data: [1,null]\n\n"


def test_encode_json_carries_a_lone_surrogate_from_upstream() -> None:
    obj = json.loads('{"text":"\\ud83d"}')  # valid JSON upstream may send mid-emoji
    [event] = decode_every_way(encode_json(obj))
    assert json.loads(event.data) == obj


def test_encode_json_rejects_bad_event_name() -> None:
    with pytest.raises(ValueError):
        encode_json({}, event="a\nb")


def test_done_event_decodes_to_the_sentinel() -> None:
    assert decode_every_way(DONE_EVENT) == [E(data=DONE)]
    assert DONE == "[DONE]"


def test_comment_is_a_keepalive_that_dispatches_nothing() -> None:
    assert encode_comment("keep-alive") == b": keep-alive\n\n"
    raw = encode_json({"a": 1}) + encode_comment("keep-alive") + encode_json({"a": 2})
    assert [json.loads(e.data) for e in decode_every_way(raw)] == [{"a": 1}, {"a": 2}]
    with pytest.raises(ValueError):
        encode_comment("two\nlines")


# -- round trip ----------------------------------------------------------------------------------

_single_line = st.text().filter(lambda s: "\r" not in s and "\n" not in s)
_messages = st.lists(
    st.tuples(
        st.text(),  # data: anything, including newlines and non-ASCII
        st.none() | _single_line,  # event name
        st.none() | _single_line.filter(lambda s: "\x00" not in s),  # id
    ),
    max_size=6,
)


@settings(max_examples=200)
@given(_messages, st.data())
def test_encode_then_decode_at_any_split_points_round_trips(messages: list, data: st.DataObject) -> None:
    raw = b"".join(encode_event(d, event=ev, id=i) for d, ev, i in messages)
    expected, last_id = [], None
    for d, ev, i in messages:
        last_id = i if i is not None else last_id  # ids persist across events
        expected.append(E(event=ev or "message", data=re.sub(r"\r\n|\r", "\n", d), id=last_id))
    points = data.draw(split_points(raw))
    assert feed_pieces(split_at(raw, points)) == expected
