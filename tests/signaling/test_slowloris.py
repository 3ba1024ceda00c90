"""Slow clients are cut early: headers one byte at a time, or a body trickled, against the real
``endolink serve`` on 127.0.0.1; a normal request on another connection is answered meanwhile."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from signaling.http.serving import LINGERING_S
from tests.processes import Process, Server

TIMEOUT_S = 1.5
SLACK_S = 1.0


def trickle(port: int, start: bytes, slow: bytes, budget_s: float) -> tuple[float, bytes]:
    """Send ``start``, then ``slow`` a byte every 0.1 s; (seconds until the server closed, what
    it answered). Checks on its way that other clients are served meanwhile."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(0.1)
    began = time.monotonic()
    sock.sendall(start)
    answer = b""
    checked = False
    try:
        for byte in slow:
            if time.monotonic() - began > budget_s:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            try:
                data = sock.recv(4096)
            except TimeoutError:
                data = None
            except ConnectionResetError:
                break
            if data == b"":
                break
            answer += data or b""
            if not checked and time.monotonic() - began > TIMEOUT_S / 2:
                checked = True
                assert normal_request_works(port)
        return time.monotonic() - began, answer
    finally:
        sock.close()


def normal_request_works(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/session", timeout=3)
    except urllib.error.HTTPError as exc:
        return exc.code == 401 and json.loads(exc.read())["error"] == "unauthorized"
    return False


def test_slow_headers_and_slow_bodies_are_cut(tmp_path: Path, processes: list[Process]) -> None:
    server = Server(
        tmp_path / "data",
        tmp_path / "server.log",
        ENDOLINK_HEADER_TIMEOUT_S=str(TIMEOUT_S),
        ENDOLINK_BODY_TIMEOUT_S=str(TIMEOUT_S),
    )
    processes.append(server)
    server.wait_ready()

    took, answer = trickle(server.port, b"GET /api/session HTTP/1.1\r\nX-Slow: ", b"a" * 300, 30)
    assert took < TIMEOUT_S + SLACK_S, took
    assert answer.startswith(b"HTTP/1.1 408") and b'"too-slow"' in answer

    # From the first byte: the request line itself trickled.
    line = b"GET /api/session HTTP/1.1\r\nX-Slow: " + b"a" * 300
    took, answer = trickle(server.port, b"", line, 30)
    assert took < TIMEOUT_S + SLACK_S and answer.startswith(b"HTTP/1.1 408"), (took, answer)

    head = (
        b"POST /api/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    took, answer = trickle(server.port, head, b" " * 300, 30)
    assert took < TIMEOUT_S + LINGERING_S + SLACK_S, took
    assert answer.startswith(b"HTTP/1.1 408") and answer.count(b"HTTP/1.1") == 1
    assert b"did not arrive within" in answer
    assert normal_request_works(server.port)


def until_closed(sock: socket.socket, budget_s: float) -> tuple[float, bytes]:
    """Reads until the server closes (or ``budget_s``): (seconds it took, what it answered)."""
    began = time.monotonic()
    answer = b""
    sock.settimeout(0.1)
    while time.monotonic() - began < budget_s:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not data:
            break
        answer += data
    return time.monotonic() - began, answer


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(
    tmp_path: Path, processes: list[Process]
) -> None:
    """Not an hour later (aiohttp's keep-alive default): the deadline runs from the connection's
    start."""
    server = Server(
        tmp_path / "data", tmp_path / "server.log", ENDOLINK_HEADER_TIMEOUT_S=str(TIMEOUT_S)
    )
    processes.append(server)
    server.wait_ready()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        took, answer = until_closed(sock, 30)
    assert TIMEOUT_S - 0.2 < took < TIMEOUT_S + SLACK_S and answer == b"", (took, answer)


def test_a_request_begun_in_the_packet_of_the_one_before_is_cut_at_the_header_timeout(
    tmp_path: Path, processes: list[Process]
) -> None:
    """Pipelined: a complete request (without, then with a body) and the first header bytes of
    the next in one packet, then silence; the first is answered, the second cut with 408."""
    server = Server(
        tmp_path / "data", tmp_path / "server.log", ENDOLINK_HEADER_TIMEOUT_S=str(TIMEOUT_S)
    )
    processes.append(server)
    server.wait_ready()
    body = b'{"code": "nothing"}'
    firsts = (
        b"GET /api/session HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    for first in firsts:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(first + b"GET /api/session HTTP/1.1\r\nX-Slow: a")
            took, answer = until_closed(sock, 30)
        assert took < TIMEOUT_S + SLACK_S, (took, answer)
        assert answer.startswith(b"HTTP/1.1 4") and answer.count(b"HTTP/1.1 ") == 2, answer
        assert b"HTTP/1.1 408" in answer and b'"too-slow"' in answer


def test_an_idle_keep_alive_connection_is_not_a_slow_request(
    tmp_path: Path, processes: list[Process]
) -> None:
    """The header deadline starts at a request's first byte: a browser's open connection
    between two requests (after one with a body too) waits as aiohttp lets it."""
    server = Server(
        tmp_path / "data", tmp_path / "server.log", ENDOLINK_HEADER_TIMEOUT_S=str(TIMEOUT_S)
    )
    processes.append(server)
    server.wait_ready()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with sock:
        request = b"GET /api/session HTTP/1.1\r\nHost: x\r\n\r\n"
        body = b'{"code": "nothing"}'
        post = (
            b"POST /api/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        for sent in (request, post):
            sock.sendall(sent)
            assert sock.recv(4096).startswith(b"HTTP/1.1 4")
            time.sleep(TIMEOUT_S + SLACK_S)
        sock.sendall(request)
        assert sock.recv(4096).startswith(b"HTTP/1.1 401")
