"""Chat history: a consultation's messages are kept with it, so whoever joins or reconnects reads
what was written before (the clinic must not miss the surgeon's instructions).

Chat lines go to the consultation's annotation log (``recorder/annotation_log.py``) as ``chat``
entries, beside the marks: one append-only record per consultation, which the replay timeline
reads to list the chat at its recording time. The last ``HISTORY_LIMIT`` messages of each
consultation are also held in memory, loaded from the log (in a thread) the first time the
consultation is used after a start. A consultation's messages are added only after its history is
loaded, so none is missed or counted twice. Names and texts are stored, never logged.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from pathlib import Path

from persistence.times import utc_now_iso
from recorder.annotation_log import FILENAME, AnnotationLog, read_annotation_log
from recorder.log_entry import LogEntry, LogOp
from recorder.storage import consultation_dir
from relay import ConsultationId
from signaling.auth.grants import Role
from signaling.ws.messages import Chat

HISTORY_LIMIT = 200
"Messages sent to a joiner (``chat_history``): the newest, oldest first."
CACHED_CONSULTATIONS = 256
"Consultations whose history stays in memory; the least recently used is read again later."


class ChatHistory:
    """The newest ``HISTORY_LIMIT`` chat messages of each consultation."""

    def __init__(self, data_dir: Path, limit: int = HISTORY_LIMIT) -> None:
        self._data_dir = data_dir
        self._limit = limit
        self._loads: OrderedDict[ConsultationId, asyncio.Task[deque[Chat]]] = OrderedDict()

    async def recent(self, cid: ConsultationId) -> list[Chat]:
        """The history a joiner gets, oldest first."""
        return list(await self._history(cid))

    async def add(
        self,
        cid: ConsultationId,
        sender: str,
        name: str,
        role: Role,
        text: str,
        log: AnnotationLog,
        media_pts: int | None,
    ) -> Chat:
        """Keep one message (memory and log) and return it as everyone receives it."""
        history = await self._history(cid)
        chat = Chat(sender, name, role, text, utc_now_iso())
        history.append(chat)
        payload = {"text": text, "name": name, "role": str(role)}
        log.append(LogEntry(LogOp.CHAT, chat.ts, media_pts, sender, payload))
        return chat

    async def _history(self, cid: ConsultationId) -> deque[Chat]:
        load = self._loads.get(cid)
        if load is None or (load.done() and load.exception() is not None):
            load = asyncio.ensure_future(asyncio.to_thread(self._read, cid))
            self._loads[cid] = load
            while len(self._loads) > CACHED_CONSULTATIONS:
                self._loads.popitem(last=False)
        self._loads.move_to_end(cid)
        return await asyncio.shield(load)

    def _read(self, cid: ConsultationId) -> deque[Chat]:
        path = consultation_dir(self._data_dir, cid) / FILENAME
        history: deque[Chat] = deque(maxlen=self._limit)
        for entry in read_annotation_log(path, LogOp.CHAT):
            chat = _chat_of(entry)
            if chat is not None:
                history.append(chat)
        return history


def _chat_of(entry: LogEntry) -> Chat | None:
    """A logged chat line as it was sent; None for a damaged one."""
    text, name, role = (entry.payload.get(k) for k in ("text", "name", "role"))
    if not (isinstance(text, str) and entry.by is not None and entry.ts is not None):
        return None
    if role not in tuple(Role):
        return None
    return Chat(entry.by, name if isinstance(name, str) else "", Role(role), text, entry.ts)
