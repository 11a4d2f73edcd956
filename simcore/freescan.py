"""Compaction's free scanner and target allocator, after mm/compaction.c: struct
compact_control, the pool of isolated free pages (cc->freepages[]), isolate_freepages() and the
built-in compaction_alloc()/compaction_free().

Apart from compaction.py so that migrate.py can call the target allocator directly: compiled
code that receives functions as values cannot be cached, so targets are chosen by a policy
number in cc[CC_TARGET_POLICY] (or by a user strategy's own functions, compiled per process).
"""
import numba as nb
import numpy as np

from . import page_alloc, pcp
from .mmzone import (
    MAX_PAGE_ORDER,
    MIGRATE_CMA,
    MIGRATE_MOVABLE,
    NR_PAGE_ORDERS,
    PAGE_BUDDY,
    PAGE_TAIL,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
    PB_MIGRATE_SKIP,
    PB_MIGRATETYPE_MASK,
)
from .pgdat import (
    FA_COUNT,
    FA_HEAD,
    FA_TAIL,
    Z_COMPACT_CACHED_FREE,
    Z_END,
    Z_FREE,
    Z_START,
    Z_WMARK_MIN,
)
from .tracelog import TP_ISOLATE_FREEPAGES, trace_isolate, tracing

jit = nb.njit(cache=True, nogil=True)

COMPACT_CLUSTER_MAX = 32
MIGRATE_ASYNC = 0          # migrate.MIGRATE_ASYNC (migrate.py imports this module)

# Built-in target policies (compaction_alloc flavours).
TARGET_ORDER0 = 0          # only base-page targets: large sources get none (pre-6.9)
TARGET_SMALLEST_FIT = 1    # per-order lists, smallest fitting first, split buddy-style (6.9+)
TARGET_BUDDY = 2           # not compaction: straight from the buddy allocator (CMA, offlining)

# struct compact_control, as an int64 array.
CC_ORDER = 0               # -1: compact_memory (whole zone, no target order)
CC_MODE = 1
CC_ZONE = 2
CC_MIGRATE_PFN = 3
CC_FREE_PFN = 4
CC_NR_MIGRATEPAGES = 5     # base pages isolated for migration, not yet migrated
CC_NR_FREEPAGES = 6        # base pages in the target pool
CC_TOTAL_MIGRATE_SCANNED = 7
CC_TOTAL_FREE_SCANNED = 8
CC_WHOLE_ZONE = 9
CC_IGNORE_SKIP_HINT = 10
CC_DIRECT = 11
CC_PROACTIVE = 12
CC_ALLOC_CONTIG = 13
CC_MIGRATETYPE = 14
CC_HIGHEST_ZONEIDX = 15
CC_ISOLATE_LARGE = 16      # strategy: the migrate scanner isolates large folios
CC_SPLIT_FREE = 17         # strategy: isolated free pages are split to order 0
CC_TARGET_POLICY = 18      # strategy: built-in compaction_alloc flavour
CC_FINISH_PAGEBLOCK = 19
CC_NR_ISOLATED = 20        # base pages isolated by both scanners (compact_isolated)
CC_PROACTIVE_LOW = 21      # fragmentation_score_wmark(true) for proactive runs
CC_MIGRATED_FOLIOS = 22
CC_ISOLATED_LARGE = 23     # large folios isolated by the migrate scanner
CC_SEARCH_ORDER = 24       # fast_isolate_freepages(): the order to search first next time
CC_FAST_SEARCH_FAIL = 25   # fast searches that failed in a row (shrinks freelist_scan_limit)
CC_FAST_START_PFN = 26     # lowest block the fast migrate search found; -1: used (ULONG_MAX)
CC_UNEVICTABLE = 27        # ISOLATE_UNEVICTABLE: vm.compact_unevictable_allowed
NR_CC = 28

POOL_CAP = 1 << 15
POOL_HEAD = 0
POOL_LEN = 1


def new_compact_control():
    cc = np.zeros(NR_CC, dtype=np.int64)
    pool = np.zeros((NR_PAGE_ORDERS, POOL_CAP + 2), dtype=np.int64)
    migratepages = np.zeros(COMPACT_CLUSTER_MAX, dtype=np.int64)
    return cc, pool, migratepages


# ---- the pool of isolated free pages (cc->freepages[order]) ------------------------------

@jit
def pool_len(pool, order):
    return pool[order, POOL_LEN]


@jit
def pool_push(pool, order, pfn, at_head):
    """list_add() (head) or list_add_tail() on cc->freepages[order]."""
    n = pool[order, POOL_LEN]
    if at_head:
        pool[order, POOL_HEAD] = (pool[order, POOL_HEAD] - 1) % POOL_CAP
        pool[order, 2 + pool[order, POOL_HEAD]] = pfn
    else:
        pool[order, 2 + (pool[order, POOL_HEAD] + n) % POOL_CAP] = pfn
    pool[order, POOL_LEN] = n + 1


@jit
def pool_pop(pool, order):
    """list_first_entry() + list_del()."""
    head = pool[order, POOL_HEAD]
    pfn = pool[order, 2 + head]
    pool[order, POOL_HEAD] = (head + 1) % POOL_CAP
    pool[order, POOL_LEN] -= 1
    return pfn


@jit
def pool_add(cc, pool, pfn, order):
    """An isolated free page onto cc->freepages: whole, or as order-0 pages when the strategy
    splits isolated free pages (split_map_pages() before 6.9)."""
    n = np.int64(1) << order
    cc[CC_NR_FREEPAGES] += n
    if cc[CC_SPLIT_FREE]:
        for p in range(pfn, pfn + n):
            pool_push(pool, 0, p, False)
    else:
        pool_push(pool, order, pfn, False)


@jit
def pool_pages(pool):
    total = 0
    for o in range(NR_PAGE_ORDERS):
        total += pool[o, POOL_LEN] << o
    return total


@jit
def release_free_list(pgdat, pool):
    """release_free_list(): every isolated free page back to the buddy allocator. Returns the
    highest PFN released (the free scanner's cached position may move back up to it)."""
    high = -1
    for o in range(NR_PAGE_ORDERS):
        while pool[o, POOL_LEN] > 0:
            pfn = pool_pop(pool, o)
            pcp.free_unref_folio(pgdat, pfn, o)     # pcp hook: __free_pages()
            high = max(high, pfn)
    return high


# ---- the free scanner ----------------------------------------------------------------------

@jit
def isolation_suitable(pgdat, cc, pfn):
    if cc[CC_IGNORE_SKIP_HINT]:
        return True
    return not (pgdat.pageblock_flags[pfn >> PAGEBLOCK_ORDER] & PB_MIGRATE_SKIP)


@jit
def set_pageblock_skip(pgdat, pfn):
    pgdat.pageblock_flags[pfn >> PAGEBLOCK_ORDER] |= PB_MIGRATE_SKIP


@jit
def suitable_migration_target(pgdat, cc, pfn):
    """suitable_migration_target(): a MOVABLE or CMA block not itself a big free buddy."""
    mem_map = pgdat.mem_map
    if mem_map[pfn].type == PAGE_BUDDY:
        order = cc[CC_ORDER] if cc[CC_ORDER] > 0 else PAGEBLOCK_ORDER
        if mem_map[pfn].order >= order:
            return False
    mt = pgdat.pageblock_flags[pfn >> PAGEBLOCK_ORDER] & PB_MIGRATETYPE_MASK
    return mt == MIGRATE_MOVABLE or mt == MIGRATE_CMA


@jit
def isolate_free_page(pgdat, z, pfn, order):
    """__isolate_free_page(): off the free lists if the zone stays above min + 2^order."""
    zones = pgdat.zones
    if zones[z, Z_FREE] - (np.int64(1) << order) <= zones[z, Z_WMARK_MIN] + (np.int64(1) << order):
        return False
    mt = page_alloc.get_pageblock_migratetype(pgdat, pfn)
    page_alloc.del_from_free_list(pgdat, z, pfn, order, mt)
    page_alloc.account_freepages(pgdat, z, -(np.int64(1) << order), mt)
    return True


@jit
def isolate_freepages_block(pgdat, cc, pool, start, end, stride):
    """isolate_freepages_block(): isolate the free buddies in [start, end) into the pool, stopping
    once there are targets for every page waiting to migrate. Returns (pages isolated, next pfn).

    The walk looks at every `stride`-th PFN, as the kernel's does: each look counts one scanned
    PFN, a compound page (a folio) that ends inside the block counts all its pages and is
    stepped over, an isolated buddy counts its pages; the next look is `stride` PFNs past the
    last page stepped over, so with a stride above 1 the looks leave the alignment of the
    folios and buddies (the kernel's arithmetic, kept). isolate_freepages() widens the stride
    on blocks that gave nothing, so the kernel's compact_free_scanned is well below the PFNs
    the scanner passes."""
    mem_map = pgdat.mem_map
    z = cc[CC_ZONE]
    pfn = start
    scanned = 0
    isolated = 0
    if not start & (PAGEBLOCK_NR_PAGES - 1) and mem_map[pfn].type == PAGE_TAIL \
            and pfn & ((1 << MAX_PAGE_ORDER) - 1):
        # second pageblock of an order-10 block: nothing to isolate here, one look per stride
        scanned = (end - start + stride - 1) // stride
        cc[CC_TOTAL_FREE_SCANNED] += scanned
        if tracing(pgdat.trace_log):
            trace_isolate(pgdat.trace_log, TP_ISOLATE_FREEPAGES, start, end, scanned, 0)
        return 0, end
    while pfn < end:
        t = mem_map[pfn].type
        scanned += 1
        if t == PAGE_TAIL:              # a tail page: compound_order() is 0 there
            pfn += stride
            continue
        n = np.int64(1) << mem_map[pfn].order
        if t != PAGE_BUDDY:            # a folio, or offline memory
            if pfn + n <= end:          # stepped over only if it ends in the block
                scanned += n - 1
                pfn += n - 1
            pfn += stride
            continue
        order = np.int64(mem_map[pfn].order)
        if pool_len(pool, order) + n >= POOL_CAP or not isolate_free_page(pgdat, z, pfn, order):
            break
        scanned += n - 1
        isolated += n
        pool_add(cc, pool, pfn, order)
        if cc[CC_NR_MIGRATEPAGES] <= cc[CC_NR_FREEPAGES]:
            pfn += n
            break
        pfn += n - 1 + stride
    pfn = min(pfn, end)
    cc[CC_TOTAL_FREE_SCANNED] += scanned
    cc[CC_NR_ISOLATED] += isolated
    if tracing(pgdat.trace_log):
        trace_isolate(pgdat.trace_log, TP_ISOLATE_FREEPAGES, start, pfn, scanned, isolated)
    return isolated, pfn


@jit
def isolate_freepages(pgdat, cc, pool):
    """isolate_freepages(): fast_isolate_freepages() first; if the pool is then still empty,
    walk pageblocks down from cc->free_pfn, above the migrate scanner, until the pool covers
    everything isolated for migration.

    As in the kernel (6.10+ and before), the walk is skipped whenever cc->nr_freepages is
    non-zero, even if the pages left in the pool are all smaller than the folio asking: then
    compaction_alloc() finds no target, migrate_pages() returns -ENOMEM before the scanners
    met and compact_zone() ends the zone with COMPACT_CONTENDED. A compact_memory trace on
    this project's 6.18 VM shows exactly that (docs/fidelity.md, "The free scanner, traced").

    The walk resumes where the last one stopped inside a block (cc->free_pfn is a PFN, not a
    block), looks at every stride-th PFN (1 for sync compaction, COMPACT_CLUSTER_MAX for
    async; doubled up to COMPACT_CLUSTER_MAX after each block that gave nothing, back to 1
    after one that gave pages) and stops when an isolation fails (the zone at its watermark).
    Simplified: the kernel also sets the skip hint of every block it scanned whole; the twin
    only of those that gave nothing, and never under ignore_skip_hint."""
    fast_isolate_freepages(pgdat, cc, pool)
    if cc[CC_NR_FREEPAGES] > 0:
        return
    z = cc[CC_ZONE]
    zone_start = pgdat.zones[z, Z_START]
    isolate_start = cc[CC_FREE_PFN]
    block_start = isolate_start & ~(PAGEBLOCK_NR_PAGES - 1)
    low_pfn = ((cc[CC_MIGRATE_PFN] + PAGEBLOCK_NR_PAGES) & ~(PAGEBLOCK_NR_PAGES - 1))
    zone_end = pgdat.zones[z, Z_END]
    stride = COMPACT_CLUSTER_MAX if cc[CC_MODE] == MIGRATE_ASYNC else 1
    while block_start >= low_pfn and block_start >= zone_start:
        block_end = min(block_start + PAGEBLOCK_NR_PAGES, zone_end)
        start = max(isolate_start, block_start)
        if start < block_end and suitable_migration_target(pgdat, cc, block_start) and \
                isolation_suitable(pgdat, cc, block_start):
            isolated, next_pfn = isolate_freepages_block(pgdat, cc, pool, start, block_end,
                                                         stride)
            if cc[CC_NR_FREEPAGES] >= cc[CC_NR_MIGRATEPAGES] or next_pfn < block_end:
                # enough, or an isolation failed: resume at this PFN next time (the block
                # below once this one is done)
                cc[CC_FREE_PFN] = next_pfn if next_pfn < block_end else \
                    block_start - PAGEBLOCK_NR_PAGES
                update_cached_free(pgdat, cc, cc[CC_FREE_PFN] & ~(PAGEBLOCK_NR_PAGES - 1))
                return
            if isolated == 0 and not cc[CC_IGNORE_SKIP_HINT]:
                set_pageblock_skip(pgdat, block_start)
            stride = 1 if isolated else min(COMPACT_CLUSTER_MAX, stride << 1)
        block_start -= PAGEBLOCK_NR_PAGES
        isolate_start = block_start
    # scanners met: free_pfn below the migrate scanner ends the run
    cc[CC_FREE_PFN] = low_pfn - PAGEBLOCK_NR_PAGES
    update_cached_free(pgdat, cc, cc[CC_FREE_PFN])


@jit
def update_cached_free(pgdat, cc, pfn):
    if cc[CC_IGNORE_SKIP_HINT] or cc[CC_WHOLE_ZONE]:
        return
    z = cc[CC_ZONE]
    if pfn < pgdat.zones[z, Z_COMPACT_CACHED_FREE]:
        pgdat.zones[z, Z_COMPACT_CACHED_FREE] = max(pfn, pgdat.zones[z, Z_START])


# ---- the fast free scanner (since 5.1: all our profiles have it, so no strategy knob) ------

@jit
def freelist_scan_limit(cc):
    """freelist_scan_limit(): COMPACT_CLUSTER_MAX halved per failed fast search, plus one."""
    return (COMPACT_CLUSTER_MAX >> min(cc[CC_FAST_SEARCH_FAIL], 63)) + 1


@jit
def move_freelist_head(pgdat, z, order, mt, pfn):
    """move_freelist_head(): rotate the free list so that pfn comes first; the entries before it
    go to the tail, so the next reverse search starts with pages not yet looked at."""
    mem_map = pgdat.mem_map
    area = pgdat.free_area[z, order, mt]
    if pfn < 0 or area[FA_HEAD] == pfn:
        return
    head = area[FA_HEAD]
    tail = area[FA_TAIL]
    before = mem_map[pfn].prev
    mem_map[tail].next = head
    mem_map[head].prev = tail
    mem_map[before].next = -1
    mem_map[pfn].prev = -1
    area[FA_HEAD] = pfn
    area[FA_TAIL] = before


@jit
def move_freelist_tail(pgdat, z, order, mt, pfn):
    """move_freelist_tail(): rotate the free list so that pfn comes last; the entries after it
    come first, so the next forward search starts with pages not yet looked at."""
    mem_map = pgdat.mem_map
    area = pgdat.free_area[z, order, mt]
    if area[FA_TAIL] == pfn:
        return
    head = area[FA_HEAD]
    tail = area[FA_TAIL]
    after = mem_map[pfn].next
    mem_map[tail].next = head
    mem_map[head].prev = tail
    mem_map[pfn].next = -1
    mem_map[after].prev = -1
    area[FA_HEAD] = after
    area[FA_TAIL] = pfn


@jit
def next_search_order(cc, order):
    """next_search_order(): round-robin over the orders below cc->order; -1 once wrapped."""
    order -= 1
    if order < 0:
        order = cc[CC_ORDER] - 1
    if order == cc[CC_SEARCH_ORDER]:
        cc[CC_SEARCH_ORDER] -= 1
        if cc[CC_SEARCH_ORDER] < 0:
            cc[CC_SEARCH_ORDER] = cc[CC_ORDER] - 1
        return -1
    return order


@jit
def fast_isolate_around(pgdat, cc, pool, pfn):
    """fast_isolate_around(): sync direct compaction (and kcompactd) also take the other free
    pages of the pageblock where the fast search found its target, then mark it skipped."""
    if cc[CC_NR_FREEPAGES] >= cc[CC_NR_MIGRATEPAGES]:
        return
    if cc[CC_DIRECT] and cc[CC_MODE] == MIGRATE_ASYNC:
        return
    z = cc[CC_ZONE]
    start = max(pfn & ~(PAGEBLOCK_NR_PAGES - 1), pgdat.zones[z, Z_START])
    end = min((pfn | (PAGEBLOCK_NR_PAGES - 1)) + 1, pgdat.zones[z, Z_END])
    _, next_pfn = isolate_freepages_block(pgdat, cc, pool, start, end, 1)
    if next_pfn >= end and not cc[CC_IGNORE_SKIP_HINT]:
        set_pageblock_skip(pgdat, start)


@jit
def fast_search_order(pgdat, cc, z, order, low_pfn, min_pfn, limit, found):
    """One order of fast_isolate_freepages(): walk the MOVABLE list from its tail (most recently
    freed pages last in, so the high ones) for a page at or above low_pfn, else remember the
    highest one above min_pfn. found[0] = highest block seen, found[1] = pages scanned.
    Returns (the chosen pfn or -1, scanned in this order, limit)."""
    mem_map = pgdat.mem_map
    area = pgdat.free_area[z, order, MIGRATE_MOVABLE]
    zone_start = pgdat.zones[z, Z_START]
    page = -1
    high_pfn = -1
    order_scanned = 0
    last = -1
    pfn = area[FA_TAIL]
    while pfn >= 0:
        order_scanned += 1
        found[1] += 1
        last = pfn
        if pfn >= found[0]:
            found[0] = max(pfn & ~(PAGEBLOCK_NR_PAGES - 1), zone_start)
        if pfn >= low_pfn:
            cc[CC_FAST_SEARCH_FAIL] = 0
            cc[CC_SEARCH_ORDER] = order
            page = pfn
            break
        if pfn >= min_pfn and pfn > high_pfn:
            high_pfn = pfn
            limit >>= 1                 # a candidate: shorten the scan
        if order_scanned >= limit:
            break
        pfn = mem_map[pfn].prev
    if page < 0 and high_pfn >= 0:
        page = high_pfn
        last = high_pfn
    if pfn < 0 and page < 0:
        last = -1                       # walked the whole list: the reorder is a no-op
    move_freelist_head(pgdat, z, order, MIGRATE_MOVABLE, last)
    return page, order_scanned, limit


@jit
def fast_isolate_freepages(pgdat, cc, pool):
    """fast_isolate_freepages(): before the linear free scanner, search the MOVABLE free lists
    of the orders below cc->order (the last successful order first, then round-robin down) for a
    page in the top quarter of the span between the scanners, or failing that the highest one
    in the top half, and isolate it. On the first search of a run (a deeper one) with nothing
    found, the free scanner restarts at the highest free block seen, or, for direct compaction,
    at the bottom of the top half. The zone's cached free position moves to just below the
    highest block seen.

    Simplified: a run counts as starting when cc->free_pfn is the zone's last pageblock (the
    kernel keeps zone->compact_init_free_pfn); nothing is done once the scanners crossed."""
    order_req = cc[CC_ORDER]
    if order_req <= 0:
        return
    z = cc[CC_ZONE]
    zones = pgdat.zones
    free_pfn = cc[CC_FREE_PFN]
    distance = free_pfn - cc[CC_MIGRATE_PFN]
    if distance <= 0:
        return
    limit = max(1, freelist_scan_limit(cc) >> 1)
    scan_start = free_pfn >= ((zones[z, Z_END] - 1) & ~(PAGEBLOCK_NR_PAGES - 1))
    if scan_start:
        limit = PAGEBLOCK_NR_PAGES >> 1
    low_pfn = (free_pfn - (distance >> 2)) & ~(PAGEBLOCK_NR_PAGES - 1)
    min_pfn = (free_pfn - (distance >> 1)) & ~(PAGEBLOCK_NR_PAGES - 1)
    cc[CC_SEARCH_ORDER] = min(order_req - 1, cc[CC_SEARCH_ORDER])
    found = np.zeros(2, dtype=np.int64)         # highest block seen, pages scanned
    page = -1
    order = cc[CC_SEARCH_ORDER]
    while page < 0 and order >= 0:
        if pgdat.free_area[z, order, MIGRATE_MOVABLE, FA_COUNT] > 0:
            page, order_scanned, limit = fast_search_order(pgdat, cc, z, order, low_pfn,
                                                           min_pfn, limit, found)
            if page >= 0:
                n = np.int64(1) << order
                if pool_len(pool, order) + n < POOL_CAP and \
                        isolate_free_page(pgdat, z, page, order):
                    found[1] += n - 1
                    cc[CC_NR_ISOLATED] += n
                    pool_add(cc, pool, page, order)
                else:
                    order = cc[CC_SEARCH_ORDER] + 1     # isolation failed: end the search
                    page = -1
            if cc[CC_NR_FREEPAGES] >= cc[CC_NR_MIGRATEPAGES]:
                break
            if order_scanned >= limit:
                limit = max(1, limit >> 1)
        order = next_search_order(cc, order)
    highest = found[0]
    if page < 0:
        cc[CC_FAST_SEARCH_FAIL] += 1
        if scan_start:
            if highest >= min_pfn:
                page = highest
                cc[CC_FREE_PFN] = highest
            elif cc[CC_DIRECT] and min_pfn >= zones[z, Z_START]:
                cc[CC_FREE_PFN] = min_pfn
                page = min_pfn
    if highest > 0 and highest >= zones[z, Z_COMPACT_CACHED_FREE]:
        zones[z, Z_COMPACT_CACHED_FREE] = highest - PAGEBLOCK_NR_PAGES
    cc[CC_TOTAL_FREE_SCANNED] += found[1]
    if page >= 0:
        fast_isolate_around(pgdat, cc, pool, page)


# ---- built-in compaction_alloc()/compaction_free() ----------------------------------------

@jit
def compaction_alloc(pgdat, target, src, order):
    """compaction_alloc(): a target for a folio of `order` from the pool.

    TARGET_ORDER0 (pre-6.9 and the 6.9 interim step): large sources get none, base pages take
    the first order-0 page, isolating more when the list is empty.
    TARGET_SMALLEST_FIT (6.9+): the first non-empty list from `order` up (isolating more once if
    all are empty); a larger page is split buddy-style, its upper halves going back on the
    lower lists. Returns the target's PFN or -1."""
    cc, pool = target
    if cc[CC_TARGET_POLICY] == TARGET_ORDER0:
        if order > 0:
            return -1
        if pool_len(pool, 0) == 0:
            isolate_freepages(pgdat, cc, pool)
            if pool_len(pool, 0) == 0:
                return -1
        cc[CC_NR_FREEPAGES] -= 1
        cc[CC_NR_MIGRATEPAGES] -= 1
        return pool_pop(pool, 0)
    return take_smallest_fit(pgdat, cc, pool, order)


@jit
def take_smallest_fit(pgdat, cc, pool, order):
    """The 6.9+ compaction_alloc() body: smallest fitting isolated free page, split to fit."""
    for attempt in range(2):
        start = order
        while start < NR_PAGE_ORDERS and pool_len(pool, start) == 0:
            start += 1
        if start < NR_PAGE_ORDERS:
            pfn = pool_pop(pool, start)
            while start > order:
                start -= 1
                pool_push(pool, start, pfn + (np.int64(1) << start), True)
            cc[CC_NR_FREEPAGES] -= np.int64(1) << order
            cc[CC_NR_MIGRATEPAGES] -= np.int64(1) << order
            return pfn
        if attempt == 0:
            isolate_freepages(pgdat, cc, pool)
    return -1


@jit
def compaction_free(pgdat, target, dst, order):
    """compaction_free(): an unused target goes back to the head of its pool list."""
    cc, pool = target
    pool_push(pool, order, dst, True)
    cc[CC_NR_FREEPAGES] += np.int64(1) << order
    cc[CC_NR_MIGRATEPAGES] += np.int64(1) << order




@jit
def entry_fast_isolate_freepages(node, cc, pool):
    """fast_isolate_freepages() on a machine (for tests and tools)."""
    fast_isolate_freepages(node.arrays, cc, pool)


@jit
def entry_take_smallest_fit(node, cc, pool, order):
    """compaction_alloc()'s 6.9+ body on a machine (for tests): a target PFN or -1."""
    return take_smallest_fit(node.arrays, cc, pool, order)


@jit
def entry_isolate_into_pool(node, cc, pool, pfn, order):
    """Take the free buddy at `pfn` off the free lists into the pool (for tests)."""
    if not isolate_free_page(node.arrays, cc[CC_ZONE], pfn, order):
        return False
    pool_add(cc, pool, pfn, order)
    return True
