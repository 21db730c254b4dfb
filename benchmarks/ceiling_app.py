"""The ceiling: quart-trio answering the fixed completion itself, no upstream, no proxy logic.

Served by the ``quart-ceiling`` scenario exactly as the proxy is (``hypercorn -k
trio -w 1``, pinned), this shows what hypercorn and Quart cost per request on
this machine; the proxy's figures minus these are what our own code (handler,
core, upstream client) adds.  performance-notes.md measured the same thing for
its calibration table.
"""

from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio

from benchmarks.payloads import OPENAI_COMPLETION

__all__ = ["app"]

app = QuartTrio("ceiling")


@app.post("/v1/chat/completions")
async def chat_completions() -> Response:
    await request.get_data(cache=False)  # read the body, as the proxy must
    return Response(OPENAI_COMPLETION, content_type="application/json")


@app.get("/health")
async def health() -> Response:
    return Response(b'{"status":"ok"}', content_type="application/json")
