"""The stream relay: upstream pieces in, client pieces out, one write per read."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ProxyError
from core.ndjson import NDJSONDecoder
from core.relay import StreamRelay
from core.sse import SSEDecoder
from core.transforms import EMPTY_TRANSFORMS
from core.translate.ollama_backend import OllamaToOpenAIStream
from core.translate.openai_backend import OpenAIToAnthropicStream

OPENAI_STREAM = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}],"future_field":{"x":1}}\n\n'
    b": keep-alive comment\n\n"
    b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
ANTHROPIC_STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1"}}\n\n'
    b'event: future_event\ndata: {"type":"future_event","opaque":[1,2]}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"server_tool_use","id":"srv_1","name":"web_search","input":{}}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def passthrough(client: str) -> StreamRelay:
    return StreamRelay(client=client, wire=client, decoder=SSEDecoder(), translators=[],
                       transforms=EMPTY_TRANSFORMS.response)


def feed_in_pieces(relay: StreamRelay, data: bytes, cuts: list[int]) -> bytes:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    return b"".join(relay.feed(piece) for piece in pieces) + relay.finish()


def without_comments(data: bytes) -> bytes:
    return b"".join(event + b"\n\n" for event in data.split(b"\n\n") if event and not event.startswith(b":"))


@settings(max_examples=100)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_openai_pass_through_is_byte_identical_whatever_the_split(cuts):
    assert feed_in_pieces(passthrough("openai"), OPENAI_STREAM, cuts) == without_comments(OPENAI_STREAM)


@settings(max_examples=100)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_anthropic_pass_through_keeps_unknown_events_and_blocks(cuts):
    assert feed_in_pieces(passthrough("anthropic"), ANTHROPIC_STREAM, cuts) == ANTHROPIC_STREAM


def test_one_client_write_per_upstream_read():
    relay = passthrough("openai")
    events = [e + b"\n\n" for e in OPENAI_STREAM.split(b"\n\n") if e and not e.startswith(b":")]
    assert [relay.feed(e) for e in events] == events
    assert relay.done and relay.finish() == b""


def test_a_stream_cut_short_ends_with_one_error_event():
    relay = passthrough("openai")
    head = OPENAI_STREAM.split(b"data: [DONE]")[0]
    out = relay.feed(head) + relay.finish()
    last = out.strip().split(b"\n\n")[-1]
    assert json.loads(last[len(b"data: "):])["error"]["message"].startswith("upstream stream ended")
    assert relay.fail(ProxyError(504, "late")) == b""  # nothing after the end


def test_anthropic_client_gets_an_error_event_with_its_name():
    relay = passthrough("anthropic")
    out = relay.feed(ANTHROPIC_STREAM.split(b"event: message_stop")[0])
    out += relay.fail(ProxyError(504, "the upstream sent nothing for 5 s", type="timeout_error"))
    assert out.endswith(b'event: error\ndata: {"type":"error","error":{"type":"timeout_error",'
                        b'"message":"the upstream sent nothing for 5 s"}}\n\n')
    assert relay.feed(b'event: message_stop\ndata: {"type":"message_stop"}\n\n') == b""


def test_garbage_event_from_a_translated_upstream_is_an_error_event_not_a_crash():
    relay = StreamRelay(client="anthropic", wire="openai", decoder=SSEDecoder(),
                        translators=[OpenAIToAnthropicStream(model="m", message_id="msg_x")],
                        transforms=EMPTY_TRANSFORMS.response)
    out = relay.feed(b"data: {not json\n\n")
    assert out.startswith(b"event: error\n")
    assert relay.done


def test_translators_compose_anthropic_client_on_ollama_ndjson():
    relay = StreamRelay(client="anthropic", wire="ollama", decoder=NDJSONDecoder(), translators=[
        OllamaToOpenAIStream(model="m", created=1, completion_id="chatcmpl-1", include_usage=True),
        OpenAIToAnthropicStream(model="m", message_id="msg_1")], transforms=EMPTY_TRANSFORMS.response)
    lines = [{"model": "llama", "message": {"role": "assistant", "content": "Hel"}, "done": False},
             {"model": "llama", "message": {"role": "assistant", "content": "lo"}, "done": False},
             {"model": "llama", "message": {"role": "assistant", "content": ""}, "done": True,
              "done_reason": "stop", "prompt_eval_count": 5, "eval_count": 2}]
    out = b"".join(relay.feed(json.dumps(line).encode() + b"\n") for line in lines) + relay.finish()
    events = [e for e in SSEDecoder().feed(out)]
    names = [e.event for e in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    text = "".join(json.loads(e.data)["delta"].get("text", "") for e in events if e.event == "content_block_delta")
    assert text == "Hello"
    delta = next(json.loads(e.data) for e in events if e.event == "message_delta")
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 2 and delta["usage"]["input_tokens"] == 5


@given(st.lists(st.integers(min_value=0, max_value=len(OPENAI_STREAM)), max_size=8))
def test_the_listener_hears_every_upstream_event_once_in_order_whatever_the_split(cuts):
    heard = []
    relay = passthrough("openai")
    relay.listener = heard.append
    feed_in_pieces(relay, OPENAI_STREAM, cuts)
    expected = SSEDecoder().feed(OPENAI_STREAM)
    assert [(e.event, e.data) for e in heard] == [(e.event, e.data) for e in expected]
