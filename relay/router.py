"""Router: the media side of one Consultation (mediasoup's word).

It owns the consultation's Feeds and every Peer (publisher or viewer). Publishing attaches a
peer's receivers to the Feed's Producers through the forwarding tap; viewing takes a
Consumer per track and hands it to the viewer's sender. Nothing is decoded or encoded — except
by the Ladder's renditions (annotated, or a lower rung), each only while someone watches it.

A publish that begins a new stream session of the endoscope feed clears the picture's marks and
freeze before its first frame (``relay.stream_session``); ``on_session`` tells the app.

It also owns the consultation's AnnotationBoard (the current marks and freeze state): the Relay
makes a Router when media or a mark first needs it and closes it when idle, so the board lives as
long as someone publishes, views or is connected to the consultation's WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from aiortc import RTCConfiguration, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamTrack

from . import feedback, forwarding, stream_session
from .admission import Admission, SessionLimits, retry_after
from .anchoring import Anchoring
from .annotations import AnnotationBoard
from .codecs import preferences
from .consumer import Consumer
from .decoded import DecodedFeed
from .errors import FeedBusy, MediaUnsupported, RouterClosed, RouterFull
from .feed import Feed, RelayMode
from .ids import ConsultationId, FeedName
from .ladder import DEFAULT_KBPS, Ladder, Quality
from .media_clock import MediaClock, SenderClock
from .outbound import send_per_frame
from .peer import Peer, PeerRole
from .sdp import offered_codecs, parse_offer, with_bitrate_hints
from .selector import QualityChange, Selector, automatic
from .stream_session import StreamSession

logger = logging.getLogger(__name__)


class Router:
    def __init__(
        self,
        cid: ConsultationId,
        video_codec: str,
        configuration: Callable[[], RTCConfiguration],
        announced_address: str | None,
        max_viewers: int,
        publisher_timeout_s: float,
        peer_timeout_s: float,
        publisher_kbps: tuple[int, int, int],
        on_feed_state: Callable[[Feed], None],
        mode: RelayMode = RelayMode.FORWARD,
        session_gap_s: float = 60.0,
        on_session: Callable[[StreamSession], None] = lambda session: None,
        admission: Admission | None = None,
        ladder_kbps: tuple[int, int] = DEFAULT_KBPS,
        on_quality: Callable[[QualityChange], None] = lambda change: None,
        on_media_clock: Callable[[MediaClock], None] = lambda clock: None,
    ) -> None:
        self.cid = cid
        self.mode = mode
        self.video_codec = video_codec
        self.label = f"consultation:{cid}"
        self._configuration = configuration
        self._announced_address = announced_address
        self._max_viewers = max_viewers
        self._peer_timeout_s = peer_timeout_s
        self._publisher_kbps = publisher_kbps
        self.feeds = {
            name: Feed(
                name, video_codec, publisher_timeout_s, on_feed_state, self.label, session_gap_s
            )
            for name in FeedName
        }
        self._on_session = on_session
        self._admission = admission if admission is not None else Admission(SessionLimits())
        "Shared by every Router of the Relay: the per-identity and server-wide session limits."
        self._publishing = {name: asyncio.Lock() for name in FeedName}
        "Held from a publish's busy check until its Peer is the feed's publisher: one at a time."
        self.peers: dict[str, Peer] = {}
        self.board = AnnotationBoard()
        self.closed = False
        self._negotiating = 0
        "Offers being answered: their peers are not in ``peers`` yet, but the Router is in use."
        self._ladder_kbps = ladder_kbps
        self._on_quality = on_quality
        self._on_media_clock = on_media_clock
        self._media_clocks: dict[str, MediaClock] = {}
        "The latest of each viewer session: a page that reconnects its WebSocket is told again."
        endoscope = self.feeds[FeedName.ENDOSCOPE].producers["video"]
        self.ladder = Ladder(endoscope, self.board, self.label, ladder_kbps)
        self.decoded = DecodedFeed(endoscope, self.label)
        "The endoscope original decoded for the computer-vision samplers, while they sample."
        self.anchoring = Anchoring(self.board, self.decoded, self.capture_ms, cid, self.label)

    # -- publishing --------------------------------------------------------------------------

    async def publish(
        self, feed_name: FeedName, identity: str, offer: str, expires_at: float | None = None
    ) -> Peer:
        """WHIP: attach a publisher's tracks to ``feed_name``. The same identity reconnecting
        replaces its previous connection; anyone else gets 409 while the feed has a publisher
        (a pending one only for a connect deadline: ``Admission.hold``).
        Publishes of one feed run one at a time (the busy check and the install must not be
        split by the negotiation's awaits: two clinics posting at once would both get 201).
        ``expires_at`` (UNIX time): the session ends then (its token's expiry)."""
        with self._negotiation():
            async with self._publishing[feed_name]:
                return await self._publish(feed_name, identity, offer, expires_at)

    async def _publish(
        self, feed_name: FeedName, identity: str, offer: str, expires_at: float | None
    ) -> Peer:
        self._ensure_open()
        feed = self.feeds[feed_name]
        description = parse_offer(offer, sending=True)
        kinds = {m.kind for m in description.media}
        if "video" in kinds and "video" not in feed_name.kinds:
            raise MediaUnsupported(f"the {feed_name} feed carries audio only")
        if feed_name.kinds[0] not in kinds:
            raise MediaUnsupported(f"the {feed_name} feed needs a {feed_name.kinds[0]} track")
        self._ensure_codecs(description, kinds)
        self._admission.ensure_may_publish(self.cid, feed_name, identity)
        previous = feed.publisher
        if previous is not None and previous.identity != identity:
            if previous.connected:
                raise FeedBusy(f"the {feed_name} feed already has a publisher")
            left = self._admission.hold(self.cid, feed_name, previous.identity)
            if left > 0:
                raise FeedBusy(
                    f"another device is connecting to the {feed_name} feed",
                    headers=retry_after(left),
                )
        self._admission.admit(self.cid, identity, priority=True)
        peer = Peer(PeerRole.PUBLISHER, feed_name, identity, self._configuration(), self.label)
        self._admission.register(self.cid, peer)
        taps: list[forwarding.ReceiverTap] = []

        def close_taps(_: Peer) -> None:
            for tap in taps:
                tap.close()

        peer.on_closed(close_taps)
        try:
            # Transceivers exist before the offer is applied: aiortc negotiates codecs while
            # applying it, so the codec preferences must already be in place.
            for media in description.media:
                transceiver = peer.pc.addTransceiver(media.kind, direction="recvonly")
                taps.extend(self._prepare_publisher_transceiver(transceiver, feed))
            await peer.set_offer(offer)
            answer = with_bitrate_hints(
                await peer.answer(self._announced_address), *self._publisher_kbps
            )
        except BaseException:
            await peer.close()
            raise
        if feed_name is FeedName.ENDOSCOPE and feed.begins_session(identity):
            self._on_session(stream_session.begin(self.cid, self.board, feed.sessions, self.label))
        # The feed names its new publisher first, so closing the replaced connection does not
        # flash "offline" to the viewers of a clinic that merely reloaded its page.
        feed.set_publisher(peer)
        peer.on_closed(feed.publisher_gone)
        if previous is not None:
            logger.info(
                "Router(%s) %s publisher replaced by a new connection", self.label, feed_name
            )
            await self.close_peer(previous.id)
        self._adopt(peer, answer, expires_at, feed.end)
        for producer in feed.producers.values():
            producer.attach(self._pli_sender(peer, producer.kind))
        if self.mode is RelayMode.TRANSCODE:
            feed.transcoding.attach(peer, lambda kind: feed.producers[kind].mark_alive())
        return peer

    def _prepare_publisher_transceiver(
        self, transceiver: RTCRtpTransceiver, feed: Feed
    ) -> list[forwarding.ReceiverTap]:
        producer = feed.producers[transceiver.kind]
        transceiver.setCodecPreferences(preferences(transceiver.kind, producer.codec))
        if self.mode is RelayMode.TRANSCODE:
            return []
        return [
            forwarding.tap_receiver(
                transceiver.receiver,
                transceiver.kind,
                producer.on_frame,
                producer.on_discontinuity,
                producer.on_sender_report if feed.name is FeedName.ENDOSCOPE else None,
                producer.codec,
            )
        ]

    @staticmethod
    def _pli_sender(peer: Peer, kind: str) -> Callable[[], bool]:
        receivers = [t.receiver for t in peer.pc.getTransceivers() if t.kind == kind]
        return lambda: bool(receivers) and forwarding.send_pli(receivers[0])

    # -- viewing -----------------------------------------------------------------------------

    async def view(
        self,
        feed_name: FeedName,
        identity: str,
        offer: str,
        annotated: bool = False,
        priority: bool = False,
        expires_at: float | None = None,
        quality: Quality | None = None,
    ) -> Peer:
        """WHEP: a viewer receives the feed's tracks, before or after the publisher goes live.
        ``annotated``: the endoscope video comes from the burn-in Rendition (audio stays raw).
        ``quality``: the ladder's rendition it is pinned to; None: chosen automatically by the
        viewer's own feedback (``relay.selector``), starting on the original.
        ``priority``: one of the people the consultation is for (clinic, surgeon), never kept
        out by the viewer limit or the consultation's pending limit (``Admission``)."""
        with self._negotiation():
            return await self._add_viewer(
                feed_name, identity, offer, annotated, priority, expires_at, quality
            )

    async def _add_viewer(
        self,
        feed_name: FeedName,
        identity: str,
        offer: str,
        annotated: bool,
        priority: bool,
        expires_at: float | None,
        quality: Quality | None,
    ) -> Peer:
        self._ensure_open()
        rendered = annotated or quality not in (None, Quality.ORIGINAL)
        if rendered and (feed_name is not FeedName.ENDOSCOPE or self.mode is not RelayMode.FORWARD):
            raise MediaUnsupported(
                "only the forwarded endoscope feed has annotated or lower-quality renditions"
            )
        feed = self.feeds[feed_name]
        description = parse_offer(offer, sending=False)
        kinds = {m.kind for m in description.media} & set(feed_name.kinds)
        if not kinds:
            raise MediaUnsupported(f"the {feed_name} feed has {' and '.join(feed_name.kinds)} only")
        self._ensure_codecs(description, kinds)
        viewers = self._admission.sessions(self.cid)
        if not priority and sum(p.role is PeerRole.VIEWER for p in viewers) >= self._max_viewers:
            raise RouterFull(
                f"this consultation already has {self._max_viewers} viewers",
                headers={"Retry-After": "10"},
            )
        self._admission.admit(self.cid, identity, priority)
        peer = Peer(PeerRole.VIEWER, feed_name, identity, self._configuration(), self.label)
        self._admission.register(self.cid, peer)
        consumers: list[MediaStreamTrack] = []
        try:
            for media in description.media:
                if media.kind in kinds:
                    consumers.append(
                        self._prepare_viewer_transceiver(media.kind, feed, peer, annotated, quality)
                    )
            await peer.set_offer(offer)
            answer = await peer.answer(self._announced_address)
        except BaseException:
            for consumer in consumers:
                consumer.stop()
            self.ladder.release()
            await peer.close()
            raise

        def stop_consumers(_: Peer) -> None:
            for consumer in consumers:
                consumer.stop()

        peer.on_closed(stop_consumers)
        if rendered:
            peer.on_closed(lambda _: self.ladder.release())
        self._adopt(peer, answer, expires_at)
        if quality is not None and "video" in kinds and feed_name is FeedName.ENDOSCOPE:
            self._report(peer, quality, False, "pinned")
        return peer

    def _report(self, peer: Peer, quality: Quality, auto: bool, reason: str) -> None:
        self._on_quality(QualityChange(self.cid, peer.id, peer.identity, quality, auto, reason))

    def _prepare_viewer_transceiver(
        self, kind: str, feed: Feed, peer: Peer, annotated: bool, quality: Quality | None
    ) -> MediaStreamTrack:
        video = kind == "video" and feed.name is FeedName.ENDOSCOPE
        chosen = Quality.ORIGINAL if quality is None else quality
        producer = self.ladder.producer(annotated, chosen) if video else feed.producers[kind]
        if self.mode is RelayMode.TRANSCODE:
            track = feed.transcoding.viewer_track(kind)
            peer.pc.addTransceiver(track, direction="sendonly").setCodecPreferences(
                preferences(kind, producer.codec)
            )
            return track
        report = partial(self._report, peer)
        consumer: Consumer | Selector = (
            automatic(self.ladder, annotated, self._ladder_kbps, report, peer.label)
            if video and quality is None
            else producer.consume(peer.label)
        )
        transceiver = peer.pc.addTransceiver(consumer, direction="sendonly")
        transceiver.setCodecPreferences(preferences(kind, producer.codec))
        forwarding.on_keyframe_request(transceiver.sender, consumer.request_keyframe)
        clock = partial(self._media_clock, peer)
        on_pack = SenderClock(transceiver.sender, clock).packed if video else lambda frame: None
        forwarding.share_packetization(transceiver.sender, consumer, producer.codec, on_pack)
        send_per_frame(transceiver.sender)
        if isinstance(consumer, Selector):
            consumer.on_swap = feedback.watch(transceiver.sender, consumer.on_sample).forget_sent
        return consumer

    def _media_clock(self, peer: Peer, rtp_offset: int) -> None:
        clock = MediaClock(self.cid, peer.id, peer.identity, rtp_offset)
        if peer.id not in self._media_clocks:
            peer.on_closed(lambda p: self._media_clocks.pop(p.id, None))
        self._media_clocks[peer.id] = clock
        self._on_media_clock(clock)

    def media_clocks(self, identity: str) -> list[MediaClock]:
        """The media clocks of ``identity``'s viewer sessions (for its pages that join later)."""
        return [c for c in self._media_clocks.values() if c.identity == identity]

    def capture_ms(self, pts: int) -> float | None:
        """When the clinic captured the endoscope frame of ``pts`` (ms since the UNIX epoch, its
        wall clock; None while unknown): its page finds that frame among its preview's."""
        return self.feeds[FeedName.ENDOSCOPE].producers["video"].capture_ms(pts)

    def media_pts(self) -> int | None:
        """Where the endoscope video is: pts (90 kHz relay clock) of its latest forwarded frame."""
        return self.feeds[FeedName.ENDOSCOPE].producers["video"].last_pts

    def tap(self, feed_name: FeedName, kind: str, label: str) -> Consumer:
        """A Consumer with no peer connection: the recorder's seam. ``stop()`` it when done."""
        self._ensure_open()
        return self.feeds[feed_name].producers[kind].consume(f"{self.label} tap:{label}")

    # -- sessions ----------------------------------------------------------------------------

    def _adopt(
        self,
        peer: Peer,
        answer: str,
        expires_at: float | None,
        on_expiry: Callable[[Peer], object] = lambda peer: None,
    ) -> None:
        """The session exists: it must connect within the connect deadline, stays while it is
        heard from, and ends at ``expires_at`` (after ``on_expiry``) at the latest."""
        peer.answer_sdp = answer
        self.peers[peer.id] = peer
        peer.on_closed(lambda p: self.peers.pop(p.id, None))
        peer.watch(self._peer_timeout_s)
        peer.require_connection(self._admission.limits.connect_deadline_s)
        if expires_at is not None:
            peer.end_at(expires_at, on_expiry)
        logger.info("Router(%s) %s %s session %s", self.label, peer.role, peer.feed, peer.id[:6])

    def _ensure_codecs(self, description: Any, kinds: set[str]) -> None:
        for kind in kinds:
            codec = self.video_codec if kind == "video" else "OPUS"
            if codec not in offered_codecs(description, kind):
                raise MediaUnsupported(
                    f"this consultation uses {codec} for {kind}; the offer does not include it"
                )

    def _ensure_open(self) -> None:
        if self.closed:
            raise RouterClosed(f"consultation {self.cid} is closed")

    def peer(self, session_id: str) -> Peer | None:
        return self.peers.get(session_id)

    async def end_session(self, session_id: str) -> bool:
        """The owner deletes its session (WHIP/WHEP DELETE): a publisher's feed then reads
        "ended" rather than "lost"."""
        peer = self.peers.get(session_id)
        if peer is not None and peer.role is PeerRole.PUBLISHER:
            self.feeds[FeedName(peer.feed)].end(peer)
        return await self.close_peer(session_id)

    async def close_peer(self, session_id: str) -> bool:
        peer = self.peers.get(session_id)
        if peer is None:
            return False
        await peer.close()
        return True

    @contextlib.contextmanager
    def _negotiation(self) -> Iterator[None]:
        self._negotiating += 1
        try:
            yield
        finally:
            self._negotiating -= 1

    def in_use(self) -> bool:
        """Has a peer, or is answering an offer (the Relay's idle test)."""
        return bool(self.peers) or self._negotiating > 0

    def viewer_count(self) -> int:
        return sum(1 for p in self.peers.values() if p.role is PeerRole.VIEWER)

    def feed_states(self) -> dict[str, dict[str, str | None]]:
        return {str(name): feed.to_json() for name, feed in self.feeds.items()}

    async def close(self) -> None:
        self.closed = True
        await asyncio.gather(*(peer.close() for peer in list(self.peers.values())))
        await self.ladder.close()
        self.anchoring.close()
        await self.decoded.close()
        for feed in self.feeds.values():
            feed.close()
