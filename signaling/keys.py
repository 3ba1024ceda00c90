"""Typed keys for state shared through the aiohttp application and requests.

Modules listed here must not import this one (handlers do), which keeps the graph acyclic.
"""

from __future__ import annotations

from aiohttp import web

from recorder.annotation_log import AnnotationLogs
from recorder.recordings import Recordings
from relay import Relay
from relay.privacy import PrivacyWatch
from signaling.auth.grants import Grant, TokenIssuer
from signaling.auth.revocations import Revocations
from signaling.auth.turn import IceServers
from signaling.cluster.cascade import Cascades
from signaling.cluster.cluster import Cluster
from signaling.db.audit import AuditTrail
from signaling.db.invites import InviteBook
from signaling.db.patients import PatientRegister
from signaling.db.store import ConsultationStore
from signaling.http.refusals import RefusedTokens
from signaling.http.throttle import FailureBudget, Throttle
from signaling.ops.metrics import Metrics
from signaling.replay.state import ReplayState
from signaling.settings import Settings
from signaling.ws.chat import ChatHistory
from signaling.ws.hub import Hub
from signaling.ws.picture import Pictures
from signaling.ws.stills import Stills

SETTINGS = web.AppKey("settings", Settings)
TOKENS = web.AppKey("tokens", TokenIssuer)
STORE = web.AppKey("store", ConsultationStore)
RELAY = web.AppKey("relay", Relay)
HUB = web.AppKey("hub", Hub)
ANNOTATION_LOGS = web.AppKey("annotation_logs", AnnotationLogs)
CHAT_HISTORY = web.AppKey("chat_history", ChatHistory)
RECORDINGS = web.AppKey("recordings", Recordings)
REPLAY = web.AppKey("replay", ReplayState)
ICE_SERVERS = web.AppKey("ice_servers", IceServers)
INVITES = web.AppKey("invites", InviteBook)
PATIENTS = web.AppKey("patients", PatientRegister)
FAILED_JOINS = web.AppKey("failed_joins", FailureBudget)
NETCHECK_BUDGET = web.AppKey("netcheck_budget", FailureBudget)
METRICS = web.AppKey("metrics", Metrics)
AUDIT = web.AppKey("audit", AuditTrail)
REFUSED_TOKENS = web.AppKey("refused_tokens", RefusedTokens)
REVOCATIONS = web.AppKey("revocations", Revocations)
THROTTLE = web.AppKey("throttle", Throttle)
STILLS = web.AppKey("stills", Stills)
PRIVACY = web.AppKey("privacy", PrivacyWatch)
PICTURES = web.AppKey("pictures", Pictures)
CLUSTER = web.AppKey("cluster", Cluster)
"Set only when ``ENDOLINK_REDIS_URL`` is: this node in a cluster."
CASCADES = web.AppKey("cascades", Cascades)
"With ``CLUSTER``: the consultations this node serves from their owner's stream."
GRANT = web.RequestKey("grant", Grant)
