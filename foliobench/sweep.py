"""foliobench sweep: a grid of runs, each cell one task on Dask, results streamed to Parquet.

    foliobench sweep SPEC.toml | --grid NAME=V1,V2 ... [--quick] [--repeats N]
                     [--serial | --scheduler ADDRESS] [--workers N] [--worker-memory SIZE]
                     [--out ROOT] [--resume DIR]
    foliobench sweep show DIR [--figure NAME ...] [--plots DIR] [--format table|csv|json]

By default the cells run on a dask.distributed LocalCluster of processes (one worker per core,
each worker's memory limit from the largest simulated machine of the grid); --scheduler (or
Dask's scheduler-address config, DASK_SCHEDULER_ADDRESS) runs them on an existing cluster and
--serial in this process. A cell's rows are the same bit for bit in all three (only the
wall-clock columns, TIMING_COLUMNS, differ). Read the results back with pd.read_parquet(DIR).
"""
import contextlib
import functools
import gc
import os
import pathlib
import signal
import sys
import time

import psutil

from simcore.units import format_size, parse_size
from workloads.backend import SimBackend
from workloads.base import run_one

from .sweep_spec import CELL_BASE_BYTES, Cell, cell_bytes, grid_doc, load_spec, parse_spec

REPO_SWEEPS = pathlib.Path(__file__).resolve().parent.parent / "results" / "sweeps"
# Columns that measure this process's wall clock, not the simulated machine
TIMING_COLUMNS = ("sim_wall_s", "cell_wall_s", "cell_cpu_s")
# A worker's memory limit is the largest cell's estimate plus this share, and the worker's
# own footprint (CELL_BASE_BYTES)
HEADROOM = 1.25


def run_cell(cell, repeats=1):
    """One cell on whichever process runs it: `repeats` rows (plain dicts) with the grid
    coordinates, the figures of `foliobench run` and an error (None, or what went wrong).
    No simulated machine outlives its run: run_one() keeps nothing (keep=None) and the
    collector runs before the next repeat, so only the rows cross the wire."""
    cell = Cell.from_dict(cell) if isinstance(cell, dict) else cell
    if cell.snapshot:           # the digital twin of a snapshot (run W --snapshot FILE)
        from .replay import TwinBackend
        factory = functools.partial(TwinBackend, snapshot=cell.snapshot, profile=cell.profile)
    else:
        factory = functools.partial(SimBackend, profile=cell.profile)
    rows = []
    for r in range(repeats):
        t0, cpu0 = time.perf_counter(), time.process_time()
        try:
            row = run_one(cell.workload, cell.strategy, cell.mem, cell.seed, dict(cell.params),
                          cell.quick, backend_factory=factory)
            error = None
        except Exception as exc:          # a failing cell is a row with its error
            row, error = {}, f"{type(exc).__name__}: {exc}"
        gc.collect()
        rows.append({"cell": cell.key, "repeat": r, **cell.coords(), **row,
                     "profile": cell.profile, "error": error,
                     "cell_wall_s": time.perf_counter() - t0,
                     "cell_cpu_s": time.process_time() - cpu0})
    return rows


def error_rows(cell, repeats, exc):
    """The rows of a cell whose task itself failed (a killed worker, a lost connection)."""
    msg = f"{type(exc).__name__}: {exc}"
    return [{"cell": cell.key, "repeat": r, **cell.coords(), "profile": cell.profile,
             "error": msg} for r in range(repeats)]


class Progress:
    """"sweep: 12/60 cells, 1 failed, 3m20s left" on stderr: one self-updating line on a
    terminal, a line every 10% (or minute) otherwise."""

    def __init__(self, total, done=0, stream=None):
        self.total, self.done, self.failed = total, done, 0
        self.start_done = done
        self.start = time.monotonic()
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = (self.start, done)

    def line(self):
        ran = self.done - self.start_done
        left = self.total - self.done
        eta = "?" if not ran else _duration((time.monotonic() - self.start) / ran * left)
        return f"sweep: {self.done}/{self.total} cells, {self.failed} failed, {eta} left"

    def step(self, failed=False):
        self.done += 1
        self.failed += bool(failed)
        now = time.monotonic()
        if self.tty:
            self.stream.write(f"\r{self.line():70s}")
            self.stream.flush()
        elif (self.done - self._last[1] >= max(1, self.total // 10) or now - self._last[0] > 60
              or self.done == self.total):
            print(self.line(), file=self.stream, flush=True)
            self._last = (now, self.done)

    def finish(self):
        if self.tty:
            self.stream.write("\n")


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# ---- where the cells run ------------------------------------------------------------------

def worker_memory_needed(cells):
    """Bytes one worker needs for the largest cell of the grid (0 for no cells)."""
    if not cells:
        return 0
    return int(CELL_BASE_BYTES + HEADROOM * max(cell_bytes(c) for c in cells))


def _biggest(cells):
    cell = max(cells, key=cell_bytes)
    return f"{cell.mem} (snapshot {cell.snapshot})" if cell.snapshot else cell.mem


def plan_local(cells, workers=None, worker_memory=None, available=None):
    """(workers, memory limit per worker) for a LocalCluster, or ValueError when the largest
    cell cannot fit: one worker per core unless `workers`, fewer when memory is short."""
    need = worker_memory_needed(cells)
    available = psutil.virtual_memory().available if available is None else available
    if worker_memory is not None:
        limit = parse_size(worker_memory, "--worker-memory")
        if limit < need:
            raise ValueError(f"a {_biggest(cells)} cell needs about {format_size_approx(need)} "
                             f"per worker; --worker-memory is {format_size_approx(limit)}")
    else:
        limit = need
    if limit > available:
        raise ValueError(f"a {_biggest(cells)} cell needs about {format_size_approx(limit)} per "
                         f"worker; this machine has {format_size_approx(available)} available")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    fit = max(1, available // max(limit, 1))
    if workers is not None:
        if workers * limit > available:
            raise ValueError(f"{workers} workers x {format_size_approx(limit)} (a "
                             f"{_biggest(cells)} cell) need {format_size_approx(workers * limit)};"
                             f" this machine has {format_size_approx(available)} available")
        return workers, limit
    return int(min(cores or 1, fit)), limit


def format_size_approx(nbytes):
    for unit, name in ((1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M")):
        if nbytes >= unit:
            return f"{nbytes / unit:.1f}{name}"
    return format_size(nbytes)


def check_remote(client, cells):
    """ValueError unless some worker of the cluster has the memory the largest cell needs."""
    need = worker_memory_needed(cells)
    workers = client.scheduler_info(n_workers=-1)["workers"]
    if not workers:
        raise ValueError("the Dask cluster has no workers")
    limits = [w.get("memory_limit") or 0 for w in workers.values()]
    if all(limits) and max(limits) < need:
        raise ValueError(f"a {_biggest(cells)} cell needs about {format_size_approx(need)} per "
                         f"worker; the cluster's largest worker has "
                         f"{format_size_approx(max(limits))}")


@contextlib.contextmanager
def local_cluster(workers, memory_limit):
    """A LocalCluster of `workers` single-threaded worker processes. Dask's spilling and
    pausing are off (a cell keeps no data in the worker; a paused worker whose freed memory
    the allocator has not returned would stop taking cells); the nanny still ends a worker
    that passes 95% of its limit, and that cell becomes an error row. Dask's default
    MALLOC_TRIM_THRESHOLD_ for workers is unset: it turns off glibc's adaptive mmap threshold,
    so every large numpy array of a cell was mapped and faulted in afresh (cells ran 3x
    slower)."""
    import dask
    from distributed import Client, LocalCluster
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                          "distributed.worker.memory.target": False,
                          "distributed.worker.memory.spill": False,
                          "distributed.worker.memory.pause": False,
                          "distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               memory_limit=memory_limit, dashboard_address=None,
                               host="127.0.0.1", silence_logs=50)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()


@contextlib.contextmanager
def remote_client(address):
    from distributed import Client
    with Client(address, timeout="30s") as client:
        yield client


def serial_results(cells, repeats, cell_fn):
    for cell in cells:
        yield cell, cell_fn(cell.to_dict(), repeats)


def dask_results(client, cells, repeats, cell_fn):
    """(cell, rows) as the cells finish; the rest are cancelled when the caller stops."""
    from distributed import as_completed
    futures = {client.submit(cell_fn, c.to_dict(), repeats, key=f"foliobench-cell-{c.key}",
                             pure=False): c for c in cells}
    try:
        for fut in as_completed(list(futures)):
            cell = futures.pop(fut)
            try:
                rows = fut.result()
            except Exception as exc:        # the worker died or the task could not run
                rows = error_rows(cell, repeats, exc)
            fut.release()
            yield cell, rows
    finally:
        if futures:
            client.cancel(list(futures))


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM stops a sweep like Ctrl-C: the finished cells stay."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:                    # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_sweep(spec, store, *, serial=False, scheduler=None, workers=None, worker_memory=None,
              cell_fn=run_cell, progress_stream=None, log=None):
    """Run the cells of `spec` that `store` lacks or has only as an error (a resumed sweep
    re-runs its failed cells); write each as it finishes. Returns (cells run, cells failed,
    interrupted). ValueError before any work when a cell cannot fit."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    cells = spec.cells()
    store.clean_temporaries()
    todo = store.todo(cells)
    progress = Progress(len(cells), len(cells) - len(todo), progress_stream)
    if serial:
        plan_local(todo, 1, worker_memory)             # refuses what cannot fit here
        runner = contextlib.nullcontext(None)
    elif scheduler:
        runner = remote_client(scheduler)
    else:
        n, limit = plan_local(todo, workers, worker_memory)
        if todo:
            log(f"sweep: {len(todo)} cells on a local Dask cluster of {n} workers, "
                f"{format_size_approx(limit)} each")
        runner = local_cluster(n, limit) if todo else contextlib.nullcontext(None)
    interrupted = False
    ran = failed = 0
    with _sigterm_as_interrupt():
        try:
            with runner as client:
                if client is not None and scheduler:
                    check_remote(client, todo)
                results = serial_results(todo, spec.repeats, cell_fn) if client is None \
                    else dask_results(client, todo, spec.repeats, cell_fn)
                try:
                    for cell, rows in results:
                        store.write_cell(cell, rows)
                        bad = any(r.get("error") for r in rows)
                        ran, failed = ran + 1, failed + bad
                        progress.step(bad)
                finally:
                    results.close()
        except KeyboardInterrupt:
            interrupted = True
    progress.finish()
    return ran, failed, interrupted


# ---- command line -------------------------------------------------------------------------

def add_parser(sub):
    p = sub.add_parser("sweep", help="a grid of runs on Dask, results in a Parquet dataset; "
                                     "'sweep show DIR' for tables and plots")
    p.add_argument("target", nargs="*", metavar="SPEC | show DIR",
                   help="a TOML spec (see docs/sweeps.md), or 'show' and a sweep directory")
    p.add_argument("--grid", action="append", metavar="NAME=V1,V2|START:STOP:STEP",
                   help="an axis: workload, strategy, profile, mem, seed or a workload "
                        "parameter (repeatable; instead of SPEC)")
    p.add_argument("--quick", action="store_true", help="quick parameter values, 1G machines")
    p.add_argument("--repeats", type=int, default=None, help="runs of each cell (same seed)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--serial", action="store_true", help="run the cells in this process")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="an existing Dask scheduler (default: Dask's scheduler-address "
                            "config / DASK_SCHEDULER_ADDRESS, else a local cluster)")
    p.add_argument("--workers", type=int, help="local cluster workers (default one per core)")
    p.add_argument("--worker-memory", metavar="SIZE",
                   help="memory limit per local worker (default: from the largest cell)")
    p.add_argument("--out", help="results root (default results/sweeps)")
    p.add_argument("--resume", metavar="DIR", help="run the cells DIR lacks and again those "
                                                   "that failed")
    p.add_argument("--figure", action="append", help="show: the figures to plot "
                                                     "(repeatable; default the headline ones)")
    p.add_argument("--plots", metavar="DIR", help="show: where the PNGs go (default DIR/_plots)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="show: the summary's format")
    p.set_defaults(func=main)


def _spec_and_store(args):
    # pyarrow (Parquet) only when a sweep runs: `foliobench guest` runs the other commands
    # without it
    from .sweep_store import SweepStore
    if args.resume:
        if args.target or args.grid or args.quick or args.repeats is not None:
            raise ValueError("--resume DIR takes its grid from DIR; give no SPEC, --grid, "
                             "--quick or --repeats")
        store = SweepStore(args.resume)
        return store.spec(), store
    if args.target and args.grid:
        raise ValueError("give a SPEC file or --grid flags, not both")
    if len(args.target) > 1:
        raise ValueError(f"one SPEC file, got {len(args.target)}: {' '.join(args.target)}")
    if args.target:
        spec = load_spec(args.target[0])
        if args.quick or args.repeats is not None:
            spec = parse_spec({**spec.to_dict(), **({"quick": True} if args.quick else {}),
                               **({} if args.repeats is None else {"repeats": args.repeats})})
        text = pathlib.Path(args.target[0]).read_text()
    elif args.grid:
        spec = parse_spec(grid_doc(args.grid, args.quick,
                                   1 if args.repeats is None else args.repeats))
        text = None
    else:
        raise ValueError("sweep needs a SPEC file, --grid NAME=VALUES flags or --resume DIR")
    return spec, (text, pathlib.Path(args.out) if args.out else REPO_SWEEPS)


def main(args):
    if args.target[:1] == ["show"]:
        from .sweep_show import show
        if len(args.target) != 2:
            raise ValueError("sweep show takes one sweep directory")
        return show(args.target[1], figures=args.figure, plots=args.plots, fmt=args.format)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers {args.workers} must be at least 1")
    if args.workers is not None and (args.serial or args.scheduler):
        raise ValueError("--workers sizes the local cluster; not with --serial or --scheduler")
    spec, store = _spec_and_store(args)
    scheduler = args.scheduler
    if not args.serial and not scheduler:
        import dask
        scheduler = dask.config.get("scheduler-address", None)
    cells = spec.cells()
    if args.serial:
        plan_local(cells, 1, args.worker_memory)
    elif not scheduler:
        plan_local(cells, args.workers, args.worker_memory)   # refuse before creating DIR
    else:
        with remote_client(scheduler) as client:
            check_remote(client, cells)
    from .sweep_store import SweepStore
    if not isinstance(store, SweepStore):
        text, root = store
        store = SweepStore.create(root, spec, sys.argv[1:], text)
    print(f"sweep: {len(cells)} cells x {spec.repeats} repeats -> {store.path}", file=sys.stderr)
    ran, failed, interrupted = run_sweep(spec, store, serial=args.serial, scheduler=scheduler,
                                         workers=args.workers, worker_memory=args.worker_memory)
    left = len(store.missing(cells))
    again = "" if not failed or interrupted else \
        f"  (--resume {store.path} runs the failed cells again)"
    print(f"sweep: {ran} cells run ({failed} failed), {left} left; results: {store.path}"
          + (f"  (interrupted: resume with --resume {store.path})" if interrupted else again),
          file=sys.stderr)
    return 130 if interrupted else 0
