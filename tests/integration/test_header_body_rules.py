"""Header policy and body transforms, end to end, non-streaming and streaming (issue 4)."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai

from tests.integration.conftest import UPSTREAM_KEY, in_thread, model
from tests.integration.test_openai_passthrough import COMPLETION, STREAM, chunk
from tests.support.servers import json_reply, sse_reply

README_EXAMPLE = {"mode": "blacklist", "deny": ["x-stainless-*"], "drop": ["x-trace"],
                  "add": {"x-team": "research"}, "force": {"openai-organization": "org-company"}}


async def test_readme_worked_example(start_proxy, upstream):
    upstream.script = [json_reply(COMPLETION)]
    proxy = await start_proxy({"models": {"m": model("openai", f"{upstream.url}/v1", api_key=UPSTREAM_KEY,
                                                     headers=README_EXAMPLE)}})
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/chat/completions", json={"model": "m", "messages": []}, headers={
            "Authorization": "Bearer sk-client", "OpenAI-Organization": "org-1", "X-Stainless-Lang": "python",
            "X-Trace": "42", "Connection": "keep-alive", "Accept-Encoding": "gzip, br"})
    assert r.status_code == 200
    seen = upstream.requests[0].headers
    assert seen["openai-organization"] == "org-company"
    assert seen["x-team"] == "research"
    assert seen["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert seen["accept-encoding"] == "identity"
    assert seen["content-type"] == "application/json"
    assert "x-stainless-lang" not in seen and "x-trace" not in seen
    assert "sk-client" not in json.dumps(seen)


async def test_whitelist_forwards_only_allowed_headers_and_add_does_not_override(start_proxy, upstream):
    upstream.script = [json_reply(COMPLETION)]
    policy = {"mode": "whitelist", "allow": ["x-keep-*"], "add": {"x-keep-me": "default", "x-new": "1"}}
    proxy = await start_proxy({"models": {"m": model("openai", f"{upstream.url}/v1", api_key="k",
                                                     headers=policy)}})
    async with httpx.AsyncClient() as http:
        await http.post(f"{proxy}/v1/chat/completions", json={"model": "m", "messages": []},
                        headers={"x-keep-me": "client", "x-other": "no", "user-agent": "ua"})
    seen = upstream.requests[0].headers
    assert seen["x-keep-me"] == "client" and seen["x-new"] == "1"
    assert "x-other" not in seen and "user-agent" not in seen


async def test_response_headers_policy_shapes_what_the_client_gets(start_proxy, upstream):
    upstream.script = [json_reply(COMPLETION, headers=[("x-internal", "secret"), ("x-request-id", "r1"),
                                                       ("set-cookie", "a=b")])]
    policy = {"mode": "blacklist", "deny": ["x-internal"], "force": {"x-served-through": "llm-proxy"}}
    proxy = await start_proxy({"models": {"m": model("openai", f"{upstream.url}/v1", api_key="k",
                                                     response_headers=policy)}})
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/chat/completions", json={"model": "m", "messages": []})
    assert "x-internal" not in r.headers and "set-cookie" not in r.headers
    assert r.headers["x-upstream-request-id"] == "r1"  # x-request-id is the proxy's own
    assert r.headers["x-served-through"] == "llm-proxy"


REQUEST_RULES = [
    {"type": "jsonpath_drop", "path": "$.metadata"},
    {"type": "jsonpath_add", "path": "$.user", "value": "team-a"},
    {"type": "jsonpath_add", "path": "$.messages[*].name", "value": "anon"},
    {"type": "regex", "pattern": r"sk-[A-Za-z0-9]{10,}", "replacement": "[key]"},
]


async def test_request_transforms_apply_to_the_body_sent_upstream(start_proxy, upstream):
    upstream.script = [json_reply(COMPLETION)]
    proxy = await start_proxy({"models": {"m": model("openai", f"{upstream.url}/v1", api_key="k",
                                                     transforms={"request": REQUEST_RULES})}})
    client = openai.OpenAI(base_url=f"{proxy}/v1", api_key="x", max_retries=0)
    await in_thread(lambda: client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "my key is sk-abcdefghijklmnop"}],
        metadata={"a": "b"}))
    sent = upstream.requests[0].json
    assert "metadata" not in sent
    assert sent["user"] == "team-a"
    assert sent["messages"] == [{"role": "user", "content": "my key is [key]", "name": "anon"}]


async def test_request_transforms_see_the_translated_body(start_proxy, upstream):
    """On a translating route the rules act on the backend's protocol (here Anthropic's)."""
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [
        {"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": None,
               "usage": {"input_tokens": 3, "output_tokens": 1}}
    upstream.script = [json_reply(message)]
    rules = [{"type": "jsonpath_add", "path": "$.metadata", "value": {"user_id": "team-a"}},
             {"type": "jsonpath_drop", "path": "$.temperature"}]
    proxy = await start_proxy({"models": {"claude": model("anthropic", upstream.url, api_key="k",
                                                          transforms={"request": rules})}})
    client = openai.OpenAI(base_url=f"{proxy}/v1", api_key="x", max_retries=0)
    completion = await in_thread(lambda: client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hi"}], temperature=0.5))
    assert completion.choices[0].message.content == "ok"
    sent = upstream.requests[0].json
    assert sent["metadata"] == {"user_id": "team-a"}
    assert "temperature" not in sent and sent["max_tokens"] == 4096


RESPONSE_RULES = [{"type": "regex", "pattern": "Hel", "replacement": "J"},
                  {"type": "jsonpath_add", "path": "$.system_fingerprint", "value": "fp_proxy"}]


async def test_response_transforms_non_streaming(start_proxy, upstream):
    upstream.script = [json_reply(COMPLETION)]
    proxy = await start_proxy({"models": {"m": model("openai", f"{upstream.url}/v1", api_key="k",
                                                     transforms={"response": RESPONSE_RULES})}})
    client = openai.OpenAI(base_url=f"{proxy}/v1", api_key="x", max_retries=0)
    completion = await in_thread(lambda: client.chat.completions.create(model="m", messages=[]))
    assert completion.choices[0].message.content == "Jlo there!"
    assert completion.system_fingerprint == "fp_proxy"


async def test_response_transforms_apply_to_each_stream_event(start_proxy, upstream):
    upstream.script = [sse_reply(STREAM)]
    proxy = await start_proxy({"models": {"m": model("openai", f"{upstream.url}/v1", api_key="k",
                                                     transforms={"response": RESPONSE_RULES})}})
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/chat/completions", json={"model": "m", "stream": True, "messages": []})
    events = [line[6:] for line in r.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["system_fingerprint"] == "fp_proxy" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Jlo!"  # "Hel" was one delta; a match split across deltas would not be replaced


async def test_response_transforms_on_an_anthropic_stream_keep_event_names(start_proxy, upstream):
    upstream.script = [sse_reply([(None, chunk({"role": "assistant", "content": ""})),
                                  (None, chunk({"content": "secret plan"})), (None, chunk({}, "stop")),
                                  (None, "[DONE]")])]
    rules = [{"type": "regex", "pattern": "secret", "replacement": "public"}]
    proxy = await start_proxy({"models": {"m": model("openai-compatible", f"{upstream.url}/v1",
                                                     transforms={"response": rules})}})
    client = anthropic.Anthropic(base_url=proxy, api_key="x", max_retries=0)

    def run():
        with client.messages.stream(model="m", max_tokens=20, messages=[{"role": "user", "content": "hi"}]) as s:
            return s.get_final_message()

    final = await in_thread(run)
    assert final.content[0].text == "public plan"


async def test_a_regex_that_breaks_the_json_is_a_clear_error(start_proxy, upstream):
    upstream.script = [json_reply(COMPLETION)]
    rules = [{"type": "regex", "pattern": r"\}$", "replacement": ""}]
    proxy = await start_proxy({"models": {"m": model("openai", f"{upstream.url}/v1", api_key="k",
                                                     transforms={"response": rules})}})
    client = openai.OpenAI(base_url=f"{proxy}/v1", api_key="x", max_retries=0)
    try:
        await in_thread(lambda: client.chat.completions.create(model="m", messages=[]))
    except openai.APIStatusError as err:
        assert err.status_code == 502
        assert "transforms.response[0]" in err.message
    else:
        raise AssertionError("expected a 502")
