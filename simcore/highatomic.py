"""Highatomic reserves: pageblocks kept for high-order atomic allocations, after mm/page_alloc.c
reserve_highatomic_pageblock(), unreserve_highatomic_pageblock(), rmqueue_buddy()'s
ALLOC_HIGHATOMIC path and __zone_watermark_unusable_free().

A high-order allocation that may not sleep (GFP_ATOMIC: __GFP_HIGH without
__GFP_DIRECT_RECLAIM; simcore.gfp "atomic"; from 6.3 until the 6.18 fix GFP_NOWAIT too, the
profile's highatomic_gfp policy in simcore.gfp) gets ALLOC_HIGHATOMIC in the slow path, from
its first try at the min watermark. When it succeeds, the pageblock it came from becomes
MIGRATE_HIGHATOMIC (its free pages move to the HIGHATOMIC lists), up to about 1% of the zone
(nr_reserved_highatomic). Only ALLOC_HIGHATOMIC requests take from those lists first; other
requests never fall back to them (fallbacks[] has no HIGHATOMIC), except, from 6.3,
non-blocking and OOM requests once everything else failed.
Ordinary watermark checks do not count the reserve as free. A direct reclaim that still fails
gives one reserved block back to the requester's migratetype (keeping the last one), and
before the OOM killer the last one as well (force).

Profiles (policy `highatomic`, HIGHATOMIC_POLICIES):
- reserved_plus_block (6.1): at most managed / 100 + one pageblock; the watermark check
  subtracts nr_reserved_highatomic, free or not.
- aligned_reserved (6.8 .. 6.11): Charan Teja Kalla, "mm: page_alloc: fixes for high atomic
  reserve calculations" (6.8): no reserve at all when 1% of the zone is under a pageblock, at
  most ALIGN(managed / 100, pageblock_nr_pages).
- aligned_free (6.12 ~): Yu Zhao, "mm/page_alloc: keep track of free highatomic" (6.12): the
  watermark check subtracts nr_free_highatomic, the reserve's free pages only.

Offlining and isolation never adjust nr_reserved_highatomic (no kernel path does): an
offlined HIGHATOMIC block, and before 6.17 one a failed offline gave back as MOVABLE
(simcore.page_isolation ISOLATION_POLICIES), stay counted; zones[Z_STALE_HIGHATOMIC] holds
those pages for check(). Compaction capture takes HIGHATOMIC blocks like any other
(page_alloc.compaction_capture()).

Simplifications: a reservation is one pageblock (or the 2^order pages of an order >= pageblock
allocation), without the kernel's race-tolerant rechecks; the 6.1 rmqueue_buddy() has no
fallback of order-0 and OOM requests to the reserve.
"""
import numba as nb
import numpy as np

from . import page_alloc
from .mmzone import (
    MIGRATE_HIGHATOMIC,
    MIGRATE_ISOLATE,
    NR_PAGE_ORDERS,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
)
from .pgdat import (
    FA_COUNT,
    FA_HEAD,
    N_HIGHATOMIC_POLICY,
    Z_END,
    Z_FREE_HIGHATOMIC,
    Z_MANAGED,
    Z_NR_RESERVED_HIGHATOMIC,
    Z_STALE_HIGHATOMIC,
    Z_START,
)

jit = nb.njit(cache=True, nogil=True)

# node[N_HIGHATOMIC_POLICY] values; 0 (a bare PgData) behaves as the newest.
POLICY_RESERVED_PLUS_BLOCK = 1
POLICY_ALIGNED_RESERVED = 2
POLICY_ALIGNED_FREE = 3
HIGHATOMIC_POLICIES = {
    "reserved_plus_block": POLICY_RESERVED_PLUS_BLOCK,
    "aligned_reserved": POLICY_ALIGNED_RESERVED,
    "aligned_free": POLICY_ALIGNED_FREE,
}


@jit
def max_reserved(pgdat, z):
    """The most pages the zone may hold in highatomic blocks (0: none at all)."""
    one_pct = pgdat.zones[z, Z_MANAGED] // 100
    if pgdat.node[N_HIGHATOMIC_POLICY] == POLICY_RESERVED_PLUS_BLOCK:
        return one_pct + PAGEBLOCK_NR_PAGES
    if one_pct < PAGEBLOCK_NR_PAGES:
        return np.int64(0)
    return (one_pct + PAGEBLOCK_NR_PAGES - 1) & ~np.int64(PAGEBLOCK_NR_PAGES - 1)


@jit
def unusable_free(pgdat, z):
    """The reserve's share of __zone_watermark_unusable_free() for a request without
    ALLOC_RESERVES."""
    if pgdat.node[N_HIGHATOMIC_POLICY] in (POLICY_RESERVED_PLUS_BLOCK, POLICY_ALIGNED_RESERVED):
        return pgdat.zones[z, Z_NR_RESERVED_HIGHATOMIC]
    return pgdat.zones[z, Z_FREE_HIGHATOMIC]


@jit
def reserve_highatomic_pageblock(pgdat, z, pfn, order):
    """reserve_highatomic_pageblock(): after a successful ALLOC_HIGHATOMIC allocation at pfn,
    make its pageblock (or, for order >= pageblock_order, its blocks) MIGRATE_HIGHATOMIC while
    the zone's reserve is below max_reserved(). Returns True when it reserved."""
    zone = pgdat.zones[z]
    if zone[Z_NR_RESERVED_HIGHATOMIC] >= max_reserved(pgdat, z):
        return False
    mt = page_alloc.get_pageblock_migratetype(pgdat, pfn)
    if not page_alloc.mergeable(mt):           # HIGHATOMIC, CMA or ISOLATE already
        return False
    if order >= PAGEBLOCK_ORDER:
        page_alloc.change_pageblock_range(pgdat, pfn, order, MIGRATE_HIGHATOMIC)
        zone[Z_NR_RESERVED_HIGHATOMIC] += np.int64(1) << order
        return True
    start = pfn & ~np.int64(PAGEBLOCK_NR_PAGES - 1)
    if start < zone[Z_START] or start + PAGEBLOCK_NR_PAGES > zone[Z_END]:
        return False                           # move_freepages_block() refuses: -1
    page_alloc.move_freepages_block(pgdat, z, start, mt, MIGRATE_HIGHATOMIC)
    page_alloc.set_pageblock_migratetype(pgdat, start, MIGRATE_HIGHATOMIC)
    zone[Z_NR_RESERVED_HIGHATOMIC] += PAGEBLOCK_NR_PAGES
    return True


@jit
def unreserve_highatomic_pageblock(pgdat, highest_zoneidx, mt, force):
    """unreserve_highatomic_pageblock(): the first zone of the zonelist that holds more than
    one reserved block (any reserved block when `force`) gives the block of its smallest free
    HIGHATOMIC page to `mt`. Returns True when a block moved."""
    zones = pgdat.zones
    for z in range(highest_zoneidx, -1, -1):
        if zones[z, Z_END] <= zones[z, Z_START]:
            continue
        reserved = zones[z, Z_NR_RESERVED_HIGHATOMIC]
        if reserved == 0 or (not force and reserved <= PAGEBLOCK_NR_PAGES):
            continue
        for order in range(NR_PAGE_ORDERS):
            if pgdat.free_area[z, order, MIGRATE_HIGHATOMIC, FA_COUNT] == 0:
                continue
            pfn = pgdat.free_area[z, order, MIGRATE_HIGHATOMIC, FA_HEAD]
            size = max(np.int64(PAGEBLOCK_NR_PAGES), np.int64(1) << order)
            zones[z, Z_NR_RESERVED_HIGHATOMIC] -= min(size, zones[z, Z_NR_RESERVED_HIGHATOMIC])
            if order < PAGEBLOCK_ORDER:
                start = pfn & ~np.int64(PAGEBLOCK_NR_PAGES - 1)
                page_alloc.move_freepages_block(pgdat, z, start, MIGRATE_HIGHATOMIC, mt)
                page_alloc.set_pageblock_migratetype(pgdat, start, mt)
            else:
                page_alloc.move_to_free_list(pgdat, z, pfn, order, MIGRATE_HIGHATOMIC, mt)
                page_alloc.change_pageblock_range(pgdat, pfn, order, mt)
            return True
    return False


@jit
def entry_unreserve_highatomic_pageblock(node, highest_zoneidx, mt, force):
    return unreserve_highatomic_pageblock(node.arrays, highest_zoneidx, mt, force)


def zone_unusable_free(pgdat, z):
    """unusable_free() for Python callers (kswapd's watermark checks), from the numpy arrays."""
    column = Z_FREE_HIGHATOMIC
    if int(pgdat.node[N_HIGHATOMIC_POLICY]) in (POLICY_RESERVED_PLUS_BLOCK,
                                                POLICY_ALIGNED_RESERVED):
        column = Z_NR_RESERVED_HIGHATOMIC
    return int(pgdat.zones[z, column])


def check(pgdat):
    """Highatomic accounting: per zone, nr_reserved_highatomic is a multiple of a pageblock
    covering exactly the zone's HIGHATOMIC blocks, plus isolated blocks that were HIGHATOMIC
    when isolated, plus the stale part the kernel never takes back (blocks offlined, or turned
    MOVABLE by an undone isolation before 6.17); nr_free_highatomic is what the HIGHATOMIC
    lists hold. Returns a problem sentence or ''."""
    types = pgdat.pageblock_flags & 0x7
    fa = pgdat.free_area
    for z in range(pgdat.zones.shape[0]):
        start, end = int(pgdat.zones[z, Z_START]), int(pgdat.zones[z, Z_END])
        blocks = types[start // PAGEBLOCK_NR_PAGES:end // PAGEBLOCK_NR_PAGES]
        stale = int(pgdat.zones[z, Z_STALE_HIGHATOMIC])
        reserved = int(pgdat.zones[z, Z_NR_RESERVED_HIGHATOMIC]) - stale
        in_blocks = int((blocks == MIGRATE_HIGHATOMIC).sum()) * PAGEBLOCK_NR_PAGES
        isolated = int((blocks == MIGRATE_ISOLATE).sum()) * PAGEBLOCK_NR_PAGES
        if stale % PAGEBLOCK_NR_PAGES or reserved % PAGEBLOCK_NR_PAGES \
                or not in_blocks <= reserved <= in_blocks + isolated:
            return (f"zone {z}: nr_reserved_highatomic {reserved + stale} ({stale} stale) "
                    f"does not match its {in_blocks // PAGEBLOCK_NR_PAGES} HIGHATOMIC "
                    f"pageblocks")
        free = int((fa[z, :, MIGRATE_HIGHATOMIC, FA_COUNT]
                    << np.arange(NR_PAGE_ORDERS, dtype=np.int64)).sum())
        if free != int(pgdat.zones[z, Z_FREE_HIGHATOMIC]):
            return (f"zone {z}: nr_free_highatomic {int(pgdat.zones[z, Z_FREE_HIGHATOMIC])} "
                    f"but the HIGHATOMIC lists hold {free} pages")
    return ""
