"""pagecache-churn: many small files read and evicted (readahead-sized large folios in the page
cache) with slab interleaved, dirty and writeback folios that block migration for a while, LRU
eviction, then high-order requests."""
import collections

import numpy as np

from .base import Param, Workload, register

SLICE_PAGES = 256      # 1 MiB of reads between slab allocations


class _Buffers:
    """Order-3 non-blocking kernel buffers taken as pages are read (GFP_ATOMIC receive buffers,
    GFP_NOWAIT slab): `share` pages per page read, one request for the whole order-3 blocks
    owed so far; figures counts the blocks requested and granted."""

    def __init__(self, name, kind, gfp, share):
        self.kind, self.gfp, self.share = kind, gfp, share
        self.debt = 0.0
        self.requested, self.granted = f"{name}_requested", f"{name}_granted"
        self.figures = {self.requested: 0, self.granted: 0}

    def take(self, backend, pages):
        """The blocks granted for `pages` more pages read, or None when none is owed yet."""
        self.debt += pages * self.share / 8
        if self.debt < 1:
            return None
        n = int(self.debt)
        got = backend.alloc(n, 3, self.kind, "unmovable", gfp=self.gfp)
        self.figures[self.requested] += n
        self.figures[self.granted] += len(got)
        self.debt -= n
        return got


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
        atomic = _Buffers("atomic", "kernel", "atomic", p["atomic"])
        nowait = _Buffers("nowait", "slab", "nowait", p["nowait"])
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
                for source in (atomic, nowait):
                    got = source.take(backend, SLICE_PAGES)
                    if got is not None:
                        buffers.append(got)
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
            figures.update(atomic.figures)
        if p["nowait"]:
            figures.update(nowait.figures)
        return figures
