"""Reclaim and the deferred split queue (simcore.deferred_split, simcore.vmscan): on linux-6.12
and later shrink_folio_list() splits a folio flagged partially mapped before swapping it
(8422acdc97ed), and the deferred split shrinker (deferred_split_scan() from shrink_slab())
splits queued folios under reclaim pressure, as do_shrink_slab() scales it by priority.
Older profiles never flag a folio, so reclaim swaps migrated mTHP whole there."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simcore import Machine, vmscan
from simcore.deferred_split import (
    deferred_split_count,
    deferred_split_scan,
    flagged,
    queued_heads,
)
from simcore.mmzone import KIND_IS_LRU

ORDER_64K = 4


def _stats(m, order=ORDER_64K):
    return m.mthp_stats()[f"hugepages-{4 << order}kB"]


def _migrated(m, n, order=ORDER_64K, flags=0):
    """n anon folios of `order` migrated once (flagged on 6.12+); their handles."""
    pfns = [m.alloc(order, "movable", "anon", flags) for _ in range(n)]
    handles = m.handles_of(pfns)
    m.migrate(pfns, mode="sync")
    return handles


def _lru_counts_right(m):
    """The LRU's per-list page counts are the pages of the folios on the lists."""
    table = m.pgdat.folio_pfn
    listed = np.flatnonzero(m.lru.list_of[:len(table)] != vmscan.NOT_ON_LRU)
    pages = (1 << m.pgdat.mem_map["order"][table[listed]].astype(np.int64)).sum()
    return int(pages) == int(m.lru.nr_pages.sum())


@pytest.mark.parametrize("profile,split", [("linux-6.12", True), ("linux-6.18", True),
                                           ("linux-6.10", False)])
def test_reclaim_swaps_a_partially_mapped_folio_as_base_pages(profile, split):
    m = Machine(mem="64M", profile=profile, seed=1, reclaim=True)
    m.swapon("64M")
    migrated = _migrated(m, 32)
    fresh = m.handles_of([m.alloc(ORDER_64K) for _ in range(32)])
    assert sum(flagged(m.pgdat.mem_map, int(p)) for p in m.pgdat.folio_pfn[migrated]) == \
        (32 if split else 0)
    before = m.vmstat()["pswpout"]
    m.reclaim_pages(m.nr_pages)
    assert (m.pgdat.folio_pfn[np.concatenate([migrated, fresh])] < 0).all()   # all swapped
    stats = _stats(m)
    assert m.vmstat()["pswpout"] - before == 64 << ORDER_64K
    # a flagged folio is split before add_to_swap(): split counted, no swpout, no fallback
    assert stats["swpout"] == (32 if split else 64)
    assert stats["split"] == (32 if split else 0)
    assert stats["swpout_fallback"] == 0
    assert stats["nr_anon_partially_mapped"] == 0
    orders = [r.order for r in m.lru.swapped]
    slots = sorted(o for r in m.lru.swapped for _, o, _ in r.pieces)
    assert orders.count(ORDER_64K) == 64
    assert slots.count(0) == (32 << ORDER_64K if split else 0)
    m.check()


def test_swap_out_call_splits_a_flagged_folio_first():
    m = Machine(mem="64M", profile="linux-6.12", seed=1)
    m.swapon("16M")
    (h,) = _migrated(m, 1)
    (rec,) = m.swap_out([int(m.pgdat.folio_pfn[h])])
    assert rec.order == ORDER_64K and [o for _, o, _ in rec.pieces] == [0] * 16
    assert _stats(m)["split"] == 1 and _stats(m)["swpout"] == 0
    assert m.vmstat()["pswpout"] == 16
    m.check()


def test_shrinker_splits_the_queue_under_deep_reclaim_and_frees_nothing():
    """No swap, no page cache: reclaim finds nothing on the lists, falls to priority 0, and
    the shrinker splits every queued folio. Every subpage of a migrated folio is mapped, so
    the split frees none: the pages stay allocated, as 16 base folios each."""
    m = Machine(mem="64M", profile="linux-6.12", seed=2, reclaim=True)
    handles = _migrated(m, 400)
    assert deferred_split_count(m.pgdat) == 400
    allocated = m.allocated_pages()
    assert m.reclaim_pages(1024) == 0
    stats = _stats(m)
    assert stats["split"] == 400 and stats["nr_anon_partially_mapped"] == 0
    assert stats["split_deferred"] == 800                 # counted when queued, not by the scan
    assert m.allocated_pages() == allocated
    heads = m.pgdat.folio_pfn[handles]
    assert (m.pgdat.mem_map["order"][heads] == 0).all()
    assert (m.pgdat.mem_map["order"][heads + 1] == 0).all()
    assert m.model_ns["reclaim"] > 0                   # the splits' modelled time
    assert _lru_counts_right(m)
    m.check()


def test_shrinker_scan_follows_priority():
    """do_shrink_slab(): (freeable >> priority) * 4 / seeks, so at DEF_PRIORITY a short queue
    is not scanned; at priority 2 the 248 objects due are one batch of 128, the rest deferred."""
    m = Machine(mem="64M", profile="linux-6.12", seed=3, reclaim=True)
    _migrated(m, 400)
    assert vmscan.shrink_slab(m, vmscan.DEF_PRIORITY) == 0
    assert m.lru.split_nr_deferred == 0
    assert _stats(m)["split"] == 0
    assert vmscan.shrink_slab(m, 2) == 128                 # delta 200: one batch of 128
    assert m.lru.split_nr_deferred == 200 - 128
    assert _stats(m)["split"] == 128
    assert deferred_split_count(m.pgdat) == 272
    assert _lru_counts_right(m)
    m.check()


def test_shrinker_comes_back_to_a_folio_it_could_not_split_last():
    """A pinned folio's split fails (split_failed); it stays queued and flagged, and the next
    scan starts after it (the kernel puts it back at the tail of the queue)."""
    m = Machine(mem="64M", profile="linux-6.12", seed=4, reclaim=True)
    _migrated(m, 12)
    heads = queued_heads(m.pgdat.mem_map)
    pinned = [int(p) for p in heads[:4]]
    m.set_flags(pinned, "pinned")
    failed = _stats(m)["split_failed"]
    split, cursor = deferred_split_scan(m, 4, 0)
    assert split == 0 and cursor == pinned[-1] + 1
    assert _stats(m)["split_failed"] == failed + 4
    split, cursor = deferred_split_scan(m, 4, cursor)
    assert split == 4 and _stats(m)["split"] == 4
    assert all(flagged(m.pgdat.mem_map, p) for p in pinned)
    # through do_shrink_slab() at priority 0: everything but the pinned four
    assert vmscan.shrink_slab(m, 0) == 4
    assert deferred_split_count(m.pgdat) == 4 and _stats(m)["nr_anon_partially_mapped"] == 4
    m.set_flags(pinned, "pinned", False)
    assert vmscan.shrink_slab(m, 0) == 4
    assert deferred_split_count(m.pgdat) == 0
    assert vmscan.shrink_slab(m, 0) == 0
    m.check()


def test_gentle_reclaim_leaves_the_queue_alone():
    """kswapd or proactive reclaim that succeeds at DEF_PRIORITY scans a queue of under 2048
    folios not at all."""
    m = Machine(mem="64M", profile="linux-6.12", seed=5, reclaim=True)
    _migrated(m, 100)
    m.alloc_many(4000, 0, "movable", "file")
    assert m.reclaim_pages(32) >= 32
    assert _stats(m)["split"] == 0 and deferred_split_count(m.pgdat) == 100
    m.check()


def test_older_profile_has_nothing_to_shrink():
    m = Machine(mem="64M", profile="linux-6.9", seed=2, reclaim=True)
    _migrated(m, 400)
    digest = m.digest()
    assert vmscan.shrink_slab(m, 0) == 0
    assert m.digest() == digest
    assert _stats(m)["split"] == 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), profile=st.sampled_from(("linux-6.12", "linux-6.18")),
       ops=st.lists(st.tuples(st.sampled_from(("alloc", "migrate", "pin", "free", "reclaim",
                                               "swapon", "slab", "cache")),
                              st.integers(0, 10**6)), min_size=1, max_size=14))
def test_reclaim_with_a_queue_keeps_the_invariants(seed, profile, ops):
    """Random allocations, migrations (which queue), pins, frees, swap and reclaim: check()
    holds, the queue is the flagged folios, the shrinker frees nothing, the LRU counts stay
    right, and every queued folio is split once at most (split_deferred counts two per
    migration of a queued-on-the-way folio, split and the gauge account for each)."""
    m = Machine(mem="32M", profile=profile, seed=seed, reclaim=True)
    rng = np.random.default_rng(seed)
    handles = []
    for op, x in ops:
        live = [h for h in handles if m.pgdat.folio_pfn[h] >= 0]
        if op == "alloc":
            order = int(rng.choice([2, 3, 4, 5]))
            got = m.alloc_many(1 + x % 64, order, "movable", "anon", compact=False,
                               gfp="light")
            handles += list(m.handles_of(got))
        elif op == "migrate" and live:
            pick = rng.choice(live, size=min(len(live), 1 + x % 32), replace=False)
            m.migrate(m.pgdat.folio_pfn[pick], mode="sync")
        elif op == "pin" and live:
            h = live[x % len(live)]
            m.set_flags([int(m.pgdat.folio_pfn[h])], "pinned", x % 2 == 0)
        elif op == "free" and live:
            m.free(int(m.pgdat.folio_pfn[live[x % len(live)]]))
        elif op == "reclaim":
            m.reclaim_pages(1 + x % 4096)
        elif op == "swapon" and m.swap_device is None:
            m.swapon(f"{4 + x % 16}M")
        elif op == "slab":
            allocated = m.allocated_pages()
            vmscan.shrink_slab(m, x % (vmscan.DEF_PRIORITY + 1))
            assert m.allocated_pages() == allocated
        elif op == "cache":
            m.alloc_many(1 + x % 2000, 0, "movable", "file", compact=False, gfp="light")
        m.check()
        assert len(queued_heads(m.pgdat.mem_map)) == deferred_split_count(m.pgdat)
        assert m.lru.split_nr_deferred >= 0
    vmscan.lru_sync(m)
    assert _lru_counts_right(m)
    kinds = m.pgdat.mem_map["kind"][m.pgdat.folio_pfn[m.pgdat.folio_pfn >= 0]]
    lru_pages = int((1 << m.pgdat.mem_map["order"][m.pgdat.folio_pfn[m.pgdat.folio_pfn >= 0]]
                     .astype(np.int64))[KIND_IS_LRU[kinds.astype(np.int64)] == 1].sum())
    assert lru_pages == int(m.lru.nr_pages.sum())
