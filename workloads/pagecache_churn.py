"""pagecache-churn: many small files read and evicted (readahead-sized large folios in the page
cache) with slab interleaved, dirty and writeback folios that block migration for a while, LRU
eviction, then high-order requests."""
import collections

import numpy as np

from .base import Param, Workload, register


@register
class PagecacheChurn(Workload):
    name = "pagecache-churn"
    description = " ".join(__doc__.split("\n\n")[0].split()).split(": ", 1)[1]
    params = {
        "cache": Param(0.85, "page cache size kept, share of memory", low=0.05, high=0.9),
        "rounds": Param(12, "read rounds, each reading a fresh set of files", quick=6,
                        low=1, high=200),
        "readahead": Param(5, "largest readahead folio order (5 = 128K)", low=0, high=9),
        "slab": Param(0.03, "slab pages allocated per page-cache page read", low=0.0, high=0.5),
        "dirty": Param(0.1, "share of new folios written (dirty)", low=0.0, high=1.0),
        "writeback": Param(0.05, "share of new folios under writeback for a round",
                           low=0.0, high=1.0),
        "highorder": Param(0.08, "order-9 requests after the churn, as a share of memory",
                           low=0.0, high=0.9),
    }

    def run(self, backend, p, extra):
        total = backend.total_pages
        rng = backend.rng
        target = int(total * p["cache"])
        per_round = max(1, target // 4)
        lru = collections.deque()        # oldest first: (handles, pages)
        cached = 0
        writeback = np.empty(0, dtype=np.int64)
        for _ in range(p["rounds"]):
            backend.set_flags(writeback, "writeback", on=False)    # last round's I/O completed
            orders = rng.integers(0, p["readahead"] + 1, size=64)
            batch = []
            for o in range(p["readahead"] + 1):
                pages = per_round * int((orders == o).sum()) // len(orders)
                got = backend.alloc(pages >> o, o, "file", compact=False)
                batch.append(got)
                lru.append((got, len(got) << o))
                cached += len(got) << o
            backend.alloc(int(per_round * p["slab"]), 0, "slab", "unmovable", compact=False)
            new = np.concatenate(batch)
            backend.set_flags(new[rng.random(len(new)) < p["dirty"]], "dirty")
            writeback = new[rng.random(len(new)) < p["writeback"]]
            backend.set_flags(writeback, "writeback")
            while cached > target and lru:               # LRU eviction, oldest first
                handles, pages = lru.popleft()
                backend.free(handles)
                cached -= pages
            backend.tick(100)
        want = int(total * p["highorder"]) >> 9
        extra["map_before"] = backend.pageblock_map()
        got = backend.alloc(want, 9)
        return {"requested": want, "granted": len(got),
                "cache_pages_end": cached, "writeback_pages_end": len(writeback)}
