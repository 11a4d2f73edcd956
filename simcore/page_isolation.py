"""Range isolation and contiguous allocation, after mm/page_isolation.c and the
alloc_contig_range() / offline_pages() paths of mm/page_alloc.c and mm/memory_hotplug.c.

isolate_range() turns every pageblock of [start, end) MIGRATE_ISOLATE (free pages move to the
isolate lists, so the allocator stops handing them out), refusing with EBUSY when a block holds
pages that can never move (has_unmovable_pages()); evacuate_range() migrates every folio out of
the range, whole (alloc_contig isolates large folios and hugetlb too), with buddy targets and a
bounded number of retries; test_range_free() is test_pages_isolated(); take_range() pulls the
freed range off the isolate lists.

Simplifications: the range must be pageblock-aligned; no pcp draining or lru_add_drain; offline
retries a fixed number of passes instead of looping until a signal.
"""
import numba as nb
import numpy as np

from . import migrate, page_alloc, pcp
from .mmzone import (
    KIND_KERNEL,
    MAX_PAGE_ORDER,
    MIGRATE_CMA,
    MIGRATE_HIGHATOMIC,
    MIGRATE_ISOLATE,
    MIGRATE_MOVABLE,
    PAGE_BUDDY,
    PAGE_HEAD,
    PAGE_OFFLINE,
    PAGE_TAIL,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
    PB_MIGRATETYPE_MASK,
    PG_HWPOISON,
)
from .pgdat import N_ISOLATION_POLICY, Z_END, Z_STALE_HIGHATOMIC, Z_START

jit = nb.njit(cache=True, nogil=True)

EBUSY = 16
# How offline_pages() and alloc_contig_range() move large folios out of the range (the hotunplug
# and cma policies of a kernel profile). Every profile we model migrates them whole: the
# isolation paths took compound pages whole (cc->alloc_contig, do_migrate_range()) and
# alloc_migration_target() allocated same-order targets before 6.1 already, splitting only on
# -ENOMEM (migrate_pages()).
RANGE_MIGRATION_POLICIES = {
    "migrate_whole": "isolate whole folios, same-order targets, split on -ENOMEM",
}
EINVAL = 22
ALLOC_CONTIG_RETRIES = 5

# What an isolated pageblock's migratetype becomes when the isolation is undone (the profile's
# `isolation` policy; node[N_ISOLATION_POLICY], 0 behaving as the newest):
# - overwrite_type (before 6.17): set_migratetype_isolate() overwrites the block's type with
#   MIGRATE_ISOLATE, and undo_isolate_page_range(start, end, migratetype) gives every block the
#   caller's type: MIGRATE_MOVABLE after a failed offline_pages(), MIGRATE_CMA for cma_alloc().
#   A HIGHATOMIC block so becomes MOVABLE while nr_reserved_highatomic, which no isolation path
#   touches, keeps counting it.
# - standalone_bit (6.17 ~): Zi Yan, "mm/page_isolation: make page isolation a standalone bit"
#   (posted May 2025): isolation is a pageblock bit of its own, the migratetype is kept, and
#   undo restores it (a HIGHATOMIC block comes back HIGHATOMIC).
ISOLATION_OVERWRITE_TYPE = 1
ISOLATION_STANDALONE_BIT = 2
ISOLATION_POLICIES = {
    "overwrite_type": ISOLATION_OVERWRITE_TYPE,
    "standalone_bit": ISOLATION_STANDALONE_BIT,
}


@jit
def range_head(mem_map, pfn):
    """The head of the block or folio that covers pfn (pfn itself or an order-10 head)."""
    if mem_map[pfn].type != PAGE_TAIL:
        return pfn
    return pfn & ~((1 << MAX_PAGE_ORDER) - 1)


@jit
def has_unmovable_pages(pgdat, start, end, for_cma):
    """has_unmovable_pages(): a folio here can never be migrated (slab, page tables, kernel
    memory, hwpoison). In CMA blocks only movable allocations exist, so for cma_alloc nothing
    is checked; for anything else (offlining) a CMA pageblock itself counts as unmovable, as
    the kernel's check does when the caller's migratetype is not MIGRATE_CMA: CMA memory
    cannot be offlined. Returns the offending PFN or -1."""
    if for_cma:
        return -1
    for pb in range(start >> PAGEBLOCK_ORDER, (end + PAGEBLOCK_NR_PAGES - 1) >> PAGEBLOCK_ORDER):
        if (pgdat.pageblock_flags[pb] & PB_MIGRATETYPE_MASK) == MIGRATE_CMA:
            return max(start, pb << PAGEBLOCK_ORDER)
    mem_map = pgdat.mem_map
    pfn = range_head(mem_map, start)
    while pfn < end:
        t = mem_map[pfn].type
        n = np.int64(1) << mem_map[pfn].order if t != PAGE_TAIL else 1
        if t == PAGE_HEAD and (not pgdat.kind_is_migratable[mem_map[pfn].kind]
                               or (mem_map[pfn].flags & PG_HWPOISON)):
            return pfn
        pfn += n
    return -1


@jit
def isolate_range(pgdat, z, start, end, saved_mt, for_cma):
    """start_isolate_page_range(): every pageblock MIGRATE_ISOLATE, its type saved in
    saved_mt[] for undo. Returns 0 or EBUSY (nothing changed then)."""
    if has_unmovable_pages(pgdat, start, end, for_cma) >= 0:
        return EBUSY
    nb_blocks = (end - start) >> PAGEBLOCK_ORDER
    for i in range(nb_blocks):
        pfn = start + i * PAGEBLOCK_NR_PAGES
        mt = page_alloc.get_pageblock_migratetype(pgdat, pfn)
        saved_mt[i] = mt
    # Free blocks larger than a pageblock straddle several blocks: split them per pageblock
    # first so each block's free pages can move lists on their own.
    split_large_free_blocks(pgdat, z, start, end)
    for i in range(nb_blocks):
        pfn = start + i * PAGEBLOCK_NR_PAGES
        page_alloc.move_freepages_block(pgdat, z, pfn, saved_mt[i], MIGRATE_ISOLATE)
        page_alloc.set_pageblock_migratetype(pgdat, pfn, MIGRATE_ISOLATE)
    return 0


@jit
def split_large_free_blocks(pgdat, z, start, end):
    """Free buddies of MAX_PAGE_ORDER that overlap the range become two pageblock buddies,
    as split_large_buddy() does for __move_freepages_block_isolate() when a pageblock is
    isolated or un-isolated inside a free block larger than a pageblock."""
    mem_map = pgdat.mem_map
    first = start & ~((1 << MAX_PAGE_ORDER) - 1)
    for head in range(first, end, 1 << MAX_PAGE_ORDER):
        if head < pgdat.zones[z, Z_START] or mem_map[head].type != PAGE_BUDDY \
                or mem_map[head].order != MAX_PAGE_ORDER:
            continue
        mt = page_alloc.get_pageblock_migratetype(pgdat, head)
        page_alloc.del_from_free_list(pgdat, z, head, MAX_PAGE_ORDER, mt)
        page_alloc.add_to_free_list(pgdat, z, head, PAGEBLOCK_ORDER, mt, True)
        page_alloc.add_to_free_list(pgdat, z, head + PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER, mt, True)


@jit
def undo_isolate_range(pgdat, z, start, end, saved_mt):
    """undo_isolate_page_range(): blocks get their saved type back, free pages their lists,
    and free buddies merge again, across the range's edges too.

    While isolated, two neighbouring pageblocks are both MIGRATE_ISOLATE and their free halves
    merge into one MAX_PAGE_ORDER block; their saved types may differ (one UNMOVABLE, one
    MOVABLE, or CMA next to MOVABLE). __move_freepages_block_isolate() splits such a block
    per pageblock (split_large_buddy()) before it un-isolates, and frees each half with its
    own type, so the re-merge below joins the halves only where __free_one_page() allows."""
    split_large_free_blocks(pgdat, z, start, end)
    nb_blocks = (end - start) >> PAGEBLOCK_ORDER
    for i in range(nb_blocks):
        pfn = start + i * PAGEBLOCK_NR_PAGES
        page_alloc.move_freepages_block(pgdat, z, pfn, MIGRATE_ISOLATE, saved_mt[i])
        page_alloc.set_pageblock_migratetype(pgdat, pfn, saved_mt[i])
    mask = (1 << MAX_PAGE_ORDER) - 1
    remerge_free_range(pgdat, z, max(start & ~mask, pgdat.zones[z, Z_START]),
                       min((end + mask) & ~mask, pgdat.zones[z, Z_END]))


@jit
def remerge_free_range(pgdat, z, start, end):
    """Free blocks in the range taken off their lists and freed again so they merge (what
    __putback_isolated_page()/the buddy merge do when isolation ends)."""
    mem_map = pgdat.mem_map
    pfn = start
    while pfn < end:
        t = mem_map[pfn].type
        if t == PAGE_TAIL:
            pfn += 1
            continue
        order = np.int64(mem_map[pfn].order)
        if t == PAGE_BUDDY:
            mt = page_alloc.get_pageblock_migratetype(pgdat, pfn)
            page_alloc.del_from_free_list(pgdat, z, pfn, order, mt)
            page_alloc.account_freepages(pgdat, z, -(np.int64(1) << order), mt)
            page_alloc.free_one_page(pgdat, z, pfn, order, mt, False)
        pfn += np.int64(1) << order


@jit
def evacuate_range(pgdat, start, end, mode, reason, costs, stats):
    """Migrate every folio in [start, end) out (isolate_migratepages_range() with alloc_contig
    set, then migrate_pages() to buddy targets), retrying up to ALLOC_CONTIG_RETRIES times.
    Returns the number of folios still in the range."""
    for _ in range(ALLOC_CONTIG_RETRIES):
        heads = collect_folios(pgdat, start, end)
        if heads.shape[0] == 0:
            return 0
        if migrate.migrate_folios_to_buddy(pgdat, heads, mode, reason, True, 2, costs,
                                           stats) == 0:
            return 0
    return collect_folios(pgdat, start, end).shape[0]


@jit
def collect_folios(pgdat, start, end):
    mem_map = pgdat.mem_map
    out = np.empty((end - start), dtype=np.int64)
    n = 0
    pfn = range_head(mem_map, start)
    while pfn < end:
        t = mem_map[pfn].type
        if t == PAGE_TAIL:
            pfn += 1
            continue
        if t == PAGE_HEAD:
            out[n] = pfn
            n += 1
        pfn += np.int64(1) << mem_map[pfn].order
    return out[:n]


@jit
def test_range_free(pgdat, start, end):
    """test_pages_isolated(): every page of the range in a free (isolated) buddy inside it."""
    mem_map = pgdat.mem_map
    pfn = start
    while pfn < end:
        if mem_map[pfn].type != PAGE_BUDDY:
            return False
        n = np.int64(1) << mem_map[pfn].order
        if pfn + n > end:
            return False
        pfn += n
    return True


@jit
def take_range(pgdat, z, start, end, as_folios):
    """isolate_freepages_range(): the isolated free blocks of the range leave the free lists.
    With as_folios they become kernel folios (a contiguous allocation the caller owns);
    without, they stay detached (offline memory). Returns the number of blocks."""
    mem_map = pgdat.mem_map
    pfn = start
    count = 0
    while pfn < end:
        order = np.int64(mem_map[pfn].order)
        page_alloc.del_from_free_list(pgdat, z, pfn, order, MIGRATE_ISOLATE)
        if as_folios:
            page_alloc.prep_new_folio(pgdat, pfn, order, KIND_KERNEL, 0)
        else:
            mem_map[pfn].type = PAGE_OFFLINE
            mem_map[pfn].order = order
        count += 1
        pfn += np.int64(1) << order
    return count


@jit
def alloc_contig_range(pgdat, z, start, end, for_cma, costs, stats, saved_mt):
    """alloc_contig_range() for CMA (for_cma) or the isolate + migrate + test part of
    offline_pages(). On success the range is isolated and free; the caller takes it.
    Returns 0, EBUSY (unmovable pages or folios that would not move)."""
    if isolate_range(pgdat, z, start, end, saved_mt, for_cma):
        return EBUSY
    # pcp hook: free pages of the range may sit on any CPU's lists (drain_all_pages(cc.zone));
    # frees into the now isolated blocks bypass the lists
    pcp.drain_all_pages(pgdat, z)
    reason = migrate.MR_CONTIG_RANGE if for_cma else migrate.MR_MEMORY_HOTPLUG
    evacuate_range(pgdat, start, end, migrate.MIGRATE_SYNC, reason, costs, stats)
    if not test_range_free(pgdat, start, end):
        if pgdat.node[N_ISOLATION_POLICY] == ISOLATION_OVERWRITE_TYPE:
            undo_to_caller_type(pgdat, z, saved_mt, MIGRATE_CMA if for_cma else MIGRATE_MOVABLE)
        undo_isolate_range(pgdat, z, start, end, saved_mt)
        return EBUSY
    return 0


@jit
def undo_to_caller_type(pgdat, z, saved_mt, caller_mt):
    """Before 6.17 the undo gives every block the caller's migratetype, not its own: a
    HIGHATOMIC block's pages stay in nr_reserved_highatomic (nothing in the isolation paths
    adjusts it), now for a block that is not HIGHATOMIC (Z_STALE_HIGHATOMIC)."""
    for i in range(saved_mt.shape[0]):
        if saved_mt[i] == MIGRATE_HIGHATOMIC:
            pgdat.zones[z, Z_STALE_HIGHATOMIC] += PAGEBLOCK_NR_PAGES
        saved_mt[i] = caller_mt


@jit
def entry_cma_alloc(node, z, start, end, costs, stats, saved_mt):
    """cma_alloc() of [start, end): 0 and the range allocated as kernel folios, or EBUSY."""
    pgdat = node.arrays
    err = alloc_contig_range(pgdat, z, start, end, True, costs, stats, saved_mt)
    if err:
        return err
    take_range(pgdat, z, start, end, True)
    for i in range((end - start) >> PAGEBLOCK_ORDER):
        page_alloc.set_pageblock_migratetype(pgdat, start + i * PAGEBLOCK_NR_PAGES, saved_mt[i])
    return 0


@jit
def entry_offline_range(node, z, start, end, costs, stats, saved_mt):
    """offline_pages(): 0 and the range taken out of the zone, or EBUSY."""
    pgdat = node.arrays
    err = alloc_contig_range(pgdat, z, start, end, False, costs, stats, saved_mt)
    if err:
        return err
    take_range(pgdat, z, start, end, False)
    return 0


@jit
def entry_online_range(node, z, start, end, mt):
    """online_pages(): offline blocks back to the buddy allocator with migratetype mt."""
    pgdat = node.arrays
    mem_map = pgdat.mem_map
    for i in range((end - start) >> PAGEBLOCK_ORDER):
        page_alloc.set_pageblock_migratetype(pgdat, start + i * PAGEBLOCK_NR_PAGES, mt)
    pfn = start
    while pfn < end:
        order = np.int64(mem_map[pfn].order)
        mem_map[pfn].type = PAGE_TAIL
        page_alloc.free_one_page(pgdat, z, pfn, order, mt, True)
        pfn += np.int64(1) << order


@jit
def entry_has_unmovable(node, start, end):
    return has_unmovable_pages(node.arrays, start, end, False)
