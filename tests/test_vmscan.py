"""Reclaim (simcore.vmscan): LRU order and references, shrink_folio_list() outcomes, direct
reclaim in the slow path, kswapd, OOM, and the GFP semantics of each caller."""
import numpy as np
import pytest

import simcore
from simcore import gfp
from simcore.vmscan import LRU_ACTIVE_FILE
from workloads.backend import SimBackend


def full_of_cache(mem="64M", seed=0, **kw):
    """A reclaim machine whose memory is page cache down to the low watermark."""
    m = simcore.Machine(mem=mem, seed=seed, reclaim=True, **kw)
    cache = m.alloc_many(m.nr_pages, 0, "movable", "file", compact=False, gfp="light")
    return m, cache


def test_direct_reclaim_takes_page_cache_for_anon():
    m, cache = full_of_cache()
    assert m.alloc(0, "movable", "anon", gfp="light") is None    # at the low watermark
    got = m.alloc_many(2000, 0, "movable", "anon")
    assert len(got) == 2000
    v = m.vmstat()
    assert v["allocstall_movable"] >= 1
    assert v["pgscan_direct"] >= v["pgsteal_direct"] > 0
    assert v["pgsteal_file"] > 0 and v["pgsteal_anon"] == 0
    m.check()


def test_a_call_never_reclaims_what_it_allocated():
    m, cache = full_of_cache()
    got = m.alloc_many(len(cache) // 2, 0, "movable", "file")   # re-reads of other files
    assert len(got) == len(cache) // 2
    recs = m.pgdat.mem_map[got]
    assert (recs["type"] == 2).all() and (recs["kind"] == 1).all()
    assert len(set(got.tolist())) == len(got)
    assert m.vmstat()["pgsteal_direct"] >= len(cache) // 2 - m.free_pages()
    m.check()


def test_reclaimed_folios_move_their_handle_generation():
    m, cache = full_of_cache()
    handles = m.handles_of(cache)
    m.reclaim_pages(1000)
    gen = m.handle_generation(handles)
    assert 1000 <= int((gen > 0).sum()) < len(handles)
    # the oldest go first: the evicted ones are the earliest allocated
    first = np.flatnonzero(gen > 0)
    assert first.max() < len(handles) // 2
    m.check()


def test_referenced_cache_outlives_unreferenced():
    m, cache = full_of_cache()
    old = cache[:2000]
    m.touch(old)
    m.touch(old)                 # second access while referenced: activated
    assert m.lru.nr_pages[LRU_ACTIVE_FILE] == 2000
    m.reclaim_pages(3000)
    assert (m.handle_generation(m.handles_of(old)) == 0).all()
    assert m.vmstat()["pgactivate"] == 2000
    m.check()


def test_dirty_cache_is_written_back_then_dropped_and_pinned_stays():
    m, cache = full_of_cache()
    m.set_flags(cache[:500], "dirty")
    m.set_flags(cache[500:600], "pinned")
    m.set_flags(cache[600:700], "writeback")
    m.reclaim_pages(1500)
    assert m.vmstat()["nr_vmscan_write"] == 500
    kept = m.handles_of(cache[500:700])
    assert (m.handle_generation(kept) == 0).all()
    m.check()


def test_anon_is_reclaimed_only_to_swap():
    m = simcore.Machine(mem="64M", reclaim=True)
    anon = m.alloc_many(m.nr_pages, 0, "movable", "anon", gfp="light")
    assert m.reclaim_pages(100) == 0               # no swap area: anon lists not scanned
    m.swapon("16M")
    assert m.reclaim_pages(100) >= 100
    v = m.vmstat()
    assert v["pgsteal_anon"] >= 100 and v["pswpout"] >= 100
    assert sum(r.nr_swapped for r in m.lru.swapped) == m.swap_device.inuse_pages()
    assert len(anon)
    m.check()


def test_kernel_allocation_that_cannot_be_served_is_an_oom():
    m = simcore.Machine(mem="64M", reclaim=True)
    m.alloc_many(m.nr_pages, 0, "unmovable", "slab", gfp="light")
    # "user" fails quietly, once reclaim's retry has drained the per-CPU lists and the min
    # reserve is used up
    granted = 0
    while m.alloc(0, "unmovable", "slab") is not None:
        granted += 1
        assert granted < 1024
    assert m.alloc(0, "unmovable", "slab") is None                  # "user": fails quietly
    with pytest.raises(simcore.OutOfMemory):
        m.alloc(0, "unmovable", "slab", gfp="kernel")
    assert m.vmstat()["oom_kill"] == 1
    m.check()


def test_kswapd_reclaims_to_the_high_watermark():
    m, _ = full_of_cache()
    m.alloc_many(100, 0, "movable", "anon", gfp="nowait")
    v = m.vmstat()
    assert v["pageoutrun"] == 1 and v["pgscan_kswapd"] > 0 and v["pgsteal_direct"] == 0
    zone = m.zoneinfo()["DMA32"]
    assert zone["nr_free_pages"] > zone["high"]
    m.check()


def test_kswapd_woken_again_within_its_nap_counts_low_wmark_hit_quickly():
    m, _ = full_of_cache()
    m.alloc_many(100, 0, "movable", "anon", gfp="nowait")
    m.alloc_many(m.free_pages(), 0, "movable", "anon", gfp="nowait")
    assert m.vmstat()["kswapd_low_wmark_hit_quickly"] >= 1


def test_high_order_request_wakes_kcompactd_after_kswapd():
    m, cache = full_of_cache()
    m.free_many(cache[::3])
    m.alloc_many(4, 9, "movable", "hugetlb", gfp="kswapd_only")
    v = m.vmstat()
    assert v["pageoutrun"] >= 1 and v["compact_daemon_wake"] >= 1
    assert v["compact_stall"] == 0               # kswapd_only never stalls
    m.check()


def half_free_cache():
    """128M of page cache with every other page freed (half of memory free, no order-9 block)
    and the blocks the light requests find taken."""
    m, cache = full_of_cache("128M")
    m.free_many(cache[1::2])                    # every other page free: no order-9 block
    light = m.alloc_many(8, 9, "movable", "hugetlb", gfp="light")
    assert len(light) < 8 and m.vmstat()["compact_stall"] == 0
    return m


def test_hugetlb_pool_growth_compacts_without_direct_reclaim():
    """Half of memory free: direct reclaim for order 9 finds the zone compaction_ready() and
    reclaims nothing; the pages come from direct compaction and from the kcompactd that kswapd
    wakes (the kernel's kswapd runs beside the resizing task; ours between its requests)."""
    m = half_free_cache()
    got = [m.alloc(9, "movable", "hugetlb", gfp="retry_mayfail") for _ in range(8)]
    v = m.vmstat()
    assert None not in got
    assert v["compact_stall"] > 0 and v["compact_success"] > 0
    assert v["allocstall_movable"] > 0 and v["pgsteal_direct"] == 0
    assert v["compact_daemon_wake"] > 0
    m.check()


def test_async_free_scanner_stride_misses_alternating_free_pages():
    """The same layout in one call: the first direct compaction is async, and its free
    scanner's stride (COMPACT_CLUSTER_MAX, as in the kernel) looks only at the even PFNs, all in
    use, so its linear walk isolates nothing and the scanners meet; the blocks it walked are
    marked skipped, which the sync-light run after it honours (costly orders never reach
    COMPACT_PRIO_SYNC_FULL): it gets one batch of targets from fast_isolate_around(), finds
    every block below skipped and ends COMPLETE, so direct compaction builds blocks slowly."""
    m = half_free_cache()
    m.trace_events(True)
    m.alloc_many(8, 9, "movable", "hugetlb", gfp="retry_mayfail")
    records = m.trace_records()
    first_end = next(i for i, r in enumerate(records)
                     if r["event"] == "compaction:mm_compaction_end")
    assert not records[0]["sync"] and records[first_end]["status"] == "complete"
    walked = [r for r in records[:first_end]
              if r["event"] == "compaction:mm_compaction_isolate_freepages"]
    assert len(walked) > 10 and all(r["nr_taken"] == 0 for r in walked)
    assert all(r["nr_scanned"] == 512 // 32 for r in walked)
    second = [i for i, r in enumerate(records) if i > first_end and r["event"] in (
        "compaction:mm_compaction_begin", "compaction:mm_compaction_end")][:2]
    assert records[second[0]]["sync"] and records[second[1]]["status"] == "complete"
    taken = [r["nr_taken"] for r in records[second[0]:second[1]]
             if r["event"] == "compaction:mm_compaction_isolate_freepages"]
    assert taken == [32]
    v = m.vmstat()
    assert v["compact_fail"] > 0 and v["pgsteal_direct"] == 0
    m.check()


def test_reclaim_is_deterministic():
    def run():
        m, cache = full_of_cache(seed=3)
        m.touch(cache[::7])
        m.swapon("8M")
        m.alloc_many(3000, 0, "movable", "anon")
        m.alloc_many(4, 9, "movable", "hugetlb", gfp="retry_mayfail")
        m.tick(1000)
        return m.digest()
    assert run() == run()


def test_machine_without_reclaim_refuses_touch():
    m = simcore.Machine(mem="64M")
    pfn = m.alloc(0, kind="file")
    with pytest.raises(ValueError, match="reclaim"):
        m.touch([pfn])
    with pytest.raises(ValueError, match="gfp"):
        m.alloc(0, gfp="sometimes")


def test_backend_skips_handles_reclaim_took():
    b = SimBackend(mem="64M")
    cache = b.alloc(b.total_pages, 0, kind="file", compact=False, gfp="light")
    anon = b.alloc(3000, 0)
    assert len(anon) == 3000
    b.free(cache)                                # reclaimed ones are skipped, not refused
    with pytest.raises(ValueError, match="reclaim"):
        b.folio_orders(cache)
    b.machine.check()
    assert b.machine.allocated_pages() == 3000


@pytest.mark.parametrize("defrag,madvised,want", [
    ("always", False, "transhuge_noretry"), ("always", True, "transhuge"),
    ("defer", True, "kswapd_only"), ("defer+madvise", True, "transhuge"),
    ("defer+madvise", False, "kswapd_only"), ("madvise", True, "transhuge"),
    ("madvise", False, "light"), ("never", True, "light")])
def test_vma_thp_gfp_mask(defrag, madvised, want):
    assert gfp.vma_thp_gfp_mask(defrag, madvised) == want


def test_unknown_defrag_is_a_value_error():
    with pytest.raises(ValueError, match="defrag"):
        gfp.vma_thp_gfp_mask("sometimes")


class _SlabHog:
    """A workload whose kernel allocations outgrow memory."""
    name = "slab-hog"
    params = {}
    machine = {}
    headline = ()

    def run(self, backend, p, extra):
        backend.alloc(backend.total_pages, 0, "slab", "unmovable", gfp="kernel")
        return {"requested": 1, "granted": 1}


def test_oom_ends_the_workload_with_an_oom_row():
    from workloads.base import run_one
    row = run_one(_SlabHog, mem="64M")
    assert row["oom"].startswith("out of memory: order-0")
    assert row["unsupported"] == ""


def _fallback_machine(profile="linux-6.18", factor=15000):
    """Movable page cache in every pageblock with holes: an unmovable request larger than the
    wholly free blocks left at the top falls back into partly used movable blocks."""
    m = simcore.Machine(mem="128M", reclaim=True, profile=profile,
                        watermark_boost_factor=factor)
    cache = m.alloc_many(m.nr_pages, 0, "movable", "file", gfp="light")
    m.free_many(cache[::4])
    return m


@pytest.mark.parametrize("profile", ["linux-6.1", "linux-6.18"])
def test_fragmenting_fallback_boosts_the_watermarks(profile):
    m = _fallback_machine(profile)
    before = m.zoneinfo()["DMA32"]
    m.alloc_many(3000, 0, "unmovable", "slab", gfp="light")      # may not wake kswapd
    after = m.zoneinfo()["DMA32"]
    assert after["boost"] > 0
    assert after["high"] - before["high"] == after["boost"] == after["min"] - before["min"]
    assert after["boost"] <= max(512, (before["high"] * 15000) // 10000)
    m.check()
    # the next fallback of a request that may wake kswapd: boosted reclaim, then the boost
    # goes and kcompactd is woken for pageblock_order
    m.alloc_many(100, 0, "unmovable", "slab")
    v = m.vmstat()
    assert m.zoneinfo()["DMA32"]["boost"] == 0 and m.zoneinfo()["DMA32"]["high"] == before["high"]
    assert v["pageoutrun"] >= 1 and v["compact_daemon_wake"] >= 1
    assert v["nr_vmscan_write"] == 0
    m.check()


def test_watermark_boost_factor_zero_never_boosts():
    m = _fallback_machine(factor=0)
    m.alloc_many(3000, 0, "unmovable", "slab", gfp="light")
    assert m.zoneinfo()["DMA32"]["boost"] == 0
    with pytest.raises(ValueError, match="watermark_boost_factor"):
        simcore.Machine(mem="64M", watermark_boost_factor=-1)


def test_small_movable_steals_boost_before_6_15_only():
    boosts = {}
    for profile in ("linux-6.12", "linux-6.18"):
        m = simcore.Machine(mem="128M", reclaim=True, profile=profile)
        slab = m.alloc_many(m.nr_pages, 0, "unmovable", "slab", gfp="light")
        m.free_many(slab[::4])
        m.alloc_many(3000, 0, "movable", "anon", gfp="light")
        boosts[profile] = m.zoneinfo()["DMA32"]["boost"]
    assert boosts["linux-6.12"] > 0 and boosts["linux-6.18"] == 0


def test_queries_leave_the_digest_alone():
    m, cache = full_of_cache()
    m.reclaim_pages(100)
    before = m.digest()
    m.handle_generation(m.handles_of(cache[-10:]))
    m.lru_sizes()
    m.vmstat()
    m.check()
    assert m.digest() == before


def test_a_poisoned_page_leaves_the_lru():
    """Found by the stateful test: memory_failure() turns the page into kernel memory."""
    m = simcore.Machine(mem="64M", reclaim=True)
    pfn = int(m.fault_anon(1, [])[0][0])
    m.memory_failure(pfn)
    m.check()
    m.reclaim_pages(32)
    m.check()


@pytest.mark.parametrize("step", ["fault_anon", "alloc"])
def test_backend_turns_keep_handles_of_folios_a_later_turn_moved(step):
    """A backend call of many folios runs in turns (one per thread/CPU); a later turn's
    kswapd and kcompactd may migrate or reclaim what an earlier turn got. Each turn's PFNs
    must become handles before the next turn (this stopped the thpcompact shape, after page
    cache had filled memory, with 'a pfn is not the head of an allocated folio')."""
    backend = SimBackend(mem="1G", seed=0, strategy="folio")
    rng = backend.rng
    read = []
    while len(read) * 256 < 1.3 * backend.total_pages:   # page cache past memory
        read.append(np.concatenate([backend.alloc(max(1, 42 >> o), o, "file", compact=False,
                                                  gfp="noretry") for o in range(6)]))
        if len(read) > 8 and rng.random() < 0.5:
            old = read[int(rng.integers(len(read) - 1))]
            backend.touch(old[rng.random(len(old)) < 0.1])
    count = backend.total_pages // 3 >> 4
    if step == "fault_anon":
        got = backend.fault_anon(count, [4], gfp="transhuge")[4]
    else:
        got = backend.alloc(count, 4, "anon")
    assert len(got)
    # every live handle names a folio head; kcompactd may have split some 64K folios it
    # migrated (no free target of their order), leaving the head piece smaller
    orders = backend.folio_orders(backend._live(got))
    assert np.all(orders <= 4) and (orders == 4).sum() > len(got) // 2
    backend.machine.check()


def test_pgsteal_counts_the_pages_of_the_folios_freed():
    """shrink_folio_list()'s nr_reclaimed is the pages of the folios it freed, whether they
    went to a per-CPU list or to the buddy lists (pgsteal never above pgscan)."""
    m = simcore.Machine(mem="64M", reclaim=True)
    m.alloc_many(m.free_pages() - 1024, 0, "movable", "file", compact=False, cpu=0)
    before, held = m.vmstat(), m.allocated_pages()
    got = m.reclaim_pages(512)
    after = m.vmstat()
    freed = held - m.allocated_pages()
    assert got == freed > 0
    assert after["pgsteal_direct"] - before["pgsteal_direct"] == freed
    assert after["pgsteal_direct"] - before["pgsteal_direct"] \
        <= after["pgscan_direct"] - before["pgscan_direct"]
    m.check()


def test_touching_a_kernel_folio_whose_handle_is_past_the_lru_arrays():
    """touch() of a folio that was never on an LRU list (GFP_ATOMIC kernel memory) whose
    handle lies beyond the LRU's per-handle arrays does nothing (found by the soak state
    machine: IndexError after cma_alloc() and an atomic allocation)."""
    m = simcore.Machine(mem="64M", reclaim=True)
    m._reserve_handles(len(m.pgdat.folio_pfn) + 64)     # the handle table grows
    kernel = m.alloc_many(2048, 0, "unmovable", "kernel", gfp="atomic")
    assert int(m.pgdat.mem_map["next"][kernel].max()) >= len(m.lru.list_of)
    m.touch(kernel)
    m.check()


def test_direct_reclaim_leaves_a_zone_ready_for_compaction_alone():
    """compaction_ready(): for a costly order, a zone where the allocation could succeed, or
    where compaction is suitable above high + compact_gap, is skipped (progress 1, nothing
    reclaimed); a cheap order, or memory near the watermarks, is reclaimed."""
    from simcore import vmscan
    from simcore.mmzone import ZONE_NAMES
    dma32 = ZONE_NAMES.index("DMA32")      # the only zone of a small machine
    m = simcore.Machine(mem="256M", seed=0, reclaim=True)
    m.alloc_many(8192, 0, kind="file", compact=False)
    stalls = m.vmstat()["allocstall_dma32"]
    assert vmscan.try_to_free_pages(m, 9, dma32, 64) == 1
    assert m.vmstat()["pgsteal_direct"] == 0 and m.vmstat()["allocstall_dma32"] == stalls + 1
    assert vmscan.try_to_free_pages(m, 3, dma32, 64) >= 64       # not a costly order
    tight, _ = full_of_cache("64M")
    assert not any(vmscan.compaction_ready(tight, z, 9, dma32) for z in range(dma32 + 1)
                   if tight.pgdat.zones[z, vmscan.Z_END] > tight.pgdat.zones[z, vmscan.Z_START])
    assert vmscan.try_to_free_pages(tight, 9, dma32, 64) >= 64
