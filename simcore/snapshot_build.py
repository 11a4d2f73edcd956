"""Compiled writers for the twin (simcore.snapshot.build): kept apart so that editing the
reconstruction does not invalidate numba's cache of these."""
import numba as nb

from . import page_alloc
from .mmzone import PAGE_OFFLINE, PAGE_TAIL, PAGEBLOCK_ORDER
from .pgdat import (
    FA_COUNT,
    FA_HEAD,
    FA_TAIL,
    Z_END,
    Z_FREE,
    Z_FREE_CMA,
    Z_FREE_HIGHATOMIC,
    Z_START,
)

PFN_MASK = (1 << 40) - 1        # a packed folio word's PFN (simcore.snapshot.pack_folios())


@nb.njit(cache=True, nogil=True)
def mark_covered(covered, pfns, orders):
    for i in range(len(pfns)):
        covered[pfns[i]:pfns[i] + (1 << orders[i])] = True



@nb.njit(cache=True, nogil=True)
def reset(pgdat):
    mem_map = pgdat.mem_map
    for i in range(mem_map.shape[0]):
        mem_map[i].type = PAGE_TAIL
        mem_map[i].order = 0
        mem_map[i].next = -1
        mem_map[i].prev = -1
        mem_map[i].kind = 0
        mem_map[i].flags = 0
    fa = pgdat.free_area
    for z in range(fa.shape[0]):
        for o in range(fa.shape[1]):
            for mt in range(fa.shape[2]):
                fa[z, o, mt, FA_HEAD] = -1
                fa[z, o, mt, FA_TAIL] = -1
                fa[z, o, mt, FA_COUNT] = 0
        pgdat.zones[z, Z_FREE] = 0
        pgdat.zones[z, Z_FREE_CMA] = 0
        pgdat.zones[z, Z_FREE_HIGHATOMIC] = 0


@nb.njit(cache=True, nogil=True)
def count_classes(page_class, start, end, classes):
    """Pages in [start, end) whose class is marked in `classes` (no per-page temporary)."""
    count = 0
    for pfn in range(start, end):
        if classes[page_class[pfn]]:
            count += 1
    return count


@nb.njit(cache=True, nogil=True)
def place(node, page_class, free_classes, absent_classes, nr_folios):
    """Write the layout: absent pages PAGE_OFFLINE, folios at their heads, free pages handed to
    the buddy allocator in aligned pieces up to pageblock order (free_one_page() merges them as
    the kernel would). Returns the number of free pieces handed over.

    The handle table (pgdat.folio_pfn) arrives holding the folios in its first nr_folios
    slots, each a packed word (simcore.snapshot.pack_folios(): head PFN below bit 40, order,
    kind and flags in the bytes above), the free handles chained after them from slot
    nr_folios, and node[N_HANDLE_FREE] = 0: folio i takes handle i, so no second array of
    the folios is needed while the twin is built."""
    pgdat = node.arrays
    reset(pgdat)
    mem_map = pgdat.mem_map
    table = pgdat.folio_pfn
    n = mem_map.shape[0]
    for pfn in range(n):
        if absent_classes[page_class[pfn]]:
            mem_map[pfn].type = PAGE_OFFLINE
    for i in range(nr_folios):
        word = table[i]
        # slot i becomes the free handle at the head of the chain, naming i + 1 next
        table[i] = -2 - (i + 1)         # pgdat.free_handle_code(i + 1)
        page_alloc.prep_new_folio(pgdat, word & PFN_MASK, (word >> 40) & 0xFF,
                                  (word >> 48) & 0xFF, (word >> 56) & 0x7F)
    pieces = 0
    zones = pgdat.zones
    for z in range(zones.shape[0]):
        pfn = zones[z, Z_START]
        end = zones[z, Z_END]
        while pfn < end:
            if not free_classes[page_class[pfn]]:
                pfn += 1
                continue
            order = 0
            while order < PAGEBLOCK_ORDER and (pfn & ((2 << order) - 1)) == 0 \
                    and pfn + (2 << order) <= end:
                ok = True
                for p in range(pfn + (1 << order), pfn + (2 << order)):
                    if not free_classes[page_class[p]]:
                        ok = False
                        break
                if not ok:
                    break
                order += 1
            page_alloc.free_one_page(pgdat, z, pfn, order,
                                     page_alloc.get_pageblock_migratetype(pgdat, pfn), True)
            pieces += 1
            pfn += 1 << order
    return pieces

