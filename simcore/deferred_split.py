"""The deferred split queue's "partially mapped" state of anonymous mTHP, after mm/rmap.c
__folio_remove_rmap(), mm/huge_memory.c deferred_split_folio() / __folio_unqueue_deferred_split()
and the migration paths in mm/migrate.c that look at it.

Since 6.12 (Usama Arif, "mm: introduce a pageflag for partially mapped folios", part of the
underused-THP shrinker series) a large anonymous folio found partially mapped by
__folio_remove_rmap() goes on the deferred split queue with PG_partially_mapped set, counted
once per folio: split_deferred of its size (thp_deferred_split_page at PMD size) and the gauge
nr_anon_partially_mapped. Migration unmaps a PTE-mapped folio one PTE at a time
(try_to_migrate_one() -> folio_remove_rmap_pte()), so the first PTE removed leaves the source
partially mapped: every migrated PTE-mapped anon mTHP gets queued and flagged. The source is
unqueued when its mapping moves (__folio_migrate_mapping()) and freed; the destination is queued
again with the source's state by migrate_folio_move() ("mm: fix deferred split queue races
during migration", Usama Arif, mm tree: deferred_split_folio(dst, src_partially_mapped)).
Measured on 6.12.118 and 6.18.44: split_deferred +2 and nr_anon_partially_mapped +1 per 64K
folio migrated once (the source and the destination each counted once; the source's gauge
share goes with it when it is freed).

migrate_pages_batch() splits a folio of order > 1 that is on the queue and flagged before
migrating it (7262f208ca68, "mm/migrate: split source folio if it is on deferred split list",
6.10; with the flag test since 6.12), so a folio migrated twice moves whole once and as base
pages the second time.

State: a large folio's flag lives in its second page's flags (folio->_flags_1 in the kernel),
PG_PARTIALLY_MAPPED in mem_map[head + 1].flags; the queue itself is not kept as a list:
"queued" and "flagged" are one state here, and the queue is the node's flagged folios. Only
anonymous folios of order 2 .. HPAGE_PMD_ORDER - 1 are ever flagged: PMD-mapped THPs migrate
through a PMD migration entry and are never partially unmapped, page-cache folios are never
queued, order-1 folios have no deferred list. Any split clears the flag (the pieces do not
carry it), and so does freeing the folio (folio_unqueue_deferred_split() from the free path).

Reclaim and the queue (simcore.vmscan): shrink_folio_list() splits a flagged folio before
add_to_swap() (simcore.swap.swap_out_folio(); 5ed890ce5147, Ryan Roberts, "mm: vmscan: avoid
split during shrink_folio_list()", 6.10, split folios on the queue; 8422acdc97ed, Usama Arif,
6.12, only those also flagged partially mapped), and the deferred split shrinker
(deferred_split_count() / deferred_split_scan() below, run by shrink_slab() from every
shrink_node() pass of kswapd, direct and proactive reclaim) splits queued folios to order 0.
What a split frees: the kernel frees the subpages no page table maps any more
(free_page_and_swap_cache() of each unmapped piece after the split). Every folio flagged here
was flagged by migration, which maps every subpage of the destination again, so no subpage of a
flagged folio is unmapped: a split frees nothing, it only turns one folio into base pages, all
still allocated (the head keeps the owner's handle, the other pieces get handles of their own,
as any split's pieces do). The model keeps no per-subpage mapping: a path that flags folios
with subpages really unmapped would have to record which.

Policies (node[N_DEFERRED_SPLIT_POLICY]; 0, a bare PgData, is the older behaviour):
- not_queued: migration leaves no deferred-split state and never splits for it (profiles
  before 6.12; 6.10 and 6.11, where the queue test without the flag existed, are not modelled
  as their behaviour was not measured here);
- partially_mapped: the 6.12+ behaviour above.

Not modelled: 6.12's underused-THP half of the series (every anonymous PMD THP faulted in is
queued unflagged, and the shrinker splits one whose zero-filled pages exceed max_ptes_none,
thp_underused(), mapping them to the shared zero page): the model knows no page contents.
"""
import numba as nb
import numpy as np

from . import vm_event as ev
from .costs import split_ns
from .mmzone import HPAGE_PMD_ORDER, KIND_ANON, PAGE_HEAD, PAGE_TAIL, PG_PARTIALLY_MAPPED
from .pgdat import N_DEFERRED_SPLIT_POLICY

jit = nb.njit(cache=True, nogil=True)

POLICY_NOT_QUEUED = 0
POLICY_PARTIALLY_MAPPED = 1
DEFERRED_SPLIT_POLICIES = {
    "not_queued": POLICY_NOT_QUEUED,
    "partially_mapped": POLICY_PARTIALLY_MAPPED,
}


@jit
def migration_queues(pgdat, pfn):
    """Whether migrating the folio at pfn leaves it partially mapped on the way (a PTE-mapped
    anonymous mTHP on a profile with the partially_mapped policy)."""
    mem_map = pgdat.mem_map
    order = mem_map[pfn].order
    return (pgdat.node[N_DEFERRED_SPLIT_POLICY] == POLICY_PARTIALLY_MAPPED
            and mem_map[pfn].kind == KIND_ANON and order > 1 and order < HPAGE_PMD_ORDER)


@jit
def folio_test_partially_mapped(mem_map, pfn):
    """folio_test_partially_mapped() (with the queue test: one state here)."""
    return mem_map[pfn].order > 1 and (mem_map[pfn + 1].flags & PG_PARTIALLY_MAPPED) != 0


@jit
def deferred_split_folio(pgdat, pfn):
    """deferred_split_folio(folio, true): queue and flag the folio, counted the first time."""
    mem_map = pgdat.mem_map
    if mem_map[pfn + 1].flags & PG_PARTIALLY_MAPPED:
        return
    mem_map[pfn + 1].flags |= PG_PARTIALLY_MAPPED
    order = np.int64(mem_map[pfn].order)
    if order == HPAGE_PMD_ORDER:
        pgdat.events[ev.THP_DEFERRED_SPLIT_PAGE] += 1
    pgdat.mthp_stats[order, ev.MTHP_STAT_SPLIT_DEFERRED] += 1
    pgdat.mthp_stats[order, ev.MTHP_STAT_NR_ANON_PARTIALLY_MAPPED] += 1


@jit
def folio_unqueue_deferred_split(pgdat, pfn):
    """folio_unqueue_deferred_split() / the split's unqueue: off the queue, flag cleared."""
    mem_map = pgdat.mem_map
    order = np.int64(mem_map[pfn].order)
    if order > 1 and mem_map[pfn + 1].flags & PG_PARTIALLY_MAPPED:
        mem_map[pfn + 1].flags &= ~np.uint8(PG_PARTIALLY_MAPPED)
        pgdat.mthp_stats[order, ev.MTHP_STAT_NR_ANON_PARTIALLY_MAPPED] -= 1


# The same from Python, for the paths modelled there (simcore.numa): the compiled ones take
# the PgData as compiled code sees it, which a Python caller cannot pass.

def flagged(mem_map, pfn):
    """folio_test_partially_mapped() of the folio headed at pfn."""
    return int(mem_map["order"][pfn]) > 1 \
        and bool(mem_map["flags"][pfn + 1] & PG_PARTIALLY_MAPPED)


def pte_mapped_anon(mem_map, pfn):
    """Whether the folio at pfn is an anonymous mTHP mapped by PTEs (order 2..PMD-1)."""
    order = int(mem_map["order"][pfn])
    return int(mem_map["kind"][pfn]) == KIND_ANON and 1 < order < HPAGE_PMD_ORDER


def queue(pgdat, pfn):
    """deferred_split_folio(folio, true) from Python."""
    mem_map = pgdat.mem_map
    if mem_map["flags"][pfn + 1] & PG_PARTIALLY_MAPPED:
        return
    mem_map["flags"][pfn + 1] |= np.uint8(PG_PARTIALLY_MAPPED)
    order = int(mem_map["order"][pfn])
    if order == HPAGE_PMD_ORDER:
        pgdat.events[ev.THP_DEFERRED_SPLIT_PAGE] += 1
    pgdat.mthp_stats[order, ev.MTHP_STAT_SPLIT_DEFERRED] += 1
    pgdat.mthp_stats[order, ev.MTHP_STAT_NR_ANON_PARTIALLY_MAPPED] += 1


def check(pgdat):
    """The flag sits only on the second page of an anonymous folio of order 2..PMD-1, and
    nr_anon_partially_mapped of each size counts those folios. A problem string, or ""."""
    mem_map = pgdat.mem_map
    flagged = np.flatnonzero((mem_map["type"] == PAGE_TAIL)
                             & ((mem_map["flags"] & PG_PARTIALLY_MAPPED) != 0))
    heads = flagged - 1
    if len(flagged):
        recs = mem_map[heads]
        order = recs["order"].astype(np.int64)
        bad = ((recs["type"] != PAGE_HEAD) | (recs["kind"] != KIND_ANON) | (order < 2)
               | (order >= HPAGE_PMD_ORDER))
        if bad.any():
            pfn = int(flagged[np.argmax(bad)])
            return (f"pfn {pfn}: PG_partially_mapped on a page that is not the second page of "
                    f"an anonymous mTHP")
    counts = np.bincount(mem_map["order"][heads].astype(np.int64),
                         minlength=pgdat.mthp_stats.shape[0])
    gauge = pgdat.mthp_stats[:, ev.MTHP_STAT_NR_ANON_PARTIALLY_MAPPED]
    if (counts != gauge).any():
        o = int(np.argmax(counts != gauge))
        return (f"node 0: nr_anon_partially_mapped of order {o} is {int(gauge[o])} but "
                f"{int(counts[o])} folios are flagged")
    return ""


# -- the deferred split shrinker ("thp-deferred_split"), run by simcore.vmscan.shrink_slab() ----

SHRINK_STOP = -1        # a scan_objects() return: nothing more to do


def queued_heads(mem_map):
    """Head PFNs of the node's flagged folios, ascending: the queue (see deferred_split_scan()).
    The flag bit is also PG_HWPOISON on a head page, so only second pages count."""
    second = np.flatnonzero((mem_map["type"][1:] == PAGE_TAIL)
                            & ((mem_map["flags"][1:] & PG_PARTIALLY_MAPPED) != 0))
    heads = second          # entry i of mem_map[1:] is pfn i + 1, the second page of pfn i
    ok = (mem_map["type"][heads] == PAGE_HEAD) & (mem_map["order"][heads] > 1)
    return heads[ok]


def deferred_split_count(pgdat):
    """deferred_split_count(): the queue's length, here the flagged folios of the node
    (nr_anon_partially_mapped over every size)."""
    return int(pgdat.mthp_stats[:, ev.MTHP_STAT_NR_ANON_PARTIALLY_MAPPED].sum())


def deferred_split_scan(m, nr_to_scan, cursor):
    """deferred_split_scan() of the node's queue: up to nr_to_scan queued folios, each flagged
    one split to order 0 (split_folio(), which counts split of its size, thp_split_page at PMD
    size, and on failure split_failed / thp_split_page_failed; a folio that fails stays queued
    and flagged). split_deferred and thp_deferred_split_page were counted when the folio was
    queued (deferred_split_folio()), not here.

    The queue order is simplified: the kernel's list is in queueing order and a folio whose
    split failed goes back to its tail; here the queue is the flagged folios in PFN order and a
    scan starts at `cursor` (the PFN after the last folio the previous scan looked at), wrapping
    round, so a folio that failed is looked at again only after the others. No folio lock is
    held by anyone else (folio_trylock() always succeeds), and no folio is freed under the scan.

    Returns (folios split, or SHRINK_STOP when none was and the queue is empty; the cursor for
    the next scan). The split's modelled time goes to model_ns["reclaim"]."""
    mem_map = m.pgdat.mem_map
    heads = queued_heads(mem_map)
    if not len(heads):
        return SHRINK_STOP, cursor
    start = int(np.searchsorted(heads, cursor))
    batch = np.concatenate([heads[start:], heads[:start]])[:max(int(nr_to_scan), 0)]
    split = 0
    for pfn in batch:
        order = int(mem_map["order"][pfn])
        try:
            ok = m.split(int(pfn), 0)
        except ValueError:          # isolated or poisoned: not a folio the scan can split
            ok = False
        if ok:
            split += 1
            m.model_ns["reclaim"] += split_ns(m.costs, order)
    if len(batch):
        cursor = int(batch[-1]) + 1
    return split, cursor
