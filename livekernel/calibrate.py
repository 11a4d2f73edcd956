"""`foliobench live calibrate`: the simulator's migration cost model, measured on this kernel.

For each anonymous folio size (4K via MADV_NOHUGEPAGE, then the mTHP sizes below a pageblock,
which compaction may migrate whole since 6.9; the per-size `split` stat counts those it split
instead), a region of the arena is faulted with only that size
enabled, the first half of every 2 MiB chunk is unmapped (mmtests thpcompact's shape) and
echo 1 > /proc/sys/vm/compact_memory compacts the machine; wall time and the deltas of
pgmigrate_success and the scanners' counters are recorded. Repeated `repeat` times per size
with a freshly fragmented region, then once more over the sizes (up to EXTRA_PASSES times)
while fewer than MIN_FIT_ROWS compactions migrated anything: on a large machine with plenty
free, compact_memory often moves nothing of a small region (the host decides where it sits).

The model (simcore/costs.py) says a compaction takes
    folios * migrate_folio_fixed_ns + pages * copy_ns_per_page + pfns_scanned * scan_ns_per_pfn
so the three are fitted by non-negative least squares over every measurement. Folios moved are
counted from pgmigrate_success: the split folios' pages moved as base pages, the rest whole at
the region's order (the region dominates what compaction moves; the rest of the machine is
mostly free). writeback_wait_ns is not measured here and keeps its default. simulate() runs
the same experiment on simcore at this machine's size, for the side-by-side in the output.
"""
import json
import platform
import time

import numpy as np

from simcore.costs import DEFAULT_COSTS, cost_array

FORMAT = "foliobench-costs/1"
COMPACT_MEMORY = "/proc/sys/vm/compact_memory"
FITTED = ("migrate_folio_fixed_ns", "copy_ns_per_page", "scan_ns_per_pfn")
CALIBRATION_ORDERS = (0, 2, 4, 6, 8)
MIN_FIT_ROWS = 3            # three unknowns
EXTRA_PASSES = 3


def _fragment(backend, order):
    """Fault the arena's worth of `order` folios, unmap the first half of every 2 MiB chunk.
    Returns the handles still mapped."""
    got = backend.fault_anon(backend.total_pages >> order, [order])
    handles = np.concatenate(list(got.values())) if got else np.empty(0, dtype=np.int64)
    offsets = backend._off[handles]
    first_half = (offsets % 512) < 256
    backend.free(handles[first_half])
    return handles[~first_half], {int(o): len(h) for o, h in got.items()}


def measure(live, orders=CALIBRATION_ORDERS, repeat=3):
    """One dict per compaction: order, wall ns, pages migrated, PFNs scanned, the fault sizes
    the kernel gave."""
    out = []
    sizes_known = None
    for order in orders:
        for _ in range(repeat):
            backend = live.factory(seed=0)
            try:
                if sizes_known is None:
                    sizes_known = set(backend._sizes) | {0}
                if order not in sizes_known:
                    break
                kept, faulted = _fragment(backend, order)
                before = backend.counters()
                t0 = time.perf_counter_ns()
                live.journal.write_only(COMPACT_MEMORY, 1)
                elapsed = time.perf_counter_ns() - t0
                after = backend.counters()
                d = {k: after[k] - before.get(k, 0) for k in after}
                out.append({
                    "order": order, "elapsed_ns": elapsed,
                    "pgmigrate_success": d.get("pgmigrate_success", 0),
                    "pgmigrate_fail": d.get("pgmigrate_fail", 0),
                    "compact_migrate_scanned": d.get("compact_migrate_scanned", 0),
                    "compact_free_scanned": d.get("compact_free_scanned", 0),
                    "split": d.get(f"mthp_{4 << order}K_split", 0) if order else 0,
                    "faulted_folios": faulted,
                    "region_pages_kept": int(len(kept)) << order,
                })
            finally:
                backend.close()
    return out


def measure_enough(live, orders=CALIBRATION_ORDERS, repeat=3):
    """measure(), then further single passes over the sizes (at most EXTRA_PASSES) until
    MIN_FIT_ROWS compactions have migrated something."""
    ms = measure(live, orders, repeat)
    for _ in range(EXTRA_PASSES):
        if sum(m["pgmigrate_success"] > 0 for m in ms) >= MIN_FIT_ROWS:
            break
        ms += measure(live, orders, 1)
    return ms


def simulate(measurements, mem, region_bytes, costs=None, strategy="folio"):
    """The same experiment on simcore at this machine's size: the region's folios allocated,
    the first half of every 2 MiB chunk of the region freed, Machine.compact(). One dict per
    folio size, in the measurements' terms (pages migrated, scanners' PFNs, large folios split,
    modelled time)."""
    import simcore
    out = {}
    for order in sorted({m["order"] for m in measurements}):
        m = simcore.Machine(mem=mem, seed=0, compaction=strategy, costs=costs)
        pfns = m.alloc_many((region_bytes // 4096) >> order, order, "movable", "anon",
                            compact=False)
        offsets = np.arange(len(pfns), dtype=np.int64) << order
        m.free_many(pfns[(offsets % 512) < 256])
        v0, s0 = m.vmstat(), m.migration_stats()
        m.compact()
        v1, s1 = m.vmstat(), m.migration_stats()
        out[order] = {
            "pgmigrate_success": v1["pgmigrate_success"] - v0["pgmigrate_success"],
            "compact_migrate_scanned": v1["compact_migrate_scanned"]
            - v0["compact_migrate_scanned"],
            "compact_free_scanned": v1["compact_free_scanned"] - v0["compact_free_scanned"],
            "split": s1["nr_split"] - s0["nr_split"],
            "modelled_ns": s1["time_ns"] - s0["time_ns"],
        }
    return out


def fit(measurements):
    """Non-negative least squares of elapsed_ns on (folios, pages, PFNs scanned)."""
    rows = [m for m in measurements if m["pgmigrate_success"] > 0]
    if len(rows) < MIN_FIT_ROWS:
        raise ValueError(f"only {len(rows)} of {len(measurements)} compactions migrated "
                         f"anything; need {MIN_FIT_ROWS} to fit")
    a = np.array([[_folios_moved(m), m["pgmigrate_success"],
                   m["compact_migrate_scanned"] + m["compact_free_scanned"]] for m in rows],
                 dtype=float)
    b = np.array([m["elapsed_ns"] for m in rows], dtype=float)
    active = [0, 1, 2]
    while active:
        coef, *_ = np.linalg.lstsq(a[:, active], b, rcond=None)
        if (coef >= 0).all():
            break
        active.pop(int(np.argmin(coef)))            # drop the most negative term, refit
    values = np.zeros(3)
    values[active] = coef
    pred = a @ values
    r2 = 1 - ((b - pred) ** 2).sum() / max(((b - b.mean()) ** 2).sum(), 1e-9)
    return dict(zip(FITTED, values.tolist())), float(r2)


def _folios_moved(m):
    """Folios migrate_pages() moved: a split folio's pages went one by one."""
    pages, order = m["pgmigrate_success"], m["order"]
    as_pieces = min(m.get("split", 0) << order, pages)
    return (pages - as_pieces) / (1 << order) + as_pieces


def throughput(measurements):
    """{order: pgmigrate_success per second}, the median over repeats."""
    out = {}
    for order in sorted({m["order"] for m in measurements}):
        rates = [m["pgmigrate_success"] / (m["elapsed_ns"] / 1e9)
                 for m in measurements if m["order"] == order and m["elapsed_ns"]]
        out[order] = float(np.median(rates)) if rates else float("nan")
    return out


def calibrate(live, repeat=3, orders=CALIBRATION_ORDERS):
    """Measure and fit: the cost model document (format_costs() gives the file's text)."""
    ms = measure_enough(live, orders, repeat)
    costs, r2 = fit(ms)                 # only what was measured: the rest keeps its default
    cost_array(costs)                                  # the simulator must accept it
    from .compare import live_machine_size
    sim_mem = live_machine_size()
    sims = {"default_costs": simulate(ms, sim_mem, live.arena),
            "calibrated_costs": simulate(ms, sim_mem, live.arena, costs)}
    doc = {"format": FORMAT, "kernel": platform.release(), "machine": platform.node(),
           "simulated": {"mem": sim_mem, "strategy": "folio",
                         **{k: {str(o): v for o, v in r.items()} for k, r in sims.items()}},
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "arena_bytes": live.arena, "costs": costs, "fit_r2": r2,
           "unfitted": [k for k in DEFAULT_COSTS if k not in costs],
           "throughput_pages_per_s": {str(k): v for k, v in throughput(ms).items()},
           "measurements": ms}
    return doc


def format_costs(doc):
    """The text of a cost model file, as load_costs() reads it."""
    return json.dumps(doc, indent=1) + "\n"


def load_costs(path):
    """The cost overrides of a calibration file, checked; ValueError naming what is wrong."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise ValueError(f"--costs {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--costs {path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or \
            not isinstance(doc.get("costs"), dict):
        raise ValueError(f"--costs {path} is not a foliobench cost file (format {FORMAT!r} "
                         f"with a \"costs\" object)")
    cost_array(doc["costs"])
    return doc["costs"]


def format_calibration(doc):
    lines = [f"kernel {doc['kernel']}, arena {doc['arena_bytes'] >> 20} MiB, "
             f"fit R^2 {doc['fit_r2']:.3f}"]
    for name in FITTED:
        lines.append(f"  {name:24} {doc['costs'][name]:12.1f}   (default "
                     f"{DEFAULT_COSTS[name]:.1f})")
    lines.append("  migration throughput (pgmigrate_success per second of compact_memory):")
    for order, rate in doc["throughput_pages_per_s"].items():
        lines.append(f"    {4 << int(order):>5}K folios: {rate:12.0f} pages/s")
    sim = doc.get("simulated")
    if sim:
        lines.append(f"  the same experiment, live (median) vs simulated ({sim['mem']}, "
                     f"{sim['strategy']}):")
        lines.append(f"    {'size':>6} {'migrated':>17} {'migrate scanned':>21} "
                     f"{'free scanned':>21} {'split':>11} {'pages/s (calibrated)':>25}")
        for order in doc["throughput_pages_per_s"]:
            live = [m for m in doc["measurements"] if m["order"] == int(order)]
            med = {k: float(np.median([m[k] for m in live])) for k in
                   ("pgmigrate_success", "compact_migrate_scanned", "compact_free_scanned",
                    "split")}
            d, c = sim["default_costs"][order], sim["calibrated_costs"][order]
            rate = c["pgmigrate_success"] / (c["modelled_ns"] / 1e9) if c["modelled_ns"] else 0
            lines.append(
                f"    {4 << int(order):>5}K {med['pgmigrate_success']:>8.0f}"
                f" {d['pgmigrate_success']:>8}"
                f" {med['compact_migrate_scanned']:>10.0f} {d['compact_migrate_scanned']:>10}"
                f" {med['compact_free_scanned']:>10.0f} {d['compact_free_scanned']:>10}"
                f" {med['split']:>5.0f} {d['split']:>5}"
                f" {doc['throughput_pages_per_s'][order]:>12.0f} {rate:>12.0f}")
    return "\n".join(lines)
