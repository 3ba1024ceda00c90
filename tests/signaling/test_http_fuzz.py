"""A bounded, deterministic property-based run over the whole HTTP API (tests/fuzzing.py): right,
wrong and missing tokens for a real consultation and its recording; no 5xx, only documented
statuses, and the error shape on every refusal. The longer run is ``bench/fuzz_http.py``."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from signaling.auth.grants import ANY_CONSULTATION
from signaling.db.store import Consultation
from signaling.keys import RECORDINGS, SETTINGS
from signaling.settings import Settings
from tests import fuzzing
from tests.conftest import MakeToken
from tests.replay_support import make_recording
from tests.signaling.test_errors import assert_quiet

EXAMPLES = 300


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Hundreds of wrong tokens and offers from one address: past the rate limits every answer
    would be 429 and the run would reach no handler (tests/signaling/test_limits.py tests them)."""
    lots = (100_000, 0.001)
    return replace(
        settings,
        auth_failure_limit=lots,
        session_limit_per_identity=lots,
        session_limit_per_address=lots,
    )


async def test_generated_requests_are_answered_without_5xx_and_in_the_documented_shape(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens = {role: make_token(role, consultation.id) for role in ("clinic", "surgeon", "observer")}
    tokens["admin"] = make_token("admin", ANY_CONSULTATION)
    tokens["replaying surgeon"] = make_token("surgeon", consultation.id, may_replay=True)
    app = client.app
    made = await make_recording(
        app[SETTINGS].data_dir, app[RECORDINGS].index, consultation.id, segments=(1.0,)
    )
    base_url = str(client.make_url("")).rstrip("/")
    target = fuzzing.Target(base_url, consultation.id, tokens, made.id)
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.WARNING):
        async with aiohttp.ClientSession() as session:
            tally = await asyncio.to_thread(fuzzing.run, loop, session, target, EXAMPLES)
    assert not tally.problems, tally.problems[-1]
    assert sum(tally.outcomes.values()) == EXAMPLES
    assert {"200", "400", "401", "403"} <= set(tally.outcomes), tally.outcomes
    assert_quiet(caplog)
