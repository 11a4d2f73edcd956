"""The figures every compaction run reports, from counters only (so the live backend's counter
deltas go through the same function as the simulator's).

compaction_metrics() takes /proc/vmstat-style deltas and, optionally, migrate_pages statistics,
allocation requests granted, fragmentation before/after and wall time. Ratios whose denominator
is zero are NaN: "no direct compaction happened" is not "compaction failed".
"""
import math

from .mmzone import PAGE_SIZE

GIB = 1 << 30


def ratio(num, den):
    """num / den, NaN when den is 0 (a share of nothing is unknown, not 0)."""
    return num / den if den else math.nan


def delta(after, before):
    """Counter deltas of two vmstat-style dicts (keys of `after`)."""
    return {k: after[k] - before.get(k, 0) for k in after}


def compaction_metrics(vmstat_delta, migration=None, requested=None, granted=None,
                       frag_before=None, frag_after=None, wall_s=None):
    """One row of figures.

    - compaction_success_rate: compact_success / compact_stall (mmtests' compaction efficiency)
    - highorder_success: granted / requested high-order allocations
    - migration_pages_per_s, migration_gib_per_s: base pages migrated per modelled (or, live,
      measured) second of migration
    - large_folio_preservation: of the large folios migration handled, the share that kept
      their order (moved whole) rather than being split for want of a target
    - compact_scan_efficiency: compact_migrate_scanned * 100 / compact_free_scanned (mmtests)
    - fragindex_9 / unusable_9 before and after: dicts {zone: value} at order 9, x1000
    - pages_migrated, sim_wall_s
    `migration` is Machine.migration_stats() deltas (time_ns, large_succeeded, nr_split), or
    for the live kernel a dict with time_ns measured around the phase."""
    v = vmstat_delta
    migrated = v.get("pgmigrate_success", 0)
    row = {
        "compact_stall": v.get("compact_stall", 0),
        "compact_success": v.get("compact_success", 0),
        "compact_fail": v.get("compact_fail", 0),
        "compaction_success_rate": ratio(v.get("compact_success", 0), v.get("compact_stall", 0)),
        "compact_scan_efficiency": ratio(100 * v.get("compact_migrate_scanned", 0),
                                          v.get("compact_free_scanned", 0)),
        "pages_migrated": migrated,
        "pages_migrate_failed": v.get("pgmigrate_fail", 0),
        "highorder_requested": requested if requested is not None else math.nan,
        "highorder_granted": granted if granted is not None else math.nan,
        "highorder_success": ratio(granted, requested) if requested is not None else math.nan,
    }
    time_ns = (migration or {}).get("time_ns", 0)
    row["migration_time_s"] = time_ns / 1e9
    row["migration_pages_per_s"] = ratio(migrated, time_ns / 1e9)
    row["migration_gib_per_s"] = ratio(migrated * PAGE_SIZE / GIB, time_ns / 1e9)
    whole = (migration or {}).get("large_succeeded", 0)
    split = (migration or {}).get("nr_split", 0)
    row["large_folios_migrated_whole"] = whole
    row["large_folios_split"] = split
    row["large_folio_preservation"] = ratio(whole, whole + split)
    for name, value in (("before", frag_before), ("after", frag_after)):
        if value is not None:
            row[f"fragindex_9_{name}"] = value.get("fragindex", math.nan)
            row[f"unusable_9_{name}"] = value.get("unusable", math.nan)
    if wall_s is not None:
        row["sim_wall_s"] = wall_s
    return row


def fragmentation_at_order9(machine):
    """{"fragindex": worst zone's fragmentation index x1000, "unusable": worst zone's unusable
    free space index x1000} at order 9, for compaction_metrics' before/after."""
    frag = machine.fragmentation_index(9)
    unusable = machine.unusable_free_index(9)
    return {"fragindex": max(frag.values()), "unusable": max(unusable.values())}
