"""The recordings a caller may see: the list (with filters) and one recording's detail —
manifest, integrity, the segments to play, the annotation timeline and the snapshots."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from recorder.index import RecordingRow
from recorder.manifest import Manifest
from relay import ConsultationId
from signaling.auth.request import authenticate
from signaling.http.errors import ApiError
from signaling.http.snapshots import snapshot_json
from signaling.keys import REPLAY
from signaling.replay.access import authorised
from signaling.replay.media import MIME_TYPES

DAY_S = 86400.0


async def list_recordings(request: web.Request) -> web.Response:
    grant = authenticate(request)
    grant.ensure_replay_somewhere()
    asked = request.query.get("consultation")
    cid = None if asked is None else ConsultationId(asked)
    since = _date_bound(request.query.get("since"), "since", end=False)
    until = _date_bound(request.query.get("until"), "until", end=True)
    if cid is not None:
        grant.ensure_replay(cid)
    elif not grant.sees_every_consultation:
        cid = grant.cid  # everyone but an all-consultations admin: their own
    library = request.app[REPLAY].library
    rows = await library.recordings(cid)
    rows = [
        row
        for row in rows
        if grant.covers(row.consultation_id) and _within(row.started_at, since, until)
    ]
    rows.sort(key=lambda r: r.started_at, reverse=True)  # newest first
    manifests = await library.manifests(rows)
    return web.json_response(
        {"recordings": [_summary(row, m) for row, m in zip(rows, manifests, strict=True)]}
    )


def _date_bound(value: str | None, name: str, end: bool) -> float | None:
    """``YYYY-MM-DD`` (a whole UTC day: ``until`` includes it) or an ISO 8601 date-time. Seconds
    are added to the timestamp, not a day to the date: ``until=9999-12-31`` has no next day."""
    if value is None or value == "":
        return None
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            day = datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()
            return day + DAY_S if end else day
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError):
        raise ApiError(
            400, "bad-request", f"{name} must be a date (YYYY-MM-DD) or ISO 8601 time"
        ) from None


def _within(started_at: str, since: float | None, until: float | None) -> bool:
    try:
        at = datetime.fromisoformat(started_at).timestamp()
    except ValueError:
        return False
    return (since is None or at >= since) and (until is None or at < until)


def _summary(row: RecordingRow, manifest: Manifest | None) -> dict[str, Any]:
    base = f"/api/recordings/{row.id}"
    consultation = dict(manifest.consultation) if manifest else {"id": row.consultation_id}
    return {
        "id": row.id,
        "consultation": {"id": row.consultation_id, "title": consultation.get("title")},
        "status": row.status,
        "stop_reason": row.stop_reason,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "duration_s": row.duration_s,
        "bytes": row.bytes,
        "segments": len(row.segments),
        "video_codec": row.video_codec,
        "container": row.container,
        "mime_type": MIME_TYPES[row.container],
        "participants": [
            {k: p.get(k) for k in ("identity", "name", "role")}
            for p in (manifest.participants if manifest else [])
        ],
        "url": base,
        "thumbnail": f"{base}/thumbnail.jpg",
    }


async def get_recording(request: web.Request) -> web.Response:
    _, row = await authorised(request)
    library = request.app[REPLAY].library
    manifest = await library.manifest(row)
    check = await library.integrity(row)
    timeline = await library.timeline(row, manifest)
    snapshots = [
        {**snapshot_json(row.consultation_id, snapshot), "t": t}
        for snapshot, t in await library.snapshots(row, manifest)
    ]
    base = f"/api/recordings/{row.id}"
    talkback = (
        {s.seq: s.audio_packets.get("talkback", 0) > 0 for s in manifest.segments}
        if manifest
        else {}
    )
    detail = {
        "recording": _summary(row, manifest),
        "manifest": manifest.to_json() if manifest else None,
        "integrity": check.to_json(),
        "media": [
            {
                "segment": s.seq,
                "url": f"{base}/media/{s.seq}",
                "mime_type": MIME_TYPES[row.container],
                "status": s.status,
                "started_at": s.started_at,
                "offset_s": s.offset_s,
                "duration_s": s.duration_s,
                "bytes": s.bytes,
                "repaired": s.repaired_file is not None,
                "talkback": f"{base}/media/{s.seq}/talkback"
                if talkback.get(s.seq, True) and s.status != "open"
                else None,
            }
            for s in row.segments
        ],
        "gaps": manifest.gaps() if manifest else [],
        "timeline": timeline.to_json() if timeline else {"marks": [], "freezes": [], "chat": []},
        "snapshots": snapshots,
        "links": {
            "media_token": f"{base}/media-token",
            "thumbnail": f"{base}/thumbnail.jpg",
            "download": f"{base}/download",
            "exports": f"{base}/exports",
        },
    }
    # a long consultation's timeline (tracked marks) runs to megabytes: encoded off the loop
    body = await asyncio.to_thread(json.dumps, detail)
    return web.Response(text=body, content_type="application/json")
