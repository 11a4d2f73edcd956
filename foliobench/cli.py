"""foliobench: how well Linux memory management copes with large folios, measured.

    foliobench list
    foliobench run WORKLOAD [--strategy NAME ...] [--param KEY=VALUE ...] [--mem 16G] [--seed N]
                   [--repeat N] [--quick] [--format table|csv|json] [--out DIR]
    foliobench run --all
    foliobench run WORKLOAD --backend live [--backend sim] [--dry-run] [--allow-offline]
                   [--mem ARENA] [--mem-cap 50%|SIZE] [--sim-mem SIZE]     (root)
    foliobench live probe [--json] | live calibrate [-o FILE] | live restore
    foliobench live record [-o FILE] [--duration S | -- COMMAND ...]          (root)
    foliobench replay TRACE [--strategy NAME ...] [--profile NAME] [-o FILE]
    foliobench matrix [--backend sim|live] [--profile NAME ...] [--sizes 4K,64K,2M]
                      [--format md|html|json] [-o DIR]
    foliobench sweep SPEC.toml | --grid NAME=V1,V2 ... [--serial | --scheduler ADDR] [--resume DIR]
    foliobench sweep show DIR
    foliobench guest [--kernel PATH|RELEASE] [--mem 4G] [--numa N] [--movable SIZE] -- COMMAND
    foliobench matrix --backend guest:RELEASE ... | agreement MATRIX_JSON...
    foliobench compare-runs DIR DIR... [--min-effect 5] [--fail-on-regression]
    foliobench show RESULT [--format ...]
    foliobench demo

Bad input: one line on stderr, exit code 2, no traceback, no results written. Ctrl-C stops
cleanly and keeps the rows that completed.
"""
import argparse
import os
import pathlib
import re
import sys
import tempfile
import threading
import time

import numpy as np
import pandas as pd

import simcore
import workloads
from simcore.pcp import MAX_CPUS
from workloads.backend import sim_factory
from workloads.base import (
    DEFAULT_MEM,
    MAX_REPEAT,
    MAX_SEED,
    QUICK_MEM,
    check_memory,
    get_workload,
    headline_columns,
    resolve_params,
    run_one,
)
from workloads.fragment import fragment

from . import (
    agreement,
    compare_runs,
    fidelity_cli,
    guest,
    matrix,
    results,
    sweep,
    trace_cli,
    twin_cli,
)

# FOLIOBENCH_RESULTS: a guest's run directory (foliobench guest), the one place it may write
REPO_RESULTS = pathlib.Path(os.environ.get("FOLIOBENCH_RESULTS")
                            or pathlib.Path(__file__).resolve().parent.parent / "results")
SUMMARY = ["highorder_success", "compaction_success_rate", "pages_migrated",
           "migration_gib_per_s", "large_folio_preservation", "compact_scan_efficiency",
           "unusable_9_before", "unusable_9_after", "sim_wall_s"]
BAR_METRICS = ["highorder_success", "compaction_success_rate", "migration_gib_per_s",
               "large_folio_preservation", "pages_migrated", "unusable_9_after"]


class UsageError(Exception):
    """A problem with what the user asked for; reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kw):
        kw.setdefault("allow_abbrev", False)   # --me is not --mem: a typo is an error
        super().__init__(*args, **kw)

    def error(self, message):
        raise UsageError(message)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the rows that completed are kept (exit code 143)."""


def _on_sigterm(signum, frame):
    raise Terminated()


# ---- list ---------------------------------------------------------------------------------

def _list(args):
    print("workloads (quick size 1G, default size 16G):")
    for name in workloads.workloads():
        cls = get_workload(name)
        print(f"  {name}: {cls.description}")
        for pname, param in cls.params.items():
            quick = f", quick {param.quick}" if param.quick is not None else ""
            allowed = param.describe()
            allowed = f", allowed {allowed}" if allowed else ""
            print(f"      {pname} = {param.default}{quick}{allowed}: {param.doc}")
    print("strategies:")
    from simcore.strategies import get_strategy
    for name in simcore.strategies():
        cls = get_strategy(name)
        print(f"  {name} ({cls.kernel}): {cls.description}")
    print("backends:")
    print("  sim: simcore, the simulator (default)")
    print("  live: the running kernel (--backend live, root; see 'foliobench live probe')")
    print("kernel profiles (foliobench matrix --profile NAME):")
    from simcore import profiles
    for name in profiles.profiles():
        print(f"  {name}: {profiles.get_profile(name).description}")
    return 0


# ---- run ----------------------------------------------------------------------------------

def _params(pairs):
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {pair!r} must look like KEY=VALUE")
        if key in out:
            raise UsageError(f"--param {key} is given twice ({key}={out[key]} and {pair}); "
                             f"give each parameter once")
        out[key] = value
    return out


class _Progress:
    """Progress on stderr: one self-updating line on a terminal ("auto"), one line per completed
    run for logs and scripts ("lines"), or nothing ("none", and "auto" off a terminal)."""

    def __init__(self, total, mode="auto"):
        self.total = total
        self.done = 0
        self.mode = mode if mode != "auto" else ("bar" if sys.stderr.isatty() else "none")
        self.start = time.perf_counter()

    def step(self, label):
        if self.mode == "bar":
            width = 30
            filled = width * self.done // max(self.total, 1)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
                             f" {label:40.40s}")
            sys.stderr.flush()

    def completed(self, label):
        self.done += 1
        if self.mode == "lines":
            print(f"done {self.done}/{self.total}: {label} "
                  f"({time.perf_counter() - self.start:.1f} s)", file=sys.stderr, flush=True)

    def finish(self):
        if self.mode == "bar":
            sys.stderr.write(f"\r{' ' * 80}\r")
            sys.stderr.flush()


def _run_request(args):
    """The run's workloads, backends, strategies and parameters, every one checked before any
    work starts (UsageError/ValueError otherwise)."""
    from simcore.strategies import get_strategy
    if not args.all and not args.workload:
        raise UsageError("run needs a WORKLOAD or --all; see 'foliobench list'")
    names = workloads.workloads() if args.all else [args.workload]
    backends = list(dict.fromkeys((args.backend or []) + (["live"] if args.live else [])))
    backends = backends or ["sim"]
    live_opts = args.dry_run or args.allow_offline or args.mem_cap or args.sim_mem
    if "live" not in backends and live_opts:
        raise UsageError("--dry-run, --allow-offline, --mem-cap and --sim-mem apply to live "
                         "runs: add --backend live")
    if args.twin and (set(backends) != {"sim", "live"} or args.dry_run or args.snapshot
                      or args.costs or args.sim_mem):
        raise UsageError("--twin starts the simulator from the live machine's memory: it needs "
                         "--backend sim --backend live, and no --dry-run, --snapshot, --costs "
                         "or --sim-mem")
    # a side-by-side run compares the kernel with the strategy of kernels 6.9 and later
    strategies = args.strategy or (["folio"] if "live" in backends else simcore.strategies())
    for s in strategies:
        get_strategy(s)
    params = _params(args.param)
    if args.seed + args.repeat - 1 > MAX_SEED:
        raise UsageError(f"--seed {args.seed} with --repeat {args.repeat} goes past {MAX_SEED}")
    if args.all and params:
        raise UsageError("--param applies to one workload; give a WORKLOAD instead of --all")
    if args.mem is not None:
        simcore.parse_size(args.mem, "--mem")
    for name in names:
        resolve_params(name, params, args.quick)          # validate before any work
    if not args.no_save and not args.dry_run:
        _check_out(args.out)
    return names, backends, strategies, params


def _backends(args, backends, costs):
    """(live session or None, backends, simulated machine size, simulator factory): the command
    line chooses the backends, the simulator, the live kernel or both."""
    live = None
    if "live" in backends:
        from livekernel.session import LiveSession
        live = LiveSession(mem=args.mem, mem_cap=args.mem_cap, dry_run=args.dry_run,
                           allow_offline=args.allow_offline, workdir=args.live_dir,
                           out=sys.stdout if args.dry_run else None)
        if args.dry_run:
            backends, args.no_save = ["live"], True
    if live is not None:
        from livekernel.compare import live_machine_size
        sim_mem = args.sim_mem or live_machine_size()
        # --twin: _execute() builds each seed's twin factory from its snapshot
        sim_backend = None if args.twin else sim_factory(
            live.arena, costs, args.cpus, args.threads, budget_hugetlb=not live.disposable)
    else:
        sim_mem, sim_backend = args.mem, sim_factory(None, costs, args.cpus, args.threads)
    if args.snapshot:
        if live is not None or costs:
            raise UsageError("--snapshot runs on the simulator only, without --costs")
        sim_backend, sim_mem = twin_cli.snapshot_factory(args.snapshot, args.mem)
    if "sim" in backends:
        # one machine alive at a time: a row keeps its maps and counters, never its machine
        check_memory(sim_mem or (QUICK_MEM if args.quick else DEFAULT_MEM),
                     pictures=not (args.no_save or args.no_plots))
    return live, backends, sim_mem, sim_backend


def _twin_of_live(live, snapshot_dir, seed):
    """Snapshot the live machine now (livekernel.snapshot) and return (path, a factory of its
    twin with the workload sized to the live arena)."""
    from livekernel import snapshot

    from .replay import twin_factory
    path = str(pathlib.Path(snapshot_dir) / f"snapshot-seed{seed}.npz")
    try:
        snapshot.write(path)
    except snapshot.SnapshotError as exc:
        raise UsageError(f"--twin: {exc}") from None
    return path, twin_factory(path, arena_pages=live.arena // 4096,
                              budget_hugetlb=not live.disposable)


def _execute(args, plan, params, live, sim_mem, sim_backend, snapshot_dir=None):
    """Run the plan: (rows, keeps, exit status of an interruption or 0). Ctrl-C and SIGTERM
    (Terminated here, SystemExit(143) from the live journal) keep the rows that completed.
    With --twin, every live row is preceded by a snapshot of the live machine, and the
    simulator rows of its seed start from that snapshot's twin."""
    progress = _Progress(len(plan), args.progress)
    rows, keeps = [], []
    interrupted = 0
    try:
        for name, backend, strategy, seed in plan:
            label = f"{name} {backend} {strategy} seed {seed}"
            progress.step(label)
            keep = {}
            if backend == "live" and args.twin:
                keep["twin_snapshot"], sim_backend = _twin_of_live(live, snapshot_dir, seed)
            if backend == "live":
                row = run_one(name, strategy, live.mem, seed, params, args.quick, keep=keep,
                              backend_factory=live.factory)
            else:
                row = run_one(name, strategy, sim_mem, seed, params, args.quick, keep=keep,
                              backend_factory=sim_backend)
            rows.append(row)
            keeps.append(keep)
            progress.completed(label)
    except (KeyboardInterrupt, SystemExit) as exc:
        interrupted = 143 if isinstance(exc, (Terminated, SystemExit)) else 130
    progress.finish()
    return rows, keeps, interrupted


def _run(args):
    import contextlib
    names, backends, strategies, params = _run_request(args)
    costs = _load_costs(args.costs) if args.costs else None
    live, backends, sim_mem, sim_backend = _backends(args, backends, costs)
    if args.twin:                # each seed's snapshot is taken right before its live row
        backends = ["live", "sim"]
    plan = [(name, backend, s, args.seed + r)
            for name in names for r in range(args.repeat) for backend in backends
            for s in (strategies if backend == "sim" else ["kernel"])]
    # --twin's snapshots live until the run directory has copied them
    snapshots = (tempfile.TemporaryDirectory(prefix="foliobench-twin-") if args.twin
                 else contextlib.nullcontext())
    with snapshots as snapshot_dir:
        with live if live is not None else contextlib.nullcontext():
            rows, keeps, interrupted = _execute(args, plan, params, live, sim_mem, sim_backend,
                                                snapshot_dir)
        return _report(args, names, rows, keeps, interrupted, live)


def _report(args, names, rows, keeps, interrupted, live):
    if live is not None and live.journal.errors:
        print("foliobench: some settings could not be restored (see above)", file=sys.stderr)
    if args.dry_run:
        print(f"dry run: {len(live.journal.log)} writes listed above; nothing was changed")
        return interrupted or 0
    if not rows:
        print("foliobench: interrupted before any run completed; nothing saved", file=sys.stderr)
        return interrupted
    df = pd.DataFrame(rows)
    print(results.format_table(_summary(df) if args.format == "table" else df, args.format))
    if not args.no_save:
        out = _save(df, keeps, names, args)
        print(f"\nsaved: {out}" + ("  (interrupted: partial)" if interrupted else ""),
              file=sys.stderr if args.format != "table" else sys.stdout)
    return interrupted or 0


def _summary(df):
    names = list(dict.fromkeys(df["workload"])) if "workload" in df.columns else []
    names = [n for n in names if n in workloads.workloads() or str(n).startswith("trace:")]
    cols = ["workload", "backend", "strategy", "seed"] + [c for c in SUMMARY if c in df.columns]
    cols += headline_columns(list(df.columns), names)
    if "unsupported" in df.columns and df["unsupported"].fillna("").astype(bool).any():
        cols.append("unsupported")
    return df[[c for c in cols if c in df.columns]]


def _check_out(out):
    """UsageError unless the results root can be written: found before the work, not after it.
    os.access() says yes to root almost anywhere (/proc too), so a directory is really made."""
    root = pathlib.Path(out) if out else REPO_RESULTS
    try:
        results.check_output_dir(root, "--out")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    probe = root.absolute()
    while not probe.exists():
        probe = probe.parent
    try:
        tempfile.TemporaryDirectory(dir=probe, prefix=".foliobench-probe-").cleanup()
    except OSError as exc:
        raise UsageError(f"--out {str(root)!r}: {probe} cannot be written: "
                         f"{exc.strerror or exc}") from None


def _load_costs(path):
    from livekernel.calibrate import load_costs
    return load_costs(path)


def _save(df, keeps, names, args):
    """Save the run atomically (results.save_run): a run killed while saving leaves no run
    directory behind, only a hidden staging one that the next run or show removes."""
    root = pathlib.Path(args.out) if args.out else REPO_RESULTS
    label = "all" if len(names) > 1 else names[0]
    results.cleanup_leftovers(root / "runs")
    return results.save_run(results.new_run_dir(root, label),
                            lambda run_dir: _write_run(run_dir, df, keeps, names, args))


def _file_tag(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")


def _write_run(run_dir, df, keeps, names, args):
    for (_, row), keep in zip(df.iterrows(), keeps):
        # a trace:FILE workload's name holds a path: file names keep only safe characters
        tag = _file_tag(f"{row['workload']}-{row['strategy']}-seed{row['seed']}")
        results.write_json(run_dir, f"vmstat-delta-{tag}", keep.get("vmstat_delta", {}))
        if "twin_snapshot" in keep:         # what the twin rows of this seed started from
            path = pathlib.Path(keep["twin_snapshot"])
            results.write_bytes(run_dir, path.name, path.read_bytes())
        # before and after the workload, and any the workload kept between its phases
        for key in ["buddyinfo_before", "buddyinfo_after"] + sorted(
                k for k in keep if k.startswith("buddyinfo_") and k not in (
                    "buddyinfo_before", "buddyinfo_after")):
            name = key.replace("_", "-")
            results.write_text(run_dir, f"{name}-{tag}.txt", keep.get(key, ""))
    for name in names:
        sub = df[df["workload"] == name]
        if sub.empty:                      # interrupted before this workload ran
            continue
        panels = []
        for (_, row), keep in zip(df.iterrows(), keeps):
            if row["workload"] != name or row["seed"] != args.seed or "map_after" not in keep:
                continue
            if not panels:
                mt, free = keep["map_before"]
                panels.append({"title": f"fragmented ({row['strategy']} run)", "migratetype": mt,
                               "free_share": free})
            mt, free = keep["map_after"]
            panels.append({"title": f"after: {row['strategy']}", "migratetype": mt,
                           "free_share": free})
        if getattr(args, "no_plots", False):
            continue
        # matplotlib only where pictures are drawn: a guest under TCG reads it over 9p
        from . import report
        if panels:
            report.fragmentation_map(panels, run_dir / f"fragmap-{_file_tag(name)}.png",
                                     title=f"{name}: physical memory, one cell per pageblock")
        metrics = [m for m in BAR_METRICS + headline_columns(list(sub.columns), [name])
                   if m in sub.columns and pd.api.types.is_numeric_dtype(sub[m])]
        report.metric_bars(sub, metrics, run_dir / f"metrics-{_file_tag(name)}.png",
                           title=f"{name} ({sub['mem'].iloc[0]}, {len(sub)} runs)")
    results.write_table(run_dir, df, metadata={"workloads": names, "argv": sys.argv[1:]})
    return run_dir


# ---- compare (pyperf) ---------------------------------------------------------------------

def _compare(args):
    import subprocess

    from simcore.strategies import get_strategy
    for s in (args.strategy_a, args.strategy_b):
        get_strategy(s)
    if args.strategy_a == args.strategy_b:
        raise UsageError("compare needs two different strategies")
    resolve_params(args.workload, None, True)
    out = pathlib.Path(args.o) if args.o else REPO_RESULTS / "pyperf"
    out.mkdir(parents=True, exist_ok=True)
    mode = ["--rigorous"] if args.rigorous else (["--fast"] if args.fast else [])
    files = []
    for step, strategy in enumerate((args.strategy_a, args.strategy_b), 1):
        # pyperf calibrates, warms up and spawns workers: a minute or more, so say what runs
        print(f"compare: timing {args.workload} under {strategy} with pyperf ({step}/3)...",
              file=sys.stderr, flush=True)
        path = out / f"{args.workload}-{strategy}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "foliobench.perfcompare", "--strategy", strategy,
               "--workload", args.workload, "--seed", str(args.seed), "-o", str(tmp),
               "--quiet"] + mode + list(args.pyperf_args or ())
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            tmp.unlink(missing_ok=True)
            raise UsageError(f"pyperf run for {strategy} failed: "
                             f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        tmp.replace(path)
        files.append(path)
    table = subprocess.run([sys.executable, "-m", "pyperf", "compare_to", "--table",
                            str(files[0]), str(files[1])], capture_output=True, text=True)
    print(table.stdout.rstrip())
    print("compare: deterministic figures, same seed, quick size (3/3)...", file=sys.stderr,
          flush=True)
    rows = [run_one(args.workload, s, seed=args.seed, quick=True)
            for s in (args.strategy_a, args.strategy_b)]
    metrics = ["highorder_success", "compaction_success_rate", "migration_gib_per_s",
               "large_folio_preservation", "pages_migrated"]
    side = pd.DataFrame({"metric": metrics, **{row["strategy"]: [_exact(row[m]) for m in metrics]
                                               for row in rows}})
    print("\ndeterministic figures (same seed, quick size):")
    print(results.format_table(side, "table"))
    verdict = _pyperf_verdict(files[0], files[1])
    pa, pb = (row["large_folio_preservation"] for row in rows)
    pct = lambda v: "n/a (no large folio migrated)" if v != v else f"{v:.1%}"  # noqa: E731
    print(f"\n{args.strategy_b} vs {args.strategy_a} on {args.workload} (simulator wall time): "
          f"{verdict}; {args.strategy_b} preserves {pct(pb)} of the large folios it migrates "
          f"vs {pct(pa)}.")
    print(f"pyperf files: {files[0]} {files[1]} (python -m pyperf stats/hist/compare_to)")
    return 0


def _exact(value):
    """A figure as text: counters (integers) exactly, other numbers to 3 significant digits."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "-" if value != value else f"{value:.3g}"
    return str(value)


def _pyperf_verdict(ref, changed):
    """pyperf compare_to's own verdict (its significance test), in words: "not significant" or
    "1.05x faster"/"1.05x slower" (changed against ref)."""
    import subprocess
    proc = subprocess.run([sys.executable, "-m", "pyperf", "compare_to", str(ref), str(changed)],
                          capture_output=True, text=True)
    text = proc.stdout
    if "Not significant" in text:
        return "not significant (pyperf compare_to)"
    found = re.search(r"(\d+(?:\.\d+)?x (?:faster|slower)|no change)", text)
    return f"{found.group(1)} (pyperf compare_to, significant)" if found else \
        f"no verdict from pyperf compare_to: {text.strip()[-200:]!r}"


# ---- live ---------------------------------------------------------------------------------

def _live_probe(args):
    import dataclasses
    import json

    from livekernel.probe import format_probe, probe
    caps = probe()
    if args.json:
        print(json.dumps({k: dataclasses.asdict(v) for k, v in caps.items()}, indent=1))
    else:
        print(format_probe(caps))
    return 0


def _live_calibrate(args):
    from livekernel.calibrate import calibrate, format_calibration, format_costs
    from livekernel.session import LiveSession
    output = pathlib.Path(args.output)
    if output.is_dir():
        raise UsageError(f"-o/--output {args.output!r} is a directory; give a file name")
    results.check_output_dir(output.parent, "-o/--output")
    with LiveSession(mem=args.mem, mem_cap=args.mem_cap) as live:
        doc = calibrate(live, repeat=args.repeat)
    results.write_text(output.parent, output.name, format_costs(doc))
    print(format_calibration(doc))
    print(f"written: {args.output} (use with: foliobench run ... --costs {args.output})")
    return 0


def _live_restore(args):
    from livekernel.journal import LiveRunBusy, restore_leftovers
    from livekernel.session import STATE_DIR, require_root
    require_root()
    try:
        done = restore_leftovers(STATE_DIR)
    except LiveRunBusy as exc:
        print(f"foliobench: not restoring now: {exc}; run 'foliobench live restore' after it "
              f"ends", file=sys.stderr)
        return 1
    for pid, problems in done:
        print(f"restored the settings of live run pid {pid}" +
              (f" except: {'; '.join(problems)}" if problems else ""))
    if not done:
        print(f"nothing to restore (no journal of a finished live run in {STATE_DIR})")
    return 1 if any(problems for _, problems in done) else 0


# ---- show and demo ------------------------------------------------------------------------

def _show(args):
    path = pathlib.Path(args.result)
    runs = path if path.name == "runs" else path.parent if path.is_dir() else path.parent.parent
    if runs.name == "runs":
        results.cleanup_leftovers(runs)
    df, meta = results.load_run(args.result)
    print(results.format_table(_summary(df) if args.format == "table" else df, args.format))
    return 0


def _demo(args):
    m = simcore.Machine(mem=args.mem or "16G", seed=args.seed)
    print(f"# {m!r}, min_free_kbytes {m.min_free_kbytes}")
    fragment(m, fill=args.fill, free_share=args.free)
    m.check()
    print(f"# after filling {args.fill:.0%} of memory and freeing {args.free:.0%} of the movable "
          f"folios (seed {args.seed})\n")
    print("# /proc/buddyinfo")
    print(m.buddyinfo(), end="")
    print("\n# extfrag/extfrag_index")
    print(m.extfrag_index(), end="")
    print("\n# extfrag/unusable_index")
    print(m.unusable_index(), end="")
    frag = ", ".join(f"{zone} {v / 1000:.3f}" for zone, v in m.fragmentation_index(9).items())
    print(f"\nfragmentation index at order 9: {frag}")
    print(f"proactive compaction score (node): {m.fragmentation_score()}")
    return 0


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is outside 0..1")
    return value


def _nonneg_int(text):
    # int() also takes full-width and other non-ASCII digits: only 0-9 are a number here
    if not text.strip().isascii():
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (digits 0-9)")
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _positive_int(text):
    value = _nonneg_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _seed(text):
    value = _nonneg_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_SEED} (2**63 - 1)")
    return value


def _cpus(text):
    value = _positive_int(text)
    if value > MAX_CPUS:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_CPUS}")
    return value


def _repeat(text):
    value = _positive_int(text)
    if value > MAX_REPEAT:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_REPEAT}")
    return value


def build_parser():
    parser = _Parser(prog="foliobench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="workloads, their parameters, strategies and backends") \
        .set_defaults(func=_list)
    run = sub.add_parser("run", help="run workloads under compaction strategies")
    run.add_argument("workload", nargs="?", help="a workload from 'foliobench list'")
    run.add_argument("--all", action="store_true", help="every workload x every strategy")
    run.add_argument("--strategy", action="append", help="compaction strategy (repeatable; "
                                                         "default: all)")
    run.add_argument("--param", action="append", metavar="KEY=VALUE",
                     help="workload parameter (repeatable)")
    run.add_argument("--mem", help="machine size (default 16G, 1G with --quick)")
    run.add_argument("--seed", type=_seed, default=0)
    run.add_argument("--repeat", type=_repeat, default=1,
                     help=f"seeds seed..seed+N-1 (1..{MAX_REPEAT})")
    run.add_argument("--quick", action="store_true", help="quick sizes (seconds)")
    run.add_argument("--format", choices=results.FORMATS, default="table")
    run.add_argument("--out", help="results root (default: the repository's results/)")
    run.add_argument("--no-save", action="store_true", help="print only, write nothing")
    run.add_argument("--no-plots", action="store_true",
                     help="save the results without their PNG pictures (inside a guest under "
                          "QEMU's TCG, matplotlib takes minutes to draw them)")
    run.add_argument("--snapshot", help="sim: start from the digital twin of this snapshot "
                                        "('foliobench live snapshot'); --mem, when given, is "
                                        "the workload's arena on it, as beside a live run")
    run.add_argument("--twin", action="store_true",
                     help="with --backend sim --backend live: snapshot the live machine right "
                          "before each seed's live row and start that seed's simulator rows "
                          "from its digital twin, sized to the live arena (the snapshots are "
                          "saved with the run; rerun one with --snapshot)")
    run.add_argument("--progress", choices=("auto", "lines", "none"), default="auto",
                     help="on stderr: a bar on a terminal (auto), a line per completed run "
                          "(lines), or nothing")
    run.add_argument("--backend", action="append", choices=("sim", "live"),
                     help="sim (default) and/or live: the running kernel, root only "
                          "(repeatable: one table with a backend column)")
    run.add_argument("--live", action="store_true", help="same as --backend live")
    run.add_argument("--dry-run", action="store_true",
                     help="live: print every write a run would make, change nothing")
    run.add_argument("--allow-offline", action="store_true",
                     help="live: let workloads offline removable memory blocks")
    run.add_argument("--mem-cap", metavar="PCT%%|SIZE",
                     help="live: memory the run may use (default 50%% of MemAvailable, 90%% in a "
                          "disposable guest); --mem (the live arena) must fit under it")
    run.add_argument("--live-dir", default="/var/tmp",
                     help="live: where the page-cache files go (a disk filesystem)")
    run.add_argument("--sim-mem", help="with --backend live: simulated machine size (default: "
                                       "this machine's MemTotal)")
    run.add_argument("--cpus", type=_cpus, help="sim: CPUs of the simulated machine, each with "
                     "its per-CPU page lists (default 2)")
    run.add_argument("--threads", type=_positive_int, help="sim: threads of the workload, "
                     "faulting and freeing in turns, thread i on CPU i %% cpus (default: one "
                     "per CPU)")
    run.add_argument("--costs", metavar="FILE",
                     help="simulator cost model from 'foliobench live calibrate'")
    run.set_defaults(func=_run)
    comp = sub.add_parser("compare", help="time one workload under two strategies with pyperf")
    comp.add_argument("strategy_a")
    comp.add_argument("strategy_b")
    comp.add_argument("--workload", default="thp-heavy")
    comp.add_argument("--seed", type=_seed, default=0)
    speed = comp.add_mutually_exclusive_group()
    speed.add_argument("--fast", action="store_true", help="pyperf --fast")
    speed.add_argument("--rigorous", action="store_true", help="pyperf --rigorous")
    comp.add_argument("-o", help="directory for the pyperf JSON files (default results/pyperf)")
    comp.add_argument("--pyperf-args", nargs=argparse.REMAINDER,
                      help="further options for pyperf's Runner, e.g. --processes 2")
    comp.set_defaults(func=_compare)
    live = sub.add_parser("live", help="the running kernel: capability probe, calibration")
    live_sub = live.add_subparsers(dest="live_command", required=True, parser_class=_Parser)
    live_probe = live_sub.add_parser("probe", help="what this kernel lets foliobench exercise")
    live_probe.add_argument("--json", action="store_true")
    live_probe.set_defaults(func=_live_probe)
    live_cal = live_sub.add_parser("calibrate", help="measure this kernel's migration cost and "
                                                     "write the simulator's cost model")
    live_cal.add_argument("-o", "--output", default=str(REPO_RESULTS / "costs-live.json"),
                          help="cost model file (default results/costs-live.json)")
    live_cal.add_argument("--mem", default="1G", help="size of the fragmented region per folio "
                                                      "size (default 1G)")
    live_cal.add_argument("--mem-cap", default="50%", help="as for run (default 50%%)")
    live_cal.add_argument("--repeat", type=_positive_int, default=3,
                          help="compactions per folio size (default 3)")
    live_cal.set_defaults(func=_live_calibrate)
    live_restore = live_sub.add_parser("restore", help="undo what a live run killed with "
                                                       "SIGKILL left changed")
    live_restore.set_defaults(func=_live_restore)
    twin_cli.add_live_parsers(live_sub)
    trace_cli.add_live_parsers(live_sub)
    matrix.add_parser(sub)
    twin_cli.add_parsers(sub)
    fidelity_cli.add_parser(sub)
    sweep.add_parser(sub)
    guest.add_parser(sub)
    compare_runs.add_parser(sub)
    agreement.add_parser(sub)
    show = sub.add_parser("show", help="print a saved result again")
    show.add_argument("result", help="a run directory or its results.json/results.csv")
    show.add_argument("--format", choices=results.FORMATS, default="table")
    show.set_defaults(func=_show)
    demo = sub.add_parser("demo", help="build a machine, fragment it, print buddyinfo and the "
                                       "fragmentation indices")
    demo.add_argument("--mem", default="16G", help="machine size (default 16G)")
    demo.add_argument("--seed", type=_seed, default=0)
    demo.add_argument("--fill", type=_fraction, default=0.9, help="share of memory to fill")
    demo.add_argument("--free", type=_fraction, default=0.5, help="share of movable folios freed")
    demo.set_defaults(func=_demo)
    return parser


def _refuse_negative_sizes(argv):
    """`--mem -4G`: argparse takes -4G for an option and says --mem expected one argument."""
    for option, value in zip(argv, argv[1:]):
        if option.startswith("--") and "=" not in option and re.match(r"-\d", value) \
                and not re.fullmatch(r"-\d+", value):
            raise UsageError(f"{option} {value}: a negative value is not allowed")


def main(argv=None):
    import signal
    parser = build_parser()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(parser, argv)
    finally:
        # a caller in the same process (tests, a notebook) gets its own SIGTERM handling back
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(parser, argv):
    try:
        _refuse_negative_sizes(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        return args.func(args)
    except (UsageError, ValueError) as exc:
        print(f"foliobench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("foliobench: interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:
        return 0
    except (guest.GuestFailed, guest.GuestTimeout, guest.GuestUnavailable) as exc:
        print(f"foliobench: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # the kernel or the filesystem refused (a live write, a full disk): not a usage error,
        # and the live journal has already put every setting back
        print(f"foliobench: failed: {exc}", file=sys.stderr)
        return 1
