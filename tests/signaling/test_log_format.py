"""``ENDOLINK_LOG_FORMAT=json`` on a real ``endolink serve``: every line of its log is one JSON
object, and a request path carrying a line break stays inside its line."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import aiohttp

from signaling.ops.logs import JsonFormatter
from tests.processes import Process, Server


async def test_json_log_format_writes_one_object_per_line(
    tmp_path: Path, processes: list[Process]
) -> None:
    log = tmp_path / "server.log"
    server = Server(tmp_path / "data", log, ENDOLINK_LOG_FORMAT="json")
    processes.append(server)
    await asyncio.to_thread(server.wait_ready)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz") as response:
            assert response.status == 200
        forged = f"{server.url}/nowhere%0a12:00:00%20INFO%20forged:%20line"
        async with http.get(aiohttp.client.URL(forged, encoded=True)) as response:
            assert response.status == 404
        media = f"{server.url}/api/recordings/nothing/media/1?t=SECRET-MEDIA-TOKEN"
        async with http.get(media) as response:
            assert response.status >= 400
    assert server.stop() == 0
    assert "SECRET-MEDIA-TOKEN" not in log.read_text()
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line parses
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(e["logger"] == "aiohttp.access" and "/healthz" in e["message"] for e in entries)
    assert not any(line.startswith("12:00:00") for line in lines)
    assert any("forged: line" in e["message"] for e in entries)  # inside a JSON string


def test_json_formatter_keeps_extras_and_exceptions() -> None:
    record = logging.makeLogRecord(
        {"name": "relay.peer", "levelname": "WARNING", "msg": "closing %s", "args": ("x",)}
    )
    record.consultation = "abc"
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "closing x" and entry["consultation"] == "abc"
    assert entry["level"] == "WARNING" and "boom" in entry["exception"]
    assert "\n" not in JsonFormatter().format(record)
