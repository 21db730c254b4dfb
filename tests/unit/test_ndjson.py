"""NDJSON byte decoder and encoder (core/ndjson.py), Ollama's streaming format (protocols.md §4.2-4.3).

Every input is checked fed whole, one byte at a time and at hypothesis-chosen split points.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import TranslationError
from core.ndjson import NDJSONDecoder, encode_ndjson

# -- feeding helpers ---------------------------------------------------------------------------


def feed_pieces(pieces: list[bytes]) -> list[Any]:
    decoder = NDJSONDecoder()
    values: list[Any] = []
    for piece in pieces:
        values += decoder.feed(piece)
    return values + decoder.finish()


def split_at(raw: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({0, len(raw), *points})
    return [raw[a:b] for a, b in zip(cuts, cuts[1:])]


def decode_every_way(raw: bytes) -> list[Any]:
    whole = feed_pieces([raw])
    assert feed_pieces([raw[i : i + 1] for i in range(len(raw))]) == whole
    return whole


# -- a realistic Ollama /api/chat stream (protocols.md §4.2) ---------------------------------------

OLLAMA_CHUNKS: list[dict[str, Any]] = [
    {"model": "llama3.2", "created_at": "2025-07-07T20:22:19.17Z",
     "message": {"role": "assistant", "content": "", "thinking": "Hmm… 🤔"}, "done": False},
    {"model": "llama3.2", "created_at": "2025-07-07T20:22:19.18Z",
     "message": {"role": "assistant", "content": "The\nanswer — 東京"}, "done": False},
    {"model": "llama3.2", "created_at": "2025-07-07T20:22:19.19Z",
     "message": {"role": "assistant", "content": "",
                 "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}]},
     "done": False},
    {"model": "llama3.2", "created_at": "2025-07-07T20:22:19.20Z", "message": {"role": "assistant", "content": ""},
     "done": True, "done_reason": "stop", "total_duration": 182242375, "load_duration": 41295167,
     "prompt_eval_count": 169, "prompt_eval_duration": 24573166, "eval_count": 15, "eval_duration": 115959084},
]
# Go's encoding/json writes non-ASCII as UTF-8, so the wire carries raw multi-byte characters.
OLLAMA_STREAM = b"".join(json.dumps(c, ensure_ascii=False).encode() + b"\n" for c in OLLAMA_CHUNKS)


def test_ollama_stream_decoded() -> None:
    assert decode_every_way(OLLAMA_STREAM) == OLLAMA_CHUNKS


@settings(max_examples=150)
@given(st.data())
def test_ollama_stream_at_any_split_points(data: st.DataObject) -> None:
    points = data.draw(st.lists(st.integers(0, len(OLLAMA_STREAM)), max_size=12))
    assert feed_pieces(split_at(OLLAMA_STREAM, points)) == OLLAMA_CHUNKS


def test_crlf_lines_give_the_same_values() -> None:
    assert decode_every_way(OLLAMA_STREAM.replace(b"\n", b"\r\n")) == OLLAMA_CHUNKS


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b'{"a":1}\n\n\n{"a":2}\n', [{"a": 1}, {"a": 2}], id="blank lines skipped"),
        pytest.param(b'\r\n{"a":1}\r\n\r\n', [{"a": 1}], id="CRLF blank lines skipped"),
        pytest.param(b'  \n\t\n{"a":1}\n \r\n', [{"a": 1}], id="whitespace-only lines skipped"),
        pytest.param(b'{"a":1}\n{"a":2}', [{"a": 1}, {"a": 2}], id="unterminated last line parsed"),
        pytest.param(b'{"a":1}\r', [{"a": 1}], id="unterminated last line with CR"),
        pytest.param(b"1\n\"s\"\nnull\n[true]\n", [1, "s", None, [True]], id="any JSON value per line"),
        pytest.param(b'{"error":"model \\"x\\" not found"}\n', [{"error": 'model "x" not found'}],
                     id="mid-stream error line is a value for the translator"),
        pytest.param(b'{"t":"a\xffb"}\n', [{"t": "a\ufffdb"}], id="invalid UTF-8 replaced"),
        pytest.param(b'{"t":"\\u2028\xe2\x80\xa8"}\n', [{"t": "\u2028\u2028"}], id="U+2028 is not a line break"),
        pytest.param(b"", [], id="empty stream"),
        pytest.param(b"\n\n", [], id="only blank lines"),
    ],
)
def test_framing(raw: bytes, expected: list[Any]) -> None:
    assert decode_every_way(raw) == expected


def test_value_delivered_by_the_read_that_ends_its_line() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"done":') == []
    assert decoder.feed(b"true}") == []
    assert decoder.feed(b'\n{"x"') == [{"done": True}]
    assert decoder.feed(b':2}\r\n') == [{"x": 2}]


def test_split_multibyte_character_is_reassembled() -> None:
    raw = '{"content":"😀é"}\n'.encode()
    for cut in range(len(raw) + 1):
        assert feed_pieces([raw[:cut], raw[cut:]]) == [{"content": "😀é"}], cut


# -- errors --------------------------------------------------------------------------------------


def test_line_that_is_not_json_is_a_502_naming_the_line() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a":1}\n') == [{"a": 1}]
    with pytest.raises(TranslationError) as info:
        decoder.feed(b"<html>502 Bad Gateway</html>\n")
    assert info.value.status == 502
    assert "not valid JSON" in info.value.message
    assert "<html>502 Bad Gateway</html>" in info.value.message


def test_error_quotes_only_the_start_of_a_long_bad_line() -> None:
    line = "not json " + "y" * 10_000
    with pytest.raises(TranslationError) as info:
        feed_pieces([line.encode() + b"\n"])
    assert line[:200] in info.value.message
    assert len(info.value.message) < 400


def test_truncated_last_line_is_an_error_at_finish() -> None:
    # The connection dropped mid-object: finish must not pretend the stream was fine.
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"done":false}\n{"message":{"content":"Hel') == [{"done": False}]
    with pytest.raises(TranslationError, match="not valid JSON"):
        decoder.finish()


def test_decoder_refuses_to_continue_after_a_bad_line() -> None:
    decoder = NDJSONDecoder()
    with pytest.raises(TranslationError):
        decoder.feed(b"oops\n")
    with pytest.raises(RuntimeError):
        decoder.feed(b'{"a":1}\n')
    with pytest.raises(RuntimeError):
        decoder.finish()


def test_feed_after_finish_is_an_error_and_finish_is_idempotent() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a":1}') == []
    assert decoder.finish() == [{"a": 1}]
    assert decoder.finish() == []
    with pytest.raises(RuntimeError):
        decoder.feed(b'{"a":2}\n')


def test_very_long_line_in_small_reads() -> None:
    obj = {"message": {"content": "x" * (4 * 1024 * 1024)}}
    raw = encode_ndjson(obj)
    decoder = NDJSONDecoder()
    values = []
    for i in range(0, len(raw), 512):
        values += decoder.feed(raw[i : i + 512])
    assert values == [obj]


# -- encoder and round trip ------------------------------------------------------------------------


def test_encode_ndjson_is_compact_utf8_on_one_line() -> None:
    obj = {"message": {"content": "a\nb — 東京"}, "done": False}
    assert encode_ndjson(obj) == '{"message":{"content":"a\\nb — 東京"},"done":false}\n'.encode()


def test_encode_ndjson_carries_a_lone_surrogate() -> None:
    obj = json.loads('{"content":"\\ud83d"}')
    assert decode_every_way(encode_ndjson(obj)) == [obj]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=100)
@given(st.lists(_json_values, max_size=6), st.data())
def test_encode_then_decode_at_any_split_points_round_trips(values: list[Any], data: st.DataObject) -> None:
    raw = b"".join(encode_ndjson(v) for v in values)
    points = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    assert feed_pieces(split_at(raw, points)) == values
