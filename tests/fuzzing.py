"""Property-based requests generated from the OpenAPI document (signaling/http/openapi.py), and
the check every answer must pass: no 5xx, a status the document lists for the operation, and
``{"error", "reason"}`` on every JSON refusal. Used by the suite's bounded run
(tests/signaling/test_http_fuzz.py) and the longer one in bench/fuzz_http.py.

Hypothesis runs in a worker thread (``run``): each example is sent through the server's own event
loop (``asyncio.run_coroutine_threadsafe``), so the server keeps serving while it generates.
schemathesis 4.x would install (15 more packages: requests, werkzeug, graphql-core, rich...) and
drive a synchronous client; strategies of our own over the same document are a few dozen lines.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.http.openapi import DOCUMENT, JSON

SKIPPED = {"/ws/{cid}", "/api/consultations/{cid}/netcheck/download"}
"The WebSocket has its own fuzzing (test_ws_fuzz.py); the download test answers with up to 8 MiB."

TEXT = st.text(
    st.characters(codec="utf-8", exclude_characters="/{}"), min_size=1, max_size=40
).filter(lambda s: s not in (".", ".."))
"""Path segments: anything but what no route parameter matches (a slash, braces, dot segments:
such a path addresses no operation, and the router's 404 is not the operation's)."""
WILD = st.one_of(
    TEXT,
    st.sampled_from(["", "0", "-1", "NaN", "1e999", "9999-12-31", "0000-01-01", "\x00", "%"]),
    st.integers().map(str),
    st.text(max_size=300),
)
RANGES = st.sampled_from(
    ["bytes=0-", "bytes=0-99", "bytes=-5", "bytes=99999999-", "bytes=5-1", "bytes=a-b", "items=0-1"]
) | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(
    lambda t: "bytes=" + t
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)


@dataclass(frozen=True)
class Target:
    """Where to send, and the ids and tokens that make requests reach past authentication."""

    base_url: str
    cid: str
    tokens: dict[str, str]
    "Role → a valid token for ``cid`` (``admin``: for every consultation)."
    rid: str | None = None
    "A recording of ``cid``, so the replay routes are reached past the id check."


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    template: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes | None


def _value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value of the schema's type or anything else JSON (wrong types are inputs too)."""
    if "enum" in schema:
        right: st.SearchStrategy[Any] = st.sampled_from(schema["enum"])
    elif schema.get("type") == "integer":
        right = st.integers() | st.integers(min_value=10**30) | st.integers(max_value=-1)
    elif schema.get("type") == "boolean":
        right = st.booleans()
    else:
        right = st.text(max_size=80) | st.text(max_size=3000)
    return right | JSON_VALUES


def _body(op: dict[str, Any]) -> st.SearchStrategy[tuple[bytes | None, str | None]]:
    declared = op.get("requestBody", {}).get("content", {})
    if not declared:
        return st.just((None, None)) | st.binary(max_size=64).map(lambda b: (b, None))
    content_type, media = next(iter(declared.items()))
    schema = media["schema"]
    if schema.get("type") == "object":
        props = schema["properties"]
        objects = st.fixed_dictionaries(
            {}, optional={name: _value(sub) for name, sub in props.items()}
        ) | st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=3)
        values = objects | JSON_VALUES
        encoded = values.map(lambda v: json.dumps(v).encode())
        raw = st.binary(max_size=200) | st.sampled_from(
            [b"", b"{", b"[" * 1000, b'{"a":' * 600, b"\xff\xfe", b"1" * 5000, b"NaN"]
        )
        bodies = encoded | raw
    else:
        bodies = st.binary(max_size=512) | st.text(max_size=200).map(str.encode)
    types = st.sampled_from([content_type, "application/json", "text/plain", "x/y", ""])
    return st.tuples(bodies, types)


def _param(param: dict[str, Any], target: Target) -> st.SearchStrategy[str]:
    schema = param["schema"]
    if param["name"] == "cid":
        return st.sampled_from([target.cid, "someoneElse1"]) | TEXT
    if param["name"] == "rid" and target.rid is not None:
        return st.just(target.rid) | TEXT
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | WILD
    if param["in"] == "path":
        return TEXT | st.sampled_from(["0", "1", "9999", "a" * 200])
    return WILD


def requests(target: Target) -> st.SearchStrategy[FuzzRequest]:
    """Any documented operation, with right, wrong and missing tokens, ids, fields and types."""
    choices = [
        (path, method, op)
        for path, ops in DOCUMENT["paths"].items()
        for method, op in ops.items()
        if path not in SKIPPED and "pages" not in op["tags"]
    ]
    tokens = st.sampled_from([None, "garbage", "Bearer eyJ.e30.x"]) | st.sampled_from(
        list(target.tokens.values())
    )

    @st.composite
    def build(draw: st.DrawFn) -> FuzzRequest:
        template, method, op = draw(st.sampled_from(choices))
        params = op.get("parameters", [])
        path = template
        query: dict[str, str] = {}
        for param in params:
            value = draw(_param(param, target))
            if param["in"] == "path":
                path = path.replace("{" + param["name"] + "}", quote(value, safe=""))
            elif draw(st.booleans()):
                query[param["name"]] = value
        if draw(st.integers(0, 9)) == 0:
            query[draw(st.sampled_from(["token", "access_token", "t", "x"]))] = draw(WILD)
        body, content_type = draw(_body(op))
        headers = {}
        token = draw(tokens)
        if token is not None:
            headers["Authorization"] = token if " " in token else f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        if method == "patch" and draw(st.booleans()):
            headers["If-Match"] = "*"
        if "/media/" in template and draw(st.booleans()):
            headers["Range"] = draw(RANGES)
        encoded = urlencode(query, encoding="utf-8", errors="surrogatepass")
        verb = "HEAD" if method == "get" and draw(st.integers(0, 4)) == 0 else method.upper()
        return FuzzRequest(verb, template, path, encoded, headers, body)

    return build()


async def send(session: aiohttp.ClientSession, target: Target, request: FuzzRequest) -> str:
    """Sends one request; returns its outcome (``"<status>"``) or raises ``AssertionError``."""
    url = target.base_url + request.path + (f"?{request.query}" if request.query else "")
    async with session.request(
        request.method,
        aiohttp.client.URL(url, encoded=True),
        headers=request.headers,
        data=request.body,
        skip_auto_headers=["Content-Type"],
    ) as response:
        body = await response.read()
        status = response.status
        operation = "get" if request.method == "HEAD" else request.method.lower()
        documented = DOCUMENT["paths"][request.template][operation]["responses"]
        where = f"{request.method} {request.path[:120]}?{request.query[:80]} -> {status}"
        assert status < 500, f"{where}: {body[:200]!r}"
        assert str(status) in documented, f"{where}: status not in the document"
        if status >= 400 and request.method != "HEAD" and response.content_type == JSON:
            answer = json.loads(body)
            assert set(answer) == {"error", "reason"} and answer["reason"], where
        return str(status)


def fuzz(
    strategy: st.SearchStrategy[Any],
    examples: int,
    derandomize: bool,
    tally: Tally,
    one: Callable[[Any], str],
) -> None:
    """Runs ``one`` on ``examples`` drawn values, tallying outcomes and problems; hypothesis
    stops at the first problem, after shrinking it (the last problem is the shrunk one)."""

    @settings(
        max_examples=examples,
        derandomize=derandomize,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def check(value: Any) -> None:
        try:
            tally.outcomes[one(value)] += 1
        except AssertionError as exc:
            tally.problems.append(f"{value!r:.200}: {exc}")
            raise

    try:
        check()
    except AssertionError:
        pass


def run(
    loop: asyncio.AbstractEventLoop,
    session: aiohttp.ClientSession,
    target: Target,
    examples: int,
    derandomize: bool = True,
) -> Tally:
    """Runs ``examples`` requests from a worker thread (see the module doc)."""
    tally = Tally()

    def one(request: FuzzRequest) -> str:
        future = asyncio.run_coroutine_threadsafe(send(session, target, request), loop)
        return future.result(timeout=30)

    fuzz(requests(target), examples, derandomize, tally, one)
    return tally
