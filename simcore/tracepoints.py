"""The kernel's compaction and migration tracepoints, as the simulator emits them.

compact_zone() logs compaction:mm_compaction_begin and mm_compaction_end
(include/trace/events/compaction.h: zone_start, migrate_pfn, free_pfn, zone_end, sync, and
status at the end) and migrate_pages() logs migrate:mm_migrate_pages
(include/trace/events/migrate.h: succeeded, failed, thp_succeeded, thp_failed, thp_split,
large_folio_split, mode, reason) into the log after the migration counters (simcore.migrate,
TR_*), when Machine.trace_events() switched it on. This module turns that log into records.

Also kmem:mm_page_alloc_extfrag (include/trace/events/kmem.h: pfn, alloc_order,
fallback_order, alloc_migratetype, fallback_migratetype, change_ownership) from
__rmqueue_claim() and __rmqueue_steal(), and compaction:mm_compaction_isolate_migratepages and
mm_compaction_isolate_freepages (start_pfn, end_pfn, nr_scanned, nr_taken) at the end of
isolate_migratepages_block() and isolate_freepages_block().

Simplified: no timestamps or CPU (records are in the order they happened), and no
mm_compaction_fast_isolate_freepages, suitable, deferred or finished events.
"""
import json
import os
import tempfile

import numpy as np

from . import migrate, tracelog

COMPACTION_BEGIN = "compaction:mm_compaction_begin"
COMPACTION_END = "compaction:mm_compaction_end"
MIGRATE_PAGES = "migrate:mm_migrate_pages"
PAGE_ALLOC_EXTFRAG = "kmem:mm_page_alloc_extfrag"
ISOLATE_MIGRATEPAGES = "compaction:mm_compaction_isolate_migratepages"
ISOLATE_FREEPAGES = "compaction:mm_compaction_isolate_freepages"
_ISOLATE_FIELDS = ("start_pfn", "end_pfn", "nr_scanned", "nr_taken")
_ZONE_FIELDS = ("zone_start", "migrate_pfn", "free_pfn", "zone_end", "sync")
EVENTS = {
    tracelog.TP_COMPACTION_BEGIN: (COMPACTION_BEGIN, _ZONE_FIELDS),
    tracelog.TP_COMPACTION_END: (COMPACTION_END, _ZONE_FIELDS + ("status",)),
    tracelog.TP_MIGRATE_PAGES: (MIGRATE_PAGES, ("succeeded", "failed", "thp_succeeded",
                                               "thp_failed", "thp_split", "large_folio_split",
                                               "mode", "reason")),
    tracelog.TP_PAGE_ALLOC_EXTFRAG: (PAGE_ALLOC_EXTFRAG, ("pfn", "alloc_order", "fallback_order",
                                                         "alloc_migratetype",
                                                         "fallback_migratetype",
                                                         "change_ownership")),
    tracelog.TP_ISOLATE_MIGRATEPAGES: (ISOLATE_MIGRATEPAGES, _ISOLATE_FIELDS),
    tracelog.TP_ISOLATE_FREEPAGES: (ISOLATE_FREEPAGES, _ISOLATE_FIELDS),
}
# The kernel's names: enum compact_result as compaction_status_string prints it, enum
# migrate_mode and enum migrate_reason as mm_migrate_pages prints them.
STATUS_NAMES = ("not_suitable_zone", "skipped", "deferred", "no_suitable_page", "continue",
                "complete", "partial_skipped", "contended", "success")
MODE_NAMES = ("MIGRATE_ASYNC", "MIGRATE_SYNC_LIGHT", "MIGRATE_SYNC")
# enum migrate_reason (include/linux/migrate_mode.h) in order, as mm_migrate_pages prints it
KERNEL_REASONS = ("compaction", "memory_failure", "memory_hotplug", "syscall_or_cpuset",
                  "mempolicy_mbind", "numa_misplaced", "contig_range", "longterm_pin",
                  "demotion", "damon")
# the kernel's field types (this project's 6.18 format files), for records written as a trace
FIELD_TYPES = {
    "mm_compaction_begin": {"zone_start": "<u8", "migrate_pfn": "<u8", "free_pfn": "<u8",
                            "zone_end": "<u8", "sync": "<u1"},
    "mm_compaction_end": {"zone_start": "<u8", "migrate_pfn": "<u8", "free_pfn": "<u8",
                          "zone_end": "<u8", "sync": "<u1", "status": "<i4"},
    "mm_migrate_pages": {"succeeded": "<u8", "failed": "<u8", "thp_succeeded": "<u8",
                         "thp_failed": "<u8", "thp_split": "<u8", "large_folio_split": "<u8",
                         "mode": "<u4", "reason": "<i4"},
    "mm_page_alloc_extfrag": {"pfn": "<u8", "alloc_order": "<i4", "fallback_order": "<i4",
                              "alloc_migratetype": "<i4", "fallback_migratetype": "<i4",
                              "change_ownership": "<i4"},
    "mm_compaction_isolate_migratepages": {"start_pfn": "<u8", "end_pfn": "<u8",
                                           "nr_scanned": "<u8", "nr_taken": "<u8"},
    "mm_compaction_isolate_freepages": {"start_pfn": "<u8", "end_pfn": "<u8",
                                        "nr_scanned": "<u8", "nr_taken": "<u8"},
}
REASON_NAMES = {"compaction": "compaction", "memory_failure": "memory_failure",
                "hotunplug": "memory_hotplug", "syscall": "syscall_or_cpuset",
                "numa": "numa_misplaced", "cma": "contig_range"}


def _log(stats):
    if len(stats) <= tracelog.NR_COUNTERS:
        return np.empty((0, tracelog.TR_WORDS), dtype=np.int64)
    n = int(stats[tracelog.TR_LEN])
    return stats[tracelog.TR_BASE:tracelog.TR_BASE + n * tracelog.TR_WORDS].reshape(
        n, tracelog.TR_WORDS)


def lost(stats):
    """Records dropped because the log was full."""
    return int(stats[tracelog.TR_LOST]) if len(stats) > tracelog.NR_COUNTERS else 0


def records(stats):
    """The log in a migration-stats array as a list of dicts: "event" and the kernel's fields,
    with status, mode and reason by the kernel's names and sync as a bool."""
    out = []
    for row in _log(stats):
        event, fields = EVENTS[int(row[0])]
        rec = {"event": event}
        rec.update((name, int(v)) for name, v in zip(fields, row[1:]))
        if "sync" in rec:
            rec["sync"] = bool(rec["sync"])
        if "status" in rec:
            rec["status"] = STATUS_NAMES[rec["status"]]
        if "mode" in rec:
            rec["mode"] = MODE_NAMES[rec["mode"]]
            rec["reason"] = REASON_NAMES[migrate.REASON_NAMES[rec["reason"]]]
        out.append(rec)
    return out


def compaction_zones(recs):
    """Per compact_zone() run: the shape livekernel.fidelity.compaction_zones() gives for a
    live trace (zone_start, zone_end, mode, migrate_begin/end, free_begin/end, status), plus
    "batches", the mm_migrate_pages records inside the run. Records outside a begin/end pair
    are ignored."""
    runs, cur = [], None
    for rec in recs:
        if rec["event"] == COMPACTION_BEGIN:
            cur = {"zone_start": rec["zone_start"], "zone_end": rec["zone_end"],
                   "mode": "sync" if rec["sync"] else "async",
                   "migrate_begin": rec["migrate_pfn"], "free_begin": rec["free_pfn"],
                   "batches": []}
        elif cur is None:
            continue
        elif rec["event"] == COMPACTION_END:
            cur.update(migrate_end=rec["migrate_pfn"], free_end=rec["free_pfn"],
                       status=rec["status"])
            runs.append(cur)
            cur = None
        elif rec["event"] == MIGRATE_PAGES:
            cur["batches"].append({k: v for k, v in rec.items() if k != "event"})
    return runs


def write_json(path, recs, lost_records=0):
    """Write records as JSON ({"format", "lost", "records"}), atomically."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"format": "foliobench-sim-tracepoints", "version": 1,
                       "lost": int(lost_records), "records": recs}, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _code(rec, field):
    v = rec[field]
    if field == "status":
        return STATUS_NAMES.index(v)
    if field == "mode":
        return MODE_NAMES.index(v)
    if field == "reason":
        return KERNEL_REASONS.index(v)
    return int(v)


def system_of(name):
    """The tracefs system of an event emitted here."""
    return "migrate" if name == "mm_migrate_pages" else \
        "kmem" if name == "mm_page_alloc_extfrag" else "compaction"


def columns(recs):
    """Records as a trace file's typed columns, {event: {column: array}}, with the kernel's
    field types and enum values; ts is the record's position (records have no time)."""
    out = {}
    for name, fields in FIELD_TYPES.items():
        event = f"{system_of(name)}:{name}"
        picked = [(i, r) for i, r in enumerate(recs) if r["event"] == event]
        cols = {"ts": np.array([i for i, _ in picked], dtype=np.uint64),
                "cpu": np.zeros(len(picked), dtype=np.uint16)}
        for field, dtype in fields.items():
            cols[field] = np.array([_code(r, field) for _, r in picked], dtype=dtype)
        out[name] = cols
    return out
