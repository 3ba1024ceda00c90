"""Cascade: a node serves the endoscope feed of a consultation another node owns, pulling one
stream from the owner as its WHEP viewer (``relay.upstream.Upstream``) and forwarding it to any
number of local viewers, untouched.

It applies to a WHEP request for the endoscope original (not ``?annotated=1``, not a pinned
rung: those still get the 307) reaching a node that does not own the consultation, when

* the owner's region and this node's differ and both are set (``ENDOLINK_REGION``), or
* the consultation was created with ``"cascade": true`` (Redis key ``endolink:cascade:{cid}``).

This node authenticates to the owner with a token it mints itself: identity ``node:<id>``, role
observer, ``TOKEN_TTL_S``, a new one for every session. Every node of a cluster must therefore
share ``ENDOLINK_SECRET``. The owner ends the upstream session when that token expires, so
``RENEW_MARGIN_S`` before, a new session (new token) is negotiated beside it and takes over at
its first keyframe (``relay.upstream``): local viewers see no gap.

Local viewers are checked against their token only: this node's store need not know the
consultation (with per-node SQLite records it does not; with the shared PostgreSQL records,
``ENDOLINK_DATABASE_URL``, it would). A withdrawal reaches their sessions here once this node's
revocations know it: within their refresh (2 s) with shared records, never with per-node
SQLite records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from redis.exceptions import RedisError

from relay import ConsultationId, Relay, Router
from relay.upstream import Upstream
from relay.upstream_session import UpstreamRefused
from signaling.auth.grants import Grant, Role, TokenIssuer
from signaling.cluster.cluster import Cluster
from signaling.cluster.nodes import PREFIX, NodeInfo

logger = logging.getLogger(__name__)

TOKEN_TTL_S = 1800
"A node's token for one upstream session; the session ends with it and is negotiated again."
RENEW_MARGIN_S = 120
"A session is replaced this long before its token (and so the session on the owner) ends."
HTTP_TIMEOUT_S = 10.0
CASCADE_TTL_S = 7 * 24 * 3600
"A consultation's cascade switch is forgotten after a week."


NODE_IDENTITY_PREFIX = "node:"


def node_identity(node_id: str) -> str:
    """The identity a node's upstream tokens carry."""
    return f"{NODE_IDENTITY_PREFIX}{node_id}"


def is_node(identity: str) -> bool:
    return identity.startswith(NODE_IDENTITY_PREFIX)


def cascade_key(cid: ConsultationId) -> str:
    return f"{PREFIX}cascade:{cid}"


async def configure(cluster: Cluster, cid: ConsultationId) -> None:
    """Mark ``cid`` for cascade (``"cascade": true`` at creation); best effort, like placement."""
    try:
        await cluster.redis.set(cascade_key(cid), "1", ex=CASCADE_TTL_S)
    except (RedisError, OSError) as exc:
        logger.warning("consultation %s: cascade not recorded: %s", cid, type(exc).__name__)


class OwnerSession:
    """``relay.upstream_session.OriginSession``: a WHEP session on the owner, ended by DELETE
    with the token that opened it."""

    def __init__(self, http: aiohttp.ClientSession, answer: str, url: str, token: str) -> None:
        self.answer = answer
        self._http = http
        self._url = url
        self._token = token

    async def close(self) -> None:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            timeout = aiohttp.ClientTimeout(total=2.0)
            headers = {"Authorization": f"Bearer {self._token}"}
            async with self._http.delete(self._url, headers=headers, timeout=timeout):
                pass


class OwnerLink:
    """``relay.upstream_session.UpstreamLink`` over WHEP to whichever node owns the
    consultation when a session is negotiated, with a token minted for that session."""

    def __init__(
        self,
        cluster: Cluster,
        tokens: TokenIssuer,
        http: aiohttp.ClientSession,
        cid: ConsultationId,
    ) -> None:
        self._cluster = cluster
        self._tokens = tokens
        self._http = http
        self._cid = cid
        self.identity = node_identity(cluster.me.id)

    async def negotiate(self, offer: str) -> OwnerSession:
        owner = await self._cluster.serving(self._cid)
        if owner is None:
            raise UpstreamRefused("this node serves the consultation itself now")
        grant = Grant.for_role(Role.OBSERVER, self._cid, self.identity, TOKEN_TTL_S)
        token = self._tokens.issue(grant)
        url = f"{owner.url}/whep/{self._cid}?feed=endoscope&quality=original"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        async with self._http.post(
            url, data=offer, headers=headers, allow_redirects=False, timeout=timeout
        ) as response:
            body = await response.text()
            if response.status in (401, 403, 404):
                raise UpstreamRefused(f"{owner.id} answered {response.status}: {body[:200]}")
            if response.status != 201 or "Location" not in response.headers:
                raise ConnectionError(f"{owner.id} answered {response.status}: {body[:200]}")
            return OwnerSession(self._http, body, owner.url + response.headers["Location"], token)


class Cascades:
    """This node's upstreams, one per consultation it cascades."""

    def __init__(self, cluster: Cluster, tokens: TokenIssuer, relay: Relay) -> None:
        self._cluster = cluster
        self._tokens = tokens
        self._relay = relay
        self._upstreams: dict[ConsultationId, Upstream] = {}
        "Each until it has closed: a closing one is waited for before the next starts."
        self._dropping: set[asyncio.Task[None]] = set()
        self.renew_after_s: float = TOKEN_TTL_S - RENEW_MARGIN_S
        "Each upstream session is replaced this long after it began, before its token ends."

    def carries(self, cid: ConsultationId) -> bool:
        """Whether this node's Router for ``cid`` is fed by another node (it does not host it)."""
        return cid in self._upstreams

    def cids(self) -> set[ConsultationId]:
        return set(self._upstreams)

    def find(self, cid: ConsultationId) -> Upstream | None:
        """The consultation's upstream while it is open."""
        upstream = self._upstreams.get(cid)
        return None if upstream is None or upstream.closed else upstream

    async def applies(self, cid: ConsultationId, owner: NodeInfo) -> bool:
        """Whether a viewer here of ``cid``, owned by ``owner``, is served by cascade."""
        mine = self._cluster.me.region
        if owner.region and mine and owner.region != mine:
            return True
        try:
            return bool(await self._cluster.redis.exists(cascade_key(cid)))
        except (RedisError, OSError):
            return False

    async def router(self, cid: ConsultationId) -> tuple[Upstream, Router]:
        """The consultation's upstream (started if need be), expecting one more local viewer
        (tell it ``arrived``), and the Router it feeds."""
        upstream = self._upstreams.get(cid)
        if upstream is not None and upstream.closed:
            await upstream.close()  # two upstreams must never feed one Router at once
            upstream = self._upstreams.get(cid)
        if upstream is None or upstream.closed:
            upstream = self._new(cid)
        upstream.expect()
        try:
            return upstream, await upstream.start()
        except BaseException:
            upstream.arrived(None)
            raise

    def _new(self, cid: ConsultationId) -> Upstream:
        link = OwnerLink(self._cluster, self._tokens, self._cluster.http(), cid)
        config = self._relay.config

        def closed(upstream: Upstream) -> None:
            if self._upstreams.get(cid) is upstream:
                del self._upstreams[cid]
            router = self._relay.find(cid)
            if router is not None and not router.in_use():
                # Not hosted here: were it kept until reaped, this node would renew (or
                # claim) the consultation's lease for it.
                task = asyncio.ensure_future(self._relay.drop(cid))
                self._dropping.add(task)
                task.add_done_callback(self._dropping.discard)

        upstream = Upstream(
            cid,
            link,
            lambda codec: self._relay.router(cid, codec),
            self._relay.configuration,
            link.identity,
            config.peer_timeout_s,
            config.limits.connect_deadline_s,
            renew_after_s=self.renew_after_s,
            on_closed=closed,
        )
        self._upstreams[cid] = upstream
        return upstream

    async def close(self) -> None:
        upstreams = list(self._upstreams.values())
        await asyncio.gather(*(u.close() for u in upstreams), return_exceptions=True)
        await asyncio.gather(*self._dropping, return_exceptions=True)
