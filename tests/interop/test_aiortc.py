"""aiortc, the stack EndoLink itself is built on, as an outside client of a real ``endolink
serve``: ``endolink publish testpattern`` (its own process) publishes, an aiortc WHEP viewer
(``tests.peers``) decodes the stamps in order, VP8 and H.264."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from signaling.auth.grants import Role
from tests.interop.support import frames_in_order, served
from tests.processes import Process, clean_env, publish_command

pytestmark = pytest.mark.timeout(90)

FRAMES = 90


def marks(codec: str, name: str) -> object:
    return pytest.param(
        codec,
        marks=[
            pytest.mark.interop(client="aiortc 1.16: endolink publish", role="publish", codec=name),
            pytest.mark.interop(client="aiortc 1.16: WHEP viewer", role="play", codec=name),
        ],
    )


@pytest.mark.parametrize("codec", [marks("VP8", "VP8"), marks("H264", "H.264")])
async def test_endolink_publish_reaches_an_aiortc_viewer(
    codec: str, tmp_path: Path, processes: list[Process]
) -> None:
    async with served(tmp_path, codec) as s:
        publisher = Process(
            publish_command(s.endpoint("whip"), s.token(Role.CLINIC)),
            tmp_path / "publish.log",
            clean_env(),
        )
        processes.append(publisher)
        await asyncio.to_thread(publisher.wait_for, "publishing", 30)
        await frames_in_order(s, FRAMES, (1280, 720), publisher.output)
