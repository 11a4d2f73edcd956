"""trace:FILE: a recorded page-allocator stream (`foliobench live record`) replayed on the twin
of the memory it started from.

Every mm_page_alloc of the recording becomes an allocation of the same order, with a
migratetype, folio kind and compaction permission taken from its gfp flags and migratetype;
every mm_page_free frees the simulated folio that the allocation at that PFN became, wherever
the simulator put it (recorded pfn -> simulated folio handle, which survives migration). The
simulator places pages its own way; how often it picks the recorded pfn, and where it first
departs, is the placement divergence.

Simplified:
- The kernel takes most order-0..3 pages from per-CPU lists. simcore on this branch has none:
  the recorded CPU is passed to Machine.alloc(cpu=...) only where a simcore with per-CPU
  lists takes that argument.
- mm_page_free_batched repeats an mm_page_free of the same page (free_unref_folios() calls
  free_pages_prepare(), which emits mm_page_free, and then emits the batched event), so only
  mm_page_free is replayed. mm_page_pcpu_drain moves pages between lists, not owners.
- A page freed during the recording but allocated before it is looked up in the start
  snapshot: the twin's folio headed there (or containing it, split first) is freed.
- Compaction's frees are not the owners' (MigrationFrees): migrate_pages() frees each source
  folio it moved (migrate_folio_done() drops the last reference; mm_page_free) between the
  migrate scanner's mm_compaction_isolate_migratepages events and the batch's
  mm_migrate_pages, and compact_zone() hands back the free pages its free scanner isolated
  but did not use (release_free_list(), mm_page_free) before mm_compaction_end. The target
  pages come from the free scanner without an mm_page_alloc. So a free inside an open
  migration window, of a pfn the migrate scanner isolated, moves the owner's folio instead of
  freeing it: it stays allocated in the twin, its kernel pfn unknown, as "moved". A free
  inside a compaction run (begin..end on that CPU) whose page has no owner is a release, not
  replayed. A later free that matches no owner frees a moved folio of the same order: one
  whose compaction run's free scanner (mm_compaction_isolate_freepages) scanned that
  pageblock, else the oldest. Migrations outside compaction (NUMA, mbind, alloc_contig_range)
  get their targets with mm_page_alloc, so their frees stay owner frees.
- Tracing starts before the snapshot is read, so a page allocated during the read has its
  event even when the read saw it allocated already: a recorded allocation over a folio of the
  start state frees that folio first (start_state_superseded).
- gfp: __GFP_MOVABLE -> anon with __GFP_ZERO (a user fault), else file (page cache);
  __GFP_RECLAIMABLE -> slab, other
  unmovable -> slab when compound (__GFP_COMP) else kernel; direct compaction only with
  __GFP_DIRECT_RECLAIM (gfp_compaction_allowed()). Failed recorded allocations (pfn -1) are
  counted, not replayed.
"""
import collections
import dataclasses
import functools
import inspect
import os

import numpy as np

from simcore import page_trace, trace_file
from simcore.mmzone import PAGE_HEAD

from .backend import SimBackend, Unsupported
from .base import Workload

GFP_MOVABLE = 1 << 3
GFP_RECLAIMABLE = 1 << 4
GFP_DIRECT_RECLAIM = 1 << 10
GFP_ZERO = 1 << 8
GFP_COMP = 1 << 18
NO_PFN = np.uint64((1 << 64) - 1)
MIGRATETYPES = ("unmovable", "movable", "reclaimable")
TRACE_CAPACITY = 1 << 21            # simulator tracepoint records kept during a traced replay
TICK_NS = 100_000_000                 # kcompactd and time-based work every 100 ms of trace


def request_of(order, migratetype, gfp):
    """(migratetype name, kind, compact) of one recorded request (see the module docstring)."""
    mt = MIGRATETYPES[migratetype] if 0 <= migratetype < len(MIGRATETYPES) else \
        ("movable" if gfp & GFP_MOVABLE else "reclaimable" if gfp & GFP_RECLAIMABLE
         else "unmovable")
    if mt == "movable":
        # user faults zero their pages (GFP_HIGHUSER_MOVABLE | __GFP_ZERO); the page cache
        # (readahead, writes) does not
        kind = "anon" if gfp & GFP_ZERO else "file"
    elif mt == "reclaimable":
        kind = "slab"
    else:
        kind = "slab" if gfp & GFP_COMP and order > 0 else "kernel"
    return mt, kind, bool(gfp & GFP_DIRECT_RECLAIM) and order > 0


# what each entry of a Stream is (Stream.kind)
K_FREE, K_ALLOC, K_BEGIN, K_END, K_ISOLATE_MIGRATE, K_ISOLATE_FREE, K_MIGRATE = range(7)
# the compaction events a replay follows, by kind: (event, column read as pfn, as end)
COMPACTION_EVENTS = ((K_BEGIN, "mm_compaction_begin", "zone_start", "zone_end"),
                     (K_END, "mm_compaction_end", "zone_start", "zone_end"),
                     (K_ISOLATE_MIGRATE, "mm_compaction_isolate_migratepages", "start_pfn",
                      "end_pfn"),
                     (K_ISOLATE_FREE, "mm_compaction_isolate_freepages", "start_pfn",
                      "end_pfn"),
                     (K_MIGRATE, "mm_migrate_pages", None, None))


@dataclasses.dataclass
class Stream:
    """Allocations, frees and the compaction events that explain frees, in trace order:
    kind (K_*), pfn (an isolate event's start_pfn), end (its end_pfn), order, ..."""
    ts: np.ndarray
    is_alloc: np.ndarray
    pfn: np.ndarray
    order: np.ndarray
    migratetype: np.ndarray
    gfp: np.ndarray
    cpu: np.ndarray
    failed_recorded: int
    kind: np.ndarray = None
    end: np.ndarray = None


def stream_of(trace, keep_failed=False):
    """The allocations, frees and compaction events (COMPACTION_EVENTS, those recorded)
    merged by timestamp; failed allocations (pfn -1) are left out unless `keep_failed`."""
    a = trace.events["mm_page_alloc"]
    f = trace.events["mm_page_free"]
    ok = a["pfn"] != NO_PFN
    failed = int((~ok).sum())
    if keep_failed:
        ok = np.ones(len(ok), dtype=bool)
    parts = [(K_ALLOC, a["ts"][ok], a["pfn"][ok], a["order"][ok], a["migratetype"][ok],
              a["gfp_flags"][ok], a["cpu"][ok], None),
             (K_FREE, f["ts"], f["pfn"], f["order"], None, None, f["cpu"], None)]
    for kind, name, lo, hi in COMPACTION_EVENTS:
        cols = trace.events.get(name)
        if cols and len(cols["ts"]):
            parts.append((kind, cols["ts"], cols[lo] if lo else None, None, None, None,
                          cols["cpu"], cols[hi] if hi else None))
    ts = np.concatenate([p[1] for p in parts])
    order = np.argsort(ts, kind="stable")

    def col(i, dtype=np.int64):
        return np.concatenate([np.zeros(len(p[1]), dtype) if p[i] is None
                               else p[i].astype(dtype) for p in parts])[order]
    kind = np.concatenate([np.full(len(p[1]), p[0], np.int8) for p in parts])[order]
    return Stream(ts[order], kind == K_ALLOC, col(2), col(3), col(4), col(5), col(6), failed,
                  kind, col(7))


class MigrationFrees:
    """Which recorded frees are compaction's rather than the owners' (see the module
    docstring), and the folios compaction moved to pfns the trace does not give.

    Per CPU: the compaction run open there (mm_compaction_begin .. _end) and the migrate
    scanner's ranges since that CPU's last mm_migrate_pages (the open migration window). A
    moved folio is kept by handle and order, filed under its run and under every pageblock that
    run's free scanner isolated from."""

    def __init__(self):
        self.run_on = {}              # cpu -> run id of the compaction run open there
        self.window = {}              # cpu -> [(start_pfn, end_pfn)] isolated, not migrated yet
        self.next_run = 0
        self.run_blocks = {}          # run id -> set of pageblocks its free scanner isolated from
        self.by_block = {}            # pageblock -> [run ids]
        self.moved = {}               # (run id, order) -> [handles], oldest first
        self.moved_order = {}         # order -> deque of handles, oldest first (fallback)
        self.moved_live = set()       # handles moved and not freed since

    def event(self, kind, cpu, start, end):
        if kind == K_BEGIN:
            self.run_on[cpu] = self._new_run()
            self.window.pop(cpu, None)
        elif kind == K_END:
            self.run_on.pop(cpu, None)
            self.window.pop(cpu, None)
        elif kind == K_ISOLATE_MIGRATE:
            self.window.setdefault(cpu, []).append((start, end))
        elif kind == K_ISOLATE_FREE:
            run = self.run_on.get(cpu)
            if run is None:
                run = self.run_on[cpu] = self._new_run()
            for block in range(start >> 9, (max(end, start + 1) - 1 >> 9) + 1):
                if block not in self.run_blocks[run]:
                    self.run_blocks[run].add(block)
                    self.by_block.setdefault(block, []).append(run)
        elif kind == K_MIGRATE:
            if self.window.pop(cpu, None) is None:
                # the compacting task moved to this CPU mid-batch: its window is elsewhere
                self.window.clear()

    def _new_run(self):
        self.next_run += 1
        self.run_blocks[self.next_run] = set()
        return self.next_run

    def is_migration_free(self, pfn):
        """pfn lies in an open migration window (on any CPU: isolated pages belong to the
        compacting task, which may have moved CPU)."""
        for ranges in self.window.values():
            for lo, hi in ranges:
                if lo <= pfn < hi:
                    return True
        return False

    def in_run(self, cpu):
        return cpu in self.run_on

    def move(self, handle, order, cpu):
        """The folio `handle` was migrated by the compaction run open on `cpu`."""
        run = self.run_on.get(cpu, 0)
        self.moved.setdefault((run, order), []).append(handle)
        self.moved_order.setdefault(order, collections.deque()).append(handle)
        self.moved_live.add(handle)

    def take(self, pfn, order):
        """A moved folio of `order` for a free of `pfn` that matches no owner: one whose run's
        free scanner isolated from pfn's pageblock (the latest such run first), else the
        oldest moved folio of that order; None when there is none."""
        for run in reversed(self.by_block.get(pfn >> 9, ())):
            handles = self.moved.get((run, order))
            while handles:
                h = handles.pop()
                if h in self.moved_live:
                    self.moved_live.discard(h)
                    return h
        pool = self.moved_order.get(order)
        while pool:
            h = pool.popleft()
            if h in self.moved_live:
                self.moved_live.discard(h)
                return h
        return None


class Replayer:
    """The state of one replay on one simcore Machine: recorded pfn -> (handle, order).

    positional: the trace was written by the simulator (simcore.page_trace), whose placement
    a replay on the same snapshot, profile and strategy repeats, so a free names the simulated
    folio by where it is now (compaction may have moved it since its allocation): the folio
    headed at the recorded pfn is freed."""

    def __init__(self, machine, positional=False):
        self.m = machine
        self.positional = positional
        # per-CPU page lists (a simcore with CPUs takes alloc(..., cpu=N)): the recorded CPU,
        # folded onto the twin's CPUs
        self.per_cpu = "cpu" in inspect.signature(machine.alloc).parameters
        self.nr_cpus = int(getattr(machine, "cpus", 1))
        folios = machine.folios()
        self.start_heads = folios["pfn"]
        self.start_orders = folios["order"]
        self.start_handles = folios["handle"]
        self.used_start = set()
        self.live = {}
        self.mig = MigrationFrees()
        self.figures = dict.fromkeys((
            "allocs", "allocs_granted", "allocs_failed", "same_pfn", "frees", "frees_matched",
            "frees_of_start_state", "frees_unmatched", "folios_split", "pages_allocated",
            "pages_freed", "start_state_superseded", "large_allocs", "large_same_pfn",
            "frees_migrated", "frees_compaction_released", "frees_of_moved",
            "migration_frees_unowned"), 0)
        self.first_divergence = None

    def alloc(self, index, pfn, order, mt, gfp, ts, cpu=0):
        m, fig = self.m, self.figures
        fig["allocs"] += 1
        fig["large_allocs"] += order > 0
        mtn, kind, compact = request_of(order, mt, gfp)
        if not self.positional:
            self._supersede(pfn, order)
        if self.per_cpu:
            got = m.alloc(order, mtn, kind, compact=compact, cpu=cpu % self.nr_cpus)
        else:
            got = m.alloc(order, mtn, kind, compact=compact)
        self.used_start.add(pfn)
        if got is None:
            fig["allocs_failed"] += 1
            self.live.pop(pfn, None)
            if pfn < 0:                     # failed when recorded too (a simulator's trace)
                return
            if self.first_divergence is None:
                self.first_divergence = {"index": index, "ts": ts, "recorded_pfn": pfn,
                                         "order": order, "simulated_pfn": None}
            return
        fig["allocs_granted"] += 1
        fig["pages_allocated"] += 1 << order
        if got == pfn:
            fig["same_pfn"] += 1
            fig["large_same_pfn"] += order > 0
        elif self.first_divergence is None:
            self.first_divergence = {"index": index, "ts": ts, "recorded_pfn": pfn,
                                     "order": order, "simulated_pfn": int(got)}
        self.live[pfn] = (int(m.pgdat.mem_map["next"][got]), order)

    def _supersede(self, pfn, order):
        """The kernel allocated [pfn, pfn + 2^order), so those pages were free then: a folio of
        the start state there was freed unseen (allocated while the snapshot was read, after
        its pages were, or moved by compaction) and goes now."""
        heads = self.start_heads
        lo = int(np.searchsorted(heads, pfn, side="right")) - 1
        hi = int(np.searchsorted(heads, pfn + (1 << order), side="left"))
        for i in range(max(lo, 0), hi):
            head = int(heads[i])
            if head + (1 << int(self.start_orders[i])) <= pfn or head in self.used_start:
                continue
            self.used_start.add(head)
            table = self.m.pgdat.folio_pfn
            handle = int(self.start_handles[i])
            # only where it still is: a folio the twin's compaction moved away is not in the way
            if handle < len(table) and table[handle] == head:
                self.m.free(head)
                self.figures["start_state_superseded"] += 1

    def _owner(self, pfn):
        """(recorded head, handle, order, of the start state) of the live or start-state folio
        holding `pfn`."""
        for k in range(0, 11):
            head = pfn & ~((1 << k) - 1)
            got = self.live.get(head)
            if got is not None and got[1] >= k:
                return head, got[0], got[1], False
        i = int(np.searchsorted(self.start_heads, pfn, side="right")) - 1
        if i >= 0:
            head = int(self.start_heads[i])
            order = int(self.start_orders[i])
            if pfn < head + (1 << order) and head not in self.used_start:
                self.used_start.add(head)
                return head, int(self.start_handles[i]), order, True
        return None

    def _free_on(self, where, cpu):
        if self.per_cpu:
            self.m.free(where, cpu=cpu % self.nr_cpus)
        else:
            self.m.free(where)

    def _free_positional(self, pfn, order, cpu):
        fig = self.figures
        mem_map = self.m.pgdat.mem_map
        if not 0 <= pfn < len(mem_map) or mem_map["type"][pfn] != PAGE_HEAD \
                or int(mem_map["order"][pfn]) != order:
            fig["frees_unmatched"] += 1
            return
        self._free_on(pfn, cpu)
        fig["frees_matched"] += 1
        fig["pages_freed"] += 1 << order

    def _holder(self, pfn, order):
        """(owner found, handle, of the start state): the simulated folio that the recorded
        [pfn, pfn + 2^order) is, split off the folio it was allocated in when that was larger;
        handle None when the owner's folio is gone from the twin."""
        owner = self._owner(pfn)
        if owner is None:
            return False, None, False
        head, handle, have, start = owner
        self.live.pop(head, None)
        table = self.m.pgdat.folio_pfn
        if handle >= len(table) or table[handle] < 0:
            return True, None, start
        if have > order or head != pfn:
            self._split(head, int(table[handle]), have, order)
            got = self.live.pop(pfn, None)
            return True, None if got is None else got[0], start
        return True, handle, start

    def free(self, pfn, order, cpu=0):
        fig = self.figures
        fig["frees"] += 1
        if self.positional:
            self._free_positional(pfn, order, cpu)
            return
        if self.mig.is_migration_free(pfn):
            self._migrated(pfn, order, cpu)
            return
        found, handle, start = self._holder(pfn, order)
        fig["frees_of_start_state"] += start
        if not found:
            if self.mig.in_run(cpu):
                fig["frees_compaction_released"] += 1
                return
            handle = self.mig.take(pfn, order)
            if handle is not None:
                fig["frees_of_moved"] += 1
        table = self.m.pgdat.folio_pfn
        if handle is None or handle >= len(table) or table[handle] < 0:
            fig["frees_unmatched"] += 1
            return
        self._free_on(int(table[handle]), cpu)
        fig["frees_matched"] += 1
        fig["pages_freed"] += 1 << order

    def _migrated(self, pfn, order, cpu):
        """Compaction freed the source of a folio it moved: the owner's folio stays, moved
        (MigrationFrees)."""
        _found, handle, _start = self._holder(pfn, order)
        if handle is None:
            handle = self.mig.take(pfn, order)      # moved before, and moved again
        if handle is None:
            self.figures["migration_frees_unowned"] += 1
            return
        self.mig.move(handle, order, cpu)
        self.figures["frees_migrated"] += 1

    def compaction_event(self, kind, cpu, start, end):
        self.mig.event(kind, cpu, start, end)

    def _split(self, head, where, have, order):
        """Split the simulated folio of a recorded one freed in pieces; map every piece."""
        m = self.m
        mem_map = m.pgdat.mem_map
        to = order
        if int(mem_map["order"][where]) <= to:
            # the simulator split it already (compaction under legacy or split): its pieces are
            # the folios where the recorded pieces would be
            to = int(mem_map["order"][where])
        else:
            try:
                ok = m.split(where, to)
            except ValueError:            # anonymous order 1 does not exist: go to order 0
                to = 0
                ok = m.split(where, 0)
            if not ok:
                return
            self.figures["folios_split"] += 1
        for j in range(1 << (have - to)):
            at = where + (j << to)
            if at < len(mem_map) and mem_map["type"][at] == PAGE_HEAD:
                self.live[head + (j << to)] = (int(mem_map["next"][at]), int(mem_map["order"][at]))


def simulated(trace):
    """True for a trace the simulator wrote (simcore.page_trace)."""
    return trace.header.get("source") == page_trace.SOURCE


def replay(machine, trace, limit=None):
    """Drive `trace` (a simcore.trace_file.Trace) against `machine`: the Replayer's figures plus
    the share of allocations placed at the recorded pfn and the first divergence. A trace the
    simulator wrote replays its failed allocations too (they compacted when they were made),
    frees by position (Replayer) and runs no tick(): its ts are sequence numbers."""
    sim = simulated(trace)
    s = stream_of(trace, keep_failed=sim)
    r = Replayer(machine, positional=sim)
    n = len(s.ts) if limit is None else min(limit, len(s.ts))
    ts, kind, pfn, order = (s.ts[:n].tolist(), s.kind[:n].tolist(), s.pfn[:n].tolist(),
                            s.order[:n].tolist())
    mt, gfp, cpu, end = (s.migratetype[:n].tolist(), s.gfp[:n].tolist(), s.cpu[:n].tolist(),
                         s.end[:n].tolist())
    next_tick = ts[0] + TICK_NS if n and not sim else float("inf")
    for i in range(n):
        if ts[i] >= next_tick:
            machine.tick((ts[i] - next_tick) // 1_000_000 + TICK_NS // 1_000_000)
            next_tick = ts[i] + TICK_NS
        k = kind[i]
        if k == K_ALLOC:
            r.alloc(i, pfn[i], order[i], mt[i], gfp[i], ts[i], cpu[i])
        elif k == K_FREE:
            r.free(pfn[i], order[i], cpu[i])
        elif not sim:
            r.compaction_event(k, cpu[i], pfn[i], end[i])
    fig = dict(r.figures)
    fig["allocs_failed_recorded"] = s.failed_recorded
    fig["same_pfn_share"] = fig["same_pfn"] / fig["allocs"] if fig["allocs"] else float("nan")
    fig["large_same_pfn_share"] = fig["large_same_pfn"] / fig["large_allocs"] \
        if fig["large_allocs"] else float("nan")          # orders above 0
    fig["first_divergence"] = r.first_divergence
    return fig


class TwinSimBackend(SimBackend):
    """The simulator on the twin of a snapshot (bytes or path): a trace's own start state."""

    def __init__(self, mem=None, seed=0, strategy=None, profile=None, *, snapshot, trace=False,
                 **machine_kw):
        import simcore
        self.machine = simcore.Machine.from_snapshot(snapshot, seed=seed, compaction=strategy,
                                                     profile=profile)
        if trace:               # the simulator's tracepoints, for a comparison with the live ones
            self.machine.trace_events(True, capacity=TRACE_CAPACITY)
        self.rng = self.machine.rng
        self.node1 = None


@functools.lru_cache(maxsize=4)
def _load(path, mtime):
    return trace_file.load(path)


def load_trace(path):
    """The trace at `path` (cached per path and modification time)."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as exc:
        raise ValueError(f"trace {path!r} cannot be read: {exc.strerror or exc}") from None
    return _load(str(path), mtime)


def check_fits(trace, what="trace"):
    """ValueError when the twin of the trace's start snapshot would not fit in this host's
    free memory, checked from the snapshot's header before any work (sweep and compare check
    their workloads up front; simcore.snapshot.twin() refuses the same way when it builds)."""
    import io
    import json
    import zipfile

    from simcore import snapshot as snap_mod
    from simcore.machine import MAX_MEM
    from simcore.units import format_size
    try:
        with np.load(io.BytesIO(trace.snapshot), allow_pickle=False) as npz:
            nr = int(json.loads(npz["header"].tobytes().decode())["nr_pfns"])
    except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{what}: its start snapshot is not a readable foliobench snapshot "
                         f"({exc})") from None
    need = snap_mod.estimate_bytes(nr)
    available = snap_mod._available_bytes()
    if nr * 4096 > MAX_MEM or need > available:
        raise ValueError(f"{what}: its snapshot of {format_size(nr * 4096)} needs about "
                         f"{format_size(need)} to simulate; this host has "
                         f"{format_size(available)} free")


def trace_workload(path):
    """The Workload class replaying the trace at `path` (`trace:FILE` as a workload name);
    ValueError for a trace that cannot be read or whose twin would not fit here."""
    trace = load_trace(path)
    check_fits(trace, f"trace {path}")
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(path))

    class TraceWorkload(Workload):
        name = f"trace:{path}"
        description = f"replay of {path} (kernel {trace.kernel}, " \
                      f"{trace.count('mm_page_alloc')} allocations)"
        params = {}
        headline = ("same_pfn_share", "allocs_failed", "frees_unmatched")
        label = f"trace-{stem}"

        @staticmethod
        def backend_for(factory):
            """On the simulator, the trace's start snapshot (unless a twin was asked for)."""
            if getattr(factory, "func", factory) in (TwinSimBackend,) or \
                    "snapshot" in getattr(factory, "keywords", {}):
                return factory
            return functools.partial(TwinSimBackend, snapshot=trace.snapshot)

        def run(self, backend, p, extra):
            machine = getattr(backend, "machine", None)
            if machine is None or backend.name != "sim":
                raise Unsupported("a trace replays on the simulator only")
            fig = replay(machine, trace)
            extra["first_divergence"] = fig.pop("first_divergence")
            if machine.trace_lost() or machine.trace_records():
                extra["trace_records"] = machine.trace_records()
                extra["trace_lost"] = machine.trace_lost()
            fig["requested"] = fig["allocs"]
            fig["granted"] = fig["allocs_granted"]
            return fig

    return TraceWorkload
