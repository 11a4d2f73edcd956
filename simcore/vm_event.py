"""Event counters, after include/linux/vm_event_item.h and the per-size mTHP stats.

Each counter has its /proc/vmstat name; the index constants (PGMIGRATE_SUCCESS, ...) address the
machine's events array from compiled code. Only the counters simcore produces are listed, in the
order the kernel prints them.
"""
VM_EVENT_NAMES = (
    "pswpin", "pswpout",
    "pgalloc_dma32", "pgalloc_normal", "pgalloc_movable",
    "pgfree",
    "numa_hint_faults", "numa_pages_migrated",
    "pgmigrate_success", "pgmigrate_fail", "thp_migration_success", "thp_migration_fail",
    "thp_migration_split",
    "compact_migrate_scanned", "compact_free_scanned", "compact_isolated", "compact_stall",
    "compact_fail", "compact_success", "compact_daemon_wake", "compact_daemon_migrate_scanned",
    "compact_daemon_free_scanned",
    "htlb_buddy_alloc_success", "htlb_buddy_alloc_fail",
    "cma_alloc_success", "cma_alloc_fail",
    "thp_fault_alloc", "thp_fault_fallback", "thp_fault_fallback_charge",
    "thp_collapse_alloc", "thp_collapse_alloc_failed",
    "thp_split_page", "thp_split_page_failed", "thp_deferred_split_page",
    "thp_swpout", "thp_swpout_fallback",
    "ksm_swpin_copy", "cow_ksm", "zswpin", "zswpout",
)
NR_VM_EVENTS = len(VM_EVENT_NAMES)
for _i, _name in enumerate(VM_EVENT_NAMES):
    globals()[_name.upper()] = _i
PGALLOC_FIRST = VM_EVENT_NAMES.index("pgalloc_dma32")  # + zone index

# /sys/kernel/mm/transparent_hugepage/hugepages-<N>kB/stats/<name>, one row per order.
MTHP_STAT_NAMES = (
    "anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge", "zswpout", "swpin",
    "swpin_fallback", "swpin_fallback_charge", "swpout", "swpout_fallback", "shmem_alloc",
    "shmem_fallback", "shmem_fallback_charge", "split", "split_failed", "split_deferred",
    "nr_anon", "nr_anon_partially_mapped",
)
NR_MTHP_STATS = len(MTHP_STAT_NAMES)
for _i, _name in enumerate(MTHP_STAT_NAMES):
    globals()["MTHP_STAT_" + _name.upper()] = _i
