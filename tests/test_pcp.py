"""Per-CPU page lists (simcore.pcp): layout, batch and high, refills and drains, where the
kernel drains, accounting (not in nr_free_pages or buddyinfo), check() and determinism."""
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import simcore
from foliobench import cli
from simcore import pcp
from simcore.mmzone import PAGE_PCP, ZONE_MOVABLE, ZONE_NORMAL
from workloads.backend import SimBackend, sim_factory


def lists(m, cpu, z):
    """{pindex: length} of one CPU's non-empty lists in zone z."""
    b = pcp.H_SIZE + (cpu * pcp.NR_ZONES + z) * pcp.P_SIZE
    out = {}
    for i in range(pcp.NR_PCP_LISTS):
        n = int(m.pgdat.pcp[b + pcp.P_LISTS + 3 * i + pcp.L_LEN])
        if n:
            out[i] = n
    return out


def ledger(m):
    assert m.free_pages() + m.pcp_pages() + m.allocated_pages() == m.managed_pages
    assert m.vmstat()["nr_free_pages"] == m.free_pages()


def test_zone_batchsize_and_highsize_follow_the_kernel():
    # 0.1% of the zone or 1 MiB, a quarter, 2^n - 1: 63 on any zone of 1 GiB or more
    assert pcp.zone_batchsize(3 << 18) == 63
    assert pcp.zone_batchsize(1 << 18) == 63
    assert pcp.zone_batchsize(16384) == 3           # 64 MiB: 16 -> 4 -> 6 -> 4 - 1
    assert pcp.zone_batchsize(0) == 0               # (the caller makes it at least 1)
    assert pcp.zone_highsize(1 << 20, 10000, 63, 2, 0) == 5000
    assert pcp.zone_highsize(1 << 20, 100, 63, 2, 0) == 63 * 4
    assert pcp.zone_highsize(1 << 20, 10000, 63, 2, 8) == (1 << 20) // 8 // 2


def test_pagesets_per_profile_and_sysctl():
    m = simcore.Machine(mem="8G", cpus=4)
    low = m.zoneinfo()["Normal"]["low"]
    managed = m.zoneinfo()["Normal"]["managed"]
    ps = m.zoneinfo()["Normal"]["pagesets"]
    assert len(ps) == 4 and {p["batch"] for p in ps} == {63}
    assert {p["high_min"] for p in ps} == {max(low // 4, 63 * 4)}
    assert {p["high_max"] for p in ps} == {managed // 8 // 4}
    old = simcore.Machine(mem="8G", cpus=4, profile="linux-6.1").zoneinfo()["Normal"]
    assert {(p["high_min"], p["high_max"]) for p in old["pagesets"]} == \
        {(max(low // 4, 252),) * 2}
    fixed = simcore.Machine(mem="8G", cpus=4, percpu_pagelist_high_fraction=16)
    assert {(p["high_min"], p["high_max"]) for p in fixed.zoneinfo()["Normal"]["pagesets"]} \
        == {(managed // 16 // 4,) * 2}


@pytest.mark.parametrize("kw", [{"cpus": 0}, {"cpus": 1000}, {"cpus": True},
                                {"percpu_pagelist_high_fraction": 3},
                                {"percpu_pagelist_high_fraction": -1}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        simcore.Machine(mem="64M", **kw)


def test_bad_cpu_is_refused_before_anything_changes():
    m = simcore.Machine(mem="64M", cpus=2)
    before = m.digest()
    for call in (lambda: m.alloc(0, cpu=2), lambda: m.alloc_many(3, 0, cpu=-1),
                 lambda: m.free(0, cpu="0"), lambda: setattr(m, "cpu", 7)):
        with pytest.raises(ValueError, match="cpu"):
            call()
    assert m.digest() == before


def test_pcp_pages_are_not_free_pages_and_not_in_buddyinfo():
    m = simcore.Machine(mem="256M", cpus=2, profile="linux-6.1")
    free_before = m.free_pages()
    pfn = m.alloc(0)
    # one refill of `batch` pages left the buddy lists; one of them was handed out
    batch = m.zoneinfo()["DMA32"]["pagesets"][0]["batch"]
    assert m.pcp_pages() == batch - 1
    assert m.free_pages() == free_before - batch
    buddy = m.nr_free().sum(axis=2)
    assert int((buddy * (1 << np.arange(buddy.shape[1]))).sum()) == m.free_pages()
    assert m.pgdat.mem_map["type"][pfn + 1] in (PAGE_PCP, 0)
    ledger(m)
    m.check()


def test_frees_are_hot_and_per_cpu():
    m = simcore.Machine(mem="256M", cpus=2)
    a = m.alloc(0, cpu=0)
    m.free(a, cpu=1)                          # onto CPU 1's list, at its head
    b = m.alloc(0, cpu=0)
    assert b != a                             # CPU 0 does not see CPU 1's list
    assert m.alloc(0, cpu=1) == a             # CPU 1 gets its hottest page back
    assert m.cpu == 1
    m.check()


def test_pmd_order_lists_by_profile():
    for profile, movable_apart in (("linux-6.1", False), ("linux-6.18", True)):
        m = simcore.Machine(mem="1G", cpus=1, profile=profile)
        thp = m.alloc(9, "movable")
        slab = m.alloc(9, "unmovable", "slab")
        m.free(thp)
        m.free(slab)
        got = {}
        for z in range(pcp.NR_ZONES):
            for i, n in lists(m, 0, z).items():
                if i >= pcp.NR_LOWORDER_PCP_LISTS:
                    got[i] = got.get(i, 0) + n
        if movable_apart:
            assert pcp.NR_LOWORDER_PCP_LISTS + 1 in got and pcp.NR_LOWORDER_PCP_LISTS in got
        else:
            assert set(got) == {pcp.NR_LOWORDER_PCP_LISTS}
        m.check()


def test_low_orders_get_one_list_per_migratetype():
    m = simcore.Machine(mem="1G", cpus=1)
    for order in range(4):
        for mt, kind in (("unmovable", "slab"), ("movable", "anon"), ("reclaimable", "slab")):
            m.free(m.alloc(order, mt, kind))
    seen = set()
    for z in range(pcp.NR_ZONES):
        seen |= set(lists(m, 0, z))
    assert set(range(pcp.NR_LOWORDER_PCP_LISTS)) <= seen
    m.check()


def test_frees_drain_at_high():
    m = simcore.Machine(mem="512M", cpus=2, profile="linux-6.1")
    pfns = m.alloc_many(20000, 0, cpu=0)
    m.free_many(pfns, cpu=0)
    ps = m.zoneinfo()["DMA32"]["pagesets"][0]
    assert 0 < ps["count"] < ps["high"]
    m.check()
    ledger(m)


def test_auto_tuned_high_grows_on_refills_within_its_bounds():
    m = simcore.Machine(mem="2G", cpus=2)
    m.alloc_many(200000, 0, cpu=0)
    ps = m.zoneinfo()["DMA32"]["pagesets"]
    assert ps[0]["high_min"] < ps[0]["high"] <= ps[0]["high_max"]
    assert ps[1]["high"] == ps[1]["high_min"]          # CPU 1 did nothing
    fixed = simcore.Machine(mem="2G", cpus=2, profile="linux-6.1")
    fixed.alloc_many(200000, 0, cpu=0)
    ps = fixed.zoneinfo()["DMA32"]["pagesets"]
    assert ps[0]["high"] == ps[0]["high_min"] == ps[0]["high_max"]


def test_below_high_watermark_shrinks_high():
    m = simcore.Machine(mem="256M", cpus=1)
    m.alloc_many(m.managed_pages, 0)                  # down to the min watermark
    zflags = m.pgdat.pcp[pcp.H_ZONE + 0 * pcp.ZH_SIZE + pcp.ZH_FLAGS]
    assert zflags & pcp.ZONE_BELOW_HIGH
    m.check()


def test_drain_all_pages_merges_everything_back():
    m = simcore.Machine(mem="256M", cpus=2)
    a = m.alloc_many(3000, 0, cpu=0)
    b = m.alloc_many(300, 3, cpu=1)
    m.free_many(a, cpu=1)
    m.free_many(b, cpu=0)
    assert m.pcp_pages() > 0
    m.drain_all_pages()
    assert m.pcp_pages() == 0
    assert m.free_pages() == m.managed_pages
    m.check()


def test_offline_drains_every_cpu():
    m = simcore.Machine(mem="512M", movable="128M", memory_block="16M", cpus=2)
    pfns = m.alloc_many(2000, 0, cpu=0)
    m.free_many(pfns[:1000], cpu=0)
    m.free_many(pfns[1000:], cpu=1)
    zone = m.pgdat.zones[ZONE_MOVABLE]
    on_pcp = np.flatnonzero(m.pgdat.mem_map["type"] == PAGE_PCP)
    on_pcp = on_pcp[(on_pcp >= zone[0]) & (on_pcp < zone[1])]
    assert len(on_pcp)
    block = int(on_pcp[0]) // m.memory_block_pages
    ok, why = m.offline_memory_block(block)
    assert ok, why
    start = block * m.memory_block_pages
    types = m.pgdat.mem_map["type"][start:start + m.memory_block_pages]
    assert not (types == PAGE_PCP).any()
    m.check()
    ledger(m)


def test_cma_alloc_drains_pages_of_the_area():
    m = simcore.Machine(mem="256M", cma="32M", cpus=2)
    lo, hi = m.cma_range
    pfns = m.alloc_many(m.managed_pages, 0, "movable", compact=False)
    in_cma = pfns[(pfns >= lo) & (pfns < hi)]
    m.free_many(in_cma[:400], cpu=1)                 # CMA pages go to MOVABLE's pcp list
    assert ((m.pgdat.mem_map["type"][lo:hi]) == PAGE_PCP).any()
    m.free_many(np.setdiff1d(pfns, in_cma[:400]))
    assert m.cma_alloc(1024) is not None
    m.check()


def test_check_catches_a_lost_pcp_page():
    m = simcore.Machine(mem="64M", cpus=2)
    m.free(m.alloc(0))
    b = pcp.H_SIZE + (0 * pcp.NR_ZONES + 0) * pcp.P_SIZE
    m.pgdat.pcp[b + pcp.P_COUNT] += 1
    with pytest.raises(simcore.InvariantError, match="pcp"):
        m.check()


def test_same_seed_same_digest_with_threads():
    def run():
        be = SimBackend(mem="256M", seed=3, cpus=4, threads=3)
        h = be.alloc(5000, 0)
        be.free(h[::3])
        counts = [p["count"] for p in be.machine.zoneinfo()["DMA32"]["pagesets"]]
        # more than fits: reclaim's retry drains every CPU's lists (checked here too)
        be.fault_anon(700, (4, 9))
        be.machine.check()
        return be.machine.digest(), counts
    (d1, counts), (d2, _) = run(), run()
    assert d1 == d2
    assert sum(1 for c in counts if c) >= 2          # the threads' frees reached several CPUs


def test_run_command_line_sets_cpus_and_threads():
    args = cli.build_parser().parse_args(["run", "thp-heavy", "--cpus", "4", "--threads", "6"])
    be = sim_factory(None, None, args.cpus, args.threads)(mem="64M")
    assert (be.machine.cpus, be.threads) == (4, 6)
    default = sim_factory(None, None, None, None)(mem="64M")
    assert (default.machine.cpus, default.threads) == (2, 2)
    for bad in (["--cpus", "0"], ["--cpus", "100000"], ["--threads", "0"]):
        with pytest.raises(cli.UsageError, match="cpus|threads"):
            cli.build_parser().parse_args(["run", "thp-heavy", *bad])


def test_backend_threads_are_checked():
    with pytest.raises(ValueError, match="threads"):
        SimBackend(mem="64M", threads=0)


OPS = st.lists(st.tuples(st.sampled_from(("alloc", "free", "drain")), st.sampled_from(
    (0, 0, 1, 2, 3, 4, 9)), st.integers(0, 3), st.integers(0, 1 << 20)), max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, profile=st.sampled_from(("linux-6.1", "linux-6.18")))
def test_no_page_is_lost_between_buddy_and_pcp(ops, profile):
    m = simcore.Machine(mem="64M", cpus=4, profile=profile, seed=1)
    held = []
    for what, order, cpu, pick in ops:
        if what == "alloc":
            got = m.alloc_many(1 + pick % 300, order, ("unmovable", "movable",
                                                       "reclaimable")[pick % 3],
                               "slab" if pick % 3 != 1 else "anon", cpu=cpu)
            held += got.tolist()
        elif what == "free" and held:
            n = 1 + pick % len(held)
            m.free_many(np.array(held[:n], dtype=np.int64), cpu=cpu)
            held = held[n:]
        elif what == "drain":
            m.drain_all_pages()
            assert m.pcp_pages() == 0
        m.check()
        ledger(m)
        assert sum(p["count"] for z in m.zoneinfo().values() for p in z["pagesets"]) \
            == m.pcp_pages()


def test_zone_normal_pagesets_exist_on_large_machines():
    m = simcore.Machine(mem="6G", cpus=3)
    assert len(m.zoneinfo()["Normal"]["pagesets"]) == 3
    assert m.pgdat.pcp[pcp.H_NR_CPUS] == 3 and ZONE_NORMAL == 1


def test_twin_backend_runs_threads_too():
    from foliobench.replay import TwinBackend
    from simcore import snapshot_export
    be = TwinBackend(snapshot=snapshot_export.export(simcore.Machine(mem="64M")))
    assert be.threads == be.machine.cpus == 2
    assert len(be.alloc(1500, 0)) == 1500
    be.machine.check()
