"""What-if on a digital twin: one kernel operation applied to a captured machine's memory under
each compaction strategy (`foliobench replay FILE --action ...`).

Actions:
- compact_memory: echo 1 > /proc/sys/vm/compact_memory (Machine.compact()).
- hugetlb=N: grow the hugetlb pool by N 2 MiB pages (order-9 hugetlb folios, with direct
  compaction as alloc_buddy_hugetlb_folio()'s __GFP_RETRY_MAYFAIL allows).
- order9=N: N order-9 movable anonymous allocations (THP faults with compaction).
- fault=SIZE:COUNT: COUNT anonymous faults of mTHP size SIZE (e.g. 64K:1000), falling back to
  smaller orders down to 4K (Machine.fault_anon()).
Per strategy: what was granted, the counter deltas, buddyinfo and the unusable index after.
"""
import functools
import pathlib
import re

from simcore import Machine
from simcore import vm_event as ev
from simcore.mmzone import MAX_PAGE_ORDER, PAGE_SIZE, PAGEBLOCK_ORDER
from simcore.units import parse_size
from workloads.backend import ArenaBudget, SimBackend

from . import compaction_trace

COUNTERS = ("compact_stall", "compact_success", "compact_fail", "pgmigrate_success",
            "pgmigrate_fail", "compact_migrate_scanned", "compact_free_scanned",
            "compact_isolated", "thp_fault_alloc", "thp_fault_fallback",
            "htlb_buddy_alloc_success", "htlb_buddy_alloc_fail")
ACTION_HELP = "compact_memory | hugetlb=N | order9=N | fault=SIZE:COUNT"


def parse_action(text):
    """(name, argument) of an action string; ValueError naming what is allowed."""
    if text == "compact_memory":
        return "compact_memory", None
    m = re.fullmatch(r"(hugetlb|order9)=(\d+)", text or "")
    if m and int(m.group(2)) > 0:
        return m.group(1), int(m.group(2))
    m = re.fullmatch(r"fault=([0-9]+[KMG]?):(\d+)", text or "", re.IGNORECASE)
    if m and int(m.group(2)) > 0:
        size = parse_size(m.group(1), "fault size")
        order = (size // PAGE_SIZE).bit_length() - 1
        if size < PAGE_SIZE or size != PAGE_SIZE << order or order > MAX_PAGE_ORDER:
            raise ValueError(f"fault size {m.group(1)!r} must be a power of two from 4K to "
                             f"{(PAGE_SIZE << MAX_PAGE_ORDER) >> 20}M")
        return "fault", (order, int(m.group(2)))
    raise ValueError(f"action {text!r} is unknown; allowed: {ACTION_HELP} (N, COUNT > 0)")


def apply_action(machine, action):
    """Run `action` (from parse_action) on `machine`; {"asked": pages, "granted": pages, ...}."""
    name, arg = action
    if name == "compact_memory":
        return {"result": machine.compact()}
    if name in ("hugetlb", "order9"):
        kind = "hugetlb" if name == "hugetlb" else "anon"
        got = machine.alloc_many(arg, PAGEBLOCK_ORDER, "movable", kind)
        if name == "hugetlb":
            events = machine.pgdat.events
            events[ev.HTLB_BUDDY_ALLOC_SUCCESS] += len(got)
            events[ev.HTLB_BUDDY_ALLOC_FAIL] += arg - len(got)
        return {"asked": arg, "granted": int(len(got)), "granted_share": len(got) / arg}
    order, count = arg
    got = machine.fault_anon(count, [order])
    at_size = int(len(got.get(order, ())))
    return {"asked": count, "granted": at_size, "granted_share": at_size / count,
            "fallback_orders": {int(o): int(len(p)) for o, p in got.items() if o != order}}


def replay(path, action, strategies=(None,), profile=None, deferred="absent", trace=False):
    """One row per strategy: the action's outcome on a fresh twin of the snapshot at `path`.
    With `trace`, each row also has "compaction_runs" (foliobench.compaction_trace) and
    "trace_lost" from the twin's compaction and migration tracepoints."""
    parsed = parse_action(action)
    rows = []
    for strategy in strategies:
        machine = Machine.from_snapshot(path, profile=profile, compaction=strategy,
                                        deferred=deferred)
        before = machine.vmstat()
        buddy_before = machine.buddyinfo()
        if trace:
            machine.trace_events(True, capacity=1 << 20)
        outcome = apply_action(machine, parsed)
        machine.check()
        after = machine.vmstat()
        rows.append({
            "strategy": machine.strategy.name, "profile": machine.profile.name,
            "action": action, "outcome": outcome,
            "counters": {c: int(after.get(c, 0) - before.get(c, 0)) for c in COUNTERS},
            "buddyinfo_before": buddy_before, "buddyinfo_after": machine.buddyinfo(),
            "unusable_index_after": {z: round(v / 1000, 3) for z, v in
                                     machine.unusable_free_index().items()},
            "free_pages_after": machine.free_pages(),
        })
        if trace:
            rows[-1]["compaction_runs"] = compaction_trace.twin_runs(machine)
            rows[-1]["trace_lost"] = machine.trace_lost()
        del machine
    return rows


def format_rows(rows):
    lines = []
    for row in rows:
        o = row["outcome"]
        got = (f"granted {o['granted']} of {o['asked']} ({100 * o['granted_share']:.1f}%)"
               if "asked" in o else f"result {o['result']}")
        c = row["counters"]
        lines.append(f"{row['strategy']:>12} [{row['profile']}] {row['action']}: {got}; "
                     f"compact_stall {c['compact_stall']}, pgmigrate_success "
                     f"{c['pgmigrate_success']}, migrate_scanned {c['compact_migrate_scanned']}, "
                     f"free_scanned {c['compact_free_scanned']}; unusable index(order 9) after "
                     + ", ".join(f"{z} {v:.3f}" for z, v in row["unusable_index_after"].items()))
    return "\n".join(lines)



class TwinBackend(ArenaBudget, SimBackend):
    """The simulator backend on a snapshot's twin (`foliobench run W --snapshot FILE`): the
    workload starts from the captured memory instead of an empty machine. `mem` is ignored (the
    snapshot sets the size); Machine options a workload asks for (CMA, ZONE_MOVABLE) cannot be
    added to captured memory and are refused. arena_pages: beside a live run (`run --twin`),
    the workload is sized to the live arena and held to its budget (ArenaBudget)."""

    def __init__(self, mem=None, seed=0, strategy=None, profile=None, *, snapshot, swap=None,
                 deferred="absent", arena_pages=None, budget_hugetlb=True, **machine_kw):
        asked = {k: v for k, v in machine_kw.items() if v}
        if asked:
            raise ValueError(f"a twin cannot take machine options {sorted(asked)}; run this "
                             f"workload without --snapshot")
        # reclaim on, as SimBackend's machines: the captured page cache is reclaimable
        self.machine = Machine.from_snapshot(snapshot, seed=seed, compaction=strategy,
                                             profile=profile, deferred=deferred, reclaim=True)
        self.rng = self.machine.rng
        self.threads = self.machine.cpus        # one thread per CPU, as SimBackend's default
        if swap:
            self.machine.swapon(swap)
        self.node1 = None
        self.arena_pages = arena_pages
        self.budget_hugetlb = budget_hugetlb
        self.used_pages = self.arena_declined_pages = 0
        name = snapshot if isinstance(snapshot, str) else "a snapshot"
        self.notes = f"digital twin of {pathlib.Path(name).name}"


def twin_factory(snapshot, deferred="absent", arena_pages=None, budget_hugetlb=True):
    """A run_one() backend_factory building a twin of `snapshot` per run (the workload sized to
    `arena_pages` and held to its budget when given)."""
    return functools.partial(TwinBackend, snapshot=snapshot, deferred=deferred,
                             arena_pages=arena_pages, budget_hugetlb=budget_hugetlb)
