"""thp-heavy: the mmtests thpcompact/thpchallenge shape with mTHP sizes.

Fault an anonymous region with an mTHP size mix, unmap the first half of every 2 MiB chunk,
refill the holes with page cache, then fault a second region with the same mix (or request
order-9 allocations). Reports huge-pct: the share of second-phase faults served at the size
asked, fallbacks per size, the unusable free index at order 9 just before the second phase
(unusable_9_phase2, x1000; its buddyinfo is kept with the run), and the compaction figures."""
import numpy as np

from simcore.gfp import DEFRAG_MODES, vma_thp_gfp_mask
from simcore.mmzone import PAGEBLOCK_NR_PAGES

from .base import Param, Workload, parse_size_mix, register, share

ROUNDS = 16


@register
class ThpHeavy(Workload):
    name = "thp-heavy"
    headline = ("huge_pct", "unusable_9_phase2", "fallback_*")
    description = " ".join(__doc__.split("\n\n")[0].split()).split(": ", 1)[1]
    params = {
        "mix": Param("16K:1,64K:2,2M:2", "mTHP size mix of the faults (size:weight,...)"),
        "fill": Param(0.95, "share of memory the first region faults", low=0.05, high=0.95),
        "refill": Param(0.5, "share of the unmapped holes refilled with page cache",
                        low=0.0, high=1.0),
        "second": Param(0.2, "second region, as a share of memory", low=0.01, high=0.9),
        "phase2": Param("faults", "second phase: mTHP faults with the mix, or order-9 "
                        "hugetlb allocations (pool growth, __GFP_RETRY_MAYFAIL)",
                        choices=("faults", "order9")),
        "defrag": Param("madvise", "THP defrag setting for the faults (the regions are "
                        "MADV_HUGEPAGE, as thpcompact's)", choices=DEFRAG_MODES),
    }

    def run(self, backend, p, extra):
        mix = parse_size_mix(p["mix"])
        orders = sorted(mix, reverse=True)
        weights = np.array([mix[o] for o in orders])
        weights = weights / weights.sum()
        total = backend.total_pages
        gfp = vma_thp_gfp_mask(p["defrag"], madvised=True)
        rng = backend.rng
        # Phase 1: fault the first region, each size its share of the pages, in ROUNDS slices
        # as a program touching a mixed region would: the sizes fault in a seeded order each
        # slice, and the slice's folios land in the virtual range in a seeded order (which
        # decides the folios the unmap below frees).
        region = []
        for _ in range(ROUNDS):
            faulted = []
            for i in rng.permutation(len(orders)):
                o, w = orders[i], weights[i]
                got = backend.fault_anon(int(total * p["fill"] * w / ROUNDS) >> o, [o], gfp=gfp)
                faulted.extend(got.values())
            if faulted:
                region.append(rng.permutation(np.concatenate(faulted)))
        handles = np.concatenate(region) if region else np.empty(0, dtype=np.int64)
        # Unmap the first half of every 2 MiB chunk of the region's virtual range (folios in
        # fault order). A THP cut in half is split first (deferred split), so its second half
        # stays mapped as base pages.
        sizes = np.int64(1) << backend.folio_orders(handles)
        whole = sizes >= PAGEBLOCK_NR_PAGES
        pieces = backend.split(handles[whole], 0)
        handles = np.concatenate([handles[~whole], pieces])
        sizes = np.concatenate([sizes[~whole], np.ones(len(pieces), dtype=np.int64)])
        offset = np.cumsum(sizes) - sizes
        first_half = (offset % PAGEBLOCK_NR_PAGES) < PAGEBLOCK_NR_PAGES // 2
        holes = int(sizes[first_half].sum())
        backend.free(handles[first_half])
        backend.alloc(int(holes * p["refill"]), 0, kind="file", compact=False)
        extra["map_before"] = backend.pageblock_map()
        # the free memory the second phase meets (thpcompact's picture before its THP faults)
        extra["buddyinfo_before_phase2"] = backend.buddyinfo()
        unusable_phase2 = backend.fragmentation()["unusable"]
        # Phase 2: fault the second region one 2 MiB chunk's worth at a time, or ask for THPs.
        figures = {}
        if p["phase2"] == "order9":
            want = int(total * p["second"]) >> 9
            got = backend.alloc(want, 9, kind="hugetlb", gfp="retry_mayfail")
            figures.update(requested=want, granted=len(got))
        else:
            requested = granted = 0
            for _ in range(ROUNDS):
                for i in rng.permutation(len(orders)):
                    o, w = orders[i], weights[i]
                    count = int(total * p["second"] * w / ROUNDS) >> o
                    got = backend.fault_anon(count, [o], gfp=gfp)
                    at_order = len(got.get(o, ()))
                    requested += count
                    granted += at_order
                    key = f"fallback_{4 << o}K"
                    figures[key] = figures.get(key, 0) + count - at_order
            figures.update(requested=requested, granted=granted)
        figures["huge_pct"] = 100 * share(figures["granted"], figures["requested"])
        figures["unusable_9_phase2"] = unusable_phase2
        return figures
