"""The WebSocket hub: who is connected to which consultation, and fan-out of server messages.

A person (one identity: one invite link) may be connected from several devices at once — a laptop
to watch, a tablet to draw. Presence lists the person once with a device count; every device gets
every message; a person is "reconnecting" only when all of their devices are lost. Beyond
``MAX_DEVICES`` the oldest device is closed.

``Hub.broadcast`` is synchronous so anything on the loop (relay feed events, REST handlers) can call
it without awaiting a socket. Each participant has a bounded outbox drained by its own writer task:
a slow or vanished browser fills only its own outbox and is then dropped, it never delays the
others.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web

from persistence.times import utc_now_iso
from relay import ConsultationId
from signaling.auth.grants import Role, TokenWithdrawn
from signaling.ws.messages import Presence, ServerMessage

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
OUTBOX_SIZE = 256
"Messages queued for one participant before it is dropped as too slow."
CLOSE_TIMEOUT_S = 2.0
"A close handshake the peer does not complete in time ends with the TCP connection cut."
MESSAGES_PER_S = 20.0
MESSAGE_BURST = 40.0
ANNOTATION_OPS_PER_S = 30.0
"Annotation ops (a pen stroke streams as updates) have their own bucket, one second deep."
POINTER_MOVES_PER_S = 60.0

RECONNECT_GRACE_S = 15.0
"How long a participant whose connection broke (its page did not close it) shows as reconnecting."

MAX_DEVICES = 4
"Devices one person may have in a consultation at once; the oldest goes beyond it."

CLOSE_REPLACED = 4409
"The oldest device of a person who opened the link on more than ``MAX_DEVICES`` devices."
REPLACED_REASON = f"this link is open on more than {MAX_DEVICES} devices; this one was closed"
CLOSE_TOO_SLOW = 1008
CLOSE_WITHDRAWN = TokenWithdrawn.close_code
"Access withdrawn: the consultation's links, or this person's link (signaling/auth/revocations.py)."
FAREWELL_S = 1.0
"At shutdown, how long the last message (``restarting``) may take to reach every page."


@dataclass
class MessageCounts:
    """What went through the hub since start, for ``/metrics`` (read at scrape time)."""

    received: collections.Counter[str] = field(default_factory=collections.Counter)
    "Client messages accepted by the parser, by type."
    sent: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    "Client messages answered with an ``error``, by its code."
    annotation_ops: collections.Counter[str] = field(default_factory=collections.Counter)
    "Annotation ops applied to a board, by op."


@dataclass
class TokenBucket:
    """``rate`` events per second with bursts of ``burst``: refills continuously."""

    rate: float
    burst: float
    allowance: float = field(init=False)
    last_at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.allowance = self.burst

    def take(self, now: float | None = None) -> bool:
        """Take one token; False when the bucket is empty."""
        now = time.monotonic() if now is None else now
        elapsed = max(0.0, now - self.last_at)
        self.last_at = now
        self.allowance = min(self.burst, self.allowance + elapsed * self.rate)
        if self.allowance < 1.0:
            return False
        self.allowance -= 1.0
        return True


@dataclass(eq=False)
class Participant:
    """One authenticated WebSocket (one device) of a consultation; compared by identity of the
    object, so two devices of the same person are never mistaken for each other."""

    identity: str
    name: str
    role: Role
    ws: web.WebSocketResponse
    joined_at: str = field(default_factory=utc_now_iso)
    device: str = field(default_factory=lambda: secrets.token_hex(4))
    "Tells one person's devices apart in what each sends (stats): random, never shown."
    messages: TokenBucket = field(
        default_factory=lambda: TokenBucket(MESSAGES_PER_S, MESSAGE_BURST), repr=False
    )
    "The client's own messages (annotation ops and pointer moves within their own limits aside)."
    annotation_ops: TokenBucket = field(
        default_factory=lambda: TokenBucket(ANNOTATION_OPS_PER_S, ANNOTATION_OPS_PER_S),
        repr=False,
    )
    pointer_moves: TokenBucket = field(
        default_factory=lambda: TokenBucket(POINTER_MOVES_PER_S, POINTER_MOVES_PER_S), repr=False
    )
    outbox: asyncio.Queue[str] = field(
        default_factory=lambda: asyncio.Queue(OUTBOX_SIZE), repr=False
    )
    writer: asyncio.Task[None] | None = field(default=None, repr=False)

    def allow_message(self, now: float | None = None) -> bool:
        """Take one token from the message bucket; False means the client floods."""
        return self.messages.take(now)

    def to_json(self, state: str = "connected", devices: int = 1) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "name": self.name,
            "role": str(self.role),
            "joined_at": self.joined_at,
            "state": state,
            "devices": devices,
        }


async def close_socket(ws: web.WebSocketResponse, code: int, reason: str, timeout: float) -> None:
    """Close with a code the browser can read; a peer that does not answer the close handshake
    (or does not read at all) gets its TCP connection cut after ``timeout``."""
    message = reason.encode()[:123].decode(errors="ignore").encode()  # RFC 6455 limit
    with contextlib.suppress(TimeoutError, ConnectionError):
        await asyncio.wait_for(ws.close(code=code, message=message), timeout)


class Hub:
    """Participants per consultation id; one instance per app, no module-level state."""

    def __init__(
        self, close_timeout_s: float = CLOSE_TIMEOUT_S, reconnect_grace_s: float = RECONNECT_GRACE_S
    ) -> None:
        self._consultations: dict[ConsultationId, dict[str, list[Participant]]] = {}
        "Each person's connected devices, oldest first."
        self._reconnecting: dict[ConsultationId, dict[str, tuple[Participant, asyncio.TimerHandle]]]
        self._reconnecting = {}
        "Whose connection was lost, until they are back or the grace period ends."
        self.reconnect_grace_s = reconnect_grace_s
        self._sockets: set[web.WebSocketResponse] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self.close_timeout_s = close_timeout_s
        self.counts = MessageCounts()
        self.closing = False
        "Set when shutdown begins (``close_all``): ``/readyz`` answers 503 from then on."
        self.on_gone: Callable[[ConsultationId, str], None] = lambda cid, identity: None
        """Someone is no longer in the consultation: left, dropped, or not back within the
        reconnect grace (never for a replaced connection, nor at shutdown)."""
        self.on_device: Callable[[ConsultationId, Participant, str | None], None] = (
            lambda cid, participant, left: None
        )
        "A device joined (``None``) or left (how, in words): the audit trail."
        self.on_broadcast: Callable[[ConsultationId, ServerMessage], None] = lambda c, m: None
        "Every message told to a whole room: the audit trail reads the board's changes."

    def track(self, ws: web.WebSocketResponse) -> None:
        """Remember a socket from its upgrade on, so shutdown also closes unauthenticated ones."""
        self._sockets.add(ws)

    def untrack(self, ws: web.WebSocketResponse) -> None:
        self._sockets.discard(ws)

    def join(self, cid: ConsultationId, participant: Participant) -> None:
        """Add a device of a person and announce it to the others. Another device of the same
        identity stays (a second device is normal); beyond ``MAX_DEVICES`` the oldest one is
        closed with 4409.

        The joiner gets no ``presence``: the caller queues its ``welcome`` with ``send`` right
        after (both are synchronous, so no other message can come first)."""
        self._forget(cid, participant.identity)
        connected = self._consultations.setdefault(cid, {})
        devices = connected.setdefault(participant.identity, [])
        devices.append(participant)
        self.on_device(cid, participant, None)
        participant.writer = asyncio.get_running_loop().create_task(
            self._write(cid, participant), name=f"ws-writer {cid} {participant.identity}"
        )
        while len(devices) > MAX_DEVICES:
            logger.info(
                "Hub [consultation:%s] %s has more than %d devices, closing the oldest",
                cid,
                participant.identity,
                MAX_DEVICES,
            )
            self._drop(cid, devices[0], CLOSE_REPLACED, REPLACED_REASON, announce=False)
        logger.info(
            "Hub [consultation:%s] %s joined as %s (device %d; %d people connected)",
            cid,
            participant.identity,
            participant.role,
            len(devices),
            len(connected),
        )
        self._announce(cid, exclude=participant)

    def person(self, cid: ConsultationId, identity: str) -> Participant | None:
        """The newest connected device of ``identity`` (its name and role), if any."""
        devices = self._consultations.get(cid, {}).get(identity)
        return devices[-1] if devices else None

    def devices(self, cid: ConsultationId, identity: str) -> int:
        """How many devices of ``identity`` are connected."""
        return len(self._consultations.get(cid, {}).get(identity, ()))

    def leave(self, cid: ConsultationId, participant: Participant, lost: bool = False) -> None:
        """Remove a participant (no-op if it was already replaced or dropped) and announce it.
        A ``lost`` connection (not closed by its page) stays in presence as ``reconnecting`` for
        ``reconnect_grace_s`` when it was the person's last device, so the others read
        "reconnecting", not "left", while a phone changes network. The caller closes the
        socket."""
        if not self._remove(cid, participant, "connection lost" if lost else "closed"):
            return
        if not (lost and self._hold(cid, participant)):
            logger.info("Hub [consultation:%s] %s left (a device)", cid, participant.identity)
            if not lost and not self.devices(cid, participant.identity):
                self.on_gone(cid, participant.identity)
        self._announce(cid)

    def has_participants(self, cid: ConsultationId) -> bool:
        return cid in self._consultations or cid in self._reconnecting

    def participants(self, cid: ConsultationId) -> list[dict[str, Any]]:
        """Who is connected (one entry per person, with their device count) or reconnecting,
        oldest first; never tokens. A person's name is the newest device's that has one (a page
        without a name on its link asks on each device)."""
        people = [
            {
                **devices[-1].to_json("connected", len(devices)),
                "joined_at": devices[0].joined_at,
                "name": next((d.name for d in reversed(devices) if d.name), ""),
            }
            for devices in self._consultations.get(cid, {}).values()
        ]
        held = [p.to_json("reconnecting", 0) for p, _ in self._reconnecting.get(cid, {}).values()]
        return sorted(people + held, key=lambda person: str(person["joined_at"]))

    def broadcast(
        self, cid: ConsultationId, message: ServerMessage, exclude: Participant | None = None
    ) -> None:
        """Queue ``message`` (stamped ``v: 1``) for everyone in ``cid`` but ``exclude``; never
        blocks, never raises because of one participant."""
        self.on_broadcast(cid, message)
        data = _encode(message)
        for participant in self._devices(cid):
            if participant is not exclude:
                self._enqueue(cid, participant, data)

    def send(self, cid: ConsultationId, participant: Participant, message: ServerMessage) -> None:
        """Queue ``message`` for one participant, in order with the broadcasts it receives."""
        self._enqueue(cid, participant, _encode(message))

    def send_to(self, cid: ConsultationId, identity: str, message: ServerMessage) -> None:
        """Queue ``message`` for every connected device of ``identity`` (no-op if none)."""
        data = _encode(message)
        for participant in tuple(self._consultations.get(cid, {}).get(identity, ())):
            self._enqueue(cid, participant, data)

    def census(self) -> dict[ConsultationId, collections.Counter[str]]:
        """Connected devices per consultation and role (``/metrics``); no identities."""
        return {
            cid: collections.Counter(str(p.role) for p in self._devices(cid))
            for cid in self._consultations
        }

    @property
    def sockets(self) -> int:
        """Open WebSockets, joined or still authenticating."""
        return len(self._sockets)

    async def close_all(
        self, code: int, reason: str, farewell: ServerMessage | None = None
    ) -> None:
        """Close every socket, joined or still authenticating (app shutdown). ``farewell`` is
        sent to every joined page first, so it can say why in words (a bounded wait)."""
        self.closing = True
        if farewell is not None:
            data = _encode(farewell)
            joined = [p for cid in self._consultations for p in self._devices(cid)]
            for participant in joined:
                with contextlib.suppress(asyncio.QueueFull):
                    participant.outbox.put_nowait(data)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FAREWELL_S):
                    await asyncio.gather(*(p.outbox.join() for p in joined))
        sockets = set(self._sockets)
        for cid, held in list(self._reconnecting.items()):
            for identity in list(held):
                self._forget(cid, identity)
        for cid in list(self._consultations):
            for participant in self._devices(cid):
                self._remove(cid, participant, reason)
                sockets.add(participant.ws)
        logger.info("Hub closing %d sockets: %s", len(sockets), reason)
        await asyncio.gather(
            *(close_socket(ws, code, reason, self.close_timeout_s) for ws in sockets),
            *self._closing,
        )

    def withdraw(self, cid: ConsultationId, identity: str | None, reason: str) -> int:
        """Close (4410, ``reason``) every socket of ``cid`` — or of one ``identity`` in it —
        whose access was withdrawn; nobody is held as reconnecting. How many were closed."""
        for held in list(self._reconnecting.get(cid, {})):
            if identity in (None, held) and self._forget(cid, held):
                self.on_gone(cid, held)
        dropped = [p for p in self._devices(cid) if identity in (None, p.identity)]
        for participant in dropped:
            self._drop(cid, participant, CLOSE_WITHDRAWN, reason)
        return len(dropped)

    def moved(self, cid: ConsultationId, reason: str) -> int:
        """Close (1012, ``reason``) every socket of ``cid``: another node serves it now, and the
        pages reconnect to be routed there. How many were closed."""
        for held in list(self._reconnecting.get(cid, {})):
            self._forget(cid, held)
        dropped = self._devices(cid)
        for participant in dropped:
            self._drop(cid, participant, WSCloseCode.SERVICE_RESTART, reason)
        return len(dropped)

    def _enqueue(self, cid: ConsultationId, participant: Participant, data: str) -> None:
        try:
            participant.outbox.put_nowait(data)
        except asyncio.QueueFull:
            logger.info(
                "Hub [consultation:%s] %s is too slow (%d messages queued), dropping it",
                cid,
                participant.identity,
                participant.outbox.qsize(),
            )
            self._drop(cid, participant, CLOSE_TOO_SLOW, "too slow: messages piled up")

    async def _write(self, cid: ConsultationId, participant: Participant) -> None:
        """The only task that sends on this participant's socket, so messages keep their order."""
        try:
            while True:
                data = await participant.outbox.get()
                await participant.ws.send_str(data)
                participant.outbox.task_done()
                self.counts.sent += 1
        except ConnectionError:
            self._drop(cid, participant, 1011, "connection lost", lost=True)
        except Exception:
            logger.exception("Hub [consultation:%s] %s send failed", cid, participant.identity)
            self._drop(cid, participant, 1011, "server could not send")

    def _drop(
        self,
        cid: ConsultationId,
        participant: Participant,
        code: int,
        reason: str,
        announce: bool = True,
        lost: bool = False,
    ) -> None:
        """Remove a participant the server gives up on and close its socket in the background;
        its handler then sees the socket closed and leaves (a no-op by then). A ``lost`` one
        (its connection broke) is held as reconnecting, as in ``leave``."""
        if not self._remove(cid, participant, reason):
            return
        if lost:
            self._hold(cid, participant)  # only if it was the person's last device
        elif announce and not self.devices(cid, participant.identity):
            self.on_gone(cid, participant.identity)  # not the oldest of too many devices
        task = asyncio.get_running_loop().create_task(
            close_socket(participant.ws, code, reason, self.close_timeout_s)
        )
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        if announce:
            self._announce(cid)

    def _devices(self, cid: ConsultationId) -> list[Participant]:
        return [p for devices in self._consultations.get(cid, {}).values() for p in devices]

    def _remove(self, cid: ConsultationId, participant: Participant, how: str) -> bool:
        connected = self._consultations.get(cid, {})
        devices = connected.get(participant.identity, [])
        if not any(d is participant for d in devices):
            return False
        devices.remove(participant)  # eq=False: by object identity
        self.on_device(cid, participant, how)
        if not devices:
            del connected[participant.identity]
        if not connected:
            del self._consultations[cid]
        if participant.writer is not None and participant.writer is not asyncio.current_task():
            participant.writer.cancel()
        return True

    def _hold(self, cid: ConsultationId, participant: Participant) -> bool:
        """Hold a person whose device was lost as reconnecting, unless another of their devices
        is still connected; whether they are held."""
        if self.devices(cid, participant.identity):
            logger.info("Hub [consultation:%s] %s lost a device", cid, participant.identity)
            return False
        logger.info("Hub [consultation:%s] %s connection lost", cid, participant.identity)
        timer = asyncio.get_running_loop().call_later(
            self.reconnect_grace_s, self._give_up, cid, participant.identity
        )
        self._reconnecting.setdefault(cid, {})[participant.identity] = (participant, timer)
        return True

    def _forget(self, cid: ConsultationId, identity: str) -> bool:
        """Stop holding ``identity`` as reconnecting; whether it was held."""
        held = self._reconnecting.get(cid, {})
        entry = held.pop(identity, None)
        if not held:
            self._reconnecting.pop(cid, None)
        if entry is None:
            return False
        entry[1].cancel()
        return True

    def _give_up(self, cid: ConsultationId, identity: str) -> None:
        if self._forget(cid, identity):
            logger.info("Hub [consultation:%s] %s did not come back", cid, identity)
            self.on_gone(cid, identity)
            self._announce(cid)

    def _announce(self, cid: ConsultationId, exclude: Participant | None = None) -> None:
        self.broadcast(cid, Presence(self.participants(cid)), exclude=exclude)


def _encode(message: ServerMessage) -> str:
    # ensure_ascii (the default) keeps lone surrogates from ever failing the UTF-8 encode in send.
    return json.dumps({**message.to_json(), "v": PROTOCOL_VERSION}, separators=(",", ":"))
