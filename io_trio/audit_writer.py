"""Writing audit records without ever slowing a request: a bounded queue, a drain task, a thread.

Theory of operation: the request path calls `AuditWriter.submit(record)`, which
is synchronous and never waits: it puts the record in a bounded trio memory
channel, or, when the channel is full, drops it and counts the drop (the
``on_drop`` callback feeds the metrics).  One task, `AuditWriter.run`, started
in the app's nursery, takes whatever has queued up (up to `batch` records) and
hands the batch to a worker thread (`trio.to_thread.run_sync`), which encodes
and redacts each record (`core.audit.audit_line`, CPU work kept off the event
loop) and writes the lines to a sink: a size-rotated JSONL file
(`RotatingFile`) or, with no file configured, a text stream (stdout).

A failing disk never reaches a request either: a batch that cannot be written
is counted as dropped (reason ``write_error``) and logged once, without any
record content, until a write succeeds again.

Shutdown: `aclose()` closes the channel; `run` writes what is still queued and
returns; `aclose` waits for that (bounded by `drain_timeout`).  Cancelling
`run` instead loses the queued records, so the app calls `aclose` first.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

import trio

from core.audit import RequestLogConfig, audit_line
from core.redact import Redactor

__all__ = ["AuditSink", "AuditWriter", "RotatingFile", "StreamSink", "open_audit_writer"]

log = logging.getLogger("llm_proxy.audit")

DropCallback = Callable[[str], None]  # called with the reason: "queue_full" or "write_error"


class AuditSink(Protocol):
    """Where lines go.  Both calls block and run in a worker thread."""

    def write(self, lines: list[str]) -> None: ...
    def close(self) -> None: ...


class RotatingFile:
    """A JSONL file rotated by size: ``f`` -> ``f.1`` -> ... -> ``f.<backups>``, the oldest deleted.

    Rotation happens before a line that would take the file past `max_bytes`, so
    a line is never split across files (a single line larger than `max_bytes`
    gets a file of its own).  With ``backups=0`` the file is truncated instead.
    The file is created 0600: audit records hold prompts and responses.
    """

    def __init__(self, path: str | Path, *, max_bytes: int, backups: int) -> None:
        if max_bytes < 1 or backups < 0:
            raise ValueError("max_bytes must be >= 1 and backups >= 0")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: Any = None
        self._size = 0

    def write(self, lines: list[str]) -> None:
        if self._file is None:
            self._open()
        for line in lines:
            data = line.encode("utf-8", "surrogatepass") + b"\n"
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            self._file.write(data)
            self._size += len(data)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "ab")
        self._size = self._file.tell()

    def _rotate(self) -> None:
        self.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for index in range(self.backups - 1, 0, -1):
                older = self._backup(index)
                if older.exists():
                    os.replace(older, self._backup(index + 1))
            os.replace(self.path, self._backup(1))
        self._open()

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")


class StreamSink:
    """Lines to a text stream (stdout by default), flushed per batch; never closes it."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def write(self, lines: list[str]) -> None:
        stream = self.stream if self.stream is not None else sys.stdout
        stream.write("".join(line + "\n" for line in lines))
        stream.flush()

    def close(self) -> None:
        pass


class AuditWriter:
    """See the module docstring.  Create it in the running trio loop; run `run` in a nursery."""

    def __init__(self, sink: AuditSink, redactor: Redactor, *, queue_size: int, batch: int = 256,
                 on_drop: DropCallback | None = None, drain_timeout: float = 10.0) -> None:
        if queue_size < 1 or batch < 1:
            raise ValueError("queue_size and batch must be >= 1")
        self.sink = sink
        self.redactor = redactor
        self.batch = batch
        self.on_drop = on_drop
        self.drain_timeout = drain_timeout
        self.dropped = 0  # queue full (request path)
        self.failed = 0  # could not be encoded or written (worker thread)
        self.written = 0
        self._send, self._receive = trio.open_memory_channel[Mapping[str, Any]](queue_size)
        self._done = trio.Event()
        self._running = False
        self._failing = False

    # -- the request path ------------------------------------------------------------------

    def submit(self, record: Mapping[str, Any]) -> bool:
        """Queue `record`; never blocks.  False when it was dropped (queue full or closed)."""
        try:
            self._send.send_nowait(record)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop("queue_full")
            return False
        return True

    # -- the drain task --------------------------------------------------------------------

    async def run(self) -> None:
        """Write queued records until `aclose`; then flush what is left and return."""
        self._running = True
        try:
            async with self._receive:
                async for record in self._receive:
                    await trio.to_thread.run_sync(self._write, self._take_batch(record))
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.sink.close)
            self._done.set()

    def _take_batch(self, first: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        batch = [first]
        while len(batch) < self.batch:
            try:
                batch.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return batch

    def _write(self, batch: list[Mapping[str, Any]]) -> None:
        """Worker thread: encode, redact, write.  Never raises."""
        lines = []
        for record in batch:
            try:
                lines.append(audit_line(record, self.redactor))
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the log
                self._fail(1, f"an audit record could not be encoded ({type(exc).__name__})")
        try:
            self.sink.write(lines)
        except OSError as exc:
            self._fail(len(lines), f"audit log write failed: {exc.strerror or type(exc).__name__}")
            return
        self.written += len(lines)
        self._failing = False

    def _fail(self, count: int, message: str) -> None:
        self.failed += count
        if self.on_drop is not None:
            for _ in range(count):
                self.on_drop("write_error")
        if not self._failing:  # once per failure streak, not once per record
            self._failing = True
            log.error("%s; dropping records until it works again", message)

    async def aclose(self) -> None:
        """Stop accepting records, let `run` write the queued ones, wait (bounded) until it has."""
        await self._send.aclose()
        if not self._running:
            return
        with trio.move_on_after(self.drain_timeout):
            await self._done.wait()


def open_audit_writer(config: RequestLogConfig, redactor: Redactor, *, on_drop: DropCallback | None = None,
                      stream: TextIO | None = None) -> AuditWriter:
    """The writer `config` asks for: a rotated file, or `stream` (stdout) when no file is set."""
    sink: AuditSink
    if config.file is not None:
        sink = RotatingFile(config.file, max_bytes=config.max_bytes, backups=config.backups)
    else:
        sink = StreamSink(stream)
    return AuditWriter(sink, redactor, queue_size=config.queue_size, on_drop=on_drop)
