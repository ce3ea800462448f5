"""What the machine under a benchmark is, and what else took its CPU while it ran.

On a virtual machine the hypervisor can run other guests on our cores: that time is "steal" in
the kernel's CPU accounting. It lowers and scatters every cells/s figure (our processes simply
do not run), while CPU-time figures (`cpu_ms_per_cell`, `marrow bench-steps`) stay put, because
stolen time is charged to no process. The benches report the share so a run can be read with it.
They also report the idle share: where the cores sat idle, doing more at once could still
speed a run up; where they did not, only less CPU per cell can.
"""
from __future__ import annotations

import platform
from pathlib import Path

import psutil

BUSY_STEAL = 0.05  # a run with more stolen than this is noted as disturbed


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class CpuMeter:
    """Shares of all CPU time (every core) since the meter started: what the hypervisor took
    (steal) and what nothing used (idle, including waiting for the disk)."""

    def __init__(self) -> None:
        self._start = psutil.cpu_times()

    def steal_share(self) -> float | None:
        """None where the system does not report steal (not Linux)."""
        return self._share(("steal",))

    def idle_share(self) -> float | None:
        return self._share(("idle", "iowait"))

    def _share(self, fields: tuple[str, ...]) -> float | None:
        end = psutil.cpu_times()
        if not hasattr(end, fields[0]):
            return None
        total = sum(end) - sum(self._start)
        part = sum(getattr(end, f) - getattr(self._start, f) for f in fields if hasattr(end, f))
        return round(part / total, 4) if total > 0 else 0.0


def steal_note(share: float | None, what: str) -> str | None:
    """A line for the log when `what` ran on a disturbed machine, else None."""
    if share is None or share <= BUSY_STEAL:
        return None
    return (f"note: the hypervisor took {share:.0%} of the CPU during {what}: its cells/s are lower and "
            f"noisier than on a quiet machine (CPU-time figures are not affected)")
