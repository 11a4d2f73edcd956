"""The CI gate on the deterministic track_ benchmarks: any change against results/baseline.json
fails, with a table of what moved, unless the same commit updates the baseline.

    python -m benchmarks.gate             # compare asv's results for HEAD with the baseline
    python -m benchmarks.gate --direct    # compute the values in-process instead of from asv
    python -m benchmarks.gate --direct --update    # write the baseline (every value)

Values come from the asv results file of the checked-out commit (asv run --set-commit-hash, see
tools/bench), or, with --direct, from calling the same benchmark classes here.
"""
import argparse
import inspect
import itertools
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
BASELINE = REPO / "results" / "baseline.json"
ASV_RESULTS = REPO / "results" / "asv"
# The benchmark classes whose track_ values are exact (deterministic simulator runs).
DETERMINISTIC = ("bench_workloads.WorkloadOutcome", "bench_compaction.CompactionOutcome",
                 "bench_matrix.MatrixOutcome", "bench_traces.TraceOutcome",
                 "bench_fidelity.FidelityOutcome")
# The twin's fidelity errors (bench_fidelity: lower is better) fail the gate only when one grows
# by more than this (points for shares and the unusable index, log2 units for the counters:
# 0.25 is a factor of 1.19); a smaller change, or an improvement, passes and is listed. Kernel
# paths that move them on purpose re-baseline with
# `python -m benchmarks.gate --direct --update --only bench_fidelity.FidelityOutcome`.
FIDELITY = "bench_fidelity.FidelityOutcome."
FIDELITY_TOLERANCE = {"track_share_error": 2.0, "track_large_kept_error": 2.0,
                      "track_unusable_error": 2.0, "track_counter_error": 0.25}
# Values only --direct computes (a class's gate_values(), one per counter, under its gate_name);
# asv records them folded into one track_ per combination, so a comparison of asv's results
# leaves these baseline keys out
DIRECT_ONLY = ("bench_traces.TraceOutcome.track_value(",)


def _key(name, params):
    return f"{name}({', '.join(params)})" if params else name


def results_file(commit, results_dir=ASV_RESULTS):
    """The one asv results file to read for `commit`: the newest of the commit's files (by the
    latest started_at of a deterministic benchmark in it, then by modification time). Reading
    only one matters: a leftover file of the same commit (another machine name or environment,
    an older run) would otherwise mask a value that moved. Files of tools/history's runs of the
    committed code (FOLIOBENCH_SOURCE=commit) are not this working tree's and are skipped."""
    files = sorted(pathlib.Path(results_dir).glob(f"*/{commit[:8]}-*.json"))
    candidates = []
    for path in files:
        doc = json.loads(path.read_text())
        if (doc.get("env_vars") or {}).get("FOLIOBENCH_SOURCE") == "commit":
            continue
        candidates.append((_newest_start(doc), path.stat().st_mtime, str(path), doc))
    if not candidates:
        raise FileNotFoundError(f"no asv results for commit {commit[:8]} under {results_dir}; "
                                f"run tools/bench first")
    _, _, path, doc = max(candidates, key=lambda c: c[:3])
    return pathlib.Path(path), doc


def _newest_start(doc):
    cols = doc.get("result_columns") or []
    if "started_at" not in cols:
        return 0
    at = cols.index("started_at")
    starts = [entry[at] for name, entry in (doc.get("results") or {}).items()
              if name.startswith(DETERMINISTIC) and len(entry) > at and entry[at] is not None]
    return max(starts, default=0)


def from_asv(commit, results_dir=ASV_RESULTS):
    """{benchmark(params): value} of the deterministic track_ benchmarks for `commit`, from the
    commit's newest asv results file only (results_file())."""
    _, doc = results_file(commit, results_dir)
    out = {}
    cols = doc["result_columns"]
    for name, entry in doc["results"].items():
        if not name.startswith(DETERMINISTIC) or ".track_" not in name:
            continue
        record = dict(zip(cols, entry, strict=False))
        values = record["result"]
        params = record.get("params") or []
        combos = list(itertools.product(*params)) if params else [()]
        if values is None:
            values = [None] * len(combos)
        for combo, value in zip(combos, values, strict=False):
            out[_key(name, [p.strip("'") for p in combo])] = _clean(value)
    return out


def direct(classes=DETERMINISTIC):
    """The same values computed in this process from the benchmark classes (all of
    DETERMINISTIC, or the named ones), plus each class's gate_values() one by one (the
    DIRECT_ONLY keys)."""
    sys.path.insert(0, str(REPO))
    import importlib
    out = {}
    for qualname in classes:
        module_name, class_name = qualname.split(".")
        cls = getattr(importlib.import_module(f"benchmarks.{module_name}"), class_name)
        bench = cls()
        cache = bench.setup_cache()
        for meth_name, meth in inspect.getmembers(bench, inspect.ismethod):
            if not meth_name.startswith("track_"):
                continue
            for combo in itertools.product(*cls.params):
                value = meth(cache, *combo)
                out[_key(f"{qualname}.{meth_name}", [str(c) for c in combo])] = _clean(value)
        if hasattr(bench, "gate_values"):
            for combo in itertools.product(*cls.params):
                for name, value in bench.gate_values(cache, *combo).items():
                    out[_key(f"{qualname}.{cls.gate_name}", [*map(str, combo), name])] = \
                        _clean(value)
    return out


def asv_comparable(baseline):
    """The baseline without the DIRECT_ONLY keys: what asv's results can be compared with."""
    return {k: v for k, v in baseline.items() if not k.startswith(DIRECT_ONLY)}


def _clean(value):
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, 12)


def fidelity_tolerance(key):
    """The tolerated growth of a fidelity error benchmark `key`, None for any other key."""
    if not key.startswith(FIDELITY):
        return None
    return FIDELITY_TOLERANCE.get(key[len(FIDELITY):].split("(")[0], 0.0)


def within_tolerance(key, old, new):
    """A fidelity error that did not grow by more than its tolerance (or got better)."""
    tol = fidelity_tolerance(key)
    return (tol is not None and isinstance(old, float) and isinstance(new, float)
            and new <= old + tol)


def compare(baseline, current):
    """Rows (benchmark, baseline, now) for every value that moved, appeared or vanished;
    fidelity errors only when they grew beyond FIDELITY_TOLERANCE (see drift())."""
    moved = []
    for key in sorted(set(baseline) | set(current)):
        old, new = baseline.get(key, "missing"), current.get(key, "missing")
        if old != new and not within_tolerance(key, old, new):
            moved.append((key, old, new))
    return moved


def drift(baseline, current):
    """Fidelity errors that moved within their tolerance: reported, not failed."""
    return [(k, baseline[k], current[k]) for k in sorted(set(baseline) & set(current))
            if baseline[k] != current[k] and within_tolerance(k, baseline[k], current[k])]


def format_moved(moved):
    width = max(len(k) for k, _, _ in moved)
    lines = [f"{'benchmark':{width}}  {'baseline':>14}  {'now':>14}  direction"]
    for key, old, new in moved:
        direction = ""
        if isinstance(old, float) and isinstance(new, float):
            direction = "worse (higher)" if new > old else "better (lower)"
        lines.append(f"{key:{width}}  {_fmt(old):>14}  {_fmt(new):>14}  {direction}")
    return "\n".join(lines)


def _fmt(v):
    return "n/a" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))


def write_baseline(values, path=BASELINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".baseline.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(dict(sorted(values.items())), fh, indent=1)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gate", description=__doc__)
    parser.add_argument("--update", action="store_true", help="write the baseline")
    parser.add_argument("--direct", action="store_true", help="compute values in-process")
    parser.add_argument("--commit", help="asv results of this commit (default: HEAD)")
    parser.add_argument("--only", action="append", metavar="MODULE.CLASS",
                        help="with --direct: only these benchmark classes (--update then "
                             "replaces only their values in the baseline)")
    args = parser.parse_args(argv)
    if args.only and not args.direct:
        parser.error("--only needs --direct")
    if args.only and set(args.only) - set(DETERMINISTIC):
        parser.error(f"--only: choose from {', '.join(DETERMINISTIC)}")
    if args.update and not args.direct:
        print("gate: --update needs --direct: asv records each trace's values folded into one, "
              "the baseline keeps every value", file=sys.stderr)
        return 2
    try:
        if args.direct:
            current = direct(tuple(args.only) if args.only else DETERMINISTIC)
        else:
            commit = args.commit or subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO,
                                                   capture_output=True, text=True,
                                                   check=True).stdout.strip()
            current = from_asv(commit)
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(f"gate: {exc}", file=sys.stderr)
        return 2
    if args.update:
        if args.only:
            kept = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
            current = {**{k: v for k, v in kept.items()
                          if not k.startswith(tuple(c + "." for c in args.only))}, **current}
        write_baseline(current)
        print(f"gate: baseline written: {len(current)} values -> {BASELINE}")
        return 0
    if not BASELINE.exists():
        print(f"gate: no baseline at {BASELINE}; create it with --direct --update",
              file=sys.stderr)
        return 2
    baseline = json.loads(BASELINE.read_text())
    if args.only:
        baseline = {k: v for k, v in baseline.items()
                    if k.startswith(tuple(c + "." for c in args.only))}
    if not args.direct:
        baseline = asv_comparable(baseline)
    moved = compare(baseline, current)
    small = drift(baseline, current)
    if small:
        print(f"gate: {len(small)} fidelity error(s) moved within tolerance:\n"
              f"{format_moved(small)}")
    if moved:
        print(f"gate: {len(moved)} deterministic benchmark value(s) moved against "
              f"{BASELINE.relative_to(REPO)}:\n{format_moved(moved)}\n"
              f"If the change is intended, run `python -m benchmarks.gate --direct --update` and "
              f"commit "
              f"the new baseline with it.")
        return 1
    print(f"gate: {len(current)} deterministic benchmark values match the baseline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
