"""Measure a twin's memory per simulated page: python tools/twin_memory.py SNAPSHOT [deferred]

Prints the wall time of Machine.from_snapshot, tracemalloc's live and peak totals, the RSS
growth (psutil) and the bytes of the twin's own arrays, each per simulated page.
"""
import sys
import time
import tracemalloc

import psutil

import simcore


def main(path, deferred="absent"):
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    tracemalloc.start()
    started = time.time()
    m = simcore.Machine.from_snapshot(path, deferred=deferred)
    seconds = time.time() - started
    live, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = proc.memory_info().rss
    n = m.nr_pages
    p = m.pgdat
    arrays = sum(getattr(p, name).nbytes for name in ("mem_map", "pageblock_flags", "folio_pfn",
                                                       "free_area", "zones", "node"))
    print(f"pages {n} time {seconds:.2f}s traced now {live / n:.2f} B/page peak {peak / n:.2f} "
          f"B/page rss delta {(rss1 - rss0) / n:.2f} B/page arrays {arrays / n:.2f} B/page "
          f"(mem_map {p.mem_map.nbytes / n:.2f}, folio_pfn {p.folio_pfn.nbytes / n:.2f})")
    m.check()


if __name__ == "__main__":
    main(*sys.argv[1:])
