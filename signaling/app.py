"""The one application factory: wires the relay (media) to the signalling edge."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiortc import RTCIceServer

from persistence.database import describe
from persistence.files import PRIVATE_DIR, make_private
from recorder.annotation_log import AnnotationLogs
from recorder.config import RecorderConfig
from recorder.consultation import ConsultationInfo
from recorder.index import RecordingIndex, RecordingRow
from recorder.library import RecordingLibrary
from recorder.manifest import recording_dir
from recorder.recordings import RecordingEvent, Recordings
from relay import ConsultationId, FeedEvent, Relay, RelayConfig, RelayMode, SessionLimits
from relay.privacy import PrivacyChange, PrivacyWatch
from signaling.auth.grants import TokenIssuer
from signaling.auth.media_tokens import MediaTokens
from signaling.auth.revocations import Revocations, Withdrawal
from signaling.auth.secret import load_or_create_secret
from signaling.auth.turn import IceServers
from signaling.cluster.cascade import Cascades
from signaling.cluster.cluster import Cluster, NodeIdentity, connect
from signaling.cluster.proxy import recordings_on_their_node
from signaling.db.audit import AuditTrail
from signaling.db.audit_chain import ANCHOR_FILENAME
from signaling.db.invites import InviteBook
from signaling.db.patients import PatientRegister
from signaling.db.store import ConsultationStore, database_of
from signaling.http import api, headers, netcheck, openapi, pages, snapshots, stills, whip
from signaling.http.audit_edge import refused_token_middleware
from signaling.http.client_address import TRUSTED_PROXIES, trusted_networks
from signaling.http.errors import error_middleware
from signaling.http.logs import install_log_hygiene
from signaling.http.refusals import RefusedTokens
from signaling.http.throttle import FailureBudget, Throttle
from signaling.keys import (
    ANNOTATION_LOGS,
    AUDIT,
    CASCADES,
    CHAT_HISTORY,
    CLUSTER,
    FAILED_JOINS,
    HUB,
    ICE_SERVERS,
    INVITES,
    METRICS,
    NETCHECK_BUDGET,
    PATIENTS,
    PICTURES,
    PRIVACY,
    RECORDINGS,
    REFUSED_TOKENS,
    RELAY,
    REPLAY,
    REVOCATIONS,
    SETTINGS,
    STILLS,
    STORE,
    THROTTLE,
    TOKENS,
)
from signaling.ops import routes as ops
from signaling.ops.live import LiveCollector
from signaling.ops.metrics import Metrics
from signaling.ops.routes import metrics_middleware
from signaling.records import routes as records
from signaling.replay import routes as replay
from signaling.replay.state import ReplayState
from signaling.settings import Settings
from signaling.ws import handler as websocket
from signaling.ws.audit import RoomAudit
from signaling.ws.chat import ChatHistory
from signaling.ws.hub import Hub
from signaling.ws.marks import BoardKeeper
from signaling.ws.messages import (
    FeedUpdate,
    MediaClockUpdate,
    PrivacyUpdate,
    QualityUpdate,
    RecordingUpdate,
    Restarting,
)
from signaling.ws.picture import Pictures
from signaling.ws.stills import Stills

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def create_app(settings: Settings) -> web.Application:
    settings.data_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if fixed := make_private(settings.data_dir):  # an installation from before, or a tool
        logger.warning("%d files or directories in the data dir made private to this user", fixed)
    throttle = Throttle(
        settings.auth_failure_limit,
        settings.session_limit_per_identity,
        settings.session_limit_per_address,
    )
    middlewares = [
        metrics_middleware,
        error_middleware,
        refused_token_middleware,
        throttle.middleware(),
    ]
    if settings.redis_url:
        middlewares.append(recordings_on_their_node)
    app = web.Application(client_max_size=settings.max_sdp_bytes, middlewares=middlewares)
    app[THROTTLE] = throttle
    app[TRUSTED_PROXIES] = trusted_networks(settings.trusted_proxies)
    app[SETTINGS] = settings
    secret = settings.secret or load_or_create_secret(settings.data_dir)
    database = database_of(settings)
    if settings.database_url:
        logger.info("records in PostgreSQL at %s", describe(settings.database_url))
    store = app[STORE] = ConsultationStore(database)
    invites = app[INVITES] = InviteBook(database)
    app[PATIENTS] = PatientRegister(database)

    async def withdrawn() -> tuple[dict[ConsultationId, float], set[tuple[ConsultationId, str]]]:
        return await store.access_revocations(), await invites.withdrawn_identities()

    app[REVOCATIONS] = Revocations(withdrawn)
    app[TOKENS] = TokenIssuer(secret, app[REVOCATIONS].refusal)
    app[FAILED_JOINS] = FailureBudget()
    app[NETCHECK_BUDGET] = FailureBudget(netcheck.BUDGET_BURST, netcheck.BUDGET_REFILL_S)
    app[HUB] = Hub(reconnect_grace_s=settings.reconnect_grace_s)
    app[AUDIT] = AuditTrail(database, settings.data_dir / ANCHOR_FILENAME)
    app[REFUSED_TOKENS] = RefusedTokens(app[AUDIT])
    RoomAudit(app[HUB], app[AUDIT]).install()
    app[ANNOTATION_LOGS] = AnnotationLogs(settings.data_dir)
    app[CHAT_HISTORY] = ChatHistory(settings.data_dir)
    ice_servers = app[ICE_SERVERS] = IceServers(settings)
    app[RELAY] = Relay(
        RelayConfig(
            ice_servers=lambda: [
                RTCIceServer(s.url, s.username, s.credential) for s in ice_servers.for_relay()
            ],
            host_addresses=settings.ice_host_addresses,
            announced_address=settings.announced_address,
            max_viewers=settings.max_viewers,
            publisher_timeout_s=settings.publisher_timeout_s,
            peer_timeout_s=settings.peer_timeout_s,
            publisher_kbps=settings.publisher_kbps,
            ladder_kbps=settings.ladder_kbps,
            tracking=settings.tracking,
            mode=RelayMode(settings.relay_mode),
            router_idle_s=settings.router_idle_s,
            session_gap_s=settings.recording_offline_s,
            limits=SessionLimits(
                connect_deadline_s=settings.connect_deadline_s,
                pending_per_identity=settings.max_pending_per_identity,
                sessions_per_identity=settings.max_sessions_per_identity,
                pending_per_consultation=settings.max_pending_per_consultation,
                max_sessions=settings.max_sessions,
            ),
        )
    )
    app[RECORDINGS] = _recordings(settings, app[STORE], app[HUB], app[RELAY])
    app[PRIVACY] = PrivacyWatch(app[RELAY].find)
    app[REPLAY] = ReplayState(
        RecordingLibrary(settings.data_dir, app[RECORDINGS].index, settings.recording_min_free_mb),
        MediaTokens(secret),
    )
    app[METRICS] = Metrics(LiveCollector(app[RELAY], app[HUB], app[RECORDINGS]), app[HUB])
    app[STILLS] = Stills(
        app[HUB], app[RELAY], BoardKeeper(app[HUB], app[RELAY], app[ANNOTATION_LOGS])
    )
    app[PICTURES] = Pictures(app[HUB], app[RELAY])
    install_log_hygiene()
    headers.add_to(app)
    app.cleanup_ctx.append(_media_ctx)
    if settings.redis_url:
        app[CLUSTER] = Cluster(
            connect(settings.redis_url),
            NodeIdentity(settings.node_name, settings.node_base_url, settings.region),
            settings.cluster_lease_s,
        )
        if settings.cascade:
            app[CASCADES] = Cascades(app[CLUSTER], app[TOKENS], app[RELAY])
        app.cleanup_ctx.append(_cluster_ctx)
        app[RECORDINGS].recoverable = _recoverable_in(app[CLUSTER], settings.data_dir)
        app[CLUSTER].on_claimed = app[RECORDINGS].adopt
    app.on_shutdown.append(_on_shutdown)

    openapi.add_routes(app)
    api.add_routes(app)
    snapshots.add_routes(app)
    stills.add_routes(app)
    netcheck.add_routes(app)
    replay.add_routes(app)
    records.add_routes(app)
    ops.add_routes(app)
    whip.add_routes(app)
    websocket.add_routes(app)
    pages.add_routes(app, WEB_DIR)
    return app


async def _media_ctx(app: web.Application) -> AsyncIterator[None]:
    """Feed events go to the WebSocket hub; on shutdown every peer connection is closed and
    every annotation log written out. Recordings follow the feeds: recovered at start-up, ended
    cleanly by ``_on_shutdown``, before the relay closes."""
    hub = app[HUB]
    recordings = app[RECORDINGS]
    stills_mode = app[STILLS]
    keeper = stills_mode.keeper
    privacy = app[PRIVACY]
    guarding = app[SETTINGS].privacy_guard

    pictures = app[PICTURES] if app[SETTINGS].picture_guard else None

    cascades = app.get(CASCADES)

    def on_feed_event(event: FeedEvent) -> None:
        if cascades is not None and cascades.carries(event.cid):
            return  # a feed taken from its owner: the owner guards, records and tells pages
        hub.broadcast(event.cid, FeedUpdate.of(event))
        if guarding:
            privacy.on_feed_event(event)
        if pictures is not None:
            pictures.on_feed_event(event)
        recordings.on_feed_event(event)
        stills_mode.on_feed_event(event)

    def on_privacy(change: PrivacyChange) -> None:
        hub.broadcast(change.cid, PrivacyUpdate(change.out_of_body))
        recordings.on_privacy(change)

    def on_gone(cid: ConsultationId, identity: str) -> None:
        keeper.on_gone(cid, identity)
        stills_mode.on_gone(cid, identity)

    def on_recording_event(event: RecordingEvent) -> None:
        hub.broadcast(event.cid, RecordingUpdate.of(event))

    relay = app[RELAY]
    relay.on_feed_event = on_feed_event
    relay.on_quality = lambda change: hub.send_to(
        change.cid, change.identity, QualityUpdate.of(change)
    )
    relay.on_media_clock = lambda clock: hub.send_to(
        clock.cid, clock.identity, MediaClockUpdate.of(clock)
    )
    relay.on_stream_session = keeper.on_stream_session
    relay.on_placements = keeper.on_placements
    hub.on_gone = on_gone
    relay.attended = hub.has_participants
    recordings.on_event = on_recording_event
    privacy.on_change = on_privacy
    revocations = app[REVOCATIONS]
    ending: set[asyncio.Task[bool]] = set()

    def on_withdrawn(withdrawal: Withdrawal) -> None:
        """End what a withdrawal took the access of: its sockets (4410) and media sessions."""
        hub.withdraw(withdrawal.cid, withdrawal.identity, withdrawal.reason)
        router = relay.find(withdrawal.cid)
        if router is None:
            return
        for peer in list(router.peers.values()):
            if withdrawal.identity in (None, peer.identity):
                task = asyncio.get_running_loop().create_task(router.end_session(peer.id))
                ending.add(task)
                task.add_done_callback(ending.discard)

    revocations.on_withdrawn = on_withdrawn
    await revocations.refresh(announce=False)
    refreshing = asyncio.get_running_loop().create_task(revocations.keep_fresh())
    checking = asyncio.get_running_loop().create_task(app[AUDIT].check_all())
    await recordings.start()
    yield
    refreshing.cancel()
    checking.cancel()
    await asyncio.gather(refreshing, checking, *ending, return_exceptions=True)
    await app[REPLAY].close()
    privacy.close()
    app[PICTURES].close()
    await relay.close()
    app[REFUSED_TOKENS].flush()
    await app[AUDIT].close()  # after everything that writes to it (sockets, sessions)
    await recordings.index.close()
    await app[ANNOTATION_LOGS].close()
    await app[INVITES].close()
    await app[PATIENTS].close()
    await app[STORE].close()


async def _cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    """This node in the cluster while it serves (after the media context, so its leases are
    let go before the relay closes). A consultation another node took over (after a
    partition) is let go here: its pages and clients reconnect and are routed to the owner."""
    cluster, relay, hub, cascades = app[CLUSTER], app[RELAY], app[HUB], app.get(CASCADES)
    letting_go: set[asyncio.Task[None]] = set()
    # A Router fed by cascade is not hosted here: this node never holds its lease.
    cascaded = cascades.cids if cascades is not None else set
    cluster.hosted = lambda: (set(relay.routers) - cascaded()) | set(hub.census())
    cluster.sessions = lambda: sum(len(router.peers) for router in relay.routers.values())

    def on_lost(cid: ConsultationId) -> None:
        hub.moved(cid, "this consultation is served by another server now; reconnecting")
        task = asyncio.get_running_loop().create_task(relay.drop(cid))
        letting_go.add(task)
        task.add_done_callback(letting_go.discard)

    cluster.on_lost = on_lost
    await cluster.start()  # Redis away at start: /readyz says so, and it is tried every beat
    yield
    await asyncio.gather(*letting_go, return_exceptions=True)
    if cascades is not None:
        await cascades.close()
    await cluster.close()


def _recoverable_in(cluster: Cluster, data_dir: Path) -> Callable[[RecordingRow], Awaitable[bool]]:
    """In a cluster the recordings index is shared: a node recovers only recordings whose files
    it has and whose consultation no other node serves (never another node's live one)."""

    async def recoverable(row: RecordingRow) -> bool:
        if not await asyncio.to_thread(recording_dir(data_dir, row.id).is_dir):
            return False
        return not await cluster.serves_elsewhere(row.consultation_id)

    return recoverable


def _recordings(settings: Settings, store: ConsultationStore, hub: Hub, relay: Relay) -> Recordings:
    async def consultation(cid: ConsultationId) -> ConsultationInfo | None:
        found = await store.get(cid)
        enabled = await store.recording_enabled(cid)
        if found is None or enabled is None:
            return None
        consent = found.consent.to_json() if found.consent else None
        return ConsultationInfo(found.id, found.title, found.video_codec, enabled, consent)

    return Recordings(
        settings.data_dir,
        RecordingIndex(database_of(settings), settings.node_name if settings.redis_url else None),
        RecorderConfig(
            offline_s=settings.recording_offline_s, min_free_mb=settings.recording_min_free_mb
        ),
        consultation,
        relay.find,
        hub.participants,
    )


async def _on_shutdown(app: web.Application) -> None:
    """Every page is told the server is restarting (in its own language), then its socket
    closes with 1001; ``/readyz`` answers 503 from here on. Then every recording's open segment
    ends, before aiohttp waits for the requests still running (a replay stream, a download)."""
    await app[HUB].close_all(code=1001, reason="server restarting", farewell=Restarting())
    await app[RECORDINGS].close()
