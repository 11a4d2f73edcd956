"""Migration and the deferred split queue (simcore.deferred_split): on linux-6.12 and later a
PTE-mapped anonymous mTHP migrated once stays whole but is left queued and flagged partially
mapped, and migrated again is split and moves as base pages; linux-6.9 keeps no such state.
Measured on 6.12.118 and 6.18.44 (split_deferred +2, nr_anon_partially_mapped +1 per folio
migrated once; nr_split 1 per folio migrated again)."""
import numpy as np
import pytest

from simcore import Machine
from simcore.deferred_split import flagged
from simcore.mmzone import HPAGE_PMD_ORDER
from simcore.profiles import get_profile

ORDER_64K = 4


def _migrate_once(m, pfn, reason="syscall"):
    """Migrate the folio at pfn; its new head PFN (followed through its handle)."""
    handle = int(m.handles_of([pfn])[0])
    assert m.migrate([pfn], mode="sync", reason=reason) == 0
    return int(m.pgdat.folio_pfn[handle])


def _stats(m, order=ORDER_64K):
    return m.mthp_stats()[f"hugepages-{4 << order}kB"]


def test_profiles_policy():
    assert get_profile("linux-6.9").deferred_split == "not_queued"
    assert get_profile("linux-6.10").deferred_split == "not_queued"
    assert get_profile("linux-6.12").deferred_split == "partially_mapped"
    assert get_profile("linux-6.18").deferred_split == "partially_mapped"
    assert "7262f208ca68" in get_profile("linux-6.12").source("deferred_split")


@pytest.mark.parametrize("reason", ["syscall", "compaction", "numa"])
def test_612_migrated_once_whole_and_flagged_then_split(reason):
    m = Machine(mem="64M", profile="linux-6.12", seed=1)
    pfn = m.alloc(ORDER_64K)
    new = _migrate_once(m, pfn, reason)
    assert new != pfn
    assert m.folio(new)["order"] == ORDER_64K          # whole
    assert flagged(m.pgdat.mem_map, new)
    st = _stats(m)
    assert st["split_deferred"] == 2                  # source and destination
    assert st["nr_anon_partially_mapped"] == 1        # the destination
    assert m.migration_stats()["nr_split"] == 0
    m.check()
    # migrated again: split first, the pieces move as base pages
    handle = int(m.handles_of([new])[0])
    before = m.migration_stats()
    assert m.migrate([new], mode="sync", reason=reason) == 1      # the split counts as failed
    after = m.migration_stats()
    assert after["nr_split"] - before["nr_split"] == 1
    assert after["succeeded"] - before["succeeded"] == 1 << ORDER_64K
    assert after["large_succeeded"] == before["large_succeeded"]
    moved = int(m.pgdat.folio_pfn[handle])
    assert m.folio(moved)["order"] == 0
    st = _stats(m)
    assert st["split"] == 1
    assert st["nr_anon_partially_mapped"] == 0
    assert st["split_deferred"] == 2
    m.check()


def test_69_stays_whole_both_times():
    m = Machine(mem="64M", profile="linux-6.9", seed=1)
    pfn = m.alloc(ORDER_64K)
    new = _migrate_once(m, pfn)
    new2 = _migrate_once(m, new)
    assert m.folio(new2)["order"] == ORDER_64K
    assert not flagged(m.pgdat.mem_map, new2)
    assert m.migration_stats()["nr_split"] == 0
    st = _stats(m)
    assert st["split_deferred"] == st["nr_anon_partially_mapped"] == st["split"] == 0
    m.check()


@pytest.mark.parametrize("order,kind", [(HPAGE_PMD_ORDER, "anon"), (ORDER_64K, "file"),
                                        (ORDER_64K, "shmem"), (1, "anon")])
def test_612_pmd_thp_and_page_cache_never_flagged(order, kind):
    m = Machine(mem="64M", profile="linux-6.12", seed=1)
    pfn = m.alloc(order, "movable", kind)
    new = _migrate_once(m, pfn)
    new2 = _migrate_once(m, new)
    assert m.folio(new2)["order"] == order
    assert not flagged(m.pgdat.mem_map, new2)
    assert m.migration_stats()["nr_split"] == 0
    if order > 1:
        assert _stats(m, order)["split_deferred"] == 0
    assert m.vmstat()["thp_deferred_split_page"] == 0
    m.check()


def test_612_split_and_free_clear_the_flag():
    m = Machine(mem="64M", profile="linux-6.12", seed=1)
    a = _migrate_once(m, m.alloc(ORDER_64K))
    b = _migrate_once(m, m.alloc(ORDER_64K))
    assert _stats(m)["nr_anon_partially_mapped"] == 2
    assert m.split(a, 2)                            # the order-2 pieces are not flagged
    for p in range(a, a + (1 << ORDER_64K), 4):
        assert not flagged(m.pgdat.mem_map, p)
    m.free(b)
    assert _stats(m)["nr_anon_partially_mapped"] == 0
    m.check()
    # the freed block's second page carries nothing into a new folio
    again = [m.alloc(ORDER_64K) for _ in range(64)]
    assert not any(flagged(m.pgdat.mem_map, p) for p in again)
    m.check()


def test_612_pinned_folio_flagged_by_failed_attempt_and_not_split():
    # unmapped and mapped again: partially mapped on the way; its split fails (pinned), so
    # it stays whole and flagged
    m = Machine(mem="64M", profile="linux-6.12", seed=1)
    pfn = m.alloc(ORDER_64K, "movable", "anon", "pinned")
    assert m.migrate([pfn], mode="sync") == 1
    assert m.folio(pfn)["order"] == ORDER_64K
    assert flagged(m.pgdat.mem_map, pfn)
    assert _stats(m)["split_failed"] > 0
    assert m.migration_stats()["nr_split"] == 0
    m.check()


def test_612_compaction_splits_flagged_folios():
    """Compaction over flagged 64K folios moves them as base pages (the 6.12 compact_memory
    row split most of its 64K folios)."""
    m = Machine(mem="64M", profile="linux-6.12", seed=3)
    pfns = [m.alloc(ORDER_64K) for _ in range(400)]
    moved = [_migrate_once(m, p) for p in pfns[::2]]        # flagged
    for p in pfns[1::2]:
        m.free(p)
    assert _stats(m)["nr_anon_partially_mapped"] == len(moved)
    m.compact()
    st = _stats(m)
    assert st["split"] > 0
    assert st["split"] + st["nr_anon_partially_mapped"] == len(moved)
    assert m.migration_stats()["nr_split"] == st["split"]
    m.check()


@pytest.mark.parametrize("profile,split", [("linux-6.12", True), ("linux-6.10", False)])
def test_numa_balancing_second_migration_splits(profile, split):
    a = Machine(mem="64M", profile=profile, seed=1)
    b = Machine(mem="64M", profile=profile, seed=2)
    pfns = [a.alloc(ORDER_64K) for _ in range(8)]
    there = a.numa_migrate(b, pfns)
    assert all(p is not None for p in there)
    assert all(b.folio(p)["order"] == ORDER_64K for p in there)
    assert all(flagged(b.pgdat.mem_map, p) == split for p in there)
    back = b.numa_migrate(a, there)
    assert all(p is not None for p in back)
    orders = {a.folio(p)["order"] for p in back}
    assert orders == ({0} if split else {ORDER_64K})
    nr_split = b.migration_stats()["nr_split"]
    assert nr_split == (8 if split else 0)
    total = {k: _stats(a)[k] + _stats(b)[k] for k in ("split_deferred", "split",
                                                      "nr_anon_partially_mapped")}
    # per folio: two on the first migration, none on the second (split first)
    assert total == ({"split_deferred": 16, "split": 8, "nr_anon_partially_mapped": 0} if split
                     else {"split_deferred": 0, "split": 0, "nr_anon_partially_mapped": 0})
    a.check()
    b.check()


def test_lingering_head_flags_never_read_as_partially_mapped():
    """A freed folio's head flags can linger on its page once it merges into a larger free
    block; none of them may read as PG_partially_mapped in a new folio or in check()."""
    m = Machine(mem="32M", profile="linux-6.12", seed=0)
    rng = np.random.default_rng(0)
    for flags in ("pinned", "dirty", "writeback", "mlocked", "ksm"):
        pfns = m.alloc_many(200, 0, "movable", "anon", flags)
        m.free_many(pfns[rng.random(len(pfns)) < 0.5])
        m.check()
    got = m.alloc_many(64, ORDER_64K)
    assert not any(flagged(m.pgdat.mem_map, int(p)) for p in got)
    assert _stats(m)["nr_anon_partially_mapped"] == 0
    m.check()
