"""The twin half of `foliobench fidelity`: each recorded run's snapshot rebuilt in simcore, the
same action applied, the same figures computed, and each figure judged against the live spread.

No root, no /proc: everything comes from the corpus, so a replay is deterministic (same corpus,
same code, same numbers).
"""
import re

from livekernel.fidelity import fold_dma
from simcore import Machine
from simcore import compaction as _compaction
from simcore.procfs import parse_buddyinfo
from simcore.profiles import get_profile, profiles
from simcore.snapshot_export import page_words

from . import fidelity_corpus as corpus
from . import fidelity_trace, replay
from .fidelity_metrics import FIGURES, RECORDED_COUNTERS, figures, judge, large_anon_pages


def profile_for_kernel(release):
    """The newest registered profile not newer than kernel `release` ("6.18.44-fc" ->
    "linux-6.18"); the oldest when the release is older than all of them."""
    m = re.match(r"(\d+)\.(\d+)", release or "")
    names = profiles()
    if not m:
        return names[-1]
    want = (int(m.group(1)), int(m.group(2)))
    best = names[0]
    for name in names:
        v = re.match(r"linux-(\d+)\.(\d+)", name)
        if v and (int(v.group(1)), int(v.group(2))) <= want:
            best = name
    return best


def _apply(machine, run):
    action = run["action"]
    m = re.fullmatch(r"kcompactd=(\d+)", action)
    if m:
        machine.knobs[_compaction.K_PROACTIVENESS] = int(run["twin"]["proactiveness"])
        machine.tick(int(m.group(1)))
        return {}
    out = replay.apply_action(machine, replay.parse_action(action))
    return {k: out[k] for k in ("asked", "granted") if k in out}


def replay_run(path, run, profile, strategy=None, trace=None):
    """The twin's figures for one recorded run (snapshot at `path`). trace: the run's live
    trace (foliobench.fidelity_trace.TraceData): the twin's tracepoints are on during the
    action and the result's "trace" compares them with it."""
    machine = Machine.from_snapshot(str(path), profile=profile, compaction=strategy)
    large_before = large_anon_pages(page_words(machine)[0])
    before = machine.vmstat()
    if trace is not None:
        fidelity_trace.twin_trace_on(machine)
    outcome = _apply(machine, run)
    machine.check()
    after = machine.vmstat()
    counters = {c: int(after.get(c, 0) - before.get(c, 0)) for c in RECORDED_COUNTERS}
    buddy = fold_dma(parse_buddyinfo(machine.buddyinfo()))
    large_after = large_anon_pages(page_words(machine)[0])
    result = {"strategy": machine.strategy.name, "outcome": outcome, "counters": counters,
              "buddyinfo_after": buddy,
              "figures": figures(counters, outcome, large_before, large_after, buddy)}
    if trace is not None:
        result["trace"] = fidelity_trace.twin_result(machine, trace)
    del machine
    return result


def _chosen(live_runs, runs, trace):
    """The runs to replay: the first `runs` (all when None), and with `trace` every traced run
    too."""
    chosen = live_runs[:runs] if runs else list(live_runs)
    if trace:
        chosen += [r for r in live_runs if "trace" in r and r not in chosen]
    return chosen


def replay_corpus(manifest, strategies=(None,), profile=None, runs=None, progress=None,
                  trace=False):
    """Replay every run of the loaded corpus `manifest` (corpus.load()) under each strategy.
    runs: only the first `runs` runs of each experiment (the live spread still uses them
    all). trace: every traced run's tracepoints compared with the twin's (each twin run's
    "trace"; foliobench.fidelity_trace). Returns the comparison: {"kernel", "profile",
    "experiments": [...]}."""
    import pathlib
    profile = profile or profile_for_kernel(manifest.get("kernel"))
    get_profile(profile)
    base = pathlib.Path(manifest["directory"])
    out = {"kernel": manifest.get("kernel"), "profile": profile, "traced": bool(trace),
           "recorded_at": manifest.get("recorded_at"), "repeat": manifest.get("repeat"),
           "settings": manifest.get("settings", {}), "experiments": []}
    for exp in manifest["experiments"]:
        live_runs = exp["runs"]
        chosen = _chosen(live_runs, runs, trace)
        per_strategy = []
        for strategy in strategies:
            twins = []
            for run in chosen:
                data = fidelity_trace.load(base / run["trace"]["file"]) \
                    if trace and "trace" in run else None
                twins.append(replay_run(base / run["snapshot"], run, profile, strategy, data))
                twins[-1]["snapshot"] = run["snapshot"]
                if progress:
                    progress(f"twin: {exp['name']} {run['snapshot']} "
                             f"[{twins[-1]['strategy']}] {corpus.brief(twins[-1]['figures'])}")
            per_strategy.append({
                "strategy": twins[0]["strategy"],
                "twin_runs": twins,
                "figures": [judge(f, [r["live"]["figures"][f] for r in live_runs],
                                  [t["figures"][f] for t in twins]) for f in FIGURES]})
        out["experiments"].append({
            "name": exp["name"], "actions": [r["action"] for r in live_runs],
            "live_runs": [r["live"] for r in live_runs], "strategies": per_strategy})
    return out
