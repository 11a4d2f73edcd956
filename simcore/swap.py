"""Swap-out and swap-in of (large) folios, after mm/vmscan.c shrink_folio_list(), mm/swap_state.c
add_to_swap(), mm/swapfile.c folio_alloc_swap()/cluster allocation, mm/page_io.c swap_writepage()
and mm/memory.c do_swap_page()/alloc_swap_folio().

A SwapDevice is one swap area (swap_info_struct): slots grouped in clusters of 512
(SWAPFILE_CLUSTER, one PMD's worth), a slot map (swap_map != 0), per cluster its use count and the
order it serves (ci->order), and per order the cluster the CPU is filling (percpu_cluster->next).
A large folio needs 2^order contiguous, naturally aligned slots inside one cluster; where it
finds them is the profile's swap_alloc policy:

- pmd_free_cluster (THP_SWAP, 4.14..6.9): only a PMD-size folio goes whole, and only into an
  entirely free cluster (swap_alloc_cluster()); PTE-mapped large folios are split to order 0 in
  shrink_folio_list() before add_to_swap().
- free_cluster (6.10, "Swap-out mTHP without splitting"): every order goes whole, filling the
  per-order current cluster and starting a new one only from the free list.
- nonfull_cluster (6.12, "mTHP swap allocator base on swap cluster order"): as free_cluster,
  plus partially used clusters already serving that order before a free one is taken.

When no slots are found the folio is split to order 0 and its pages swapped one by one
(thp_swpout_fallback for PMD size, per-size swpout_fallback). Order-0 pages take any free slot.

A folio on the deferred split queue flagged partially mapped (simcore.deferred_split, profiles
with the partially_mapped policy, 6.12+) is split to order 0 before any slot is sought
(shrink_folio_list(): "Split partially mapped folios right away", 5ed890ce5147 in 6.10 for
folios on the queue, 8422acdc97ed in 6.12 only for flagged ones): split of its size counted, no
swpout or swpout_fallback for it, its pages swapped one by one. The kernel frees the pieces no
page table maps without IO; here every piece is mapped (see simcore.deferred_split), so every
piece is swapped.

A folio larger than a cluster (above PMD order: the simulator can allocate order 10 anon
folios, the kernel's anonymous and shmem folios stop at PMD order) never gets slots:
folio_alloc_swap() refuses a size above SWAPFILE_CLUSTER (WARN_ON_ONCE) in every release, so
add_to_swap() fails and shrink_folio_list() splits the folio to order 0 and swaps its pages
one by one, counting thp_swpout_fallback (nr_pages >= HPAGE_PMD_NR) but no per-size stat
(count_mthp_stat() ignores orders above PMD). Before 6.10 such a folio is not PMD-mapped, so
it is split before add_to_swap() and no fallback is counted.

Swap-in (SWAPIN_POLICIES): order0 (do_swap_page() before 6.12) brings every page back as its
own folio; sync_io_large (6.12) allocates the folio's order when the device is
SWP_SYNCHRONOUS_IO (zram-like), zswap was never enabled and the order is below PMD_ORDER
(alloc_swap_folio()), falling back to order 0 (swpin_fallback) when the allocation fails.

Simplified: one CPU (one current cluster per order); no swap cache (a swapped-in folio frees its
slots at once, as with SWP_SYNCHRONOUS_IO); no readahead; no swap-count continuation or sharing
(each slot has one owner); the device write or zram compression is a modelled cost.
"""
import dataclasses

import numpy as np

from . import deferred_split
from . import vm_event as ev
from .costs import COST_INDEX, split_ns
from .mmzone import HPAGE_PMD_ORDER, KIND_NAMES, KINDS, PG_PINNED

SWAPFILE_CLUSTER = 512

SWAP_ALLOC_POLICIES = {
    "pmd_free_cluster": "PMD-size THPs whole into a free cluster (block devices only); "
                        "other large folios split before add_to_swap()",
    "free_cluster": "every order whole, from the per-order current cluster or a free one",
    "nonfull_cluster": "every order whole, also reusing non-full clusters of the same order",
}
SWAPIN_POLICIES = {
    "order0": "every page swapped in as an order-0 folio",
    "sync_io_large": "large folios (below PMD size) from SWP_SYNCHRONOUS_IO devices when zswap "
                     "was never enabled, else order 0",
}
SWAPPABLE_KINDS = (KINDS["anon"], KINDS["shmem"])


@dataclasses.dataclass
class SwapRecord:
    """What a page table holds for one swapped-out folio: its swap entries (slot ranges), the
    pieces that stayed resident (head PFNs) and what the folio was."""
    kind: str
    order: int
    pieces: list          # [offset, order, in_zswap] per swapped range
    resident: list        # head PFNs of pieces that were not swapped

    @property
    def nr_swapped(self):
        return sum(1 << o for _, o, _ in self.pieces)


class SwapDevice:
    """One swap area: `nr_pages` slots rounded up to whole clusters.

    synchronous: SWP_SYNCHRONOUS_IO (zram, pmem); solid_state: SWP_SOLIDSTATE (non-rotational,
    which large allocations need since 6.10); blkdev: SWP_BLKDEV (a partition or zram rather
    than a swap file, which PMD swap-out needed before 6.10)."""

    def __init__(self, nr_pages, synchronous=True, solid_state=True, blkdev=True):
        if isinstance(nr_pages, bool) or not isinstance(nr_pages, (int, np.integer)) \
                or nr_pages < 1:
            raise ValueError(f"swap size {nr_pages!r} must be a positive number of pages")
        self.nr_clusters = -(-int(nr_pages) // SWAPFILE_CLUSTER)
        self.nr_slots = self.nr_clusters * SWAPFILE_CLUSTER
        self.swap_map = np.zeros(self.nr_slots, dtype=np.uint8)
        self.cluster_count = np.zeros(self.nr_clusters, dtype=np.int64)
        self.cluster_order = np.zeros(self.nr_clusters, dtype=np.int64)
        self.next = {}                       # order -> next offset in the current cluster
        self.synchronous = bool(synchronous)
        self.solid_state = bool(solid_state)
        self.blkdev = bool(blkdev)

    # -- slot allocation -------------------------------------------------------------------

    def inuse_pages(self):
        return int(self.cluster_count.sum())

    def free_clusters(self):
        return int((self.cluster_count == 0).sum())

    def _take(self, offset, order):
        n = 1 << order
        c = offset // SWAPFILE_CLUSTER
        if self.cluster_count[c] == 0:
            self.cluster_order[c] = order
        self.swap_map[offset:offset + n] = 1
        self.cluster_count[c] += n
        end = offset + n
        self.next[order] = end if end % SWAPFILE_CLUSTER else None
        return offset

    def _fits(self, offset, order):
        n = 1 << order
        return not self.swap_map[offset:offset + n].any()

    def _scan_cluster(self, c, order):
        """First naturally aligned free run of 2^order slots in cluster c, or -1."""
        n = 1 << order
        base = c * SWAPFILE_CLUSTER
        runs = self.swap_map[base:base + SWAPFILE_CLUSTER].reshape(-1, n).any(axis=1)
        free = np.flatnonzero(~runs)
        return base + int(free[0]) * n if free.size else -1

    def alloc(self, order, policy):
        """Slots for a folio of `order` under the swap_alloc `policy`: the first offset, or -1
        when the policy finds none (the caller splits). Order 0 takes any free slot; a folio
        larger than a cluster gets none (folio_alloc_swap()'s size > SWAPFILE_CLUSTER check)."""
        if (1 << order) > SWAPFILE_CLUSTER:
            return -1
        if order > 0:
            # every release refuses large entries on a swap file ("Swapfile is not block
            # device": scan_swap_map_slots(), cluster_alloc_swap_entry())
            if not self.blkdev:
                return -1
            if policy == "pmd_free_cluster":
                if order != HPAGE_PMD_ORDER:
                    return -1
            elif not self.solid_state:
                return -1
        nxt = self.next.get(order)
        if nxt is not None:
            c = nxt // SWAPFILE_CLUSTER
            if self.cluster_count[c] and self.cluster_order[c] == order and self._fits(nxt, order):
                return self._take(nxt, order)
        if order == 0 or policy == "nonfull_cluster":
            partial = np.flatnonzero((self.cluster_count > 0)
                                     & (self.cluster_count < SWAPFILE_CLUSTER)
                                     & (self.cluster_order == order))
            for c in partial:
                off = self._scan_cluster(int(c), order)
                if off >= 0:
                    return self._take(off, order)
        free = np.flatnonzero(self.cluster_count == 0)
        if free.size:
            return self._take(int(free[0]) * SWAPFILE_CLUSTER, order)
        if order == 0:                      # any hole in any cluster (the frag lists)
            holes = np.flatnonzero(self.swap_map == 0)
            if holes.size:
                return self._take(int(holes[0]), 0)
        return -1

    def free(self, offset, nr):
        """swap_free_nr(): release nr slots from offset (within one cluster)."""
        c = offset // SWAPFILE_CLUSTER
        if not self.swap_map[offset:offset + nr].all():
            raise ValueError(f"swap slots {offset}..{offset + nr - 1} are not all in use")
        self.swap_map[offset:offset + nr] = 0
        self.cluster_count[c] -= nr
        if self.cluster_count[c] == 0:
            self.cluster_order[c] = 0
            for o, nxt in list(self.next.items()):
                if nxt is not None and nxt // SWAPFILE_CLUSTER == c:
                    self.next[o] = None

    def check(self):
        """The slot map against the cluster counts; returns a problem or ""."""
        counts = self.swap_map.reshape(self.nr_clusters, SWAPFILE_CLUSTER).sum(axis=1)
        bad = np.flatnonzero(counts != self.cluster_count)
        if bad.size:
            c = int(bad[0])
            return (f"swap cluster {c}: {int(counts[c])} slots in use but ci->count "
                    f"{int(self.cluster_count[c])}")
        return ""

    def info(self):
        """/proc/swaps-like figures, in pages, plus the cluster picture."""
        return {"size": self.nr_slots, "used": self.inuse_pages(),
                "free_clusters": self.free_clusters(), "nr_clusters": self.nr_clusters,
                "synchronous": self.synchronous, "solid_state": self.solid_state}


def _count_swpout(m, order):
    """count_swpout_vm_event(): a folio written to the swap device."""
    events, stats = m.pgdat.events, m.pgdat.mthp_stats
    if order == HPAGE_PMD_ORDER:
        events[ev.THP_SWPOUT] += 1
    if order > 0:
        stats[order, ev.MTHP_STAT_SWPOUT] += 1
    events[ev.PSWPOUT] += 1 << order


def _write_piece(m, dev, pfn, order, offset):
    """pageout() -> swap_writepage(): zswap first when enabled, else the device; the folio's
    memory goes back to the allocator. Returns whether zswap took it."""
    costs = m.costs
    in_zswap = m.zswap.store(m, order)
    if not in_zswap:
        _count_swpout(m, order)
    m.model_ns["swap_out"] += (costs[COST_INDEX["swap_folio_fixed_ns"]]
                               + costs[COST_INDEX["compress_ns_per_page"]] * (1 << order))
    m.free(int(pfn))
    return in_zswap


def swap_out_folio(m, pfn, policy):
    """shrink_folio_list() of one folio to swap. Returns a SwapRecord, or None where the folio
    stays resident (pinned, not anonymous, no slot)."""
    dev = m.swap_device
    page = m.pgdat.mem_map[pfn]
    order, kind, flags = int(page["order"]), int(page["kind"]), int(page["flags"])
    if kind not in SWAPPABLE_KINDS or flags & PG_PINNED:
        return None
    events, stats = m.pgdat.events, m.pgdat.mthp_stats
    record = SwapRecord(KIND_NAMES[kind], order, [], [])
    if order > 0:
        # partially mapped (on the deferred split queue and flagged): split right away, before
        # add_to_swap(); otherwise slots for the whole folio first
        if not deferred_split.flagged(m.pgdat.mem_map, pfn):
            offset = dev.alloc(order, policy)
            if offset >= 0:
                record.pieces.append([offset, order, _write_piece(m, dev, pfn, order, offset)])
                return record
            if policy != "pmd_free_cluster" or order == HPAGE_PMD_ORDER:
                # folio_alloc_swap() found no slots: split and retry page by page
                if order >= HPAGE_PMD_ORDER:
                    events[ev.THP_SWPOUT_FALLBACK] += 1
                if order <= HPAGE_PMD_ORDER:
                    stats[order, ev.MTHP_STAT_SWPOUT_FALLBACK] += 1
        m.model_ns["swap_out"] += split_ns(m.costs, order)
        if not m.split(int(pfn), 0):
            return None
        pieces = range(pfn, pfn + (1 << order))
    else:
        pieces = (pfn,)
    for p in pieces:
        offset = dev.alloc(0, policy)
        if offset < 0:                    # device full: the rest stays in memory
            record.resident.append(int(p))
            continue
        record.pieces.append([offset, 0, _write_piece(m, dev, p, 0, offset)])
    return record if record.pieces else None


def swap_in(m, record, policy):
    """do_swap_page() for every entry of one swapped-out folio. Returns the head PFNs of the
    folios brought back (the record's resident pieces included); pieces that could not be
    brought back (no memory) stay in record.pieces."""
    dev = m.swap_device
    costs = m.costs
    events, stats = m.pgdat.events, m.pgdat.mthp_stats
    heads = list(record.resident)
    record.resident = []
    left = []
    for offset, order, in_zswap in record.pieces:
        n = 1 << order
        if order > 0 and policy == "sync_io_large" and dev.synchronous \
                and not m.zswap.ever_enabled and order < HPAGE_PMD_ORDER:
            # alloc_swap_folio(): vma_thp_gfp_mask() without madvise: no direct compaction
            pfn = m.alloc(order, "movable", record.kind, compact=False)
            if pfn is not None:
                stats[order, ev.MTHP_STAT_SWPIN] += 1
                events[ev.PSWPIN] += n
                m.model_ns["swap_in"] += (costs[COST_INDEX["swapin_fault_ns"]]
                                          + costs[COST_INDEX["decompress_ns_per_page"]] * n)
                dev.free(offset, n)
                heads.append(pfn)
                continue
            stats[order, ev.MTHP_STAT_SWPIN_FALLBACK] += 1
        for i in range(n):
            pfn = m.alloc(0, "movable", record.kind, compact=False)
            if pfn is None:
                left.extend([offset + j, 0, in_zswap] for j in range(i, n))
                break
            if in_zswap:
                m.zswap.load(m, 1)
            else:
                events[ev.PSWPIN] += 1
            m.model_ns["swap_in"] += (costs[COST_INDEX["swapin_fault_ns"]]
                                      + costs[COST_INDEX["decompress_ns_per_page"]])
            dev.free(offset + i, 1)
            heads.append(pfn)
    record.pieces = left
    return heads
