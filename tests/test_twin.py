"""The digital twin: a simulated machine exported in the kernel's formats and read back gives
the same layout; the twin passes check(); bad input is refused."""
import os
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore import Machine, snapshot, snapshot_export, snapshot_file
from simcore.mmzone import KINDS
from simcore.pgdat import N_NR_FOLIOS

DATA = pathlib.Path(__file__).parent / "data"
IS_ROOT = os.geteuid() == 0
live = pytest.mark.live

ALLOCS = (  # (order, migratetype, kind, flags)
    (0, "unmovable", "slab", 0), (3, "unmovable", "slab", 0), (0, "unmovable", "kernel", 0),
    (0, "unmovable", "pagetable", 0), (0, "reclaimable", "slab", 0),
    (0, "movable", "anon", 0), (2, "movable", "anon", "dirty"), (4, "movable", "file", 0),
    (0, "movable", "file", ("dirty", "writeback")), (9, "movable", "anon", 0),
    (0, "movable", "shmem", "mlocked"), (9, "movable", "hugetlb", 0),
)


def fragmented(mem, seed, rounds=40, free_share=0.5):
    """A machine filled by a seeded mix of allocations, then a share of them freed."""
    m = Machine(mem=mem, seed=seed)
    held = []
    for _ in range(rounds):
        order, mt, kind, flags = ALLOCS[int(m.rng.integers(len(ALLOCS)))]
        count = int(m.rng.integers(1, 64)) if order < 9 else 2
        held += [int(p) for p in m.alloc_many(count, order, mt, kind, flags, compact=False)]
    held = np.array(held, dtype=np.int64)
    m.free_many(held[m.rng.random(len(held)) < free_share])
    # A page on a per-CPU list shows no flags in kpageflags, so its order cannot come back:
    # the exact round trips below are of a drained machine (test_pcp_pages_come_back_free).
    m.drain_all_pages()
    m.check()
    return m


def round_trip(m, tmp_path=None):
    snap = snapshot_export.export(m)
    if tmp_path is not None:
        path = tmp_path / "exported.npz"
        snapshot_file.save(path, snap)
        snap = path
    return Machine.from_snapshot(snap)


@pytest.mark.parametrize("mem", ["64M", "4352M"])
def test_round_trip_gives_the_same_layout(tmp_path, mem):
    m = fragmented(mem, seed=3)
    twin = round_trip(m, tmp_path)
    twin.check()
    for part in ("free", "folios"):
        assert snapshot.layout_digest(twin, (part,)) == snapshot.layout_digest(m, (part,)), part
    assert np.array_equal(twin.nr_pageblocks(), m.nr_pageblocks())
    assert twin.buddyinfo() == m.buddyinfo()
    assert twin.pagetypeinfo() == m.pagetypeinfo()
    report = twin.snapshot_report
    assert all(z["equal"] for z in report["pageblocks"].values())
    assert all(not any(z["difference"]) for z in report["buddyinfo"].values())


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), free_share=st.floats(0.0, 1.0))
def test_round_trip_property(seed, free_share):
    """Any fragmented machine: free blocks and folios come back exactly, pageblock counts per
    type equal, and the blocks whose contents decide their type keep it."""
    m = fragmented("32M", seed, rounds=20, free_share=free_share)
    twin = round_trip(m)
    for part in ("free", "folios"):
        assert snapshot.layout_digest(twin, (part,)) == snapshot.layout_digest(m, (part,))
    assert np.array_equal(twin.nr_pageblocks(), m.nr_pageblocks())
    twin.check()


def test_pcp_pages_come_back_free():
    m = Machine(mem="64M", seed=2, cpus=2)
    pfns = m.alloc_many(3000, 0, cpu=0)
    m.free_many(pfns[::2], cpu=1)
    assert m.pcp_pages() > 0
    twin = round_trip(m)
    twin.check()
    assert twin.pcp_pages() == 0
    assert twin.free_pages() == m.free_pages() + m.pcp_pages()
    assert twin.allocated_pages() == m.allocated_pages()


def test_export_marks_every_free_page_buddy():
    m = fragmented("64M", seed=5)
    flags, counts = snapshot_export.page_words(m)
    buddy = (flags >> np.uint64(snapshot.KPF["buddy"])) & np.uint64(1)
    assert int(buddy.sum()) == m.free_pages()
    assert int((counts[buddy.astype(bool)]).sum()) == 0


def test_too_large_for_this_host_is_refused_with_the_memory_needed():
    snap = snapshot_export.export(fragmented("64M", seed=1))
    with pytest.raises(ValueError,
                       match=r"of 64M needs about .* to simulate; this host has .* free"):
        snapshot.twin(snap, available=1 << 16)


def test_unknown_deferred_mode_is_named():
    snap = snapshot_export.export(Machine(mem="32M"))
    with pytest.raises(ValueError, match="deferred 'maybe'"):
        Machine.from_snapshot(snap, deferred="maybe")


def test_truncated_per_pfn_data_is_refused():
    snap = snapshot_export.export(Machine(mem="32M"))
    snap.kpageflags = snap.kpageflags[:1000]
    snap.kpagecount = snap.kpagecount[:1000]
    with pytest.raises(ValueError, match="truncated per-PFN data"):
        Machine.from_snapshot(snap)


def test_folios_from_a_captured_kpageflags_slice():
    """A slice of this machine's /proc/kpageflags: every compound run becomes one aligned folio
    of a power-of-two size, and every used page belongs to exactly one folio."""
    data = np.load(DATA / "live_kpageflags_slice.npz")
    flags = data["kpageflags"]
    page_class = np.where(snapshot._bit(flags, "buddy"), snapshot.C_FREE,
                          snapshot.C_USED).astype(np.uint8)
    pfn, order, kind, _, broken = snapshot.find_folios(flags, page_class)
    sizes = np.int64(1) << order.astype(np.int64)
    assert ((pfn & (sizes - 1)) == 0).all()
    covered = np.zeros(len(flags), dtype=np.int64)
    np.add.at(covered, snapshot_export._expand(pfn, sizes), 1)
    used = page_class == snapshot.C_USED
    if broken == 0:
        assert (covered[used] == 1).all() and (covered[~used] == 0).all()
    heads = snapshot._bit(flags, "compound_head")
    assert int((order > 0).sum()) == int(heads.sum()) or broken > 0
    slab = snapshot._bit(flags[pfn], "slab")
    assert (kind[slab] == KINDS["slab"]).all()


@live
@pytest.mark.skipif(not IS_ROOT, reason="reading /proc/kpageflags needs root")
def test_twin_of_this_machine(tmp_path):
    from livekernel.snapshot import write
    write(str(tmp_path / "a.npz"))
    write(str(tmp_path / "b.npz"))
    a, b = (snapshot_file.load(tmp_path / n) for n in ("a.npz", "b.npz"))
    # two snapshots in a row: the same memory map, few pages changed (others may be running)
    assert a.nr_pfns == b.nr_pfns
    assert (a.kpageflags != b.kpageflags).mean() < 0.05
    m = Machine.from_snapshot(tmp_path / "a.npz")
    m.check()
    report = m.snapshot_report
    assert report["pageblocks"]["DMA32"]["equal"]
    twin_pages = sum(z["twin_pages"] for z in report["buddyinfo"].values())
    assert twin_pages == m.free_pages()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60))
def test_migratetype_count_fix_meets_any_feasible_target(seed, n):
    """Single blocks: whatever the costs, the per-type counts end equal to the target."""
    rng = np.random.default_rng(seed)
    cost = rng.random((n, 6)) * 512
    cuts = np.sort(rng.integers(0, n + 1, 2))
    target = np.array([cuts[0], cuts[1] - cuts[0], n - cuts[1], 0, 0, 0])
    types, moved = snapshot._fix_counts(cost, np.arange(n), target)
    assert np.bincount(types, minlength=6).tolist() == target.tolist()
    assert 0 <= moved <= n


def test_kpf_bit_reads_every_bit():
    words = np.array([1 << b for b in range(64)], dtype=np.uint64)
    for name, bit in snapshot.KPF.items():
        assert np.flatnonzero(snapshot._bit(words, name)).tolist() == [bit]


def test_reconstruct_can_release_the_per_pfn_arrays_it_reads():
    """A snapshot loaded only for one twin gives its per-PFN arrays up to reconstruct(), so they
    are freed before the twin's mem_map is allocated; the reconstruction is the same."""
    snap = snapshot_export.export(fragmented("64M", seed=2))
    kept = snapshot.reconstruct(snap)
    assert snap.kpageflags is not None
    released = snapshot.reconstruct(snap, release=True)
    assert snap.kpageflags is None and snap.kpagecount is None
    assert np.array_equal(kept.page_class, released.page_class)
    assert np.array_equal(kept.folio_pfn, released.folio_pfn)
    assert np.array_equal(kept.block_mt, released.block_mt)


def test_consumed_reconstruction_becomes_the_handle_table():
    """build(consume=True) makes the twin's handle table in the buffer that holds the folios'
    PFNs (no second array of them while the twin is built) and drops the reconstruction's
    per-page and per-folio arrays; the twin is the same as one built from a kept copy."""
    m = fragmented("64M", seed=5)
    snap = snapshot_export.export(m)
    kept = Machine(mem=m.mem)
    snapshot.build(kept, snapshot.reconstruct(snap))
    rec = snapshot.reconstruct(snap)
    buffer = rec.folio_pfn.base
    nr_folios = len(rec.folio_pfn)
    twin = snapshot.build(Machine(mem=m.mem), rec, consume=True)
    assert np.shares_memory(twin.pgdat.folio_pfn, buffer)
    assert rec.page_class is None and rec.folio_pfn is None and rec.folio_kind is None
    assert np.array_equal(twin.pgdat.folio_pfn, kept.pgdat.folio_pfn)
    assert twin.digest() == kept.digest()
    assert twin.pgdat.node[N_NR_FOLIOS] == nr_folios == m.pgdat.node[N_NR_FOLIOS]


def test_growing_the_handle_table_makes_no_temporary_of_its_size():
    """grown_handle_table() chains the new free handles a chunk at a time: its peak is the new
    table, not three arrays of the table's size."""
    import tracemalloc

    from simcore.pgdat import N_HANDLE_FREE, N_HANDLES_AVAIL, NR_NODE_FIELDS, grown_handle_table
    node = np.zeros(NR_NODE_FIELDS, dtype=np.int64)
    node[N_HANDLE_FREE] = -1
    tracemalloc.start()
    try:
        table = grown_handle_table(np.empty(0, dtype=np.int64), node, 1 << 21)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < table.nbytes + (2 << 20)
    # the chain: 0 -> 1 -> ... -> last -> none, every slot free
    assert node[N_HANDLE_FREE] == 0 and node[N_HANDLES_AVAIL] == len(table)
    assert np.array_equal(-2 - table[:-1], np.arange(1, len(table)))
    assert -2 - table[-1] == -1


def test_folio_chunks_never_cut_a_compound_run(monkeypatch):
    """find_folios() works in chunks that end where no compound run goes on: small chunks
    give the same folios as one chunk over all PFNs, runs crossing chunk ends included."""
    flags = np.zeros(8192, dtype=np.uint64)
    head, tail = np.uint64(1 << snapshot.KPF["compound_head"]), \
        np.uint64(1 << snapshot.KPF["compound_tail"])
    for start, length in ((0, 512), (1000, 700), (2048, 4), (4096, 2048), (7000, 300)):
        flags[start] = head
        flags[start + 1:start + length] = tail
    flags |= np.uint64(1 << snapshot.KPF["anon"])
    page_class = np.full(len(flags), snapshot.C_USED, dtype=np.uint8)
    whole = snapshot.find_folios(flags, page_class)
    monkeypatch.setattr(snapshot, "FOLIO_CHUNK", 1024)
    chunked = snapshot.find_folios(flags, page_class)
    for a, b in zip(whole[:4], chunked[:4], strict=True):
        assert np.array_equal(a, b)
    assert whole[4] == chunked[4] > 0               # the broken runs counted alike
    assert 4096 in whole[0] and 5120 in whole[0]    # the 2048-page run: two order-10 pieces


def test_a_twin_with_reclaim_keeps_the_captured_active_lists():
    from simcore import vmscan
    snap = snapshot_export.export(fragmented("64M", seed=3))
    lru_heads = np.flatnonzero((snap.kpageflags >> np.uint64(5)) & np.uint64(1))  # KPF_LRU
    compound_tail = ((snap.kpageflags >> np.uint64(16)) & np.uint64(1)).astype(bool)  # TAIL
    lru_heads = lru_heads[~compound_tail[lru_heads]]
    chosen = lru_heads[::3]
    snap.kpageflags[chosen] |= np.uint64(1 << 6)                                # KPF_ACTIVE
    m = Machine.from_snapshot(snap, reclaim=True)
    m.check()
    handles = m.pgdat.mem_map["next"][lru_heads].astype(np.int64)
    lists = m.lru.list_of[handles]
    active = np.isin(lru_heads, chosen)
    assert set(lists[active]) <= {vmscan.LRU_ACTIVE_ANON, vmscan.LRU_ACTIVE_FILE}
    assert set(lists[~active]) <= {vmscan.LRU_INACTIVE_ANON, vmscan.LRU_INACTIVE_FILE}
    assert active.any() and (~active).any()
    assert m.vmstat()["pgactivate"] == 0            # placed as captured, not activated
    plain = Machine.from_snapshot(snap)
    assert not plain.reclaim
