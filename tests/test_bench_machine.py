"""The benches' steal share: what a reader of a bench JSON uses to tell a disturbed run."""
from __future__ import annotations

import os
import sys
import time

import pytest

from app.bench.machine import BUSY_STEAL, CpuMeter, steal_note


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="steal is reported by Linux only")
def test_steal_and_idle_are_shares_of_the_cpu_time_since_the_meter_started():
    meter = CpuMeter()
    wall, own = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < 0.3:  # one core kept busy by this process
        sum(range(1000))
    steal, idle = meter.steal_share(), meter.idle_share()
    busy_here = (time.process_time() - own) / ((time.perf_counter() - wall) * os.cpu_count())
    assert isinstance(steal, float) and isinstance(idle, float)
    assert 0.0 <= steal <= 1.0 and 0.0 <= idle <= 1.0 and steal + idle <= 1.0
    assert idle <= 1.0 - busy_here + 0.05  # the core this process kept busy was not idle


def test_a_quiet_run_gets_no_note_and_a_disturbed_one_says_how_much_was_taken():
    assert steal_note(None, "the timed upload") is None
    assert steal_note(BUSY_STEAL, "the timed upload") is None
    note = steal_note(0.23, "the timed upload")
    assert "23%" in note and "the timed upload" in note and "CPU-time figures are not affected" in note
