"""The audit writer on a real disk and real threads: JSONL, rotation, drops, never blocking."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from core.audit import RequestLogConfig
from core.redact import REDACTED, Redactor
from io_trio.audit_writer import AuditWriter, RotatingFile, StreamSink, open_audit_writer

KEY = "sk-canary-writer-5e7d1f2a9c"


def record(index: int, **extra: Any) -> dict[str, Any]:
    return {"request_id": f"req-{index}", "method": "POST", "path": "/v1/messages", "status_code": 200,
            "outcome": "ok", **extra}


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def run_writer(writer: AuditWriter, records: list[dict[str, Any]]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        for item in records:
            assert writer.submit(item)
        await writer.aclose()


async def test_records_become_redacted_jsonl_lines_in_order(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "requests.jsonl"  # the folder is created on first write
    writer = open_audit_writer(RequestLogConfig(enabled=True, file=str(path)), Redactor(secrets=[KEY]))
    records = [record(i, error={"message": f"bad key {KEY}"}) for i in range(50)]
    await run_writer(writer, records)
    written = lines_of(path)
    assert [r["request_id"] for r in written] == [f"req-{i}" for i in range(50)]
    assert KEY not in path.read_text() and written[0]["error"]["message"] == f"bad key {REDACTED}"
    assert (writer.written, writer.dropped, writer.failed) == (50, 0, 0)


async def test_the_file_is_private_to_the_proxy_user(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    await run_writer(AuditWriter(RotatingFile(path, max_bytes=10_000, backups=1), Redactor(), queue_size=10),
                     [record(0)])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_rotation_by_size_keeps_the_newest_records_and_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    writer = AuditWriter(RotatingFile(path, max_bytes=1024, backups=2), Redactor(), queue_size=500)
    await run_writer(writer, [record(i, pad="x" * 100) for i in range(100)])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["requests.jsonl", "requests.jsonl.1", "requests.jsonl.2"]
    kept = [r for name in ("requests.jsonl.2", "requests.jsonl.1", "requests.jsonl") for r in lines_of(tmp_path / name)]
    ids = [int(r["request_id"].split("-")[1]) for r in kept]
    assert ids == list(range(ids[0], 100))  # contiguous, oldest files deleted, newest last
    assert all(p.stat().st_size <= 1024 for p in tmp_path.iterdir())


async def test_no_backups_means_the_file_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    await run_writer(AuditWriter(RotatingFile(path, max_bytes=1024, backups=0), Redactor(), queue_size=100),
                     [record(i, pad="y" * 200) for i in range(20)])
    assert [p.name for p in tmp_path.iterdir()] == ["requests.jsonl"]
    assert lines_of(path)[-1]["request_id"] == "req-19" and path.stat().st_size <= 1024


async def test_an_existing_file_is_appended_to_and_counts_toward_rotation(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps(record(-1, pad="z" * 900)) + "\n")
    await run_writer(AuditWriter(RotatingFile(path, max_bytes=1024, backups=1), Redactor(), queue_size=10),
                     [record(0, pad="z" * 200)])
    assert lines_of(tmp_path / "requests.jsonl.1")[0]["request_id"] == "req--1"
    assert lines_of(path)[0]["request_id"] == "req-0"


async def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    reasons: list[str] = []
    writer = AuditWriter(StreamSink(io.StringIO()), Redactor(), queue_size=3, on_drop=reasons.append)
    # A plain call, no await: the request path cannot be made to wait.  Nothing drains
    # (the task is not running), so the queue fills after 3 records.
    accepted = [writer.submit(record(i)) for i in range(10)]
    assert accepted == [True] * 3 + [False] * 7
    assert writer.dropped == 7 and reasons == ["queue_full"] * 7


async def test_a_slow_disk_never_stalls_the_event_loop() -> None:
    class SlowSink(StreamSink):
        def write(self, lines: list[str]) -> None:
            assert threading.current_thread() is not threading.main_thread()
            time.sleep(0.2)  # a disk that blocks
            super().write(lines)

    stream = io.StringIO()
    writer = AuditWriter(SlowSink(stream), Redactor(), queue_size=100)
    ticks = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        writer.submit(record(0))
        begin = time.monotonic()
        while time.monotonic() - begin < 0.15:  # the loop keeps running while the thread writes
            await trio.sleep(0.005)
            ticks += 1
        for i in range(1, 20):
            assert writer.submit(record(i))
        await writer.aclose()
    assert ticks >= 10
    assert len(stream.getvalue().splitlines()) == 20


async def test_write_errors_are_counted_and_logged_once_without_content(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenDisk(StreamSink):
        calls = 0

        def write(self, lines: list[str]) -> None:
            BrokenDisk.calls += 1
            if BrokenDisk.calls <= 2:
                raise OSError(28, "No space left on device")
            super().write(lines)

    stream = io.StringIO()
    reasons: list[str] = []
    writer = AuditWriter(BrokenDisk(stream), Redactor(), queue_size=10, batch=1, on_drop=reasons.append)
    with caplog.at_level(logging.ERROR, logger="llm_proxy.audit"):
        await run_writer(writer, [record(i, secret_prompt="private words") for i in range(3)])
    assert (writer.failed, writer.written) == (2, 1) and reasons == ["write_error", "write_error"]
    assert json.loads(stream.getvalue())["request_id"] == "req-2"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "No space left on device" in messages[0]
    assert "private words" not in caplog.text


async def test_a_record_that_cannot_be_encoded_is_dropped_alone() -> None:
    stream = io.StringIO()
    writer = AuditWriter(StreamSink(stream), Redactor(), queue_size=10)
    circular: dict[str, Any] = {}
    circular["self"] = circular
    await run_writer(writer, [record(0), record(1, loop=circular), record(2)])
    assert [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == ["req-0", "req-2"]
    assert writer.failed == 1


async def test_without_a_file_records_go_to_the_stream() -> None:
    stream = io.StringIO()
    writer = open_audit_writer(RequestLogConfig(enabled=True), Redactor(secrets=[KEY]), stream=stream)
    await run_writer(writer, [record(0, note=KEY)])
    assert json.loads(stream.getvalue()) == record(0, note=REDACTED)


async def test_closing_drains_everything_already_queued() -> None:
    stream = io.StringIO()
    writer = AuditWriter(StreamSink(stream), Redactor(), queue_size=1000, batch=7)
    for i in range(300):  # queued before the task even starts
        writer.submit(record(i))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await writer.aclose()
    assert len(stream.getvalue().splitlines()) == 300
    assert not writer.submit(record(301)) and writer.dropped == 1  # closed: dropped, not raised


async def test_closing_a_writer_that_never_ran_returns_at_once() -> None:
    writer = AuditWriter(StreamSink(io.StringIO()), Redactor(), queue_size=1)
    with trio.fail_after(1):
        await writer.aclose()
