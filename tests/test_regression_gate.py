"""The regression gate: a quick asv pass over the checked-out commit, and the deterministic
track_ values compared with results/baseline.json."""
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
def test_asv_quick_pass_records_results_that_match_the_baseline():
    bench = subprocess.run([str(REPO / "tools" / "bench"), "Outcome"], cwd=REPO,
                           capture_output=True, text=True, timeout=1500)
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gate"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "match the baseline" in proc.stdout


def test_a_behaviour_change_fails_the_gate_and_names_the_benchmark(monkeypatch):
    baseline = json.loads(gate.BASELINE.read_text())
    # make "folio" behave like the 6.9 interim step: large folios split for want of targets
    monkeypatch.setattr(Folio, "split_free_pages", True)
    monkeypatch.setattr(Folio, "target_policy", freescan.TARGET_ORDER0)
    moved = gate.compare(baseline, gate.direct())
    names = [key for key, _, _ in moved]
    assert any(k.startswith("bench_workloads.WorkloadOutcome.track_large_folio_split_rate")
               and k.endswith("folio)") for k in names), names
    assert all("legacy" not in k for k in names)
    table = gate.format_moved(moved)
    assert "track_large_folio_split_rate" in table and "worse (higher)" in table
    monkeypatch.undo()
    assert gate.compare(baseline, gate.direct()) == []


def test_gate_without_results_for_the_commit_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no asv results for commit deadbeef"):
        gate.from_asv("deadbeefcafe", results_dir=tmp_path)
