"""The simulator's tracepoint log: the compiled writers of every traced site (compaction,
migration, the free lists; simcore.tracepoints reads the records back).

The log is the tail of the migration-stats array (Machine.migrate_stats, which pgdat.trace_log
shares): the NR_MS migrate_pages() counters, then records written, records lost for want of
room, then TR_WORDS int64 per record (event id and the kernel's fields in TP_STRUCT__entry
order). Off, the array is just the counters and each traced site costs one length check.
"""
import numba as nb

jit = nb.njit(cache=True, nogil=True)

NR_COUNTERS = 12            # simcore.migrate.NR_MS: the counters before the log
TR_LEN = NR_COUNTERS
TR_LOST = NR_COUNTERS + 1
TR_BASE = NR_COUNTERS + 2
TR_WORDS = 10
TP_COMPACTION_BEGIN = 0     # zone_start, migrate_pfn, free_pfn, zone_end, sync
TP_COMPACTION_END = 1       # the same and status (enum compact_result)
TP_MIGRATE_PAGES = 2        # succeeded, failed, thp_succeeded, thp_failed, thp_split,
#                             large_folio_split, mode, reason
TP_PAGE_ALLOC_EXTFRAG = 3   # pfn, alloc_order, fallback_order, alloc_migratetype,
#                             fallback_migratetype, change_ownership
TP_ISOLATE_MIGRATEPAGES = 4  # start_pfn, end_pfn, nr_scanned, nr_taken
TP_ISOLATE_FREEPAGES = 5     # the same


@jit
def tracing(log):
    return log.shape[0] > NR_COUNTERS


@jit
def trace_slot(log):
    """Where the next trace record goes in the log, or -1 when it is full (counted lost)."""
    n = log[TR_LEN]
    at = TR_BASE + n * TR_WORDS
    if at + TR_WORDS > log.shape[0]:
        log[TR_LOST] += 1
        return -1
    log[TR_LEN] = n + 1
    log[at:at + TR_WORDS] = 0
    return at


@jit
def trace_extfrag(log, pfn, alloc_order, fallback_order, alloc_mt, fallback_mt, block_mt):
    """trace_mm_page_alloc_extfrag(): change_ownership is whether the pageblock now has the
    requested type (the kernel reads get_pageblock_migratetype() when it traces)."""
    at = trace_slot(log)
    if at >= 0:
        log[at] = TP_PAGE_ALLOC_EXTFRAG
        log[at + 1] = pfn
        log[at + 2] = alloc_order
        log[at + 3] = fallback_order
        log[at + 4] = alloc_mt
        log[at + 5] = fallback_mt
        log[at + 6] = 1 if block_mt == alloc_mt else 0


@jit
def trace_isolate(log, event, start_pfn, end_pfn, nr_scanned, nr_taken):
    """trace_mm_compaction_isolate_migratepages() / _isolate_freepages(): one scanned block."""
    at = trace_slot(log)
    if at >= 0:
        log[at] = event
        log[at + 1] = start_pfn
        log[at + 2] = end_pfn
        log[at + 3] = nr_scanned
        log[at + 4] = nr_taken


@jit
def trace_compaction(log, event, zone_start, migrate_pfn, free_pfn, zone_end, sync, status):
    """trace_mm_compaction_begin() / trace_mm_compaction_end() (status only at the end)."""
    at = trace_slot(log)
    if at >= 0:
        log[at] = event
        log[at + 1] = zone_start
        log[at + 2] = migrate_pfn
        log[at + 3] = free_pfn
        log[at + 4] = zone_end
        log[at + 5] = sync
        log[at + 6] = status


@jit
def trace_migrate_pages(log, succeeded, failed, thp_succeeded, thp_failed, thp_split,
                        large_folio_split, mode, reason):
    """trace_mm_migrate_pages(): one migrate_pages() call's struct migrate_pages_stats (what
    the call added to each counter), mode and reason."""
    at = trace_slot(log)
    if at >= 0:
        log[at] = TP_MIGRATE_PAGES
        log[at + 1] = succeeded
        log[at + 2] = failed
        log[at + 3] = thp_succeeded
        log[at + 4] = thp_failed
        log[at + 5] = thp_split
        log[at + 6] = large_folio_split
        log[at + 7] = mode
        log[at + 8] = reason
