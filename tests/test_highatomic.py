"""Highatomic reserves (simcore.highatomic), kcompactd's drain after a failed compaction and
vm.compact_unevictable_allowed: the issue-15 paths of mm/page_alloc.c and mm/compaction.c."""
import functools

import numpy as np
import pytest

import simcore
from simcore import highatomic, vmscan
from simcore.mmzone import MIGRATE_HIGHATOMIC, PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER, ZONE_NAMES
from simcore.vmscan import SWAP_CLUSTER_MAX
from workloads.backend import SimBackend
from workloads.base import run_one


def _reserved(m):
    return sum(v["nr_reserved_highatomic"] for v in m.zoneinfo().values())


def _highatomic_blocks(m):
    return int((m.pgdat.pageblock_flags & 0x7 == MIGRATE_HIGHATOMIC).sum())


def _below_min(m, kind="file"):
    """Fill memory with order-0 folios until the fast path (min watermark) refuses."""
    while len(m.alloc_many(4096, 0, "movable", kind, compact=False)) == 4096:
        pass


def _atomic_machine(profile="linux-6.18", **kw):
    m = simcore.Machine(mem="256M", profile=profile, **kw)
    _below_min(m)
    return m


def test_atomic_high_order_allocation_reserves_its_pageblock():
    m = _atomic_machine()
    assert _reserved(m) == 0
    pfn = m.alloc(3, "unmovable", "kernel", gfp="atomic")
    assert pfn is not None, "GFP_ATOMIC may dip below the min watermark"
    assert m.pgdat.pageblock_flags[pfn >> PAGEBLOCK_ORDER] & 0x7 == MIGRATE_HIGHATOMIC
    assert _reserved(m) == PAGEBLOCK_NR_PAGES
    assert _highatomic_blocks(m) == 1
    m.check()


def test_order0_and_sleeping_requests_do_not_reserve():
    m = _atomic_machine()
    assert m.alloc(0, "unmovable", "kernel", gfp="atomic") is not None
    m.alloc(3, "unmovable", "kernel", compact=False)
    assert _reserved(m) == 0


def test_reserve_serves_atomic_requests_only():
    """Order 4 skips the per-CPU lists (an order-3 request would refill its list from the
    ordinary free lists first, as rmqueue_pcplist() does), so rmqueue_buddy() shows."""
    m = _atomic_machine()
    pfn = m.alloc(4, "unmovable", "kernel", gfp="atomic")
    m.free(pfn)                          # back to the HIGHATOMIC lists (its block's type)
    free_ha = m.zoneinfo()["DMA32"]["nr_free_highatomic"]
    assert free_ha == PAGEBLOCK_NR_PAGES
    m.alloc_many(2048, 0, "unmovable", "kernel", compact=False)
    m.alloc_many(64, 4, "unmovable", "kernel", compact=False)
    assert m.zoneinfo()["DMA32"]["nr_free_highatomic"] == free_ha
    assert m.alloc(4, "unmovable", "kernel", gfp="atomic") is not None
    assert m.zoneinfo()["DMA32"]["nr_free_highatomic"] == free_ha - 16
    m.check()


def test_reserve_is_capped_at_about_one_percent_of_the_zone():
    m = _atomic_machine()
    cap = 2 * PAGEBLOCK_NR_PAGES          # ALIGN(65536 / 100, 512) for the 256M DMA32 zone
    for _ in range(200):
        got = m.alloc(3, "unmovable", "kernel", gfp="atomic")
        if got is None:
            break
    assert 0 < _reserved(m) <= cap
    m.check()


@pytest.mark.parametrize("profile, blocks", [("linux-6.1", 1), ("linux-6.18", 0)])
def test_small_zone_reserve_by_profile(profile, blocks):
    """6.8 stopped reserving when 1% of the zone is below a pageblock (a 32M zone)."""
    m = simcore.Machine(mem="32M", profile=profile)
    _below_min(m)
    assert m.alloc(2, "unmovable", "kernel", gfp="atomic") is not None
    assert _highatomic_blocks(m) == blocks
    m.check()


def test_failed_direct_reclaim_gives_the_reserve_back_before_oom():
    """should_reclaim_retry() exhausts the reserve (force) before the OOM killer runs."""
    m = simcore.Machine(mem="256M", reclaim=True)
    _below_min(m, "anon")                # no swap: nothing reclaim can take
    assert m.alloc(3, "unmovable", "kernel", gfp="atomic") is not None
    assert _reserved(m) == PAGEBLOCK_NR_PAGES
    with pytest.raises(simcore.OutOfMemory):
        m.alloc_many(1 << 16, 0, "unmovable", "kernel", gfp="kernel")
    assert _reserved(m) == 0 and _highatomic_blocks(m) == 0
    m.check()


def test_kcompactd_drains_the_per_cpu_lists_after_a_failed_compaction():
    """Unmovable memory everywhere: no order-9 block can be made, so kcompactd drains."""
    m = simcore.Machine(mem="64M", reclaim=True)
    pfns = m.alloc_many(1 << 14, 0, "unmovable", "slab", compact=False)
    m.free_many(pfns[::2])              # the last frees stay on this CPU's lists
    assert m.pcp_pages() > 0
    m._wakeup_kcompactd(PAGEBLOCK_ORDER)    # as kswapd_try_to_sleep() wakes it
    assert m.pcp_pages() == 0
    m.check()


def test_kcompactd_keeps_the_lists_when_the_order_is_there():
    """A zone that has its order-9 block after kcompactd is not drained."""
    m = simcore.Machine(mem="64M", reclaim=True)
    pfns = m.alloc_many(3000, 0, "unmovable", "slab", compact=False)
    m.free_many(pfns[::2])
    on_lists = m.pcp_pages()
    m._wakeup_kcompactd(PAGEBLOCK_ORDER)
    assert m.pcp_pages() == on_lists


@pytest.mark.parametrize("allowed", [1, 0])
def test_compact_unevictable_allowed(allowed):
    m = simcore.Machine(mem="64M", compact_unevictable_allowed=allowed)
    pfns = m.alloc_many(12000, 0, "movable", "anon", flags="mlocked", compact=False)
    m.free_many(pfns[::2])
    m.drain_all_pages()
    kept = pfns[1::2]
    m.compact()
    moved = int(m.vmstat()["pgmigrate_success"])
    if allowed:
        assert moved > 0
    else:
        assert moved == 0
        assert np.array_equal(m.handle_pfn(m.handles_of(kept)), kept)
    m.check()


def test_compact_unevictable_allowed_must_be_0_or_1():
    with pytest.raises(ValueError, match="compact_unevictable_allowed"):
        simcore.Machine(mem="32M", compact_unevictable_allowed=2)


@pytest.mark.parametrize("policy, nowait3, nowait0", [
    ("gfp_atomic", (), ()),                                 # 6.1: only __GFP_ATOMIC
    ("nonblocking", ("NON_BLOCK", "HIGHATOMIC"), ("NON_BLOCK",)),   # 6.3 .. 6.17
    ("gfp_high", ("NON_BLOCK",), ("NON_BLOCK",)),           # 6.18: 6a204d4b14c9
])
def test_gfp_to_alloc_flags_by_policy(policy, nowait3, nowait0):
    from simcore import gfp, page_alloc

    def bits(names):
        return sum(getattr(page_alloc, "ALLOC_" + name) for name in names)
    atomic = gfp.get_gfp("atomic")
    assert gfp.gfp_to_alloc_flags(atomic, 3, policy) == (
        page_alloc.ALLOC_MIN_RESERVE | page_alloc.ALLOC_NON_BLOCK | page_alloc.ALLOC_HIGHATOMIC)
    assert not gfp.gfp_to_alloc_flags(atomic, 0, policy) & page_alloc.ALLOC_HIGHATOMIC
    assert gfp.gfp_to_alloc_flags(gfp.get_gfp("nowait"), 3, policy) == bits(nowait3)
    assert gfp.gfp_to_alloc_flags(gfp.get_gfp("nowait"), 0, policy) == bits(nowait0)
    for name in ("kswapd_only", "light", "user", "kernel"):     # NOMEMALLOC, or may sleep
        assert gfp.gfp_to_alloc_flags(gfp.get_gfp(name), 3, policy) == 0


def test_gfp_to_alloc_flags_refuses_an_unknown_policy():
    from simcore import gfp
    with pytest.raises(ValueError, match="highatomic_gfp policy 'sometimes'"):
        gfp.gfp_to_alloc_flags(gfp.get_gfp("nowait"), 3, "sometimes")


@pytest.mark.parametrize("profile, blocks", [
    ("linux-6.1", 0), ("linux-6.9", 1), ("linux-6.12", 1), ("linux-6.18", 0)])
def test_high_order_nowait_reserves_from_6_3_until_the_fix(profile, blocks):
    """Between 6.3 and 6.18 a high-order GFP_NOWAIT request below the low watermark gets
    ALLOC_HIGHATOMIC and reserves its pageblock as GFP_ATOMIC does. Without __GFP_HIGH it
    may not go below the min watermark: the zone is filled to between min and low."""
    m = simcore.Machine(mem="256M", profile=profile)
    zone = m.zoneinfo()["DMA32"]
    target = (zone["min"] + zone["low"]) // 2
    while m.free_pages() > target:
        m.alloc_many(max(1, (m.free_pages() - target) // 2), 0, "movable", "file",
                     compact=False)
    assert m.free_pages() > zone["min"] + 8
    pfn = m.alloc(3, "unmovable", "slab", gfp="nowait")
    assert _highatomic_blocks(m) == blocks
    assert _reserved(m) == blocks * PAGEBLOCK_NR_PAGES
    if blocks:
        assert m.pgdat.pageblock_flags[pfn >> PAGEBLOCK_ORDER] & 0x7 == MIGRATE_HIGHATOMIC
    m.check()


def test_compact_false_without_gfp_gets_no_reserves():
    """Machine.alloc(compact=False) stands for a request with __GFP_NOMEMALLOC
    ("kswapd_only"): no kernel gives it ALLOC_HIGHATOMIC."""
    m = _atomic_machine("linux-6.9")
    m.alloc(3, "unmovable", "slab", compact=False)
    assert _reserved(m) == 0


@pytest.mark.parametrize("profile, reserves", [("linux-6.12", True), ("linux-6.18", False)])
def test_pagecache_churn_nowait_knob(profile, reserves):
    made = []

    def factory(**kw):
        made.append(SimBackend(profile=profile, **kw))
        return made[-1]
    row = run_one("pagecache-churn", "folio", quick=True,
                  params={"nowait": 0.2, "cache": 0.95, "highorder": 0},
                  backend_factory=factory)
    assert row["nowait_granted"] > 0
    m = made[0].machine
    assert (_reserved(m) > 0) == reserves
    m.check()


def _offlinable_highatomic_block(profile, pin_one=False):
    """A machine whose reserve holds one HIGHATOMIC pageblock with nothing unmovable in it,
    and the memory block that holds it. pin_one: keep one pinned anonymous folio in that
    memory block, so that offlining it fails after the isolation (migration cannot move it)."""
    m = simcore.Machine(mem="512M", profile=profile)
    fill = []
    while True:
        got = m.alloc_many(4096, 0, "movable", "anon", compact=False)
        fill.append(got)
        if len(got) < 4096:
            break
    fill = np.concatenate(fill)
    pfn = m.alloc(3, "unmovable", "kernel", gfp="atomic")
    assert pfn is not None and _highatomic_blocks(m) == 1
    m.free(pfn)
    blocks = m.memory_blocks()
    index = next(i for i, b in enumerate(blocks)
                 if b["start_pfn"] <= pfn < b["start_pfn"] + b["nr_pages"])
    start = blocks[index]["start_pfn"]
    keep = np.empty(0, dtype=np.int64)
    if pin_one:
        inside = fill[(fill >= start) & (fill < start + blocks[index]["nr_pages"])
                      & (fill >> PAGEBLOCK_ORDER != pfn >> PAGEBLOCK_ORDER)]
        keep = inside[:1]
        m.set_flags(keep, "pinned")
    m.free_many(np.setdiff1d(fill, keep))
    m.drain_all_pages()
    return m, index, pfn >> PAGEBLOCK_ORDER


@pytest.mark.parametrize("profile", ["linux-6.1", "linux-6.18"])
def test_offline_leaves_nr_reserved_highatomic_alone(profile):
    """offline_pages() takes a HIGHATOMIC pageblock out of the zone without touching
    nr_reserved_highatomic (no isolation or offline path adjusts it); the count overstates the
    reserve from then on, and onlining does not give it back either."""
    m, index, _ = _offlinable_highatomic_block(profile)
    ok, why = m.offline_memory_block(index)
    assert ok, why
    assert _reserved(m) == PAGEBLOCK_NR_PAGES and _highatomic_blocks(m) == 0
    m.check()
    assert m.online_memory_block(index)[0]
    assert _reserved(m) == PAGEBLOCK_NR_PAGES and _highatomic_blocks(m) == 0
    m.check()


@pytest.mark.parametrize("profile, highatomic_after", [("linux-6.1", False),
                                                        ("linux-6.12", False),
                                                        ("linux-6.18", True)])
def test_failed_offline_undo_by_profile(profile, highatomic_after):
    """A failed offline undoes the isolation: before 6.17 every block gets the caller's
    MIGRATE_MOVABLE (the HIGHATOMIC block's pages stay counted), from 6.17 the isolation bit
    is cleared and the block is HIGHATOMIC again."""
    m, index, block = _offlinable_highatomic_block(profile, pin_one=True)
    ok, why = m.offline_memory_block(index)
    assert not ok and "EBUSY" in why
    mt = int(m.pgdat.pageblock_flags[block] & 0x7)
    assert (mt == MIGRATE_HIGHATOMIC) == highatomic_after
    assert _reserved(m) == PAGEBLOCK_NR_PAGES
    m.check()


def _pageset(m, zone="DMA32", cpu=0):
    return m.zoneinfo()[zone]["pagesets"][cpu]


def test_vmstat_worker_decays_pcp_high():
    """decay_pcp_high(): once a simulated second, high drops an eighth towards high_min and
    the pages above it are drained (auto_high profiles)."""
    m = simcore.Machine(mem="256M", profile="linux-6.18", cpus=1)
    pfns = m.alloc_many(20000, 0, "movable", "anon", compact=False)
    m.free_many(pfns)                    # consecutive frees raise high above high_min
    before = _pageset(m)
    assert before["high"] > before["high_min"]
    m.tick(999)
    assert _pageset(m)["high"] == before["high"]           # the worker has not run yet
    m.tick(1)
    after = _pageset(m)
    assert after["high"] == max(before["high"] - (before["high"] >> 3), before["high_min"],
                                before["count"] - (after["batch"] << 5))
    assert after["count"] <= after["high"]
    m.tick(100_000)
    settled = _pageset(m)
    assert settled["high"] == settled["high_min"] and settled["count"] <= settled["high_min"]
    m.check()


def test_no_pcp_decay_on_fixed_high_kernels():
    m = simcore.Machine(mem="256M", profile="linux-6.1", cpus=1)
    pfns = m.alloc_many(20000, 0, "movable", "anon", compact=False)
    m.free_many(pfns[:100])
    before = _pageset(m)
    m.tick(10_000)
    assert _pageset(m) == before



def test_folios_kcompactd_moves_before_the_call_returns_are_returned_where_they_are():
    """With reclaim on, alloc_many() wakes kswapd, and kswapd kcompactd, before it returns:
    kcompactd may migrate the folios just allocated. The PFNs returned must be where those
    folios are afterwards (this run once stopped on 'a pfn is not the head of an allocated
    folio')."""
    row = run_one("pagecache-churn", "folio", quick=True,
                  params={"atomic": 0.2, "cache": 0.95, "highorder": 0},
                  backend_factory=functools.partial(SimBackend, profile="linux-6.1"))
    assert row["pages_migrated"] > 0


def _file_cache_and_a_reserve(monkeypatch, profile):
    """1G of order-0 file cache down to the min watermark and a highatomic reserve built by
    GFP_ATOMIC order-3 requests (six blocks, 3,072 pages), as in the pagecache-churn runs of
    docs/reclaim.md. kswapd stays asleep while it is built. Returns the machine and the file
    folios' PFNs."""
    m = simcore.Machine(mem="1G", profile=profile, reclaim=True)
    files = []
    with monkeypatch.context() as patch:
        patch.setattr(vmscan, "run_kswapd", lambda machine: 0)
        while len(files) == 0 or len(files[-1]) == 4096:
            files.append(m.alloc_many(4096, 0, "movable", "file", gfp="light"))
        for _ in range(40):
            m.alloc(3, "unmovable", "kernel", gfp="atomic")
    m.lru.kswapd_order = -1
    m.drain_all_pages()
    assert _reserved(m) == 6 * PAGEBLOCK_NR_PAGES
    return m, np.concatenate(files)


def test_direct_reclaim_target_counts_the_unusable_reserve(monkeypatch):
    """The retry after direct reclaim checks the min watermark without the reserve (6.1:
    __zone_watermark_unusable_free() subtracts all of nr_reserved_highatomic), so reclaim
    aims above the high watermark counted the same way: a __GFP_NORETRY request's one round
    succeeds and gives no block back (before, it always failed once the reserve exceeded
    high - min, and unreserve_highatomic_pageblock() took a block: the churn of
    docs/reclaim.md's 6.1 pagecache-churn runs)."""
    m, _ = _file_cache_and_a_reserve(monkeypatch, "linux-6.1")
    zone = m.zoneinfo()["DMA32"]
    assert highatomic.zone_unusable_free(m.pgdat, 0) > zone["high"] - zone["min"]
    reserved = _reserved(m)
    stalls = m.vmstat()["allocstall_movable"]
    assert m.alloc(0, "movable", "file", gfp="noretry") is not None
    assert m.vmstat()["allocstall_movable"] == stalls + 1, "the request reclaimed directly"
    assert _reserved(m) == reserved
    m.check()


@pytest.mark.parametrize("profile", ["linux-6.1", "linux-6.12"])
def test_kswapd_reclaims_until_balanced_with_a_reserve(monkeypatch, profile):
    """balance_pgdat() reclaims until pgdat_balanced(), whose watermark check leaves out the
    reserve's unusable pages; each pass's target counts them too, so kswapd woken with the
    zone just above its high watermark does not stop short of its own check (before, every
    pass asked for SWAP_CLUSTER_MAX there and it slept unbalanced,
    kswapd_high_wmark_hit_quickly)."""
    m, files = _file_cache_and_a_reserve(monkeypatch, profile)
    zone = m.zoneinfo()["DMA32"]
    m.free_many(files[:zone["high"] - zone["nr_free_pages"] + SWAP_CLUSTER_MAX])
    m.drain_all_pages()
    assert m.zoneinfo()["DMA32"]["nr_free_pages"] > zone["high"]
    highest = len(ZONE_NAMES) - 1
    assert not vmscan.pgdat_balanced(m, 0, highest)
    m.lru.kswapd_order = 0
    vmscan.run_kswapd(m)
    assert vmscan.pgdat_balanced(m, 0, highest)
    assert m.vmstat()["kswapd_high_wmark_hit_quickly"] == 0
    m.check()
