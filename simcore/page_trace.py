"""The simulator's own kmem:mm_page_alloc and kmem:mm_page_free records, written as a trace.

The kernel emits mm_page_alloc in __alloc_pages_noprof() (pfn, order, gfp_flags, migratetype;
pfn -1 when the allocation failed) and mm_page_free in free_pages_prepare() (pfn, order)
(include/trace/events/kmem.h). Machine.trace_page_events() logs the same two events for the
allocations and frees its callers make (alloc, alloc_many, free, free_many, and fault_anon
through alloc_many), one record per folio, on the CPU the call ran on. save() writes them in
the trace format of `foliobench live record` (simcore.trace_file) with the snapshot the machine
was made from, so that `foliobench replay` drives them against a fresh twin of that snapshot.
With Machine.trace_events() on as well, the compaction, migration and fallback tracepoints go
into the file too, in the kernel's field types, as `live record` stores them.

Simplified:
- Only the callers' allocations and frees are logged. What the simulator does on its own
  (compaction's target pages and freed sources, reclaim, swap, khugepaged) is not: a replay on
  the same snapshot, profile and strategy does that work again itself, which is why the replay
  reproduces the run.
- The kind of a folio is carried the way the kernel carries it, in the gfp flags and the
  migratetype (gfp_of()). anon, file, reclaimable slab, compound unmovable slab and kernel
  pages round-trip; shmem, hugetlb, pagetable, order-0 unmovable slab and page flags do not
  (counted as `inexact` in the header).
- Records carry their sequence number as ts; tick(), split() and the other calls are not
  logged, so a run that used them is not reproduced by its trace.
"""
import numpy as np

from . import snapshot_file, trace_file, tracepoints
from .mmzone import KIND_NAMES, MIGRATETYPE_NAMES

# include/linux/gfp_types.h bit positions (6.18) of the flags the replay reads
GFP_MOVABLE = 1 << 3
GFP_RECLAIMABLE = 1 << 4
GFP_ZERO = 1 << 8
GFP_DIRECT_RECLAIM = 1 << 10
GFP_COMP = 1 << 18

ALLOC_FIELDS = {"pfn": "<u8", "order": "<u4", "gfp_flags": "<u8", "migratetype": "<i4"}
FREE_FIELDS = {"pfn": "<u8", "order": "<u4"}
NO_PFN = (1 << 64) - 1
SOURCE = "simcore"


def gfp_of(order, migratetype, kind, compact):
    """The gfp flags under which the kernel would make this request: __GFP_MOVABLE (with
    __GFP_ZERO for an anonymous fault) or __GFP_RECLAIMABLE from the migratetype, __GFP_COMP
    for a large slab, __GFP_DIRECT_RECLAIM when the caller may compact (the inverse of
    workloads.trace.request_of for the kinds that round-trip)."""
    gfp = GFP_DIRECT_RECLAIM if compact else 0
    if migratetype == 1:
        gfp |= GFP_MOVABLE | (GFP_ZERO if KIND_NAMES[kind] == "anon" else 0)
    elif migratetype == 2:
        gfp |= GFP_RECLAIMABLE
    elif KIND_NAMES[kind] == "slab" and order > 0:
        gfp |= GFP_COMP
    return gfp


def exact(order, migratetype, kind, flags):
    """True when a replay gets this request back as it was made (see the module docstring)."""
    name = KIND_NAMES[kind]
    if flags:
        return False
    if migratetype == 1:
        return name in ("anon", "file")
    if migratetype == 2:
        return name == "slab"
    return name == "kernel" or (name == "slab" and order > 0)


class PageEventLog:
    """mm_page_alloc and mm_page_free records in the order they happened."""

    def __init__(self):
        self._allocs = []           # (seq, cpu, pfn, order, gfp, migratetype) arrays per call
        self._frees = []            # (seq, cpu, pfn, order)
        self.seq = 0
        self.inexact = 0

    def _seqs(self, n):
        s = np.arange(self.seq, self.seq + n, dtype=np.uint64)
        self.seq += n
        return s

    def alloc(self, cpu, pfns, order, migratetype, kind, flags, compact):
        """One record per requested folio: `pfns` granted, -1 (None) for a failure."""
        pfns = np.atleast_1d(np.asarray(pfns, dtype=np.int64))
        n = len(pfns)
        if not n:
            return
        pfn = np.where(pfns < 0, np.uint64(NO_PFN), pfns.astype(np.uint64))
        self._allocs.append((self._seqs(n), np.full(n, cpu, np.uint16), pfn,
                             np.full(n, order, np.uint32),
                             np.full(n, gfp_of(order, migratetype, kind, compact), np.uint64),
                             np.full(n, migratetype, np.int32)))
        if not exact(order, migratetype, kind, flags):
            self.inexact += n

    def free(self, cpu, pfns, orders):
        pfns = np.atleast_1d(np.asarray(pfns, dtype=np.int64))
        n = len(pfns)
        if not n:
            return
        self._frees.append((self._seqs(n), np.full(n, cpu, np.uint16), pfns.astype(np.uint64),
                            np.atleast_1d(np.asarray(orders)).astype(np.uint32)))

    def __len__(self):
        return self.seq

    def events(self):
        """{event: {column: array}} as simcore.trace_file stores them."""
        def cat(chunks, i, dtype):
            return np.concatenate([c[i] for c in chunks]) if chunks else np.empty(0, dtype)
        a, f = self._allocs, self._frees
        return {
            "mm_page_alloc": {"ts": cat(a, 0, np.uint64), "cpu": cat(a, 1, np.uint16),
                              "pfn": cat(a, 2, np.uint64), "order": cat(a, 3, np.uint32),
                              "gfp_flags": cat(a, 4, np.uint64),
                              "migratetype": cat(a, 5, np.int32)},
            "mm_page_free": {"ts": cat(f, 0, np.uint64), "cpu": cat(f, 1, np.uint16),
                             "pfn": cat(f, 2, np.uint64), "order": cat(f, 3, np.uint32)},
        }


def save(path, machine, snapshot):
    """Write `machine`'s page-event log as a trace file (atomically), with `snapshot` (a path,
    bytes or simcore.snapshot_file.Snapshot): the snapshot the machine was made from, before
    anything the log holds. The header names the machine's profile, strategy, seed and CPUs,
    which a replay uses unless told otherwise. ValueError when tracing is off."""
    log = machine.page_event_log
    if log is None:
        raise ValueError("page events are not being traced; call trace_page_events() first")
    if isinstance(snapshot, snapshot_file.Snapshot):
        blob = _snapshot_bytes(snapshot)
    elif isinstance(snapshot, (bytes, bytearray)):
        blob = bytes(snapshot)
    else:
        with open(snapshot, "rb") as f:
            blob = f.read()
    snapshot_file.load(blob)                # refuses what is not a snapshot
    header = {
        "kernel": SOURCE, "source": SOURCE, "profile": machine.profile.name,
        "strategy": machine.strategy.name, "seed": machine.seed, "cpus": machine.cpus,
        "records": len(log), "lost_events": 0, "inexact": log.inexact,
        "events": {"mm_page_alloc": {"system": "kmem", "id": 0, "fields": ALLOC_FIELDS},
                   "mm_page_free": {"system": "kmem", "id": 1, "fields": FREE_FIELDS}},
        "migratetypes": list(MIGRATETYPE_NAMES[:3]),
    }
    events = log.events()
    recs = machine.trace_records()
    if recs or machine.trace_lost():
        # the compaction, migration and fallback tracepoints too (Machine.trace_events())
        events.update(tracepoints.columns(recs))
        header["lost_events"] = machine.trace_lost()
        for i, (name, fields) in enumerate(tracepoints.FIELD_TYPES.items()):
            system = tracepoints.system_of(name)
            header["events"][name] = {"system": system, "id": 2 + i, "fields": fields}
    trace_file.save(path, header, events, blob)


def _snapshot_bytes(snap):
    import os
    import tempfile
    fd, tmp = tempfile.mkstemp(suffix=".npz")
    os.close(fd)
    try:
        snapshot_file.save(tmp, snap)
        with open(tmp, "rb") as f:
            return f.read()
    finally:
        os.unlink(tmp)
