"""Simulator and live kernel side by side: the same workload, parameters and arena.

The simulated machine defaults to the live machine's size (MemTotal, rounded down to 2 MiB)
and the workload is sized to the live arena on both, so both rows describe the same workload on
the same machine. Give another simulated size (e.g. the arena itself, as if the workload owned
the whole machine) to see what the host's free memory hides.
"""
import psutil

from simcore.units import format_size

# the simulated side (ArenaSimBackend, sim_factory) is workloads.backend's; kept importable here
from workloads.backend import ArenaSimBackend, sim_factory  # noqa: F401

SIM_MAX = 1 << 40


def live_machine_size():
    """MemTotal of this machine as a simcore size (2 MiB multiple, at most 1T)."""
    return format_size(min(psutil.virtual_memory().total, SIM_MAX) >> 21 << 21)
