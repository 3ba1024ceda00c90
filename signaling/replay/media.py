"""What a player fetches: a segment file with HTTP Range (``FileResponse``: 206 + Content-Range,
416 past the end), its talk-back track, and the recording's thumbnail. Which file that is, and
making the derived ones once, is ``recorder.library``'s; this module only answers HTTP."""

from __future__ import annotations

from aiohttp import hdrs, web

from signaling.keys import REPLAY
from signaling.replay.access import authorised, media_access

MIME_TYPES = {"webm": "video/webm", "mp4": "video/mp4"}
_MEDIA_HEADERS = {
    hdrs.CACHE_CONTROL: "private, no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Disposition": "inline",
}


async def get_media(request: web.Request) -> web.StreamResponse:
    """The segment's playable file: the finalized ``.repaired`` copy of an interrupted segment
    when there is one (it has a duration and a seek index); the original stays what
    ``download`` gives."""
    row = await media_access(request)
    path = await request.app[REPLAY].library.segment_file(row, int(request.match_info["seq"]))
    return web.FileResponse(
        path, headers={hdrs.CONTENT_TYPE: MIME_TYPES[row.container], **_MEDIA_HEADERS}
    )


async def get_talkback(request: web.Request) -> web.StreamResponse:
    """The surgeon's microphone as audio-only WebM, with Range. A ``<video>`` plays only a file's
    default audio track (the clinic's), so the page plays this in an ``<audio>`` element kept at
    the video's time."""
    row = await media_access(request)
    path = await request.app[REPLAY].library.talkback_file(row, int(request.match_info["seq"]))
    return web.FileResponse(path, headers={hdrs.CONTENT_TYPE: "audio/webm", **_MEDIA_HEADERS})


async def get_thumbnail(request: web.Request) -> web.StreamResponse:
    _, row = await authorised(request)
    return web.FileResponse(
        await request.app[REPLAY].library.thumbnail(row),
        headers={
            hdrs.CONTENT_TYPE: "image/jpeg",
            hdrs.CACHE_CONTROL: "private, max-age=3600",
            "X-Content-Type-Options": "nosniff",
        },
    )
