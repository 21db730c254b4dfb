"""Child processes: start them pinned, read their CPU and memory from /proc, always kill them.

Theory of operation: every process the harness starts goes through a
`Supervisor`, which starts it in its own session (so Ctrl-C on the terminal
reaches only the harness) and remembers its PID.  `Supervisor.close` (run from
``with``, from ``atexit`` and from the SIGTERM handler `install_signal_handlers`
sets up) sends SIGTERM to each remembered process group, waits a little, then
SIGKILLs what is left: the process groups are those of our own children, so
their descendants (hypercorn's worker, nginx's worker) go too, and nothing else
on the machine is touched.

CPU pinning uses ``taskset -c N`` when it is installed, else
``os.sched_setaffinity`` in the child; with fewer than two CPUs nothing is pinned.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Supervisor",
    "cpu_seconds",
    "free_port",
    "install_signal_handlers",
    "process_tree",
    "status_kib",
    "wait_for_port",
]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, proc: subprocess.Popen[Any] | None = None, timeout: float = 30.0) -> None:
    """Return once 127.0.0.1:`port` accepts connections; raise if `proc` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


class Supervisor:
    """Starts child processes and guarantees they are killed (see the module docstring)."""

    def __init__(self, *, pin: bool) -> None:
        self.pin = pin and (os.cpu_count() or 1) >= 2
        self._taskset = shutil.which("taskset")
        self._children: list[subprocess.Popen[Any]] = []
        atexit.register(self.close)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, argv: Sequence[str], *, cpu: int | None, env: Mapping[str, str] | None = None,
              cwd: str | Path | None = None, stdout: IO[Any] | int | None = None,
              stderr: IO[Any] | int | None = None) -> subprocess.Popen[Any]:
        argv = list(argv)
        preexec = None
        if self.pin and cpu is not None:
            if self._taskset:
                argv = [self._taskset, "-c", str(cpu), *argv]
            else:
                preexec = _affinity(cpu)
        proc = subprocess.Popen(argv, env=dict(env) if env is not None else None, cwd=cwd, stdout=stdout,
                                stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=preexec)
        self._children.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], *, grace: float = 5.0) -> None:
        """SIGTERM the child's process group, SIGKILL it after `grace` seconds."""
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        if proc in self._children:
            self._children.remove(proc)

    def close(self) -> None:
        for proc in list(reversed(self._children)):
            self.stop(proc, grace=3.0)


def _affinity(cpu: int) -> Any:
    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def install_signal_handlers() -> None:
    """Make SIGTERM/SIGHUP (and SIGINT, even if inherited as ignored) raise KeyboardInterrupt.

    So ``finally`` blocks and atexit run and every child is killed, however the run is stopped.
    """
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


# -- /proc readings -------------------------------------------------------------------


def _children_of() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (pre-order)."""
    children = _children_of()
    out, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        out.append(current)
        todo.extend(sorted(children.get(current, [])))
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), after pid and comm
    return total / _CLOCK_TICKS


def status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (``VmRSS``, ``VmHWM``), None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
