"""asv benchmarks of simcore's buddy allocator: building a machine, bulk alloc/free churn on a
half-full machine, and single alloc()/free() calls from Python.

Targets (see each class): 16G built in <= 0.5 s with <= 16 bytes of RSS per simulated page;
churn >= 10 M ops/s on 16G with per-op cost flat (within 20%) from 1G to 64G; >= 1.5 M single
alloc()/free() calls per second on 16G (issue 15).

How asv calls these: every benchmark (and every parameter value) runs in a fresh process
(launch method "spawn"), so the first simcore call there loads (or compiles) the numba code;
`_warm_up()` does that once per process from `setup`, outside the timing. `setup` runs before
each timed sample at least; the asv_runner installed here even re-runs it before every timed
call (asv#966). The churn benchmark therefore keeps its state valid across calls (held PFNs are
updated in place, subsets cycle) so that it measures the same work whichever runner is used.
"""
import ctypes
import gc
import statistics
import time

import numpy as np
import psutil

import simcore

MEMS = ["1G", "16G", "64G"]
FILL_ORDERS = range(10)     # orders 0..9 (up to a PMD-sized THP), equal pages per order
FILL_FRACTION = 0.5         # of managed pages
CHURN_FRACTION = 0.1        # of each order's folios, freed and reallocated per round
NR_SUBSETS = 8              # precomputed random subsets per order, used in turn
WARM_ROUNDS = 8             # untimed churn rounds in setup: the first rounds after the fill are
                            # slower (up to 3x) until the free lists reach a steady state
SEED = 20240601

_warm = False


def _warm_up():
    """Load (or compile) every numba entry point the benchmarks use, once per process."""
    global _warm
    if _warm:
        return
    m = simcore.Machine(mem="64M", seed=0)
    pfn = m.alloc(0)
    m.free(pfn)
    pfns = m.alloc_many(4, 2)
    m.free_many(pfns)
    _warm = True


def _malloc_trim():
    """Give freed heap memory back to the OS so the next RSS reading starts from a clean slate."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss():
    return psutil.Process().memory_info().rss


def _fill_half(m, rng):
    """Fill `m` to FILL_FRACTION with folios of orders 0..9, equal pages per order, allocated in
    chunks whose order sequence is shuffled by `rng` (so the orders interleave in memory).
    Returns {order: int64 array of head PFNs}."""
    per_order = int(m.managed_pages * FILL_FRACTION) // len(FILL_ORDERS)
    counts = {o: per_order >> o for o in FILL_ORDERS}
    chunks = []
    for o, count in counts.items():
        step = max(1, count // 32)
        chunks += [(o, min(step, count - start)) for start in range(0, count, step)]
    rng.shuffle(chunks)
    parts = {o: [] for o in FILL_ORDERS}
    for o, n in chunks:
        got = m.alloc_many(n, o)
        if len(got) != n:
            raise RuntimeError(f"fill: order {o} got {len(got)} of {n} folios")
        parts[o].append(got)
    return {o: np.concatenate(parts[o]) for o in FILL_ORDERS}


class MachineBuild:
    """Machine construction: mem_map, pageblocks, zones, watermarks, every page freed to the
    buddy lists (free_area_init). Target for 16G: <= 0.5 s and <= 16 bytes RSS per page."""

    params = [MEMS]
    param_names = ["mem"]
    timeout = 120
    warmup_time = 0.0       # each call is 1 ms .. 1 s; a warm-up call would only add runtime
    repeat = (3, 10, 20.0)  # (min, max samples, max seconds) per round
    number = 1

    def setup(self, mem):
        _warm_up()
        gc.collect()

    def time_build(self, mem):
        """Wall time of Machine(mem=..., seed=0)."""
        simcore.Machine(mem=mem, seed=0)

    def peakmem_build(self, mem):
        """Peak RSS of the benchmark process (interpreter, numpy, numba and the loaded simcore
        code included) after building one machine."""
        simcore.Machine(mem=mem, seed=0)

    def track_rss_bytes_per_page(self, mem):
        """RSS growth (psutil, this process) from building one machine, divided by nr_pages.
        Pages the build never touches (calloc'ed, still zero) are not resident and not counted."""
        gc.collect()
        _malloc_trim()
        before = _rss()
        m = simcore.Machine(mem=mem, seed=0)
        after = _rss()
        return (after - before) / m.nr_pages

    track_rss_bytes_per_page.unit = "bytes/page"


class AllocFreeChurn:
    """Bulk churn on a machine filled to 50% with folios of orders 0..9 (equal pages per order,
    seeded). One round: for every order, free_many() a random 10% of that order's folios and
    alloc_many() the same number of the same order. Subsets are drawn in setup (NR_SUBSETS per
    order, used in turn); the timed code does no RNG work, only the gather/scatter of the held
    PFN arrays around the two allocator calls (3-5% of a round). Setup ends with WARM_ROUNDS
    untimed rounds, so every timed round is a steady-state one. Target: >= 10 M ops/s on 16G,
    per-op cost flat (within 20%) from 1G to 64G."""

    params = [MEMS]
    param_names = ["mem"]
    timeout = 600           # setup (build + fill, ~1 s at 64G) may re-run before every call
    warmup_time = 0.0       # the warm-up happens in setup; extra calls would cost a setup each
    repeat = (5, 10, 30.0)
    number = 1

    def setup(self, mem):
        _warm_up()
        rng = np.random.default_rng(SEED)
        self.m = simcore.Machine(mem=mem, seed=0)
        self.held = _fill_half(self.m, rng)
        self.k = {o: max(1, len(h) // int(round(1 / CHURN_FRACTION))) for o, h in self.held.items()}
        self.subsets = {o: [rng.choice(len(self.held[o]), self.k[o], replace=False)
                            for _ in range(NR_SUBSETS)] for o in FILL_ORDERS}
        self.round = 0
        self.ops_per_round = 2 * sum(self.k.values())
        gc.collect()            # before the warm rounds: a collection walks every Python
        for _ in range(WARM_ROUNDS):    # object and would leave the caches cold for the
            self._churn_round()         # timed round (asv disables gc while timing)

    def _churn_round(self):
        m, held = self.m, self.held
        r = self.round % NR_SUBSETS
        self.round += 1
        for o in FILL_ORDERS:
            idx = self.subsets[o][r]
            h = held[o]
            m.free_many(h[idx])
            new = m.alloc_many(self.k[o], o)
            if len(new) != len(idx):
                raise RuntimeError(f"churn: order {o} got {len(new)} of {len(idx)} folios")
            h[idx] = new

    def time_churn_round(self, mem):
        """Wall time of one churn round (ops_per_round allocator operations)."""
        self._churn_round()

    def track_ops_per_round(self, mem):
        """Allocator operations (frees + allocs) in one churn round: divide time_churn_round by
        this for the cost per operation. Deterministic."""
        return self.ops_per_round

    track_ops_per_round.unit = "ops"

    def track_churn_speed_mops(self, mem):
        """SPEED figure, not deterministic (keep it out of any exact-value baseline): median over
        9 steady-state rounds of (frees + allocs) / wall time, perf_counter inside this method."""
        rates = []
        for _ in range(9):
            t0 = time.perf_counter()
            self._churn_round()
            rates.append(self.ops_per_round / (time.perf_counter() - t0))
        return statistics.median(rates) / 1e6

    track_churn_speed_mops.unit = "Mops/s"


class SingleCalls:
    """m.alloc(0) then m.free(pfn) from Python, 10,000 pairs per call, on a 1G and a 16G machine.
    state "fresh": all memory free, so the pairs run on the per-CPU lists (a refill splits an
    order-10 block, a drain merges it back); "half-full": filled to 50% as in AllocFreeChurn.
    Target (issue 15): >= 1.5 M single calls per second on 16G (a pair in <= 1.33 us, a call of
    10,000 pairs in <= 13.3 ms); track_calls_speed_mops reports the rate itself."""

    params = [["fresh", "half-full"], ["1G", "16G"]]
    param_names = ["state", "mem"]
    timeout = 120
    warmup_time = 0.1
    repeat = (5, 20, 20.0)
    number = 1
    PAIRS = 10_000

    def setup(self, state, mem):
        _warm_up()
        self.m = simcore.Machine(mem=mem, seed=0)
        if state == "half-full":
            _fill_half(self.m, np.random.default_rng(SEED))
        pfn = self.m.alloc(0)
        self.m.free(pfn)
        gc.collect()

    def _pairs(self):
        alloc = self.m.alloc
        free = self.m.free
        for _ in range(self.PAIRS):
            free(alloc(0))

    def time_alloc_free_pair(self, state, mem):
        """Wall time of 10,000 alloc(0) + free(pfn) pairs (20,000 calls)."""
        self._pairs()

    def track_calls_speed_mops(self, state, mem):
        """SPEED figure, not deterministic: median over 9 calls of 20,000 single calls / wall
        time (perf_counter inside this method), in millions of calls per second."""
        rates = []
        for _ in range(9):
            t0 = time.perf_counter()
            self._pairs()
            rates.append(2 * self.PAIRS / (time.perf_counter() - t0))
        return statistics.median(rates) / 1e6

    track_calls_speed_mops.unit = "Mcalls/s"
