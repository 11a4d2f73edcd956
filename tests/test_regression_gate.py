"""The regression gate: a quick asv pass over the checked-out commit, and the deterministic
track_ values compared with results/baseline.json."""
import itertools
import json
import pathlib
import subprocess
import sys

import pytest

from benchmarks import gate
from simcore import freescan
from simcore.strategies import Folio

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_asv_quick_pass_records_results_that_match_the_baseline(asv_outcome_pass):
    bench = asv_outcome_pass           # tests/conftest.py: one asv pass per test session
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gate"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "match the baseline" in proc.stdout


@pytest.mark.slow    # tens of seconds or more: CI runs it, -m 'not slow' does not
def test_a_behaviour_change_fails_the_gate_and_names_the_benchmark(monkeypatch):
    # the workload and compact_memory benchmarks are where a strategy change shows; the
    # matrix, trace and fidelity classes would only make the two direct passes longer
    classes = ("bench_workloads.WorkloadOutcome", "bench_compaction.CompactionOutcome")
    baseline = {k: v for k, v in json.loads(gate.BASELINE.read_text()).items()
                if k.startswith(tuple(c + "." for c in classes))}
    # make "folio" behave like the 6.9 interim step: large folios split for want of targets
    monkeypatch.setattr(Folio, "split_free_pages", True)
    monkeypatch.setattr(Folio, "target_policy", freescan.TARGET_ORDER0)
    moved = gate.compare(baseline, gate.direct(classes))
    names = [key for key, _, _ in moved]
    assert any(k.startswith("bench_workloads.WorkloadOutcome.track_large_folio_split_rate")
               and k.endswith("folio)") for k in names), names
    assert all("legacy" not in k for k in names)
    table = gate.format_moved(moved)
    assert "track_large_folio_split_rate" in table and "worse (higher)" in table
    monkeypatch.undo()
    assert gate.compare(baseline, gate.direct(classes)) == []


def test_gate_without_results_for_the_commit_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no asv results for commit deadbeef"):
        gate.from_asv("deadbeefcafe", results_dir=tmp_path)


TRACES = ("bench_traces.TraceOutcome",)


def test_traces_are_gated_and_cover_every_operation():
    from benchmarks import bench_traces
    from foliobench import soak
    assert "bench_traces.TraceOutcome" in gate.DETERMINISTIC
    kinds = {op[0] for op in bench_traces.trace_ops()}
    assert kinds == set(soak.OP_NAMES)
    misuse = {soak.MISUSE[op[1]] for op in bench_traces.trace_ops() if op[0] == "misuse"}
    assert misuse == set(soak.MISUSE)
    baseline = json.loads(gate.BASELINE.read_text())
    traced = [k for k in baseline if k.startswith("bench_traces.TraceOutcome.track_value(")]
    assert len(traced) == (len(bench_traces.STRATEGIES) * len(bench_traces.PROFILES)
                           * len(bench_traces.VALUES))
    every = {k: v for k, v in baseline.items() if k.startswith("bench_traces.TraceOutcome.")}
    assert gate.compare(every, gate.direct(TRACES)) == []


def test_asv_sees_one_folded_value_per_trace_and_the_gate_every_value():
    """asv runs a process per parameter combination: TraceOutcome gives it 9 (strategy x
    profile) folded values instead of 225; --direct still records and compares each value."""
    from benchmarks import bench_traces
    from benchmarks.bench_traces import TraceOutcome
    asv_methods = [m for m in dir(TraceOutcome) if m.startswith(("track_", "time_", "peakmem_"))]
    assert asv_methods == ["track_state"]
    assert len(list(itertools.product(*TraceOutcome.params))) == 9
    values = {name: i for i, name in enumerate(bench_traces.VALUES)}
    for name in bench_traces.VALUES:               # any one value moving moves the fold
        assert bench_traces.state_number({**values, name: values[name] + 1}) != \
            bench_traces.state_number(values)
    baseline = json.loads(gate.BASELINE.read_text())
    states = [k for k in baseline if k.startswith("bench_traces.TraceOutcome.track_state(")]
    assert len(states) == 9
    # what asv records (from_asv keys) is compared without the direct-only per-value keys
    comparable = gate.asv_comparable(baseline)
    assert set(baseline) - set(comparable) == {
        k for k in baseline if k.startswith("bench_traces.TraceOutcome.track_value(")}
    assert set(states) <= set(comparable)


def test_update_from_asv_results_is_refused(capsys):
    assert gate.main(["--update"]) == 2
    assert "--update needs --direct" in capsys.readouterr().err


def test_swapping_movable_fallback_order_fails_the_gate_naming_the_trace(monkeypatch):
    """Issue 12: swapping MOVABLE's fallback order moved no workload row; the traces see it."""
    import simcore.machine
    from simcore.mmzone import FALLBACK_TABLE, MIGRATE_MOVABLE
    baseline = json.loads(gate.BASELINE.read_text())
    swapped = FALLBACK_TABLE.copy()
    swapped[MIGRATE_MOVABLE] = FALLBACK_TABLE[MIGRATE_MOVABLE][::-1]
    # the table reaches compiled code as an argument (pgdat.fallbacks): no numba cache involved
    monkeypatch.setattr(simcore.machine, "FALLBACK_TABLE", swapped)
    current = gate.direct(TRACES)
    moved = gate.compare({k: v for k, v in baseline.items() if k in current}, current)
    names = [key for key, _, _ in moved]
    assert any(k.startswith("bench_traces.TraceOutcome.track_value(") and ", digest)" in k
               for k in names), names
    table = gate.format_moved(moved)
    assert "TraceOutcome.track_value(" in table
    monkeypatch.undo()
    assert gate.compare({k: v for k, v in baseline.items() if k in current},
                        gate.direct(TRACES)) == []


def _asv_file(path, commit, value, started_at, env_vars=None):
    name = "bench_traces.TraceOutcome.track_value"
    doc = {"result_columns": ["result", "params", "version", "started_at", "duration"],
           "results": {name: [[value], [["'folio'"], ["'linux-6.18'"], ["'digest'"]], "v",
                              started_at, 1.0]},
           "env_vars": env_vars or {}}
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{commit[:8]}-{'x' * 8}.json").write_text(json.dumps(doc))


def test_gate_reads_only_the_newest_results_file_of_the_commit(tmp_path):
    """A leftover file of the same commit must not mask a value that moved."""
    key = "bench_traces.TraceOutcome.track_value(folio, linux-6.18, digest)"
    _asv_file(tmp_path / "old-machine", "abcdef0123", 1.0, started_at=1000)
    _asv_file(tmp_path / "new-machine", "abcdef0123", 2.0, started_at=2000)
    assert gate.from_asv("abcdef0123", results_dir=tmp_path) == {key: 2.0}
    path, _ = gate.results_file("abcdef0123", results_dir=tmp_path)
    assert path.parent.name == "new-machine"
    # the same with the names swapped: newest wins, not the last in sorted order
    _asv_file(tmp_path / "zz-old", "1234567890", 5.0, started_at=1000)
    _asv_file(tmp_path / "aa-new", "1234567890", 6.0, started_at=3000)
    assert gate.from_asv("1234567890", results_dir=tmp_path) == {key: 6.0}
    # tools/history's runs of the committed code are never the one read
    _asv_file(tmp_path / "hist", "1234567890", 9.0, started_at=9000,
              env_vars={"FOLIOBENCH_SOURCE": "commit"})
    assert gate.from_asv("1234567890", results_dir=tmp_path) == {key: 6.0}
