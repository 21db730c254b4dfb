"""The mock backend answers both SDKs with no network and no keys."""

from __future__ import annotations

import json

import anthropic
import openai

from tests.integration.conftest import in_thread, model

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


async def mock_proxy(start_proxy) -> str:
    return await start_proxy({"models": {"mock": model("mock"), "*": model("mock")}})


async def test_openai_sdk_create_and_stream(start_proxy):
    proxy = await mock_proxy(start_proxy)
    oai = openai.OpenAI(base_url=f"{proxy}/v1", api_key="none", max_retries=0)
    messages = [{"role": "user", "content": "hello there"}]
    completion = await in_thread(lambda: oai.chat.completions.create(model="mock", messages=messages))
    assert completion.choices[0].message.content == "Mock reply to: hello there"
    assert completion.usage.prompt_tokens == 2

    def stream():
        return list(oai.chat.completions.create(model="mock", messages=messages, stream=True,
                                                stream_options={"include_usage": True}))

    chunks = await in_thread(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Mock reply to: hello there"
    assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens


async def test_openai_sdk_forced_tool_call(start_proxy):
    proxy = await mock_proxy(start_proxy)
    oai = openai.OpenAI(base_url=f"{proxy}/v1", api_key="none", max_retries=0)
    completion = await in_thread(lambda: oai.chat.completions.create(
        model="anything", messages=[{"role": "user", "content": "weather?"}], tools=[TOOL],
        tool_choice="required"))
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "mock"}


async def test_anthropic_sdk_create_and_stream(start_proxy):
    proxy = await mock_proxy(start_proxy)
    ant = anthropic.Anthropic(base_url=proxy, api_key="none", max_retries=0)
    messages = [{"role": "user", "content": "hi claude"}]
    message = await in_thread(lambda: ant.messages.create(
        model="claude-proxy-test", max_tokens=100, messages=messages))
    assert message.content[0].text == "Mock reply to: hi claude"
    assert message.stop_reason == "end_turn"
    assert message.model == "claude-proxy-test"

    def stream():
        with ant.messages.stream(model="claude-proxy-test", max_tokens=100, messages=messages) as s:
            return s.get_final_message()

    final = await in_thread(stream)
    assert final.content[0].text == "Mock reply to: hi claude"
    assert final.usage.output_tokens == message.usage.output_tokens
