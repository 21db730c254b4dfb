"""`GET /v1/models` in each vendor's shape, listing the configured models.

Pattern routes (``claude-*``) are not listed: they are not model names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["anthropic_models_list", "openai_models_list"]


def openai_models_list(names: Sequence[str], *, created: int) -> dict[str, Any]:
    data = [{"id": name, "object": "model", "created": created, "owned_by": "llm-proxy"} for name in names]
    return {"object": "list", "data": data}


def anthropic_models_list(names: Sequence[str]) -> dict[str, Any]:
    data = [
        {"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}
        for name in names
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": names[0] if names else None,
        "last_id": names[-1] if names else None,
    }
