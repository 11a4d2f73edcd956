"""Invariant checks over the whole node, in the spirit of CONFIG_DEBUG_VM and page_owner walks.

check_pgdat() returns the first broken rule as (code, pfn, detail); Machine.check() turns it into
an InvariantError naming the PFN and the rule.
"""
import numba as nb
import numpy as np

from . import pcp
from .mmzone import (
    FOLIO_ON_LRU,
    MAX_PAGE_ORDER,
    MIGRATE_CMA,
    MIGRATE_ISOLATE,
    MIGRATE_PCPTYPES,
    MIGRATE_TYPES,
    NR_KINDS,
    NR_PAGE_ORDERS,
    PAGE_BUDDY,
    PAGE_OFFLINE,
    PAGE_PCP,
    PAGE_TAIL,
    PAGEBLOCK_ORDER,
    PB_MIGRATETYPE_MASK,
)
from .pgdat import (
    FA_COUNT,
    FA_HEAD,
    FA_TAIL,
    N_HANDLES_AVAIL,
    N_KIND_PAGES,
    N_NR_FOLIOS,
    Z_END,
    Z_FREE,
    Z_FREE_CMA,
    Z_START,
)

RULES = (
    "ok",
    "page is in no free block and no folio",                           # 1
    "block is not aligned to its order",                               # 2
    "block runs past the end of its zone",                             # 3
    "block overlaps another block (a page inside it is a head)",        # 4
    "order out of range 0..MAX_PAGE_ORDER",                            # 5
    "free block spans pageblocks of different migratetypes",          # 6
    "free buddies left unmerged where merging was allowed",            # 7
    "free-list entry is not a free block of that order, zone and migratetype",  # 8
    "free-list links are inconsistent (prev/next or tail)",            # 9
    "free-list length differs from its nr_free count",                 # 10
    "free block is on no free list",                                   # 11
    "zone free-page counter differs from its free lists",              # 12
    "folio handle does not map back to the folio",                     # 13
    "folio kind out of range",                                         # 14
    "node folio or per-kind page counters differ from mem_map",        # 15
    "folio handle table is inconsistent",                              # 16
    "folio left isolated (off the LRU) after the operation ended",     # 17
    "pcp-list entry is not a per-CPU free block of that list's order and zone",  # 18
    "pcp-list links are inconsistent (prev/next or tail)",             # 19
    "pcp-list length or a CPU's pcp count differs from its entries",   # 20
    "page on a pcp list in an isolated pageblock",                     # 21
    "per-CPU free block is on no pcp list",                            # 22
)
C_ORPHAN, C_ALIGN, C_SPAN, C_OVERLAP, C_ORDER, C_BLOCK_MT, C_UNMERGED, C_LIST_ENTRY, C_LINKS, \
    C_COUNT, C_OFF_LIST, C_ZONE_FREE, C_HANDLE, C_KIND, C_NODE_COUNT, C_HANDLE_TABLE, \
    C_ISOLATED = range(1, 18)
C_PCP_FIRST = 17            # + pcp.check_pcp() code
C_PCP_OFF_LIST = 22


@nb.njit(cache=True, nogil=True)
def _block_mt(pageblock_flags, pfn):
    return np.int64(pageblock_flags[pfn >> PAGEBLOCK_ORDER] & PB_MIGRATETYPE_MASK)


@nb.njit(cache=True, nogil=True)
def check_pgdat(pgdat):
    """Walk mem_map, the free lists, the counters and the handle table.
    Returns (code, pfn, detail)."""
    mem_map = pgdat.mem_map
    pbf = pgdat.pageblock_flags
    zones = pgdat.zones
    nz = zones.shape[0]
    seen = np.zeros((nz, NR_PAGE_ORDERS, MIGRATE_TYPES), dtype=np.int64)
    nr_folios = 0
    kind_pages = np.zeros(NR_KINDS, dtype=np.int64)
    for z in range(nz):
        start = zones[z, Z_START]
        end = zones[z, Z_END]
        pcp_heads = 0
        pfn = start
        while pfn < end:
            page = mem_map[pfn]
            if page.type == PAGE_TAIL:
                return C_ORPHAN, pfn, 0
            order = np.int64(page.order)
            if order < 0 or order > MAX_PAGE_ORDER:
                return C_ORDER, pfn, order
            n = np.int64(1) << order
            if pfn & (n - 1):
                return C_ALIGN, pfn, order
            if pfn + n > end:
                return C_SPAN, pfn, order
            for p in range(pfn + 1, pfn + n):
                if mem_map[p].type != PAGE_TAIL:
                    return C_OVERLAP, p, pfn
            if page.type == PAGE_OFFLINE:
                pass
            elif page.type == PAGE_PCP:
                pcp_heads += 1
            elif page.type == PAGE_BUDDY:
                mt = _block_mt(pbf, pfn)
                for b in range(pfn, pfn + n, 1 << PAGEBLOCK_ORDER):
                    if _block_mt(pbf, b) != mt:
                        return C_BLOCK_MT, b, pfn
                seen[z, order, mt] += 1
                if order < MAX_PAGE_ORDER:
                    buddy = pfn ^ n
                    if start <= buddy < end and mem_map[buddy].type == PAGE_BUDDY \
                            and mem_map[buddy].order == order:
                        buddy_mt = _block_mt(pbf, buddy)
                        if order < PAGEBLOCK_ORDER or buddy_mt == mt or \
                                (mt < MIGRATE_PCPTYPES and buddy_mt < MIGRATE_PCPTYPES):
                            return C_UNMERGED, pfn, buddy
            else:
                kind = np.int64(page.kind)
                if kind >= NR_KINDS:
                    return C_KIND, pfn, kind
                if page.prev != FOLIO_ON_LRU:
                    return C_ISOLATED, pfn, page.prev
                h = np.int64(page.next)
                if h < 0 or h >= pgdat.folio_pfn.shape[0] or pgdat.folio_pfn[h] != pfn:
                    return C_HANDLE, pfn, h
                nr_folios += 1
                kind_pages[kind] += n
            pfn += n
        # The free lists of this zone.
        free_pages = 0
        free_cma = 0
        for order in range(NR_PAGE_ORDERS):
            for mt in range(MIGRATE_TYPES):
                area = pgdat.free_area[z, order, mt]
                count = 0
                prev = -1
                p = area[FA_HEAD]
                while p >= 0:
                    if p < start or p >= end or mem_map[p].type != PAGE_BUDDY \
                            or mem_map[p].order != order or _block_mt(pbf, p) != mt:
                        return C_LIST_ENTRY, p, order * MIGRATE_TYPES + mt
                    if mem_map[p].prev != prev:
                        return C_LINKS, p, prev
                    count += 1
                    if count > seen[z, order, mt]:
                        return C_COUNT, p, count
                    prev = p
                    p = mem_map[p].next
                if area[FA_TAIL] != prev:
                    return C_LINKS, prev, area[FA_TAIL]
                if count != area[FA_COUNT]:
                    return C_COUNT, area[FA_HEAD], count
                if count != seen[z, order, mt]:
                    return C_OFF_LIST, start, order * MIGRATE_TYPES + mt
                if mt != MIGRATE_ISOLATE:
                    free_pages += count << order
                if mt == MIGRATE_CMA:
                    free_cma += count << order
        if free_pages != zones[z, Z_FREE] or free_cma != zones[z, Z_FREE_CMA]:
            return C_ZONE_FREE, start, free_pages
        # Pages on the per-CPU lists: off the buddy lists and out of NR_FREE_PAGES (above),
        # each on exactly one pcp list of its zone.
        code, p, detail, _, entries = pcp.check_pcp(pgdat, z, start, end)
        if code:
            return C_PCP_FIRST + code, p, detail
        if entries != pcp_heads:
            return C_PCP_OFF_LIST, start, pcp_heads
    node = pgdat.node
    if nr_folios != node[N_NR_FOLIOS]:
        return C_NODE_COUNT, -1, nr_folios
    for k in range(NR_KINDS):
        if kind_pages[k] != node[N_KIND_PAGES + k]:
            return C_NODE_COUNT, -1, k
    live = 0
    for h in range(pgdat.folio_pfn.shape[0]):
        if pgdat.folio_pfn[h] >= 0:
            live += 1
    if live != nr_folios or live + node[N_HANDLES_AVAIL] != pgdat.folio_pfn.shape[0]:
        return C_HANDLE_TABLE, -1, live
    return 0, -1, 0


@nb.njit(cache=True, nogil=True)
def entry_check_pgdat(node):
    return check_pgdat(node.arrays)
