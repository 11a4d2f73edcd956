"""The buddy allocator's rules, one test each, on small machines built to show the rule."""
import numpy as np
from buddy_only import pcp_disabled

import simcore
from simcore import page_alloc
from simcore.mmzone import (
    MIGRATE_CMA,
    MIGRATE_MOVABLE,
    MIGRATE_RECLAIMABLE,
    MIGRATE_UNMOVABLE,
    PAGEBLOCK_NR_PAGES,
    PB_MIGRATETYPE_MASK,
    ZONE_DMA32,
)
from simcore.pgdat import FA_HEAD, FA_TAIL


def block_mt(m, pfn):
    return int(m.pgdat.pageblock_flags[pfn // PAGEBLOCK_NR_PAGES] & PB_MIGRATETYPE_MASK)


def small(**kw):
    """16 MiB, DMA32 only (no ALLOC_NOFRAGMENT), no watermarks unless asked."""
    kw.setdefault("min_free_kbytes", 0)
    return pcp_disabled(simcore.Machine("16M", **kw))


# ---- sizing -------------------------------------------------------------------------------

def test_min_free_kbytes_as_the_kernel_computes_it():
    # int_sqrt(16 GiB in KiB * 16) = int_sqrt(268435456) = 16384
    assert simcore.Machine("16G", thp=False).min_free_kbytes == 16384
    # khugepaged: 512 * 2 zones * 2 + 512 * 2 * 3 * 3 = 11264 pages = 45056 KiB
    assert simcore.Machine("16G").min_free_kbytes == 45056
    # clamped below at 128 KiB
    assert page_alloc.calculate_min_free_kbytes(1024) == 128
    assert page_alloc.calculate_min_free_kbytes(1 << 40) == 262144


def test_watermarks_match_a_real_zoneinfo():
    # /proc/zoneinfo of a 6.18 VM: managed DMA 3840, DMA32 772917, Normal 294912 pages,
    # min_free_kbytes 67584; it printed min/low/high 60/75/90, 12185/15231/18277, 4649/5811/6973.
    marks = page_alloc.setup_per_zone_wmarks([3840, 772917, 294912, 0], 67584, 3)
    assert [m[:3] for m in marks[:3]] == [(60, 75, 90), (12185, 15231, 18277), (4649, 5811, 6973)]
    # ... and protection (0, 3019, 4171, ...) for DMA, (0, 0, 1152, ...) for DMA32.
    reserve = page_alloc.setup_per_zone_lowmem_reserve([3840, 772917, 294912, 0], (256, 256, 32, 0))
    assert reserve[0][:3] == [0, 3019, 4171]
    assert reserve[1][:3] == [0, 0, 1152]


def test_zones_split_at_4g_and_movable_on_top():
    m = simcore.Machine("8G", movable="1G")
    info = m.zoneinfo()
    assert info["DMA32"]["spanned"] == 1 << 20
    assert info["Normal"]["start_pfn"] == 1 << 20
    assert info["Movable"]["start_pfn"] == 7 << 18
    assert sum(z["managed"] for z in info.values()) == m.nr_pages
    assert [name for _, name in m.zones] == ["DMA32", "Normal", "Movable"]
    assert [name for _, name in simcore.Machine("512M").zones] == ["DMA32"]


# ---- __rmqueue_smallest, expand, free and merge --------------------------------------------

def test_smallest_order_first_and_expand_keeps_the_lower_half():
    m = small()
    assert m.alloc(0) == 0          # the lowest block, freed to the tail at boot
    # expand() left one free block at each order 0..9 behind in the first order-10 block
    assert m.nr_free()[0].sum(axis=1).tolist() == [1] * 10 + [3]
    assert m.alloc(0) == 1
    assert m.alloc(1) == 2
    assert m.alloc(0) == 4          # order-0 list was empty again: 4..7 split, 5 and 6.. left free


def test_free_merges_back_to_max_order():
    m = small()
    pfns = [m.alloc(o) for o in (0, 3, 9, 1, 0)]
    for pfn in pfns:
        m.free(pfn)
        m.check()
    assert m.nr_free()[0].sum(axis=1).tolist() == [0] * 10 + [4]


def test_freed_page_goes_to_head_unless_its_larger_buddy_is_free():
    m = small()
    pfns = m.alloc_many(m.nr_pages, 0)
    assert len(pfns) == m.nr_pages
    for pfn in (100, 200, 300):
        m.free(pfn)
    m.free(402)
    m.free(403)             # merges with 402 into an order-1 block
    m.free(401)             # buddy 400 is busy, but the order-1 buddy of 400..401 is free
    area = m.pgdat.free_area[ZONE_DMA32, 0, MIGRATE_MOVABLE]
    assert area[FA_HEAD] == 300 and area[FA_TAIL] == 401


# ---- fallbacks: claim and steal -----------------------------------------------------------

def test_unmovable_request_claims_a_whole_movable_buddy_of_pageblock_order():
    m = small()
    pfn = m.alloc(0, "unmovable", "slab")
    # the largest fallback buddy (order 10) is taken and both its pageblocks change type
    assert block_mt(m, pfn) == MIGRATE_UNMOVABLE
    assert block_mt(m, pfn + PAGEBLOCK_NR_PAGES) == MIGRATE_UNMOVABLE
    assert block_mt(m, pfn + 2 * PAGEBLOCK_NR_PAGES) == MIGRATE_MOVABLE
    m.check()


def test_fallback_prefers_reclaimable_over_movable_for_unmovable():
    m = small()
    # Make every block reclaimable except one movable order-9 block, and leave one free order-9
    # buddy of each type: the unmovable request must take the reclaimable one.
    blocks = m.alloc_many(8, 9, "reclaimable", "slab")
    assert len(blocks) == 8
    assert all(block_mt(m, b) == MIGRATE_RECLAIMABLE for b in blocks)
    m.free(int(blocks[0]))
    m.free_many(blocks[2:3])
    mv = m.alloc(9, "movable")          # claims one free reclaimable order-9 block wholesale
    assert block_mt(m, mv) == MIGRATE_MOVABLE
    m.free(mv)
    other = int(blocks[0]) if mv != blocks[0] else int(blocks[2])
    assert block_mt(m, other) == MIGRATE_RECLAIMABLE
    got = m.alloc(9, "unmovable", "slab")
    assert got == other
    assert block_mt(m, got) == MIGRATE_UNMOVABLE
    m.check()


def test_movable_steals_small_buddies_without_changing_the_block():
    m = small()
    blocks = m.alloc_many(8, 9, "unmovable", "slab")
    m.free(int(blocks[3]))
    # fill the freed unmovable block with unmovable pages but three, left as small buddies
    fill = m.alloc_many(PAGEBLOCK_NR_PAGES - 3, 0, "unmovable", "slab")
    assert ((fill >= blocks[3]) & (fill < blocks[3] + PAGEBLOCK_NR_PAGES)).all()
    pfn = m.alloc(0, "movable")
    assert blocks[3] <= pfn < blocks[3] + PAGEBLOCK_NR_PAGES
    assert block_mt(m, pfn) == MIGRATE_UNMOVABLE       # stolen, not claimed
    m.check()


def test_claim_needs_half_a_block_free_or_alike():
    # A movable block holding 300 movable pages and 212 free ones: an unmovable request may
    # not claim it (free + alike = 212 + 0 < 256) and steals instead.
    m = small()
    rest = m.alloc_many(7, 9, "movable")                       # blocks 0..6 full
    anon = m.alloc_many(300, 0, "movable")                     # block 7: 300 used, 212 free
    assert (anon >= 7 * PAGEBLOCK_NR_PAGES).all() and len(rest) == 7
    pfn = m.alloc(0, "unmovable", "slab")
    assert pfn >= 7 * PAGEBLOCK_NR_PAGES
    assert block_mt(m, pfn) == MIGRATE_MOVABLE
    # The same with 200 movable pages (312 free): claimed, the block turns unmovable.
    m2 = small()
    m2.alloc_many(7, 9, "movable")
    m2.alloc_many(200, 0, "movable")
    pfn2 = m2.alloc(0, "unmovable", "slab")
    assert block_mt(m2, pfn2) == MIGRATE_UNMOVABLE
    m.check()
    m2.check()


def test_movable_uses_cma_when_it_holds_most_free_memory_and_unmovable_never():
    m = pcp_disabled(simcore.Machine("64M", cma="48M", min_free_kbytes=0))
    lo, hi = m.cma_range
    assert lo <= m.alloc(0, "movable") < hi
    unmovable = m.alloc_many(m.nr_pages, 0, "unmovable", "slab")
    assert len(unmovable) == m.nr_pages - (hi - lo)     # everything outside the CMA area
    assert not ((unmovable >= lo) & (unmovable < hi)).any()
    assert m.zoneinfo()["DMA32"]["nr_free_cma"] == (hi - lo) - 1
    m.check()


def test_zone_movable_is_for_movable_requests_only():
    m = simcore.Machine("64M", movable="16M", min_free_kbytes=0)
    start = m.zoneinfo()["Movable"]["start_pfn"]
    assert m.alloc(0, "movable") >= start
    unmovable = m.alloc_many(m.nr_pages, 0, "unmovable", "slab")
    assert (unmovable < start).all()
    assert m.alloc(0, "movable") >= start
    m.check()


def test_order0_watermark_stops_at_min():
    m = pcp_disabled(simcore.Machine("16M", min_free_kbytes=1024))
    wmark_min = m.zoneinfo()["DMA32"]["min"]
    assert wmark_min == 256
    got = m.alloc_many(m.nr_pages, 0)
    assert len(got) == m.nr_pages - wmark_min
    assert m.alloc(0) is None
    m.free(int(got[0]))
    assert m.alloc(0) is not None


def test_high_order_needs_a_free_block_of_that_order():
    m = small()
    pfns = m.alloc_many(m.nr_pages, 0)
    m.free_many(pfns[::2])                 # half free, but only order-0 holes
    assert m.alloc(1, compact=False) is None
    assert m.alloc(0) is not None
    m.check()


def test_pageblocks_of_different_types_merge_taking_the_freed_type():
    m = small()
    unmov = m.alloc(9, "unmovable", "slab")        # claims an order-10 buddy: both blocks
    buddy = unmov ^ PAGEBLOCK_NR_PAGES
    assert block_mt(m, buddy) == MIGRATE_UNMOVABLE
    mov = m.alloc_many(6, 9, "movable")
    m.free_many(mov)                               # movable blocks merge among themselves
    m.free(unmov)                                  # and the unmovable pair merges to order 10
    assert m.nr_free()[0, 10].sum() == 4
    m.check()


def test_cma_blocks_never_merge_with_movable_ones():
    m = simcore.Machine("16M", cma="2M", min_free_kbytes=0)
    nr = m.nr_free()[0]
    assert nr[9, MIGRATE_CMA] == 1 and nr[9, MIGRATE_MOVABLE] == 1 and nr[10].sum() == 3
    m.check()


def test_nofragment_sends_unmovable_to_dma32_before_fragmenting_normal():
    m = pcp_disabled(simcore.Machine("8G", min_free_kbytes=0))
    normal = m.zoneinfo()["Normal"]["start_pfn"]
    big = m.alloc_many(m.nr_pages, 9, "movable")
    m.free_many(big[big < normal][:100])      # DMA32: free blocks, above its lowmem_reserve
    # Normal: 20 blocks with 511 free pages each, all in buddies below pageblock order.
    for pfn in big[(big >= normal) & ((big >> 9) % 2 == 0)][:20]:
        pfn = int(pfn)
        assert m.split(pfn, 0)
        m.free_many(np.arange(pfn + 1, pfn + PAGEBLOCK_NR_PAGES))
    assert m.zoneinfo()["Normal"]["nr_free_pages"] == 20 * 511
    pfn = m.alloc(0, "unmovable", "slab")
    assert pfn < normal                       # claimed a whole DMA32 block instead
    assert block_mt(m, pfn) == MIGRATE_UNMOVABLE
    m.check()
