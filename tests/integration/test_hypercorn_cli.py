"""``hypercorn -k trio io_trio.app:app``, as the README runs it: a clean start and one log line per event.

Hypercorn's CLI gives its ``hypercorn.error`` logger a stderr handler of its
own, in a format that prints the process id, once the app has started.  The
proxy's logging set-up must neither break that format (a "--- Logging error ---"
traceback at every start) nor let hypercorn's lines come out twice or
unredacted (io_trio.logs.adopt_server_loggers).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_served(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "hypercorn exited during start-up"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("hypercorn never answered /health")


def test_plain_hypercorn_starts_cleanly_and_logs_each_line_once(tmp_path: Path) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text("logging:\n  format: json\nmodels:\n  mock:\n    backend_type: mock\n")
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("LLM_PROXY_")}
    env["LLM_PROXY_CONFIG"] = str(config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "-k", "trio", "-w", "1", "--bind", f"127.0.0.1:{port}",
         "io_trio.app:app"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_until_served(port, proc)
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=10,
                           json={"model": "mock", "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200
        request_id = reply.headers["x-request-id"]
    finally:
        # To the master only, as a process manager does: it tells its worker to finish (a SIGTERM
        # straight to the worker would kill it before it wrote the last access line).
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
    assert "Logging error" not in err and "Traceback" not in err, err
    assert re.search(rf"Running on http://127\.0\.0\.1:{port}", err)
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    access = [r for r in records if r.get("logger") == "llm_proxy.access" and r.get("request_id") == request_id]
    assert len(access) == 1 and access[0]["status"] == 200, err
