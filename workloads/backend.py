"""The Backend interface workloads run against, and the simulator backend.

A workload never knows which backend runs it: it allocates folios of a size, frees them,
marks them dirty or under writeback, asks for high-order allocations, reserves CMA, offlines and
onlines memory blocks, advances time, triggers compaction and reads counters, all through these
methods. Folios are named by handles (stable when migration moves them), never by PFN.
"""
import abc
import functools

import numpy as np

import simcore
from simcore.metrics import fragmentation_at_order9

from .memory import check_memory

# Folios one thread faults (or frees) before the next thread's turn (SimBackend(threads=)).
THREAD_CHUNK = 512


class Unsupported(Exception):
    """This backend cannot do that step here (the live kernel may lack CMA, say)."""


class Backend(abc.ABC):
    name = "abstract"
    # True when the backend's memory is a share of a running host (live) rather than a whole
    # machine of its own: probes then ask per-folio questions instead of filling the machine
    host_memory = False
    # True when a probe may fill all of total_pages and make the kernel compact directly: a
    # machine of its own (the simulator, or the live kernel in a disposable guest)
    may_fill_memory = True

    @property
    @abc.abstractmethod
    def total_pages(self): ...

    @abc.abstractmethod
    def fault_anon(self, count, orders, gfp=None):
        """Anonymous faults with mTHP sizes `orders` (largest first, falling back); gfp: the
        large orders' simcore.gfp name (a THP defrag mode's). Returns {order: handles}."""

    @abc.abstractmethod
    def alloc(self, count, order, kind="anon", migratetype="movable", flags=0, compact=True,
              gfp=None):
        """Up to `count` folios of `order`; their handles (fewer when memory runs out). gfp:
        what the allocation may do to succeed (simcore.gfp.GFP_NAMES), where the backend
        chooses; the live kernel's callers bring their own."""

    @abc.abstractmethod
    def free(self, handles): ...

    @abc.abstractmethod
    def set_flags(self, handles, flags, on=True): ...

    @abc.abstractmethod
    def split(self, handles, new_order):
        """Split each folio to new_order; the handles of every piece."""

    @abc.abstractmethod
    def folio_orders(self, handles):
        """Current order of each folio."""

    @abc.abstractmethod
    def compact(self): ...

    @abc.abstractmethod
    def tick(self, ms): ...

    @abc.abstractmethod
    def cma_alloc(self, nr_pages):
        """A contiguous range from the CMA area: a token for cma_release(), or None."""

    @abc.abstractmethod
    def cma_release(self, token): ...

    @abc.abstractmethod
    def memory_blocks(self): ...

    @abc.abstractmethod
    def offline_block(self, index):
        """(True, "") or (False, reason)."""

    @abc.abstractmethod
    def online_block(self, index): ...

    @abc.abstractmethod
    def counters(self):
        """Cumulative counters: /proc/vmstat names, plus migrate_* from migration statistics
        and time_ns, the backend's clock for migration (modelled or measured)."""

    @abc.abstractmethod
    def fragmentation(self):
        """{"fragindex": ..., "unusable": ...} at order 9 (x1000)."""

    @abc.abstractmethod
    def buddyinfo(self): ...

    def pageblock_map(self):
        """(migratetype per pageblock, free share per pageblock), for the fragmentation map."""
        raise Unsupported("pageblock map")

    def touch(self, handles):
        """Re-read or re-touch the folios (folio_mark_accessed()); reclaim keeps referenced
        ones longer. A backend without a reclaim model of its own does nothing."""
        return None

    # Optional steps (the feature-matrix probes): a backend that cannot do one raises
    # Unsupported with the reason, and the probe's cell becomes "untested" with that reason.

    def extra_counters(self):
        """Counters outside /proc/vmstat, by sysfs path: per-size mTHP stats
        ("hugepages-64kB/swpout"), "ksm/pages_sharing", "memory_failure/recovered", ...,
        and modelled or measured time per subsystem ("time_ns/swap_out")."""
        return {}

    def folio_pfns(self, handles):
        """The PFN each folio starts at now (to see which ones migration moved)."""
        raise Unsupported("folio PFNs")

    def migrate(self, handles, mode="sync"):
        """migrate_pages() of the folios (move_pages(2)); how many were not migrated."""
        raise Unsupported("migrate_pages of chosen folios")

    def swap_out(self, handles):
        """Reclaim the folios to swap; per folio a token for swap_in(), None if it stayed."""
        raise Unsupported("swap-out")

    def swap_in(self, tokens):
        """Fault swapped-out folios back; per token the handles of the folios it became."""
        raise Unsupported("swap-in")

    def set_zswap(self, on):
        """Enable or disable zswap in front of the swap device."""
        raise Unsupported("zswap")

    def ksm_merge(self, handles_a, handles_b):
        """Merge folios of identical content pairwise; {"merged_pages", "failed_pages",
        "split_folios"}."""
        raise Unsupported("KSM")

    def memory_failure(self, handle, page_index):
        """Poison page `page_index` of the folio; (recovered, action)."""
        raise Unsupported("memory-failure injection")

    def collapse(self, handles, order):
        """Collapse the folios (2^order pages together) into one; (handle or None, reason)."""
        raise Unsupported("khugepaged collapse")

    def numa_migrate(self, handles):
        """NUMA-balancing migration of the folios to the other node; per folio True if moved."""
        raise Unsupported("NUMA balancing (needs two nodes)")


class SimBackend(Backend):
    """simcore.Machine behind the Backend interface."""

    name = "sim"

    def __init__(self, mem="16G", seed=0, strategy=None, profile=None, swap=None, nodes=1,
                 threads=None, **machine_kw):
        """strategy: compaction strategy (default the profile's); profile: simcore kernel
        profile (default the newest); swap: size of a zram-like swap area; nodes: 2 adds a
        second node of the same size for NUMA balancing. threads: how many threads of the
        workload fault and free in parallel (default one per CPU; `cpus=` sets the machine's
        CPUs, default 2): their faults and frees take turns in chunks of THREAD_CHUNK folios,
        thread i on CPU i % cpus, so every CPU's per-CPU page lists see its share."""
        check_memory(mem, machines=nodes if nodes in (1, 2) else 1)
        machine_kw.setdefault("reclaim", True)
        self.machine = simcore.Machine(mem=mem, seed=seed, compaction=strategy, profile=profile,
                                       **machine_kw)
        self.rng = self.machine.rng
        self.threads = self.machine.cpus if threads is None else threads
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) \
                or self.threads < 1:
            raise ValueError(f"threads {threads!r} must be a positive integer")
        if swap:
            self.machine.swapon(swap)
        if nodes not in (1, 2):
            raise ValueError(f"nodes {nodes!r} must be 1 or 2")
        self.node1 = simcore.Machine(mem=mem, seed=seed + 1, compaction=strategy,
                                     profile=profile) if nodes == 2 else None

    @property
    def total_pages(self):
        return self.machine.managed_pages

    # A workload's handle is the machine's handle with its reclaim generation above bit 32:
    # once reclaim frees a folio, the workload's handle for it is stale even where the
    # machine hands the same number to a new folio.
    def _handles(self, pfns):
        handles = self.machine.handles_of(pfns)
        return handles | (self.machine.handle_generation(handles) << 32)

    def _live(self, tokens):
        """The tokens whose folio reclaim has not freed."""
        tokens = np.asarray(tokens, dtype=np.int64)
        handles = tokens & 0xFFFFFFFF
        return tokens[self.machine.handle_generation(handles) == tokens >> 32]

    def _pfns(self, tokens):
        tokens = np.asarray(tokens, dtype=np.int64)
        handles = tokens & 0xFFFFFFFF
        if (self.machine.handle_generation(handles) != tokens >> 32).any():
            raise ValueError("a handle names a folio that reclaim has freed")
        return self.machine.handle_pfn(handles)

    def _turns(self, count):
        """(cpu, count) turns of the workload's threads for `count` folios."""
        cpus = self.machine.cpus
        thread = 0
        while count > 0:
            n = min(count, THREAD_CHUNK)
            yield thread % cpus, n
            thread = (thread + 1) % self.threads
            count -= n

    # Each turn's PFNs become handles at once: a later turn's kswapd and kcompactd may migrate
    # (or reclaim) the folios an earlier turn got, and only their handles follow them.
    def fault_anon(self, count, orders, gfp=None):
        got = {}
        for cpu, n in self._turns(int(count)):
            for o, p in self.machine.fault_anon(n, orders, cpu=cpu, gfp=gfp).items():
                got.setdefault(o, []).append(self._handles(p))
        return {o: np.concatenate(h) for o, h in got.items()}

    def alloc(self, count, order, kind="anon", migratetype="movable", flags=0, compact=True,
              gfp=None):
        count = int(count)
        if 0 < count <= THREAD_CHUNK:       # one thread's turn (thread 0, on CPU 0)
            return self._handles(self.machine.alloc_many(count, order, migratetype, kind, flags,
                                                         compact=compact, cpu=0, gfp=gfp))
        parts = []
        for cpu, n in self._turns(count):
            pfns = self.machine.alloc_many(n, order, migratetype, kind, flags, compact=compact,
                                           cpu=cpu, gfp=gfp)
            parts.append(self._handles(pfns))       # before a later turn moves them
            if len(pfns) < n:
                break
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def free(self, handles):
        """Free the folios; those reclaim already took are gone and skipped."""
        handles = self._live(handles)
        if len(handles):
            pfns = self._pfns(handles)
            for i, (cpu, n) in enumerate(self._turns(len(pfns))):
                self.machine.free_many(pfns[i * THREAD_CHUNK:i * THREAD_CHUNK + n], cpu=cpu)

    def set_flags(self, handles, flags, on=True):
        handles = self._live(handles)
        if len(handles):
            self.machine.set_flags(self._pfns(handles), flags, on)

    def touch(self, handles):
        handles = self._live(handles)
        if len(handles) and self.machine.reclaim:
            self.machine.touch(self._pfns(handles))

    def split(self, handles, new_order):
        pieces = []
        m = self.machine
        for pfn in self._pfns(handles):
            order = int(m.pgdat.mem_map["order"][pfn])
            if order > new_order and m.split(int(pfn), new_order):
                pieces.append(np.arange(pfn, pfn + (1 << order), 1 << new_order))
            else:
                pieces.append(np.array([pfn]))
        return self._handles(np.concatenate(pieces)) if pieces else np.empty(0, dtype=np.int64)

    def compact(self):
        return self.machine.compact()

    def tick(self, ms):
        self.machine.tick(ms)

    def cma_alloc(self, nr_pages):
        if self.machine.cma_range[0] == self.machine.cma_range[1]:
            raise Unsupported("no CMA area")
        return self.machine.cma_alloc(nr_pages)

    def cma_release(self, token):
        self.machine.cma_release(token)

    def memory_blocks(self):
        return self.machine.memory_blocks()

    def offline_block(self, index):
        return self.machine.offline_memory_block(index)

    def online_block(self, index):
        return self.machine.online_memory_block(index)

    def counters(self):
        out = dict(self.machine.vmstat())
        out.update({f"migrate_{k}": v for k, v in self.machine.migration_stats().items()})
        return out

    def fragmentation(self):
        return fragmentation_at_order9(self.machine)

    def buddyinfo(self):
        return self.machine.buddyinfo()

    def pageblock_map(self):
        return self.machine.pageblock_map()

    def folio_pfns(self, handles):
        return np.asarray(self._pfns(handles), dtype=np.int64)

    def folio_orders(self, handles):
        """Current order of each folio (to see which were split)."""
        pfns = self._pfns(handles)
        return self.machine.pgdat.mem_map["order"][pfns].astype(np.int64)

    def extra_counters(self):
        m = self.machine
        out = {f"{size}/{name}": v for size, stats in m.mthp_stats().items()
               for name, v in stats.items()}
        out.update(m.subsystem_stats())
        return out

    def migrate(self, handles, mode="sync"):
        return self.machine.migrate(self._pfns(handles), mode=mode)

    def swap_out(self, handles):
        if self.machine.swap_device is None:
            raise Unsupported("no swap area (SimBackend(swap=...))")
        return self.machine.swap_out(self._pfns(handles))

    def swap_in(self, tokens):
        if self.machine.swap_device is None:
            raise Unsupported("no swap area (SimBackend(swap=...))")
        heads = self.machine.swap_in([t for t in tokens if t is not None])
        return [self._handles(np.array(h, dtype=np.int64)) for h in heads]

    def set_zswap(self, on):
        self.machine.zswap_enable(on)

    def ksm_merge(self, handles_a, handles_b):
        got = self.machine.ksm_merge(self._pfns(handles_a), self._pfns(handles_b))
        return {k: got[k] for k in ("merged_pages", "failed_pages", "split_folios")}

    def memory_failure(self, handle, page_index):
        pfn = int(self._pfns([handle])[0])
        order = int(self.machine.pgdat.mem_map["order"][pfn])
        if not 0 <= page_index < 1 << order:
            raise ValueError(f"page_index {page_index!r} is outside the folio's {1 << order} "
                             f"pages")
        return self.machine.memory_failure(pfn + int(page_index))

    def collapse(self, handles, order):
        pfn, reason = self.machine.collapse(self._pfns(handles), order)
        return (None if pfn is None else int(self._handles([pfn])[0])), reason

    def numa_migrate(self, handles):
        if self.node1 is None:
            raise Unsupported("one node (SimBackend(nodes=2) models a second)")
        moved = self.machine.numa_migrate(self.node1, self._pfns(handles))
        return [pfn is not None for pfn in moved]


class ArenaBudget:
    """The live backend's arena budget on a simulator backend beside it, so that both serve the
    same requests: a request that would take the workload's allocations past `arena_pages` is
    cut to what fits, and the pages cut are counted in `arena_declined_pages` (the live backend
    counts its own). Charged as the live backend charges: anonymous faults at the size asked,
    hugetlb folios when granted (not cut where `budget_hugetlb` is False: a disposable guest's
    pool may take all it can), everything else at the size asked; frees give their pages back.
    Simplification: a folio reclaim already freed is not given back when the workload frees
    it (the live backend never learns of reclaim and gives it back)."""

    arena_pages = None
    budget_hugetlb = True

    @property
    def total_pages(self):
        managed = self.machine.managed_pages
        return managed if self.arena_pages is None else min(self.arena_pages, managed)

    def _fit(self, count, order):
        count = int(count)
        if self.arena_pages is None:
            return count
        room = max(self.arena_pages - self.used_pages, 0)
        fit = min(count, room >> order)
        self.arena_declined_pages += (count - fit) << order
        return fit

    def fault_anon(self, count, orders, gfp=None):
        count = self._fit(count, max(orders))
        self.used_pages += count << max(orders)
        return super().fault_anon(count, orders, gfp=gfp) if count > 0 else {}

    def alloc(self, count, order, kind="anon", migratetype="movable", flags=0, compact=True,
              gfp=None):
        pool = kind == "hugetlb" or (order == 9 and compact)
        if not pool or self.budget_hugetlb:
            count = self._fit(count, order)
        got = super().alloc(count, order, kind, migratetype, flags, compact, gfp)
        self.used_pages += (len(got) if pool else count) << order
        return got

    def free(self, handles):
        live = self._live(handles) if self.arena_pages is not None else ()
        if len(live):
            self.used_pages -= int((np.int64(1) << self.folio_orders(live)).sum())
        super().free(handles)


class ArenaSimBackend(ArenaBudget, SimBackend):
    """simcore.Machine of `mem`, with the workload sized to `arena_pages` (a live run's arena,
    so that simulator and kernel rows describe the same workload) and held to its budget
    (ArenaBudget)."""

    def __init__(self, mem="16G", seed=0, strategy="folio", *, arena_pages=None,
                 budget_hugetlb=True, **kw):
        super().__init__(mem=mem, seed=seed, strategy=strategy, **kw)
        self.arena_pages = arena_pages
        self.budget_hugetlb = budget_hugetlb
        self.used_pages = self.arena_declined_pages = 0


def sim_factory(arena_bytes=None, costs=None, cpus=None, threads=None, budget_hugetlb=True):
    """A SimBackend factory for the runner: the workload sized to `arena_bytes` when given and
    held to its budget (ArenaBudget; hugetlb too unless `budget_hugetlb` is False), the
    simulator's migration costs from `costs` (a calibrated cost model) when given, the
    machine's CPUs and the workload's threads (SimBackend) when given."""
    kw = {"arena_pages": None if arena_bytes is None else int(arena_bytes) // 4096,
          "budget_hugetlb": budget_hugetlb}
    if costs:
        kw["costs"] = costs
    if cpus is not None:
        kw["cpus"] = cpus
    if threads is not None:
        kw["threads"] = threads
    return functools.partial(ArenaSimBackend, **kw)
