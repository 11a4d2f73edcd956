"""The two kernel paths behind the twin's compact_memory gap (docs/fidelity.md):

1. a twin's zone ends where initialised memory ends (pgdat->first_deferred_pfn), as compaction
   sees it in the kernel, so neither scanner walks uninitialised struct pages;
2. a large folio that finds no target and cannot split (__folio_split() fails: writeback, a dirty
   page-cache folio, pins) makes migrate_pages() return -ENOMEM, and compact_zone() ends the
   zone with COMPACT_CONTENDED before the scanners meet."""
import numpy as np
import pytest
from buddy_only import pcp_disabled

import simcore
from simcore import snapshot, snapshot_export, tracepoints
from simcore.mmzone import PAGE_HEAD, PAGEBLOCK_NR_PAGES
from simcore.pgdat import POLICY_FIELDS, Z_END, Z_START

DEFERRED = 4096          # an uninitialised tail of 16 MiB: longer than snapshot.LONG_RUN


def with_deferred_tail(m, pages=DEFERRED):
    """m exported, then its last `pages` PFNs made what an uninitialised tail looks like in
    /proc/kpageflags and /proc/kpagecount: no flag, no count. zoneinfo still spans them."""
    snap = snapshot_export.export(m)
    snap.kpageflags[-pages:] = 0
    snap.kpagecount[-pages:] = 0
    return snap


def test_twin_zone_ends_at_the_first_deferred_pfn():
    m = simcore.Machine("64M", seed=0)
    end = int(m.pgdat.zones[0, Z_END])
    twin = simcore.Machine.from_snapshot(with_deferred_tail(m))
    first = end - DEFERRED
    assert twin.snapshot_report["zones"]["DMA32"]["first_deferred_pfn"] == first
    assert int(twin.pgdat.zones[0, Z_END]) == first
    assert twin.free_pages() + twin.pcp_pages() == twin.managed_pages
    # deferred="free" hands the tail to the buddy allocator: the zone keeps its whole span
    grown = simcore.Machine.from_snapshot(with_deferred_tail(m), deferred="free")
    assert int(grown.pgdat.zones[0, Z_END]) == end
    assert grown.managed_pages == twin.managed_pages + DEFERRED


def test_first_deferred_pfn_rounds_up_to_a_pageblock():
    assert snapshot.first_deferred_pfn(None, 0) is None
    assert snapshot.first_deferred_pfn(PAGEBLOCK_NR_PAGES * 3 + 5, 0) == PAGEBLOCK_NR_PAGES * 4
    assert snapshot.first_deferred_pfn(PAGEBLOCK_NR_PAGES * 3, 0) == PAGEBLOCK_NR_PAGES * 3


def test_compaction_of_a_twin_never_scans_uninitialised_memory():
    """compact_memory on the twin runs compact_zone() over [zone_start, first deferred PFN), as
    the kernel's mm_compaction_begin shows it (zone_end=0x5b8000 on this project's VM): the free
    scanner starts in the last initialised pageblock, not in the offline tail."""
    m = simcore.Machine("64M", seed=0)
    pfns = m.alloc_many(m.free_pages() // 2, 0, "movable", "anon", compact=False)
    m.free_many(pfns[::2])
    m.drain_all_pages()
    end = int(m.pgdat.zones[0, Z_END])
    twin = simcore.Machine.from_snapshot(with_deferred_tail(m))
    twin.trace_events()
    assert twin.compact()["DMA32"] == "complete"
    (run,) = tracepoints.compaction_zones(twin.trace_records())
    first = end - DEFERRED
    assert run["zone_end"] == first
    assert run["free_begin"] == first - PAGEBLOCK_NR_PAGES
    assert (twin.folios()["pfn"] < first).all()
    twin.check()


# ---- split failure in migration -------------------------------------------------------------

@pytest.mark.parametrize("kind, flags, splits", [
    ("file", "dirty", False),           # dirty buffers: filemap_release_folio() fails
    ("file", "writeback", False),
    ("anon", "writeback", False),
    ("file", 0, True),
    ("anon", "dirty", True),            # no private data to release
    ("shmem", "dirty", True),
])
def test_split_fails_where_the_kernel_split_fails(kind, flags, splits):
    m = simcore.Machine("16M")
    pfn = m.alloc(4, "movable", kind, flags)
    assert m.split(pfn, 0) is splits
    stats = m.mthp_stats()["hugepages-64kB"]
    assert (stats["split_failed"], stats["split"]) == ((0, 1) if splits else (1, 0))


def zone_with_a_large_file_folio_first(flags):
    """A 64M zone of order-0 anon folios with an order-4 page-cache folio at its first PFN and
    only scattered order-0 free pages, in the last pageblock: the free scanner can give the
    order-4 folio no target, so migrate_pages() must split it or fail with -ENOMEM."""
    m = pcp_disabled(simcore.Machine("64M", seed=0, compaction="folio", min_free_kbytes=0))
    m.alloc_many(m.nr_pages, 0, "movable", "anon", compact=False)
    start = int(m.pgdat.zones[0, Z_START])
    m.free_many(np.arange(start, start + 16))
    assert m.alloc(4, "movable", "file", flags, compact=False) == start
    last_block = (int(m.pgdat.zones[0, Z_END]) - 1) & ~(PAGEBLOCK_NR_PAGES - 1)
    m.free_many(np.arange(last_block, last_block + PAGEBLOCK_NR_PAGES, 2))
    return m, start


def test_unsplittable_large_folio_without_target_ends_the_zone_contended():
    m, head = zone_with_a_large_file_folio_first("dirty")
    result = m.compact()
    assert result["DMA32"] == "contended"
    vm = m.vmstat()
    assert vm["pgmigrate_fail"] >= 16
    assert m.mthp_stats()["hugepages-64kB"]["split_failed"] >= 1
    # put back whole, on the LRU, where it was
    assert m.pgdat.mem_map[head]["type"] == PAGE_HEAD and m.pgdat.mem_map[head]["order"] == 4
    m.check()


def test_the_same_folio_clean_splits_and_the_zone_completes():
    m, head = zone_with_a_large_file_folio_first(0)
    assert m.compact()["DMA32"] == "complete"
    assert m.mthp_stats()["hugepages-64kB"]["split"] == 1
    assert m.vmstat()["pgmigrate_success"] > 16
    m.check()


@pytest.mark.parametrize("profile", ["linux-6.1", "linux-6.12"])
def test_a_twin_keeps_every_policy_of_its_profile(profile):
    """The node's policy fields (highatomic, capture, isolation, deferred split) are the
    profile's in a twin as in the machine it was exported from: the twin rebuilds the node
    array and must not fall back to the newest release's behaviour."""
    m = simcore.Machine("64M", seed=0, profile=profile)
    twin = simcore.Machine.from_snapshot(snapshot_export.export(m), profile=profile)
    fields = list(POLICY_FIELDS)
    assert twin.pgdat.node[fields].tolist() == m.pgdat.node[fields].tolist()
