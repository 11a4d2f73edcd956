"""The figures `foliobench fidelity` compares, computed the same way for the live kernel and the
twin, and how a twin figure is judged against the live spread.

Figures of one run of one experiment:
- granted_share (%): huge pages or 64K folios granted / asked (None where nothing is asked).
- compaction_success (%): compact_success / compact_stall (None without a stall).
- compact_stall, pgmigrate_success, compact_migrate_scanned, compact_free_scanned: counter
  deltas over the action.
- large_kept (%): pages in large anonymous folios (kpageflags ANON with COMPOUND_HEAD or
  COMPOUND_TAIL, not HUGE) after the action / before it. On the live kernel this counts every
  process's folios, so others' activity moves it too.
- unusable_after: the Normal zone's unusable free space index at order 9 after the action
  (0..1, __fragmentation_index()'s companion in mm/vmstat.c).

Distances: points (twin - live median, x100 for the unusable index) for the shares and the
index; a factor for the counters, max(twin, 1) / max(live median, 1) (the floor of 1 keeps a
zero finite). A figure "agrees" when the twin lies within the live min..max; it meets the
acceptance bar of issue 16 when within POINTS_BAR points or within a factor of RATIO_BAR.
"""
import math
import statistics

import numpy as np

from simcore import vmstat as simvmstat
from simcore.mmzone import PAGEBLOCK_ORDER
from simcore.snapshot import KPF

COUNTERS = ("compact_stall", "pgmigrate_success", "compact_migrate_scanned",
            "compact_free_scanned")
RECORDED_COUNTERS = COUNTERS + (
    "compact_success", "compact_fail", "compact_isolated", "pgmigrate_fail",
    "compact_daemon_wake", "compact_daemon_migrate_scanned", "compact_daemon_free_scanned",
    "thp_fault_alloc", "thp_fault_fallback", "htlb_buddy_alloc_success",
    "htlb_buddy_alloc_fail", "thp_migration_success", "thp_migration_split")
SHARES = ("granted_share", "compaction_success", "large_kept")
FIGURES = ("granted_share", "compaction_success") + COUNTERS + ("large_kept", "unusable_after")
POINTS = SHARES + ("unusable_after",)
POINTS_BAR = 10.0
RATIO_BAR = 1.5
UNUSABLE_ZONE = "Normal"

_LARGE = np.uint64((1 << KPF["compound_head"]) | (1 << KPF["compound_tail"]))
_ANON = np.uint64(1 << KPF["anon"])
_HUGE = np.uint64(1 << KPF["huge"])


def large_anon_pages(kpageflags):
    """Pages in large anonymous folios (not hugetlb) in a kpageflags array."""
    w = np.asarray(kpageflags, dtype=np.uint64)
    return int(np.count_nonzero(((w & _LARGE) != 0) & ((w & _ANON) != 0) & ((w & _HUGE) == 0)))


def unusable_index(buddy, zone=UNUSABLE_ZONE, order=PAGEBLOCK_ORDER):
    """Unusable free space index (0..1) of `zone` in a {zone: free blocks per order} table."""
    nr = buddy.get(zone)
    if nr is None:
        return None
    return simvmstat.unusable_free_index(np.asarray(nr, dtype=np.int64), order) / 1000


def figures(counters, outcome, large_before, large_after, buddy_after):
    """One run's figures (see the module docstring) from its counter deltas, outcome
    ({"asked", "granted"} or {}), large anonymous pages before/after and buddyinfo after."""
    out = {c: int(counters.get(c, 0)) for c in COUNTERS}
    asked = outcome.get("asked")
    out["granted_share"] = 100.0 * outcome["granted"] / asked if asked else None
    stall = counters.get("compact_stall", 0)
    out["compaction_success"] = (100.0 * counters.get("compact_success", 0) / stall
                                 if stall else None)
    out["large_kept"] = 100.0 * large_after / large_before if large_before else None
    out["unusable_after"] = unusable_index(buddy_after)
    return out


def spread(values):
    """(median, min, max) of the values that are not None; None when there are none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def distance(figure, twin, live_median):
    """Points (shares, index) or a factor (counters); None when either side is missing."""
    if twin is None or live_median is None:
        return None
    if figure in POINTS:
        scale = 100.0 if figure == "unusable_after" else 1.0
        return (twin - live_median) * scale
    return max(twin, 1) / max(live_median, 1)


def meets_bar(figure, dist):
    """Within POINTS_BAR points or a factor of RATIO_BAR (None when not comparable)."""
    if dist is None:
        return None
    if figure in POINTS:
        return abs(dist) <= POINTS_BAR
    return 1 / RATIO_BAR <= dist <= RATIO_BAR


def within_spread(twin, live):
    if twin is None or live is None:
        return None
    return live[1] <= twin <= live[2]


def error(figure, dist):
    """A non-negative error for the gate: |points|, or |log2(factor)| for counters."""
    if dist is None:
        return float("nan")
    if figure in POINTS:
        return abs(dist)
    return abs(math.log2(dist))


def judge(figure, live_values, twin_values):
    """The comparison of one figure: live spread, twin median, distance, verdicts."""
    live = spread(live_values)
    twin = spread(twin_values)
    twin_med = twin[0] if twin else None
    dist = distance(figure, twin_med, live[0] if live else None)
    return {"figure": figure, "live": live, "twin": twin_med,
            "twin_spread": twin, "distance": dist,
            "within_spread": within_spread(twin_med, live), "meets_bar": meets_bar(figure, dist),
            "error": error(figure, dist)}
