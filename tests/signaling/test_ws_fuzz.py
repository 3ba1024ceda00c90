"""A bounded, deterministic WebSocket fuzzing run (tests/ws_fuzzing.py) against the real app:
every frame ends in a reply or a protocol close code, nothing is logged at ERROR, and a
participant of another consultation is never disturbed."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from signaling.db.store import Consultation
from signaling.keys import STORE
from tests import ws_fuzzing
from tests.conftest import MakeToken
from tests.fuzzing import Target
from tests.signaling.test_errors import assert_quiet

EXAMPLES = 150


async def test_fuzzed_frames_end_in_a_reply_or_a_protocol_close_and_spare_the_others(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = await client.app[STORE].create(title="Other", video_codec="VP8")
    target = Target(
        str(client.make_url("")).rstrip("/"),
        consultation.id,
        {"surgeon": make_token("surgeon", consultation.id)},
    )
    bystander = (other.id, make_token("surgeon", other.id))
    with caplog.at_level(logging.WARNING):
        async with aiohttp.ClientSession() as session:
            loop = asyncio.get_running_loop()
            tally = await asyncio.to_thread(
                ws_fuzzing.run, loop, session, target, EXAMPLES, bystander
            )
    assert not tally.problems, tally.problems[-1]
    assert sum(tally.outcomes.values()) == EXAMPLES
    kinds = {outcome.split(":")[0] for outcome in tally.outcomes}
    assert {"auth close", "anon close", "auth error"} <= kinds, tally.outcomes
    assert_quiet(caplog)
