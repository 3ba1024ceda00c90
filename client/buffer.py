"""The one drop rule for frames waiting to be sent: a bounded buffer that keeps the newest.

Decoded frames and audio simply lose the oldest. Encoded video (a live source sent as it is)
cannot lose one packet without breaking every packet up to the next keyframe, and a reader that
starts on P-frames shows nothing (aiortc does not honour keyframe requests for packets): so
packets go by whole GOPs — past ``size`` the buffer keeps from its newest keyframe (the GOP
being read is kept whole, however long); a GOP longer than ``MAX_GOP`` is thrown away and the
buffer waits for the next keyframe.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import av

if TYPE_CHECKING:
    from client.reconnect import Media

MAX_GOP = 300
"Packets of one GOP the buffer holds at most (10 s at 30 fps; cameras should send one every 2 s)."


class FrameBuffer:
    """At most ``size`` frames (None marks the end and is never dropped), read by one reader on
    the event loop; filled on the loop too (threads hand over with ``call_soon_threadsafe``)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: deque[Media | None] = deque()
        self._arrived = asyncio.Event()
        self._skipping = False
        "A GOP was thrown away: packets wait for the next keyframe."

    def put(self, item: Media | None) -> None:
        if isinstance(item, av.Packet):
            if self._skipping and not item.is_keyframe:
                return
            self._skipping = False
        self._items.append(item)
        if len(self._items) > self._size:
            self._trim()
        self._arrived.set()

    def _trim(self) -> None:
        if not isinstance(self._items[0], av.Packet):
            while len(self._items) > self._size and self._items[0] is not None:
                self._items.popleft()
            return
        keyframes = [i for i, item in enumerate(self._items) if _is_keyframe(item)]
        if keyframes and keyframes[-1] > 0:
            for _ in range(keyframes[-1]):
                self._items.popleft()
        elif len(self._items) > MAX_GOP:
            ended = self._items[-1] is None
            self._items.clear()
            if ended:
                self._items.append(None)
            self._skipping = True

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Media | None:
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        return self._items.popleft()

    def unget(self, item: Media | None) -> None:
        """Put ``item`` back in front (the end mark, for every later reader)."""
        self._items.appendleft(item)
        self._arrived.set()


def _is_keyframe(item: Media | None) -> bool:
    return isinstance(item, av.Packet) and item.is_keyframe
