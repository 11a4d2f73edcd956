"""The buddy allocator, after mm/page_alloc.c.

Compiled with numba; every function takes the node's state as `pgdat` (see pgdat.py). Free blocks
sit on doubly linked lists per (zone, order, migratetype) threaded through mem_map's next/prev.

Per-CPU page lists live in pcp.py; the hooks into them here are marked "pcp hook".

Simplifications against the kernel, everywhere in this module:
- Highatomic reserves live in highatomic.py (hooks here marked "highatomic hook"); watermark
  boosting, reclaim and OOM in boost.py and vmscan.py, driven from Python (Machine).
- No free-page shuffling and no guard pages.
"""
import math

import numba as nb
import numpy as np

from . import (
    deferred_split,
    highatomic,  # noqa: F401  (highatomic hooks; it imports this module back)
    pcp,  # noqa: F401  (pcp hooks; pcp imports this module back)
)
from . import vm_event as ev
from .mmzone import (
    FOLIO_ISOLATED,
    FOLIO_ON_LRU,
    HPAGE_PMD_ORDER,
    KIND_ANON,
    KIND_FILE,
    KIND_HUGETLB,
    MAX_PAGE_ORDER,
    MIGRATE_CMA,
    MIGRATE_HIGHATOMIC,
    MIGRATE_ISOLATE,
    MIGRATE_MOVABLE,
    MIGRATE_PCPTYPES,
    MIGRATE_RECLAIMABLE,
    MIGRATE_TYPES,
    MIGRATE_UNMOVABLE,
    NR_PAGE_ORDERS,
    PAGE_BUDDY,
    PAGE_HEAD,
    PAGE_SHIFT,
    PAGE_TAIL,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
    PB_MIGRATETYPE_MASK,
    PG_DIRTY,
    PG_HWPOISON,
    PG_PINNED,
    PG_WRITEBACK,
    WATERMARK_SCALE_FACTOR,
    ZONE_DMA32,
    ZONE_MOVABLE,
    ZONE_NORMAL,
)
from .pgdat import (
    FA_COUNT,
    FA_HEAD,
    FA_TAIL,
    N_CAPTURE_ORDER,
    N_CAPTURE_PFN,
    N_CAPTURE_POLICY,
    N_CAPTURE_WHERE,
    N_HANDLE_FREE,
    N_HANDLES_AVAIL,
    N_HIGHATOMIC_POLICY,
    N_KIND_PAGES,
    N_NR_FOLIOS,
    Z_END,
    Z_FREE,
    Z_FREE_CMA,
    Z_FREE_HIGHATOMIC,
    Z_LOWMEM_RESERVE,
    Z_START,
    Z_WMARK_MIN,
    prefetchw,
    view_at,
)
from .tracelog import trace_extfrag, tracing

# Compiled functions call each other through numba's calling convention: every call passes
# the PgView (18 words) on the stack and checks a status word on return, which cost more than
# the work of the small functions of the allocation and free paths. Those are `jit_inline`
# (LLVM's alwaysinline): their code goes into each caller. The rest say forceinline=False
# explicitly, as numba would otherwise let a callee inherit its caller's forceinline. Inlining
# changes no result, only where the instructions sit.
jit = nb.njit(cache=True, nogil=True, forceinline=False)
jit_inline = nb.njit(cache=True, nogil=True, forceinline=True)

# alloc_flags (mm/internal.h): the watermark index sits in the low bits.
ALLOC_WMARK_MIN = 0
ALLOC_WMARK_LOW = 1
ALLOC_WMARK_HIGH = 2
ALLOC_WMARK_MASK = 3
ALLOC_NO_WATERMARKS = 0x04
ALLOC_OOM = 0x08
ALLOC_NON_BLOCK = 0x10       # may not sleep (GFP_ATOMIC): a deeper dip into the min reserve
ALLOC_MIN_RESERVE = 0x20     # __GFP_HIGH: half the min reserve
ALLOC_CMA = 0x80
ALLOC_NOFRAGMENT = 0x100
ALLOC_HIGHATOMIC = 0x200     # a high-order atomic request: may use and create highatomic blocks
ALLOC_RESERVES = ALLOC_NON_BLOCK | ALLOC_MIN_RESERVE | ALLOC_HIGHATOMIC | ALLOC_OOM
# alloc_folio() takes, shifted up by this, the reserve bits gfp_to_alloc_flags() gives the slow
# path: the fast path ignores them, the slow path's first try at the min watermark uses them
ALLOC_SLOWPATH_SHIFT = 16

# Error codes returned by the checked entry points (the Python layer turns them into ValueError).
E_OK = 0
E_NOT_HEAD = 1       # the PFN is not the head of an allocated folio
E_RANGE = 2          # the PFN is outside the machine
E_DUPLICATE = 3      # the same folio twice in one batch
E_ORDER = 4          # new_order not below the folio's order
E_HUGETLB = 5        # hugetlb folios are never split
E_ANON_ORDER1 = 6    # anonymous folios cannot be order 1
E_PINNED = 7         # extra references: split_folio fails with -EAGAIN
E_ISOLATED = 8       # isolated for migration: owned by a migration in flight
E_HWPOISON = 9       # hardware-poisoned by memory_failure(): never back to the allocator
E_BUSY = 10          # under writeback, or a dirty page-cache folio: __folio_split() -EBUSY


# ---- sizing (plain Python: run once per machine) -----------------------------------------

def calculate_min_free_kbytes(lowmem_kbytes):
    """calculate_min_free_kbytes(): sqrt(lowmem_kbytes * 16), clamped to 128 KiB .. 256 MiB."""
    return min(max(math.isqrt(lowmem_kbytes * 16), 128), 262144)


def recommended_min_free_kbytes(nr_zones, lowmem_pages):
    """set_recommended_min_free_kbytes() (mm/khugepaged.c, when THP is enabled): two free
    pageblocks per zone against fragmentation plus room for fallbacks between the PCP types,
    at most 5% of lowmem."""
    pages = PAGEBLOCK_NR_PAGES * nr_zones * 2
    pages += PAGEBLOCK_NR_PAGES * nr_zones * MIGRATE_PCPTYPES * MIGRATE_PCPTYPES
    return min(pages, lowmem_pages // 20) << (PAGE_SHIFT - 10)


def setup_per_zone_wmarks(managed, min_free_kbytes, movable_zone_idx,
                          watermark_scale_factor=WATERMARK_SCALE_FACTOR):
    """__setup_per_zone_wmarks(): rows of (min, low, high, promo) per zone.

    min_free_kbytes is shared among the lowmem zones in proportion to their managed pages;
    ZONE_MOVABLE gets a small fixed minimum. The gaps to low, high and promo are a quarter of
    min or watermark_scale_factor/10000 of the zone, whichever is larger. The zone index
    `movable_zone_idx` is ZONE_MOVABLE (pass -1 for none)."""
    pages_min = min_free_kbytes >> (PAGE_SHIFT - 10)
    lowmem_pages = sum(m for z, m in enumerate(managed) if z != movable_zone_idx)
    marks = []
    for z, m in enumerate(managed):
        if z == movable_zone_idx:
            wmark_min = min(max(m // 1024, 32), 128)
        else:
            wmark_min = pages_min * m // lowmem_pages if lowmem_pages else 0
        gap = max(wmark_min >> 2, m * watermark_scale_factor // 10000)
        marks.append((wmark_min, wmark_min + gap, wmark_min + 2 * gap, wmark_min + 3 * gap))
    return marks


def setup_per_zone_lowmem_reserve(managed, ratios):
    """setup_per_zone_lowmem_reserve(): rows of lowmem_reserve[j] per zone, the pages a zone
    keeps back from requests that could have used the higher zone j (/proc/zoneinfo's
    "protection")."""
    rows = []
    for z, ratio in enumerate(ratios):
        row = [0] * len(managed)
        upper = 0
        for j in range(z + 1, len(managed)):
            upper += managed[j]
            row[j] = upper // ratio if ratio and managed[z] else 0
        rows.append(row)
    return rows


# ---- pageblocks ----------------------------------------------------------------------------

@jit_inline
def get_pageblock_migratetype(pgdat, pfn):
    return np.int64(pgdat.pageblock_flags[pfn >> PAGEBLOCK_ORDER] & PB_MIGRATETYPE_MASK)


@jit_inline
def set_pageblock_migratetype(pgdat, pfn, mt):
    pb = pfn >> PAGEBLOCK_ORDER
    pgdat.pageblock_flags[pb] = (pgdat.pageblock_flags[pb] & ~PB_MIGRATETYPE_MASK) | mt


@jit
def change_pageblock_range(pgdat, pfn, order, mt):
    """change_pageblock_range(): a buddy of order >= pageblock_order changes all its blocks."""
    nr_blocks = max(1, 1 << (order - PAGEBLOCK_ORDER)) if order >= PAGEBLOCK_ORDER else 1
    for i in range(nr_blocks):
        set_pageblock_migratetype(pgdat, pfn + i * PAGEBLOCK_NR_PAGES, mt)


@jit_inline
def page_zone(pgdat, pfn):
    zones = pgdat.zones
    for z in range(zones.shape[0]):
        if zones[z, Z_START] <= pfn < zones[z, Z_END]:
            return z
    return -1


# ---- free lists ----------------------------------------------------------------------------

@jit_inline
def account_freepages(pgdat, z, nr_pages, mt):
    """account_freepages(): isolated free pages do not count as free; CMA and HIGHATOMIC ones
    are counted apart as well (NR_FREE_CMA_PAGES, nr_free_highatomic)."""
    if mt == MIGRATE_ISOLATE:
        return
    pgdat.zones[z, Z_FREE] += nr_pages
    if mt == MIGRATE_CMA:
        pgdat.zones[z, Z_FREE_CMA] += nr_pages
    elif mt == MIGRATE_HIGHATOMIC:
        pgdat.zones[z, Z_FREE_HIGHATOMIC] += nr_pages


@jit_inline
def add_to_free_list(pgdat, z, pfn, order, mt, tail):
    """__add_to_free_list(): mark pfn a buddy of `order` and link it at the head or the tail."""
    mem_map = pgdat.mem_map
    area = pgdat.free_area[z, order, mt]
    mem_map[pfn].type = PAGE_BUDDY
    mem_map[pfn].order = order
    mem_map[pfn].flags = 0
    if area[FA_HEAD] < 0:
        mem_map[pfn].next = -1
        mem_map[pfn].prev = -1
        area[FA_HEAD] = pfn
        area[FA_TAIL] = pfn
    elif tail:
        last = area[FA_TAIL]
        mem_map[pfn].prev = last
        mem_map[pfn].next = -1
        mem_map[last].next = pfn
        area[FA_TAIL] = pfn
    else:
        first = area[FA_HEAD]
        mem_map[pfn].next = first
        mem_map[pfn].prev = -1
        mem_map[first].prev = pfn
        area[FA_HEAD] = pfn
    area[FA_COUNT] += 1


@jit_inline
def del_from_free_list(pgdat, z, pfn, order, mt):
    """__del_page_from_free_list(): unlink; the page stops being a buddy (becomes a tail)."""
    mem_map = pgdat.mem_map
    area = pgdat.free_area[z, order, mt]
    nxt = mem_map[pfn].next
    prv = mem_map[pfn].prev
    if prv >= 0:
        mem_map[prv].next = nxt
    else:
        area[FA_HEAD] = nxt
    if nxt >= 0:
        mem_map[nxt].prev = prv
    else:
        area[FA_TAIL] = prv
    area[FA_COUNT] -= 1
    mem_map[pfn].type = PAGE_TAIL
    mem_map[pfn].next = -1
    mem_map[pfn].prev = -1


@jit
def move_to_free_list(pgdat, z, pfn, order, old_mt, new_mt):
    """move_to_free_list(): to the tail of another migratetype's list, moving the accounting."""
    del_from_free_list(pgdat, z, pfn, order, old_mt)
    add_to_free_list(pgdat, z, pfn, order, new_mt, True)
    account_freepages(pgdat, z, -(1 << order), old_mt)
    account_freepages(pgdat, z, 1 << order, new_mt)


@jit_inline
def expand(pgdat, z, pfn, low, high, mt):
    """expand(): split a block of order `high` down to `low`, freeing the upper halves.

    Returns the number of pages put back on the free lists."""
    nr_added = 0
    size = 1 << high
    while high > low:
        high -= 1
        size >>= 1
        add_to_free_list(pgdat, z, pfn + size, high, mt, False)
        nr_added += size
    return nr_added


@jit_inline
def page_del_and_expand(pgdat, z, pfn, low, high, mt):
    del_from_free_list(pgdat, z, pfn, high, mt)
    nr_added = expand(pgdat, z, pfn, low, high, mt)
    account_freepages(pgdat, z, -((1 << high) - nr_added), mt)


@jit_inline
def prefetch_next_pop(mem_map, head):
    """A pop from the head of a list (buddy or pcp) writes the prev link of the block after
    the one it takes, a cache miss when the list is long and cold; each pop waits for the one
    before it. Start fetching, for the next pop from this list, the block after the new `head`
    (a hint to the CPU only: nothing simulated changes)."""
    if head >= 0:
        nxt = np.int64(mem_map[head].next)
        if nxt >= 0:
            prefetchw(mem_map, nxt)


@jit_inline
def rmqueue_smallest(pgdat, z, order, mt):
    """__rmqueue_smallest(): first block on the smallest non-empty list of `mt` at >= order."""
    for current_order in range(order, NR_PAGE_ORDERS):
        pfn = pgdat.free_area[z, current_order, mt, FA_HEAD]
        if pfn >= 0:
            page_del_and_expand(pgdat, z, pfn, order, current_order, mt)
            prefetch_next_pop(pgdat.mem_map, pgdat.free_area[z, current_order, mt, FA_HEAD])
            return pfn
    return -1


@jit
def should_try_claim_block(order, start_mt):
    """should_try_claim_block(): large enough buddies, or any unmovable/reclaimable request."""
    if order >= PAGEBLOCK_ORDER // 2:
        return True
    return start_mt == MIGRATE_RECLAIMABLE or start_mt == MIGRATE_UNMOVABLE


@jit
def find_suitable_fallback(pgdat, z, order, start_mt, claimable):
    """find_suitable_fallback(): -2 when too small to claim, -1 when no fallback list has one."""
    if claimable and not should_try_claim_block(order, start_mt):
        return -2
    for i in range(pgdat.fallbacks.shape[1]):
        fallback_mt = pgdat.fallbacks[start_mt, i]
        if fallback_mt < 0:
            break
        if pgdat.free_area[z, order, fallback_mt, FA_COUNT] > 0:
            return fallback_mt
    return -1


@jit
def prep_move_freepages_block(pgdat, z, pfn):
    """prep_move_freepages_block(): count free and movable (LRU) pages in pfn's pageblock.

    Returns (start_pfn, free_pages, movable_pages), start_pfn -1 if the block leaves the zone."""
    start = pfn & ~(PAGEBLOCK_NR_PAGES - 1)
    end = start + PAGEBLOCK_NR_PAGES
    if start < pgdat.zones[z, Z_START] or end > pgdat.zones[z, Z_END]:
        return -1, 0, 0
    mem_map = pgdat.mem_map
    free_pages = 0
    movable_pages = 0
    p = start
    if mem_map[p].type == PAGE_TAIL:   # second half of an order-10 block
        head = p & ~((1 << MAX_PAGE_ORDER) - 1)
        if mem_map[head].type == PAGE_BUDDY:
            return start, PAGEBLOCK_NR_PAGES, 0
        if pgdat.kind_is_lru[mem_map[head].kind] and mem_map[head].prev != FOLIO_ISOLATED:
            return start, 0, PAGEBLOCK_NR_PAGES
        return start, 0, 0
    while p < end:
        order = mem_map[p].order
        n = 1 << order
        if mem_map[p].type == PAGE_BUDDY:
            free_pages += n
        elif pgdat.kind_is_lru[mem_map[p].kind] and mem_map[p].prev != FOLIO_ISOLATED:
            movable_pages += n
        p += n
    return start, min(free_pages, PAGEBLOCK_NR_PAGES), min(movable_pages, PAGEBLOCK_NR_PAGES)


@jit
def move_freepages_block(pgdat, z, start, old_mt, new_mt):
    """__move_freepages_block(): every free block in the pageblock to new_mt's lists."""
    mem_map = pgdat.mem_map
    p = start
    end = start + PAGEBLOCK_NR_PAGES
    moved = 0
    while p < end:
        if mem_map[p].type == PAGE_BUDDY:
            order = mem_map[p].order
            move_to_free_list(pgdat, z, p, order, old_mt, new_mt)
            moved += 1 << order
            p += 1 << order
        elif mem_map[p].type == PAGE_HEAD:
            p += 1 << mem_map[p].order
        else:
            p += 1
    return moved


@jit
def try_to_claim_block(pgdat, z, pfn, current_order, order, start_mt, block_mt):
    """try_to_claim_block(): take over the pageblock of a fallback buddy, or give up (-1)."""
    if current_order >= PAGEBLOCK_ORDER:
        del_from_free_list(pgdat, z, pfn, current_order, block_mt)
        account_freepages(pgdat, z, -(1 << current_order), block_mt)
        change_pageblock_range(pgdat, pfn, current_order, start_mt)
        nr_added = expand(pgdat, z, pfn, order, current_order, start_mt)
        account_freepages(pgdat, z, nr_added, start_mt)
        return pfn
    start, free_pages, movable_pages = prep_move_freepages_block(pgdat, z, pfn)
    if start < 0:
        return -1
    if start_mt == MIGRATE_MOVABLE:
        alike_pages = movable_pages
    elif block_mt == MIGRATE_MOVABLE:
        alike_pages = PAGEBLOCK_NR_PAGES - (free_pages + movable_pages)
    else:
        alike_pages = 0
    if free_pages + alike_pages >= PAGEBLOCK_NR_PAGES // 2:
        move_freepages_block(pgdat, z, start, block_mt, start_mt)
        set_pageblock_migratetype(pgdat, start, start_mt)
        return rmqueue_smallest(pgdat, z, order, start_mt)
    return -1


@jit
def rmqueue_claim(pgdat, z, order, start_mt, alloc_flags):
    """__rmqueue_claim(): the largest fallback buddy first, claiming its block if we may."""
    min_order = order
    if order < PAGEBLOCK_ORDER and (alloc_flags & ALLOC_NOFRAGMENT):
        min_order = PAGEBLOCK_ORDER
    for current_order in range(MAX_PAGE_ORDER, min_order - 1, -1):
        fallback_mt = find_suitable_fallback(pgdat, z, current_order, start_mt, True)
        if fallback_mt == -1:
            continue
        if fallback_mt == -2:
            break
        pfn = pgdat.free_area[z, current_order, fallback_mt, FA_HEAD]
        pfn = try_to_claim_block(pgdat, z, pfn, current_order, order, start_mt, fallback_mt)
        if pfn >= 0:
            if tracing(pgdat.trace_log):
                trace_extfrag(pgdat.trace_log, pfn, order, current_order, start_mt, fallback_mt,
                              get_pageblock_migratetype(pgdat, pfn))
            return pfn
    return -1


@jit
def rmqueue_steal(pgdat, z, order, start_mt):
    """__rmqueue_steal(): the smallest fallback buddy, leaving its block's type alone."""
    for current_order in range(order, NR_PAGE_ORDERS):
        fallback_mt = find_suitable_fallback(pgdat, z, current_order, start_mt, False)
        if fallback_mt < 0:
            continue
        pfn = pgdat.free_area[z, current_order, fallback_mt, FA_HEAD]
        page_del_and_expand(pgdat, z, pfn, order, current_order, fallback_mt)
        if tracing(pgdat.trace_log):
            trace_extfrag(pgdat.trace_log, pfn, order, current_order, start_mt, fallback_mt,
                          get_pageblock_migratetype(pgdat, pfn))
        return pfn
    return -1


@jit_inline
def rmqueue(pgdat, z, order, mt, alloc_flags):
    """__rmqueue(): own lists, then CMA, then claim a fallback block, then steal."""
    zone = pgdat.zones[z]
    use_cma = (alloc_flags & ALLOC_CMA) != 0
    if use_cma and zone[Z_FREE_CMA] > zone[Z_FREE] // 2:
        pfn = rmqueue_smallest(pgdat, z, order, MIGRATE_CMA)
        if pfn >= 0:
            return pfn
    pfn = rmqueue_smallest(pgdat, z, order, mt)
    if pfn >= 0:
        return pfn
    if use_cma:
        pfn = rmqueue_smallest(pgdat, z, order, MIGRATE_CMA)
        if pfn >= 0:
            return pfn
    pfn = rmqueue_claim(pgdat, z, order, mt, alloc_flags)
    if pfn >= 0:
        return pfn
    if not (alloc_flags & ALLOC_NOFRAGMENT):
        return rmqueue_steal(pgdat, z, order, mt)
    return -1


@jit
def rmqueue_buddy(pgdat, z, order, mt, alloc_flags):
    """rmqueue_buddy(): __rmqueue() from the buddy lists; an ALLOC_HIGHATOMIC request tries the
    HIGHATOMIC lists first, and (from 6.3) a request that cannot sleep or is the OOM path's
    tries them last, as failing now is worse than failing a future atomic allocation."""
    pfn = -1
    if alloc_flags & ALLOC_HIGHATOMIC:
        pfn = rmqueue_smallest(pgdat, z, order, MIGRATE_HIGHATOMIC)
    if pfn < 0:
        pfn = rmqueue(pgdat, z, order, mt, alloc_flags)
    if pfn < 0 and (alloc_flags & (ALLOC_OOM | ALLOC_NON_BLOCK)) \
            and pgdat.node[N_HIGHATOMIC_POLICY] != highatomic.POLICY_RESERVED_PLUS_BLOCK:
        pfn = rmqueue_smallest(pgdat, z, order, MIGRATE_HIGHATOMIC)
    return pfn


# ---- watermarks and the zonelist walk ------------------------------------------------------

@jit_inline
def zone_watermark_ok(pgdat, z, order, highest_zoneidx, alloc_flags):
    """__zone_watermark_ok(): free pages above the mark plus lowmem_reserve, and for order > 0
    a free block of at least `order` on a list this request may use. Without ALLOC_RESERVES the
    highatomic reserve is not free (__zone_watermark_unusable_free()); __GFP_HIGH may use half
    the min mark, a request that cannot sleep a quarter of the rest as well."""
    if alloc_flags & ALLOC_NO_WATERMARKS:
        return True
    zone = pgdat.zones[z]
    free_pages = zone[Z_FREE] - ((1 << order) - 1)
    if not (alloc_flags & ALLOC_RESERVES):
        free_pages -= highatomic.unusable_free(pgdat, z)       # highatomic hook
    if not (alloc_flags & ALLOC_CMA):
        free_pages -= zone[Z_FREE_CMA]
    mark = zone[Z_WMARK_MIN + (alloc_flags & ALLOC_WMARK_MASK)]
    if alloc_flags & ALLOC_MIN_RESERVE:
        mark -= mark // 2
        if alloc_flags & ALLOC_NON_BLOCK:
            mark -= mark // 4
    if alloc_flags & ALLOC_OOM:
        mark -= mark // 2
    if free_pages <= mark + zone[Z_LOWMEM_RESERVE + highest_zoneidx]:
        return False
    if order == 0:
        return True
    for o in range(order, NR_PAGE_ORDERS):
        for mt in range(MIGRATE_PCPTYPES):
            if pgdat.free_area[z, o, mt, FA_COUNT] > 0:
                return True
        if (alloc_flags & ALLOC_CMA) and pgdat.free_area[z, o, MIGRATE_CMA, FA_COUNT] > 0:
            return True
        if (alloc_flags & (ALLOC_HIGHATOMIC | ALLOC_OOM)) \
                and pgdat.free_area[z, o, MIGRATE_HIGHATOMIC, FA_COUNT] > 0:
            return True
    return False


@jit_inline
def alloc_flags_nofragment(pgdat, zone_idx):
    """alloc_flags_nofragment(): Normal avoids fragmenting while DMA32 below it has memory."""
    dma32 = pgdat.zones[ZONE_DMA32]
    if zone_idx == ZONE_NORMAL and dma32[Z_END] > dma32[Z_START]:
        return ALLOC_NOFRAGMENT
    return 0


@jit_inline
def preferred_zone(pgdat, highest_zoneidx):
    """The first populated zone of the zonelist (ac->preferred_zoneref), -1 if none."""
    for z in range(highest_zoneidx, -1, -1):
        if pgdat.zones[z, Z_END] > pgdat.zones[z, Z_START]:
            return z
    return -1


@jit_inline
def get_page_from_freelist(pgdat, order, mt, alloc_flags, highest_zoneidx):
    """get_page_from_freelist(): walk the zonelist from highest_zoneidx down; if every zone
    failed while avoiding fragmentation, walk it again without. Returns (pfn, zone index)."""
    preferred = preferred_zone(pgdat, highest_zoneidx)
    flags = alloc_flags
    while preferred >= 0:
        for z in range(preferred, -1, -1):
            if pgdat.zones[z, Z_END] <= pgdat.zones[z, Z_START]:
                continue
            # pcp hook: ZONE_BELOW_HIGH detection, then rmqueue() through the per-CPU lists
            if not pcp.zone_above_high(pgdat, z, order, highest_zoneidx, flags) \
                    and not zone_watermark_ok(pgdat, z, order, highest_zoneidx, flags):
                continue
            pfn = pcp.rmqueue(pgdat, z, order, mt, flags)
            if pfn >= 0:
                if flags & ALLOC_HIGHATOMIC:                   # highatomic hook
                    highatomic.reserve_highatomic_pageblock(pgdat, z, pfn, order)
                return pfn, z
        if flags & ALLOC_NOFRAGMENT:
            flags &= ~ALLOC_NOFRAGMENT
            continue
        break
    return -1, -1


# ---- folios --------------------------------------------------------------------------------

@jit_inline
def take_handle(pgdat, pfn):
    """The first free handle of the chain, now naming pfn. The chain runs through the free
    slots, so the next take reads the slot of the new first: it starts being fetched now (a
    hint only, as prefetch_next_pop())."""
    h = pgdat.node[N_HANDLE_FREE]
    nxt = -2 - pgdat.folio_pfn[h]
    pgdat.node[N_HANDLE_FREE] = nxt
    pgdat.node[N_HANDLES_AVAIL] -= 1
    pgdat.folio_pfn[h] = pfn
    if nxt >= 0:
        prefetchw(pgdat.folio_pfn, nxt)
    return h


@jit_inline
def put_handle(pgdat, h):
    pgdat.folio_pfn[h] = -2 - pgdat.node[N_HANDLE_FREE]
    pgdat.node[N_HANDLE_FREE] = h
    pgdat.node[N_HANDLES_AVAIL] += 1


@jit_inline
def prep_new_folio(pgdat, pfn, order, kind, flags):
    """prep_new_page() + folio setup: pfn becomes a folio head holding a fresh handle."""
    mem_map = pgdat.mem_map
    mem_map[pfn].type = PAGE_HEAD
    mem_map[pfn].order = order
    mem_map[pfn].kind = kind
    mem_map[pfn].flags = flags
    mem_map[pfn].prev = FOLIO_ON_LRU
    mem_map[pfn].next = take_handle(pgdat, pfn)
    pgdat.node[N_NR_FOLIOS] += 1
    pgdat.node[N_KIND_PAGES + kind] += 1 << order


@jit
def alloc_folio(pgdat, order, mt, kind, flags, alloc_flags):
    """__alloc_pages() without reclaim: the fast path at alloc_flags' watermark (avoiding
    fragmentation where alloc_flags_nofragment() says so), then the slow path's min watermark
    with the reserve bits gfp_to_alloc_flags() gives the caller (passed shifted up by
    ALLOC_SLOWPATH_SHIFT: a GFP_ATOMIC or, 6.3 .. 6.17, GFP_NOWAIT request between the min and
    low watermarks reserves its pageblock here, as the kernel's first slow-path try does).
    Movable requests may use ZONE_MOVABLE and CMA (gfp_zone(), gfp_to_alloc_flags_cma()).

    Returns the folio's head PFN or -1. The caller guarantees a free handle."""
    highest = ZONE_MOVABLE if mt == MIGRATE_MOVABLE else ZONE_NORMAL
    slowpath = alloc_flags >> ALLOC_SLOWPATH_SHIFT
    alloc_flags &= (1 << ALLOC_SLOWPATH_SHIFT) - 1
    if mt == MIGRATE_MOVABLE:
        alloc_flags |= ALLOC_CMA
    nofragment = alloc_flags_nofragment(pgdat, preferred_zone(pgdat, highest))
    pfn, z = get_page_from_freelist(pgdat, order, mt, alloc_flags | nofragment, highest)
    if pfn < 0 and (alloc_flags & ALLOC_WMARK_MASK) != ALLOC_WMARK_MIN:
        pfn, z = get_page_from_freelist(pgdat, order, mt, (alloc_flags & ~ALLOC_WMARK_MASK)
                                        | ALLOC_WMARK_MIN | slowpath, highest)
    if pfn < 0:
        return -1
    prep_new_folio(pgdat, pfn, order, kind, flags)
    pgdat.events[ev.PGALLOC_FIRST + z] += 1 << order
    return pfn


@jit
def alloc_folios(pgdat, out, order, mt, kind, flags, alloc_flags):
    """Fill `out` with new folios until it is full or an allocation fails; returns the count."""
    for i in range(out.shape[0]):
        pfn = alloc_folio(pgdat, order, mt, kind, flags, alloc_flags)
        if pfn < 0:
            return i
        out[i] = pfn
    return out.shape[0]


@jit_inline
def page_is_buddy(pgdat, buddy, order, z):
    if buddy < pgdat.zones[z, Z_START] or buddy >= pgdat.zones[z, Z_END]:
        return False
    page = pgdat.mem_map[buddy]
    return page.type == PAGE_BUDDY and page.order == order


@jit_inline
def mergeable(mt):
    """migratetype_is_mergeable(): only the three PCP types merge across pageblocks."""
    return mt < MIGRATE_PCPTYPES


# node[N_CAPTURE_POLICY] values (the profile's `capture`); 0 (a bare PgData) behaves as newest
CAPTURE_NO_SMALL_MOVABLE = 1
CAPTURE_MOVABLE_TO_MOVABLE = 2
CAPTURE_POLICIES = {
    # Mel Gorman, "mm, compaction: capture a page under direct compaction" (5.1)
    "no_small_movable": CAPTURE_NO_SMALL_MOVABLE,
    # Baolin Wang, "mm: page_alloc: allowing mTHP compaction to capture the freed page
    # directly" (6.10 ~)
    "movable_to_movable": CAPTURE_MOVABLE_TO_MOVABLE,
}


@jit
def compaction_capture(pgdat, z, pfn, order, mt):
    """compaction_capture() with task_capc(): while a direct compaction of this zone waits for a
    block of its order, the first such block freed (as freed, or merged up to it) is handed to
    it instead of the free lists. Never from CMA or isolated blocks. A MOVABLE block below a
    pageblock: never before 6.10 (no_small_movable), from 6.10 only to a MOVABLE request
    (movable_to_movable). HIGHATOMIC blocks are not refused by any release: a reserve page of
    the compaction's order goes to the compacting request, atomic or not, and leaves the
    reserve's free count (nr_free_highatomic) as any allocation from it does. The block stops
    counting as free."""
    if pgdat.node[N_CAPTURE_PFN] != 0 or order + 1 != pgdat.node[N_CAPTURE_ORDER]:
        return False
    where = pgdat.node[N_CAPTURE_WHERE]
    want_mt = where % MIGRATE_TYPES
    if where // MIGRATE_TYPES != z or mt == MIGRATE_CMA or mt == MIGRATE_ISOLATE:
        return False
    if order < PAGEBLOCK_ORDER and mt == MIGRATE_MOVABLE and (
            want_mt != MIGRATE_MOVABLE
            or pgdat.node[N_CAPTURE_POLICY] == CAPTURE_NO_SMALL_MOVABLE):
        return False
    account_freepages(pgdat, z, -(np.int64(1) << order), mt)
    pgdat.mem_map[pfn].type = PAGE_TAIL
    pgdat.mem_map[pfn].order = order
    pgdat.node[N_CAPTURE_PFN] = pfn + 1
    return True


@jit_inline
def free_one_page(pgdat, z, pfn, order, mt, to_tail):
    """__free_one_page(): merge with free buddies, then link head or tail.

    The merged block goes to the tail when its next-larger buddy is free too (buddy_merge_likely),
    so that the pair is not split again soon. Pageblocks of different mergeable types merge, the
    buddy's blocks taking the freed block's type; isolated and CMA blocks never merge with
    others."""
    account_freepages(pgdat, z, 1 << order, mt)
    capturing = pgdat.node[N_CAPTURE_ORDER] != 0
    buddy = pfn
    while order < MAX_PAGE_ORDER:
        if capturing and compaction_capture(pgdat, z, pfn, order, mt):
            return
        buddy = pfn ^ (1 << order)
        if not page_is_buddy(pgdat, buddy, order, z):
            break
        buddy_mt = mt
        if order >= PAGEBLOCK_ORDER:
            buddy_mt = get_pageblock_migratetype(pgdat, buddy)
            if buddy_mt != mt and not (mergeable(mt) and mergeable(buddy_mt)):
                break
        del_from_free_list(pgdat, z, buddy, order, buddy_mt)
        if buddy_mt != mt:
            change_pageblock_range(pgdat, buddy, order, mt)
        pfn = pfn & buddy
        order += 1
    if not to_tail and order < MAX_PAGE_ORDER - 1:
        higher = pfn & buddy
        to_tail = page_is_buddy(pgdat, higher ^ (1 << (order + 1)), order + 1, z)
    add_to_free_list(pgdat, z, pfn, order, mt, to_tail)


@jit
def free_pages_range(pgdat, pfn, order, to_tail):
    """free_one_page() + split_large_buddy(): blocks above pageblock_order free per pageblock,
    each with its own block's migratetype."""
    z = page_zone(pgdat, pfn)
    if order > PAGEBLOCK_ORDER:
        for i in range(1 << (order - PAGEBLOCK_ORDER)):
            p = pfn + i * PAGEBLOCK_NR_PAGES
            pgdat.mem_map[p].type = PAGE_TAIL
            free_one_page(pgdat, z, p, PAGEBLOCK_ORDER, get_pageblock_migratetype(pgdat, p),
                          to_tail)
    else:
        free_one_page(pgdat, z, pfn, order, get_pageblock_migratetype(pgdat, pfn), to_tail)
    pgdat.events[ev.PGFREE] += 1 << order


@jit_inline
def release_folio(pgdat, pfn):
    """Drop a folio's identity (handle, kind accounting) before its pages return to the buddy."""
    page = pgdat.mem_map[pfn]
    deferred_split.folio_unqueue_deferred_split(pgdat, pfn)
    put_handle(pgdat, page.next)
    pgdat.node[N_NR_FOLIOS] -= 1
    pgdat.node[N_KIND_PAGES + page.kind] -= 1 << page.order
    pgdat.mem_map[pfn].type = PAGE_TAIL


@jit_inline
def check_folio_head(pgdat, pfn):
    if pfn < 0 or pfn >= pgdat.mem_map.shape[0]:
        return E_RANGE
    if pgdat.mem_map[pfn].type != PAGE_HEAD:
        return E_NOT_HEAD
    if pgdat.mem_map[pfn].prev == FOLIO_ISOLATED:
        return E_ISOLATED
    # free_pages_prepare() keeps a PageHWPoison page off the buddy lists for good; here the
    # poisoned page belongs to memory_failure(), so freeing or splitting it is refused
    if pgdat.mem_map[pfn].flags & PG_HWPOISON:
        return E_HWPOISON
    return E_OK


@jit
def free_folio(pgdat, pfn):
    """folio_put() of the last reference: the folio's pages go back to the buddy allocator."""
    err = check_folio_head(pgdat, pfn)
    if err != E_OK:
        return err
    order = np.int64(pgdat.mem_map[pfn].order)
    release_folio(pgdat, pfn)
    pcp.free_unref_folio(pgdat, pfn, order)         # pcp hook
    return E_OK


# free_folios() prefetches this many folios ahead (8..16 measured best on this project's VM:
# far enough to hide a miss, near enough that the lines are still in L1/L2 when used)
FREE_PREFETCH_DISTANCE = 8


@jit_inline
def prefetch_buddy(pgdat, pfn, order):
    """prefetch_buddy(), which the kernel's free_pcppages_bulk() once had: start fetching the
    mem_map records that freeing the block at pfn looks at first, its buddy and the buddy one
    order up (whether the merged block goes to the tail). A hint to the CPU only: nothing
    simulated changes, the cache misses of a batch of frees overlap instead of stalling one
    after another."""
    mem_map = pgdat.mem_map
    buddy = pfn ^ (np.int64(1) << order)
    if order < MAX_PAGE_ORDER and buddy < mem_map.shape[0]:
        prefetchw(mem_map, buddy)
    higher = (pfn & ~(np.int64(1) << order)) ^ (np.int64(2) << order)
    if order < MAX_PAGE_ORDER - 1 and higher < mem_map.shape[0]:
        prefetchw(mem_map, higher)


@jit_inline
def prefetch_free_folio(pgdat, pfn):
    """prefetch_buddy() of the folio headed at pfn, and its handle's slot, which freeing it
    writes (a hint only, as prefetch_buddy())."""
    mem_map = pgdat.mem_map
    prefetchw(pgdat.folio_pfn, np.int64(mem_map[pfn].next))
    prefetch_buddy(pgdat, pfn, np.int64(mem_map[pfn].order))


@jit
def free_folios(pgdat, pfns):
    """free_many: all heads are checked (and duplicates caught) before anything is freed.

    Returns (E_OK, -1) or (error, index of the offending entry).

    The freeing pass prefetches ahead (FREE_PREFETCH_DISTANCE): the folios of a batch lie
    anywhere in mem_map, and without it every free stalls on its own cache misses one after
    another. The folio record 2 * distance frees ahead, then what freeing it writes
    (prefetch_free_folio(), which reads the record) distance frees ahead."""
    mem_map = pgdat.mem_map
    n = pfns.shape[0]
    # Mark each head isolated while checking: a second entry for the same folio then fails the
    # check. Freeing drops the mark; on error we clear it ourselves.
    for i in range(n):
        err = check_folio_head(pgdat, pfns[i])
        if err != E_OK:
            for j in range(i):
                mem_map[pfns[j]].prev = FOLIO_ON_LRU
                if pfns[j] == pfns[i]:
                    err = E_DUPLICATE
            return err, i
        mem_map[pfns[i]].prev = FOLIO_ISOLATED
    d = FREE_PREFETCH_DISTANCE
    for i in range(n):
        if i + 2 * d < n:
            prefetchw(mem_map, pfns[i + 2 * d])
        if i + d < n:
            prefetch_free_folio(pgdat, pfns[i + d])
        pfn = pfns[i]
        order = np.int64(mem_map[pfn].order)
        release_folio(pgdat, pfn)
        pcp.free_unref_folio(pgdat, pfn, order)     # pcp hook (free_unref_folios())
    return E_OK, -1


@jit
def split_folio(pgdat, pfn, new_order):
    """split_folio_to_order() of a folio the caller holds (not isolated). Returns an error code."""
    err = check_folio_head(pgdat, pfn)
    if err != E_OK:
        return err
    return folio_split(pgdat, pfn, new_order)


@jit
def folio_split(pgdat, pfn, new_order):
    """__folio_split() to a uniform new_order: the head keeps its handle, every other piece
    becomes a folio of its own with the same kind, flags and isolation state; the folio leaves
    the deferred split queue (simcore.deferred_split). Returns an error code. The caller
    guarantees enough free handles (one per new folio).

    Refused without counting, as the kernel's checks before it starts: hugetlb, order-1 anon.
    Failed and counted (split_failed of the folio's order, thp_split_page_failed at PMD order),
    as the kernel's __folio_split() fails:
    - under writeback: -EBUSY;
    - a dirty page-cache (KIND_FILE) folio: filemap_release_folio() must drop the folio's
      private data first, and a buffer-head filesystem's release (try_to_free_buffers(), via
      ext4's jbd2_journal_try_to_free_buffers()) refuses dirty buffers: -EBUSY. Shmem has no
      private data and anon none to release, so their dirty folios split;
    - pinned (references beyond mapcount + page cache + the caller's): can_split_folio() says
      no, -EAGAIN.
    Simplification: the kernel also fails on references and folio locks held for a moment by
    others (a read() copying from the folio, a fault holding its lock); no snapshot or model
    state shows those, so they are not modelled."""
    mem_map = pgdat.mem_map
    order = np.int64(mem_map[pfn].order)
    kind = mem_map[pfn].kind
    if new_order < 0 or new_order >= order:
        return E_ORDER
    if kind == KIND_HUGETLB:
        return E_HUGETLB
    if kind == KIND_ANON and new_order == 1:
        return E_ANON_ORDER1
    flags = mem_map[pfn].flags
    err = E_OK
    if flags & PG_WRITEBACK:
        err = E_BUSY
    elif kind == KIND_FILE and (flags & PG_DIRTY):
        err = E_BUSY
    elif flags & PG_PINNED:
        err = E_PINNED
    if err != E_OK:
        pgdat.mthp_stats[order, ev.MTHP_STAT_SPLIT_FAILED] += 1
        if order == HPAGE_PMD_ORDER:
            pgdat.events[ev.THP_SPLIT_PAGE_FAILED] += 1
        return err
    deferred_split.folio_unqueue_deferred_split(pgdat, pfn)    # the pieces are not flagged
    lru = mem_map[pfn].prev
    mem_map[pfn].order = new_order
    step = 1 << new_order
    for p in range(pfn + step, pfn + (1 << order), step):
        mem_map[p].type = PAGE_HEAD
        mem_map[p].order = new_order
        mem_map[p].kind = kind
        mem_map[p].flags = flags
        mem_map[p].prev = lru
        mem_map[p].next = take_handle(pgdat, p)
        pgdat.node[N_NR_FOLIOS] += 1
    pgdat.mthp_stats[order, ev.MTHP_STAT_SPLIT] += 1
    if order == HPAGE_PMD_ORDER:
        pgdat.events[ev.THP_SPLIT_PAGE] += 1
    return E_OK


@jit
def free_area_init(pgdat):
    """memblock_free_all() and cma_activate_area() for our memory: every zone freed pageblock
    by pageblock (so CMA blocks stay apart), low PFNs first and to the tail as
    __free_pages_core() does; buddies merge up to MAX_PAGE_ORDER where their types allow."""
    zones = pgdat.zones
    for z in range(zones.shape[0]):
        pfn = zones[z, Z_START]
        end = zones[z, Z_END]
        while pfn < end:
            order = PAGEBLOCK_ORDER
            while order > 0 and ((pfn & ((1 << order) - 1)) != 0 or pfn + (1 << order) > end):
                order -= 1
            free_one_page(pgdat, z, pfn, order, get_pageblock_migratetype(pgdat, pfn), True)
            pfn += 1 << order


# ---- entry points: Python passes PgData, compiled code works on its PgView ---------------
# The four allocation and free entry points take PgData.view (one int) instead: Machine calls
# them once per alloc()/free(), and unboxing the StructRef would be most of such a call.

# The single-call entry points (Machine.alloc()/free(), one folio per call from Python) keep
# the GIL: releasing and taking it back costs more than the allocator's own work on a call
jit_gil = nb.njit(cache=True, forceinline=False)


@jit_gil
def entry_alloc_folio(view, order, mt, kind, flags, alloc_flags):
    """alloc_folio(), or -2 when the handle table is full (the caller grows it and retries)."""
    pgdat = view_at(view)
    if pgdat.node[N_HANDLES_AVAIL] < 1:
        return -2
    return alloc_folio(pgdat, order, mt, kind, flags, alloc_flags)


@jit_gil
def entry_alloc_movable_anon(view, order):
    """entry_alloc_folio() of Machine.alloc(order)'s defaults (movable, anon, no flags, the
    low watermark): two arguments to convert instead of six."""
    pgdat = view_at(view)
    if pgdat.node[N_HANDLES_AVAIL] < 1:
        return -2
    return alloc_folio(pgdat, order, MIGRATE_MOVABLE, KIND_ANON, 0, ALLOC_WMARK_LOW)


@jit
def entry_alloc_folios(view, out, order, mt, kind, flags, alloc_flags):
    return alloc_folios(view_at(view), out, order, mt, kind, flags, alloc_flags)


@jit_gil
def entry_free_folio(view, pfn):
    return free_folio(view_at(view), pfn)


@jit
def entry_free_folios(view, pfns):
    return free_folios(view_at(view), pfns)


@jit
def entry_split_folio(node, pfn, new_order):
    return split_folio(node.arrays, pfn, new_order)


@jit
def entry_free_area_init(node):
    free_area_init(node.arrays)
