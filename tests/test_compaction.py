"""Migration and compaction: the strategies' known differences, failure causes, counters and
the invariants (no page and no folio lost)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simcore
from simcore.mmzone import PB_MIGRATE_SKIP
from simcore.pgdat import (
    Z_COMPACT_BLOCKSKIP_FLUSH,
    Z_COMPACT_CONSIDERED,
    Z_COMPACT_DEFER_SHIFT,
    Z_COMPACT_ORDER_FAILED,
    Z_END,
    Z_START,
)
from workloads.fragment import fragment

STRATEGIES = ("legacy", "split", "folio")


def mthp_fragmented(strategy, mem="64M", order=4, seed=0):
    """Memory full of order-`order` anon folios plus a few base pages, half the folios freed at
    random: the holes are all large enough to take an mTHP."""
    m = simcore.Machine(mem, seed=seed, compaction=strategy, min_free_kbytes=0)
    big = m.alloc_many(m.nr_pages, order, "movable", "anon", compact=False)
    gone = m.rng.random(len(big)) < 0.5
    m.free_many(big[gone])
    return m, big[~gone]


def handles_of(m):
    f = m.folios()
    return dict(zip(f["handle"].tolist(), zip(f["pfn"].tolist(), f["order"].tolist())))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_compact_keeps_every_folio_and_page(strategy):
    m, _ = mthp_fragmented(strategy)
    before = handles_of(m)
    pages = m.allocated_pages()
    m.compact()
    m.check()
    after = handles_of(m)
    assert set(before) <= set(after)              # nothing dropped (splits add handles)
    assert m.allocated_pages() == pages
    assert m.free_pages() + m.pcp_pages() + m.allocated_pages() == m.managed_pages


def test_legacy_leaves_large_folios_in_place():
    m, kept = mthp_fragmented("legacy")
    before = handles_of(m)
    m.compact()
    stats = m.migration_stats()
    assert stats["large_succeeded"] == 0 and stats["nr_split"] == 0
    assert handles_of(m) == before                # not one large folio moved or split
    assert m.vmstat()["compact_isolated"] == 0


def test_split_migrates_large_folios_but_preserves_none():
    m, kept = mthp_fragmented("split")
    m.compact()
    stats = m.migration_stats()
    assert stats["nr_split"] > 0
    assert stats["large_succeeded"] == 0
    assert m.mthp_stats()["hugepages-64kB"]["split"] == stats["nr_split"]
    assert stats["succeeded"] >= stats["nr_split"]          # the pieces moved as base pages


def test_folio_preserves_every_large_folio_it_migrates():
    m, kept = mthp_fragmented("folio")
    before = handles_of(m)
    m.compact()
    stats = m.migration_stats()
    assert stats["large_succeeded"] > 0
    # Only where a folio finds no target does it get split, as in the kernel: the scanners met
    # with a batch still waiting, or the free scanner's looks, spread out by its stride after a
    # pageblock that gave nothing, passed over the holes. Everything else moved whole.
    assert stats["nr_split"] <= 0.1 * (stats["large_succeeded"] + stats["nr_split"])
    after = handles_of(m)
    moved = [h for h in before if after[h][0] != before[h][0] and after[h][1] == before[h][1]]
    assert len(moved) == stats["large_succeeded"]            # every folio that moved kept its order


def order9_granted(strategy, seed=3):
    m = simcore.Machine("256M", seed=seed, compaction=strategy)
    fragment(m, fill=0.9, free_share=0.5)
    got = m.alloc_many(m.nr_pages, 9, "movable", "anon")
    m.check()
    return len(got), m.vmstat()


def test_folio_grants_at_least_as_many_order9_as_legacy():
    legacy, vl = order9_granted("legacy")
    folio, vf = order9_granted("folio")
    assert folio >= legacy
    assert vf["compact_stall"] > 0 and vl["compact_stall"] > 0
    assert vf["compact_success"] + vf["compact_fail"] == vf["compact_stall"]


def test_direct_compaction_counts_a_stall_and_a_success():
    m, _ = mthp_fragmented("folio", mem="64M", order=4)
    assert m.alloc(9, compact=False) is None
    pfn = m.alloc(9)
    v = m.vmstat()
    assert pfn is not None
    assert v["compact_stall"] >= 1 and v["compact_success"] == 1
    assert v["compact_migrate_scanned"] > 0 and v["compact_free_scanned"] > 0
    m.check()


def skip_hints_left_behind(defer_shift):
    """mthp_fragmented() with every pageblock marked skipped by a direct compaction that
    reached the end (compact_blockskip_flush), its zone deferred `defer_shift` times and the
    deferral about to run out (the next compaction_deferred() lets compaction run)."""
    m, _ = mthp_fragmented("folio", mem="64M", order=4)
    zones = m.pgdat.zones
    for z in range(zones.shape[0]):
        if zones[z, Z_END] > zones[z, Z_START]:
            zones[z, Z_COMPACT_DEFER_SHIFT] = defer_shift
            zones[z, Z_COMPACT_CONSIDERED] = (1 << defer_shift) - 1
            zones[z, Z_COMPACT_ORDER_FAILED] = 0
            zones[z, Z_COMPACT_BLOCKSKIP_FLUSH] = 1
    m.pgdat.pageblock_flags[:] |= PB_MIGRATE_SKIP
    return m


def test_direct_compaction_keeps_skip_hints_until_the_longest_deferral():
    # deferred five times: the hints stay, the migrate scanner skips every block
    m = skip_hints_left_behind(5)
    assert m.alloc(9) is None
    assert (m.pgdat.pageblock_flags & PB_MIGRATE_SKIP).all()
    assert m.vmstat()["compact_fail"] > 0


def test_direct_compaction_clears_skip_hints_after_the_longest_deferral():
    # compaction_restarting(): at COMPACT_MAX_DEFER_SHIFT with the deferral run out,
    # compact_zone() clears the hints first (__reset_isolation_suitable()), and succeeds
    m = skip_hints_left_behind(6)
    assert m.alloc(9) is not None
    assert not (m.pgdat.pageblock_flags & PB_MIGRATE_SKIP).all()
    assert m.vmstat()["compact_success"] == 1
    m.check()


def test_compaction_skipped_when_memory_is_short_not_fragmented():
    # Everything allocated: the fragmentation index says "no memory", compaction_suitable()
    # refuses, no stall is counted.
    m = simcore.Machine("64M", min_free_kbytes=0)
    m.alloc_many(m.nr_pages, 0, compact=False)
    assert m.alloc(9) is None
    assert m.vmstat()["compact_stall"] == 0


# ---- migration failure causes ---------------------------------------------------------------

@pytest.mark.parametrize("flags,mode,migrated", [
    ((), "async", True),
    ("pinned", "sync", False),
    ("writeback", "async", False),
    ("writeback", "sync_light", False),
    ("writeback", "sync", True),
    (("dirty", "no_migrate_callback"), "sync_light", False),
    (("dirty", "no_migrate_callback"), "sync", True),
    ("dirty", "async", True),
])
def test_migration_failure_causes(flags, mode, migrated):
    m = simcore.Machine("64M")
    pfn = m.alloc(0, "movable", "file", flags)
    handle = m.folio(pfn)["handle"]
    failed = m.migrate([pfn], mode=mode)
    assert failed == (0 if migrated else 1)
    new_pfn = int(m.handle_pfn([handle])[0])
    assert (new_pfn != pfn) == migrated
    v = m.vmstat()
    assert v["pgmigrate_success"] == (1 if migrated else 0)
    assert v["pgmigrate_fail"] == (0 if migrated else 1)
    m.check()


def test_sync_waits_for_writeback_and_costs_modelled_time():
    m = simcore.Machine("64M")
    plain = m.alloc(0, "movable", "file")
    m.migrate([plain], mode="sync")
    t_plain = m.migration_stats()["time_ns"]
    wb = m.alloc(0, "movable", "file", "writeback")
    m.migrate([wb], mode="sync")
    assert m.migration_stats()["writeback_waits"] == 1
    assert m.migration_stats()["time_ns"] - t_plain > 100 * t_plain


def test_pinned_folio_is_retried_every_pass_then_fails():
    m = simcore.Machine("64M")
    pfn = m.alloc(2, "movable", "file", "pinned")
    assert m.migrate([pfn], mode="sync") == 1
    # 3 async passes, then 7 in the requested mode: each one unmapped and mapped it again
    assert m.migration_stats()["attempts"] == 10


def test_unmovable_kinds_are_never_migrated():
    m = simcore.Machine("64M")
    pfn = m.alloc(0, "unmovable", "slab")
    assert m.migrate([pfn]) == 1
    assert m.vmstat()["pgmigrate_success"] == 0


def test_large_folio_migrates_whole_and_pays_the_fixed_cost_once():
    m = simcore.Machine("64M")
    big = m.alloc(4, "movable", "anon")
    small = m.alloc_many(16, 0, "movable", "anon")
    m.migrate([big])
    t_big = m.migration_stats()["time_ns"]
    m.migrate(small)
    t_small = m.migration_stats()["time_ns"] - t_big
    assert m.migration_stats()["large_succeeded"] == 1
    assert t_small > 2 * t_big


def test_large_folio_without_target_is_split_and_pieces_retried():
    m = simcore.Machine("16M", min_free_kbytes=0)
    big = m.alloc(4, "movable", "anon")
    rest = m.alloc_many(m.nr_pages, 0, compact=False)     # no free order-4 block anywhere
    m.free_many(rest[::2][:40])                            # but scattered base pages
    assert m.migrate([big]) == 1                           # the folio itself failed ...
    stats = m.migration_stats()
    assert stats["nr_split"] == 1 and stats["succeeded"] == 16   # ... its pieces moved
    assert m.mthp_stats()["hugepages-64kB"]["split"] == 1
    m.check()


def test_bad_migrate_arguments():
    m = simcore.Machine("16M")
    pfn = m.alloc(0)
    with pytest.raises(ValueError, match="mode 'fast'"):
        m.migrate([pfn], mode="fast")
    with pytest.raises(ValueError, match="reason 'boredom'"):
        m.migrate([pfn], reason="boredom")
    with pytest.raises(ValueError, match="pfn 3"):
        m.migrate([3])
    with pytest.raises(ValueError, match="compaction strategy 'nope'.*legacy, split, folio"):
        simcore.Machine("16M", compaction="nope")


# ---- kcompactd ---------------------------------------------------------------------------

def test_proactive_compaction_lowers_the_score_below_the_high_watermark():
    m = simcore.Machine("256M", seed=1, compaction_proactiveness=50)
    fragment(m, fill=0.9, free_share=0.5)
    score = m.fragmentation_score()
    assert score > 60                         # above high = min(50 + 10, 100)
    m.tick(600)
    assert m.vmstat()["compact_daemon_wake"] >= 1
    assert m.vmstat()["compact_daemon_migrate_scanned"] > 0
    assert m.fragmentation_score() < score
    m.check()


def test_proactiveness_zero_never_wakes_kcompactd():
    m = simcore.Machine("64M", seed=1, compaction_proactiveness=0)
    fragment(m)
    m.tick(10_000)
    assert m.vmstat()["compact_daemon_wake"] == 0


# ---- user strategies -----------------------------------------------------------------------

def test_register_a_user_strategy_by_knobs():
    class NoLarge(simcore.CompactionStrategy):
        """Per-order targets but leaves large folios alone: the free-scanner half of 6.9."""
        isolate_large_folios = False
        split_free_pages = False

    simcore.register_strategy("nolarge", NoLarge)
    assert "nolarge" in simcore.strategies()
    m, _ = mthp_fragmented("nolarge")
    m.compact()
    assert m.migration_stats()["large_succeeded"] == 0
    m.check()
    with pytest.raises(ValueError):
        simcore.register_strategy("bad name!", NoLarge)
    with pytest.raises(ValueError):
        simcore.register_strategy("notastrategy", dict)


# ---- invariants under random work and compaction -----------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(STRATEGIES), st.integers(0, 2 ** 16),
       st.lists(st.tuples(st.integers(0, 9), st.sampled_from(["anon", "file", "slab"]),
                          st.sampled_from([0, "pinned", "writeback", "dirty"])),
                min_size=1, max_size=8),
       st.floats(0.1, 0.9))
def test_random_workloads_then_compaction_lose_nothing(strategy, seed, mix, free_share):
    m = simcore.Machine("32M", seed=seed, compaction=strategy)
    rng = np.random.default_rng(seed)
    held = []
    for order, kind, flags in mix:
        mt = "unmovable" if kind == "slab" else "movable"
        held.append(m.alloc_many(int(rng.integers(1, 400)) >> (order // 2), order, mt, kind,
                                 flags, compact=bool(rng.integers(2))))
    pfns = np.concatenate(held)
    m.free_many(pfns[rng.random(len(pfns)) < free_share])
    before = handles_of(m)
    pages = m.allocated_pages()
    m.compact()
    m.check()
    m.alloc_many(8, 9)
    m.tick(1000)
    m.check()
    after = handles_of(m)
    assert set(before) <= set(after)
    assert m.allocated_pages() >= pages
    assert m.free_pages() + m.pcp_pages() + m.allocated_pages() == m.managed_pages


def test_compaction_metrics_tell_the_strategies_apart():
    from simcore.metrics import compaction_metrics, delta, fragmentation_at_order9
    rows = {}
    for strategy in STRATEGIES:
        m, _ = mthp_fragmented(strategy)
        before, frag0 = m.vmstat(), fragmentation_at_order9(m)
        m.compact()
        rows[strategy] = compaction_metrics(delta(m.vmstat(), before),
                                            migration=m.migration_stats(),
                                            frag_before=frag0,
                                            frag_after=fragmentation_at_order9(m))
    assert np.isnan(rows["legacy"]["large_folio_preservation"])   # none handled at all
    assert rows["split"]["large_folio_preservation"] == 0
    assert rows["folio"]["large_folio_preservation"] >= 0.9     # see the test above
    # a 64K folio pays the fixed cost once: more pages per modelled second than base pages
    assert rows["folio"]["migration_pages_per_s"] > 2 * rows["split"]["migration_pages_per_s"]
    assert rows["folio"]["unusable_9_after"] < rows["folio"]["unusable_9_before"]
    assert np.isnan(rows["folio"]["compaction_success_rate"])     # no direct compaction ran


# ---- alloc_contig_range and memory offlining --------------------------------------------

@pytest.mark.slow    # tens of seconds or more: CI runs it, -m 'not slow' does not
def test_cma_alloc_migrates_folios_out_and_keeps_them():
    m = simcore.Machine("128M", seed=0, cma="32M", min_free_kbytes=0)
    lo, hi = m.cma_range
    held = m.alloc_many(m.nr_pages // 16 * 7 // 8, 4, compact=False)  # 7/8 full of 64K folios
    assert ((held >= lo) & (held < hi)).any()
    before = handles_of(m)
    start = m.cma_alloc(2048)
    assert start is not None and lo <= start and start + 2048 <= hi
    assert m.vmstat()["cma_alloc_success"] == 1 and m.vmstat()["pgmigrate_success"] > 0
    after = handles_of(m)
    assert set(before) <= set(after)
    assert all(not (start <= after[h][0] < start + 2048) for h in before)  # moved out
    assert m.migration_stats()["large_succeeded"] > 0                         # whole, not split
    m.check()
    m.cma_release(start)
    m.check()
    with pytest.raises(ValueError, match="not the start of a CMA allocation"):
        m.cma_release(start)


def test_cma_alloc_fails_where_pinned_folios_sit():
    m = simcore.Machine("64M", seed=0, cma="8M", min_free_kbytes=0)
    lo, hi = m.cma_range
    m.alloc_many(m.nr_pages, 0, compact=False)
    f = m.folios()
    inside = f["pfn"][(f["pfn"] >= lo) & (f["pfn"] < hi)]
    m.set_flags(inside[::256], "pinned")               # one pinned page in every 1 MiB
    m.free_many(f["pfn"][(f["pfn"] < lo)][:4096])       # room to migrate into
    assert m.cma_alloc(512) is None
    assert m.vmstat()["cma_alloc_fail"] == 1
    m.check()


@pytest.mark.slow    # tens of seconds or more: CI runs it, -m 'not slow' does not
def test_offline_refuses_unmovable_memory_and_onlines_back():
    m = simcore.Machine("256M", seed=0, memory_block="32M", min_free_kbytes=0)
    m.alloc_many(1000, 0, "unmovable", "slab")           # lands in the first block
    m.alloc_many(8000, 2, "movable", "anon")
    ok, why = m.offline_memory_block(0)
    assert not ok and why.startswith("EBUSY: unmovable page at pfn")
    managed = m.managed_pages
    before = handles_of(m)
    ok, why = m.offline_memory_block(1)
    assert ok, why
    assert m.managed_pages == managed - m.memory_block_pages
    assert m.memory_blocks()[1]["state"] == "offline"
    assert set(before) <= set(handles_of(m))
    m.check()
    assert m.online_memory_block(1) == (True, "")
    assert m.managed_pages == managed
    m.check()
    with pytest.raises(ValueError, match="memory block 99 does not exist"):
        m.offline_memory_block(99)
