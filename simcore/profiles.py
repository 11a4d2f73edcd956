"""Kernel profiles: which release's large-folio behaviour the simulator models, one policy per
mechanism.

A profile bundles small named policies, each one the behaviour a kernel release had and the
mechanism module that implements it (the allowed names live there):

- compaction: a compaction strategy (simcore.strategies: legacy, split, folio)
- swap_alloc: how swap-out finds slots for a large folio (simcore.swap.SWAP_ALLOC_POLICIES)
- swapin: which order do_swap_page() brings a folio back at (simcore.swap.SWAPIN_POLICIES)
- zswap_store: whether zswap takes large folios (simcore.zswap.ZSWAP_STORE_POLICIES)
- ksm: what KSM does to a large folio before merging (simcore.ksm.KSM_POLICIES)
- memory_failure: how memory_failure() isolates a poisoned page of a large folio
  (simcore.memory_failure.MEMORY_FAILURE_POLICIES)
- khugepaged: which orders khugepaged collapses to (simcore.khugepaged.COLLAPSE_POLICIES)
- numa_balancing: which folios NUMA-hinting faults migrate (simcore.numa.NUMA_POLICIES)
- hotunplug, cma: how offline_pages() and alloc_contig_range() migrate large folios
  (simcore.page_isolation.RANGE_MIGRATION_POLICIES)
- pcp: the per-CPU page lists' layout and how their high limit is set (simcore.pcp.PCP_POLICIES)
- watermark_boost: which fallbacks boost the watermarks (simcore.boost.BOOST_POLICIES)
- highatomic: the highatomic reserve's size and watermark accounting
  (simcore.highatomic.HIGHATOMIC_POLICIES)
- highatomic_gfp: which requests that cannot sleep get ALLOC_NON_BLOCK and ALLOC_HIGHATOMIC
  (simcore.gfp.HIGHATOMIC_GFP_POLICIES)
- capture: which free blocks compaction_capture() hands to a direct compactor
  (simcore.page_alloc.CAPTURE_POLICIES)
- isolation: what an undone pageblock isolation gives the block back (its own type, or the
  caller's) (simcore.page_isolation.ISOLATION_POLICIES)
- deferred_split: whether migration leaves PTE-mapped anonymous mTHP on the deferred split
  queue flagged partially mapped, and migrate_pages() splits such folios before moving them
  (simcore.deferred_split.DEFERRED_SPLIT_POLICIES). linux-6.12 and later: yes; older profiles:
  no (6.10 and 6.11, which split folios on the queue without the flag, are not modelled:
  their behaviour is unknown here)

    simcore.profiles.profiles()                 -> ["linux-6.1", ..., "linux-6.18"]
    simcore.Machine(mem="4G", profile="linux-6.1")

`sources` names, per policy that changed, the upstream series (and release) that changed it.
Versions come from merge windows; where the notes mark a version (~) it was inferred. A profile
models the release's first version (x.y.0): a fix backported to the x.y stable tree later is
named in `sources` but not modelled.
"""
import dataclasses

POLICY_FIELDS = ("compaction", "swap_alloc", "swapin", "zswap_store", "ksm", "memory_failure",
                 "khugepaged", "numa_balancing", "hotunplug", "cma", "pcp", "watermark_boost",
                 "highatomic", "highatomic_gfp", "capture", "isolation", "deferred_split")


@dataclasses.dataclass(frozen=True)
class KernelProfile:
    name: str
    version: str
    description: str
    compaction: str
    swap_alloc: str
    swapin: str
    zswap_store: str
    ksm: str
    memory_failure: str
    khugepaged: str
    numa_balancing: str
    hotunplug: str
    cma: str
    pcp: str
    watermark_boost: str = "every_fallback"     # simcore.boost.BOOST_POLICIES
    highatomic: str = "reserved_plus_block"     # simcore.highatomic.HIGHATOMIC_POLICIES
    highatomic_gfp: str = "gfp_atomic"          # simcore.gfp.HIGHATOMIC_GFP_POLICIES
    capture: str = "no_small_movable"           # simcore.page_alloc.CAPTURE_POLICIES
    isolation: str = "overwrite_type"           # simcore.page_isolation.ISOLATION_POLICIES
    deferred_split: str = "not_queued"  # simcore.deferred_split.DEFERRED_SPLIT_POLICIES
    sources: tuple = ()          # ((policy field, "what changed, series, release"), ...)

    def policies(self):
        """{policy field: policy name}."""
        return {f: getattr(self, f) for f in POLICY_FIELDS}

    def source(self, field):
        """Where this profile's behaviour for `field` comes from ("" when unchanged since
        before the oldest profile)."""
        return dict(self.sources).get(field, "")


# Behaviour that was already there in the oldest profile, with where it comes from.
BASELINE_SOURCES = (
    ("compaction", "isolate_migratepages_block() skips compound pages unless alloc_contig; "
                   "split_map_pages() hands out order-0 targets (before 6.9)"),
    ("swap_alloc", "THP_SWAP (\"THP swap: delay splitting THP during swap out\", 4.13/4.14): "
                   "a PMD-mapped THP goes to swap whole when a free cluster exists on a block "
                   "device (swap_alloc_cluster()); PTE-mapped large folios are split first in "
                   "shrink_folio_list()"),
    ("swapin", "do_swap_page() allocates order-0 folios only"),
    ("zswap_store", "zswap (frontswap) rejects THP: \"THP isn't supported\" in "
                    "zswap_frontswap_store(); 6.8's zswap_store() returns false for large "
                    "folios; the folio goes to the backing device"),
    ("ksm", "try_to_merge_one_page() splits a large folio (split_huge_page()) before merging "
            "its pages; a merged KSM page is order 0"),
    ("memory_failure", "memory_failure() -> try_to_split_thp_page(): split the folio to order 0 "
                       "and isolate the poisoned page; a failed split leaves it unisolated "
                       "(MF_MSG_UNSPLIT_THP)"),
    ("khugepaged", "khugepaged/MADV_COLLAPSE collapse to PMD size only "
                   "(hpage_collapse_scan_pmd(), collapse_huge_page())"),
    ("numa_balancing", "do_numa_page(): \"TODO: handle PTE-mapped THP\" skips large folios "
                       "mapped by PTEs; do_huge_pmd_numa_page() migrates PMD-mapped THPs whole"),
    ("hotunplug", "do_migrate_range() isolates whole folios; migrate_pages() with "
                  "alloc_migration_target() allocates a target of the same order and splits on "
                  "-ENOMEM"),
    ("cma", "alloc_contig_range() isolates compound pages whole (cc->alloc_contig) and migrates "
            "them to same-order targets, splitting on -ENOMEM"),
    ("pcp", "Mel Gorman, \"mm/page_alloc: allow high-order pages to be stored on the per-cpu "
            "lists\" (5.13/5.14): one pcp list per migratetype for orders 0..3 and one for the "
            "PMD order; \"mm/page_alloc: scale the number of pages that are batch freed\" "
            "(5.14): free_factor; zone_highsize() (5.14): high = low watermark / CPUs, fixed"),
    ("watermark_boost", "Mel Gorman, \"mm: reclaim small amounts of memory when an external "
                        "fragmentation event occurs\" (5.0): steal_suitable_fallback() calls "
                        "boost_watermark() for every fallback short of a whole free pageblock"),
    ("highatomic", "Mel Gorman, \"mm, page_alloc: reserve pageblocks for high-order atomic "
                   "allocations on demand\" (4.4): a successful high-order ALLOC_HARDER "
                   "(GFP_ATOMIC) allocation reserves its pageblock, up to managed / 100 + one "
                   "pageblock per zone; watermark checks subtract nr_reserved_highatomic"),
    ("highatomic_gfp", "gfp_to_alloc_flags(): only __GFP_ATOMIC (GFP_ATOMIC) without "
                       "__GFP_NOMEMALLOC gets ALLOC_HARDER, which reserves and uses highatomic "
                       "blocks above order 0; GFP_NOWAIT gets no reserves"),
    ("capture", "Mel Gorman, \"mm, compaction: capture a page under direct compaction\" "
                "(5.1): compaction_capture() refuses CMA and isolated blocks and every "
                "MOVABLE block below pageblock_order; HIGHATOMIC blocks are captured like any "
                "other"),
    ("isolation", "set_migratetype_isolate() overwrites the pageblock's migratetype with "
                  "MIGRATE_ISOLATE; undo_isolate_page_range() gives every block the caller's "
                  "type (MOVABLE after a failed offline); no isolation or offline path adjusts "
                  "nr_reserved_highatomic"),
    ("deferred_split", "migration leaves no deferred-split state: a migrated mTHP is not "
                       "queued and migrate_pages_batch() never splits a folio for being on the "
                       "deferred split queue"),
)

_REGISTRY = {}


def register_profile(profile):
    """Register a KernelProfile (replacing one of the same name); every policy name is checked
    against its mechanism's table."""
    if not isinstance(profile, KernelProfile):
        raise ValueError(f"profile {profile!r} must be a KernelProfile")
    from . import (
        boost,
        deferred_split,
        gfp,
        highatomic,
        khugepaged,
        ksm,
        memory_failure,
        numa,
        page_alloc,
        page_isolation,
        pcp,
        swap,
        zswap,
    )
    from .strategies import get_strategy
    tables = {
        "swap_alloc": swap.SWAP_ALLOC_POLICIES, "swapin": swap.SWAPIN_POLICIES,
        "zswap_store": zswap.ZSWAP_STORE_POLICIES, "ksm": ksm.KSM_POLICIES,
        "memory_failure": memory_failure.MEMORY_FAILURE_POLICIES,
        "khugepaged": khugepaged.COLLAPSE_POLICIES, "numa_balancing": numa.NUMA_POLICIES,
        "hotunplug": page_isolation.RANGE_MIGRATION_POLICIES,
        "cma": page_isolation.RANGE_MIGRATION_POLICIES,
        "pcp": pcp.PCP_POLICIES,
        "watermark_boost": boost.BOOST_POLICIES,
        "highatomic": highatomic.HIGHATOMIC_POLICIES,
        "highatomic_gfp": gfp.HIGHATOMIC_GFP_POLICIES,
        "capture": page_alloc.CAPTURE_POLICIES,
        "isolation": page_isolation.ISOLATION_POLICIES,
        "deferred_split": deferred_split.DEFERRED_SPLIT_POLICIES,
    }
    get_strategy(profile.compaction)
    for field, table in tables.items():
        value = getattr(profile, field)
        if value not in table:
            raise ValueError(f"profile {profile.name!r}: {field} policy {value!r} is unknown; "
                             f"allowed: {', '.join(table)}")
    _REGISTRY[profile.name] = profile
    return profile


def profiles():
    """Names of the registered profiles, oldest kernel first."""
    return list(_REGISTRY)


def get_profile(name):
    """The profile registered as `name`; ValueError listing the known ones otherwise."""
    if isinstance(name, KernelProfile):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"kernel profile {name!r} is unknown; known: "
                         f"{', '.join(profiles())}") from None


def newest():
    return _REGISTRY[profiles()[-1]]


_V61 = KernelProfile(
    name="linux-6.1", version="6.1",
    description="6.1 LTS: compaction skips large folios, swap-out splits all but PMD THPs, "
                "NUMA balancing skips PTE-mapped large folios",
    compaction="legacy", swap_alloc="pmd_free_cluster", swapin="order0",
    zswap_store="reject_large", ksm="split", memory_failure="split_order0",
    khugepaged="pmd_only", numa_balancing="pmd_only", hotunplug="migrate_whole",
    cma="migrate_whole", pcp="fixed_high", sources=BASELINE_SOURCES)

_V69 = dataclasses.replace(
    _V61, name="linux-6.9", version="6.9",
    description="6.9: anonymous mTHP (6.8) and folio compaction; swap still splits mTHP",
    compaction="folio", pcp="auto_high", highatomic="aligned_reserved",
    highatomic_gfp="nonblocking",
    sources=_V61.sources + (
        ("highatomic", "Charan Teja Kalla, \"mm: page_alloc: fixes for high atomic reserve "
                       "calculations\" (6.8): no reserve when 1% of the zone is below a "
                       "pageblock, at most ALIGN(managed / 100, pageblock_nr_pages); Mel "
                       "Gorman, \"mm/page_alloc: explicitly define how __GFP_HIGH non-blocking "
                       "allocations accesses reserves\" (6.3 ~): non-blocking requests fall "
                       "back to the reserve when all else fails"),
        ("highatomic_gfp", "Mel Gorman, \"mm/page_alloc: explicitly record high-order atomic "
                           "allocations in alloc_flags\" (eb2e2b425c69) and \"mm/page_alloc: "
                           "explicitly define how __GFP_HIGH non-blocking allocations accesses "
                           "reserves\" (1ebbb21811b7), 6.3 (~): every request without "
                           "__GFP_DIRECT_RECLAIM or __GFP_NOMEMALLOC gets ALLOC_NON_BLOCK and, "
                           "above order 0, ALLOC_HIGHATOMIC: high-order GFP_NOWAIT creates and "
                           "uses highatomic blocks"),
        ("compaction", "Zi Yan, \"enable >0 order folio memory compaction\" (6.9): large "
                       "folios below cc->order isolated, per-order free lists, "
                       "compaction_alloc() splits free pages buddy-style"),
        ("pcp", "Huang Ying, \"mm: PCP high auto-tuning\" (6.7): high between high_min "
                "(low watermark / CPUs) and high_max (managed / 8 / CPUs), grown on refills and "
                "overflowing frees, shrunk below the high watermark (ZONE_BELOW_HIGH) and "
                "under reclaim, alloc_factor-scaled refills; \"mm: page_alloc: separate THP "
                "PCP into movable and non-movable categories\" (6.8 ~): two PMD-order lists; "
                "free_count instead of free_factor (6.10 ~)")))

_V610 = dataclasses.replace(
    _V69, name="linux-6.10", version="6.10",
    description="6.10: mTHP swapped out whole into free clusters, mTHP NUMA balancing",
    swap_alloc="free_cluster", numa_balancing="whole", capture="movable_to_movable",
    sources=_V69.sources + (
        ("capture", "Baolin Wang, \"mm: page_alloc: allowing mTHP compaction to capture the "
                    "freed page directly\" (posted April 2024, 6.10 ~): a MOVABLE block below "
                    "pageblock_order is captured when the compaction is for a MOVABLE request; "
                    "HIGHATOMIC blocks still captured by any request"),
        ("swap_alloc", "Ryan Roberts, \"Swap-out mTHP without splitting\" (6.10): "
                       "folio_alloc_swap() for every order from a per-order per-cpu cluster; "
                       "only free clusters start one, else split (swpout_fallback)"),
        ("numa_balancing", "Baolin Wang, \"support multi-size THP numa balancing\" (6.10): "
                           "do_numa_page() migrates PTE-mapped large folios whole")))

_V612 = dataclasses.replace(
    _V610, name="linux-6.12", version="6.12",
    description="6.12: per-order non-full swap clusters, large swap-in from synchronous "
                "devices",
    swap_alloc="nonfull_cluster", swapin="sync_io_large", highatomic="aligned_free",
    deferred_split="partially_mapped",
    sources=_V610.sources + (
        ("highatomic_gfp", "as 6.3 (6.12.0): high-order GFP_NOWAIT creates and uses "
                           "highatomic blocks; the 6.18 fix (6a204d4b14c9) reached the stable "
                           "tree in 6.12.54, which this profile does not model"),
        ("deferred_split", "Usama Arif, \"mm: introduce a pageflag for partially mapped "
                           "folios\" (6.12, the underused-THP shrinker series): "
                           "__folio_remove_rmap() queues a partially unmapped anon folio with "
                           "PG_partially_mapped, so migration (PTE-by-PTE unmap) flags every "
                           "PTE-mapped mTHP it moves, and the destination is queued again "
                           "(migrate_folio_move(), \"mm: fix deferred split queue races during "
                           "migration\", mm tree); 7262f208ca68 \"mm/migrate: split source "
                           "folio if it is on deferred split list\" (6.10), tested with the "
                           "flag since 6.12: migrate_pages_batch() splits a flagged folio first. "
                           "Measured on 6.12.118 (2-node guest: split_deferred +2 and "
                           "nr_anon_partially_mapped +1 per 64K folio migrated once, nr_split 1 "
                           "on the second migration) and 6.18.44 (host). Reclaim: "
                           "shrink_folio_list() splits a flagged folio before add_to_swap() "
                           "(5ed890ce5147, Ryan Roberts, \"mm: vmscan: avoid split during "
                           "shrink_folio_list()\", 6.10, for folios on the queue; 8422acdc97ed "
                           "adds the flag test, 6.12), and the deferred split shrinker "
                           "(deferred_split_scan(), from shrink_slab()) splits flagged folios "
                           "(not measured here)"),
        ("highatomic", "Yu Zhao, \"mm/page_alloc: keep track of free highatomic\" (6.12 ~): "
                       "watermark checks subtract nr_free_highatomic, the reserve's free "
                       "pages, instead of all of nr_reserved_highatomic"),
        ("swap_alloc", "Chris Li and Kairui Song, \"mTHP swap allocator base on swap cluster "
                       "order\" (6.12): non-full clusters kept per order and reused before a "
                       "free cluster is taken"),
        ("swapin", "Barry Song and Chuanhua Han, \"support large folios swap-in for sync io "
                   "devices\" (6.12): alloc_swap_folio() for orders below PMD_ORDER when the "
                   "device is SWP_SYNCHRONOUS_IO and zswap was never enabled")))

_V618 = dataclasses.replace(
    _V612, name="linux-6.18", version="6.18",
    description="6.18 (newest): zswap stores large folios page by page",
    zswap_store="per_page", watermark_boost="claim_only", highatomic_gfp="gfp_high",
    isolation="standalone_bit",
    sources=_V612.sources + (
        ("isolation", "Zi Yan, \"mm/page_isolation: make page isolation a standalone bit\" "
                      "(posted May 2025, 6.17 ~): the migratetype survives isolation and undo "
                      "restores it, so a HIGHATOMIC block whose offline failed is HIGHATOMIC "
                      "again; a successful offline still leaves nr_reserved_highatomic alone"),
        ("highatomic_gfp", "Thadeu Lima de Souza Cascardo, \"mm/page_alloc: only set "
                           "ALLOC_HIGHATOMIC for __GPF_HIGH allocations\" (6a204d4b14c9, "
                           "6.18 ~: backported to 6.17.y, 6.12.54 and 6.1.y): ALLOC_HIGHATOMIC "
                           "only with __GFP_HIGH; GFP_NOWAIT keeps ALLOC_NON_BLOCK"),
        ("watermark_boost", "Brendan Jackman, \"mm/page_alloc: some clarifications for "
                            "migratetype fallback\", and Johannes Weiner, \"mm: page_alloc: "
                            "speed up fallbacks in rmqueue_bulk()\" (6.15): the boost moved "
                            "into try_to_claim_block(); __rmqueue_steal()'s single-buddy steals "
                            "no longer boost"),
        ("zswap_store", "Kanchana P Sridhar, \"mm: zswap swap-out of large folios\" (6.13): "
                        "zswap_store() compresses each page of a large folio; zswap_load() "
                        "still loads order 0, so swap-in falls back to order 0 once zswap was "
                        "enabled"),
        ("memory_failure", "Zi Yan, \"mm/memory-failure: improve large block size folio "
                           "handling\" (2025, mm tree): split to min_order_for_split(), which "
                           "is 0 for anonymous folios, so unchanged for what the probe "
                           "poisons")))

for _p in (_V61, _V69, _V610, _V612, _V618):
    register_profile(_p)
