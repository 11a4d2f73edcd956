"""Feature-matrix probes: one per subsystem, each driving any Backend with folios of one size and
returning the evidence a verdict is made from.

A probe allocates its folios, snapshots the counters (/proc/vmstat names plus the backend's
extra counters: per-size mTHP stats, KSM, memory-failure, modelled or measured time), runs the
subsystem once, and reports:

- attempted / succeeded, in the probe's unit (pages, folios or allocations): the success share;
- large_folios and kept_order: of the large folios it handled, the share that still have their
  order afterwards (None for 4K, or where order is not the question, e.g. khugepaged's
  targets), and split_to: the orders they ended at;
- cost_ns and bytes: modelled (simulator) or measured (live) time of the subsystem's work and
  the bytes it handled, for cost per byte against base pages;
- counters: every counter that moved, as deltas; sample: folios of the size used.

A step the backend cannot do raises workloads.backend.Unsupported; the caller turns that into an
"untested" cell with the reason. A size where the question does not arise (compaction never
moves a pageblock-sized folio; collapsing to 4K) is untested with that reason, from
not_applicable(). Every probe is deterministic for a given backend and seed.
"""
import dataclasses

import numpy as np

from simcore.metrics import delta
from simcore.mmzone import HPAGE_PMD_ORDER, PAGE_SIZE, PAGEBLOCK_ORDER

from .backend import Unsupported

SAMPLE_PAGES = 4096           # 16 MiB of folios per cell
MIN_FOLIOS = 8
HIGH_ORDER = PAGEBLOCK_ORDER  # what compaction is asked to make room for


def _size(order):
    kib = (PAGE_SIZE << order) >> 10
    return f"{kib >> 10}M" if kib >= 1024 else f"{kib}K"


def sample_count(order):
    return max(SAMPLE_PAGES >> order, MIN_FOLIOS)


@dataclasses.dataclass(frozen=True)
class Probe:
    name: str
    label: str
    run: object                       # run(backend, order, seed) -> evidence dict
    sim: dict = dataclasses.field(default_factory=dict)   # SimBackend arguments it needs
    not_applicable: object = None     # order -> reason or None
    doc: str = ""


class _Snapshot:
    """Counters before a step; delta() afterwards keeps what moved."""

    def __init__(self, backend):
        self.backend = backend
        self.before = backend.counters()
        self.extra = backend.extra_counters()

    def delta(self):
        # the live backend's counters() repeat the per-size stats as mthp_<size>_<stat>; the
        # evidence keeps one spelling, the sysfs path of extra_counters()
        d = {k: v for k, v in delta(self.backend.counters(), self.before).items()
             if not k.startswith("mthp_")}
        d.update(delta(self.backend.extra_counters(), self.extra))
        return {k: v for k, v in d.items() if v}


def _kept(backend, handles, order):
    """(kept_order share, {order: count}) of the folios behind `handles`."""
    if order == 0 or not len(handles):
        return None, {}
    orders = backend.folio_orders(handles)
    values, counts = np.unique(orders, return_counts=True)
    return float((orders == order).mean()), {int(v): int(c) for v, c in zip(values, counts)}


def _evidence(attempted, succeeded, unit, order, sample, counters, cost_ns, nbytes,
              kept=None, split_to=None, large=None, **notes):
    out = {"attempted": int(attempted), "succeeded": int(succeeded), "unit": unit,
           "success": succeeded / attempted if attempted else None,
           "large_folios": int(large if large is not None else (sample if order else 0)),
           "kept_order": kept, "split_to": split_to or {}, "sample": int(sample),
           "cost_ns": float(cost_ns), "bytes": int(nbytes), "counters": counters}
    out.update(notes)
    return out


def _alloc_exact(backend, count, order):
    # live: order 9 with compact=True would be a hugetlb page; the probes want THPs
    handles = backend.alloc(count, order, compact=not backend.host_memory)
    if len(handles) < count:
        raise Unsupported(f"only {len(handles)} of {count} {_size(order)} folios could be "
                          f"allocated for the sample")
    return handles


def _cost(d, *keys):
    return sum(d.get(k, 0) for k in keys)


# --- migration-based probes ---------------------------------------------------------------

def probe_migration(backend, order, seed):
    if backend.host_memory:
        return _in_place(backend, order, "migration")
    n = sample_count(order)
    handles = _alloc_exact(backend, n, order)
    snap = _Snapshot(backend)
    failed = backend.migrate(handles, mode="sync")
    d = snap.delta()
    kept, split_to = _kept(backend, handles, order)
    pages = n << order
    moved = d.get("pgmigrate_success", (n - failed) << order)
    return _evidence(pages, min(moved, pages), "pages", order, n, d,
                     _cost(d, "migrate_time_ns"), moved * PAGE_SIZE, kept, split_to,
                     folios_failed=int(failed))


def _fill_half(backend, order):
    """Fill the arena with folios of `order` and free every other one; returns the handles
    kept. On a live kernel the fill keeps only the folios of the size: the kernel picks sizes
    itself (6.1 has no mTHP: a 64K fault is a THP or base pages; as memory runs out an mTHP
    fault falls back to 4K pages, one handle each), and a folio of another size says nothing
    about moving folios of this one, nor may it count as one that lost its order."""
    want = backend.total_pages >> order
    handles = backend.alloc(want, order, compact=False)
    if backend.host_memory:
        # the folios of other sizes stay allocated: memory the fill used, as on the simulator
        handles = handles[backend.folio_orders(handles) == order]
        if len(handles) < want // 2:
            raise Unsupported(f"the fill got {len(handles)} {_size(order)} folios of the "
                              f"{want} asked for: the kernel gave other sizes")
    backend.free(handles[1::2])
    return handles[0::2]


def _fragment(backend, order):
    """Fill memory with folios of `order`, then free every other one: every pageblock half
    used, so an order-9 request needs compaction to move folios of this size. The order-9
    blocks that are free anyway (the watermark reserve the fill left) are taken first, so
    every later success is compaction's. Returns the handles left and how many order-9
    allocations to ask for (half of what the free memory could hold, so a compaction that
    moves everything it should serves them all)."""
    kept = _fill_half(backend, order)
    backend.alloc(backend.total_pages >> HIGH_ORDER, HIGH_ORDER, compact=False)
    free_pages = backend.counters().get("nr_free_pages", 0)
    requests = max(1, (free_pages >> HIGH_ORDER) // 2)
    return kept, requests


LIVE_PROACTIVE_MS = 2000      # kcompactd checks the fragmentation score every 500 ms
LIVE_HUGETLB_REQUESTS = 16
LIVE_COMPACT_ROUNDS = 3
LIVE_COMPACT_SAMPLES = 8          # 128 MiB of folios kept: a pass reaches part of it


def _acted(backend, handles, before, order):
    """(moved, split, acted, orders) per folio: its first page's PFN changed, its order
    dropped, either."""
    after = backend.folio_pfns(handles)
    orders = backend.folio_orders(handles)
    moved = (after != before) & (after >= 0) & (before >= 0)
    split = orders < order
    return moved, split, moved | split, orders


def _in_place(backend, order, mode):
    """Compaction on a backend that shares a running host (live): the host's free memory
    serves order-9 requests without compaction, and filling the host is what the memory cap
    forbids. So the question becomes per folio: a sample of folios of the size is faulted,
    every other one freed (half-used 2 MiB ranges for the migrate scanner), compaction runs in
    the given mode, and each remaining folio's PFN and order are compared before and after.

    attempted = succeeded = folios compaction acted on: migrated whole (first page's PFN
    changed, order kept) or split by migrate_pages() for want of a target of their order
    (their pages then move as base pages, or stay); a failure to migrate is not observable per
    folio (pgmigrate_fail is machine-wide), so the verdict turns on kept_order: of the large
    folios acted on, the share still one folio of their order. compact_memory is repeated (up
    to LIVE_COMPACT_ROUNDS) while it has acted on none of them: where the host put the sample
    decides whether a pass reaches it. A mode that acted on none is untested with what the
    counters say happened, never "not at all" (the host decides where our folios sit)."""
    n = sample_count(order) * LIVE_COMPACT_SAMPLES
    handles = _alloc_exact(backend, 2 * n, order)
    backend.free(handles[1::2])
    handles = handles[0::2]
    before = backend.folio_pfns(handles)
    snap = _Snapshot(backend)
    requests = granted = 0
    if mode == "direct":
        requests = LIVE_HUGETLB_REQUESTS
        granted = sum(len(backend.alloc(1, HIGH_ORDER, compact=True)) for _ in range(requests))
    elif mode == "proactive":
        waited, last = 0, None
        while waited < LIVE_PROACTIVE_MS:
            backend.tick(250)
            waited += 250
            now = backend.counters().get("compact_daemon_migrate_scanned", 0)
            if last is not None and now == last and now != snap.before.get(
                    "compact_daemon_migrate_scanned", 0):
                break                           # kcompactd ran and has stopped
            last = now
    else:
        rounds = 0
        while rounds < LIVE_COMPACT_ROUNDS:
            backend.compact()
            rounds += 1
            if _acted(backend, handles, before, order)[2].any():
                break
    d = snap.delta()
    moved, split, acted, orders = _acted(backend, handles, before, order)
    if not acted.any():
        what = {"direct": f"no direct compaction: {granted} of {requests} order-9 (hugetlb) "
                          f"requests were served from free memory (compact_stall "
                          f"{d.get('compact_stall', 0):+d}); an arena under the memory cap "
                          f"cannot use up the host's free 2 MiB blocks",
                "proactive": f"kcompactd moved none of the sample's folios in "
                             f"{LIVE_PROACTIVE_MS / 1000:g} s at compaction_proactiveness 90 "
                             f"(compact_daemon_wake {d.get('compact_daemon_wake', 0):+d}, "
                             f"compact_daemon_migrate_scanned "
                             f"{d.get('compact_daemon_migrate_scanned', 0):+d}; unusable free "
                             f"space index at order 9 {backend.fragmentation()['unusable']}"
                             f"/1000 in the worst zone)"}
        why = f"compact_memory migrated none of the {n} folios (pgmigrate_success " \
              f"{d.get('pgmigrate_success', 0):+d})"
        if order >= PAGEBLOCK_ORDER:
            why += "; compaction never moves a pageblock-sized folio"
        if mode == "migration":
            why += ("; move_pages(2) only moves folios to another node, so on one node "
                    "compaction is what migrates them")
        raise Unsupported(what.get(mode, why))
    whole = acted & ~split
    kept = float(whole.sum() / acted.sum()) if order else None
    values, counts = np.unique(orders[acted], return_counts=True)
    split_to = {int(v): int(c) for v, c in zip(values, counts)} if order else {}
    pages = int(acted.sum()) << order
    return _evidence(int(acted.sum()), int(acted.sum()),
                     "folios compaction acted on (migrated whole, or split)", order, n, d,
                     _cost(d, "migrate_time_ns"), pages * PAGE_SIZE, kept, split_to,
                     large=int(acted.sum()) if order else 0, reached=float(acted.mean()),
                     moved_whole=int(whole.sum()), first_page_moved=int(moved.sum()),
                     hugetlb_requests=requests, hugetlb_granted=granted)


def _compaction_probe(mode):
    def probe(backend, order, seed):
        # direct compaction needs memory used up; where the backend may fill it (a disposable
        # guest) it is measured as on the simulator, the other modes stay per-folio questions
        if backend.host_memory and not (mode == "direct" and backend.may_fill_memory):
            return _in_place(backend, order, mode)
        handles, requests = _fragment(backend, order)
        snap = _Snapshot(backend)
        if mode == "direct":
            granted = sum(len(backend.alloc(1, HIGH_ORDER, compact=True))
                          for _ in range(requests))
        else:
            if mode == "proactive":
                backend.tick(10_000)
            else:
                backend.compact()
            granted = len(backend.alloc(requests, HIGH_ORDER, compact=False))
        d = snap.delta()
        kept, split_to = _kept(backend, handles, order)
        return _evidence(requests, granted, "order-9 allocations", order, len(handles), d,
                         _cost(d, "migrate_time_ns"), d.get("pgmigrate_success", 0) * PAGE_SIZE,
                         kept, split_to)
    return probe


def _compaction_na(order):
    if order >= PAGEBLOCK_ORDER:
        return ("not applicable: a 2M folio fills a pageblock; compaction never moves folios "
                "of pageblock order")
    return None


def probe_cma(backend, order, seed):
    handles = backend.alloc(backend.total_pages >> order, order, compact=False)
    backend.free(handles[1::2])
    handles = handles[0::2]
    chunk = 2048                       # 8 MiB per cma_alloc()
    requests = 4
    snap = _Snapshot(backend)
    tokens = [backend.cma_alloc(chunk) for _ in range(requests)]
    d = snap.delta()
    granted = sum(t is not None for t in tokens)
    kept, split_to = _kept(backend, handles, order)
    for t in tokens:
        if t is not None:
            backend.cma_release(t)
    return _evidence(requests, granted, "cma_alloc(8M) calls", order, len(handles), d,
                     _cost(d, "migrate_time_ns"), d.get("pgmigrate_success", 0) * PAGE_SIZE,
                     kept, split_to)


def probe_hotunplug(backend, order, seed):
    movable = [b for b in backend.memory_blocks() if b.get("removable")
               and b.get("zone") == "Movable" and b.get("state") == "online"]
    if not movable:
        raise Unsupported("no removable online memory block in ZONE_MOVABLE")
    # a block holding early-boot (PG_reserved) pages never offlines, whatever the folios in
    # it (movablecore= on a real kernel); the question is whether ours can be moved out
    blocks = [b for b in movable if not b.get("reserved_pages")]
    if not blocks:
        raise Unsupported(f"every ZONE_MOVABLE block holds early-boot (PG_reserved) pages "
                          f"that offline_pages() cannot move ({len(movable)} blocks)")
    handles = _fill_half(backend, order)
    targets = blocks[-2:]
    snap = _Snapshot(backend)
    results = [backend.offline_block(b["index"]) for b in targets]
    d = snap.delta()
    kept, split_to = _kept(backend, handles, order)
    for b, (ok, _) in zip(targets, results):
        if ok:
            backend.online_block(b["index"])
    reasons = sorted({why for ok, why in results if not ok})
    return _evidence(len(targets), sum(ok for ok, _ in results), "memory blocks offlined",
                     order, len(handles), d, _cost(d, "migrate_time_ns"),
                     d.get("pgmigrate_success", 0) * PAGE_SIZE, kept, split_to,
                     offline_errors=reasons,
                     blocks_with_reserved_pages=len(movable) - len(blocks))


# --- swap, zswap -----------------------------------------------------------------------------

def _swapped_whole(d, order, prefix):
    if order == HPAGE_PMD_ORDER and prefix == "swpout":
        return d.get("thp_swpout", d.get(f"hugepages-{(PAGE_SIZE << order) >> 10}kB/swpout", 0))
    return d.get(f"hugepages-{(PAGE_SIZE << order) >> 10}kB/{prefix}", 0)


def probe_swap_out(backend, order, seed):
    n = sample_count(order)
    handles = _alloc_exact(backend, n, order)
    snap = _Snapshot(backend)
    tokens = backend.swap_out(handles)
    d = snap.delta()
    pages = n << order
    out = d.get("pswpout", 0) + d.get("zswpout", 0)
    whole = _swapped_whole(d, order, "swpout") if order else 0
    backend.swap_in(tokens)             # leave the swap area empty for the next probe
    kept = whole / n if order else None
    split_to = {0: n - whole, order: whole} if order and whole < n else ({order: n} if order
                                                                          else {})
    return _evidence(pages, min(out, pages), "pages", order, n, d, _cost(d, "time_ns/swap_out"),
                     out * PAGE_SIZE, kept, {k: v for k, v in split_to.items() if v},
                     swap_tokens=sum(t is not None for t in tokens))


def _round_trip(backend, order, zswap):
    n = sample_count(order)
    handles = _alloc_exact(backend, n, order)
    if zswap:
        backend.set_zswap(True)
    tokens = backend.swap_out(handles)
    swapped = [t for t in tokens if t is not None]
    snap = _Snapshot(backend)
    back = backend.swap_in(swapped)
    d_in = snap.delta()
    whole_back = sum(1 for hs in back if len(hs) == 1
                     and int(backend.folio_orders(hs)[0]) == order)
    return n, tokens, back, d_in, whole_back


def probe_swap_in(backend, order, seed):
    n, tokens, back, d, whole_back = _round_trip(backend, order, zswap=False)
    pages = n << order
    swapped_in = d.get("pswpin", 0) + d.get("zswpin", 0)
    out_pages = sum(int(np.sum(np.int64(1) << backend.folio_orders(hs))) for hs in back)
    kept = whole_back / n if order else None
    split_to = {} if not order else {o: c for o, c in ((order, whole_back),
                                                       (0, n - whole_back)) if c}
    return _evidence(pages, min(swapped_in, pages), "pages", order, n, d,
                     _cost(d, "time_ns/swap_in"), swapped_in * PAGE_SIZE, kept, split_to,
                     pages_back=out_pages)


def probe_zswap(backend, order, seed):
    n = sample_count(order)
    snap = _Snapshot(backend)
    n, tokens, back, d_in, whole_back = _round_trip(backend, order, zswap=True)
    d = snap.delta()
    pages = n << order
    through = min(d.get("zswpout", 0), d.get("zswpin", 0))
    stored_whole = d.get(f"hugepages-{(PAGE_SIZE << order) >> 10}kB/zswpout", 0) if order else 0
    kept = whole_back / n if order else None
    split_to = {} if not order else {o: c for o, c in ((order, whole_back),
                                                       (0, n - whole_back)) if c}
    return _evidence(pages, min(through, pages), "pages through zswap and back", order, n, d,
                     _cost(d, "time_ns/swap_out", "time_ns/swap_in"), through * PAGE_SIZE,
                     kept, split_to, stored_whole_folios=int(stored_whole))


# --- KSM, memory-failure, khugepaged, NUMA balancing ---------------------------------------

def probe_ksm(backend, order, seed):
    n = sample_count(order)
    a = _alloc_exact(backend, n, order)
    b = _alloc_exact(backend, n, order)
    snap = _Snapshot(backend)
    got = backend.ksm_merge(a, b)
    d = snap.delta()
    kept, split_to = _kept(backend, a, order)
    pages = n << order
    return _evidence(pages, got["merged_pages"], "duplicate pages merged", order, n, d,
                     _cost(d, "time_ns/ksm"), got["merged_pages"] * PAGE_SIZE, kept, split_to,
                     split_folios=got["split_folios"])


def probe_memory_failure(backend, order, seed):
    n = sample_count(order)
    handles = _alloc_exact(backend, n, order)
    rng = np.random.default_rng(seed)
    where = rng.integers(0, 1 << order, size=n)
    snap = _Snapshot(backend)
    results = [backend.memory_failure(int(h), int(i)) for h, i in zip(handles, where)]
    d = snap.delta()
    recovered = sum(ok for ok, _ in results)
    # the rest of each folio: was it left at its order? (the head's handle names the piece
    # that holds the head page; a poisoned head is order 0 by construction)
    kept, split_to = _kept(backend, handles, order)
    return _evidence(n, recovered, "poisoned pages isolated", order, n, d,
                     _cost(d, "time_ns/memory_failure"), n * (PAGE_SIZE << order), kept,
                     split_to, actions=sorted({a for _, a in results}))


def probe_collapse(backend, order, seed):
    regions = min(sample_count(order), 256)
    base = _alloc_exact(backend, regions << order, 0)
    snap = _Snapshot(backend)
    results = [backend.collapse(base[i << order:(i + 1) << order], order)
               for i in range(regions)]
    d = snap.delta()
    done = sum(h is not None for h, _ in results)
    return _evidence(regions, done, "ranges collapsed", order, regions, d,
                     _cost(d, "time_ns/collapse"), done * (PAGE_SIZE << order), None, {},
                     large=0, reasons=sorted({r for h, r in results if h is None}))


def _collapse_na(order):
    return "not applicable: collapsing makes large folios; 4K is the base page" if not order \
        else None


def probe_numa(backend, order, seed):
    n = sample_count(order)
    handles = _alloc_exact(backend, n, order)
    snap = _Snapshot(backend)
    moved = backend.numa_migrate(handles)
    d = snap.delta()
    done = sum(moved)
    pages = n << order
    # the live backend reads the moved folios' orders back (numa_observed); the simulator's
    # sample is fresh, never migrated, so never queued for the deferred split that would
    # split it on the way (simcore.deferred_split): it moves whole or not at all
    seen = getattr(backend, "numa_observed", None) or {}
    kept = (1.0 if done else None) if order else None
    split_to = {order: done} if order and done else {}
    if order and "kept_order" in seen:
        kept, split_to = seen["kept_order"], seen["split_to"]
    notes = {k: v for k, v in seen.items() if k not in ("kept_order", "split_to")}
    return _evidence(pages, done << order, "pages", order, n, d, _cost(d, "time_ns/numa"),
                     (done << order) * PAGE_SIZE, kept, split_to, folios_not_moved=n - done,
                     **notes)


MACHINE = {"mem": "256M"}
PROBES = (
    Probe("migration", "page migration (migrate_pages)", probe_migration, dict(MACHINE),
          doc="move_pages(2)-style migrate_pages() of the folios, sync mode"),
    Probe("compaction-direct", "compaction: direct", _compaction_probe("direct"),
          dict(MACHINE, extfrag_threshold=0), _compaction_na,
          doc="memory filled with folios of the size, every other one freed; order-9 "
              "allocations with direct compaction (extfrag_threshold 0, so the fragmentation "
              "index does not veto it)"),
    Probe("compaction-proactive", "compaction: proactive (kcompactd)",
          _compaction_probe("proactive"), dict(MACHINE, compaction_proactiveness=90),
          _compaction_na, doc="the same fragmentation; 10 s of kcompactd at proactiveness 90, "
                              "then order-9 allocations without compaction"),
    Probe("compaction-memory", "compaction: compact_memory", _compaction_probe("compact_memory"),
          dict(MACHINE), _compaction_na,
          doc="the same fragmentation; echo 1 > compact_memory, then order-9 allocations"),
    Probe("cma", "CMA allocation (alloc_contig_range)", probe_cma,
          dict(MACHINE, cma="64M"),
          doc="memory (and the 64M CMA area) filled, every other folio freed; four 8M cma_alloc()"),
    Probe("hotunplug", "memory hot-unplug (offline_pages)", probe_hotunplug,
          {"mem": "1G", "movable": "512M", "memory_block": "128M"},
          doc="memory filled, every other folio freed; two 128M ZONE_MOVABLE blocks offlined "
              "(on a live kernel: blocks without early-boot PG_reserved pages)"),
    Probe("swap-out", "swap-out", probe_swap_out, dict(MACHINE, swap="256M"),
          doc="folios reclaimed to an empty zram-like swap area (free clusters)"),
    Probe("swap-in", "swap-in", probe_swap_in, dict(MACHINE, swap="256M"),
          doc="the swapped-out folios faulted back (synchronous device, zswap never enabled)"),
    Probe("zswap", "zswap (store and load)", probe_zswap, dict(MACHINE, swap="256M"),
          doc="zswap enabled; folios swapped out and faulted back"),
    Probe("ksm", "KSM merging", probe_ksm, dict(MACHINE),
          doc="pairs of folios with identical content, one full KSM scan"),
    Probe("memory-failure", "memory-failure (poison one page)", probe_memory_failure,
          dict(MACHINE), doc="one random page of each folio poisoned (memory_failure())"),
    Probe("khugepaged", "khugepaged collapse (4K pages -> the size)", probe_collapse,
          dict(MACHINE), _collapse_na,
          doc="ranges of order-0 pages collapsed into one folio of the size"),
    Probe("numa", "NUMA-balancing migration", probe_numa, dict(MACHINE, nodes=2),
          doc="hinting faults on folios placed on the other node"),
)
PROBE_NAMES = tuple(p.name for p in PROBES)


def get_probe(name):
    for p in PROBES:
        if p.name == name:
            return p
    raise ValueError(f"matrix probe {name!r} is unknown; known: {', '.join(PROBE_NAMES)}")
