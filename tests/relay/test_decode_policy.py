"""Which frames the guards' decode thread decodes, frame by frame (``relay.decode_policy``); the
decoding itself is checked in tests/relay/test_decoded.py and tests/relay/test_vp8_header.py."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from relay import decode_policy
from relay.codecs import TemporalLayer
from relay.decode_policy import DecodePolicy

L1T3 = [0, 2, 1, 2]
"Chromium's VP8 L1T3: the temporal layer of each frame in a cycle of four."


@dataclass
class Sampler:
    every_s: float
    due_at: set[int]

    def due(self, pts: int) -> bool:
        return pts in self.due_at


def layered(index: int, sync_from: int = 0) -> TemporalLayer:
    tid = L1T3[index % 4]
    return TemporalLayer(tid, sync=tid > 0 and index >= sync_from)


def decoded(policy: DecodePolicy, frames: range, samplers: list[Sampler], **kw: int) -> list[int]:
    """The indexes of ``frames`` the policy wants decoded (frame 0 is a keyframe)."""
    return [
        index
        for index in frames
        if policy.wanted(b"frame", index, index == 0, layered(index, **kw), samplers)
    ]


def test_the_guards_alone_get_the_base_layer() -> None:
    policy = DecodePolicy("none", lambda: None)
    guards = [Sampler(1 / 3, set()), Sampler(0.5, set())]
    assert decoded(policy, range(12), guards) == [0, 4, 8]


def test_an_unlabelled_stream_is_decoded_whole() -> None:
    policy = DecodePolicy("none", lambda: None)
    guards = [Sampler(1 / 3, set())]
    assert [i for i in range(6) if policy.wanted(b"f", i, i == 0, None, guards)] == list(range(6))


def test_the_tracker_takes_the_higher_layers_up_again_at_their_sync_frames() -> None:
    policy = DecodePolicy("none", lambda: None)
    guards = [Sampler(1 / 3, set())]
    assert decoded(policy, range(8), guards) == [0, 4]
    tracker = [*guards, Sampler(0.0, set())]
    # frames 8-11 carry no sync bit: nothing above the base layer decodes correctly yet
    assert decoded(policy, range(8, 12), tracker, sync_from=13) == [8]
    # frame 13 (layer 2) and 14 (layer 1) are sync frames: layer 1 first, then layer 2
    assert decoded(policy, range(12, 20), tracker, sync_from=13) == [12, 14, 15, 16, 17, 18, 19]


def test_a_keyframe_is_requested_when_no_sync_frame_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(decode_policy.time, "monotonic", lambda: now[0])
    requests: list[int] = []
    policy = DecodePolicy("none", lambda: requests.append(1))
    tracker = [Sampler(0.0, set())]
    assert decoded(policy, range(1, 4), [Sampler(1.0, set())]) == []
    for index in range(4, 40):
        now[0] += 1 / 30
        policy.wanted(b"f", index, False, layered(index, sync_from=99), tracker)
    assert len(requests) == 2, "one per SYNC_WAIT_S of waiting, not one per frame"
    assert policy.wanted(b"f", 40, True, TemporalLayer(0, False), tracker), "the keyframe"
    assert decoded(policy, range(41, 45), tracker, sync_from=99) == [41, 42, 43, 44]


def test_frames_nothing_depends_on_are_decoded_only_when_due() -> None:
    policy = DecodePolicy("H264", lambda: None)
    non_reference = b"\x00\x00\x01\x01slice"  # nal_ref_idc 0
    reference = b"\x00\x00\x01\x41slice"
    sampler = [Sampler(0.5, {3})]
    wanted = [policy.wanted(non_reference, pts, False, None, sampler) for pts in range(5)]
    assert wanted == [False, False, False, True, False]
    assert policy.wanted(reference, 9, False, None, sampler)
