"""Machine's public API: invariants under random operations, determinism, bad input, renderers."""
import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simcore
from simcore import procfs
from simcore.mmzone import MIGRATETYPE_NAMES, NR_PAGE_ORDERS, PAGEBLOCK_NR_PAGES
from workloads.fragment import fragment

DATA = pathlib.Path(__file__).parent / "data"

MIGRATETYPES = st.sampled_from(["unmovable", "movable", "reclaimable"])
KINDS = st.sampled_from(["anon", "file", "shmem", "slab", "pagetable", "kernel", "hugetlb"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(0, 10), MIGRATETYPES, KINDS,
                  st.sampled_from([0, "pinned", ("dirty", "writeback")])),
        st.tuples(st.just("alloc_many"), st.integers(0, 300), st.integers(0, 10), MIGRATETYPES,
                  KINDS),
        st.tuples(st.just("free"), st.integers(0, 10 ** 6)),
        st.tuples(st.just("free_many"), st.floats(0, 1)),
        st.tuples(st.just("split"), st.integers(0, 10 ** 6), st.integers(0, 9)),
    ),
    max_size=40,
)
MACHINES = st.sampled_from([
    dict(mem="16M"), dict(mem="32M", cma="8M"), dict(mem="64M", movable="16M"),
    dict(mem="16M", min_free_kbytes=0),
])


def apply(m, ops):
    """Run ops, keeping the list of live folio heads; check invariants after every step.
    No direct compaction here (it moves and splits folios; test_compaction covers it)."""
    held = []
    for op in ops:
        if op[0] == "alloc":
            _, order, mt, kind, flags = op
            pfn = m.alloc(order, mt, kind, flags, compact=False)
            if pfn is not None:
                held.append(pfn)
        elif op[0] == "alloc_many":
            _, count, order, mt, kind = op
            got = m.alloc_many(count, order, mt, kind, compact=False)
            assert len(got) <= count
            held.extend(int(p) for p in got)
        elif op[0] == "free" and held:
            m.free(held.pop(op[1] % len(held)))
        elif op[0] == "free_many" and held:
            cut = int(len(held) * op[1])
            m.free_many(np.array(held[:cut], dtype=np.int64))
            held = held[cut:]
        elif op[0] == "split" and held:
            pfn = held[op[1] % len(held)]
            info = m.folio(pfn)
            new_order = op[2]
            if new_order < info["order"] and info["kind"] != "hugetlb" and \
                    not (info["kind"] == "anon" and new_order == 1):
                if m.split(pfn, new_order):
                    step = 1 << new_order
                    held.extend(range(pfn + step, pfn + (1 << info["order"]), step))
                else:           # where __folio_split() fails (page_alloc.folio_split())
                    assert "pinned" in info["flags"] or "writeback" in info["flags"] or \
                        (info["kind"] == "file" and "dirty" in info["flags"])
        m.check()
        assert m.free_pages() + m.pcp_pages() + m.allocated_pages() == m.managed_pages
    return held


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MACHINES, OPS)
def test_random_operations_keep_every_invariant_and_lose_no_page(kw, ops):
    m = simcore.Machine(seed=1, **kw)
    held = apply(m, ops)
    folios = m.folios()
    assert sorted(held) == folios["pfn"].tolist()
    assert (m.handle_pfn(folios["handle"]) == folios["pfn"]).all()
    pages = int((np.int64(1) << folios["order"]).sum())
    assert pages == m.allocated_pages()
    m.free_many(np.array(held, dtype=np.int64))
    m.check()
    assert m.free_pages() + m.pcp_pages() == m.managed_pages
    m.drain_all_pages()             # the per-CPU lists' pages merge only once drained
    m.check()
    assert m.pcp_pages() == 0
    assert m.free_pages() == m.managed_pages
    # with everything free again, buddies merged all the way up
    nr = m.nr_free().sum(axis=2)
    assert nr[:, :NR_PAGE_ORDERS - 2].sum() <= 2 * len(m.zones)


@settings(max_examples=15, deadline=None)
@given(MACHINES, OPS)
def test_same_seed_and_calls_give_the_same_state(kw, ops):
    a = simcore.Machine(seed=7, **kw)
    b = simcore.Machine(seed=7, **kw)
    apply(a, ops)
    apply(b, ops)
    assert a.digest() == b.digest()


def test_fragment_is_deterministic_per_seed():
    digests = []
    for seed in (3, 3, 4):
        m = simcore.Machine("64M", seed=seed)
        fragment(m)
        m.check()
        digests.append(m.digest())
    assert digests[0] == digests[1] != digests[2]


# ---- bad input: ValueError naming the value, machine unchanged ------------------------------

BAD_CALLS = [
    (lambda m: m.alloc(11), "order 11"),
    (lambda m: m.alloc(-1), "order -1"),
    (lambda m: m.alloc(2.0), "order 2.0"),
    (lambda m: m.alloc(0, "sideways"), "migratetype 'sideways'"),
    (lambda m: m.alloc(0, "cma"), "migratetype 'cma'"),
    (lambda m: m.alloc(0, "movable", "teapot"), "kind 'teapot'"),
    (lambda m: m.alloc(0, flags="sticky"), "page flag 'sticky'"),
    (lambda m: m.alloc_many(-3, 0), "count -3"),
    (lambda m: m.alloc_many(3, 12), "order 12"),
    (lambda m: m.free(5), "pfn 5"),
    (lambda m: m.free(10 ** 9), "pfn 1000000000"),
    (lambda m: m.free(m.pinned + 1), "is not the head of an allocated folio"),
    (lambda m: m.free_many([m.pinned, m.pinned]), "appears twice"),
    (lambda m: m.free_many([m.pinned, 12345]), "pfn 12345"),
    (lambda m: m.split(m.pinned, 9), "new_order 9"),
    (lambda m: m.split(m.pinned, 11), "new_order 11"),
    (lambda m: m.split(7, 0), "pfn 7"),
]


@pytest.mark.parametrize("call,needle", BAD_CALLS, ids=[n for _, n in BAD_CALLS])
def test_bad_arguments_raise_and_change_nothing(call, needle):
    m = simcore.Machine("16M")
    m.pinned = m.alloc(4, "movable", "anon")
    assert m.pinned != 5
    before = m.digest()
    with pytest.raises(ValueError) as err:
        call(m)
    assert needle in str(err.value)
    assert m.digest() == before
    m.check()


@pytest.mark.parametrize("kw,needle", [
    (dict(mem="12Q"), "mem '12Q'"), (dict(mem="3M"), "mem '3M'"), (dict(mem="17M"), "mem '17M'"),
    (dict(mem="16M", seed=-1), "seed -1"), (dict(mem="64M", cma="63M"), "cma"),
    (dict(mem="64M", movable="62M"), "movable + cma"), (dict(mem="16M", min_free_kbytes=-5), "-5"),
])
def test_bad_machine_arguments(kw, needle):
    with pytest.raises(ValueError) as err:
        simcore.Machine(**kw)
    assert needle in str(err.value)


def test_split_refused_for_pinned_counts_split_failed():
    m = simcore.Machine("16M")
    pfn = m.alloc(4, "movable", "anon", "pinned")
    before = m.folios()["pfn"].tolist()
    assert m.split(pfn, 0) is False
    assert m.folios()["pfn"].tolist() == before
    assert m.mthp_stats()["hugepages-64kB"]["split_failed"] == 1
    free = m.alloc(9)
    assert m.split(free, 0) is True
    assert m.vmstat()["thp_split_page"] == 1
    assert m.mthp_stats()["hugepages-2048kB"]["split"] == 1
    assert len(m.folios()["pfn"]) == 2 + 511


def test_counters_follow_allocations():
    m = simcore.Machine("16M")
    pfns = m.alloc_many(10, 2, "movable", "file")
    v = m.vmstat()
    assert v["pgalloc_dma32"] == 40
    assert v["nr_file_pages"] == 40
    assert v["nr_free_pages"] == m.managed_pages - 40
    m.free_many(pfns)
    assert m.vmstat()["pgfree"] == 40


# ---- renderers read back with the parsers the live backend uses ----------------------------

def fragmented(mem="64M", **kw):
    m = simcore.Machine(mem, seed=2, **kw)
    fragment(m)
    return m


def test_buddyinfo_parses_back_to_the_free_lists():
    m = fragmented(cma="8M")
    parsed = procfs.parse_buddyinfo(m.buddyinfo())
    nr = m.nr_free().sum(axis=2)
    assert list(parsed) == [(0, name) for _, name in m.zones]
    for (_, name), row in zip(m.zones, nr):
        assert parsed[(0, name)].tolist() == row.tolist()


def test_pagetypeinfo_parses_back():
    m = fragmented(movable="16M")
    info = procfs.parse_pagetypeinfo(m.pagetypeinfo())
    assert info.pageblock_order == 9 and info.pages_per_block == PAGEBLOCK_NR_PAGES
    nr = m.nr_free()
    blocks = m.nr_pageblocks()
    for zi, (_, zone) in enumerate(m.zones):
        for mt, name in enumerate(MIGRATETYPE_NAMES):
            assert info.free[(0, zone, name)].tolist() == np.minimum(nr[zi, :, mt], 100000).tolist()
            assert info.blocks[(0, zone)][name] == blocks[zi, mt]
    assert blocks.sum() == m.nr_pages // PAGEBLOCK_NR_PAGES


def test_extfrag_files_parse_back_and_agree_with_the_formulas():
    m = fragmented()
    ext = procfs.parse_extfrag(m.extfrag_index())
    unusable = procfs.parse_extfrag(m.unusable_index())
    assert ext[(0, "DMA32")][9] == m.fragmentation_index(9)["DMA32"] / 1000
    assert unusable[(0, "DMA32")][9] == m.unusable_free_index(9)["DMA32"] / 1000


def test_vmstat_names_are_the_kernels():
    real = procfs.parse_vmstat((DATA / "proc_vmstat.txt").read_text())
    ours = simcore.Machine("16M").vmstat()
    # CMA counters exist only on CONFIG_CMA kernels, which the fixture's is not.
    missing = [name for name in ours if name not in real and "cma" not in name]
    assert missing == []


def test_single_calls_follow_the_node_across_a_handle_table_growth():
    """alloc()/free() pass PgData.view (one int) to compiled code: after the handle table
    grows (a new PgData), single calls must work on the new arrays, and a numpy integer PFN
    must free the same folio as an int."""
    m = simcore.Machine(mem="64M", seed=0)
    table = m.pgdat.folio_pfn
    pfns = [m.alloc(0) for _ in range(3 * len(table))]
    assert m.pgdat.folio_pfn is not table and None not in pfns
    assert m.allocated_pages() == len(pfns)
    m.check()
    for i, pfn in enumerate(pfns):
        m.free(np.int64(pfn) if i % 2 else pfn)
    assert m.allocated_pages() == 0
    assert m.free_pages() + m.pcp_pages() == m.managed_pages
    m.check()
    with pytest.raises(ValueError, match="is not the head of an allocated folio"):
        m.free(pfns[0])
