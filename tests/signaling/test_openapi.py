"""The OpenAPI document and the router agree both ways, and the document is served without a
token and without secrets."""

from __future__ import annotations

import json
import re

from aiohttp.test_utils import TestClient

from signaling.http.openapi import DOCUMENT
from tests.conftest import TEST_SECRET

METHODS = {"get", "post", "put", "patch", "delete", "options"}


def routed(client: TestClient) -> set[tuple[str, str]]:
    """(method, path template) of every registered route; HEAD is aiohttp's twin of GET."""
    found = set()
    for route in client.app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource else ""
        if path == "/static":
            path = "/static/{path}"
        found.add((route.method.lower(), path))
    return found


def described() -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, operations in DOCUMENT["paths"].items()
        for method in operations
        if method in METHODS
    }


def test_every_route_is_described_and_nothing_else(client: TestClient) -> None:
    assert routed(client) - described() == set(), "routes missing from signaling/http/openapi.py"
    assert described() - routed(client) == set(), "described but not routed"


def test_every_operation_lists_its_statuses_with_the_error_shape() -> None:
    for path, operations in DOCUMENT["paths"].items():
        for method, op in operations.items():
            statuses = [int(s) for s in op["responses"]]
            assert statuses and min(statuses) < 300, (method, path)
            for status in statuses:
                response = op["responses"][str(status)]
                if status >= 400:
                    assert response == {"$ref": f"#/components/responses/E{status}"}
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == set(re.findall(r"{(\w+)}", path)), (method, path)
            if op["security"]:
                assert 401 in statuses, (method, path)


async def test_the_document_is_served_without_a_token_and_holds_no_secret(
    client: TestClient,
) -> None:
    response = await client.get("/api/openapi.json")
    assert response.status == 200 and response.content_type == "application/json"
    text = await response.text()
    assert json.loads(text) == json.loads(json.dumps(DOCUMENT))
    assert TEST_SECRET not in text
    assert "eyJ" not in text and "127.0.0.1" not in text
