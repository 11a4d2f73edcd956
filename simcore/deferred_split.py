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
PG_PARTIALLY_MAPPED in mem_map[head + 1].flags; the queue itself is not kept (the shrinker is
not modelled), so "queued" and "flagged" are one state here. Only anonymous folios of order
2 .. HPAGE_PMD_ORDER - 1 are ever flagged: PMD-mapped THPs migrate through a PMD migration
entry and are never partially unmapped, page-cache folios are never queued, order-1 folios have
no deferred list. Any split clears the flag (the pieces do not carry it), and so does freeing
the folio (folio_unqueue_deferred_split() from the free path).

Policies (node[N_DEFERRED_SPLIT_POLICY]; 0, a bare PgData, is the older behaviour):
- not_queued: migration leaves no deferred-split state and never splits for it (profiles
  before 6.12; 6.10 and 6.11, where the queue test without the flag existed, are not modelled
  as their behaviour was not measured here);
- partially_mapped: the 6.12+ behaviour above.
"""
import numba as nb
import numpy as np

from . import vm_event as ev
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
