"""OpenAI ``tools`` / ``tool_choice`` / ``parallel_tool_calls`` -> Anthropic.

Theory of operation: `tools_and_choice` returns the ``tools`` and
``tool_choice`` keys of the Anthropic request (protocols.md §3.3):

* each function tool becomes ``{name, description?, input_schema, strict?}``;
  ``input_schema`` is always an object schema (Anthropic requires one; LiteLLM
  also forces it): omitted ``parameters`` mean "no arguments", a schema without
  ``type``/``properties`` gets them; a schema of another explicit type cannot
  describe tool input and is a 400.  ``custom`` tools (free-text input) have no
  Anthropic equivalent: 400.
* ``tool_choice``: the string forms and a named function map one to one;
  ``allowed_tools`` is expressed exactly by sending only the allowed tools with
  ``auto``/``any``; a choice naming no offered tool is a 400 here rather than an
  opaque upstream error.
* ``parallel_tool_calls: false`` -> ``disable_parallel_tool_use: true`` on the
  choice (LiteLLM ``_map_tool_choice``).

Without tools, a ``tool_choice`` of ``none``/``auto`` is dropped (it changes
nothing) and a forcing one is a 400.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ProxyError

__all__ = ["tools_and_choice"]

# OpenAI string tool_choice -> Anthropic tool_choice (protocols.md §3.3).
# "none" is mapped, as LiteLLM and the Anthropic SDK do (old Portkey thought
# Anthropic lacked it, §7.7).
_TOOL_CHOICE_BY_STRING: dict[str, str] = {"auto": "auto", "required": "any", "none": "none"}
# allowed_tools.mode -> Anthropic tool_choice type.
_TOOL_CHOICE_BY_MODE: dict[str, str] = {"auto": "auto", "required": "any"}


def _invalid(message: str, param: str | None = None) -> ProxyError:
    return ProxyError(400, message, type="invalid_request_error", param=param)


def _input_schema(parameters: Any, where: str) -> dict[str, Any]:
    # Anthropic requires an object schema (§3.3); omitted parameters mean "no
    # arguments" in OpenAI.  A schema of another explicit type cannot describe
    # tool input, so it is an error rather than something we could coerce.
    if parameters is None:
        return {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise _invalid(f"{where} must be a JSON Schema object", where)
    if parameters.get("type", "object") != "object":
        raise _invalid(f"{where} must be a schema of type 'object'", where)
    return {**parameters, "type": "object", "properties": parameters.get("properties", {})}


def _tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise _invalid(f"{where}: only tools of type 'function' are supported", where)
    function = tool["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{where}.function.name must be a non-empty string", f"{where}.function.name")
    out: dict[str, Any] = {"name": name}
    if isinstance(function.get("description"), str) and function["description"]:
        out["description"] = function["description"]
    out["input_schema"] = _input_schema(function.get("parameters"), f"{where}.function.parameters")
    if function.get("strict") is True:
        out["strict"] = True
    if isinstance(tool.get("cache_control"), dict):
        out["cache_control"] = tool["cache_control"]
    return out


def _named(entry: Any) -> str | None:
    """Tool name of ``{"type":"function","function":{"name":x}}`` or ``{"type":"function","name":x}``."""
    if not isinstance(entry, dict):
        return None
    function = entry.get("function")
    name = (function if isinstance(function, dict) else entry).get("name")
    return name if isinstance(name, str) else None


def _choice(choice: Any, tools: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(Anthropic tool_choice, tools to send) for an OpenAI tool_choice (§3.3)."""
    if choice is None:
        return None, tools
    if isinstance(choice, str) and choice in _TOOL_CHOICE_BY_STRING:
        return {"type": _TOOL_CHOICE_BY_STRING[choice]}, tools
    kind = choice.get("type") if isinstance(choice, dict) else None
    names = {tool["name"] for tool in tools}
    if kind == "function" and _named(choice) in names:
        return {"type": "tool", "name": _named(choice)}, tools
    if kind == "allowed_tools" and isinstance(choice.get("allowed_tools"), dict):
        spec = choice["allowed_tools"]
        allowed = {_named(entry) for entry in spec.get("tools") or []}
        kept = [tool for tool in tools if tool["name"] in allowed]
        if kept and spec.get("mode", "auto") in _TOOL_CHOICE_BY_MODE:
            return {"type": _TOOL_CHOICE_BY_MODE[spec.get("mode", "auto")]}, kept
    raise _invalid(f"tool_choice {json.dumps(choice)[:200]} is not supported or names no offered tool", "tool_choice")


def tools_and_choice(body: dict[str, Any]) -> dict[str, Any]:
    """The ``tools`` and ``tool_choice`` keys of the Anthropic request (none, one or both)."""
    raw_tools = body.get("tools") or []
    if not isinstance(raw_tools, list):
        raise _invalid("tools must be an array", "tools")
    tools = [_tool(tool, f"tools[{j}]") for j, tool in enumerate(raw_tools)]
    if not tools:
        if body.get("tool_choice") not in (None, "none", "auto"):
            raise _invalid("tool_choice requires tools", "tool_choice")
        return {}
    choice, tools = _choice(body.get("tool_choice"), tools)
    # LiteLLM _map_tool_choice: parallel_tool_calls=false disables parallel use
    # on whatever choice applies (auto if none was given); meaningless for none.
    if body.get("parallel_tool_calls") is False and (choice is None or choice["type"] != "none"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    return {"tools": tools, "tool_choice": choice} if choice else {"tools": tools}
