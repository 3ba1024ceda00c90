"""Server settings: one dataclass, every field documented, defaults that need no external service.

Settings are read from ``ENDOLINK_*`` environment variables and overridden by command-line flags;
``SETTINGS`` is the catalogue the README's configuration table is checked against.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SENDS = ("stow", "c-store")
"How a DICOM export reaches the archive: STOW-RS (``pacs_stow_url``) or C-STORE (``pacs_dicom``)."
_ZONEINFO = "/zoneinfo/"


def system_timezone() -> str:
    """The system's IANA zone (``TZ``, else where ``/etc/localtime`` links into the zoneinfo
    tree, else ``/etc/timezone``); UTC when none of them names a known zone."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    localtime = os.path.realpath("/etc/localtime")
    candidates.append(localtime.rpartition(_ZONEINFO)[2] if _ZONEINFO in localtime else "")
    try:
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    except OSError:
        pass
    for name in candidates:
        try:
            return parse_timezone(name)
        except ValueError:
            continue
    return "UTC"


@dataclass(frozen=True)
class IceServer:
    """One STUN/TURN server handed to browsers (``Link: rel="ice-server"``) and to the relay."""

    url: str
    username: str | None = None
    credential: str | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """As an ``RTCIceServer`` dictionary for the pages (``GET /api/session``)."""
        entry: dict[str, Any] = {"urls": [self.url]}
        if self.username is not None:
            entry["username"] = self.username
        if self.credential is not None:
            entry["credential"] = self.credential
        return entry


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    "Where the SQLite database, the signing secret and recordings live."
    database_url: str | None = field(default=None, repr=False)
    """``postgresql://user:password@host:5432/endolink``: keep the records (consultations,
    consent, invites, patients, the audit trail, the recordings index) in this PostgreSQL
    database, shared by several nodes; unset: the SQLite file in ``data_dir``. Never logged."""
    host: str = "127.0.0.1"
    "Interface the HTTP server binds to."
    port: int = 8080
    "TCP port of the HTTP server."
    tls: bool = False
    "Serve HTTPS with the certificate in ``cert_file``/``key_file`` (made by ``endolink certs``)."
    cert_file: Path | None = None
    "TLS certificate (PEM); defaults to ``<certs_dir>/server.pem``."
    key_file: Path | None = None
    "TLS private key (PEM); defaults to ``<certs_dir>/server-key.pem``."
    public_url: str | None = None
    "Base URL printed in invite links (e.g. https://endolink.example.org); default from host/port."
    secret: str | None = field(default=None, repr=False)
    "JWT signing secret; if unset, one is generated once into ``<data_dir>/secret.key``."
    ice_servers: tuple[IceServer, ...] = ()
    "Static STUN/TURN servers: space-separated ``turn:user:pass@host:port`` or plain URLs."
    turn_urls: tuple[str, ...] = ()
    "coturn URLs (space-separated ``turn:``/``turns:``) for credentials minted per participant."
    turn_secret: str | None = field(default=None, repr=False)
    "coturn's ``static-auth-secret``; needed with ``turn_urls``. Never logged."
    turn_ttl_s: int = 3600
    "Lifetime (s) of minted TURN credentials for new allocations (signaling/auth/turn.py)."
    relay_turn: bool = False
    "The relay allocates on coturn too (only when it sits behind NAT with no reachable address)."
    ice_host_addresses: tuple[str, ...] = ()
    "Local addresses for the relay's ICE host candidates; empty = all interfaces plus loopback."
    announced_address: str | None = None
    "Address advertised in ICE candidates instead of the local one (server behind a 1:1 NAT)."
    video_codec: str = "VP8"
    "Video codec of new consultations: VP8 or H264 (constrained baseline, best for Safari)."
    max_viewers: int = 50
    """Viewers per consultation (connected or connecting) before WHEP answers 503; the clinic and
    the surgeon are never refused by it."""
    connect_deadline_s: float = 15.0
    "Seconds a WHIP/WHEP session may take to connect after its answer before it is closed."
    max_pending_per_identity: int = 8
    "Sessions one link may have connecting at once before it gets 429 (4 devices × 2)."
    max_sessions_per_identity: int = 12
    "Media sessions one link may hold in all (connecting or connected) before it gets 429."
    max_pending_per_consultation: int = 20
    "Observer sessions connecting at once in one consultation before WHEP answers 503."
    max_sessions: int = 500
    "Media sessions of the whole server (every consultation) before WHIP/WHEP answer 503."
    max_sdp_bytes: int = 64 * 1024
    "Largest accepted SDP offer or JSON body."
    token_ttl_s: int = 6 * 3600
    "Default lifetime of invite tokens, seconds."
    publisher_timeout_s: float = 3.0
    "Seconds without media before a publisher is shown offline."
    peer_timeout_s: float = 4.0
    "Seconds a connected publisher or viewer may send nothing (not even STUN) before it is closed."
    publisher_kbps: tuple[int, int, int] = (1500, 150, 4000)
    "Start, floor and ceiling bitrate (kbit/s) suggested to browser publishers of the endoscope."
    ladder_kbps: tuple[int, int] = (700, 250)
    """Video bitrate (kbit/s) of the viewer quality ladder's 540p and 360p rungs: they fit a 700
    and a 350 kbit/s link with the audio beside them."""
    tracking: bool = True
    """Marks drawn "on the tissue" follow it: the relay decodes the endoscope video and tracks
    them while any exists (off: every mark stays where it was drawn)."""
    picture_guard: bool = True
    """Watch the endoscope's picture quality (focus, exposure, colour) while it is live: the clinic
    gets a hint in plain words, the surgeon and observers a quality badge."""
    relay_mode: str = "forward"
    "``forward`` (the product) or ``transcode`` (aiortc's per-viewer re-encoding; benchmarks only)."
    router_idle_s: float = 60.0
    "Seconds a consultation's media Router may go without peers or WebSocket participants."
    recording_offline_s: float = 60.0
    "Seconds the endoscope feed may stay offline and still continue the same recording."
    reconnect_grace_s: float = 15.0
    """Seconds a participant whose connection broke shows as reconnecting (and keeps a freeze it
    made) before it counts as gone."""
    recording_min_free_mb: int = 500
    """Free disk space (MiB) below which recording stops, with an alert to participants, and new
    snapshots and exports are refused (507)."""
    privacy_guard: bool = True
    """Watch the endoscope for frames outside the body (the room, faces): pages are told, the
    recording's manifest marks those spans, replay and exports blur them."""
    auth_failure_limit: tuple[int, float] = (30, 2.0)
    """Failed authentications (bad, expired or withdrawn tokens) per source address:
    ``BURST,REFILL_S`` — 30 at once, then one more every 2 s; past it token-bearing requests
    from that address get 429 with ``Retry-After``."""
    session_limit_per_identity: tuple[int, float] = (20, 3.0)
    "WHIP/WHEP session offers per identity (one link, all its devices): ``BURST,REFILL_S``."
    session_limit_per_address: tuple[int, float] = (100, 0.5)
    "WHIP/WHEP session offers per source address (a hospital behind one NAT): ``BURST,REFILL_S``."
    trusted_proxies: tuple[str, ...] = ()
    """Reverse proxies (addresses or networks, comma-separated) whose ``X-Forwarded-For`` names
    the client for per-address limits, the audit and the access log; empty: the TCP peer."""
    header_timeout_s: float = 10.0
    "Seconds a client may take to send a request's headers (from its first byte); then cut."
    body_timeout_s: float = 30.0
    """Seconds a client may take to send a request body (plus 1 s per 64 KiB a large one
    declares); then 408 and the connection cut."""
    ws_auth_timeout_s: float = 5.0
    """Seconds from a WebSocket's upgrade to its auth message, whatever else the client sends
    meanwhile (pongs, pings); then it is closed with 4408."""
    ws_frame_deadline_s: float = 10.0
    """Longest wait for the next complete frame of an authenticated WebSocket (an idle page
    answers the heartbeat's pings; one trickling an unfinished frame gets none); then 4408."""
    replay_idle_s: float = 900.0
    "Seconds without interaction after which the replay page logs off (forgets its tokens)."
    metrics_token: str | None = field(default=None, repr=False)
    """Bearer token that may read ``/metrics``; unset: only loopback clients not behind a proxy
    (docs/operations.md). Never logged."""
    pacs_stow_url: str | None = field(default=None, repr=False)
    """DICOMweb root of the hospital archive for ``send: stow`` (e.g.
    ``https://pacs.example.org/dicom-web``; user:password in the URL for HTTP Basic). Never
    logged."""
    pacs_dicom: tuple[str, str, int] | None = None
    "The archive for ``send: c-store``: ``AET@host:port`` (its AE title, host, port)."
    dicom_ae_title: str = "ENDOLINK"
    "Our AE title when we C-STORE to the archive (up to 16 characters, no backslash)."
    timezone: str = field(default_factory=system_timezone)
    """IANA name of the hospital's time zone (``Asia/Seoul``): DICOM dates and times are written
    in it, with its offset, because archives match studies by local date."""
    redis_url: str | None = field(default=None, repr=False)
    """Redis of a cluster of nodes (``redis://host:6379/0``); unset: one node on its own, nothing
    shared (docs/deployment.md, several nodes). Never logged."""
    node_id: str | None = None
    "This node's name in the cluster; default: the host name and port (``host-8443``)."
    node_url: str | None = None
    """This node's own base URL in a cluster, where other nodes send its consultations' offers
    and pages (``https://seoul-1.example.org``); default: ``public_url``, which invite links use
    (in a cluster, the name every node answers to)."""
    region: str = ""
    "Where this node is (``seoul``, ``ulaanbaatar``): new consultations asking for it go here."
    cluster_lease_s: float = 6.0
    """Seconds a node holds a consultation without renewing: how long after a node dies its
    consultations can be taken over by another (its heartbeat is a third of this)."""
    cascade: bool = True
    """Serve viewers of another node's consultation here, from one stream pulled from the owner,
    when the regions differ or the consultation asks for it (docs/deployment.md, cascade);
    off: redirect them to the owner."""
    log_format: str = "text"
    "``text`` (one readable line per event) or ``json`` (one JSON object per line)."
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    "Free-form settings for tests and later features; not read from the environment."

    @property
    def certs_dir(self) -> Path:
        return self.data_dir / "certs"

    @property
    def cert_path(self) -> Path:
        return self.cert_file or self.certs_dir / "server.pem"

    @property
    def key_path(self) -> Path:
        return self.key_file or self.certs_dir / "server-key.pem"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls else "http"
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def node_base_url(self) -> str:
        """This node's own URL (``node_url``, else ``base_url``)."""
        return self.node_url.rstrip("/") if self.node_url else self.base_url

    @property
    def node_name(self) -> str:
        """This node's id in a cluster."""
        return self.node_id or f"{socket.gethostname()}-{self.port}"

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``ENDOLINK_<FIELD>`` variables, then apply non-None overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"ENDOLINK_{f.name.upper()}")
            if raw is None or f.name == "extra":
                continue
            values[f.name] = _parse(f.name, raw)
        return cls(**values).with_overrides(**overrides)


def _parse(name: str, raw: str) -> Any:
    if name in ("data_dir", "cert_file", "key_file"):
        return Path(raw)
    if name in (
        "port",
        "max_viewers",
        "max_pending_per_identity",
        "max_sessions_per_identity",
        "max_pending_per_consultation",
        "max_sessions",
        "max_sdp_bytes",
        "token_ttl_s",
        "recording_min_free_mb",
        "turn_ttl_s",
    ):
        return int(raw)
    if name in (
        "publisher_timeout_s",
        "peer_timeout_s",
        "recording_offline_s",
        "router_idle_s",
        "header_timeout_s",
        "body_timeout_s",
        "ws_auth_timeout_s",
        "ws_frame_deadline_s",
        "replay_idle_s",
        "connect_deadline_s",
        "cluster_lease_s",
    ):
        return float(raw)
    if name in ("auth_failure_limit", "session_limit_per_identity", "session_limit_per_address"):
        return parse_limit(name, raw)
    if name in ("tls", "relay_turn", "tracking", "privacy_guard", "picture_guard"):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if name == "ice_servers":
        return tuple(parse_ice_server(item) for item in raw.split())
    if name == "publisher_kbps":
        start, floor, ceiling = (int(part) for part in raw.split(","))
        if not 0 < floor <= start <= ceiling:
            raise ValueError(
                "ENDOLINK_PUBLISHER_KBPS must be START,FLOOR,CEILING with FLOOR<=START<=CEILING"
            )
        return (start, floor, ceiling)
    if name == "ladder_kbps":
        high, low = (int(part) for part in raw.split(","))
        if not 0 < low <= high:
            raise ValueError("ENDOLINK_LADDER_KBPS must be KBPS_540P,KBPS_360P with 360P <= 540P")
        return (high, low)
    if name == "ice_host_addresses":
        return tuple(raw.split())
    if name == "trusted_proxies":
        return parse_trusted_proxies(raw)
    if name == "turn_urls":
        return parse_turn_urls(raw)
    if name == "video_codec":
        return normalise_codec(raw)
    if name == "redis_url":
        if not raw.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("ENDOLINK_REDIS_URL must be a redis://, rediss:// or unix:// URL")
        return raw
    if name == "log_format":
        if raw not in ("text", "json"):
            raise ValueError(f"ENDOLINK_LOG_FORMAT must be text or json, not {raw!r}")
        return raw
    if name == "pacs_dicom":
        return parse_dicom_address(raw)
    if name == "database_url":
        return parse_database_url(raw)
    if name == "pacs_stow_url":
        return parse_stow_url(raw)
    if name == "timezone":
        return parse_timezone(raw)
    if name == "dicom_ae_title":
        return parse_ae_title(name, raw)
    if name == "relay_mode":
        if raw not in ("forward", "transcode"):
            raise ValueError(f"ENDOLINK_RELAY_MODE must be forward or transcode, not {raw!r}")
        return raw
    return raw


def parse_limit(name: str, raw: str) -> tuple[int, float]:
    """``BURST,REFILL_S`` (e.g. ``30,2``): a burst of at least 1 and a positive refill time."""
    burst, _, refill = raw.partition(",")
    try:
        limit = (int(burst), float(refill))
    except ValueError:
        limit = (0, 0.0)
    if limit[0] < 1 or not limit[1] > 0:
        raise ValueError(
            f"ENDOLINK_{name.upper()} must be BURST,REFILL_S such as 30,2 (got {raw!r})"
        )
    return limit


def parse_ae_title(name: str, raw: str) -> str:
    """An AE title: 1–16 characters, printable, no backslash (PS3.5 AE)."""
    title = raw.strip()
    if not 0 < len(title) <= 16 or "\\" in title or not title.isprintable():
        raise ValueError(f"ENDOLINK_{name.upper()} must be an AE title of 1 to 16 characters")
    return title


def parse_dicom_address(raw: str) -> tuple[str, str, int]:
    """``AET@host:port`` → (AE title, host, port)."""
    title, _, address = raw.strip().partition("@")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"ENDOLINK_PACS_DICOM must be AET@host:port (got {raw!r})")
    return parse_ae_title("pacs_dicom", title), host.strip("[]"), int(port)


def parse_stow_url(raw: str) -> str:
    """An http(s) URL with a host; the error never repeats it (it may carry a password)."""
    try:
        parts = urlsplit(raw.strip())
        fine = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number
        fine = False
    if not fine:
        raise ValueError(
            "ENDOLINK_PACS_STOW_URL must be the archive's DICOMweb root as an http or https URL "
            "with a host, e.g. https://pacs.example.org/dicom-web"
        )
    return raw.strip()


def parse_timezone(raw: str) -> str:
    """An IANA time zone name the system's zone database knows."""
    name = raw.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"ENDOLINK_TIMEZONE must be an IANA time zone such as Asia/Seoul (got {name!r})"
        ) from None
    return name


def parse_trusted_proxies(raw: str) -> tuple[str, ...]:
    """``10.0.0.2, 10.0.1.0/24``: each an IP address or network, checked here (at start)."""
    proxies = tuple(entry.strip() for entry in raw.split(",") if entry.strip())
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ValueError(
                "ENDOLINK_TRUSTED_PROXIES must be IP addresses or networks separated by commas "
                f"(got {proxy!r})"
            ) from None
    return proxies


def parse_ice_server(spec: str) -> IceServer:
    """``turn:user:pass@host:3478?transport=tcp`` → IceServer(url, username, credential)."""
    scheme, _, rest = spec.partition(":")
    if "@" in rest:
        userinfo, _, hostpart = rest.rpartition("@")
        username, _, credential = userinfo.partition(":")
        return IceServer(f"{scheme}:{hostpart}", username or None, credential or None)
    return IceServer(spec)


def parse_turn_urls(raw: str) -> tuple[str, ...]:
    """Space-separated ``turn:``/``turns:`` URLs without user info (credentials are minted)."""
    urls = tuple(raw.split())
    for url in urls:
        if not url.startswith(("turn:", "turns:")) or "@" in url:
            raise ValueError(
                "ENDOLINK_TURN_URLS takes turn:HOST:PORT or turns:HOST:PORT URLs without a user "
                f"name (got {url.split('@')[-1]!r})"
            )
    return urls


def parse_database_url(raw: str) -> str:
    """A ``postgresql://`` (or ``postgres://``) URL; an error never repeats it (its password)."""
    url = raw.strip()
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise ValueError("ENDOLINK_DATABASE_URL must be a postgresql://user@host:port/database URL")
    return url


def normalise_codec(name: str) -> str:
    upper = name.strip().upper().replace(".", "")
    if upper not in ("VP8", "H264"):
        raise ValueError(f"unsupported video codec {name!r}: use VP8 or H264")
    return upper


SETTINGS: tuple[tuple[str, str], ...] = tuple(
    (f"ENDOLINK_{f.name.upper()}", f.name) for f in fields(Settings) if f.name != "extra"
)
