"""Starting the fake upstreams (nginx, the SSE fake) and the nginx proxy_pass floor.

nginx runs in the foreground (``daemon off``) as our child, with its prefix,
pid file and temp paths in the run's private temp directory, so nothing of the
system's nginx set-up is read or written.  Without nginx, the SSE fake (an
asyncio server) also serves the fixed JSON answers: slower, but still far
faster than any Python proxy, which is what the direct baseline needs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import attrs

from .payloads import ANTHROPIC_MESSAGE, OPENAI_COMPLETION
from .procs import Supervisor, free_port, wait_for_port

__all__ = ["Fakes", "INSTALL_HINT", "start_fakes", "start_floor"]

HERE = Path(__file__).resolve().parent
INSTALL_HINT = "apt-get install nginx-light wrk"
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")


@attrs.frozen
class Fakes:
    json_port: int  # fixed JSON answers: nginx, or the SSE fake as fallback
    sse_port: int
    json_tool: str  # "nginx 1.22.1" or "python (asyncio fallback)"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def _nginx_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    return (out.stderr or out.stdout).strip().split("/")[-1] or "?"


def _render(template: str, values: dict[str, str | int]) -> str:
    text = (HERE / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    left = _PLACEHOLDER.search(text)
    if left:
        raise RuntimeError(f"{template}: placeholder {left.group()} was left unrendered")
    return text


def _body_literal(body: bytes) -> str:
    text = body.decode()
    if any(c in text for c in "'\\$"):
        raise ValueError("a fixed body for nginx must not contain ' \\ or $")
    return text


def _start_nginx(sup: Supervisor, conf: Path, workdir: Path, cpu: int | None, log: IO[Any]) -> subprocess.Popen[Any]:
    binary = nginx_binary()
    assert binary is not None
    argv = [binary, "-p", str(workdir), "-c", str(conf), "-e", "stderr"]
    return sup.start(argv, cpu=cpu, cwd=workdir, stdout=log, stderr=log)


def start_fakes(sup: Supervisor, workdir: Path, *, cpu: int | None, chunks: int, delay_ms: float,
                log: IO[Any]) -> Fakes:
    """The SSE fake, and nginx for the fixed answers (or the SSE fake again without nginx)."""
    sse = sup.start([sys.executable, "-m", "benchmarks.fake_sse", "--port", "0", "--chunks", str(chunks),
                     "--delay-ms", str(delay_ms)], cpu=cpu, cwd=HERE.parent, stdout=subprocess.PIPE, stderr=log)
    assert sse.stdout is not None
    line = sse.stdout.readline().decode().strip()
    if not line.startswith("LISTENING "):
        raise RuntimeError(f"the SSE fake did not start (said {line!r})")
    sse_port = int(line.split()[1])
    binary = nginx_binary()
    if binary is None:
        return Fakes(sse_port, sse_port, "python asyncio fake (nginx not installed)")
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(_render("nginx.conf.tmpl", {
        "PREFIX": workdir, "PORT": port,
        "OPENAI_BODY": _body_literal(OPENAI_COMPLETION), "ANTHROPIC_BODY": _body_literal(ANTHROPIC_MESSAGE),
    }))
    proc = _start_nginx(sup, conf, workdir, cpu, log)
    wait_for_port(port, proc=proc, timeout=15)
    return Fakes(port, sse_port, f"nginx {_nginx_version(binary)} (return 200, 1 worker)")


def start_floor(sup: Supervisor, workdir: Path, fakes: Fakes, *, cpu: int | None,
                log: IO[Any]) -> tuple[subprocess.Popen[Any], int, int]:
    """nginx proxy_pass in front of the fakes: (process, load port, stream port)."""
    load_port, stream_port = free_port(), free_port()
    conf = workdir / "nginx-floor.conf"
    conf.write_text(_render("nginx-floor.conf.tmpl", {
        "PREFIX": workdir, "LOAD_PORT": load_port, "STREAM_PORT": stream_port,
        "FAKE_PORT": fakes.json_port, "SSE_PORT": fakes.sse_port,
    }))
    proc = _start_nginx(sup, conf, workdir, cpu, log)
    wait_for_port(load_port, proc=proc, timeout=15)
    wait_for_port(stream_port, proc=proc, timeout=15)
    time.sleep(0.1)
    return proc, load_port, stream_port
