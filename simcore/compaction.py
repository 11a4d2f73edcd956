"""Memory compaction, after mm/compaction.c.

compact_zone() runs the two scanners: the migrate scanner walks up from the zone start isolating
movable folios in batches of COMPACT_CLUSTER_MAX, the free scanner walks down from the zone end
isolating free pages as migration targets, and migrate_pages() moves each batch. It stops when
the scanners meet (pageblock granularity) or __compact_finished() says the job is done.

The target allocator (compaction_alloc) and the scanners' treatment of large folios are what
compaction strategies change (see strategies.py): the built-in policies are chosen at run time
from cc[], a user strategy supplies its own compiled compaction_alloc.

The fast scanners (fast_isolate_freepages() in freescan.py, fast_find_migrateblock() here) and
compaction capture (capture_control) are modelled; all three date from 5.1 (the fast free
search took its current shape in 5.x), older than every kernel profile, so no profile or
strategy switches them.

Simplifications: no lock contention or signals, no
kswapd (so proactive compaction never waits for it), skip hints are cleared at the start of a
kcompactd or compact_memory run that follows a direct compaction which reached the end
(compact_blockskip_flush; the kernel clears them when kswapd goes to sleep), and at the start
of a direct compaction once the zone's deferral has run its longest course
(compaction_restarting()).
"""
import numba as nb
import numpy as np

from . import migrate, page_alloc, pcp, tracelog, vmstat
from . import vm_event as ev
from .costs import COST_SCAN_PFN
from .freescan import (
    CC_ALLOC_CONTIG,
    CC_DIRECT,
    CC_FAST_SEARCH_FAIL,
    CC_FAST_START_PFN,
    CC_FINISH_PAGEBLOCK,
    CC_FREE_PFN,
    CC_HIGHEST_ZONEIDX,
    CC_IGNORE_SKIP_HINT,
    CC_ISOLATE_LARGE,
    CC_ISOLATED_LARGE,
    CC_MIGRATE_PFN,
    CC_MIGRATETYPE,
    CC_MODE,
    CC_NR_FREEPAGES,
    CC_NR_ISOLATED,
    CC_NR_MIGRATEPAGES,
    CC_ORDER,
    CC_PROACTIVE,
    CC_PROACTIVE_LOW,
    CC_SEARCH_ORDER,
    CC_SPLIT_FREE,
    CC_TARGET_POLICY,
    CC_TOTAL_FREE_SCANNED,
    CC_TOTAL_MIGRATE_SCANNED,
    CC_UNEVICTABLE,
    CC_WHOLE_ZONE,
    CC_ZONE,
    COMPACT_CLUSTER_MAX,
    POOL_HEAD,
    POOL_LEN,
    freelist_scan_limit,
    isolation_suitable,
    move_freelist_tail,
    pool_pages,
    release_free_list,
    set_pageblock_skip,
)
from .mmzone import (
    AS_NO_MIGRATE_FOLIO,
    FOLIO_ISOLATED,
    FOLIO_ON_LRU,
    KIND_ANON,
    KIND_HUGETLB,
    MAX_PAGE_ORDER,
    MIGRATE_CMA,
    MIGRATE_MOVABLE,
    MIGRATE_TYPES,
    NR_PAGE_ORDERS,
    PAGE_ALLOC_COSTLY_ORDER,
    PAGE_BUDDY,
    PAGE_HEAD,
    PAGE_TAIL,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
    PB_MIGRATE_SKIP,
    PB_MIGRATETYPE_MASK,
    PG_DIRTY,
    PG_MLOCKED,
    PG_PINNED,
    PG_UNEVICTABLE,
    PG_WRITEBACK,
)
from .pgdat import (
    FA_COUNT,
    FA_HEAD,
    N_CAPTURE_ORDER,
    N_CAPTURE_PFN,
    N_CAPTURE_WHERE,
    Z_COMPACT_BLOCKSKIP_FLUSH,
    Z_COMPACT_CACHED_FREE,
    Z_COMPACT_CACHED_MIGRATE_ASYNC,
    Z_COMPACT_CACHED_MIGRATE_SYNC,
    Z_COMPACT_CONSIDERED,
    Z_COMPACT_DEFER_SHIFT,
    Z_COMPACT_ORDER_FAILED,
    Z_END,
    Z_FREE,
    Z_LOWMEM_RESERVE,
    Z_START,
    Z_WMARK_LOW,
    Z_WMARK_MIN,
)
from .tracelog import TP_ISOLATE_MIGRATEPAGES, trace_isolate, tracing

jit = nb.njit(cache=True, nogil=True)

COMPACT_MAX_DEFER_SHIFT = 6
EXTFRAG_THRESHOLD = 500          # vm.extfrag_threshold default

# enum compact_result (the order matters: comparisons use it)
COMPACT_NOT_SUITABLE_ZONE = 0
COMPACT_SKIPPED = 1
COMPACT_DEFERRED = 2
COMPACT_NO_SUITABLE_PAGE = 3
COMPACT_CONTINUE = 4
COMPACT_COMPLETE = 5
COMPACT_PARTIAL_SKIPPED = 6
COMPACT_CONTENDED = 7
COMPACT_SUCCESS = 8
RESULT_NAMES = ("not_suitable_zone", "skipped", "deferred", "no_suitable_page", "continue",
                "complete", "partial_skipped", "contended", "success")

# ---- the migrate scanner -------------------------------------------------------------------

@jit
def skip_isolation_on_order(order, target_order):
    """skip_isolation_on_order(): leave folios at or above the target order (or a pageblock)."""
    if target_order >= 0 and order >= target_order:
        return True
    return order >= PAGEBLOCK_ORDER


@jit
def suitable_migration_source(pgdat, cc, pfn):
    """suitable_migration_source(): async direct compaction only takes blocks of its type."""
    if cc[CC_MODE] != migrate.MIGRATE_ASYNC or not cc[CC_DIRECT]:
        return True
    mt = pgdat.pageblock_flags[pfn >> PAGEBLOCK_ORDER] & PB_MIGRATETYPE_MASK
    if cc[CC_MIGRATETYPE] == MIGRATE_MOVABLE:
        return mt == MIGRATE_MOVABLE or mt == MIGRATE_CMA
    return mt == cc[CC_MIGRATETYPE]


@jit
def isolate_migratepages_block(pgdat, cc, migratepages, low_pfn, end_pfn):
    """isolate_migratepages_block(): isolate movable folios from [low_pfn, end_pfn) until
    COMPACT_CLUSTER_MAX are taken. Returns (next pfn, folios isolated)."""
    mem_map = pgdat.mem_map
    async_mode = cc[CC_MODE] == migrate.MIGRATE_ASYNC
    # In async direct compaction one failure abandons the whole cc->order-aligned chunk.
    skip_on_failure = cc[CC_DIRECT] and async_mode and cc[CC_ORDER] > 0
    chunk = np.int64(1) << max(cc[CC_ORDER], 0)
    nr = 0
    scanned = 0
    taken_before = cc[CC_NR_ISOLATED]
    pfn = low_pfn
    # Inside a free MAX_PAGE_ORDER block: nothing to isolate up to end_pfn. Any other tail
    # (of a buddy merged after the last batch migrated out) is stepped over page by page.
    top = pfn & ~((1 << MAX_PAGE_ORDER) - 1)
    if mem_map[pfn].type == PAGE_TAIL and pfn != top and mem_map[top].type == PAGE_BUDDY \
            and mem_map[top].order == MAX_PAGE_ORDER:
        cc[CC_TOTAL_MIGRATE_SCANNED] += end_pfn - low_pfn
        if tracing(pgdat.trace_log):
            trace_isolate(pgdat.trace_log, TP_ISOLATE_MIGRATEPAGES, low_pfn, end_pfn,
                          end_pfn - low_pfn, 0)
        return end_pfn, 0
    while pfn < end_pfn:
        t = mem_map[pfn].type
        if t == PAGE_TAIL:            # an isolated free page or a migration target: step over
            scanned += 1
            pfn += 1
            continue
        order = np.int64(mem_map[pfn].order)
        n = np.int64(1) << order
        if t != PAGE_HEAD:            # free, or offline memory
            scanned += n
            pfn += n
            continue
        kind = mem_map[pfn].kind
        flags = mem_map[pfn].flags
        ok = True
        if order > 0 and not cc[CC_ALLOC_CONTIG]:
            ok = cc[CC_ISOLATE_LARGE] != 0 and not skip_isolation_on_order(order, cc[CC_ORDER])
        if kind == KIND_HUGETLB:
            ok = ok and cc[CC_ALLOC_CONTIG] != 0
        elif not pgdat.kind_is_lru[kind]:
            ok = False                # slab, page tables, kernel memory: not movable
        if mem_map[pfn].prev == FOLIO_ISOLATED:
            ok = False
        if kind == KIND_ANON and (flags & PG_PINNED):
            ok = False                # references beyond its mappings: never isolated
        if (flags & (PG_MLOCKED | PG_UNEVICTABLE)) and not cc[CC_UNEVICTABLE] \
                and not cc[CC_ALLOC_CONTIG]:
            ok = False                # on the unevictable LRU: only with ISOLATE_UNEVICTABLE
        if async_mode and ((flags & PG_WRITEBACK) or
                           ((flags & PG_DIRTY) and (flags & AS_NO_MIGRATE_FOLIO))):
            ok = False
        scanned += n
        if ok:
            mem_map[pfn].prev = FOLIO_ISOLATED
            migratepages[nr] = pfn
            nr += 1
            cc[CC_NR_MIGRATEPAGES] += n
            cc[CC_NR_ISOLATED] += n
            if order > 0:
                cc[CC_ISOLATED_LARGE] += 1
            pfn += n
            if nr == COMPACT_CLUSTER_MAX:
                break
            continue
        if skip_on_failure:
            chunk_start = pfn & ~(chunk - 1)
            while nr > 0 and migratepages[nr - 1] >= chunk_start:
                nr -= 1
                back = migratepages[nr]
                mem_map[back].prev = FOLIO_ON_LRU
                nb_pages = np.int64(1) << mem_map[back].order
                cc[CC_NR_MIGRATEPAGES] -= nb_pages
                cc[CC_NR_ISOLATED] -= nb_pages
                if mem_map[back].order > 0:
                    cc[CC_ISOLATED_LARGE] -= 1
            next_chunk = chunk_start + chunk
            if pfn + n < next_chunk:
                scanned += next_chunk - (pfn + n)
            pfn = max(pfn + n, next_chunk)
        else:
            pfn += n
    cc[CC_TOTAL_MIGRATE_SCANNED] += scanned
    if tracing(pgdat.trace_log):
        trace_isolate(pgdat.trace_log, TP_ISOLATE_MIGRATEPAGES, low_pfn, pfn, scanned,
                      cc[CC_NR_ISOLATED] - taken_before)
    return pfn, nr


@jit
def scanners_met(cc):
    """compact_scanners_met(): the free scanner's block is at or below the migrate scanner's."""
    return (cc[CC_FREE_PFN] >> PAGEBLOCK_ORDER) <= (cc[CC_MIGRATE_PFN] >> PAGEBLOCK_ORDER)


@jit
def update_fast_start_pfn(cc, pfn):
    """update_fast_start_pfn(): remember the lowest PFN a fast migrate search jumped to."""
    if cc[CC_FAST_START_PFN] == -1:
        return
    if cc[CC_FAST_START_PFN] == 0 or pfn < cc[CC_FAST_START_PFN]:
        cc[CC_FAST_START_PFN] = pfn


@jit
def reinit_migrate_pfn(cc):
    """reinit_migrate_pfn(): after a failed fast search, the linear scan restarts once from the
    lowest block an earlier fast search found (it had free pages)."""
    if cc[CC_FAST_START_PFN] == 0 or cc[CC_FAST_START_PFN] == -1:
        return cc[CC_MIGRATE_PFN]
    cc[CC_MIGRATE_PFN] = cc[CC_FAST_START_PFN]
    cc[CC_FAST_START_PFN] = -1
    return cc[CC_MIGRATE_PFN]


@jit
def fast_find_migrateblock(pgdat, cc):
    """fast_find_migrateblock(): for costly orders (above PAGE_ALLOC_COSTLY_ORDER), when the
    migrate scanner is at a pageblock start, look through the MOVABLE free lists from one below
    cc->order down to order 3 (at most freelist_scan_limit() entries) for a free page below the
    first half of the span between the scanners (an eighth once the scanner has moved off the
    zone start), in a block not marked skipped, and start migrating from that block: it already
    has free pages, so fewer pages need moving to free it. Not with skip hints ignored, not
    while a pageblock must be finished, not for direct non-MOVABLE requests. Since 5.1: all our
    profiles have it, so it is no strategy knob. Returns the PFN to scan from."""
    pfn = cc[CC_MIGRATE_PFN]
    z = cc[CC_ZONE]
    zone_start = pgdat.zones[z, Z_START]
    if cc[CC_IGNORE_SKIP_HINT] or cc[CC_FINISH_PAGEBLOCK]:
        return pfn
    if pfn != zone_start and pfn & (PAGEBLOCK_NR_PAGES - 1):
        return pfn                      # continuing a block after a full batch
    if cc[CC_ORDER] <= PAGE_ALLOC_COSTLY_ORDER:
        return pfn
    if cc[CC_DIRECT] and cc[CC_MIGRATETYPE] != MIGRATE_MOVABLE:
        return pfn
    mem_map = pgdat.mem_map
    limit = freelist_scan_limit(cc)
    distance = (cc[CC_FREE_PFN] - pfn) >> 1
    if pfn != zone_start:
        distance >>= 2
    high_pfn = (pfn + distance) & ~(PAGEBLOCK_NR_PAGES - 1)
    nr_scanned = 0
    found = False
    order = cc[CC_ORDER] - 1
    while order >= PAGE_ALLOC_COSTLY_ORDER and not found and nr_scanned < limit:
        free = pgdat.free_area[z, order, MIGRATE_MOVABLE, FA_HEAD]
        while free >= 0:
            nr_scanned += 1
            if nr_scanned > limit:
                move_freelist_tail(pgdat, z, order, MIGRATE_MOVABLE, free)
                break
            if free < high_pfn:
                if pgdat.pageblock_flags[free >> PAGEBLOCK_ORDER] & PB_MIGRATE_SKIP:
                    free = mem_map[free].next
                    continue
                move_freelist_tail(pgdat, z, order, MIGRATE_MOVABLE, free)
                update_fast_start_pfn(cc, free)
                pfn = max(free & ~(PAGEBLOCK_NR_PAGES - 1), zone_start)
                cc[CC_FAST_SEARCH_FAIL] = 0
                found = True
                break
            free = mem_map[free].next
        order -= 1
    cc[CC_TOTAL_MIGRATE_SCANNED] += nr_scanned
    if not found:
        cc[CC_FAST_SEARCH_FAIL] += 1
        pfn = reinit_migrate_pfn(cc)
    return pfn


@jit
def isolate_migratepages(pgdat, cc, migratepages):
    """isolate_migratepages(): from where fast_find_migrateblock() says (cc->migrate_pfn unless
    it found a block with free pages), pageblocks wholly below the free scanner until a batch is
    isolated. Returns the number of folios isolated."""
    z = cc[CC_ZONE]
    zone_end = pgdat.zones[z, Z_END]
    low_pfn = fast_find_migrateblock(pgdat, cc)
    # the fast search already checked the skip hint of the block it chose
    fast_block = low_pfn != cc[CC_MIGRATE_PFN] and cc[CC_FAST_SEARCH_FAIL] == 0
    while True:
        block_start = low_pfn & ~(PAGEBLOCK_NR_PAGES - 1)
        block_end = min(block_start + PAGEBLOCK_NR_PAGES, zone_end)
        if block_end > cc[CC_FREE_PFN] or low_pfn >= zone_end:
            break
        if (not fast_block and not isolation_suitable(pgdat, cc, block_start)) or \
                not suitable_migration_source(pgdat, cc, block_start):
            fast_block = False
            low_pfn = block_end
            cc[CC_MIGRATE_PFN] = low_pfn
            update_cached_migrate(pgdat, cc, low_pfn)
            continue
        chosen = fast_block
        fast_block = False
        next_pfn, nr = isolate_migratepages_block(pgdat, cc, migratepages, low_pfn, block_end)
        # test_and_set_skip() (5.1): the kernel marks every block it starts isolating from as
        # skipped. We do so only for blocks the fast search chose, so that it never sends the
        # scanner back to one (it would retry the same failing folios forever): with no kswapd
        # to clear skip hints, marking every block starves later direct compactions.
        if (chosen or nr == 0) and low_pfn == block_start and not cc[CC_IGNORE_SKIP_HINT]:
            set_pageblock_skip(pgdat, block_start)
        low_pfn = next_pfn
        cc[CC_MIGRATE_PFN] = low_pfn
        update_cached_migrate(pgdat, cc, low_pfn)
        if nr:
            return nr
    cc[CC_MIGRATE_PFN] = low_pfn
    return 0


@jit
def update_cached_migrate(pgdat, cc, pfn):
    if cc[CC_IGNORE_SKIP_HINT]:
        return
    z = cc[CC_ZONE]
    if pfn > pgdat.zones[z, Z_COMPACT_CACHED_MIGRATE_ASYNC]:
        pgdat.zones[z, Z_COMPACT_CACHED_MIGRATE_ASYNC] = pfn
    if cc[CC_MODE] != migrate.MIGRATE_ASYNC and pfn > pgdat.zones[z, Z_COMPACT_CACHED_MIGRATE_SYNC]:
        pgdat.zones[z, Z_COMPACT_CACHED_MIGRATE_SYNC] = pfn


# ---- finishing, suitability, deferral -----------------------------------------------------

@jit
def zone_nr_free(pgdat, z):
    nr = np.zeros(NR_PAGE_ORDERS, dtype=np.int64)
    for o in range(NR_PAGE_ORDERS):
        for mt in range(pgdat.free_area.shape[2]):
            nr[o] += pgdat.free_area[z, o, mt, FA_COUNT]
    return nr


_contig_page_info = jit(vmstat.contig_page_info)
_fragindex_of = jit(vmstat.fragindex_of)
_unusable_share = jit(vmstat.unusable_share)


@jit
def fragmentation_index(pgdat, z, order):
    """__fragmentation_index() x1000 for zone z (the formula: vmstat.fragindex_of)."""
    free_pages, blocks, suitable = _contig_page_info(zone_nr_free(pgdat, z), order)
    return _fragindex_of(free_pages, blocks, suitable, order)


@jit
def fragmentation_score_zone(pgdat, z):
    """fragmentation_score_zone(): extfrag_for_order(zone, HPAGE_PMD_ORDER), percent."""
    free_pages, _, suitable = _contig_page_info(zone_nr_free(pgdat, z), PAGEBLOCK_ORDER)
    if free_pages == 0:
        return 0
    return _unusable_share(free_pages, suitable, PAGEBLOCK_ORDER, 100)


@jit
def fragmentation_score_node(pgdat):
    """fragmentation_score_node(): zone scores weighted by zone size over node size."""
    zones = pgdat.zones
    node_pages = 0
    for z in range(zones.shape[0]):
        node_pages += zones[z, Z_END] - zones[z, Z_START]
    score = 0
    for z in range(zones.shape[0]):
        spanned = zones[z, Z_END] - zones[z, Z_START]
        if spanned:
            score += spanned * fragmentation_score_zone(pgdat, z) // (node_pages + 1)
    return score


@jit
def compact_finished(pgdat, cc):
    """__compact_finished() + compact_finished(): COMPACT_CONTINUE or why to stop."""
    z = cc[CC_ZONE]
    if scanners_met(cc):
        reset_cached_positions(pgdat, z)
        if cc[CC_DIRECT]:
            pgdat.zones[z, Z_COMPACT_BLOCKSKIP_FLUSH] = 1
        return COMPACT_COMPLETE if cc[CC_WHOLE_ZONE] else COMPACT_PARTIAL_SKIPPED
    if cc[CC_PROACTIVE]:
        if fragmentation_score_zone(pgdat, z) > cc[CC_PROACTIVE_LOW]:
            return COMPACT_CONTINUE
        return COMPACT_SUCCESS
    order = cc[CC_ORDER]
    if order < 0:
        return COMPACT_CONTINUE
    if cc[CC_MIGRATE_PFN] & (PAGEBLOCK_NR_PAGES - 1):
        return COMPACT_CONTINUE
    mt = cc[CC_MIGRATETYPE]
    for o in range(order, NR_PAGE_ORDERS):
        if pgdat.free_area[z, o, mt, FA_COUNT] > 0:
            return COMPACT_SUCCESS
        if mt == MIGRATE_MOVABLE and pgdat.free_area[z, o, MIGRATE_CMA, FA_COUNT] > 0:
            return COMPACT_SUCCESS
        if page_alloc.find_suitable_fallback(pgdat, z, o, mt, True) >= 0:
            return COMPACT_SUCCESS
    return COMPACT_CONTINUE


@jit
def reset_cached_positions(pgdat, z):
    zones = pgdat.zones
    zones[z, Z_COMPACT_CACHED_MIGRATE_ASYNC] = zones[z, Z_START]
    zones[z, Z_COMPACT_CACHED_MIGRATE_SYNC] = zones[z, Z_START]
    zones[z, Z_COMPACT_CACHED_FREE] = (zones[z, Z_END] - 1) & ~(PAGEBLOCK_NR_PAGES - 1)


@jit
def reset_isolation_suitable(pgdat, z):
    """__reset_isolation_suitable(): clear the zone's skip hints."""
    zones = pgdat.zones
    for pb in range(zones[z, Z_START] >> PAGEBLOCK_ORDER,
                    (zones[z, Z_END] + PAGEBLOCK_NR_PAGES - 1) >> PAGEBLOCK_ORDER):
        pgdat.pageblock_flags[pb] &= ~PB_MIGRATE_SKIP
    zones[z, Z_COMPACT_BLOCKSKIP_FLUSH] = 0


@jit
def compaction_suitable(pgdat, z, order, highest_zoneidx, extfrag_threshold):
    """compaction_suitable(): enough free memory to compact with (the order-0 watermark plus
    compact_gap()), and for costly orders a fragmentation index above extfrag_threshold (a low
    index means the allocation fails for lack of memory, not fragmentation)."""
    zones = pgdat.zones
    mark = zones[z, Z_WMARK_LOW] if order > PAGE_ALLOC_COSTLY_ORDER else zones[z, Z_WMARK_MIN]
    mark += np.int64(2) << order
    if zones[z, Z_FREE] <= mark + zones[z, Z_LOWMEM_RESERVE + highest_zoneidx]:
        return False
    if order > PAGE_ALLOC_COSTLY_ORDER:
        fragindex = fragmentation_index(pgdat, z, order)
        if 0 <= fragindex <= extfrag_threshold:
            return False
    return True


@jit
def compaction_deferred(pgdat, z, order):
    zones = pgdat.zones
    if order < zones[z, Z_COMPACT_ORDER_FAILED]:
        return False
    limit = np.int64(1) << zones[z, Z_COMPACT_DEFER_SHIFT]
    zones[z, Z_COMPACT_CONSIDERED] += 1
    if zones[z, Z_COMPACT_CONSIDERED] >= limit:
        zones[z, Z_COMPACT_CONSIDERED] = limit
        return False
    return True


@jit
def compaction_restarting(pgdat, z, order):
    """compaction_restarting(): compaction of `order` is retried after the longest deferral
    (defer shift COMPACT_MAX_DEFER_SHIFT, every deferred attempt considered); compact_zone()
    then clears the zone's skip hints before it starts."""
    zones = pgdat.zones
    if order < zones[z, Z_COMPACT_ORDER_FAILED]:
        return False
    return zones[z, Z_COMPACT_DEFER_SHIFT] == COMPACT_MAX_DEFER_SHIFT and \
        zones[z, Z_COMPACT_CONSIDERED] >= (np.int64(1) << COMPACT_MAX_DEFER_SHIFT)


@jit
def defer_compaction(pgdat, z, order):
    zones = pgdat.zones
    zones[z, Z_COMPACT_CONSIDERED] = 0
    zones[z, Z_COMPACT_DEFER_SHIFT] = min(zones[z, Z_COMPACT_DEFER_SHIFT] + 1,
                                          COMPACT_MAX_DEFER_SHIFT)
    if order < zones[z, Z_COMPACT_ORDER_FAILED]:
        zones[z, Z_COMPACT_ORDER_FAILED] = order


@jit
def compaction_defer_reset(pgdat, z, order, alloc_success):
    zones = pgdat.zones
    if alloc_success:
        zones[z, Z_COMPACT_CONSIDERED] = 0
        zones[z, Z_COMPACT_DEFER_SHIFT] = 0
    if order >= zones[z, Z_COMPACT_ORDER_FAILED]:
        zones[z, Z_COMPACT_ORDER_FAILED] = order + 1


# ---- compact_zone --------------------------------------------------------------------------

@jit
def compact_zone(pgdat, cc, pool, migratepages, get_new_folio, put_new_folio, costs, stats):
    """compact_zone(): run both scanners over cc's zone until compact_finished() stops them.

    The caller fills cc (order, mode, zone, flags, strategy knobs). Counts
    compact_migrate_scanned, compact_free_scanned and compact_isolated (or the kcompactd
    variants for proactive runs). Returns the compact_result."""
    z = cc[CC_ZONE]
    zones = pgdat.zones
    start = zones[z, Z_START]
    end = zones[z, Z_END]
    # Skip hints from a run that reached the end are cleared for kcompactd and compact_memory
    # (standing in for kswapd going to sleep), and for direct compaction once the zone's
    # deferral has run its longest course (compaction_restarting()).
    if zones[z, Z_COMPACT_BLOCKSKIP_FLUSH] and (
            not cc[CC_DIRECT] or compaction_restarting(pgdat, z, cc[CC_ORDER])):
        reset_isolation_suitable(pgdat, z)
    sync = cc[CC_MODE] != migrate.MIGRATE_ASYNC
    if cc[CC_WHOLE_ZONE]:
        cc[CC_MIGRATE_PFN] = start
        cc[CC_FREE_PFN] = (end - 1) & ~(PAGEBLOCK_NR_PAGES - 1)
    else:
        cc[CC_MIGRATE_PFN] = zones[z, Z_COMPACT_CACHED_MIGRATE_SYNC if sync
                                   else Z_COMPACT_CACHED_MIGRATE_ASYNC]
        cc[CC_FREE_PFN] = zones[z, Z_COMPACT_CACHED_FREE]
        if cc[CC_FREE_PFN] < start or cc[CC_FREE_PFN] >= end:
            cc[CC_FREE_PFN] = (end - 1) & ~(PAGEBLOCK_NR_PAGES - 1)
            zones[z, Z_COMPACT_CACHED_FREE] = cc[CC_FREE_PFN]
        if cc[CC_MIGRATE_PFN] < start or cc[CC_MIGRATE_PFN] >= end:
            cc[CC_MIGRATE_PFN] = start
            zones[z, Z_COMPACT_CACHED_MIGRATE_ASYNC] = start
            zones[z, Z_COMPACT_CACHED_MIGRATE_SYNC] = start
        if cc[CC_MIGRATE_PFN] == start:
            cc[CC_WHOLE_ZONE] = 1
    traced = stats.shape[0] > migrate.NR_MS
    if traced:
        tracelog.trace_compaction(stats, tracelog.TP_COMPACTION_BEGIN, start,
                                  cc[CC_MIGRATE_PFN], cc[CC_FREE_PFN], end, sync, 0)
    target = (cc, pool)
    ret = COMPACT_CONTINUE
    last_migrated_pfn = -1
    while True:
        ret = compact_finished(pgdat, cc)
        if ret != COMPACT_CONTINUE:
            break
        nr = isolate_migratepages(pgdat, cc, migratepages)
        if nr > 0:
            last_migrated_pfn = max(start, (cc[CC_MIGRATE_PFN] - 1) & ~(PAGEBLOCK_NR_PAGES - 1))
            batch = migratepages[:nr].copy()
            err = migrate.migrate_pages(pgdat, batch, nr, cc[CC_MODE], migrate.MR_COMPACTION,
                                        get_new_folio, put_new_folio, target, costs, stats)
            cc[CC_NR_MIGRATEPAGES] = 0
            if err == migrate.ENOMEM and not scanners_met(cc):
                ret = COMPACT_CONTENDED
                break
        # pcp hook (check_drain): once the migrate scanner has left the cc->order-aligned
        # block it migrated from, the sources this CPU freed onto its pcp lists are flushed
        # so that they merge and compact_finished() sees them (lru_add_drain_cpu_zone()).
        if cc[CC_ORDER] > 0 and last_migrated_pfn >= 0:
            block_start = cc[CC_MIGRATE_PFN] & ~((np.int64(1) << cc[CC_ORDER]) - 1)
            if last_migrated_pfn < block_start:
                pcp.drain_local_pages(pgdat, z)
                last_migrated_pfn = -1
        if nr == 0:
            continue
        if pgdat.node[N_CAPTURE_PFN] != 0:
            ret = COMPACT_SUCCESS           # a block of our order was captured: stop
            break
    if cc[CC_NR_FREEPAGES] > 0 or pool_pages(pool) > 0:
        high = release_free_list(pgdat, pool)
        cc[CC_NR_FREEPAGES] = 0
        if not cc[CC_WHOLE_ZONE] and high > zones[z, Z_COMPACT_CACHED_FREE]:
            zones[z, Z_COMPACT_CACHED_FREE] = high & ~(PAGEBLOCK_NR_PAGES - 1)
    events = pgdat.events
    if cc[CC_PROACTIVE]:
        events[ev.COMPACT_DAEMON_MIGRATE_SCANNED] += cc[CC_TOTAL_MIGRATE_SCANNED]
        events[ev.COMPACT_DAEMON_FREE_SCANNED] += cc[CC_TOTAL_FREE_SCANNED]
    else:
        events[ev.COMPACT_MIGRATE_SCANNED] += cc[CC_TOTAL_MIGRATE_SCANNED]
        events[ev.COMPACT_FREE_SCANNED] += cc[CC_TOTAL_FREE_SCANNED]
    events[ev.COMPACT_ISOLATED] += cc[CC_NR_ISOLATED]
    stats[migrate.MS_TIME_NS] += costs[COST_SCAN_PFN] * (cc[CC_TOTAL_MIGRATE_SCANNED] +
                                                         cc[CC_TOTAL_FREE_SCANNED])
    if traced:
        tracelog.trace_compaction(stats, tracelog.TP_COMPACTION_END, start, cc[CC_MIGRATE_PFN],
                                  cc[CC_FREE_PFN], end, sync, ret)
    return ret


# ---- direct compaction, compact_memory and kcompactd ---------------------------------------

# enum compact_priority
COMPACT_PRIO_SYNC_FULL = 0     # MIN_COMPACT_PRIORITY: whole zone, skip hints ignored
COMPACT_PRIO_SYNC_LIGHT = 1
COMPACT_PRIO_ASYNC = 2

# Compaction settings and strategy knobs, as an int64 array.
K_ISOLATE_LARGE = 0
K_SPLIT_FREE = 1
K_TARGET_POLICY = 2
K_EXTFRAG_THRESHOLD = 3
K_PROACTIVENESS = 4
K_UNEVICTABLE_ALLOWED = 5   # vm.compact_unevictable_allowed (1 unless PREEMPT_RT)
NR_KNOBS = 6


@jit
def prepare_cc(cc, pool, knobs, z, order, mode):
    cc[:] = 0
    pool[:, POOL_HEAD] = 0
    pool[:, POOL_LEN] = 0
    cc[CC_ZONE] = z
    cc[CC_ORDER] = order
    cc[CC_MODE] = mode
    cc[CC_ISOLATE_LARGE] = knobs[K_ISOLATE_LARGE]
    cc[CC_SPLIT_FREE] = knobs[K_SPLIT_FREE]
    cc[CC_TARGET_POLICY] = knobs[K_TARGET_POLICY]
    cc[CC_UNEVICTABLE] = knobs[K_UNEVICTABLE_ALLOWED]
    cc[CC_SEARCH_ORDER] = order


@jit
def compact_zone_order(pgdat, z, order, mt, prio, highest_zoneidx, cc, pool, migratepages,
                       knobs, get_new_folio, put_new_folio, costs, stats):
    """compact_zone_order() + compaction_suit_allocation_order(): nothing to do if the
    allocation would already succeed, skipped if compaction_suitable() says no. Otherwise
    compact_zone() with a capture_control armed (capture since 5.1: all our profiles have it,
    so it is no strategy knob): a captured block is left in node[N_CAPTURE_PFN] for
    __alloc_pages_direct_compact() and makes the result COMPACT_SUCCESS."""
    flags = page_alloc.ALLOC_WMARK_MIN | (page_alloc.ALLOC_CMA if mt == MIGRATE_MOVABLE else 0)
    if page_alloc.zone_watermark_ok(pgdat, z, order, highest_zoneidx, flags):
        return COMPACT_SUCCESS
    if not compaction_suitable(pgdat, z, order, highest_zoneidx, knobs[K_EXTFRAG_THRESHOLD]):
        return COMPACT_SKIPPED
    prepare_cc(cc, pool, knobs, z, order,
               migrate.MIGRATE_ASYNC if prio == COMPACT_PRIO_ASYNC else migrate.MIGRATE_SYNC_LIGHT)
    cc[CC_DIRECT] = 1
    cc[CC_MIGRATETYPE] = mt
    cc[CC_HIGHEST_ZONEIDX] = highest_zoneidx
    cc[CC_WHOLE_ZONE] = 1 if prio == COMPACT_PRIO_SYNC_FULL else 0
    cc[CC_IGNORE_SKIP_HINT] = 1 if prio == COMPACT_PRIO_SYNC_FULL else 0
    # capture_control: what compaction frees at our order may go straight to this allocation
    node = pgdat.node
    node[N_CAPTURE_PFN] = 0
    node[N_CAPTURE_WHERE] = z * MIGRATE_TYPES + mt
    node[N_CAPTURE_ORDER] = order + 1
    ret = compact_zone(pgdat, cc, pool, migratepages, get_new_folio, put_new_folio, costs, stats)
    node[N_CAPTURE_ORDER] = 0
    node[N_CAPTURE_WHERE] = 0
    if node[N_CAPTURE_PFN] != 0:
        ret = COMPACT_SUCCESS
    return ret


@jit
def try_to_compact_pages(pgdat, order, mt, prio, cc, pool, migratepages, knobs, get_new_folio,
                         put_new_folio, costs, stats):
    """try_to_compact_pages(): compact each zone of the zonelist until one succeeds; defer
    zones where a synchronous attempt went through the whole zone without success."""
    highest = 2 if mt == MIGRATE_MOVABLE else 1
    rc = COMPACT_SKIPPED
    zones = pgdat.zones
    for z in range(highest, -1, -1):
        if zones[z, Z_END] <= zones[z, Z_START]:
            continue
        if prio > COMPACT_PRIO_SYNC_FULL and compaction_deferred(pgdat, z, order):
            rc = max(rc, COMPACT_DEFERRED)
            continue
        status = compact_zone_order(pgdat, z, order, mt, prio, highest, cc, pool, migratepages,
                                    knobs, get_new_folio, put_new_folio, costs, stats)
        rc = max(rc, status)
        if status == COMPACT_SUCCESS:
            compaction_defer_reset(pgdat, z, order, False)
            break
        if prio != COMPACT_PRIO_ASYNC and (status == COMPACT_COMPLETE or
                                          status == COMPACT_PARTIAL_SKIPPED):
            defer_compaction(pgdat, z, order)
    return rc


@jit
def alloc_pages_direct_compact(pgdat, order, mt, kind, flags, prio, cc, pool, migratepages,
                               knobs, get_new_folio, put_new_folio, costs, stats):
    """__alloc_pages_direct_compact(): compact, then take the captured block or try the free
    lists again (a captured block, like the kernel's, is not counted in pgalloc). Counts
    compact_stall for every attempt not skipped, then compact_success or compact_fail.
    Returns the new folio's PFN or -1."""
    rc = try_to_compact_pages(pgdat, order, mt, prio, cc, pool, migratepages, knobs,
                              get_new_folio, put_new_folio, costs, stats)
    captured = pgdat.node[N_CAPTURE_PFN] - 1
    pgdat.node[N_CAPTURE_PFN] = 0
    if rc == COMPACT_SKIPPED:
        return -1
    pgdat.events[ev.COMPACT_STALL] += 1
    if captured >= 0:                   # prep_new_page() on the captured block
        page_alloc.prep_new_folio(pgdat, captured, order, kind, flags)
        pfn = captured
    else:
        pfn = page_alloc.alloc_folio(pgdat, order, mt, kind, flags, page_alloc.ALLOC_WMARK_MIN)
    if pfn >= 0:
        z = page_alloc.page_zone(pgdat, pfn)
        pgdat.zones[z, Z_COMPACT_BLOCKSKIP_FLUSH] = 0
        compaction_defer_reset(pgdat, z, order, True)
        pgdat.events[ev.COMPACT_SUCCESS] += 1
        return pfn
    pgdat.events[ev.COMPACT_FAIL] += 1
    return -1


@jit
def alloc_folio_slowpath(pgdat, order, mt, kind, flags, cc, pool, migratepages, knobs,
                         get_new_folio, put_new_folio, costs, stats):
    """The part of __alloc_pages_slowpath() we model, for callers whose fast path
    (page_alloc.alloc_folio) already failed: direct compaction at COMPACT_PRIO_ASYNC, then at
    COMPACT_PRIO_SYNC_LIGHT (no reclaim, no OOM). Only orders above 0 compact."""
    if order == 0:
        return -1
    for prio in (COMPACT_PRIO_ASYNC, COMPACT_PRIO_SYNC_LIGHT):
        pfn = alloc_pages_direct_compact(pgdat, order, mt, kind, flags, prio, cc, pool,
                                         migratepages, knobs, get_new_folio, put_new_folio,
                                         costs, stats)
        if pfn >= 0:
            return pfn
    return -1


@jit
def alloc_folios_slowpath(pgdat, out, order, mt, kind, flags, cc, pool, migratepages, knobs,
                          get_new_folio, put_new_folio, costs, stats):
    """alloc_folio_slowpath() until `out` is full or one allocation fails; returns the count.
    The fast path is tried here first: passing the compaction arrays down costs reference
    counting on every call, which only the rare slow path should pay."""
    for i in range(out.shape[0]):
        pfn = page_alloc.alloc_folio(pgdat, order, mt, kind, flags, page_alloc.ALLOC_WMARK_LOW)
        if pfn < 0:
            pfn = alloc_folio_slowpath(pgdat, order, mt, kind, flags, cc, pool, migratepages,
                                       knobs, get_new_folio, put_new_folio, costs, stats)
        if pfn < 0:
            return i
        out[i] = pfn
    return out.shape[0]


@jit
def compact_node(pgdat, mode, proactive_low, cc, pool, migratepages, knobs, get_new_folio,
                 put_new_folio, costs, stats, results):
    """compact_node(): every populated zone compacted whole, order -1, skip hints ignored:
    mode MIGRATE_SYNC for /proc/sys/vm/compact_memory; MIGRATE_SYNC_LIGHT and proactive (stop
    at the score's low watermark, proactive_low >= 0) for kcompactd's proactive_compact_node().
    results[z] gets each zone's compact_result."""
    zones = pgdat.zones
    for z in range(zones.shape[0]):
        results[z] = COMPACT_SKIPPED
        if zones[z, Z_END] <= zones[z, Z_START]:
            continue
        prepare_cc(cc, pool, knobs, z, -1, mode)
        cc[CC_WHOLE_ZONE] = 1
        cc[CC_IGNORE_SKIP_HINT] = 1
        if proactive_low >= 0:
            cc[CC_PROACTIVE] = 1
            cc[CC_PROACTIVE_LOW] = proactive_low
        results[z] = compact_zone(pgdat, cc, pool, migratepages, get_new_folio, put_new_folio,
                                  costs, stats)


# ---- entry points with the built-in compaction_alloc (compiled once, cached) -------------

@jit
def entry_alloc_folio_slowpath(node, order, mt, kind, flags, cc, pool, migratepages, knobs,
                               costs, stats):
    return alloc_folio_slowpath(node.arrays, order, mt, kind, flags, cc, pool, migratepages,
                                knobs, None, None, costs, stats)


@jit
def entry_alloc_folios_slowpath(node, out, order, mt, kind, flags, cc, pool, migratepages, knobs,
                                costs, stats):
    return alloc_folios_slowpath(node.arrays, out, order, mt, kind, flags, cc, pool,
                                 migratepages, knobs, None, None, costs, stats)


@jit
def entry_compact_node(node, mode, proactive_low, cc, pool, migratepages, knobs, costs, stats,
                       results):
    compact_node(node.arrays, mode, proactive_low, cc, pool, migratepages, knobs, None, None,
                 costs, stats, results)


@jit
def entry_fast_find_migrateblock(node, cc):
    """fast_find_migrateblock() on a machine (for tests and tools)."""
    return fast_find_migrateblock(node.arrays, cc)


@jit
def entry_fragmentation_score_node(node):
    return fragmentation_score_node(node.arrays)


def entries_for(get_new_folio, put_new_folio):
    """Entry points compiled around a user strategy's own compaction_alloc/compaction_free
    (compiled when first used in each process: numba cannot cache functions passed in)."""
    @nb.njit(nogil=True)
    def slowpath(node, order, mt, kind, flags, cc, pool, migratepages, knobs, costs, stats):
        return alloc_folio_slowpath(node.arrays, order, mt, kind, flags, cc, pool,
                                    migratepages, knobs, get_new_folio, put_new_folio, costs,
                                    stats)

    @nb.njit(nogil=True)
    def slowpath_many(node, out, order, mt, kind, flags, cc, pool, migratepages, knobs, costs,
                      stats):
        return alloc_folios_slowpath(node.arrays, out, order, mt, kind, flags, cc, pool,
                                     migratepages, knobs, get_new_folio, put_new_folio, costs,
                                     stats)

    @nb.njit(nogil=True)
    def node_compact(node, mode, proactive_low, cc, pool, migratepages, knobs, costs, stats,
                     results):
        compact_node(node.arrays, mode, proactive_low, cc, pool, migratepages, knobs,
                     get_new_folio, put_new_folio, costs, stats, results)

    return slowpath, slowpath_many, node_compact
