"""Prometheus metrics of one app: a registry of its own (tests build many apps in one process),
HTTP responses by route template, errors by kind, the process (memory, descriptors, CPU), the
event loop, and the live state (``live.py``). The names are listed in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import threading
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from signaling.ops.live import LiveCollector
from signaling.ws.hub import Hub

UNMATCHED = "unmatched"
"The route label of a request no route matched (never its raw path)."
_ERROR_CODE = re.compile(r"[a-z0-9-]{1,40}")


class Metrics(Collector):
    def __init__(self, live: LiveCollector, hub: Hub) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.live = live
        self._hub = hub
        self.responses = Counter(
            "endolink_http_responses",
            "HTTP responses by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_errors: collections.Counter[str] = collections.Counter()
        ProcessCollector(registry=self.registry)
        self.registry.register(live)
        self.registry.register(self)

    def count(self, request: web.Request, status: int, error: str | None) -> None:
        """One HTTP answer: its route's template (``/whep/{cid}``), never the path with ids."""
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED
        self.responses.labels(route, request.method, str(status)).inc()
        if error is not None:
            self.http_errors[error] += 1

    async def render(self) -> bytes:
        """The text exposition, after the asynchronous part of the live state is read."""
        await self.live.refresh()
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "endolink_errors",
            "Refused or failed requests by source (http, ws) and kind (the answer's error code)",
            labels=["source", "kind"],
        )
        for kind, count in sorted(self.http_errors.items()):
            errors.add_metric(["http", kind], count)
        for kind, count in sorted(self._hub.counts.refused.items()):
            errors.add_metric(["ws", kind], count)
        yield errors
        yield GaugeMetricFamily(
            "endolink_asyncio_tasks", "Tasks alive on the event loop", value=_tasks()
        )
        yield GaugeMetricFamily(
            "endolink_threads", "Python threads alive", value=threading.active_count()
        )


def error_kind(response: web.StreamResponse) -> str | None:
    """The ``error`` code of a refusal (``{"error", "reason"}``), ``internal`` for a 5xx
    without one; None for a success."""
    if response.status < 400:
        return None
    code = None
    if isinstance(response, web.Response) and response.content_type == "application/json":
        try:
            body = json.loads(response.body) if isinstance(response.body, bytes) else None
        except ValueError:
            body = None
        found = body.get("error") if isinstance(body, dict) else None
        code = found if isinstance(found, str) and _ERROR_CODE.fullmatch(found) else None
    return code or ("internal" if response.status >= 500 else "http-error")


def _tasks() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # no running loop (a scrape from another thread)
        return 0
