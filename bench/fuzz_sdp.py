"""``python -m bench.fuzz_sdp --examples 5000``: SDP and trickle fuzzing against a real server.

A browser-like offer (aiortc's: BUNDLE, mids, ssrc groups, rtx, fingerprints, candidates) is
mutated — lines dropped, duplicated, swapped, corrupted with random text, huge numbers or invalid
UTF-8, truncated, replaced by random bytes — and posted to ``endolink serve`` as a WHIP publish
and a WHEP view; trickle-ice-sdpfrag bodies (candidate lines with missing, extra or wrong fields)
are PATCHed onto a standing WHEP session. Every answer must be 2xx or 4xx and the server must log
no error or traceback. Prints the outcomes by endpoint and status. ``tests/signaling/
test_sdp_fuzz.py`` runs the same with few examples.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.auth.grants import Role
from tests.peers import new_pc
from tests.processes import Server, consultation_on_disk

SDP = {"Content-Type": "application/sdp"}
FRAG = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"}
ODD = [
    "",
    " ",
    "0",
    "-1",
    "4294967296",
    "99999999999999999999999999",
    "x" * 4000,
    "\x00",
    "é",
    "\ud800",
    "a=",
    ":",
    "IN IP4",
    "UDP/TLS/RTP/SAVPF",
]
PREFIXES = [
    "a=mid:",
    "a=group:BUNDLE ",
    "m=video 9 UDP/TLS/RTP/SAVPF ",
    "m=audio 9 UDP/TLS/RTP/SAVPF ",
    "m=application 9 UDP/DTLS/SCTP ",
    "a=candidate:",
    "a=ssrc:",
    "a=ssrc-group:FID ",
    "a=rtpmap:",
    "a=fmtp:",
    "a=rtcp-fb:",
    "a=extmap:",
    "a=fingerprint:sha-256 ",
    "a=setup:",
    "a=ice-ufrag:",
    "a=ice-pwd:",
    "a=msid:",
    "c=IN IP4 ",
    "a=sendonly",
    "a=recvonly",
    "a=inactive",
    "a=rtcp-mux",
]
odd_text = st.one_of(
    st.sampled_from(ODD), st.text(max_size=30), st.integers(-(2**70), 2**70).map(str)
)


async def browser_offer(direction: str) -> str:
    """What a browser would offer: video and audio, BUNDLEd, with candidates."""
    pc = new_pc()
    for kind in ("video", "audio"):
        pc.addTransceiver(kind, direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp: str = pc.localDescription.sdp
    await pc.close()
    return sdp


@st.composite
def mutated_offers(draw: Any, base: str) -> bytes:
    """``base`` with one to five mutations, or (1 in 20) random bytes."""
    if draw(st.integers(0, 19)) == 0:
        blob: bytes = draw(st.binary(max_size=3000))
        return blob
    lines = base.strip("\r\n").split("\r\n")
    for _ in range(draw(st.integers(1, 5))):
        i = draw(st.integers(0, len(lines) - 1)) if lines else 0
        op = draw(st.sampled_from(["drop", "dup", "swap", "corrupt", "insert", "cut"]))
        if not lines:
            lines = [draw(odd_text)]
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "corrupt":
            fields = lines[i].replace(":", ": ", 1).split(" ")
            k = draw(st.integers(0, len(fields) - 1))
            fields[k] = draw(odd_text)
            lines[i] = " ".join(fields).replace(": ", ":", 1)
        elif op == "insert":
            lines.insert(i, draw(st.sampled_from(PREFIXES)) + draw(odd_text))
        else:
            lines = lines[:i]
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    return (newline.join(lines) + newline).encode("utf-8", "surrogatepass")


@st.composite
def trickle_bodies(draw: Any) -> bytes:
    """An sdpfrag: optional ufrag/pwd/mid, candidate lines with fields dropped, replaced or
    added, end-of-candidates, stray lines."""
    lines = []
    if draw(st.booleans()):
        lines.append("a=mid:" + draw(st.one_of(st.sampled_from(["0", "1"]), odd_text)))
    if draw(st.integers(0, 9)) == 0:
        lines += ["a=ice-ufrag:" + draw(odd_text), "a=ice-pwd:" + draw(odd_text)]
    for _ in range(draw(st.integers(0, 3))):
        fields = ["1", "1", "udp", "2130706431", "127.0.0.1", "50000", "typ", "host"]
        for _ in range(draw(st.integers(0, 3))):
            k = draw(st.integers(0, len(fields) - 1))
            op = draw(st.sampled_from(["drop", "replace", "append"]))
            if op == "drop" and len(fields) > 1:
                del fields[k]
            elif op == "replace":
                fields[k] = draw(odd_text)
            else:
                extension = draw(st.sampled_from(["raddr", "rport", "generation", "tcptype"]))
                fields += [extension, draw(odd_text)]
        lines.append("a=candidate:" + " ".join(fields))
    if draw(st.booleans()):
        lines.append("a=end-of-candidates")
    if draw(st.integers(0, 4)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(odd_text))
    return "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogatepass")


class Target:
    """A running server and a consultation: posts bodies, counts outcomes by endpoint and status.
    Synchronous (hypothesis drives it), on a private event loop."""

    def __init__(self, base_url: str, cid: str, token: Callable[[Role], str]) -> None:
        self.base_url = base_url
        self.cid = cid
        self.clinic = token(Role.CLINIC)
        self.surgeon = token(Role.SURGEON)
        self.outcomes: Counter[tuple[str, int]] = Counter()
        self._loop = asyncio.new_event_loop()
        self._http = self._loop.run_until_complete(self._open())
        self._session: str | None = None
        self.viewer_offer = self._loop.run_until_complete(browser_offer("recvonly"))
        self.publisher_offer = self._loop.run_until_complete(browser_offer("sendonly"))

    async def _open(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    def offer(self, endpoint: str, body: bytes) -> int:
        """POST ``body`` to /whip or /whep; a created session is deleted at once."""
        token = self.clinic if endpoint == "whip" else self.surgeon
        status, location = self._loop.run_until_complete(self._post(endpoint, body, token))
        if location is not None:
            self._loop.run_until_complete(self._delete(location, token))
        self.outcomes[(endpoint, status)] += 1
        return status

    def trickle(self, body: bytes) -> int:
        """PATCH ``body`` onto a standing WHEP session (made again once the server reaped it)."""
        for _ in range(2):
            if self._session is None:
                offer = self.viewer_offer.encode()
                status, self._session = self._loop.run_until_complete(
                    self._post("whep", offer, self.surgeon)
                )
                assert status == 201, status
            status = self._loop.run_until_complete(self._patch(body))
            if status != 404:
                break
            self._session = None
        self.outcomes[("patch", status)] += 1
        return status

    async def _post(self, endpoint: str, body: bytes, token: str) -> tuple[int, str | None]:
        url = f"{self.base_url}/{endpoint}/{self.cid}"
        headers = {**SDP, "Authorization": f"Bearer {token}"}
        async with self._http.post(url, data=body, headers=headers) as response:
            await response.read()
            location = response.headers.get("Location") if response.status == 201 else None
            return response.status, location and f"{self.base_url}{location}"

    async def _delete(self, location: str, token: str) -> None:
        async with self._http.delete(location, headers={"Authorization": f"Bearer {token}"}):
            pass

    async def _patch(self, body: bytes) -> int:
        assert self._session is not None
        headers = {**FRAG, "Authorization": f"Bearer {self.surgeon}"}
        async with self._http.patch(self._session, data=body, headers=headers) as response:
            await response.read()
            return response.status

    def close(self) -> None:
        self._loop.run_until_complete(self._http.close())
        self._loop.close()


def fuzz(target: Target, examples: int) -> None:
    """``examples`` mutated offers (each posted to WHIP and WHEP) and trickle bodies;
    derandomized, so a run is repeatable. Raises on the first 5xx."""
    whip_offers = mutated_offers(target.publisher_offer)
    whep_offers = mutated_offers(target.viewer_offer)

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(whip=whip_offers, whep=whep_offers, patch=trickle_bodies())
    def run(whip: bytes, whep: bytes, patch: bytes) -> None:
        for status in (target.offer("whip", whip), target.offer("whep", whep)):
            assert status < 500, status
        assert target.trickle(patch) < 500

    run()


def server_errors(log: Path) -> list[str]:
    """Lines of the server's log that report an error or a traceback."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line]


def table(outcomes: Counter[tuple[str, int]]) -> str:
    rows = ["| endpoint | status | answers |", "|---|---|---|"]
    rows += [f"| {e} | {s} | {n} |" for (e, s), n in sorted(outcomes.items())]
    rows.append(f"| all | | {sum(outcomes.values())} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_sdp")
    parser.add_argument("--examples", type=int, default=2000, help="hypothesis examples")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, log = Path(tmp) / "data", Path(tmp) / "server.log"
        cid, token = asyncio.run(consultation_on_disk(data_dir, "fuzz"))
        server = Server(data_dir, log)
        target = None
        try:
            server.wait_ready()
            target = Target(server.url, cid, token)
            try:
                fuzz(target, args.examples)
            except AssertionError as exc:  # hypothesis has printed the shrunk failing input
                print(f"FAILED: {exc!r}")
            print(table(target.outcomes))
        finally:
            if target is not None:
                target.close()
            server.stop()
        errors = server_errors(log)
        print(f"server log: {len(errors)} error lines")
        for line in errors[:20]:
            print(line)


if __name__ == "__main__":
    main()
