"""Measure a twin's memory per simulated page: python tools/twin_memory.py SNAPSHOT [deferred]

Prints the wall and CPU time of Machine.from_snapshot(SNAPSHOT), tracemalloc's live total
after it and its peak during it (loading the file, reconstruction, build and check), the RSS
growth (psutil) and the bytes of the twin's own arrays, each per simulated page. A small twin
is built first, so that the peak is the twin's data, not numba loading its cached code on
first use (--cold leaves that out).
"""
import sys
import time
import tracemalloc

import psutil

import simcore
from simcore import snapshot_export


def warm_up():
    """Load the compiled code from_snapshot uses, on a 64M machine."""
    small = simcore.Machine(mem="64M")
    small.alloc_many(1000, 0, "movable", "anon", compact=False)
    simcore.Machine.from_snapshot(snapshot_export.export(small))


def main(path, deferred="absent", *flags):
    if "--cold" not in flags:
        warm_up()
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    tracemalloc.start()
    started, cpu = time.time(), time.process_time()
    m = simcore.Machine.from_snapshot(path, deferred=deferred)
    seconds, cpu = time.time() - started, time.process_time() - cpu
    live, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = proc.memory_info().rss
    n = m.nr_pages
    p = m.pgdat
    arrays = sum(getattr(p, name).nbytes for name in ("mem_map", "pageblock_flags", "folio_pfn",
                                                       "free_area", "zones", "node"))
    print(f"pages {n} time {seconds:.2f}s cpu {cpu:.2f}s traced now {live / n:.2f} B/page "
          f"peak {peak / n:.2f} B/page rss delta {(rss1 - rss0) / n:.2f} B/page "
          f"arrays {arrays / n:.2f} B/page (mem_map {p.mem_map.nbytes / n:.2f}, "
          f"folio_pfn {p.folio_pfn.nbytes / n:.2f})")
    m.check()


if __name__ == "__main__":
    main(*sys.argv[1:])
