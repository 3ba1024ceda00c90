"""The automatic quality policy, from sequences of feedback (``relay.quality``: pure, no clock)."""

from __future__ import annotations

from relay.quality import HOLD_MAX_S, HOLD_S, PROBE_S, REMB_WARMUP_S, QualityPolicy, Sample

LEVELS = [("original", 1_600_000), ("540p", 700_000), ("360p", 250_000)]
REPORT_S = 1.0
"Receiver reports (and REMB) about once a second, as Chrome and aiortc send them."


def policy() -> QualityPolicy[str]:
    return QualityPolicy(LEVELS, now=0.0)


def feed(p: QualityPolicy[str], start: float, end: float, **sample: float) -> list[str]:
    """One sample per report interval in [start, end); the quality wanted after each."""
    seen = []
    t = start
    while t < end:
        seen.append(p.update(Sample(at=t, **sample)))  # type: ignore[arg-type]
        t += REPORT_S
    return seen


def test_a_link_that_carries_the_original_keeps_it() -> None:
    p = policy()
    assert set(feed(p, 0, 120, remb_bps=2_500_000, loss=0.0, rtt_s=0.02)) == {"original"}


def test_remb_below_the_need_for_a_second_goes_straight_to_the_quality_that_fits() -> None:
    p = policy()
    feed(p, 0, 5, remb_bps=2_000_000, loss=0.0, rtt_s=0.02)
    assert p.update(Sample(at=5.0, remb_bps=1_000_000)) == "original"  # once is not enough
    assert p.update(Sample(at=6.0, remb_bps=400_000)) == "360p"  # 540p needs 700k: skipped
    assert p.reason == "remb"


def test_remb_far_below_the_need_goes_down_at_once() -> None:
    p = policy()
    feed(p, 0, 5, remb_bps=2_000_000)
    assert p.update(Sample(at=5.0, remb_bps=600_000)) == "540p" or p.current == "360p"
    assert p.current != "original"


def test_loss_over_ten_percent_for_two_reports_goes_down_and_one_report_does_not() -> None:
    p = policy()
    feed(p, 0, 5, loss=0.0, rtt_s=0.02)
    assert p.update(Sample(at=5.0, loss=0.12)) == "original"
    assert p.update(Sample(at=6.0, loss=0.15)) == "540p"  # 1.6M × 0.86 arrives: 540p fits
    assert p.reason == "loss"


def test_severe_loss_goes_down_at_once_to_what_arrives() -> None:
    p = policy()
    feed(p, 0, 5, loss=0.0)
    # a 350 kbit/s link under a 1.6 Mbit/s stream: ~78 % lost, 360p is what fits
    assert p.update(Sample(at=5.0, loss=0.78)) == "360p"


def test_rtt_rising_sharply_for_two_reports_steps_down() -> None:
    p = policy()
    feed(p, 0, 5, remb_bps=2_000_000, loss=0.0, rtt_s=0.02)
    assert p.update(Sample(at=5.0, rtt_s=0.3)) == "original"
    assert p.update(Sample(at=6.0, rtt_s=0.3)) == "540p"
    assert p.reason == "rtt"


def test_reports_right_after_a_change_are_not_held_against_the_new_quality() -> None:
    p = policy()
    feed(p, 0, 5, loss=0.0)
    assert p.update(Sample(at=5.0, loss=0.5)) == "360p"
    # the next report still covers the time before the change
    assert p.update(Sample(at=5.5, loss=0.6, rtt_s=0.3)) == "360p"


def test_after_a_clean_hold_the_next_quality_up_is_tried_and_kept_if_it_fits() -> None:
    p = policy()
    feed(p, 0, 3, loss=0.0)
    p.update(Sample(at=3.0, loss=0.5))
    assert p.current == "360p"
    seen = feed(p, 4.0, 4.0 + HOLD_S + 1, remb_bps=375_000, loss=0.0, rtt_s=0.02)
    assert seen[-1] == "540p" and p.probing
    # the receiver's REMB ramps up behind the new rate (rising: no verdict), no loss
    remb = 375_000
    t = 5.0 + HOLD_S
    while t < 6.0 + HOLD_S + PROBE_S:
        remb = int(remb * 1.08)
        assert p.update(Sample(at=t, remb_bps=remb, loss=0.0, rtt_s=0.02)) == "540p"
        t += REPORT_S
    assert not p.probing and p.reason == "probe held"


def test_a_failed_trial_goes_back_and_doubles_the_hold_up_to_a_minute() -> None:
    p = policy()
    p.update(Sample(at=2.0, loss=0.8))
    assert p.current == "360p"
    holds = []
    t = 3.0
    for _ in range(6):
        # clean at 360p until the trial begins
        while p.current == "360p":
            p.update(Sample(at=t, remb_bps=375_000, loss=0.0, rtt_s=0.02))
            t += REPORT_S
        assert p.probing
        t += 1.5  # past the settle time: the trial's own reports
        assert p.update(Sample(at=t, loss=0.4)) == "360p"
        holds.append(p.hold_s)
    assert holds == [2 * HOLD_S, 4 * HOLD_S, HOLD_MAX_S, HOLD_MAX_S, HOLD_MAX_S, HOLD_MAX_S]


def test_a_capped_link_settles_without_oscillating() -> None:
    """A 500 kbit/s link, simulated for 10 minutes: REMB ≈ min(1.5 × received, capacity), loss =
    what does not fit. The viewer settles on 360p and only the doubling trials leave it."""
    capacity = 500_000
    p = policy()
    rates = dict(LEVELS)
    changes = 0
    unfit_s = 0.0
    last = p.current
    t = 0.0
    while t < 600:
        rate = rates[p.current]
        received = min(rate, capacity)
        loss = max(0.0, 1 - capacity / rate)
        p.update(Sample(at=t, remb_bps=int(min(1.5 * received, capacity)), loss=loss, rtt_s=0.02))
        changes += p.current != last
        last = p.current
        unfit_s += REPORT_S if rates[p.current] > capacity else 0.0
        t += REPORT_S
    assert p.current == "360p"
    # down once; trials after 10, 20, 40 s, then at most one a minute, each there and back
    assert changes <= 1 + 2 * (3 + 600 // HOLD_MAX_S), changes
    assert unfit_s / 600 < 0.05, unfit_s


def test_an_original_not_measured_yet_is_never_judged_by_remb() -> None:
    p = QualityPolicy([("original", None), ("540p", 700_000), ("360p", 250_000)], now=0.0)
    assert set(feed(p, 0, 10, remb_bps=300_000, loss=0.0)) == {"original"}
    p.set_bitrate("original", 1_600_000)
    assert feed(p, 10, 12, remb_bps=300_000)[-1] == "360p"


def test_a_move_made_elsewhere_is_adopted_and_held() -> None:
    p = policy()
    p.adopt("360p", 5.0, "connection")
    assert p.current == "360p"
    assert set(feed(p, 6.0, 5.0 + HOLD_S - 0.5, remb_bps=375_000, loss=0.0)) == {"360p"}


def test_a_rung_dearer_than_a_thin_original_is_never_chosen() -> None:
    """A clinic sending only 600 kbit/s: the 700 kbit/s 540p rung is no step down, and no trial
    goes through it on the way up."""
    p = QualityPolicy([("original", 600_000), ("540p", 700_000), ("360p", 250_000)], now=0.0)
    feed(p, 0, 5, loss=0.0)
    assert p.update(Sample(at=5.0, loss=0.4)) == "360p"  # 360 kbit/s arrive: 540p skipped
    feed(p, 6.0, 6.0 + HOLD_S + 1, remb_bps=375_000, loss=0.0, rtt_s=0.02)
    assert p.current == "original" and p.probing


def test_a_new_viewers_first_estimates_are_not_held_against_it() -> None:
    """A receiver's first REMBs describe its first second of media (aiortc starts from what it
    received; GCC ramps up): a viewer on loopback was moved down on them. Loss still counts."""
    p = policy()
    assert set(feed(p, 0, REMB_WARMUP_S, remb_bps=900_000, loss=0.0)) == {"original"}
    assert feed(p, REMB_WARMUP_S, REMB_WARMUP_S + 2, remb_bps=900_000)[-1] == "540p"
    q = policy()
    assert feed(q, 0, REMB_WARMUP_S + 1, remb_bps=2_000_000, loss=0.4)[-1] != "original"
