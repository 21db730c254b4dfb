"""`GET /v1/models` and `GET /v1/models/{id}` in each vendor's shape.

Pattern routes (``claude-*``) are not listed: they are not model names.  One
model is still retrievable by any name a route serves (``claude-opus-4-1``
through ``claude-*``), since a client that asks about a model it is about to
use should get the same answer the chat route would give it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["anthropic_model", "anthropic_models_list", "openai_model", "openai_models_list"]


def openai_model(name: str, *, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "llm-proxy"}


def openai_models_list(names: Sequence[str], *, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [openai_model(name, created=created) for name in names]}


def anthropic_model(name: str) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}


def anthropic_models_list(names: Sequence[str]) -> dict[str, Any]:
    data = [anthropic_model(name) for name in names]
    return {
        "data": data,
        "has_more": False,
        "first_id": names[0] if names else None,
        "last_id": names[-1] if names else None,
    }
