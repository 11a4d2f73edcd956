"""The compaction shortcuts of mm/compaction.c: fast_isolate_freepages(),
fast_find_migrateblock() and compaction capture, each on a zone built by hand."""
import numpy as np
import pytest
from buddy_only import pcp_disabled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simcore
from simcore import compaction, freescan
from simcore.freescan import (
    CC_DIRECT,
    CC_FAST_SEARCH_FAIL,
    CC_FAST_START_PFN,
    CC_FREE_PFN,
    CC_MIGRATE_PFN,
    CC_MIGRATETYPE,
    CC_MODE,
    CC_NR_FREEPAGES,
    CC_NR_MIGRATEPAGES,
    CC_ORDER,
    CC_SEARCH_ORDER,
    CC_ZONE,
    POOL_LEN,
)
from simcore.mmzone import MIGRATE_MOVABLE, PAGE_BUDDY, PAGEBLOCK_NR_PAGES
from simcore.pgdat import Z_COMPACT_CACHED_FREE, Z_END, Z_START

MIGRATE_ASYNC = 0


LOW = list(range(100, 300, 2))      # scattered free pages at the bottom (buddies stay in use)


def full_zone(order):
    """A 64M machine (one zone) filled with anonymous folios of `order`, nothing free."""
    m = pcp_disabled(simcore.Machine("64M", seed=0, compaction="folio", min_free_kbytes=0))
    folios = m.alloc_many(m.nr_pages, order, "movable", "anon", compact=False)
    assert m.free_pages() == 0
    return m, folios


def direct_cc(m, order):
    """A compact_control as direct async compaction for `order` fills it at the zone's start."""
    cc, pool, _ = freescan.new_compact_control()
    zones = m.pgdat.zones
    cc[CC_ZONE] = 0
    cc[CC_ORDER] = order
    cc[CC_SEARCH_ORDER] = order
    cc[CC_MODE] = MIGRATE_ASYNC
    cc[CC_DIRECT] = 1
    cc[CC_MIGRATETYPE] = MIGRATE_MOVABLE
    cc[CC_MIGRATE_PFN] = zones[0, Z_START]
    cc[CC_FREE_PFN] = (zones[0, Z_END] - 1) & ~(PAGEBLOCK_NR_PAGES - 1)
    cc[CC_NR_MIGRATEPAGES] = 1
    return cc, pool


def pooled(pool):
    return {int(pool[o, 2 + (pool[o, 0] + i) % freescan.POOL_CAP])
            for o in range(pool.shape[0]) for i in range(pool[o, POOL_LEN])}


def test_fast_isolate_freepages_takes_a_top_quarter_page_and_moves_the_free_scanner():
    m, _ = full_zone(0)
    zone_end = int(m.pgdat.zones[0, Z_END])
    last_block = (zone_end - 1) & ~(PAGEBLOCK_NR_PAGES - 1)
    low, top = LOW[0], last_block + 7       # pages near the bottom, one in the last block
    m.free_many(np.array(LOW + [top]))
    cc, pool = direct_cc(m, 9)
    cached_before = int(m.pgdat.zones[0, Z_COMPACT_CACHED_FREE])
    freescan.entry_fast_isolate_freepages(m.pgdat, cc, pool)
    assert pooled(pool) == {top}
    assert cc[CC_NR_FREEPAGES] == 1 and cc[CC_FAST_SEARCH_FAIL] == 0
    assert m.pgdat.mem_map[top]["type"] != PAGE_BUDDY       # off the free lists
    assert m.pgdat.mem_map[low]["type"] == PAGE_BUDDY       # the low page was left alone
    # the cached free position moves just below the highest free block seen
    assert cached_before == last_block
    assert m.pgdat.zones[0, Z_COMPACT_CACHED_FREE] == last_block - PAGEBLOCK_NR_PAGES


def test_fast_isolate_freepages_falls_back_to_the_top_half():
    m, _ = full_zone(0)
    zone_end = int(m.pgdat.zones[0, Z_END])
    third_quarter = zone_end * 5 // 8              # above half, below the top quarter
    m.free_many(np.array(LOW + [third_quarter]))
    cc, pool = direct_cc(m, 9)
    freescan.entry_fast_isolate_freepages(m.pgdat, cc, pool)
    assert pooled(pool) == {third_quarter}


def test_fast_isolate_freepages_with_nothing_high_starts_the_scanner_at_the_half():
    m, _ = full_zone(0)
    zone_end = int(m.pgdat.zones[0, Z_END])
    m.free_many(np.array([10]))                     # the only free page is at the bottom
    cc, pool = direct_cc(m, 9)
    freescan.entry_fast_isolate_freepages(m.pgdat, cc, pool)
    assert cc[CC_NR_FREEPAGES] == 0 and cc[CC_FAST_SEARCH_FAIL] == 1
    free_pfn = (zone_end - 1) & ~(PAGEBLOCK_NR_PAGES - 1)
    assert cc[CC_FREE_PFN] == (free_pfn - free_pfn // 2) & ~(PAGEBLOCK_NR_PAGES - 1)
    m.check()


def test_fast_isolate_freepages_not_for_whole_zone_compaction():
    m, _ = full_zone(0)
    m.free_many(np.array([int(m.pgdat.zones[0, Z_END]) - 1]))
    cc, pool = direct_cc(m, -1)                     # compact_memory / proactive
    freescan.entry_fast_isolate_freepages(m.pgdat, cc, pool)
    assert cc[CC_NR_FREEPAGES] == 0


def free_order4_at(m, folios, pfns):
    m.free_many(np.array([p for p in folios if p in set(pfns)]))


def test_fast_find_migrateblock_starts_on_a_block_with_free_pages():
    m, folios = full_zone(4)
    block = 5 * PAGEBLOCK_NR_PAGES                  # in the first half of the zone
    hole = block + 3 * 16
    free_order4_at(m, folios, [hole])
    cc, _ = direct_cc(m, 9)
    assert compaction.entry_fast_find_migrateblock(m.pgdat, cc) == block
    assert cc[CC_FAST_SEARCH_FAIL] == 0 and cc[CC_FAST_START_PFN] == hole
    m.check()


def test_fast_find_migrateblock_ignores_the_second_half_and_small_orders():
    m, folios = full_zone(4)
    zone_end = int(m.pgdat.zones[0, Z_END])
    free_order4_at(m, folios, [zone_end * 3 // 4])
    cc, _ = direct_cc(m, 9)
    start = cc[CC_MIGRATE_PFN]
    assert compaction.entry_fast_find_migrateblock(m.pgdat, cc) == start
    assert cc[CC_FAST_SEARCH_FAIL] == 1
    free_order4_at(m, folios, [5 * PAGEBLOCK_NR_PAGES])
    cc, _ = direct_cc(m, 3)                          # PAGE_ALLOC_COSTLY_ORDER: linear scan
    assert compaction.entry_fast_find_migrateblock(m.pgdat, cc) == start
    cc, _ = direct_cc(m, 9)
    cc[CC_MIGRATETYPE] = 0                           # a direct UNMOVABLE request
    assert compaction.entry_fast_find_migrateblock(m.pgdat, cc) == start


def mthp_half_freed(seed=0):
    m = simcore.Machine("64M", seed=seed, compaction="folio", min_free_kbytes=0)
    big = m.alloc_many(m.nr_pages, 4, "movable", "anon", compact=False)
    m.free_many(big[m.rng.random(len(big)) < 0.5])
    return m


def pgalloc(v):
    return sum(n for name, n in v.items() if name.startswith("pgalloc_"))


def test_capture_hands_the_freed_block_to_the_allocation():
    m = mthp_half_freed()
    assert m.alloc(9, compact=False) is None
    before = m.vmstat()
    pfn = m.alloc(9)
    after = m.vmstat()
    assert pfn is not None and pfn % 512 == 0
    assert after["compact_stall"] - before["compact_stall"] >= 1
    assert after["compact_success"] - before["compact_success"] == 1
    # captured: never taken from a free list, so pgalloc did not count it
    assert pgalloc(after) == pgalloc(before)
    assert after["pgmigrate_success"] > before["pgmigrate_success"]
    # the block is the one compaction emptied: below where the free scanner stopped
    assert pfn < m.pgdat.zones[0, Z_COMPACT_CACHED_FREE] + PAGEBLOCK_NR_PAGES
    m.check()
    assert m.free_pages() + m.pcp_pages() + m.allocated_pages() == m.managed_pages


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2 ** 16), st.integers(2, 9), st.floats(0.2, 0.8))
def test_direct_compaction_with_the_shortcuts_loses_nothing(seed, order, share):
    m = simcore.Machine("32M", seed=seed, compaction="folio", min_free_kbytes=0)
    small = m.alloc_many(m.nr_pages, 2, "movable", "anon", compact=False)
    m.free_many(small[m.rng.random(len(small)) < share])
    pages = m.allocated_pages()
    got = m.alloc_many(m.nr_pages, order, "movable", "anon")
    m.check()
    assert m.allocated_pages() == pages + (len(got) << order)
    assert m.free_pages() + m.pcp_pages() + m.allocated_pages() == m.managed_pages


def leftover_and_order4_above(m):
    """A zone whose free scanner would find an order-4 block in the last pageblock, and a
    compact_memory control (order -1: no fast search) that already holds one isolated order-0
    page as a leftover target."""
    zone_end = int(m.pgdat.zones[0, Z_END])
    last_block = (zone_end - 1) & ~(PAGEBLOCK_NR_PAGES - 1)
    # LOW keeps the zone above its watermark for the isolation of an order-4 block
    m.free_many(np.array(LOW + list(range(last_block, last_block + 16)) + [last_block - 7]))
    assert m.pgdat.mem_map[last_block]["order"] == 4
    cc, pool = direct_cc(m, -1)
    assert freescan.entry_isolate_into_pool(m.pgdat, cc, pool, last_block - 7, 0)
    cc[CC_NR_MIGRATEPAGES] = 16
    return cc, pool, last_block


def test_compaction_alloc_gives_up_when_leftover_targets_are_too_small():
    """isolate_freepages() skips its walk while cc->nr_freepages is non-zero (the kernel's
    rule), so a large source with only smaller leftovers gets no target: -ENOMEM, and the
    order-4 block above stays on the free lists."""
    m, _ = full_zone(0)
    cc, pool, last_block = leftover_and_order4_above(m)
    assert freescan.entry_take_smallest_fit(m.pgdat, cc, pool, 4) == -1
    assert m.pgdat.mem_map[last_block]["type"] == PAGE_BUDDY
    assert cc[CC_NR_FREEPAGES] == 1
    # with the pool empty the walk runs and the order-4 block becomes the target
    assert freescan.entry_take_smallest_fit(m.pgdat, cc, pool, 0) == last_block - 7
    assert freescan.entry_take_smallest_fit(m.pgdat, cc, pool, 4) == last_block


MIGRATE_SYNC = 2
COMPACT_CLUSTER_MAX = 32


def sync_walk(m, first_free):
    """A compact_memory control (order -1, sync, no fast search) over a full zone in which the
    pages `first_free` were freed; one page waits to migrate."""
    m.free_many(np.array(LOW + list(first_free)))
    cc, pool = direct_cc(m, -1)
    cc[CC_MODE] = MIGRATE_SYNC
    cc[CC_DIRECT] = 0
    return cc, pool


def test_free_scanner_widens_its_stride_over_blocks_that_give_nothing():
    """isolate_freepages() looks at every stride-th PFN: 1 for sync compaction, doubled after
    each pageblock that gave no page, up to COMPACT_CLUSTER_MAX; each look counts one scanned
    PFN (compact_free_scanned), not the whole block."""
    m, _ = full_zone(0)
    last_block = (int(m.pgdat.zones[0, Z_END]) - 1) & ~(PAGEBLOCK_NR_PAGES - 1)
    target = 3 * PAGEBLOCK_NR_PAGES                 # the first look of block 3
    cc, pool = sync_walk(m, [target])
    assert freescan.entry_take_smallest_fit(m.pgdat, cc, pool, 0) == target
    stride, expected = 1, 0
    for _block in range(last_block, target, -PAGEBLOCK_NR_PAGES):    # nothing free up there
        expected += PAGEBLOCK_NR_PAGES // stride
        stride = min(COMPACT_CLUSTER_MAX, 2 * stride)
    expected += 1                                   # the look that found the target
    assert cc[freescan.CC_TOTAL_FREE_SCANNED] == expected
    assert expected < 4 * PAGEBLOCK_NR_PAGES        # not a block's worth per block


def test_free_scanner_resumes_inside_the_block_where_it_stopped():
    """cc->free_pfn is where the walk stopped, inside a pageblock: the next walk goes on from
    there rather than rescanning the block from its start."""
    m, _ = full_zone(0)
    block = 20 * PAGEBLOCK_NR_PAGES
    first, second = block + 64, block + 64 + 96      # both on stride-32 looks, not buddies
    cc, pool = sync_walk(m, [first, second])
    assert freescan.entry_take_smallest_fit(m.pgdat, cc, pool, 0) == first
    assert cc[CC_FREE_PFN] == first + 1
    scanned = int(cc[freescan.CC_TOTAL_FREE_SCANNED])
    cc[CC_NR_MIGRATEPAGES] = 1                      # the next page waiting to migrate
    assert freescan.entry_take_smallest_fit(m.pgdat, cc, pool, 0) == second
    assert cc[freescan.CC_TOTAL_FREE_SCANNED] - scanned == second - first
    assert cc[CC_FREE_PFN] == second + 1


@pytest.mark.parametrize("profile, captured", [("linux-6.1", False), ("linux-6.9", False),
                                               ("linux-6.10", True), ("linux-6.18", True)])
def test_capture_of_a_movable_block_below_a_pageblock_by_profile(profile, captured):
    """compaction_capture() refused every MOVABLE block below pageblock_order until 6.10
    (Baolin Wang, mTHP capture); since then a MOVABLE compaction captures it. Captured
    blocks are not counted in pgalloc, so the counter tells which path served the request."""
    m = simcore.Machine("64M", seed=0, profile=profile, compaction="folio", min_free_kbytes=0)
    big = m.alloc_many(m.nr_pages, 4, "movable", "anon", compact=False)
    m.free_many(big[m.rng.random(len(big)) < 0.3])
    assert m.alloc(7, compact=False) is None
    before = m.vmstat()
    pfn = m.alloc(7)
    after = m.vmstat()
    assert pfn is not None
    assert after["compact_stall"] > before["compact_stall"]
    assert (pgalloc(after) == pgalloc(before)) == captured
    m.check()
