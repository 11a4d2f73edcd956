"""NUMA-balancing migration between two nodes, after mm/memory.c do_numa_page() and
mm/migrate.c migrate_misplaced_folio().

A NUMA hinting fault on a folio whose memory sits on the wrong node migrates it to the faulting
CPU's node. Before 6.10 do_numa_page() skipped PTE-mapped large folios ("TODO: handle
PTE-mapped THP") and only PMD-mapped THPs moved (do_huge_pmd_numa_page()); since Baolin Wang's
"support multi-size THP numa balancing" (6.10) every folio moves whole. The target comes from
the other node only (__GFP_THISNODE), without reclaim or direct compaction, and only while that
node is above its high watermark (migrate_balanced_pgdat()); a failure never splits the folio.

Each node is a Machine; counters go to the source node's events, as the global /proc/vmstat
would show them: numa_hint_faults, numa_pages_migrated, pgmigrate_success/fail,
thp_migration_success/fail.

Every migration attempt also goes into the source node's migration_stats() (migrate_pages()
statistics: pages succeeded or failed, large folios moved whole, modelled time), as the kernel's
migrate_misplaced_folio() runs migrate_pages(); the NUMA share of that time is also kept
apart as time_ns/numa in subsystem_stats().

Only folios in user page tables take hinting faults: task_numa_work() skips hugetlb VMAs and
kernel memory (slab, page tables, poisoned pages) is never mapped PROT_NONE, so such folios
are left alone without a fault counted (None).

On profiles with the deferred_split policy partially_mapped (6.12+, simcore.deferred_split) a
PTE-mapped anonymous mTHP that moves is queued on the deferred split queue flagged partially
mapped on both nodes' counters (split_deferred), and stays flagged on the destination; a folio
already flagged is split first and its pages migrate as base pages (nr_split; the result for
that folio is its first page's new PFN).

Simplified: one hinting fault per folio; no task placement, scan periods or rate limits.
"""
from . import deferred_split as _deferred
from . import migrate as _migrate
from . import vm_event as ev
from .costs import migration_ns
from .mmzone import HPAGE_PMD_ORDER, KIND_IS_LRU, KIND_NAMES, PG_HWPOISON, PG_PINNED
from .pgdat import Z_WMARK_HIGH

NUMA_POLICIES = {
    "pmd_only": "only PMD-mapped THPs (and order-0 pages) migrate; PTE-mapped large folios "
                "are skipped",
    "whole": "every folio migrates whole; no split on failure",
}


def migrate_misplaced(src, dst, pfns, policy="whole"):
    """Hinting faults on the folios at `pfns` of node `src`, migrating them to node `dst`.
    Returns a list with, per folio, its new head PFN on dst or None (left where it was)."""
    if policy not in NUMA_POLICIES:
        raise ValueError(f"numa_balancing policy {policy!r} is unknown; allowed: "
                         f"{', '.join(NUMA_POLICIES)}")
    events = src.pgdat.events
    stats = src.migrate_stats
    mem_map = src.pgdat.mem_map
    out = []
    for pfn in pfns:
        pfn = int(pfn)
        order, kind, flags = (int(mem_map[pfn]["order"]), int(mem_map[pfn]["kind"]),
                              int(mem_map[pfn]["flags"]))
        n = 1 << order
        if not KIND_IS_LRU[kind] or flags & PG_HWPOISON:
            out.append(None)
            continue
        events[ev.NUMA_HINT_FAULTS] += 1
        if 0 < order < HPAGE_PMD_ORDER and policy == "pmd_only":
            out.append(None)
            continue
        high = int(dst.pgdat.zones[:, Z_WMARK_HIGH].sum())
        if dst.free_pages() - n <= high:          # migrate_balanced_pgdat()
            out.append(None)
            continue
        if _deferred.flagged(mem_map, pfn) and src.split(pfn, 0):
            # migrate_pages_batch(): on the deferred split queue and partially mapped, split
            # first (a failed folio, nr_split); the pieces migrate as base pages
            stats[_migrate.MS_NR_SPLIT] += 1
            stats[_migrate.MS_NR_FAILED] += 1
            if order == HPAGE_PMD_ORDER:
                stats[_migrate.MS_THP_FAILED] += 1
                stats[_migrate.MS_THP_SPLIT] += 1
                events[ev.THP_MIGRATION_FAIL] += 1
                events[ev.THP_MIGRATION_SPLIT] += 1
            moved = [_move(src, dst, p, 0, kind, int(mem_map[p]["flags"]), events, stats,
                           piece=True) for p in range(pfn, pfn + n)]
            out.append(moved[0])
            continue
        out.append(_move(src, dst, pfn, order, kind, flags, events, stats))
    return out


def _move(src, dst, pfn, order, kind, flags, events, stats, piece=False):
    """One folio to a new folio of the same order on dst: its PFN there, or None. A piece of
    a folio split first does not count as a failed folio again."""
    n = 1 << order
    # try_to_migrate() unmaps a PTE-mapped anon mTHP PTE by PTE: partially mapped on the way
    queued = src.profile.deferred_split == "partially_mapped" \
        and _deferred.pte_mapped_anon(src.pgdat.mem_map, pfn)
    if queued and flags & PG_PINNED:
        _deferred.queue(src.pgdat, pfn)         # unmapped and mapped again
    new = None if flags & PG_PINNED else dst.alloc(order, "movable", KIND_NAMES[kind], flags,
                                                   compact=False)
    stats[_migrate.MS_ATTEMPTS] += 1
    if new is None:
        events[ev.PGMIGRATE_FAIL] += n
        stats[_migrate.MS_FAILED_PAGES] += n
        stats[_migrate.MS_NR_FAILED] += 0 if piece else 1
        if order == HPAGE_PMD_ORDER:
            events[ev.THP_MIGRATION_FAIL] += 1
            stats[_migrate.MS_THP_FAILED] += 1
        return None
    if queued:
        # unmapped PTE by PTE: the source is queued on the way, the destination again
        _deferred.queue(src.pgdat, pfn)
    src.free(pfn)
    if queued:
        _deferred.queue(dst.pgdat, new)
    _count_success(src, events, stats, order)
    return new


def _count_success(src, events, stats, order):
    """The counters of one folio moved: vmstat events, migrate_pages() statistics (as
    migrate_misplaced_folio() feeds them) and the modelled time."""
    n = 1 << order
    cost = migration_ns(src.costs, order)
    src.model_ns["numa"] += cost
    stats[_migrate.MS_TIME_NS] += int(cost)
    stats[_migrate.MS_SUCCEEDED] += n
    events[ev.PGMIGRATE_SUCCESS] += n
    events[ev.NUMA_PAGES_MIGRATED] += n
    if order > 0:
        stats[_migrate.MS_LARGE_SUCCEEDED] += 1
        stats[_migrate.MS_LARGE_SUCCEEDED_PAGES] += n
    if order == HPAGE_PMD_ORDER:
        events[ev.THP_MIGRATION_SUCCESS] += 1
        stats[_migrate.MS_THP_SUCCEEDED] += 1
