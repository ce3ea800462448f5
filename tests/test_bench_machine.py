"""The benches' steal share: what a reader of a bench JSON uses to tell a disturbed run."""
from __future__ import annotations

import sys
import time

import pytest

from app.bench.machine import BUSY_STEAL, StealMeter, steal_note


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="steal is reported by Linux only")
def test_steal_share_is_a_share_of_the_cpu_time_since_the_meter_started():
    meter = StealMeter()
    deadline = time.perf_counter() + 0.3
    while time.perf_counter() < deadline:  # some CPU time to share out
        sum(range(1000))
    share = meter.share()
    assert isinstance(share, float) and 0.0 <= share <= 1.0


def test_a_quiet_run_gets_no_note_and_a_disturbed_one_says_how_much_was_taken():
    assert steal_note(None, "the timed upload") is None
    assert steal_note(BUSY_STEAL, "the timed upload") is None
    note = steal_note(0.23, "the timed upload")
    assert "23%" in note and "the timed upload" in note and "CPU-time figures are not affected" in note
