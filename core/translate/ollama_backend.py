"""Ollama's native chat API (``POST /api/chat``, NDJSON) as a backend, through the OpenAI pivot.

Theory of operation
-------------------
OpenAI Chat Completions is the pivot (protocols.md §3, §4): an OpenAI client is
served by the three translators below directly, and an Anthropic client by
composing them with the Anthropic<->OpenAI translators.  So the input here is
an OpenAI chat request (as an OpenAI client or that composition writes it) and
the output is OpenAI shapes that both the openai SDK and the OpenAI->Anthropic
stream translator accept.

* ``request_to_ollama`` rewrites the request body.  Ollama's ``stream`` defaults
  to *true* (protocols.md §4.1), so it is always written explicitly.  Tool-call
  arguments travel as a JSON **object** on Ollama and as a JSON **string** on
  OpenAI (§6.1); tool results name their tool with ``tool_name``, which OpenAI
  messages lack, so it is looked up from the earlier assistant tool call.
* ``response_from_ollama`` turns a non-streaming reply into a ``chat.completion``.
* ``OllamaToOpenAIStream`` turns parsed NDJSON lines into ``chat.completion.chunk``
  dicts.  Each line yields its chunks at once: reasoning, then text, then one
  chunk per tool call (Ollama sends every call whole in one line, §4.2, so each
  becomes a single delta carrying id, name and the full arguments string).  The
  ``done: true`` line yields the finish chunk, the usage chunk (only when the
  client asked for ``stream_options.include_usage``) and ``[DONE]``.
* ``error_from_ollama`` maps a non-2xx reply (``{"error": "<message>"}``, §4.3);
  ``request_without_think`` tells the adapter what to retry when Ollama refuses
  ``think`` for a model that cannot think (Claude Code always asks for it).

Both response paths share the helpers that build tool calls (an id Ollama
omits or repeats is replaced by ``call_<completion_id>_<index>``: results are
matched to calls by id), finish reasons and usage, so a stream reassembled the way the openai SDK does it equals the
non-streaming translation of the same reply (the property test proves it).

Request fields that are **dropped** because Ollama cannot express them and no
user relies on their effect on the answer: ``stream_options`` (read by the
stream translator instead), ``user``, ``safety_identifier``,
``prompt_cache_key``, ``prompt_cache_retention``, ``prompt_cache_options``,
``metadata``, ``store``, ``service_tier``, ``prediction`` (a latency hint),
``verbosity``, ``parallel_tool_calls`` (Ollama has no switch; the model may
still call tools in parallel), ``logprobs: false``, ``n: 1``, message ``name``
(except as a tool message's fallback tool name), image ``detail``, tool
``strict``, part ``cache_control``, and any field this module does not know.
Text parts of one message are joined with a newline (Ollama takes one string).
Fields whose loss would silently change the result are a 400 instead: ``n > 1``,
``logprobs: true``/``top_logprobs``, a non-empty ``logit_bias``, audio output,
``web_search_options``, the deprecated ``functions``/``function_call``, custom
tools, non-image file/audio parts and ``http(s)`` image URLs (Ollama cannot
fetch them; §3.2, §4.5).

``tool_choice`` cannot be expressed either (Ollama's own ``/v1`` ignores it,
§4.5).  What we do instead: ``"auto"`` (or absent) sends every tool;
``"none"`` sends no tools at all, so the model cannot call one; a named
function sends only that tool and ``allowed_tools`` only the listed ones, which
is the closest we can get to forcing a choice; ``"required"`` sends every tool.
For a named function, ``allowed_tools`` and ``"required"`` the model may still
answer in text: forcing a call is best effort on Ollama.

Sampling defaults: a parameter the client did not send is not sent, so the
model's Modelfile defaults stay in force (Ollama's own ``/v1`` forces
``temperature``/``top_p`` to 1.0 instead, §4.5).
"""

from __future__ import annotations

import enum
import json
from typing import Any, Final

from ..errors import ProxyError, TranslationError, openai_error_body
from ..sse import DONE

__all__ = [
    "FINISH_REASON_BY_DONE_REASON",
    "THINK_BY_REASONING_EFFORT",
    "OllamaToOpenAIStream",
    "error_from_ollama",
    "request_to_ollama",
    "request_without_think",
    "response_from_ollama",
]

# OpenAI message roles -> Ollama roles (protocols.md §3.1, §4.1).  `developer`
# replaced `system` for newer OpenAI models; every other vendor treats it as
# system (Portkey, CCR), and so does Ollama's /v1.
_ROLE_BY_OPENAI_ROLE: Final = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}

# OpenAI sampling fields that map 1:1 onto Ollama `options` (protocols.md §4.1,
# §6.1).  `top_k` is not an OpenAI field, but the Anthropic->OpenAI translator
# carries it and Ollama understands it, so it is kept rather than dropped.
_NUMBER_OPTIONS: Final = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGER_OPTIONS: Final = ("top_k", "seed")

# OpenAI `reasoning_effort` -> Ollama `think` (protocols.md §4.1, §4.5, §7.11).
# Ollama's /v1 accepts none/low/medium/high(/max) and maps "none" to false; we
# do the same.  The 2026 OpenAI values Ollama lacks go to the nearest level the
# client did not exceed: "minimal" -> "low", "xhigh" -> "high" (every thinking
# model accepts "high"; "max" only some).  "max" stays "max".
THINK_BY_REASONING_EFFORT: Final[dict[str, bool | str]] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "max",
}

# Ollama `done_reason` -> OpenAI `finish_reason` (protocols.md §3.5, §4.2).
# Ollama has no tool-call done_reason: a reply that carried tool calls finishes
# with "tool_calls" whatever done_reason says (as Ollama's /v1 and Anthropic
# facade both do).  "load"/"unload" (model management) and unknown values are
# "stop": the model did stop, nothing was cut off (Ollama's /v1 would pass them
# through raw, which no OpenAI client understands).
FINISH_REASON_BY_DONE_REASON: Final = {"stop": "stop", "length": "length"}

# Request fields whose loss would silently change the answer (see the module
# docstring): rejected with a message naming the field.
_UNSUPPORTED_FIELDS: Final = {
    "functions": "the deprecated 'functions' field is not supported; use 'tools'",
    "function_call": "the deprecated 'function_call' field is not supported; use 'tool_choice'",
    "audio": "audio output is not supported by Ollama",
    "web_search_options": "web search is not supported by Ollama",
}

# Text parts of one message are joined with a newline: Ollama messages carry a
# single string.  DISAGREE: Ollama's own Anthropic facade and LiteLLM glue parts
# with "", CCR joins assistant texts with "\n" (protocols.md §3.4).  We follow
# CCR: gluing turns Claude Code's "<system-reminder>...</system-reminder>" part
# and the prompt after it, or "read the file." + "Now run the tests.", into one
# run-on line whenever the first part lacks a final newline.
_PART_SEPARATOR: Final = "\n"


def _bad(message: str, param: str) -> ProxyError:
    """A 400 for invalid or inexpressible client input, naming the field."""
    return ProxyError(400, message, type="invalid_request_error", param=param)


# --------------------------------------------------------------------------- request


def request_to_ollama(body: dict[str, Any], *, model: str) -> dict[str, Any]:
    """Translate an OpenAI chat request into an Ollama ``POST /api/chat`` body for `model`.

    Raises ProxyError(400, type="invalid_request_error", param=<field>) on input
    that is malformed or that Ollama cannot serve faithfully (module docstring).
    """
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", "body")
    _reject_inexpressible(body)
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise _bad("'stream' must be a boolean", "stream")
    out: dict[str, Any] = {
        "model": model,
        "messages": _convert_messages(body.get("messages")),
        "stream": bool(stream),  # explicit: Ollama defaults to true (§4.1)
    }
    tools = _convert_tools(body.get("tools"), body.get("tool_choice"))
    if tools:
        out["tools"] = tools
    fmt = _convert_response_format(body.get("response_format"))
    if fmt is not None:
        out["format"] = fmt
    options = _convert_options(body)
    if options:
        out["options"] = options
    think = _convert_reasoning(body)
    if think is not None:
        out["think"] = think
    return out


def _reject_inexpressible(body: dict[str, Any]) -> None:
    for field, message in _UNSUPPORTED_FIELDS.items():
        if body.get(field) is not None:
            raise _bad(message, field)
    n = body.get("n")
    if n is not None and n != 1:
        raise _bad(f"'n' must be 1: Ollama returns a single choice (got {n!r})", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise _bad("'logprobs'/'top_logprobs' are not supported by the Ollama backend", "logprobs")
    if body.get("logit_bias"):
        raise _bad("'logit_bias' is not supported by Ollama", "logit_bias")
    modalities = body.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        raise _bad("only text output is supported by Ollama", "modalities")


def _convert_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array", "messages")
    tool_names: dict[str, str] = {}  # tool call id -> function name, seen so far
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(f"{where} must be an object", where)
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLE_BY_OPENAI_ROLE:
            raise _bad(f"{where}.role {role!r} is not supported by the Ollama backend", f"{where}.role")
        if role == "assistant":
            out.append(_convert_assistant(message, where, tool_names))
        elif role == "tool":
            out.append(_convert_tool_result(message, where, tool_names))
        else:
            text, images = _text_and_images(message.get("content"), where, images_ok=role == "user")
            out.append(_with_images({"role": _ROLE_BY_OPENAI_ROLE[role], "content": text}, images))
    return out


def _with_images(message: dict[str, Any], images: list[str]) -> dict[str, Any]:
    if images:
        message["images"] = images
    return message


def _convert_assistant(message: dict[str, Any], where: str, tool_names: dict[str, str]) -> dict[str, Any]:
    text, _ = _text_and_images(message.get("content"), where, images_ok=False)
    out: dict[str, Any] = {"role": "assistant", "content": text}
    thinking = message.get("reasoning_content")
    if thinking is None:
        thinking = message.get("reasoning")  # Ollama /v1 and OpenRouter name it so (§1.4)
    if thinking is not None:
        if not isinstance(thinking, str):
            raise _bad(f"{where}.reasoning_content must be a string", f"{where}.reasoning_content")
        if thinking:
            out["thinking"] = thinking  # Ollama wants the thinking back on history (§4.1)
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise _bad(f"{where}.tool_calls must be an array", f"{where}.tool_calls")
        converted = [_convert_tool_call(c, f"{where}.tool_calls[{j}]", j, tool_names) for j, c in enumerate(calls)]
        if converted:
            out["tool_calls"] = converted
    return out


def _convert_tool_call(call: Any, where: str, index: int, tool_names: dict[str, str]) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or call.get("type", "function") != "function":
        raise _bad(f"{where} must be a function tool call", where)
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(f"{where}.function.name must be a non-empty string", f"{where}.function.name")
    out: dict[str, Any] = {
        "function": {"index": index, "name": name, "arguments": _parse_arguments(function.get("arguments"), where)}
    }
    call_id = call.get("id")
    if isinstance(call_id, str) and call_id:
        out["id"] = call_id
        tool_names[call_id] = name  # a later duplicate id wins, as in Ollama's /v1
    return out


def _parse_arguments(arguments: Any, where: str) -> dict[str, Any]:
    """OpenAI's JSON-string arguments -> the JSON object Ollama requires (§6.1)."""
    param = f"{where}.function.arguments"
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}  # a call without arguments; some clients send "" for it
    if not isinstance(arguments, str):
        raise _bad(f"{param} must be a string of JSON", param)
    try:
        parsed = json.loads(arguments)
    except ValueError as exc:
        raise _bad(f"{param} is not valid JSON ({exc.msg}); Ollama needs a JSON object", param) from None
    if not isinstance(parsed, dict):
        raise _bad(f"{param} must encode a JSON object for Ollama", param)
    return parsed


def _convert_tool_result(message: dict[str, Any], where: str, tool_names: dict[str, str]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"{where}.tool_call_id must be a non-empty string", f"{where}.tool_call_id")
    name = tool_names.get(call_id) or message.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(
            f"{where}.tool_call_id {call_id!r} does not match any earlier assistant tool call "
            "(Ollama needs the tool's name)",
            f"{where}.tool_call_id",
        )
    text, images = _text_and_images(message.get("content"), where, images_ok=True)
    out = {"role": "tool", "content": text, "tool_call_id": call_id, "tool_name": name}
    return _with_images(out, images)


def _text_and_images(content: Any, where: str, *, images_ok: bool) -> tuple[str, list[str]]:
    """A message's text (parts joined) and its images as bare base64."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or an array of parts", f"{where}.content")
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        param = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):  # an earlier refusal is just the assistant's words
            if not isinstance(part.get(kind), str):
                raise _bad(f"{param}.{kind} must be a string", param)
            texts.append(part[kind])
        elif kind == "image_url" and images_ok:
            images.append(_image_base64(part.get("image_url"), param))
        else:
            raise _bad(f"{param}: a part of type {kind!r} is not supported here by the Ollama backend", param)
    return _PART_SEPARATOR.join(texts), images


def _image_base64(image_url: Any, param: str) -> str:
    """A base64 data URL -> the bare base64 string Ollama's ``images`` takes (§4.1)."""
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise _bad(f"{param}.image_url.url must be a string", param)
    if url[:8].lower().startswith(("http://", "https://")):
        raise _bad(
            f"{param}: Ollama cannot fetch image URLs; send the image inline as a base64 data URL "
            "(data:image/png;base64,...)",
            param,
        )
    header, comma, data = url.partition(",")
    header = header.lower()
    if not comma or not header.startswith("data:") or not header.endswith(";base64") or not data:
        raise _bad(f"{param}: images must be base64 data URLs (data:image/png;base64,...)", param)
    mime = header[len("data:") : -len(";base64")]
    if mime and not mime.startswith("image/"):
        raise _bad(f"{param}: Ollama accepts only images, not {mime!r}", param)
    return data


def _convert_tools(tools: Any, tool_choice: Any) -> list[dict[str, Any]]:
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise _bad("'tools' must be an array", "tools")
    converted = [_convert_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
    allowed = _names_allowed_by(tool_choice)
    if allowed is None:
        return converted
    known = {t["function"]["name"] for t in converted}
    missing = sorted(allowed - known)
    if missing:
        raise _bad(f"'tool_choice' names tools that are not in 'tools': {', '.join(missing)}", "tool_choice")
    return [t for t in converted if t["function"]["name"] in allowed]


def _convert_tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise _bad(f"{where}: tools of type {kind!r} are not supported by Ollama (function tools only)", where)
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise _bad(f"{where}.function.name must be a non-empty string", f"{where}.function.name")
    out = {"name": function["name"]}
    for key in ("description", "parameters"):  # `strict` has no Ollama field
        if function.get(key) is not None:
            out[key] = function[key]
    return {"type": "function", "function": out}


def _names_allowed_by(tool_choice: Any) -> set[str] | None:
    """The tool names to send for a `tool_choice` (None: all of them). See the module docstring."""
    if tool_choice is None or tool_choice in ("auto", "required"):
        return None
    if tool_choice == "none":
        return set()
    kind = tool_choice.get("type") if isinstance(tool_choice, dict) else None
    if kind == "function":
        return {_function_name(tool_choice, "tool_choice")}
    if kind == "allowed_tools" and isinstance(tool_choice.get("allowed_tools"), dict):
        listed = tool_choice["allowed_tools"].get("tools")
        if isinstance(listed, list):
            return {_function_name(t, f"tool_choice.allowed_tools.tools[{i}]") for i, t in enumerate(listed)}
    raise _bad(f"'tool_choice' {tool_choice!r} is not supported by the Ollama backend", "tool_choice")


def _function_name(ref: Any, param: str) -> str:
    function = ref.get("function") if isinstance(ref, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name or ref.get("type", "function") != "function":
        raise _bad(f"{param} must name a function tool", param)
    return name


def _convert_response_format(response_format: Any) -> str | dict[str, Any] | None:
    """OpenAI `response_format` -> Ollama `format`: "json" or a JSON Schema (§4.1, §4.5)."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise _bad("'response_format.json_schema.schema' must be a JSON Schema object", "response_format")
        return schema
    raise _bad(f"'response_format' type {kind!r} is not supported by Ollama", "response_format")


def _convert_options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for field in ("max_completion_tokens", "max_tokens"):  # the newer name wins when both are sent
        value = body.get(field)
        if value is not None:
            options["num_predict"] = _integer(value, field, minimum=1)
            break
    for field in _NUMBER_OPTIONS:
        if body.get(field) is not None:
            options[field] = _number(body[field], field)
    for field in _INTEGER_OPTIONS:
        if body.get(field) is not None:
            options[field] = _integer(body[field], field)
    stop = _convert_stop(body.get("stop"))
    if stop:
        options["stop"] = stop
    return options


def _number(value: Any, field: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"'{field}' must be a number", field)
    return value


def _integer(value: Any, field: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise _bad(f"'{field}' must be an integer{bound}", field)
    return value


def _convert_stop(stop: Any) -> list[str]:
    """`stop` (string or array of strings) -> Ollama's `options.stop` array."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise _bad("'stop' must be a string or an array of strings", "stop")


def _convert_reasoning(body: dict[str, Any]) -> bool | str | None:
    """`reasoning_effort` (or `reasoning.effort`, which Ollama's /v1 also reads) -> `think`."""
    effort, field = body.get("reasoning_effort"), "reasoning_effort"
    if effort is None and isinstance(body.get("reasoning"), dict):
        effort, field = body["reasoning"].get("effort"), "reasoning.effort"
    if effort is None:
        return None
    if not isinstance(effort, str) or effort not in THINK_BY_REASONING_EFFORT:
        allowed = ", ".join(THINK_BY_REASONING_EFFORT)
        raise _bad(f"'{field}' must be one of {allowed} (got {effort!r})", field)
    return THINK_BY_REASONING_EFFORT[effort]


# --------------------------------------------------------------------------- responses


def response_from_ollama(body: dict[str, Any], *, model: str, created: int, completion_id: str) -> dict[str, Any]:
    """Translate a non-streaming ``/api/chat`` reply into an OpenAI ``chat.completion``.

    `model` is the client's model name; `created` and `completion_id` come from
    the adapter (Ollama's reply has no id).  Raises TranslationError (502) on a
    reply that is not a final chat reply, ProxyError (502) on a 2xx error body.
    """
    if not isinstance(body, dict):
        raise TranslationError("Ollama's reply is not a JSON object")
    if body.get("error") is not None:
        raise ProxyError(502, _error_text(body["error"]), type="api_error")
    if body.get("done") is not True:
        raise TranslationError("Ollama's non-streaming reply is not final (done is not true)")
    thinking, content, calls = _message_parts(body)
    used_ids: set[str] = set()
    tool_calls = [_openai_tool_call(call, i, completion_id, used_ids) for i, call in enumerate(calls)]
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if thinking:
        message["reasoning_content"] = thinking
    if tool_calls:
        message["tool_calls"] = tool_calls
    finish_reason = _finish_reason(body.get("done_reason"), bool(tool_calls))
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": _usage(body),
    }


def _message_parts(line: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]]]:
    """(thinking, content, tool calls) of one Ollama reply or stream line, type-checked."""
    message = line.get("message")
    if message is None:
        return "", "", []
    if not isinstance(message, dict):
        raise TranslationError("Ollama's 'message' is not an object")
    thinking, content = message.get("thinking") or "", message.get("content") or ""
    if not isinstance(thinking, str) or not isinstance(content, str):
        raise TranslationError("Ollama's message.thinking/message.content is not a string")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise TranslationError("Ollama's message.tool_calls is not an array of objects")
    return thinking, content, calls


def _openai_tool_call(call: dict[str, Any], index: int, completion_id: str, used_ids: set[str]) -> dict[str, Any]:
    """One whole Ollama tool call -> an OpenAI tool call (arguments as a JSON string).

    Ollama may omit ids (older versions do); a tool result must name its call by a
    unique id (OpenAI and Anthropic both match results to calls by id), so a
    missing or repeated id is replaced by ``call_<completion_id>_<index>``.
    """
    function = call.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise TranslationError("Ollama sent a tool call without a function name")
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id or call_id in used_ids:
        call_id = f"call_{completion_id}_{index}"
    used_ids.add(call_id)
    arguments = _arguments_string(function.get("arguments"))
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _arguments_string(arguments: Any) -> str:
    # Compact separators and raw Unicode, as OpenAI itself writes arguments.
    if arguments is None:
        return "{}"
    if isinstance(arguments, dict):
        return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    if isinstance(arguments, str):
        return arguments  # not Ollama's documented shape, but already what OpenAI wants
    raise TranslationError("Ollama sent tool-call arguments that are not a JSON object")


def _finish_reason(done_reason: Any, called_tools: bool) -> str:
    if called_tools:
        return "tool_calls"
    return FINISH_REASON_BY_DONE_REASON.get(done_reason, "stop") if isinstance(done_reason, str) else "stop"


def _usage(line: dict[str, Any]) -> dict[str, int]:
    """Ollama's counters -> OpenAI usage (protocols.md §6.2; Ollama reports no cache split)."""
    prompt, completion = _count(line, "prompt_eval_count"), _count(line, "eval_count")
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _count(line: dict[str, Any], key: str) -> int:
    value = line.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TranslationError(f"Ollama's {key} is not a non-negative integer")
    return value


def _error_text(error: Any) -> str:
    if isinstance(error, str) and error:
        return error
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return "Ollama reported an error"


# --------------------------------------------------------------------------- stream


class _State(enum.Enum):
    STREAMING = "streaming"  # lines are expected
    DONE = "done"  # the done line was translated; only finish() may follow
    FAILED = "failed"  # an error chunk was emitted; only finish() may follow
    CLOSED = "closed"  # finish() returned, or the translator raised


class OllamaToOpenAIStream:
    """Parsed Ollama NDJSON lines in, OpenAI ``chat.completion.chunk`` dicts (and ``"[DONE]"``) out.

    ``feed`` takes one parsed line and returns its chunks at once; ``finish`` is
    called when the upstream body ends.  A normal stream ends with ``"[DONE]"``;
    an ``{"error": ...}`` line, or a body that ends before the ``done: true``
    line, yields one OpenAI error chunk (what the openai SDK raises on) and
    nothing after it.  A line after the end, or a malformed line, raises
    ``TranslationError`` and every later call raises too.
    """

    def __init__(self, *, model: str, created: int, completion_id: str, include_usage: bool) -> None:
        self._model = model
        self._created = created
        self._id = completion_id
        self._include_usage = include_usage
        self._state = _State.STREAMING
        self._started = False  # the role chunk was sent
        self._tool_calls = 0  # running tool-call index across lines
        self._tool_ids: set[str] = set()  # ids handed out so far (they must be unique)

    def feed(self, line: dict[str, Any]) -> list[dict[str, Any] | str]:
        if self._state is not _State.STREAMING:
            return self._broken(f"Ollama sent a line after the stream ended ({self._state.value})")
        if not isinstance(line, dict):
            return self._broken("Ollama sent an NDJSON line that is not a JSON object")
        if line.get("error") is not None:  # mid-stream failure; the HTTP status is still 200 (§4.3)
            return self._fail(_error_text(line["error"]))
        try:
            return self._translate(line)
        except TranslationError:
            self._state = _State.CLOSED
            raise

    def finish(self) -> list[dict[str, Any] | str]:
        state, self._state = self._state, _State.CLOSED
        if state is _State.STREAMING:
            return self._fail("Ollama's stream ended before its final line (done: true)")
        if state is _State.CLOSED:
            raise TranslationError("finish() called on a stream translator that already ended")
        return []

    def _translate(self, line: dict[str, Any]) -> list[dict[str, Any] | str]:
        thinking, content, calls = _message_parts(line)
        out: list[dict[str, Any] | str] = []
        if not self._started:
            self._started = True
            out.append(self._chunk({"role": "assistant"}))
        if thinking:
            out.append(self._chunk({"reasoning_content": thinking}))
        if content:
            out.append(self._chunk({"content": content}))
        for call in calls:
            out.append(self._chunk({"tool_calls": [self._tool_call_delta(call)]}))
        if line.get("done") is True:
            out.extend(self._end(line))
        return out

    def _tool_call_delta(self, call: dict[str, Any]) -> dict[str, Any]:
        # Ollama sends each call whole (§4.2): one delta carries id, name and
        # the complete arguments, which the openai SDK and the OpenAI->Anthropic
        # translator both accept (§1.4: some servers do the same).
        index, self._tool_calls = self._tool_calls, self._tool_calls + 1
        return {"index": index, **_openai_tool_call(call, index, self._id, self._tool_ids)}

    def _end(self, line: dict[str, Any]) -> list[dict[str, Any] | str]:
        usage = _usage(line)  # validated before anything is emitted for this line's end
        self._state = _State.DONE
        reason = _finish_reason(line.get("done_reason"), self._tool_calls > 0)
        out: list[dict[str, Any] | str] = [self._chunk({}, finish_reason=reason)]
        if self._include_usage:
            out.append({**self._envelope(), "choices": [], "usage": usage})
        out.append(DONE)
        return out

    def _fail(self, message: str) -> list[dict[str, Any] | str]:
        # "api_error": Ollama's /v1 uses it for such failures (§4.5), and it is a
        # valid Anthropic error type too, so a composed stream keeps it.
        self._state = _State.FAILED
        return [openai_error_body(ProxyError(502, message, type="api_error"))]

    def _broken(self, message: str) -> list[dict[str, Any] | str]:
        self._state = _State.CLOSED
        raise TranslationError(message)

    def _envelope(self) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model}

    def _chunk(self, delta: dict[str, Any], *, finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**self._envelope(), "choices": [choice]}


# --------------------------------------------------------------------------- errors


def error_from_ollama(status: int, body: Any, *, model: str | None = None) -> ProxyError:
    """Turn a non-2xx Ollama reply (``{"error": "<message>"}``, §4.3) into a ProxyError.

    The status is kept; the error type is left to each client protocol's own
    table for that status.  ``body`` is the parsed JSON, or the raw text when the
    body was not JSON (Go's router answers an unknown path with plain
    ``404 page not found``).  For a 404, ``model`` (the upstream model name) is
    named in the message when Ollama's own message does not already name it.
    """
    if isinstance(body, dict) and "error" in body:
        message = _error_text(body["error"])
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:1000]
    else:
        message = f"Ollama returned HTTP {status}"
    if status == 404 and model and model not in message:
        message = f"model {model!r} not found on the Ollama server ({message}); pull it with `ollama pull {model}`"
    return ProxyError(status, message)


def request_without_think(body: dict[str, Any], error: ProxyError) -> dict[str, Any] | None:
    """The ``/api/chat`` body to retry once when Ollama refused ``think``, else None.

    Ollama answers 400 ``"<model>" does not support thinking`` when ``think``
    asks a model without that capability for reasoning, and Claude Code asks
    for thinking on every request (its ``thinking`` config becomes
    ``reasoning_effort`` on the pivot).  The core cannot know a local model's
    capabilities, so the adapter retries without ``think``: the answer is the
    same minus reasoning the model could not produce anyway.
    """
    if error.status != 400 or "does not support thinking" not in error.message or "think" not in body:
        return None
    return {key: value for key, value in body.items() if key != "think"}
