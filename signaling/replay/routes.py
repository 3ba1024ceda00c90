"""Replay of recordings: listing, detail with the annotation timeline, media with HTTP Range,
thumbnails, download of the originals, annotated exports, and the audit trail (docs/replay.md).

    GET  /api/recordings[?consultation=&since=&until=]      list                  catalogue.py
    GET  /api/recordings/{id}                               manifest, integrity,  catalogue.py
                                                            timeline, snapshots
    GET  /api/recordings/{id}/media-token                   token for <video src> access.py
    GET  /api/recordings/{id}/media/{segment}[?t=]          segment file (Range)  media.py
    GET  /api/recordings/{id}/media/{segment}/talkback[?t=] its talk-back track   media.py
    GET  /api/recordings/{id}/thumbnail.jpg                 first keyframe        media.py
    GET  /api/recordings/{id}/download                      original (or a zip)   download.py
    POST /api/recordings/{id}/exports                       → 202 {job}           exports.py
    GET  /api/recordings/{id}/exports/{job}[/file]          progress / the MP4    exports.py
    DELETE /api/recordings/{id}/exports/{job}               cancel → 200 {job}    exports.py
    POST /api/recordings/{id}/dicom                         → 202 {job} (DICOM)   dicom.py
    POST /api/recordings/{id}/out-of-body                   show a blurred part   privacy.py
    GET  /api/consultations/{cid}/audit                     the audit trail       audit.py

Who may replay what is ``access.py``; what is stored is asked of ``recorder.library``.
"""

from __future__ import annotations

from aiohttp import web

from signaling.replay import access, audit, catalogue, dicom, download, exports, media, privacy


def add_routes(app: web.Application) -> None:
    """The routes only: what they share (``REPLAY``) is made and closed by ``create_app``."""
    segment = "/api/recordings/{rid}/media/{seq:[0-9]{1,4}}"
    app.router.add_get("/api/recordings", catalogue.list_recordings)
    app.router.add_get("/api/recordings/{rid}", catalogue.get_recording)
    app.router.add_get("/api/recordings/{rid}/media-token", access.get_media_token)
    app.router.add_get(segment, media.get_media)
    app.router.add_get(f"{segment}/talkback", media.get_talkback)
    app.router.add_get("/api/recordings/{rid}/thumbnail.jpg", media.get_thumbnail)
    app.router.add_get("/api/recordings/{rid}/download", download.download)
    app.router.add_post("/api/recordings/{rid}/exports", exports.start_export)
    app.router.add_get("/api/recordings/{rid}/exports/{job}", exports.get_export)
    app.router.add_get("/api/recordings/{rid}/exports/{job}/file", exports.get_export_file)
    app.router.add_delete("/api/recordings/{rid}/exports/{job}", exports.cancel_export)
    app.router.add_post("/api/recordings/{rid}/dicom", dicom.start_dicom_export)
    app.router.add_post("/api/recordings/{rid}/out-of-body", privacy.reveal_out_of_body)
    app.router.add_get("/api/consultations/{cid}/audit", audit.get_audit)
