"""``bench.ladder``'s readings of the server: the relay's quality moves from its log, and the CPU
of its threads grouped by name."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from bench.ladder import moves_from_log, thread_cpu, thread_groups


def test_the_moves_of_one_session_are_read_from_the_server_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "17:30:12 INFO    relay.selector: Selector(consultation:abc viewer:dNppwH) original → 540p"
        " (loss)\n"
        "17:30:12 INFO    relay.selector: Selector(consultation:abc viewer:dNppwH) on 540p after"
        " 92 ms\n"
        "17:30:13 INFO    relay.selector: Selector(consultation:abc viewer:OTHERx) 540p → 360p"
        " (loss)\n"
        "17:30:27 INFO    relay.selector: Selector(consultation:abc viewer:dNppwH) 540p → 360p"
        " (remb)\n"
    )
    answer_at = 1796232600.0 - 1796232600.0 % 86400 + 17 * 3600 + 30 * 60 + 10.4  # 17:30:10.4
    moves = moves_from_log(log, "dNppwHsessionrest", answer_at)
    assert moves == [[2, "540p", "loss"], [17, "360p", "remb"]]
    assert moves_from_log(tmp_path / "absent.log", "dNppwH", answer_at) == []


def test_thread_cpu_is_grouped_by_name_without_the_consultation() -> None:
    names = {"1": "MainThread", "2": "rendition consultation:cid7 540p", "3": "x"}
    before = {1: 10.0, 2: 1.0}
    after = {1: 12.0, 2: 5.0, 3: 0.001, 4: 1.0}  # 3: born in the window, too little to list
    groups = thread_groups(before, after, names, 10.0, "cid7")
    assert groups == {"rendition 540p": 40.0, "MainThread": 20.0, "other (unnamed)": 10.0}


def spin(stop: threading.Event) -> None:
    while not stop.is_set():
        pass


@pytest.mark.timeout(30)
def test_a_busy_thread_of_this_process_shows_its_cpu() -> None:
    stop = threading.Event()
    worker = threading.Thread(target=spin, args=(stop,))
    worker.start()
    try:
        deadline = time.monotonic() + 20  # a shared machine may give it little CPU
        while time.monotonic() < deadline:
            if thread_cpu(os.getpid()).get(worker.native_id or 0, 0.0) >= 0.05:
                break
            time.sleep(0.05)
        used = thread_cpu(os.getpid()).get(worker.native_id or 0, 0.0)
    finally:
        stop.set()
        worker.join(10)
    assert used >= 0.05
