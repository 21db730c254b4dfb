"""Peers measured in the same run as the proxy: the Portkey gateway (Node).

The issue's peer figures come from another run on another day, and this VM's
speed drifts up to 2x within minutes; a peer measured beside the proxy, in
the same rounds, is the only comparison that holds.  Portkey's gateway is an
npm package: ``python -m benchmarks.run --install-peers`` puts it in
``benchmarks/.peers/`` (git-ignored) with the machine's npm, and the
``portkey`` scenario then runs it pinned like the proxy, one Node process,
routed to the same fake upstream by its ``x-portkey-*`` headers.

Only its request/response load is measured.  Its streams are not: 1.15.2 on
Node 20 answers a streamed request to the SSE fake with a 500 ("TypeError:
immutable" when it adds its headers to the upstream's response), so there is
no stream of its to time.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

__all__ = ["PEERS_DIR", "PORTKEY_PACKAGE", "install_portkey", "portkey_argv", "portkey_entry"]

PEERS_DIR = Path(__file__).resolve().parent / ".peers"
PORTKEY_PACKAGE = "@portkey-ai/gateway@1.15.2"  # the version of performance-notes.md


def portkey_entry() -> Path | None:
    """The installed gateway's start script, or None."""
    entry = PEERS_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    return entry if entry.is_file() and shutil.which("node") else None


def install_portkey(say: Callable[[str], None]) -> str | None:
    """Install the gateway with npm unless it is there; a reason on failure, else None."""
    if portkey_entry() is not None:
        return None
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return "node and npm are not installed (Debian: apt-get install nodejs npm)"
    say(f"installing {PORTKEY_PACKAGE} into {PEERS_DIR} with npm")
    PEERS_DIR.mkdir(exist_ok=True)
    done = subprocess.run([npm, "install", "--prefix", str(PEERS_DIR), "--no-audit", "--no-fund", PORTKEY_PACKAGE],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or portkey_entry() is None:
        return f"npm install {PORTKEY_PACKAGE} failed: {(done.stderr or done.stdout)[-500:]}"
    return None


def portkey_argv(port: int) -> list[str]:
    entry = portkey_entry()
    assert entry is not None, "the Portkey gateway is not installed (--install-peers)"
    return ["node", str(entry), f"--port={port}", "--headless"]
