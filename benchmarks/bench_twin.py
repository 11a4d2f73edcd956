"""asv benchmarks of the digital twin (simcore.snapshot): rebuilding a snapshot as a Machine.

The snapshot is a fragmented simulated machine exported in the kernel's formats
(simcore.snapshot_export), so the benchmark needs no root and no live kernel. Targets: a twin
of a 24 GiB machine holds at most 16 bytes per simulated page (track_twin_bytes_per_page; this
host's own 24 GiB twin measured 12.9-14.1, see docs/twin.md); the round trip keeps every free
block and folio (track_round_trip_mismatches == 0).
"""
import numpy as np

import simcore
from simcore import snapshot, snapshot_export

MEMS = ["1G", "8G"]
SEED = 20261201


def _fragmented(mem):
    """Half of memory in mixed folios, a third of the movable ones freed again."""
    m = simcore.Machine(mem=mem, seed=SEED)
    pages = m.managed_pages // 2
    held = []
    for order, mt, kind in ((0, "unmovable", "slab"), (0, "movable", "file"),
                            (2, "movable", "anon"), (4, "movable", "anon"),
                            (9, "movable", "anon"), (3, "unmovable", "slab")):
        got = m.alloc_many(pages // 6 >> order, order, mt, kind, compact=False)
        if mt == "movable":
            held.append(got)
    movable = np.concatenate(held)
    m.free_many(movable[m.rng.random(len(movable)) < 1 / 3])
    return m


class TwinBuild:
    params = [MEMS]
    param_names = ["mem"]
    timeout = 300

    def setup(self, mem):
        self.original = _fragmented(mem)
        self.snap = snapshot_export.export(self.original)

    def time_from_snapshot(self, mem):
        simcore.Machine.from_snapshot(self.snap)

    def time_reconstruct(self, mem):
        snapshot.reconstruct(self.snap)

    def track_twin_bytes_per_page(self, mem):
        p = simcore.Machine.from_snapshot(self.snap).pgdat
        arrays = sum(getattr(p, n).nbytes for n in ("mem_map", "pageblock_flags", "folio_pfn",
                                                     "free_area", "zones", "node"))
        return arrays / len(p.mem_map)

    track_twin_bytes_per_page.unit = "bytes/page"

    def track_round_trip_mismatches(self, mem):
        twin = simcore.Machine.from_snapshot(self.snap)
        return sum(snapshot.layout_digest(twin, (part,))
                   != snapshot.layout_digest(self.original, (part,))
                   for part in ("free", "folios"))

    track_round_trip_mismatches.unit = "parts"
