"""Page migration, after mm/migrate.c (migrate_pages() and its helpers).

migrate_pages() moves isolated folios to targets handed out by a caller-supplied allocator, with
the kernel's retry structure and its split-on-ENOMEM path, and puts back what it could not move.
Targets come from new_folio()/put_folio() over a `target` tuple (cc, pool): compaction's pool of
isolated free pages or the buddy allocator, as cc[CC_TARGET_POLICY] says, or a user strategy's
own compiled functions passed in as get_new_folio/put_new_folio (None selects the built-ins:
compiled code that takes functions as values cannot be cached, so the built-ins never do).

The deferred split queue (simcore.deferred_split), on profiles with the partially_mapped policy
(6.12 and later): migrating a PTE-mapped anonymous mTHP unmaps it one PTE at a time, so the
source is queued and flagged partially mapped on the way and the destination is queued again
with that state (migrate_folio_move()); migrate_pages_batch() splits a flagged folio of order
> 1 to base pages before migrating it, for every migrate reason, as a failed folio
(nr_failed, nr_split; thp_split at PMD size). So a 64K folio migrated once stays whole but
flagged, and migrated again moves as 16 base pages. Older profiles keep no such state.

Simplifications: no folio locks held by others (so async never meets a locked folio), a flagged
folio stays whole until migration splits it, reclaim splits it (swap-out or the deferred split
shrinker, simcore.vmscan) or it is freed; hugetlb folios migrate like others but never split;
the source folio is freed straight to the buddy allocator when its last reference goes.
"""
import numba as nb
import numpy as np

from . import deferred_split, freescan, page_alloc, pcp
from . import vm_event as ev
from .costs import COST_COPY_PAGE, COST_FIXED, COST_WRITEBACK_WAIT
from .mmzone import (
    AS_NO_MIGRATE_FOLIO,
    FOLIO_ISOLATED,
    FOLIO_ON_LRU,
    HPAGE_PMD_ORDER,
    MIGRATE_MOVABLE,
    NR_PAGE_ORDERS,
    PAGE_HEAD,
    PAGE_TAIL,
    PG_DIRTY,
    PG_PINNED,
    PG_WRITEBACK,
)
from .tracelog import NR_COUNTERS, trace_migrate_pages

jit = nb.njit(cache=True, nogil=True)

MIGRATE_ASYNC = 0
MIGRATE_SYNC_LIGHT = 1
MIGRATE_SYNC = 2
MODE_NAMES = ("async", "sync_light", "sync")

# enum migrate_reason
MR_COMPACTION = 0
MR_MEMORY_FAILURE = 1
MR_MEMORY_HOTPLUG = 2
MR_SYSCALL = 3
MR_NUMA_MISPLACED = 4
MR_CONTIG_RANGE = 5
REASON_NAMES = ("compaction", "memory_failure", "hotunplug", "syscall", "numa", "cma")

NR_MAX_MIGRATE_PAGES_RETRY = 10
NR_MAX_MIGRATE_ASYNC_RETRY = 3
NR_MAX_MIGRATE_SYNC_RETRY = NR_MAX_MIGRATE_PAGES_RETRY - NR_MAX_MIGRATE_ASYNC_RETRY
NR_MAX_BATCHED_MIGRATION = 512

SUCCESS = 0
EAGAIN = -11
EBUSY = -16
ENOMEM = -12

# struct migrate_pages_stats, plus what we model on top (time, whole large-folio moves).
MS_SUCCEEDED = 0          # base pages migrated
MS_FAILED_PAGES = 1       # base pages that finally failed
MS_THP_SUCCEEDED = 2      # PMD-size folios migrated whole
MS_THP_FAILED = 3
MS_THP_SPLIT = 4
MS_NR_SPLIT = 5           # large folios split: no target of their order, or partially mapped
MS_LARGE_SUCCEEDED = 6    # folios of order > 0 migrated whole
MS_LARGE_SUCCEEDED_PAGES = 7
MS_NR_FAILED = 8          # folios not migrated (a split folio counts once)
MS_TIME_NS = 9            # modelled time spent migrating
MS_WRITEBACK_WAITS = 10
MS_ATTEMPTS = 11
NR_MS = 12

# A stats array longer than NR_MS carries the tracepoint log after the counters (layout and
# writers in simcore.tracelog; pgdat.trace_log is the same array, so every site logs into one
# stream).
assert NR_MS == NR_COUNTERS


@jit
def folio_nr_pages(mem_map, pfn):
    return np.int64(1) << mem_map[pfn].order


@jit
def putback_folio(mem_map, pfn):
    """putback_movable_pages() for one folio: back on the LRU."""
    mem_map[pfn].prev = FOLIO_ON_LRU


@jit
def move_folio(pgdat, src, dst):
    """move_to_new_folio() + remove_migration_ptes() + the last folio_put() of the source: the
    folio's identity moves to dst (a detached free block of the same order) and the source
    pages go back to the buddy allocator."""
    mem_map = pgdat.mem_map
    order = np.int64(mem_map[src].order)
    handle = mem_map[src].next
    mem_map[dst].type = PAGE_HEAD
    mem_map[dst].order = order
    mem_map[dst].kind = mem_map[src].kind
    mem_map[dst].flags = mem_map[src].flags
    mem_map[dst].next = handle
    mem_map[dst].prev = FOLIO_ON_LRU
    pgdat.folio_pfn[handle] = dst
    mem_map[src].type = PAGE_TAIL
    mem_map[src].prev = -1
    mem_map[src].next = -1
    pcp.free_unref_folio(pgdat, src, order)     # pcp hook: folio_put() of the source


@jit
def migrate_folio(pgdat, src, mode, get_new_folio, put_new_folio, target, costs, stats):
    """migrate_folio_unmap() + migrate_folio_move() for one isolated folio.

    Returns SUCCESS, EAGAIN (retry later), EBUSY (give up) or ENOMEM (no target)."""
    mem_map = pgdat.mem_map
    order = np.int64(mem_map[src].order)
    stats[MS_ATTEMPTS] += 1
    dst = new_folio(pgdat, target, src, order, get_new_folio)
    if dst < 0:
        return ENOMEM
    flags = mem_map[src].flags
    if flags & PG_WRITEBACK:
        if mode != MIGRATE_SYNC:
            put_folio(pgdat, target, dst, order, put_new_folio)
            return EBUSY
        stats[MS_TIME_NS] += costs[COST_WRITEBACK_WAIT]     # folio_wait_writeback()
        stats[MS_WRITEBACK_WAITS] += 1
        mem_map[src].flags = flags & ~PG_WRITEBACK
        flags = mem_map[src].flags
    if (flags & PG_DIRTY) and (flags & AS_NO_MIGRATE_FOLIO):
        # fallback_migrate_folio(): only full sync writes the folio out, then retries.
        put_folio(pgdat, target, dst, order, put_new_folio)
        if mode != MIGRATE_SYNC:
            return EBUSY
        mem_map[src].flags = (flags & ~PG_DIRTY) | PG_WRITEBACK
        return EAGAIN
    # try_to_migrate() unmaps a PTE-mapped anon mTHP PTE by PTE: partially mapped on the way
    queued = deferred_split.migration_queues(pgdat, src)
    if flags & PG_PINNED:
        # Unmapped and mapped again: folio_migrate_mapping() finds references beyond the
        # expected count.
        if queued:
            deferred_split.deferred_split_folio(pgdat, src)
        stats[MS_TIME_NS] += costs[COST_FIXED]
        put_folio(pgdat, target, dst, order, put_new_folio)
        return EAGAIN
    if queued:
        deferred_split.deferred_split_folio(pgdat, src)
        # __folio_migrate_mapping() unqueues the source; migrate_folio_move() queues dst again
        deferred_split.folio_unqueue_deferred_split(pgdat, src)
    move_folio(pgdat, src, dst)
    if queued:
        deferred_split.deferred_split_folio(pgdat, dst)
    nr = np.int64(1) << order
    stats[MS_TIME_NS] += costs[COST_FIXED] + costs[COST_COPY_PAGE] * nr
    stats[MS_SUCCEEDED] += nr
    if order > 0:
        stats[MS_LARGE_SUCCEEDED] += 1
        stats[MS_LARGE_SUCCEEDED_PAGES] += nr
    if order == HPAGE_PMD_ORDER:
        stats[MS_THP_SUCCEEDED] += 1
    return SUCCESS


@jit
def try_split_folio(pgdat, src, n, split, split_cap, stats):
    """try_split_folio(): split the folio at src (n pages) to order 0 and queue its pieces on
    `split` (split[0] counts them; split_cap < 0 forbids splitting), counting nr_split and,
    for a PMD folio, thp_split. False where there is no room or the split fails as the
    kernel's does (page_alloc.folio_split())."""
    if split_cap < 0 or split[0] + n >= split_cap \
            or page_alloc.folio_split(pgdat, src, 0) != page_alloc.E_OK:
        return False
    for p in range(src, src + n):
        split[0] += 1
        split[split[0]] = p
    stats[MS_NR_SPLIT] += 1
    if n == np.int64(1) << HPAGE_PMD_ORDER:
        stats[MS_THP_SPLIT] += 1
    return True


@jit
def migrate_pages_batch(pgdat, folios, nr, split, split_cap, mode, reason, get_new_folio,
                        put_new_folio, target, costs, stats, nr_pass):
    """migrate_pages_batch(): up to nr_pass passes over folios[:nr], retrying EAGAIN.

    A folio of order > 1 on the deferred split queue and flagged partially mapped
    (simcore.deferred_split) is split to order 0 before it is tried, for every reason, and
    counted as below. A large folio that finds no target is split to order 0
    (try_split_folio(); not for NUMA balancing) and its pieces appended to `split` (split[0]
    counts them, room for split_cap - 1; split_cap < 0 forbids splitting); it counts as one
    failed folio but its pages are not failed pages. Where the split fails as the kernel's
    does (page_alloc.folio_split(): hugetlb, writeback, a dirty page-cache folio, pins), the
    folio's ENOMEM ends the batch: its pages and those queued for retry are failed pages, the
    untried folios go back as they are, and migrate_pages() returns ENOMEM (compact_zone() then
    ends the zone COMPACT_CONTENDED unless the scanners met).

    Returns (left, nr_failed, rc): folios[:left] are the ones not migrated (still isolated),
    nr_failed the failed folios, rc ENOMEM on abort else 0."""
    mem_map = pgdat.mem_map
    pending = folios[:nr].copy()
    npend = nr
    failed = np.empty(nr, dtype=np.int64)
    nfail = 0
    nr_failed = 0
    rc = 0
    for _ in range(nr_pass):
        if npend == 0:
            break
        nnext = 0
        i = 0
        while i < npend:
            src = pending[i]
            i += 1
            order = np.int64(mem_map[src].order)
            n = np.int64(1) << order
            if deferred_split.folio_test_partially_mapped(mem_map, src) \
                    and try_split_folio(pgdat, src, n, split, split_cap, stats):
                # On the deferred split queue and partially mapped: split first, the pieces
                # migrate as base pages (a failed split migrates the folio whole).
                if order == HPAGE_PMD_ORDER:
                    stats[MS_THP_FAILED] += 1
                nr_failed += 1
                continue
            r = migrate_folio(pgdat, src, mode, get_new_folio, put_new_folio, target, costs,
                              stats)
            if r == SUCCESS:
                continue
            if r == EAGAIN:
                pending[nnext] = src
                nnext += 1
                continue
            if r == ENOMEM and order > 0:
                if order == HPAGE_PMD_ORDER:
                    stats[MS_THP_FAILED] += 1
                if reason != MR_NUMA_MISPLACED \
                        and try_split_folio(pgdat, src, n, split, split_cap, stats):
                    nr_failed += 1
                    continue
            failed[nfail] = src
            nfail += 1
            nr_failed += 1
            stats[MS_FAILED_PAGES] += n
            if r == ENOMEM:
                # Memory is short: stop. Queued retries fail too; untried folios go back as is.
                for j in range(nnext):
                    failed[nfail] = pending[j]
                    nfail += 1
                    nr_failed += 1
                    stats[MS_FAILED_PAGES] += folio_nr_pages(mem_map, pending[j])
                for j in range(i, npend):
                    failed[nfail] = pending[j]
                    nfail += 1
                npend = 0
                rc = ENOMEM
                break
        if rc == ENOMEM:
            break
        npend = nnext
    for j in range(npend):          # still EAGAIN after the last pass
        failed[nfail] = pending[j]
        nfail += 1
        nr_failed += 1
        stats[MS_FAILED_PAGES] += folio_nr_pages(mem_map, pending[j])
    folios[:nfail] = failed[:nfail]
    return nfail, nr_failed, rc


@jit
def migrate_pages(pgdat, folios, nr, mode, reason, get_new_folio, put_new_folio, target, costs,
                  stats):
    """migrate_pages(): move folios[:nr] (isolated heads); put back every folio not moved.

    Async: one batch with NR_MAX_MIGRATE_PAGES_RETRY passes. Sync modes: an async batch with
    NR_MAX_MIGRATE_ASYNC_RETRY passes first, then each failure alone in `mode` with
    NR_MAX_MIGRATE_SYNC_RETRY passes. Pieces of large folios split for want of a target are
    retried once, async. Counts pgmigrate_* and thp_migration_* in base pages / PMD folios.

    Returns the number of folios not migrated, or ENOMEM when it gave up for want of targets."""
    mem_map = pgdat.mem_map
    before = stats[:NR_MS].copy()
    split = np.zeros(NR_MAX_BATCHED_MIGRATION * 64 + 1, dtype=np.int64)
    cap = split.shape[0]
    rc = 0
    nr_failed = 0
    if mode == MIGRATE_ASYNC:
        left, nr_failed, rc = migrate_pages_batch(pgdat, folios, nr, split, cap, mode, reason,
                                                  get_new_folio, put_new_folio, target, costs,
                                                  stats, NR_MAX_MIGRATE_PAGES_RETRY)
    else:
        astats = np.zeros(NR_MS, dtype=np.int64)
        left, afailed, rc = migrate_pages_batch(pgdat, folios, nr, split, cap, MIGRATE_ASYNC,
                                                reason, get_new_folio, put_new_folio, target,
                                                costs, astats, NR_MAX_MIGRATE_ASYNC_RETRY)
        # Failures of the async batch are retried below and not counted yet, except splits.
        for k in range(NR_MS):
            if k != MS_FAILED_PAGES and k != MS_NR_FAILED:
                stats[k] += astats[k]
        nr_failed = astats[MS_NR_SPLIT]
        if rc == ENOMEM:
            stats[MS_FAILED_PAGES] += astats[MS_FAILED_PAGES]
        else:
            one = np.empty(1, dtype=np.int64)
            still = 0
            for i in range(left):
                one[0] = folios[i]
                l1, f1, r1 = migrate_pages_batch(pgdat, one, 1, split, cap, mode, reason,
                                                 get_new_folio, put_new_folio, target, costs,
                                                 stats, NR_MAX_MIGRATE_SYNC_RETRY)
                nr_failed += f1
                if l1:
                    folios[still] = one[0]
                    still += 1
                if r1 == ENOMEM:
                    for j in range(i + 1, left):
                        folios[still] = folios[j]
                        still += 1
                    rc = ENOMEM
                    break
            left = still
    # Pieces of split folios: one async pass, failures not counted as folios again.
    nsplit = split[0]
    if nsplit:
        pieces = split[1:nsplit + 1].copy()
        no_split = np.zeros(1, dtype=np.int64)
        l2, f2, r2 = migrate_pages_batch(pgdat, pieces, nsplit, no_split, -1, MIGRATE_ASYNC,
                                         reason, get_new_folio, put_new_folio, target, costs,
                                         stats, 1)
        for i in range(l2):
            putback_folio(mem_map, pieces[i])
    for i in range(left):
        putback_folio(mem_map, folios[i])
    stats[MS_NR_FAILED] += nr_failed
    events = pgdat.events
    events[ev.PGMIGRATE_SUCCESS] += stats[MS_SUCCEEDED] - before[MS_SUCCEEDED]
    events[ev.PGMIGRATE_FAIL] += stats[MS_FAILED_PAGES] - before[MS_FAILED_PAGES]
    events[ev.THP_MIGRATION_SUCCESS] += stats[MS_THP_SUCCEEDED] - before[MS_THP_SUCCEEDED]
    events[ev.THP_MIGRATION_FAIL] += stats[MS_THP_FAILED] - before[MS_THP_FAILED]
    events[ev.THP_MIGRATION_SPLIT] += stats[MS_THP_SPLIT] - before[MS_THP_SPLIT]
    if stats.shape[0] > NR_MS:
        trace_migrate_pages(stats, stats[MS_SUCCEEDED] - before[MS_SUCCEEDED],
                            stats[MS_FAILED_PAGES] - before[MS_FAILED_PAGES],
                            stats[MS_THP_SUCCEEDED] - before[MS_THP_SUCCEEDED],
                            stats[MS_THP_FAILED] - before[MS_THP_FAILED],
                            stats[MS_THP_SPLIT] - before[MS_THP_SPLIT],
                            stats[MS_NR_SPLIT] - before[MS_NR_SPLIT], mode, reason)
    if rc == ENOMEM:
        return ENOMEM
    return nr_failed


# ---- targets ------------------------------------------------------------------------------

@jit
def alloc_migration_target(pgdat, cc, order):
    """alloc_migration_target(): a free block of `order` straight from the buddy allocator,
    movable, min watermark, left detached (no folio yet). -1 when none."""
    flags = page_alloc.ALLOC_WMARK_MIN
    if cc[freescan.CC_MIGRATETYPE] == MIGRATE_MOVABLE:
        flags |= page_alloc.ALLOC_CMA
    pfn, z = page_alloc.get_page_from_freelist(pgdat, order, MIGRATE_MOVABLE, flags,
                                               cc[freescan.CC_HIGHEST_ZONEIDX])
    if pfn >= 0:
        pgdat.events[ev.PGALLOC_FIRST + z] += np.int64(1) << order
    return pfn


@jit
def new_folio(pgdat, target, src, order, get_new_folio):
    """The get_new_folio callback: the caller's own, or the built-in target policy's."""
    if get_new_folio is None:
        cc = target[0]
        if cc[freescan.CC_TARGET_POLICY] == freescan.TARGET_BUDDY:
            return alloc_migration_target(pgdat, cc, order)
        return freescan.compaction_alloc(pgdat, target, src, order)
    return get_new_folio(pgdat, target, src, order)


@jit
def put_folio(pgdat, target, dst, order, put_new_folio):
    """The put_new_folio callback: an unused target goes back where it came from."""
    if put_new_folio is None:
        if target[0][freescan.CC_TARGET_POLICY] == freescan.TARGET_BUDDY:
            page_alloc.free_pages_range(pgdat, dst, order, False)
        else:
            freescan.compaction_free(pgdat, target, dst, order)
    else:
        put_new_folio(pgdat, target, dst, order)


@jit
def isolate_folio(mem_map, kind_is_migratable, pfn):
    """folio_isolate_lru() / isolate_movable_page(): take a folio for migration. False for
    kinds that cannot migrate and folios already isolated."""
    if mem_map[pfn].type != PAGE_HEAD or mem_map[pfn].prev == FOLIO_ISOLATED:
        return False
    if not kind_is_migratable[mem_map[pfn].kind]:
        return False
    mem_map[pfn].prev = FOLIO_ISOLATED
    return True


@jit
def migrate_folios_to_buddy(pgdat, pfns, mode, reason, use_cma, highest_zoneidx, costs, stats):
    """migrate_pages() of the given folio heads with buddy targets (the move_pages(2) and
    offlining path). Folios that cannot be isolated count as failed. Returns the number of
    folios not migrated."""
    mem_map = pgdat.mem_map
    folios = np.empty(pfns.shape[0], dtype=np.int64)
    n = 0
    not_isolated = 0
    for i in range(pfns.shape[0]):
        if isolate_folio(mem_map, pgdat.kind_is_migratable, pfns[i]):
            folios[n] = pfns[i]
            n += 1
        else:
            not_isolated += 1
    cc = np.zeros(freescan.NR_CC, dtype=np.int64)
    pool = np.zeros((NR_PAGE_ORDERS, 3), dtype=np.int64)
    cc[freescan.CC_TARGET_POLICY] = freescan.TARGET_BUDDY
    cc[freescan.CC_MIGRATETYPE] = MIGRATE_MOVABLE if use_cma else 0
    cc[freescan.CC_HIGHEST_ZONEIDX] = highest_zoneidx
    target = (cc, pool)
    done = 0
    failed = 0
    while done < n:
        end = done
        pages = 0
        while end < n and pages < NR_MAX_BATCHED_MIGRATION:
            pages += folio_nr_pages(mem_map, folios[end])
            end += 1
        batch = folios[done:end].copy()
        rc = migrate_pages(pgdat, batch, end - done, mode, reason, None, None, target, costs,
                           stats)
        if rc == ENOMEM:
            for j in range(end, n):
                putback_folio(mem_map, folios[j])
            failed += n - done
            break
        failed += rc
        done = end
    return failed + not_isolated


@jit
def entry_migrate_folios(node, pfns, mode, reason, costs, stats):
    """move_pages(2)-style migration of chosen folios to buddy targets anywhere."""
    return migrate_folios_to_buddy(node.arrays, pfns, mode, reason, True, 2, costs, stats)
