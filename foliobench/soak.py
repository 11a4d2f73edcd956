"""Random-operation soak of the simulator: every public Machine operation in seeded random
order, the machine's invariants and a page ledger checked as it goes, and a failure shrunk to a
minimal repro printed as runnable Python.

    ops = generate(np.random.default_rng(seed), 2000)     # abstract operations
    run = Runner(config)                                   # a Machine (and a second NUMA node)
    for op in ops: run.apply(op)                           # Violation on a broken invariant
    run.verify()

An operation is a tuple of plain numbers (name, args...) that names folios by "pick" (an index
taken modulo the live folios at the time), never by PFN, so it stays meaningful when earlier
operations are removed: delta debugging (shrink()) can drop any subset. Runner.apply() resolves
the picks and logs the concrete call it made (`m.free(1234)`), which is what a repro prints.

What verify() checks (the page ledger, see docs/correctness.md):
- m.check(): the simulator's own invariants (free lists, pageblocks, swap clusters, poison).
- every managed page is in exactly one place: in a folio (poisoned pages are kept in folios of
  kind "kernel"), on a buddy free list or on a per-CPU list; offlined blocks are not managed.
  Counted from mem_map and compared with allocated_pages(), free_pages(), pcp_pages(),
  managed_pages and the zones' nr_free_pages (which leaves the per-CPU lists out).
- the pages swap_out() took are on the swap device or in zswap, page for page against the
  SwapRecords still outstanding; the poisoned pages are exactly those with PG_hwpoison.
- event counters (vmstat events, mTHP stats, KSM/memory-failure counters) never decrease
  (the per-size gauges nr_anon and nr_anon_partially_mapped excepted);
  compact_success + compact_fail = compact_stall; pgmigrate_success/pgmigrate_fail equal
  migration_stats()'s succeeded/failed_pages.
apply() also checks that an operation refused with ValueError changed nothing.
"""
import dataclasses
import re
import time

import numpy as np

import simcore
from simcore.mmzone import PAGE_BUDDY, PAGE_HEAD, PAGE_PCP, PG_HWPOISON, PG_KSM
from simcore.pgdat import N_HANDLE_FREE, N_HANDLES_AVAIL, Z_FREE
from simcore.vm_event import MTHP_STAT_NR_ANON, MTHP_STAT_NR_ANON_PARTIALLY_MAPPED

MIGRATETYPES = ("unmovable", "movable", "reclaimable")
# kinds per requested migratetype, as callers in the kernel pair them
KINDS_BY_MT = {"unmovable": ("slab", "pagetable", "kernel"), "movable": ("anon", "file", "shmem",
                                                                         "hugetlb"),
               "reclaimable": ("slab", "file")}
FLAGS = ("pinned", "dirty", "writeback", "mlocked", "unevictable")
MODES = ("async", "sync_light", "sync")
ORDERS = (0, 0, 0, 0, 1, 2, 3, 4, 4, 5, 6, 8, 9, 9, 10)
PROFILES = ("linux-6.1", "linux-6.12", "linux-6.18")
STRATEGIES = ("legacy", "split", "folio")
# Machine layouts the soak cycles through: small, so a run is fast and memory is contended.
LAYOUTS = (
    {"mem": "64M", "cma": "8M", "memory_block": "8M"},
    {"mem": "128M", "movable": "32M", "memory_block": "16M"},
)
NODE1 = {"mem": "32M"}
SWAP_SIZES_MB = (4, 16, 64)
# (operation, weight): every public Machine operation that changes state
WEIGHTS = (
    ("alloc", 12), ("alloc_many", 6), ("free", 12), ("free_many", 5), ("split", 4),
    ("compact", 1), ("tick", 3), ("migrate", 4), ("cma_alloc", 2), ("cma_release", 2),
    ("offline", 2), ("online", 2), ("swapon", 1), ("swap_out", 4), ("swap_in", 3),
    ("zswap_enable", 1), ("ksm_merge", 2), ("memory_failure", 2), ("collapse", 2),
    ("numa_migrate", 2), ("set_flags", 3), ("fault_anon", 3), ("misuse", 3),
    ("on_cpu", 4), ("drain", 1),
    ("touch", 3), ("reclaim_pages", 2), ("atomic", 3),
)
OP_NAMES = tuple(name for name, _ in WEIGHTS)
MISUSE = ("free_any_pfn", "free_poisoned", "ksm_same", "split_up", "memory_failure_any_pfn",
          "collapse_short", "cma_release_bad", "swap_in_twice", "online_online")


# operations that name folios (the others need no scan of mem_map for folio heads)
NEEDS_HEADS = ("free", "free_many", "split", "migrate", "swap_out", "ksm_merge",
               "memory_failure", "collapse", "numa_migrate", "set_flags", "misuse", "touch")
# operations whose refusal is checked against mem_map too (the others: see _snapshot())
FULL_SNAPSHOT = ("set_flags", "misuse")


class Violation(AssertionError):
    """The simulator broke an invariant; `kind` is a short stable name of the rule."""

    def __init__(self, kind, message, step=None):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.step = step

    @property
    def signature(self):
        """The rule without its numbers, to tell one violation from another when shrinking."""
        return self.kind, re.sub(r"\d+", "#", self.message)[:80]


@dataclasses.dataclass(frozen=True)
class Config:
    """One soak machine: strategy, profile, layout (an index into LAYOUTS), seed, and whether
    it models reclaim (simcore.vmscan)."""
    strategy: str = "folio"
    profile: str = "linux-6.18"
    layout: int = 0
    seed: int = 0
    reclaim: bool = False

    def machine_kwargs(self):
        kw = dict(LAYOUTS[self.layout], seed=self.seed, profile=self.profile,
                  compaction=self.strategy)
        if self.reclaim:
            kw["reclaim"] = True
        return kw

    def node1_kwargs(self):
        return dict(NODE1, seed=self.seed + 1, profile=self.profile, compaction=self.strategy)


def generate(rng, n, skip=()):
    """n abstract operations drawn from `rng` (a numpy Generator), independent of any machine.
    skip: operation or misuse names (OP_NAMES, MISUSE) never to draw."""
    unknown = set(skip) - set(OP_NAMES) - set(MISUSE)
    if unknown:
        raise ValueError(f"operation {sorted(unknown)[0]!r} is unknown; allowed: "
                         f"{', '.join(OP_NAMES + MISUSE)}")
    names = np.array(OP_NAMES)
    weights = np.array([0 if name in skip else w for name, w in WEIGHTS], dtype=float)
    chosen = rng.choice(len(names), size=n, p=weights / weights.sum())
    draw = Draws(rng)
    ops = [draw_op(draw, names[i]) for i in chosen]
    return [op for op in ops if op[0] != "misuse" or MISUSE[op[1]] not in skip]


class Draws:
    """Random numbers for draw_op(), taken from `rng` a block at a time (a Generator call per
    number would cost more than most operations)."""

    BLOCK = 4096

    def __init__(self, rng):
        self.rng = rng
        self._ints = []
        self._units = []

    def pick(self):
        if not self._ints:
            self._ints = self.rng.integers(0, 1 << 30, size=self.BLOCK).tolist()
        return self._ints.pop()

    def integers(self, low, high=None):
        """An integer in [low, high) (or [0, low)), as Generator.integers."""
        if high is None:
            low, high = 0, low
        if not self._units:
            self._units = self.rng.random(self.BLOCK).tolist()
        return low + int(self._units.pop() * (high - low))

    def choice(self, seq, size=None):
        if size is not None:
            return [seq[self.integers(len(seq))] for _ in range(size)]
        return seq[self.integers(len(seq))]


def _pick(rng):
    return rng.pick()


def _picks(rng, most):
    return tuple(_pick(rng) for _ in range(int(rng.integers(1, most + 1))))


def draw_op(rng, name):  # noqa: C901  (one branch per operation kind)
    """One abstract operation of kind `name` with random arguments."""
    if name == "alloc":
        mt = int(rng.integers(3))
        return (name, int(rng.choice(ORDERS)), mt, int(rng.integers(8)), int(rng.integers(12)))
    if name == "alloc_many":
        order = int(rng.choice(ORDERS))
        count = int(rng.integers(1, max(2, 4096 >> order)))
        return (name, count, order, int(rng.integers(3)), int(rng.integers(8)))
    if name in ("free", "cma_release", "swap_in"):
        return (name, _pick(rng))
    if name in ("free_many", "swap_out", "numa_migrate", "touch"):
        return (name, _picks(rng, 8))
    if name == "reclaim_pages":
        return (name, int(rng.choice((1, 32, 512, 4096))))
    if name == "atomic":
        return (name, int(rng.integers(1, 200)), int(rng.choice((0, 1, 2, 3, 3, 4, 9))))
    if name == "split":
        return (name, _pick(rng), int(rng.choice((0, 0, 1, 2, 4, 9))))
    if name == "compact":
        return (name,)
    if name == "tick":
        return (name, int(rng.choice((10, 100, 500, 1000, 5000))))
    if name == "on_cpu":
        return (name, int(rng.integers(4)))
    if name == "drain":
        return (name,)
    if name == "migrate":
        return (name, _picks(rng, 6), int(rng.integers(3)))
    if name == "cma_alloc":
        return (name, int(rng.choice((1, 100, 512, 1024, 2048))))
    if name in ("offline", "online"):
        return (name, int(rng.integers(16)))
    if name == "swapon":
        return (name, int(rng.integers(len(SWAP_SIZES_MB))))
    if name == "zswap_enable":
        return (name, int(rng.integers(2)))
    if name == "ksm_merge":
        return (name, _pick(rng), _pick(rng))
    if name == "memory_failure":
        return (name, _pick(rng), _pick(rng))
    if name == "collapse":
        return (name, _pick(rng))
    if name == "set_flags":
        return (name, _picks(rng, 4), int(rng.integers(len(FLAGS))), int(rng.integers(2)))
    if name == "fault_anon":
        orders = tuple(sorted({int(o) for o in rng.choice((2, 4, 5, 9), size=2)}))
        return (name, int(rng.integers(1, 200)), orders)
    if name == "misuse":
        return (name, int(rng.integers(len(MISUSE))), _pick(rng), _pick(rng))
    raise ValueError(f"operation {name!r} is unknown; allowed: {', '.join(OP_NAMES)}")


def _snapshot(m, full=True):
    """Everything a refused operation must leave as it was. Handle-table capacity is left out:
    a call may grow the table before it validates, which changes no folio. full=False leaves out
    mem_map too (the one large array), for speed: any change of a folio's order, kind or place
    also moves the node's and zones' counters or the free lists, which are kept."""
    p = m.pgdat
    node = p.node.copy()
    node[[N_HANDLE_FREE, N_HANDLES_AVAIL]] = 0
    dev = m.swap_device
    arrays = (p.pageblock_flags, p.free_area, p.zones, node, p.events, p.mthp_stats, p.pcp,
              m.migrate_stats) + ((p.mem_map,) if full else ())
    return (b"".join(a.tobytes() for a in arrays),
            (None if dev is None else dev.swap_map.tobytes(),
             vars(m.zswap).copy(), vars(m.ksm).copy(), vars(m.memory_failure_counts).copy(),
             sorted(m.hwpoisoned), dict(m._cma_allocations), sorted(m._offline_blocks),
             m.clock_ns, m.rng.bit_generator.state["state"]["state"]))


def _same(a, b):
    return a == b


def _arr(pfns):
    return "[" + ", ".join(str(int(p)) for p in pfns) + "]"


class Runner:
    """One machine (plus a second NUMA node) driven by abstract operations."""

    def __init__(self, config):
        self.config = config
        self.m = simcore.Machine(**config.machine_kwargs())
        self.node1 = simcore.Machine(**config.node1_kwargs())
        self.records = []            # every SwapRecord swap_out() returned
        self.log = []                # the concrete calls made, as Python statements
        self.steps = 0
        self._monotone = self._counters()

    # -- resolving picks ----------------------------------------------------------------------

    def _heads(self):
        """Folio heads an ordinary caller owns: not poisoned, not part of a CMA allocation."""
        m = self.m
        heads = np.flatnonzero(m.pgdat.mem_map["type"] == PAGE_HEAD)
        if m.hwpoisoned:
            heads = heads[(m.pgdat.mem_map["flags"][heads] & PG_HWPOISON) == 0]
        for start, size in m._cma_allocations.items():
            heads = heads[(heads < start) | (heads >= start + size)]
        return heads

    @staticmethod
    def _one(heads, pick):
        return int(heads[pick % len(heads)]) if len(heads) else None

    def _many(self, heads, picks):
        if not len(heads):
            return []
        return sorted({int(heads[p % len(heads)]) for p in picks})

    # -- applying -----------------------------------------------------------------------------

    def apply(self, op):
        """Run one abstract operation; Violation when it crashed, or was refused yet changed
        the machine. Returns True when the call was refused (ValueError), else False."""
        call = self._resolve(op)
        self.steps += 1
        if call is None:
            return False
        text, fn = call
        full = op[0] in FULL_SNAPSHOT
        before = _snapshot(self.m, full)
        try:
            fn()
        except ValueError as exc:
            if not _same(before, _snapshot(self.m, full)):
                self.log.append(f"_refused({text!r})")
                raise Violation("refused-but-changed", f"{text} raised ValueError ({exc}) "
                                f"after changing the machine", self.steps) from None
            self.log.append(f"_refused({text!r})")
            return True
        except simcore.InvariantError as exc:
            self.log.append(text)
            raise Violation("invariant", str(exc), self.steps) from None
        except Exception as exc:   # any other crash is a finding
            self.log.append(text)
            raise Violation("crash", f"{text}: {type(exc).__name__}: {exc}", self.steps) from None
        self.log.append(text)
        return False

    def _resolve(self, op):  # noqa: C901  (one branch per operation kind)
        """(statement, callable) for op against the machine as it is now, or None (no folio
        to act on)."""
        m, name = self.m, op[0]
        heads = self._heads() if name in NEEDS_HEADS else None
        if name == "alloc":
            _, order, mt_i, kind_i, flag_i = op
            mt = MIGRATETYPES[mt_i]
            kinds = KINDS_BY_MT[mt]
            kind = kinds[kind_i % len(kinds)]
            flags = FLAGS[flag_i] if flag_i < len(FLAGS) else 0
            text = f"m.alloc({order}, {mt!r}, {kind!r}, {flags!r})"
            return text, lambda: m.alloc(order, mt, kind, flags)
        if name == "alloc_many":
            _, count, order, mt_i, kind_i = op
            mt = MIGRATETYPES[mt_i]
            kind = KINDS_BY_MT[mt][kind_i % len(KINDS_BY_MT[mt])]
            return (f"m.alloc_many({count}, {order}, {mt!r}, {kind!r})",
                    lambda: m.alloc_many(count, order, mt, kind))
        if name == "atomic":            # GFP_ATOMIC: may use and create highatomic reserves
            _, count, order = op
            return (f"m.alloc_many({count}, {order}, 'unmovable', 'kernel', gfp='atomic')",
                    lambda: m.alloc_many(count, order, "unmovable", "kernel", gfp="atomic"))
        if name == "free":
            pfn = self._one(heads, op[1])
            return None if pfn is None else (f"m.free({pfn})", lambda: m.free(pfn))
        if name == "free_many":
            pfns = self._many(heads, op[1])
            return (f"m.free_many(np.array({_arr(pfns)}, dtype=np.int64))",
                    lambda: m.free_many(np.array(pfns, dtype=np.int64)))
        if name == "split":
            pfn = self._one(heads, op[1])
            new_order = op[2]
            if pfn is None:
                return None
            return f"m.split({pfn}, {new_order})", lambda: m.split(pfn, new_order)
        if name == "compact":
            return "m.compact()", m.compact
        if name == "tick":
            return f"m.tick({op[1]})", lambda: m.tick(op[1])
        if name == "on_cpu":              # the task moves: later calls use that CPU's lists
            cpu = op[1] % m.cpus
            return f"m.cpu = {cpu}", lambda: setattr(m, "cpu", cpu)
        if name == "drain":
            return "m.drain_all_pages()", m.drain_all_pages
        if name == "migrate":
            pfns = self._many(heads, op[1])
            mode = MODES[op[2]]
            return f"m.migrate({_arr(pfns)}, {mode!r})", lambda: m.migrate(pfns, mode)
        if name == "cma_alloc":
            return f"m.cma_alloc({op[1]})", lambda: m.cma_alloc(op[1])
        if name == "cma_release":
            starts = sorted(m._cma_allocations)
            if not starts:
                return None
            start = starts[op[1] % len(starts)]
            return f"m.cma_release({start})", lambda: m.cma_release(start)
        if name in ("offline", "online"):
            index = op[1] % len(m.memory_blocks())
            fn = m.offline_memory_block if name == "offline" else m.online_memory_block
            return f"m.{fn.__name__}({index})", lambda: fn(index)
        if name == "swapon":
            size = f"{SWAP_SIZES_MB[op[1]]}M"
            return f"m.swapon({size!r})", lambda: m.swapon(size)
        if name == "swap_out":
            return self._swap_out(self._many(heads, op[1]))
        if name == "swap_in":
            return self._swap_in(op[1])
        if name == "zswap_enable":
            on = bool(op[1])
            return f"m.zswap_enable({on})", lambda: m.zswap_enable(on)
        if name == "ksm_merge":
            return self._ksm(heads, op[1], op[2])
        if name == "memory_failure":
            a = self._one(heads, op[1])
            if a is None:
                return None
            pfn = a + op[2] % (1 << int(m.pgdat.mem_map["order"][a]))
            return f"m.memory_failure({pfn})", lambda: m.memory_failure(pfn)
        if name == "collapse":
            return self._collapse(heads, op[1])
        if name == "numa_migrate":
            pfns = self._many(heads, op[1])
            return (f"m.numa_migrate(node1, {_arr(pfns)})",
                    lambda: m.numa_migrate(self.node1, pfns))
        if name == "set_flags":
            pfns = self._many(heads, op[1])
            flag, on = FLAGS[op[2]], bool(op[3])
            return (f"m.set_flags({_arr(pfns)}, {flag!r}, {on})",
                    lambda: m.set_flags(pfns, flag, on))
        if name == "fault_anon":
            _, count, orders = op
            return f"m.fault_anon({count}, {list(orders)})", lambda: m.fault_anon(count, orders)
        if name == "touch":
            pfns = self._many(heads, op[1])
            return f"m.touch({_arr(pfns)})", lambda: m.touch(pfns)
        if name == "reclaim_pages":
            return f"m.reclaim_pages({op[1]})", lambda: m.reclaim_pages(op[1])
        if name == "misuse":
            return self._misuse(heads, *op[1:])
        raise ValueError(f"operation {name!r} is unknown; allowed: {', '.join(OP_NAMES)}")

    def _swap_out(self, pfns):
        m = self.m

        def run():
            recs = m.swap_out(pfns)
            self.records.extend(r for r in recs if r is not None)
        n = len(self.records)
        return f"rec[{n}:] = [r for r in m.swap_out({_arr(pfns)}) if r is not None]", run

    def _swap_in(self, pick):
        live = [i for i, r in enumerate(self.records) if r.pieces or r.resident]
        if not live:
            return None
        i = live[pick % len(live)]
        return f"m.swap_in([rec[{i}]])", lambda: self.m.swap_in([self.records[i]])

    def _ksm(self, heads, pick_a, pick_b):
        m = self.m
        a = self._one(heads, pick_a)
        if a is None:
            return None
        orders = m.pgdat.mem_map["order"]
        kinds = m.pgdat.mem_map["kind"]
        same = heads[(orders[heads] == orders[a]) & (kinds[heads] == kinds[a]) & (heads != a)]
        if not len(same):
            return None
        b = int(same[pick_b % len(same)])
        return f"m.ksm_merge([{a}], [{b}])", lambda: m.ksm_merge([a], [b])

    def _collapse(self, heads, pick, pages=512):
        """Folios of one kind, from heads[pick] on (wrapping round), whose first ones together
        hold exactly `pages`; None when the running total skips over it."""
        m = self.m
        if not len(heads):
            return None
        start = pick % len(heads)
        ring = np.roll(heads, -start)
        ring = ring[m.pgdat.mem_map["kind"][ring] == m.pgdat.mem_map["kind"][ring[0]]]
        total = np.cumsum(np.int64(1) << m.pgdat.mem_map["order"][ring].astype(np.int64))
        end = int(np.searchsorted(total, pages))
        if end >= len(total) or total[end] != pages:
            return None
        chosen = sorted(int(p) for p in ring[:end + 1])
        return f"m.collapse({_arr(chosen)})", lambda: m.collapse(chosen)

    def _misuse(self, heads, what, a, b):  # noqa: C901
        """A call the API must refuse (ValueError) or handle as the kernel would."""
        m = self.m
        what = MISUSE[what]
        any_pfn = a % m.nr_pages
        if what == "free_any_pfn":
            return f"m.free({any_pfn})", lambda: m.free(any_pfn)
        if what == "free_poisoned":
            if not m.hwpoisoned:
                return None
            pfn = sorted(m.hwpoisoned)[a % len(m.hwpoisoned)]
            return f"m.free({pfn})", lambda: m.free(pfn)
        if what == "ksm_same":
            x = self._one(heads, a)
            return None if x is None else (f"m.ksm_merge([{x}], [{x}])",
                                           lambda: m.ksm_merge([x], [x]))
        if what == "split_up":
            x = self._one(heads, a)
            if x is None:
                return None
            order = int(m.pgdat.mem_map["order"][x]) + b % 2
            return f"m.split({x}, {order})", lambda: m.split(x, order)
        if what == "memory_failure_any_pfn":
            return f"m.memory_failure({any_pfn})", lambda: m.memory_failure(any_pfn)
        if what == "collapse_short":
            pfns = self._many(heads, (a, b))
            return f"m.collapse({_arr(pfns)})", lambda: m.collapse(pfns)
        if what == "cma_release_bad":
            return f"m.cma_release({any_pfn})", lambda: m.cma_release(any_pfn)
        if what == "swap_in_twice":
            done = [i for i, r in enumerate(self.records) if not r.pieces and not r.resident]
            if not done:
                return None
            i = done[a % len(done)]
            return f"m.swap_in([rec[{i}]])", lambda: m.swap_in([self.records[i]])
        if what == "online_online":
            index = a % len(m.memory_blocks())
            return f"m.online_memory_block({index})", lambda: m.online_memory_block(index)
        raise ValueError(f"misuse {what!r} is unknown")

    # -- the invariants -----------------------------------------------------------------------

    def _counters(self):
        m = self.m
        return np.concatenate([
            m.pgdat.events,
            # the gauges go down when a folio leaves the queue (split, freed): not events
            np.delete(m.pgdat.mthp_stats, [MTHP_STAT_NR_ANON, MTHP_STAT_NR_ANON_PARTIALLY_MAPPED],
                      axis=1).ravel(),
            [m.ksm.pages_shared, m.ksm.full_scans],
            list(m.memory_failure_counts.stats().values()),
            [m.zswap.reject_large, m.zswap.pool_limit_hit],
        ]).astype(np.int64)

    def verify(self):
        """Every check of the module docstring; Violation naming the first broken rule."""
        try:
            self.m.check()
            self.node1.check()
        except simcore.InvariantError as exc:
            raise Violation("invariant", str(exc), self.steps) from None
        problem = ledger_problem(self.m, self.records) or self._counter_problem()
        if problem:
            raise Violation(*problem, self.steps)

    def _counter_problem(self):
        now = self._counters()
        down = np.flatnonzero(now < self._monotone)
        self._monotone = now
        if down.size:
            return "counter-decreased", f"counter #{int(down[0])} decreased"
        return None


def ledger_problem(m, records=()):
    """(rule, message) for the first broken page-ledger rule of machine m, or None. `records`
    are the SwapRecords swap_out() returned (all of them; swapped-in ones hold nothing); the
    ones reclaim made are the machine's own (m.lru.swapped)."""
    records = list(records) + list(m.lru.swapped)
    mem_map = m.pgdat.mem_map
    types = mem_map["type"]
    sizes = np.int64(1) << mem_map["order"].astype(np.int64)
    heads = types == PAGE_HEAD
    allocated = int(sizes[heads].sum())
    free = int(sizes[types == PAGE_BUDDY].sum())
    on_pcp = int(sizes[types == PAGE_PCP].sum())
    if allocated + free + on_pcp != m.managed_pages:
        return "ledger", (f"allocated {allocated} + free {free} + pcp {on_pcp} pages != "
                          f"managed {m.managed_pages}")
    if on_pcp != m.pcp_pages():
        return "ledger", (f"mem_map holds {on_pcp} pages on per-CPU lists; pcp_pages() says "
                          f"{m.pcp_pages()}")
    if allocated != m.allocated_pages() or free != m.free_pages() \
            or free != int(m.pgdat.zones[:, Z_FREE].sum()):
        return "ledger", (f"mem_map holds {allocated} allocated and {free} free pages; the "
                          f"counters say {m.allocated_pages()} allocated, {m.free_pages()} on "
                          f"the free lists, {int(m.pgdat.zones[:, Z_FREE].sum())} nr_free_pages")
    poisoned = set(np.flatnonzero(heads & ((mem_map["flags"] & PG_HWPOISON) != 0)).tolist())
    if poisoned != m.hwpoisoned:
        return "ledger", (f"{len(poisoned)} folios carry PG_hwpoison but memory_failure() "
                          f"poisoned {len(m.hwpoisoned)}")
    ksm_pages = int((heads & ((mem_map["flags"] & PG_KSM) != 0)).sum())
    if ksm_pages > m.ksm.pages_shared:
        return "ledger", f"{ksm_pages} KSM pages but pages_shared {m.ksm.pages_shared}"
    swapped = sum(1 << o for r in records for _, o, z in r.pieces if not z)
    zswapped = sum(1 << o for r in records for _, o, z in r.pieces if z)
    used = m.swap_device.inuse_pages() if m.swap_device is not None else 0
    if swapped + zswapped != used or zswapped != m.zswap.stored_pages:
        return "ledger", (f"swap entries hold {swapped} device + {zswapped} zswap pages; the "
                          f"device has {used} slots in use, zswap {m.zswap.stored_pages} pages")
    vm = m.vmstat()
    if vm["compact_success"] + vm["compact_fail"] != vm["compact_stall"]:
        return "counters", (f"compact_success {vm['compact_success']} + compact_fail "
                            f"{vm['compact_fail']} != compact_stall {vm['compact_stall']}")
    ms = m.migration_stats()
    if vm["pgmigrate_success"] != ms["succeeded"] or vm["pgmigrate_fail"] != ms["failed_pages"]:
        return "counters", (f"pgmigrate_success/fail {vm['pgmigrate_success']}/"
                            f"{vm['pgmigrate_fail']} but migration_stats() succeeded/failed_pages "
                            f"{ms['succeeded']}/{ms['failed_pages']}")
    return None


# --- running, shrinking, reporting ------------------------------------------------------------

def replay(config, ops, check_every=0):
    """Run ops on a fresh Runner; the first Violation, or None. With check_every=0 the ledger is
    verified once, at the end; else after every `check_every` operations too."""
    run = Runner(config)
    try:
        for i, op in enumerate(ops, 1):
            run.apply(op)
            if check_every and i % check_every == 0:
                run.verify()
        run.verify()
    except Violation as exc:
        exc.step = run.steps
        exc.runner = run
        return exc
    return None


def shrink(config, ops, violation, budget_s=120.0):
    """A short list of ops that still ends in a violation of the same signature: first cut at
    the failing step (found by checking after every op), then ddmin (Zeller's delta debugging)
    over the rest, within `budget_s` seconds."""
    first = replay(config, ops, check_every=1)
    if first is not None and first.signature == violation.signature:
        ops = ops[:first.step]
    target = violation.signature
    deadline = time.monotonic() + budget_s

    def fails(candidate):
        v = replay(config, candidate)
        return v is not None and v.signature == target

    n = 2
    while len(ops) >= 2 and time.monotonic() < deadline:
        chunk = -(-len(ops) // n)
        subsets = [ops[i:i + chunk] for i in range(0, len(ops), chunk)]
        reduced = False
        for i in range(len(subsets)):
            complement = [op for j, s in enumerate(subsets) if j != i for op in s]
            if fails(subsets[i]):
                ops, n, reduced = subsets[i], 2, True
                break
            if len(subsets) > 2 and fails(complement):
                ops, n, reduced = complement, max(n - 1, 2), True
                break
            if time.monotonic() >= deadline:
                break
        if not reduced:
            if n >= len(ops):
                break
            n = min(len(ops), 2 * n)
    return ops


def repro_snippet(config, ops):
    """Runnable Python that replays ops as concrete Machine calls and then checks the state."""
    violation = replay(config, ops, check_every=1)
    run = getattr(violation, "runner", None)
    if run is None:             # not reproducible any more: print the abstract form
        run = Runner(config)
        for op in ops:
            try:
                run.apply(op)
            except Violation:
                break
    lines = [
        "import numpy as np",
        "import simcore",
        "from foliobench import soak",
        "",
        "",
        "def _refused(statement):       # this call must raise ValueError and change nothing",
        "    before = soak._snapshot(m)",
        "    try:",
        "        exec(statement, globals())",
        "    except ValueError:",
        "        assert soak._same(before, soak._snapshot(m)), 'refused but changed: ' + statement",
        "",
        "",
        f"m = simcore.Machine(**{config.machine_kwargs()!r})",
        f"node1 = simcore.Machine(**{config.node1_kwargs()!r})",
        "rec = []",
    ]
    lines += run.log
    lines += ["m.check()", "node1.check()", "assert soak.ledger_problem(m, rec) is None, "
              "soak.ledger_problem(m, rec)"]
    header = f"# violation: {violation}" if violation is not None else "# (did not reproduce)"
    return header + "\n" + "\n".join(lines) + "\n"


@dataclasses.dataclass
class SoakResult:
    operations: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    violation: object = None
    config: object = None
    ops: list = dataclasses.field(default_factory=list)

    @property
    def ops_per_second(self):
        return self.operations / self.seconds if self.seconds else 0.0


def soak(strategy, n, seed=0, profiles=PROFILES, run_length=2000, check_every=1000, skip=()):
    """n random operations under `strategy`: machines of run_length operations each, cycling
    through profiles and layouts, verify() every check_every operations and at each machine's
    end. Stops at the first violation (SoakResult.violation, .config, .ops the machine's ops)."""
    rng = np.random.default_rng(seed)
    result = SoakResult()
    t0, cpu0 = time.perf_counter(), time.process_time()
    run_index = 0
    while result.operations < n:
        config = Config(strategy, profiles[run_index % len(profiles)],
                        (run_index // len(profiles)) % len(LAYOUTS),
                        int(rng.integers(0, 1 << 31)),
                        # every other pair of machines models reclaim
                        reclaim=bool((run_index // (len(profiles) * len(LAYOUTS))) % 2))
        ops = generate(rng, min(run_length, n - result.operations), skip)
        run = Runner(config)
        try:
            for i, op in enumerate(ops, 1):
                run.apply(op)
                if i % check_every == 0:
                    run.verify()
            run.verify()
        except Violation as exc:
            result.operations += run.steps
            result.violation, result.config, result.ops = exc, config, ops
            break
        result.operations += len(ops)
        run_index += 1
    result.seconds = time.perf_counter() - t0
    result.cpu_seconds = time.process_time() - cpu0
    return result
