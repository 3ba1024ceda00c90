"""Upstream: a Router's endoscope feed taken from another relay, as its WHEP viewer (a cascade).

A node far from the clinic pulls one stream from the node the clinic publishes to (the origin)
and serves its own viewers from it. The received RTP goes through the very tap a publisher's
does (``forwarding.tap_receiver`` → the Feed's Producers), so local viewers get the frames the
origin forwards, untouched (bit-exact, never decoded). Each hop recovers its own losses: this
node's receiver NACKs the origin (``relay.recovery``), local viewers NACK this node. A local
viewer's keyframe request goes through the Producer's rate limit, then out as this receiver's
PLI; the origin forwards it to the clinic.

relay/ knows no HTTP: the offer/answer exchange and the end of a session on the origin are the
``UpstreamLink`` the caller gives (``signaling/cluster/cascade.py``: WHEP with a node token).

A session on the origin ends when its token does. ``renew_after_s`` (shorter than the token's
life) starts a standby session beside the current one, which takes over at its first video
keyframe (``relay.upstream_session``): local viewers see no gap.

How an Upstream closes (each path ends in ``close()``, which calls ``on_closed`` once):

* the last local viewer it holds leaves (none being answered) → after ``linger_s`` without a
  new one: its sessions' peers closed, each session ended on the origin;
* the current session's connection is lost (ICE/DTLS failed or closed, silent for
  ``peer_timeout_s``, not connected within ``connect_deadline_s``, or the origin ended it) →
  a standby, if any, takes over at once; else the Feed goes offline here
  (``OfflineReason.LOST``, the Feed's rule) and, while local viewers need it, a new session
  is negotiated after each delay of ``RETRY_S`` (the last one repeated); nobody needs it → closed;
* a standby that fails or brings no keyframe within ``STANDBY_TIMEOUT_S`` is closed and tried
  again after ``RENEW_RETRY_S`` (the current session goes on meanwhile);
* ``UpstreamLink.negotiate`` raises ``UpstreamRefused`` on a reconnection (this node serves the
  consultation itself now, or the origin refuses for good) → closed, with its local viewers'
  sessions (they reconnect and are sent where the consultation is served);
* the Router closes (idle, let go, shutdown): the session peers are among its peers, so they
  close with them and nothing new is tried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import RTCConfiguration

from .errors import MediaUnsupported
from .ids import ConsultationId, FeedName
from .peer import Peer, PeerRole
from .router import Router
from .upstream_session import UpstreamLink, UpstreamRefused, UpstreamSession, apply, negotiate

logger = logging.getLogger(__name__)

LINGER_S = 5.0
"The upstream outlives its last local viewer this long: a page reload keeps the stream."
RETRY_S = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
"Delays before each new attempt after a loss; the last repeats while viewers need it."
STANDBY_TIMEOUT_S = 10.0
"A standby session that brought no keyframe in this long is given up."
RENEW_RETRY_S = 15.0
CLOSE_WAIT_S = 5.0
"Closing waits at most this long for its sessions to end on the origin."


class Upstream:
    def __init__(
        self,
        cid: ConsultationId,
        link: UpstreamLink,
        router_for: Callable[[str], Router],
        configuration: Callable[[], RTCConfiguration],
        identity: str,
        peer_timeout_s: float,
        connect_deadline_s: float,
        renew_after_s: float | None = None,
        linger_s: float = LINGER_S,
        on_closed: Callable[[Upstream], None] = lambda upstream: None,
    ) -> None:
        """``router_for(video_codec)``: the consultation's Router (the codec is the origin's,
        learnt from its first answer). ``renew_after_s``: a session is replaced this long after
        it began (None: never, it lasts as long as the origin keeps it)."""
        self.cid = cid
        self.label = f"consultation:{cid} upstream"
        self.identity = identity
        self.router: Router | None = None
        self.sessions = 0
        "Sessions negotiated with the origin (the first, renewals and reconnections)."
        self.closed = False
        self._link = link
        self._router_for = router_for
        self._configuration = configuration
        self._peer_timeout_s = peer_timeout_s
        self._connect_deadline_s = connect_deadline_s
        self._renew_after_s = renew_after_s
        self._linger_s = linger_s
        self._on_closed = on_closed
        self._current: UpstreamSession | None = None
        self._standby: UpstreamSession | None = None
        self._viewers: set[str] = set()
        "Sessions of the local viewers it holds."
        self._expected = 0
        "Local viewers whose offers are being answered."
        self._starting: asyncio.Future[Router] | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        "At most one each of: linger, renew, standby (its deadline)."
        self._tasks: dict[asyncio.Future[Any], bool] = {}
        "Work started on its own → whether ``close()`` cancels it (else waits for it, bounded)."
        self._closing: asyncio.Task[None] | None = None

    @property
    def peer(self) -> Peer | None:
        """The current session's peer connection (None while reconnecting)."""
        return None if self._current is None else self._current.peer

    async def start(self) -> Router:
        """The Router fed by the origin, once the first session is negotiated (shared by
        viewers arriving together). Raises what the first negotiation raised, closed."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._first())
        return await asyncio.shield(self._starting)

    async def _first(self) -> Router:
        try:
            return await self._connect(standby=False)
        except BaseException:
            await self.close()
            raise

    # -- local viewers ---------------------------------------------------------------------------

    def expect(self) -> None:
        """A local viewer is being answered: the upstream stays until ``arrived``."""
        self._expected += 1
        self._cancel("linger")

    def arrived(self, viewer: Peer | None) -> None:
        """The expected viewer's session exists (``viewer``: held until it closes) or was
        refused (None)."""
        self._expected -= 1
        if viewer is None:
            self._maybe_linger()
            return
        self._viewers.add(viewer.id)
        viewer.on_closed(self._released)

    @property
    def needed(self) -> bool:
        """Whether a local viewer holds, or is about to hold, the upstream."""
        return bool(self._viewers) or self._expected > 0

    def _released(self, viewer: Peer) -> None:
        self._viewers.discard(viewer.id)
        self._maybe_linger()

    def _maybe_linger(self) -> None:
        if not self.needed and not self.closed and "linger" not in self._timers:
            self._later("linger", self._linger_s, self._lingered)

    def _lingered(self) -> None:
        if not self.needed:
            logger.info(
                "Upstream(%s) no local viewer for %g s: closing", self.label, self._linger_s
            )
            self._spawn(self.close(), cancel=True)

    # -- sessions with the origin ----------------------------------------------------------------

    async def _connect(self, standby: bool) -> Router:
        known = self.router.video_codec if self.router is not None else None
        peer = Peer(
            PeerRole.PUBLISHER, FeedName.ENDOSCOPE, self.identity, self._configuration(), self.label
        )
        try:
            session = await negotiate(self._link, peer, known)
        except BaseException:
            await peer.close()
            raise
        peer.on_closed(lambda _: self._spawn(session.origin.close()))
        try:
            return await self._install(session, standby)
        except BaseException:
            await peer.close()
            raise

    async def _install(self, session: UpstreamSession, standby: bool) -> Router:
        if self.closed:
            raise UpstreamRefused("closed while negotiating")
        router = self._router_for(session.codec)
        if router.closed or router.video_codec != session.codec:
            raise MediaUnsupported(f"the origin sends {session.codec}; the Router uses another")
        feed = router.feeds[FeedName.ENDOSCOPE]
        peer = session.peer
        session.tap(feed)
        await apply(session)
        peer.on_closed(feed.publisher_gone)  # ignored unless it is the Feed's publisher then
        router.peers[peer.id] = peer  # the Router closes it with its other sessions
        peer.on_closed(lambda p: router.peers.pop(p.id, None))
        peer.watch(self._peer_timeout_s)
        peer.require_connection(self._connect_deadline_s)
        peer.on_closed(lambda _: self._lost(session))
        self.router = router
        self.sessions += 1
        kind = "standby" if standby else "current"
        logger.info(
            "Upstream(%s) session %d (%s, %s)", self.label, self.sessions, kind, session.codec
        )
        if standby:
            self._standby = session
            session.on_keyframe = self._take_over
            self._later("standby", STANDBY_TIMEOUT_S, lambda: self._spawn(peer.close()))
        else:
            self._take_over(session)
        return router

    def _take_over(self, session: UpstreamSession, keyframe: int | None = None) -> None:
        """``session`` feeds the Router from now on; the one it replaces is closed.
        ``keyframe``: the digest of the keyframe a standby takes over at; if the current session
        delivered it already, the standby goes on after the frames that one delivered."""
        assert self.router is not None
        previous, self._current = self._current, session
        if self._standby is session:
            self._standby = None
            self._cancel("standby")
        if previous is not None:
            previous.current = False
        continuing = previous if previous and keyframe in previous.recent["video"] else None
        session.feed(self.router.feeds[FeedName.ENDOSCOPE], continuing)
        if previous is not None:
            self._spawn(previous.peer.close())
            how = "after the frames it had" if continuing else "at its own keyframe"
            logger.info("Upstream(%s) session %d took over %s", self.label, self.sessions, how)
        if self._renew_after_s is not None:
            self._later("renew", self._renew_after_s, self._renew)

    def _renew(self) -> None:
        if not self.closed and self._standby is None and self._current is not None:
            self._spawn(self._prepare_standby(), cancel=True)

    async def _prepare_standby(self) -> None:
        try:
            await self._connect(standby=True)
        except Exception as exc:
            logger.warning("Upstream(%s) no standby: %s %s", self.label, type(exc).__name__, exc)
            if not self.closed:
                self._later("renew", RENEW_RETRY_S, self._renew)

    def _lost(self, session: UpstreamSession) -> None:
        if session is self._standby:
            self._standby = None
            self._cancel("standby")
            if not self.closed and self._current is not None:
                logger.info("Upstream(%s) standby session ended: trying again later", self.label)
                self._later("renew", RENEW_RETRY_S, self._renew)
            return
        if session is not self._current:
            return  # replaced already
        self._current = None
        self._cancel("renew")
        if self.closed:
            return
        if self._standby is not None:
            logger.warning("Upstream(%s) connection lost: the standby takes over", self.label)
            self._take_over(self._standby)
        elif not self.needed or self.router is None or self.router.closed:
            logger.info("Upstream(%s) connection ended, nobody needs it: closing", self.label)
            self._spawn(self.close(), cancel=True)
        else:
            logger.warning("Upstream(%s) connection lost: reconnecting", self.label)
            self._spawn(self._reconnect(), cancel=True)

    async def _reconnect(self) -> None:
        attempt = 0
        while not self.closed and self.needed and self.router is not None:
            await asyncio.sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
            attempt += 1
            if self.closed or not self.needed or self.router.closed:
                break
            try:
                await self._connect(standby=False)
                return
            except UpstreamRefused as exc:
                logger.warning("Upstream(%s) refused: %s; closing", self.label, exc)
                for viewer in list(self._viewers):
                    await self.router.close_peer(viewer)
                break
            except Exception as exc:
                logger.warning(
                    "Upstream(%s) attempt %d failed: %s %s",
                    self.label, attempt, type(exc).__name__, exc,
                )  # fmt: skip
        self._spawn(self.close(), cancel=True)

    # -- housekeeping ----------------------------------------------------------------------------

    def _later(self, name: str, delay: float, callback: Callable[[], object]) -> None:
        self._cancel(name)

        def fire() -> None:
            del self._timers[name]
            callback()

        self._timers[name] = asyncio.get_running_loop().call_later(delay, fire)

    def _cancel(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _spawn(self, work: Coroutine[Any, Any, object], cancel: bool = False) -> None:
        """Work the Upstream starts on its own. ``close()`` cancels it (``cancel``: a
        reconnection, a standby being negotiated) or waits for it (closing a session)."""
        task = asyncio.ensure_future(work)
        self._tasks[task] = cancel
        task.add_done_callback(lambda done: self._tasks.pop(done, None))

    async def close(self) -> None:
        """Close the upstream for good (idempotent; later calls wait for the first)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self.closed = True
        for name in list(self._timers):
            self._cancel(name)
        sessions = [s for s in (self._current, self._standby) if s is not None]
        self._current = self._standby = None
        await asyncio.gather(*(s.peer.close() for s in sessions))
        for task, cancel in list(self._tasks.items()):
            if cancel:
                task.cancel()
        if self._tasks:  # sessions ending on the origin: each bounded (peer and HTTP timeouts)
            await asyncio.wait(list(self._tasks), timeout=CLOSE_WAIT_S)
        logger.info("Upstream(%s) closed after %d session(s)", self.label, self.sessions)
        self._on_closed(self)
