"""Regression tests for the bugs of issue 12 ("Bugs" items 1-7): each runs the issue's repro
and checks the state the kernel would be in, and that misuse is refused before anything
changes."""
import numpy as np
import pytest
from buddy_only import pcp_disabled

import simcore
from simcore.metrics import compaction_metrics
from simcore.mmzone import (
    MIGRATE_CMA,
    PAGE_BUDDY,
    PAGEBLOCK_NR_PAGES,
    PB_MIGRATETYPE_MASK,
    ZONE_MOVABLE,
)
from simcore.pgdat import Z_COMPACT_CACHED_FREE, Z_COMPACT_DEFER_SHIFT, Z_MANAGED


def pageblock_types(m):
    return (m.pgdat.pageblock_flags & PB_MIGRATETYPE_MASK).copy()


# --- 1. undo of a failed offline splits free blocks across migratetypes -------------------

def _failed_offline_machine():
    m = pcp_disabled(simcore.Machine(mem="64M", seed=0, memory_block="8M"))
    p = m.alloc_many(16384, 0, "movable", "anon")

    def blk(b):
        return p[(p >= b * 512) & (p < (b + 1) * 512)]

    m.free_many(blk(9))
    m.free(m.alloc(0, migratetype="unmovable", kind="slab"))
    for b in range(20, 28):
        m.free_many(blk(b))
    m.set_flags(blk(10)[:1], "pinned")
    return m


def test_failed_offline_undo_keeps_free_blocks_within_one_migratetype():
    m = _failed_offline_machine()
    before = pageblock_types(m)
    ok, reason = m.offline_memory_block(2)
    assert not ok and reason.startswith("EBUSY")
    m.check()
    assert before[8:12].tolist() != [before[8]] * 4       # the range did mix types
    # outside the range nothing changed type; inside, the free halves of pageblocks 8 and 9
    # merged again as __free_one_page() merges mergeable types (the buddy takes the type of
    # the block being freed), so no free block spans two types
    after = pageblock_types(m)
    assert (np.delete(after, range(8, 12)) == np.delete(before, range(8, 12))).all()
    assert m.pgdat.mem_map["type"][8 * 512] == PAGE_BUDDY
    assert m.pgdat.mem_map["order"][8 * 512] == 10
    assert after[8] == after[9]
    # and the allocator keeps working on the result: take everything, give it back
    got = m.alloc_many(1 << 20, 0, "unmovable", "slab", compact=False)
    assert len(got)
    m.check()
    m.free_many(got)
    m.check()


# --- 2. swap-out of a folio larger than a swap cluster -------------------------------------

@pytest.mark.parametrize("profile", ["linux-6.10", "linux-6.12", "linux-6.18"])
def test_swap_out_above_pmd_order_splits_to_order0(profile):
    m = simcore.Machine(mem="256M", profile=profile)
    m.swapon("64M")
    fallback = m.vmstat()["thp_swpout_fallback"]
    (rec,) = m.swap_out([m.alloc(10, kind="anon")])
    m.check()
    assert rec is not None and rec.nr_swapped == 1024
    assert {order for _, order, _ in rec.pieces} == {0}
    assert m.vmstat()["thp_swpout_fallback"] == fallback + 1   # nr_pages >= HPAGE_PMD_NR
    # a later swap-out does not reuse the slots, and everything comes back
    (rec2,) = m.swap_out([m.alloc(9, kind="anon")])
    m.check()
    offsets = {off for off, _, _ in rec.pieces}
    assert not any(off <= o < off + (1 << order) for off, order, _ in rec2.pieces
                   for o in offsets)
    assert sum(len(h) for h in m.swap_in([rec, rec2])) > 0
    assert rec.pieces == [] and rec2.pieces == []
    assert m.swap_device.inuse_pages() == 0
    m.check()


def test_swap_out_above_pmd_order_before_6_10_splits_without_fallback():
    m = simcore.Machine(mem="256M", profile="linux-6.1")
    m.swapon("64M")
    (rec,) = m.swap_out([m.alloc(10, kind="anon")])
    m.check()
    assert rec.nr_swapped == 1024 and m.vmstat()["thp_swpout_fallback"] == 0


def test_swap_device_never_gives_more_than_a_cluster():
    m = simcore.Machine(mem="256M")
    m.swapon("64M")
    assert m.swap_device.alloc(10, "nonfull_cluster") == -1
    assert m.swap_device.inuse_pages() == 0


# --- 3. CMA pageblocks cannot be offlined ---------------------------------------------------

def test_cma_blocks_are_not_offlinable():
    m = simcore.Machine(mem="256M", cma="16M", memory_block="8M")
    lo, hi = m.cma_range
    cma_block = lo // m.memory_block_pages
    digest = m.digest()
    ok, reason = m.offline_memory_block(cma_block)
    assert not ok and reason.startswith("EBUSY") and str(lo) in reason
    assert m.digest() == digest
    assert m.zoneinfo()["DMA32"]["cma"] == hi - lo
    # a whole-area cma_alloc gets exactly the CMA pageblocks
    start = m.cma_alloc(hi - lo)
    assert start == lo
    assert (pageblock_types(m)[lo // PAGEBLOCK_NR_PAGES:hi // PAGEBLOCK_NR_PAGES]
            == MIGRATE_CMA).all()
    m.cma_release(start)
    m.check()


def test_block_straddling_cma_is_not_offlinable():
    m = simcore.Machine(mem="256M", cma="2M", memory_block="8M")
    lo, _ = m.cma_range
    ok, reason = m.offline_memory_block(lo // m.memory_block_pages)
    assert not ok and reason == f"EBUSY: unmovable page at pfn {lo}"
    ok, _ = m.offline_memory_block(lo // m.memory_block_pages - 1)   # a plain block still goes
    assert ok
    m.check()


# --- 4. misuse is refused before anything changes, or handled as the kernel does ----------

def _poisoned():
    m = simcore.Machine(mem="64M")
    head = m.alloc(4, kind="anon")
    assert m.memory_failure(head + 3) == (True, "recovered")
    return m, head + 3


def test_free_of_a_poisoned_page_is_refused():
    m, bad = _poisoned()
    other = m.alloc(0)
    digest = m.digest()
    with pytest.raises(ValueError, match=f"pfn {bad} is a hardware-poisoned page"):
        m.free(bad)
    with pytest.raises(ValueError, match="hardware-poisoned.*nothing was freed"):
        m.free_many([other, bad])
    with pytest.raises(ValueError, match="hardware-poisoned"):
        m.split(bad, 0)
    assert m.digest() == digest
    m.check()


def test_collapse_refuses_non_lru_folios_before_allocating():
    m = simcore.Machine(mem="64M")
    slab = m.alloc_many(512, 0, "unmovable", "slab")
    digest = m.digest()
    assert m.collapse(slab) == (None, "SCAN_PAGE_LRU")
    assert m.digest() == digest
    m2 = simcore.Machine(mem="64M")
    anon = m2.alloc_many(511, 0)
    head = m2.alloc(0)
    m2.memory_failure(head)
    digest = m2.digest()
    assert m2.collapse(np.append(anon, head)) == (None, "SCAN_PAGE_LRU")
    assert m2.digest() == digest
    mixed = np.append(m2.alloc_many(256, 0, kind="anon"), m2.alloc_many(256, 0, kind="file"))
    digest = m2.digest()
    assert m2.collapse(mixed) == (None, "SCAN_PAGE_ANON")
    assert m2.digest() == digest
    m2.check()


def test_cma_release_of_a_range_with_poison_cannot_happen():
    m = simcore.Machine(mem="256M", cma="16M")
    start = m.cma_alloc(512)
    before = m.subsystem_stats()
    assert m.memory_failure(start + 7) == (False, "ignored: kernel page")
    after = m.subsystem_stats()
    assert after["memory_failure/total"] == before["memory_failure/total"] + 1
    assert after["memory_failure/ignored"] == before["memory_failure/ignored"] + 1
    m.cma_release(start)
    m.check()
    with pytest.raises(ValueError, match="is not the start of a CMA allocation"):
        m.cma_release(start)


def test_cma_release_that_fails_keeps_the_allocation():
    m = simcore.Machine(mem="256M", cma="16M")
    start = m.cma_alloc(512)
    m.pgdat.mem_map["prev"][start] = -2      # FOLIO_ISOLATED: owned by a migration in flight
    with pytest.raises(ValueError, match="isolated"):
        m.cma_release(start)
    m.pgdat.mem_map["prev"][start] = -1
    m.cma_release(start)
    m.check()


def test_memory_failure_on_hugetlb_is_refused_before_counting():
    m = simcore.Machine(mem="64M")
    h = m.alloc(9, kind="hugetlb")
    digest = m.digest()
    with pytest.raises(ValueError, match=f"pfn {h + 5} is in a hugetlb folio"):
        m.memory_failure(h + 5)
    assert m.digest() == digest
    assert m.subsystem_stats()["memory_failure/total"] == 0


@pytest.mark.parametrize("kind", ["slab", "pagetable", "kernel"])
def test_memory_failure_on_kernel_memory_is_ignored_without_split(kind):
    m = simcore.Machine(mem="64M")
    h = m.alloc(2, "unmovable", kind)
    assert m.memory_failure(h + 1) == (False, "ignored: kernel page")
    assert m.folio(h)["order"] == 2 and m.folio(h)["kind"] == kind
    stats = m.subsystem_stats()
    assert (stats["memory_failure/total"], stats["memory_failure/ignored"]) == (1, 1)
    assert stats["memory_failure/recovered"] == 0
    m.free(h)
    m.check()


def test_ksm_merge_of_a_folio_with_itself_is_refused():
    m = simcore.Machine(mem="64M")
    x = m.alloc(2)
    digest = m.digest()
    with pytest.raises(ValueError, match=f"pfn {x} is in both pfns_a and pfns_b"):
        m.ksm_merge([x], [x])
    assert m.digest() == digest
    assert m.subsystem_stats()["ksm/full_scans"] == 0


@pytest.mark.parametrize("kind", ["hugetlb", "file", "shmem", "slab"])
def test_ksm_merge_of_non_anon_is_refused_before_splitting(kind):
    m = simcore.Machine(mem="64M")
    ok_a, ok_b = m.alloc(0), m.alloc(0)          # a valid first pair changes nothing either
    a = m.alloc(9, kind="anon")
    b = m.alloc(9, "unmovable" if kind == "slab" else "movable", kind)
    digest = m.digest()
    with pytest.raises(ValueError, match=f"pfn {b} is a {kind} folio; KSM merges anonymous"):
        m.ksm_merge([ok_a, a], [ok_b, b])
    assert m.digest() == digest
    assert m.folio(a)["order"] == 9


def test_ksm_merge_order_mismatch_late_in_the_list_changes_nothing():
    m = simcore.Machine(mem="64M")
    a1, b1 = m.alloc(2), m.alloc(2)
    a2, b2 = m.alloc(2), m.alloc(3)
    digest = m.digest()
    with pytest.raises(ValueError, match="differ in order"):
        m.ksm_merge([a1, a2], [b1, b2])
    assert m.digest() == digest
    with pytest.raises(ValueError, match="pfns_a has 2 folios and pfns_b 1"):
        m.ksm_merge([a1, a2], [b1])


# --- 5. NUMA migrations are migrate_pages() statistics too ----------------------------------

def test_numa_migrate_counts_in_migration_stats():
    node0 = simcore.Machine(mem="256M", seed=0)
    node1 = simcore.Machine(mem="256M", seed=1)
    pfns = np.concatenate([node0.alloc_many(40, 0), node0.alloc_many(6, 4),
                           node0.alloc_many(3, 9)])
    pinned = node0.alloc(9)
    node0.set_flags([pinned], "pinned")
    v0, s0 = node0.vmstat(), node0.migration_stats()
    t0 = node0.subsystem_stats()["time_ns/numa"]
    moved = node0.numa_migrate(node1, np.append(pfns, pinned))
    v1, s1 = node0.vmstat(), node0.migration_stats()
    assert sum(x is not None for x in moved) == len(pfns)
    assert s1["succeeded"] - s0["succeeded"] == v1["pgmigrate_success"] - v0["pgmigrate_success"]
    assert s1["succeeded"] - s0["succeeded"] == 40 + 6 * 16 + 3 * 512
    assert s1["failed_pages"] - s0["failed_pages"] == v1["pgmigrate_fail"] - v0["pgmigrate_fail"]
    assert s1["failed_pages"] - s0["failed_pages"] == 512
    assert s1["thp_succeeded"] - s0["thp_succeeded"] == 3
    assert s1["thp_failed"] - s0["thp_failed"] == 1
    assert s1["large_succeeded"] - s0["large_succeeded"] == 9
    dt = s1["time_ns"] - s0["time_ns"]
    assert dt > 0 and abs(dt - (node0.subsystem_stats()["time_ns/numa"] - t0)) < 1 + len(pfns)
    # so the modelled throughput is the cost model's, not pages over someone else's time
    delta = {k: v1[k] - v0[k] for k in ("pgmigrate_success", "pgmigrate_fail")}
    row = compaction_metrics(delta, {k: s1[k] - s0[k] for k in s1})
    assert row["migration_pages_per_s"] == pytest.approx(
        (s1["succeeded"] - s0["succeeded"]) / (dt / 1e9))
    node0.check()
    node1.check()


def test_numa_migrate_leaves_kernel_memory_alone():
    node0, node1 = simcore.Machine(mem="64M"), simcore.Machine(mem="64M", seed=1)
    slab = node0.alloc(0, "unmovable", "slab")
    huge = node0.alloc(9, kind="hugetlb")
    digest = node0.digest()
    assert node0.numa_migrate(node1, [slab, huge]) == [None, None]
    assert node0.digest() == digest


# --- 6. digest() is the whole state ---------------------------------------------------------

def _history(m):
    pfns = m.alloc_many(3000, 0)
    big = m.alloc_many(20, 9)
    m.free_many(pfns[::2])
    m.swapon("16M")
    m.zswap_enable()
    m.swap_out(big[:4])
    m.ksm_merge(big[4:6], big[6:8])
    m.memory_failure(int(pfns[1]))
    m.tick(1700)
    m.compact()
    return m


def test_equal_histories_give_equal_digests():
    a = _history(simcore.Machine(mem="256M", seed=3))
    b = _history(simcore.Machine(mem="256M", seed=3))
    assert a.digest() == b.digest()
    a.tick(600)
    assert a.digest() != b.digest()
    b.tick(600)
    assert a.digest() == b.digest()


MUTATIONS = {
    "clock": lambda m: m.tick(100),
    "kcompactd schedule": lambda m: setattr(m, "_kcompactd_next_ns", m._kcompactd_next_ns + 1),
    "swap device": lambda m: m.swapon("16M"),
    "swap slots": lambda m: m.swap_device.alloc(0, "nonfull_cluster"),
    "swap current cluster": lambda m: m.swap_device.next.update({4: None}),
    "zswap": lambda m: m.zswap_enable(),
    "zswap pages": lambda m: setattr(m.zswap, "stored_pages", 1),
    "ksm": lambda m: setattr(m.ksm, "full_scans", 1),
    "memory failure": lambda m: setattr(m.memory_failure_counts, "ignored", 1),
    "poisoned set": lambda m: m.hwpoisoned.add(0),
    "cma allocations": lambda m: m._cma_allocations.update({0: 512}),
    "offline blocks": lambda m: m._offline_blocks.add(0),
    "rng": lambda m: m.rng.random(),
    "modelled time": lambda m: m.model_ns.update(ksm=1.0),
    "migration stats": lambda m: m.migrate_stats.__setitem__(0, 1),
    "compaction knobs": lambda m: m.knobs.__setitem__(-1, m.knobs[-1] + 1),
    "compaction deferral": lambda m: m.pgdat.zones.__setitem__((0, Z_COMPACT_DEFER_SHIFT), 3),
    "cached scanner": lambda m: m.pgdat.zones.__setitem__((0, Z_COMPACT_CACHED_FREE), 512),
    "compact control": lambda m: m._cc.__setitem__(0, m._cc[0] + 1),
    "free-page pool": lambda m: m._pool.__setitem__((0, 0), 1),
    "costs": lambda m: m.costs.__setitem__(0, m.costs[0] + 1),
    "min_free_kbytes": lambda m: setattr(m, "min_free_kbytes", m.min_free_kbytes + 1),
}


@pytest.mark.parametrize("what", sorted(MUTATIONS))
def test_digest_sees_state_outside_the_page_arrays(what):
    a = simcore.Machine(mem="64M", seed=5)
    b = simcore.Machine(mem="64M", seed=5)
    if what.startswith("swap ") and what != "swap device":
        a.swapon("16M")
        b.swapon("16M")
    assert a.digest() == b.digest()
    MUTATIONS[what](b)
    assert a.digest() != b.digest()


def test_issue_repro_equal_digests_no_longer_hide_the_clock():
    a = simcore.Machine(mem="256M", seed=0)
    b = simcore.Machine(mem="256M", seed=0)
    pfns = a.alloc_many(20000, 0)
    a.free_many(pfns[::2])
    pfns = b.alloc_many(20000, 0)
    b.free_many(pfns[::2])
    a.tick(400)
    assert a.digest() != b.digest()


# --- 7. small ones ---------------------------------------------------------------------------

def test_min_free_kbytes_too_large_is_a_value_error():
    with pytest.raises(ValueError, match=r"min_free_kbytes 1180591620717411303424 must be an "
                                         r"integer from 0 to 2147483647"):
        simcore.Machine(mem="64M", min_free_kbytes=2 ** 70)
    m = simcore.Machine(mem="64M", min_free_kbytes=2 ** 31 - 1)
    assert m.alloc(0) is None            # every watermark above memory: the kernel fails too


def test_numpy_integer_sizes_are_accepted():
    m = simcore.Machine(mem=np.int64(2 ** 30), movable=np.uint64(64 << 20), memory_block=np.int32(
        128 << 20))
    assert m.mem == 2 ** 30 and m.nr_pages == 2 ** 18
    assert simcore.parse_size(np.int16(4096)) == 4096
    with pytest.raises(ValueError, match="is negative"):
        simcore.parse_size(np.int64(-1))
    with pytest.raises(ValueError, match="is not a size"):
        simcore.parse_size(np.float64(4096))


def test_offlining_keeps_the_kernels_minimum():
    m = simcore.Machine(mem="16M", memory_block="2M")
    done = []
    for block in m.memory_blocks():
        ok, reason = m.offline_memory_block(block["index"])
        if ok:
            done.append(block["index"])
        else:
            assert reason.startswith(("EBUSY", "EINVAL")), reason
    m.check()
    kernel_pages = int(m.pgdat.zones[:ZONE_MOVABLE, Z_MANAGED].sum())
    assert kernel_pages >= (4 << 20) // 4096 and m.managed_pages > 0
    assert done
    last = [b for b in m.memory_blocks() if b["state"] == "online"]
    reasons = {m.offline_memory_block(b["index"])[1].split(":")[0] for b in last}
    assert "EBUSY" in reasons
    assert any("below the 4M the kernel keeps" in m.offline_memory_block(b["index"])[1]
               for b in last)


def test_memory_smaller_than_one_block():
    m = simcore.Machine(mem="64M", memory_block="128M")
    (block,) = m.memory_blocks()
    assert block["nr_pages"] == m.nr_pages and not block["removable"]
    ok, reason = m.offline_memory_block(0)
    assert not ok and reason == "EINVAL: memory holes (memory ends inside this block)"
    with pytest.raises(ValueError, match=r"memory block 1 does not exist; allowed: 0\.\.0"):
        m.offline_memory_block(1)


def test_partial_last_block_holds_the_rest_of_memory():
    m = simcore.Machine(mem="1000M", memory_block="128M")
    blocks = m.memory_blocks()
    assert len(blocks) == 8
    assert sum(b["nr_pages"] for b in blocks) == m.nr_pages
    assert blocks[-1]["nr_pages"] == (1000 - 896) * 256 and not blocks[-1]["removable"]
    ok, reason = m.offline_memory_block(7)
    assert not ok and reason.startswith("EINVAL: memory holes")
    assert m.offline_memory_block(6) == (True, "")
    m.check()
