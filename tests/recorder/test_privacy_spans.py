"""The recording's out-of-body spans across segments, gaps and a resumed recording."""

from __future__ import annotations

from recorder.manifest import OutOfBodySpan
from recorder.privacy_spans import PrivacySpans


def test_a_span_inside_one_segment_is_placed_at_its_offset() -> None:
    spans = PrivacySpans([], 0.0)
    spans.segment_started()
    spans.note(True, 2.0)
    assert spans.spans(10.0) == [OutOfBodySpan(12.0, None)]
    spans.note(False, 5.5)
    spans.segment_ended(10.0, 8.0)
    assert spans.spans(0.0) == [OutOfBodySpan(12.0, 15.5)]


def test_a_span_open_at_a_segment_end_closes_there_and_the_next_one_starts_inside() -> None:
    spans = PrivacySpans([], 0.0)
    spans.segment_started()
    spans.note(True, 3.0)
    spans.note(True, 3.5)  # repeated: still one span
    spans.segment_ended(0.0, 4.0)
    spans.segment_started()  # the camera is still out when the clinic comes back
    spans.note(False, 1.0)
    spans.segment_ended(6.0, 2.0)
    assert spans.spans(0.0) == [OutOfBodySpan(3.0, 4.0), OutOfBodySpan(6.0, 7.0)]


def test_a_change_between_segments_or_when_the_feed_ends_only_sets_the_state() -> None:
    spans = PrivacySpans([], 0.0)
    spans.note(True, None)
    spans.segment_started()
    assert spans.spans(0.0) == [OutOfBodySpan(0.0, None)]
    spans.note(False, None)  # the feed ended: the segment's end closes the span
    spans.segment_ended(0.0, 2.5)
    assert spans.spans(0.0) == [OutOfBodySpan(0.0, 2.5)]


def test_a_resumed_recording_closes_a_span_the_crash_left_open() -> None:
    spans = PrivacySpans([OutOfBodySpan(1.0, 2.0), OutOfBodySpan(8.0, None)], 9.5)
    assert spans.spans(0.0) == [OutOfBodySpan(1.0, 2.0), OutOfBodySpan(8.0, 9.5)]
