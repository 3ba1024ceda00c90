"""One ISO 8601 UTC format for the protocol, manifests and the database, byte for byte."""

from __future__ import annotations

import re
import time

from persistence.times import parse_utc_iso, utc_iso, utc_now_iso


def test_a_moment_is_stamped_to_the_millisecond_in_utc() -> None:
    assert utc_iso(1738314902.123) == "2025-01-31T09:15:02.123+00:00"
    assert utc_iso(0) == "1970-01-01T00:00:00.000+00:00"


def test_seconds_are_kept_where_callers_stamp_to_the_second() -> None:
    assert utc_iso(1738314902.987, timespec="seconds") == "2025-01-31T09:15:02+00:00"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", utc_now_iso(timespec="seconds"))


def test_now_is_now_with_milliseconds() -> None:
    stamp = utc_now_iso()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", stamp)
    assert abs(parse_utc_iso(stamp) - time.time()) < 5


def test_parsing_gives_back_the_moment() -> None:
    assert parse_utc_iso(utc_iso(1738314902.123)) == 1738314902.123
    assert parse_utc_iso("2025-01-31T10:15:02.123+01:00") == 1738314902.123
