"""The kernel's compaction and migration tracepoints, as the simulator emits them.

compact_zone() logs compaction:mm_compaction_begin and mm_compaction_end
(include/trace/events/compaction.h: zone_start, migrate_pfn, free_pfn, zone_end, sync, and
status at the end) and migrate_pages() logs migrate:mm_migrate_pages
(include/trace/events/migrate.h: succeeded, failed, thp_succeeded, thp_failed, thp_split,
large_folio_split, mode, reason) into the log after the migration counters (simcore.migrate,
TR_*), when Machine.trace_events() switched it on. This module turns that log into records.

Simplified: no timestamps or CPU (records are in the order they happened), and no
mm_compaction_isolate_*, suitable, deferred or finished events.
"""
import json
import os
import tempfile

import numpy as np

from . import migrate

COMPACTION_BEGIN = "compaction:mm_compaction_begin"
COMPACTION_END = "compaction:mm_compaction_end"
MIGRATE_PAGES = "migrate:mm_migrate_pages"
_ZONE_FIELDS = ("zone_start", "migrate_pfn", "free_pfn", "zone_end", "sync")
EVENTS = {
    migrate.TP_COMPACTION_BEGIN: (COMPACTION_BEGIN, _ZONE_FIELDS),
    migrate.TP_COMPACTION_END: (COMPACTION_END, _ZONE_FIELDS + ("status",)),
    migrate.TP_MIGRATE_PAGES: (MIGRATE_PAGES, ("succeeded", "failed", "thp_succeeded",
                                               "thp_failed", "thp_split", "large_folio_split",
                                               "mode", "reason")),
}
# The kernel's names: enum compact_result as compaction_status_string prints it, enum
# migrate_mode and enum migrate_reason as mm_migrate_pages prints them.
STATUS_NAMES = ("not_suitable_zone", "skipped", "deferred", "no_suitable_page", "continue",
                "complete", "partial_skipped", "contended", "success")
MODE_NAMES = ("MIGRATE_ASYNC", "MIGRATE_SYNC_LIGHT", "MIGRATE_SYNC")
REASON_NAMES = {"compaction": "compaction", "memory_failure": "memory_failure",
                "hotunplug": "memory_hotplug", "syscall": "syscall_or_cpuset",
                "numa": "numa_misplaced", "cma": "contig_range"}


def _log(stats):
    if len(stats) <= migrate.NR_MS:
        return np.empty((0, migrate.TR_WORDS), dtype=np.int64)
    n = int(stats[migrate.TR_LEN])
    return stats[migrate.TR_BASE:migrate.TR_BASE + n * migrate.TR_WORDS].reshape(
        n, migrate.TR_WORDS)


def lost(stats):
    """Records dropped because the log was full."""
    return int(stats[migrate.TR_LOST]) if len(stats) > migrate.NR_MS else 0


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
