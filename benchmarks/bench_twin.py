"""asv benchmarks of the digital twin (simcore.snapshot): rebuilding a snapshot as a Machine.

The snapshot is a fragmented simulated machine exported in the kernel's formats
(simcore.snapshot_export), so the benchmark needs no root and no live kernel. Targets: a twin
of a 24 GiB machine holds at most 16 bytes per simulated page, finished
(track_twin_bytes_per_page) and at the peak while it is built from its file
(track_twin_peak_bytes_per_page; this host's own 24 GiB twin: see docs/twin.md, "Memory");
the round trip keeps every free block and folio (track_round_trip_mismatches == 0).
"""
import os
import tempfile
import tracemalloc

import numpy as np

import simcore
from simcore import snapshot, snapshot_export, snapshot_file

MEMS = ["1G", "8G"]
SEED = 20261201


def _fragmented(mem):
    """Half of memory in mixed folios, a third of the movable ones freed again, drained."""
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
    # pages on per-CPU lists show no flags in kpageflags and come back merged: the exact round
    # trip is of a drained machine (tests/test_twin.py)
    m.drain_all_pages()
    return m


class TwinBuild:
    params = [MEMS]
    param_names = ["mem"]
    timeout = 300

    def setup(self, mem):
        self.original = _fragmented(mem)
        self.snap = snapshot_export.export(self.original)
        self.tmp = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.tmp.name, "snap.npz")
        snapshot_file.save(self.path, self.snap)
        # load the compiled code once, so that the peak below is the twin's data
        simcore.Machine.from_snapshot(self.snap)

    def teardown(self, mem):
        self.tmp.cleanup()

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

    def track_twin_peak_bytes_per_page(self, mem):
        """tracemalloc's peak over Machine.from_snapshot(FILE): loading, reconstruction, build
        and check, everything the twin allocates on the way, per simulated page. A small
        machine's figure is dominated by fixed costs (the compaction pool alone is 2.8 MB,
        10.7 B/page of a 1G machine); the 16 B/page target is for this host's 24 GiB."""
        tracemalloc.start()
        try:
            twin = simcore.Machine.from_snapshot(self.path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return peak / twin.nr_pages

    track_twin_peak_bytes_per_page.unit = "bytes/page"

    def track_round_trip_mismatches(self, mem):
        twin = simcore.Machine.from_snapshot(self.snap)
        return sum(snapshot.layout_digest(twin, (part,))
                   != snapshot.layout_digest(self.original, (part,))
                   for part in ("free", "folios"))

    track_round_trip_mismatches.unit = "parts"
