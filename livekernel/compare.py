"""Simulator and live kernel side by side: the same workload, parameters and arena.

The simulated machine defaults to the live machine's size (MemTotal, rounded down to 2 MiB)
and the workload is sized to the live arena on both, so both rows describe the same workload on
the same machine. Give another simulated size (e.g. the arena itself, as if the workload owned
the whole machine) to see what the host's free memory hides.
"""
import functools

import psutil

from simcore.units import format_size
from workloads.backend import SimBackend

SIM_MAX = 1 << 40


class ArenaSimBackend(SimBackend):
    """simcore.Machine of `mem`, with the workload sized to `arena_pages` (the live arena)."""

    def __init__(self, mem="16G", seed=0, strategy="folio", *, arena_pages=None, **kw):
        super().__init__(mem=mem, seed=seed, strategy=strategy, **kw)
        self.arena_pages = arena_pages

    @property
    def total_pages(self):
        managed = self.machine.managed_pages
        return managed if self.arena_pages is None else min(self.arena_pages, managed)


def live_machine_size():
    """MemTotal of this machine as a simcore size (2 MiB multiple, at most 1T)."""
    return format_size(min(psutil.virtual_memory().total, SIM_MAX) >> 21 << 21)


def sim_factory(arena_bytes=None, costs=None):
    kw = {"arena_pages": None if arena_bytes is None else int(arena_bytes) // 4096}
    if costs:
        kw["costs"] = costs
    return functools.partial(ArenaSimBackend, **kw)
