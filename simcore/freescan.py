"""Compaction's free scanner and target allocator, after mm/compaction.c: struct
compact_control, the pool of isolated free pages (cc->freepages[]), isolate_freepages() and the
built-in compaction_alloc()/compaction_free().

Apart from compaction.py so that migrate.py can call the target allocator directly: compiled
code that receives functions as values cannot be cached, so targets are chosen by a policy
number in cc[CC_TARGET_POLICY] (or by a user strategy's own functions, compiled per process).
"""
import numba as nb
import numpy as np

from . import page_alloc
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
from .pgdat import Z_COMPACT_CACHED_FREE, Z_END, Z_FREE, Z_START, Z_WMARK_MIN

jit = nb.njit(cache=True, nogil=True)

COMPACT_CLUSTER_MAX = 32

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
NR_CC = 24

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
            page_alloc.free_pages_range(pgdat, pfn, o, False)
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
def isolate_freepages_block(pgdat, cc, pool, start, end):
    """isolate_freepages_block(): isolate the free buddies in [start, end) into the pool, stopping
    once there are targets for every page waiting to migrate. Returns (pages isolated, next pfn)."""
    mem_map = pgdat.mem_map
    z = cc[CC_ZONE]
    pfn = start
    scanned = 0
    isolated = 0
    split = cc[CC_SPLIT_FREE]
    if mem_map[pfn].type == PAGE_TAIL and pfn & ((1 << MAX_PAGE_ORDER) - 1):
        # second pageblock of an order-10 block: nothing to isolate here
        cc[CC_TOTAL_FREE_SCANNED] += end - start
        return 0, end
    while pfn < end:
        t = mem_map[pfn].type
        if t == PAGE_TAIL:
            scanned += 1
            pfn += 1
            continue
        n = np.int64(1) << mem_map[pfn].order
        if t != PAGE_BUDDY:            # a folio, or offline memory
            scanned += n
            pfn += n
            continue
        order = np.int64(mem_map[pfn].order)
        if pool_len(pool, order) + n >= POOL_CAP or not isolate_free_page(pgdat, z, pfn, order):
            break
        scanned += n
        isolated += n
        cc[CC_NR_FREEPAGES] += n
        if split:
            for p in range(pfn, pfn + n):       # split_map_pages(): every page becomes order 0
                pool_push(pool, 0, p, False)
        else:
            pool_push(pool, order, pfn, False)
        pfn += n
        if cc[CC_NR_MIGRATEPAGES] <= cc[CC_NR_FREEPAGES]:
            break
    cc[CC_TOTAL_FREE_SCANNED] += scanned
    cc[CC_NR_ISOLATED] += isolated
    return isolated, pfn


@jit
def isolate_freepages(pgdat, cc, pool):
    """isolate_freepages(): walk pageblocks down from cc->free_pfn, above the migrate scanner,
    until the pool covers everything isolated for migration."""
    z = cc[CC_ZONE]
    zone_start = pgdat.zones[z, Z_START]
    block_start = cc[CC_FREE_PFN] & ~(PAGEBLOCK_NR_PAGES - 1)
    low_pfn = ((cc[CC_MIGRATE_PFN] + PAGEBLOCK_NR_PAGES) & ~(PAGEBLOCK_NR_PAGES - 1))
    zone_end = pgdat.zones[z, Z_END]
    while block_start >= low_pfn and block_start >= zone_start:
        block_end = min(block_start + PAGEBLOCK_NR_PAGES, zone_end)
        if suitable_migration_target(pgdat, cc, block_start) and \
                isolation_suitable(pgdat, cc, block_start):
            isolated, next_pfn = isolate_freepages_block(pgdat, cc, pool, block_start, block_end)
            if cc[CC_NR_FREEPAGES] >= cc[CC_NR_MIGRATEPAGES]:
                # resume in this block next time if it was not finished
                cc[CC_FREE_PFN] = block_start if next_pfn < block_end else \
                    block_start - PAGEBLOCK_NR_PAGES
                update_cached_free(pgdat, cc, cc[CC_FREE_PFN])
                return
            if isolated == 0 and next_pfn >= block_end and not cc[CC_IGNORE_SKIP_HINT]:
                set_pageblock_skip(pgdat, block_start)
        block_start -= PAGEBLOCK_NR_PAGES
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


