"""Kernel profiles and the subsystem models beyond compaction: swap (clusters, fallback),
swap-in, zswap, KSM, memory-failure, khugepaged, NUMA balancing. Hypothesis checks that no page
and no folio is ever lost across any mix of them."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simcore
from simcore import profiles
from simcore.swap import SWAPFILE_CLUSTER, SwapDevice


def stats(m, order, name):
    return m.mthp_stats()[f"hugepages-{4 << order}kB"][name]


# --- profiles -----------------------------------------------------------------------------

def test_profiles_registry_and_machine_selection():
    names = profiles.profiles()
    assert names[0] == "linux-6.1" and names[-1] == "linux-6.18"
    assert {"linux-6.9", "linux-6.10", "linux-6.12"} <= set(names)
    assert simcore.Machine("64M", profile="linux-6.1").strategy.name == "legacy"
    assert simcore.Machine("64M").profile.name == "linux-6.18"
    assert simcore.Machine("64M").strategy.name == "folio"
    # compaction= still overrides the profile's strategy
    m = simcore.Machine("64M", profile="linux-6.18", compaction="split")
    assert m.strategy.name == "split" and m.profile.swap_alloc == "nonfull_cluster"
    with pytest.raises(ValueError, match="kernel profile 'linux-2.6' is unknown; known: linux-6.1"):
        simcore.Machine("64M", profile="linux-2.6")


def test_every_changed_policy_names_its_source():
    for name in profiles.profiles():
        p = profiles.get_profile(name)
        for field in profiles.POLICY_FIELDS:
            assert p.source(field), (name, field)
    bad = profiles.KernelProfile(**{**profiles.get_profile("linux-6.1").__dict__,
                                    "name": "bad", "swapin": "telepathy"})
    with pytest.raises(ValueError, match="swapin policy 'telepathy' is unknown"):
        profiles.register_profile(bad)


# --- swap ---------------------------------------------------------------------------------

def test_swap_out_cluster_exhaustion_falls_back_to_split():
    """Two clusters: one taken by order-0 pages, one filled by 64K folios. The next 64K folio
    finds no free cluster: 6.10 splits it (swpout_fallback), its pages go out as order 0."""
    m = simcore.Machine("64M", profile="linux-6.10")
    m.swapon(2 * SWAPFILE_CLUSTER * 4096)
    small = m.alloc_many(3, 0)
    assert all(r.pieces[0][1] == 0 for r in m.swap_out(small))
    big = m.alloc_many(SWAPFILE_CLUSTER // 16 + 1, 4)
    records = m.swap_out(big)
    whole = [r for r in records if len(r.pieces) == 1 and r.pieces[0][1] == 4]
    assert len(whole) == SWAPFILE_CLUSTER // 16
    last = records[-1]
    assert [p[1] for p in last.pieces] == [0] * 16
    assert stats(m, 4, "swpout_fallback") == 1 and stats(m, 4, "split") == 1
    assert stats(m, 4, "swpout") == SWAPFILE_CLUSTER // 16
    assert m.vmstat()["pswpout"] == 3 + 16 * (SWAPFILE_CLUSTER // 16 + 1)
    assert m.swap_device.free_clusters() == 0
    m.check()


@pytest.mark.parametrize("profile", ["linux-6.1", "linux-6.10", "linux-6.12", "linux-6.18"])
def test_a_swap_file_takes_no_large_folio_whole(profile):
    # cluster_alloc_swap_entry() refuses order > 0 without SWP_BLKDEV in every release; the
    # 6.10+ policies used to hand a swap file whole mTHP entries
    m = simcore.Machine("64M", profile=profile)
    m.swapon("8M", synchronous=False, blkdev=False)
    records = m.swap_out(np.concatenate([m.alloc_many(4, 4), m.alloc_many(1, 9)]))
    assert all(p[1] == 0 for r in records for p in r.pieces)
    assert stats(m, 4, "swpout") == 0 and stats(m, 9, "swpout") == 0
    assert m.vmstat()["pswpout"] == 4 * 16 + 512 and m.vmstat()["thp_swpout"] == 0
    m.check()
    block = simcore.Machine("64M", profile=profile)
    block.swapon("8M", synchronous=False, blkdev=True)
    whole = block.swap_out(block.alloc_many(1, 9))
    assert [p[1] for p in whole[0].pieces] == [9]


@pytest.mark.parametrize("profile, whole", [("linux-6.10", False), ("linux-6.12", True)])
def test_nonfull_clusters_are_reused_only_from_6_12(profile, whole):
    m = simcore.Machine("64M", profile=profile)
    m.swapon(SWAPFILE_CLUSTER * 4096)                     # one cluster
    records = m.swap_out(m.alloc_many(SWAPFILE_CLUSTER // 16, 4))
    m.swap_in(records[3:4])                               # a 64K hole in the full cluster
    m.swap_device.next[4] = None                          # as if another CPU had moved on
    rec = m.swap_out(m.alloc_many(1, 4))[0]
    assert (rec.pieces[0][1] == 4) is whole
    assert stats(m, 4, "swpout_fallback") == (0 if whole else 1)
    m.check()


def test_pmd_swapout_before_6_10_needs_a_free_cluster_and_splits_mthp():
    m = simcore.Machine("64M", profile="linux-6.1")
    m.swapon(2 * SWAPFILE_CLUSTER * 4096)
    mthp = m.swap_out(m.alloc_many(1, 4))[0]              # PTE-mapped: split, no fallback
    assert [p[1] for p in mthp.pieces] == [0] * 16
    assert stats(m, 4, "swpout_fallback") == 0 and stats(m, 4, "split") == 1
    rec = m.swap_out(m.alloc_many(1, 9))[0]               # the free cluster: whole
    assert [p[1] for p in rec.pieces] == [9] and m.vmstat()["thp_swpout"] == 1
    rec = m.swap_out(m.alloc_many(1, 9))[0]               # no free cluster left: split
    assert m.vmstat()["thp_swpout_fallback"] == 1
    assert {p[1] for p in rec.pieces} == {0}
    assert len(rec.pieces) == SWAPFILE_CLUSTER - 16 and len(rec.resident) == 16
    assert m.swap_device.inuse_pages() == 2 * SWAPFILE_CLUSTER
    m.check()


@pytest.mark.parametrize("profile, order, back", [
    ("linux-6.10", 4, 0), ("linux-6.12", 4, 4), ("linux-6.18", 9, 0), ("linux-6.18", 6, 6)])
def test_swap_in_order(profile, order, back):
    m = simcore.Machine("64M", profile=profile)
    m.swapon("16M")
    rec = m.swap_out(m.alloc_many(1, order))[0]
    heads = m.swap_in([rec])[0]
    orders = {int(m.folio(h)["order"]) for h in heads}
    assert orders == {back} and len(heads) == (1 << order) >> back
    assert m.swap_device.inuse_pages() == 0
    m.check()


def test_swap_in_falls_back_to_order0_once_zswap_was_enabled():
    m = simcore.Machine("64M", profile="linux-6.18")
    m.swapon("16M")
    m.zswap_enable(True)
    m.zswap_enable(False)
    rec = m.swap_out(m.alloc_many(1, 4))[0]
    assert len(m.swap_in([rec])[0]) == 16


@pytest.mark.parametrize("profile, stored", [("linux-6.12", 0), ("linux-6.18", 16)])
def test_zswap_store_of_large_folios(profile, stored):
    m = simcore.Machine("64M", profile=profile)
    m.swapon("16M")
    m.zswap_enable()
    rec = m.swap_out(m.alloc_many(1, 4))[0]
    v = m.vmstat()
    assert v["zswpout"] == stored and v["pswpout"] == 16 - stored
    heads = m.swap_in([rec])[0]
    assert len(heads) == 16 and m.vmstat()["zswpin"] == stored
    assert m.zswap.stored_pages == 0
    m.check()


def test_swap_device_rejects_bad_frees_and_sizes():
    dev = SwapDevice(1000)
    assert dev.nr_slots == 1024 and dev.free_clusters() == 2
    with pytest.raises(ValueError, match="not all in use"):
        dev.free(0, 1)
    with pytest.raises(ValueError, match="positive number of pages"):
        SwapDevice(0)
    m = simcore.Machine("64M")
    with pytest.raises(ValueError, match="no swap area"):
        m.swap_out(m.alloc_many(1, 0))


# --- KSM, memory-failure, khugepaged, NUMA --------------------------------------------------

def test_ksm_splits_before_merging_and_frees_the_duplicates():
    m = simcore.Machine("64M")
    a, b = m.alloc_many(2, 4), m.alloc_many(2, 4)
    anon = m.vmstat()["nr_anon_pages"]
    got = m.ksm_merge(a, b)
    assert got["merged_pages"] == 32 and got["split_folios"] == 4
    assert m.vmstat()["nr_anon_pages"] == anon - 32
    assert m.ksm.stats() == {"pages_shared": 32, "pages_sharing": 32, "full_scans": 1}
    assert all(m.folio(p)["order"] == 0 and "ksm" in m.folio(p)["flags"] for p in got["ksm_pfns"])
    pinned = m.alloc_many(2, 4, flags="pinned")
    assert m.ksm_merge(pinned[:1], pinned[1:])["failed_pages"] == 16
    m.check()


def test_memory_failure_splits_and_isolates_the_poisoned_page():
    m = simcore.Machine("64M", memory_block="16M")
    head = int(m.alloc_many(1, 4)[0])
    ok, action = m.memory_failure(head + 5)
    assert ok and action == "recovered"
    assert m.folio(head + 5)["kind"] == "kernel" and "hwpoison" in m.folio(head + 5)["flags"]
    assert all(m.folio(head + i)["order"] == 0 for i in range(16))
    assert stats(m, 4, "split") == 1
    assert m.memory_failure(head + 5) == (False, "already poisoned")
    pinned = int(m.alloc_many(1, 4, flags="pinned")[0])
    assert m.memory_failure(pinned + 1) == (False, "unsplit thp")
    assert stats(m, 4, "split_failed") == 1
    assert m.memory_failure_counts.stats()["ignored"] == 1
    with pytest.raises(ValueError, match="free page"):
        m.memory_failure(m.nr_pages - 1)
    m.check()
    # a poisoned page blocks offlining its memory block (has_unmovable_pages())
    block = head // m.memory_block_pages
    ok, why = m.offline_memory_block(block)
    assert not ok and "EBUSY" in why


def test_khugepaged_collapses_to_pmd_only():
    m = simcore.Machine("64M")
    pages = m.alloc_many(512, 0)
    assert m.collapse(pages[:16], 4) == (None, "SCAN_ORDER_NOT_SUPPORTED")
    new, why = m.collapse(pages, 9)
    assert why == "" and m.folio(new)["order"] == 9
    assert m.vmstat()["thp_collapse_alloc"] == 1
    with pytest.raises(ValueError, match="hold 2 pages, not the 512"):
        m.collapse(m.alloc_many(2, 0), 9)
    m.check()


@pytest.mark.parametrize("profile, moved", [("linux-6.9", False), ("linux-6.10", True)])
def test_numa_balancing_mthp(profile, moved):
    node0 = simcore.Machine("64M", profile=profile)
    node1 = simcore.Machine("64M", seed=1, profile=profile)
    pfns = node0.alloc_many(4, 4)
    thp = node0.alloc_many(1, 9)
    got = node0.numa_migrate(node1, np.concatenate([pfns, thp]))
    assert [g is not None for g in got] == [moved] * 4 + [True]
    v = node0.vmstat()
    assert v["numa_hint_faults"] == 5
    assert v["numa_pages_migrated"] == (64 if moved else 0) + 512
    assert node1.allocated_pages() == (64 if moved else 0) + 512
    node0.check()
    node1.check()
    with pytest.raises(ValueError, match="another Machine"):
        node0.numa_migrate(node0, pfns)


# --- conservation under any mix of operations ------------------------------------------------

OPS = st.lists(st.tuples(st.sampled_from(["alloc", "swap_out", "swap_in", "ksm", "poison",
                                          "collapse", "zswap"]),
                         st.integers(0, 9), st.integers(0, 1 << 20)), min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profile=st.sampled_from(profiles.profiles()), ops=OPS)
def test_no_page_and_no_folio_is_ever_lost(profile, ops):
    """Every page the test allocated is resident (anon), in swap, merged away by KSM or
    poisoned; swap slots match the records; every folio handed back is a live folio."""
    m = simcore.Machine("64M", seed=7, profile=profile)
    m.swapon("8M")
    allocated = 0
    records = []
    rng = np.random.default_rng(0)

    def anon_heads():
        f = m.folios()
        keep = (f["kind"] == simcore.machine.KINDS["anon"])
        return f["pfn"][keep], f["order"][keep]

    for op, order, pick in ops:
        if order == 1:
            order = 0
        heads, orders = anon_heads()
        if op == "alloc":
            got = m.alloc_many(1 + pick % 4, order)
            allocated += len(got) << order
        elif op == "zswap":
            m.zswap_enable(bool(pick % 2))
        elif not len(heads):
            continue
        elif op == "swap_out":
            sel = rng.choice(len(heads), size=min(len(heads), 1 + pick % 3), replace=False)
            records += [r for r in m.swap_out(heads[sel]) if r is not None]
        elif op == "swap_in" and records:
            i = pick % len(records)
            back = m.swap_in([records[i]])[0]
            assert all(m.folio(h)["kind"] == "anon" for h in back)
            if not records[i].pieces:
                records.pop(i)
        elif op == "ksm" and len(heads) >= 2:
            same = np.flatnonzero(orders == orders[pick % len(heads)])
            if len(same) >= 2:
                m.ksm_merge(heads[same[:1]], heads[same[1:2]])
        elif op == "poison":
            i = pick % len(heads)
            m.memory_failure(int(heads[i] + pick % (1 << int(orders[i]))))
        elif op == "collapse":
            small = heads[orders == 0]
            if len(small) >= 512:
                m.collapse(small[:512], 9)
        m.check()
        swapped = sum(r.nr_swapped for r in records)
        assert m.swap_device.inuse_pages() == swapped
        assert m.zswap.stored_pages == sum(1 << o for r in records for _, o, z in r.pieces if z)
        assert (m.vmstat()["nr_anon_pages"] + swapped + m.ksm.pages_sharing
                + len(m.hwpoisoned)) == allocated
        assert m.free_pages() + m.pcp_pages() + m.allocated_pages() == m.managed_pages
