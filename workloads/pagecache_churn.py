"""pagecache-churn: many small files read and evicted (readahead-sized large folios in the page
cache) with slab interleaved, dirty and writeback folios that block migration for a while, LRU
eviction, then high-order requests."""
import collections

import numpy as np

from .base import Param, Workload, register

SLICE_PAGES = 256      # 1 MiB of reads between slab allocations


@register
class PagecacheChurn(Workload):
    name = "pagecache-churn"
    headline = ("cache_pages_end", "writeback_pages_end")
    description = " ".join(__doc__.split("\n\n")[0].split()).split(": ", 1)[1]
    params = {
        "cache": Param(0.9, "page cache size kept, share of memory", low=0.05, high=0.95),
        # each round reads a quarter of the cache: from the fifth on, reads evict, which is
        # what scatters hot files and slab; the quick size keeps every round for that reason
        "rounds": Param(6, "read rounds, each reading a fresh set of files", low=1, high=200),
        "readahead": Param(5, "largest readahead folio order (5 = 128K)", low=0, high=9),
        "slab": Param(0.005, "slab pages allocated per page-cache page read", low=0.0,
                      high=0.5),
        "hot": Param(0.1, "share of files read that stay cached (hot), never evicted",
                     low=0.0, high=0.9),
        "dirty": Param(0.1, "share of new folios written (dirty)", low=0.0, high=1.0),
        "writeback": Param(0.05, "share of new folios under writeback for a round",
                           low=0.0, high=1.0),
        "highorder": Param(0.15, "order-9 requests after the churn, as a share of memory",
                           low=0.0, high=0.9),
        # network-like receive buffers: GFP_ATOMIC order-3 allocations, which use and create
        # highatomic reserves (simcore.highatomic); 0 keeps the workload as it was
        "atomic": Param(0.0, "order-3 GFP_ATOMIC buffers per page read, in pages, held for a "
                        "round", low=0.0, high=0.5),
        # slab caches refilled by kmalloc(GFP_NOWAIT) callers (under a spinlock, in RCU
        # callbacks): SLUB's allocate_slab() asks for an order-3 slab without
        # __GFP_NOMEMALLOC, so from 6.3 until the 6.18 fix these requests use and create
        # highatomic reserves too (simcore.gfp, policy highatomic_gfp); 0 keeps the workload
        "nowait": Param(0.0, "order-3 GFP_NOWAIT slab pages per page read, held for a round",
                        low=0.0, high=0.5),
    }

    def run(self, backend, p, extra):
        total = backend.total_pages
        rng = backend.rng
        target = int(total * p["cache"])
        per_round = max(1, target // 4)
        lru = collections.deque()        # oldest first: (handles, pages)
        cached = 0
        writeback = np.empty(0, dtype=np.int64)
        slab_debt = 0.0
        hot = []                         # files that stay cached, re-read every round
        atomic_debt = 0.0
        atomic = {"atomic_requested": 0, "atomic_granted": 0}
        nowait_debt = 0.0
        nowait = {"nowait_requested": 0, "nowait_granted": 0}
        for _ in range(p["rounds"]):
            backend.set_flags(writeback, "writeback", on=False)    # last round's I/O completed
            buffers = []                 # this round's receive buffers
            if hot:
                backend.touch(np.concatenate(hot))       # re-reads: reclaim keeps them
            new = []
            # Many readers at once: 1 MiB slices of files of readahead sizes, each followed by
            # the slab its reads allocate, so slab ends up scattered through memory.
            for _ in range(max(1, per_round // SLICE_PAGES)):
                batch = np.concatenate([
                    backend.alloc(max(1, (SLICE_PAGES // (p["readahead"] + 1)) >> o), o, "file",
                                  compact=False, gfp="noretry")
                    for o in range(p["readahead"] + 1)])
                sizes = np.int64(1) << backend.folio_orders(batch)
                cold = rng.random(len(batch)) >= p["hot"]     # hot files stay cached
                lru.append((batch[cold], int(sizes[cold].sum())))
                hot.append(batch[~cold])
                cached += int(sizes.sum())
                new.append(batch)
                slab_debt += SLICE_PAGES * p["slab"]
                if slab_debt >= 1:
                    backend.alloc(int(slab_debt), 0, "slab", "unmovable", compact=False)
                    slab_debt -= int(slab_debt)
                atomic_debt += SLICE_PAGES * p["atomic"] / 8
                if atomic_debt >= 1:
                    n = int(atomic_debt)
                    buffers.append(backend.alloc(n, 3, "kernel", "unmovable", gfp="atomic"))
                    atomic["atomic_requested"] += n
                    atomic["atomic_granted"] += len(buffers[-1])
                    atomic_debt -= n
                nowait_debt += SLICE_PAGES * p["nowait"] / 8
                if nowait_debt >= 1:
                    n = int(nowait_debt)
                    buffers.append(backend.alloc(n, 3, "slab", "unmovable", gfp="nowait"))
                    nowait["nowait_requested"] += n
                    nowait["nowait_granted"] += len(buffers[-1])
                    nowait_debt -= n
            new = np.concatenate(new)
            backend.set_flags(new[rng.random(len(new)) < p["dirty"]], "dirty")
            writeback = new[rng.random(len(new)) < p["writeback"]]
            backend.set_flags(writeback, "writeback")
            while cached > target and len(lru) > 1:
                # LRU with many readers: one of the oldest few slices goes first
                oldest = [lru.popleft() for _ in range(min(8, len(lru) - 1))]
                handles, pages = oldest.pop(int(rng.integers(len(oldest))))
                lru.extendleft(reversed(oldest))
                backend.free(handles)
                cached -= pages
            if buffers:
                backend.free(np.concatenate(buffers))    # the round's packets and slabs gone
            backend.tick(100)
        want = int(total * p["highorder"]) >> 9
        # Reclaim makes room first, as kswapd would before the requests: old slices dropped.
        reclaim = int(total * p["highorder"] * 1.5)
        while reclaim > 0 and len(lru) > 1:
            oldest = [lru.popleft() for _ in range(min(8, len(lru) - 1))]
            handles, pages = oldest.pop(int(rng.integers(len(oldest))))
            lru.extendleft(reversed(oldest))
            backend.free(handles)
            cached -= pages
            reclaim -= pages
        extra["map_before"] = backend.pageblock_map()
        got = backend.alloc(want, 9)
        figures = {"requested": want, "granted": len(got),
                   "cache_pages_end": cached, "writeback_pages_end": len(writeback)}
        if p["atomic"]:
            figures.update(atomic)
        if p["nowait"]:
            figures.update(nowait)
        return figures
