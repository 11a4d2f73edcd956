"""foliobench compare-runs: Welch's t-test from first principles, known differences found,
repeats of the same run found equal, the command line and its outputs."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foliobench import cli, compare_runs, results
from foliobench.compare_runs import betainc, t_two_sided_p, welch

# (t, degrees of freedom) -> two-sided p, from printed Student-t tables
T_TABLE = [(2.228, 10, 0.05), (3.169, 10, 0.01), (12.706, 1, 0.05), (1.960, 1e7, 0.05),
           (2.045, 29, 0.05), (4.604, 4, 0.01)]


@pytest.mark.parametrize("t,df,p", T_TABLE)
def test_t_distribution_matches_tables(t, df, p):
    assert t_two_sided_p(t, df) == pytest.approx(p, rel=2e-3)


@settings(max_examples=60, deadline=None)
@given(a=st.floats(0.1, 30), b=st.floats(0.1, 30), x=st.floats(0.0, 1.0))
def test_betainc_is_a_distribution_function(a, b, x):
    v = betainc(a, b, x)
    assert 0.0 <= v <= 1.0
    y = 1.0 - x                     # x and y exactly complementary in floating point
    assert betainc(a, b, 1.0 - y) + betainc(b, a, y) == pytest.approx(1.0, abs=1e-9)
    if x < 0.99:
        assert betainc(a, b, min(x + 0.01, 1.0)) >= v - 1e-12


def test_betainc_known_values():
    # I_x(1, 1) = x; I_x(a, 1) = x^a; I_0.4(2, 3) = 0.5248 (by the binomial sum)
    assert betainc(1, 1, 0.3) == pytest.approx(0.3)
    assert betainc(3.5, 1, 0.7) == pytest.approx(0.7 ** 3.5)
    assert betainc(2, 3, 0.4) == pytest.approx(0.5248)
    with pytest.raises(ValueError, match="0 <= x <= 1"):
        betainc(1, 1, 1.5)


def test_welch_by_hand():
    t, df, p = welch([1, 2, 3, 4, 5], [3, 4, 5, 6, 7.5])
    # means 3 and 5.1, variances 2.5 and 3.05
    assert t == pytest.approx(2.1 / math.sqrt(0.5 + 0.61))
    assert df == pytest.approx(1.11 ** 2 / (0.25 / 4 + 0.61 ** 2 / 4))
    assert 0.05 < p < 0.1
    assert welch([1.0, 1.0], [1.0, 1.0])[2] == 1.0
    assert welch([1.0, 1.0], [2.0, 2.0])[2] == 0.0
    assert math.isnan(welch([1.0], [2.0, 3.0])[2])


def _run(rng, n=6, shift=None):
    """A run table: two workloads x seeds with noisy figures; shift {figure: factor}."""
    shift = shift or {}
    rows = []
    for workload, base in (("highalloc", 0.8), ("thp-heavy", 0.5)):
        for seed in range(n):
            row = {"workload": workload, "strategy": "kernel", "seed": seed, "backend": "live",
                   "highorder_success": base * (1 + rng.normal(0, 0.01)),
                   "sim_wall_s": 2.0 * (1 + rng.normal(0, 0.02)),
                   "pages_migrated": 1000 * (1 + rng.normal(0, 0.02))}
            for fig, factor in shift.items():
                if workload == "highalloc":
                    row[fig] *= factor
            rows.append(row)
    return pd.DataFrame(rows)


def test_finds_known_differences_and_only_them():
    rng = np.random.default_rng(7)
    a = _run(rng)
    b = _run(rng, shift={"highorder_success": 0.8, "sim_wall_s": 0.7, "pages_migrated": 1.3})
    doc = compare_runs.compare([a, b], ["a", "b"])
    found = {(r["workload"], r["figure"]): r["runs"][1]["verdict"] for r in doc["rows"]}
    assert found[("highalloc", "highorder_success")] == compare_runs.REGRESSED
    assert found[("highalloc", "sim_wall_s")] == compare_runs.IMPROVED
    assert found[("highalloc", "pages_migrated")] == compare_runs.CHANGED
    assert all(v == compare_runs.SAME for (w, _), v in found.items() if w == "thp-heavy")
    assert doc["counts"][compare_runs.REGRESSED] == 1
    assert compare_runs.regressions(doc)[0][0]["figure"] == "highorder_success"


def test_repeats_of_the_same_distribution_find_nothing():
    rng = np.random.default_rng(11)
    runs = [_run(rng) for _ in range(4)]
    doc = compare_runs.compare(runs, ["a", "b", "c", "d"])
    verdicts = [s["verdict"] for r in doc["rows"] for s in r["runs"][1:]]
    assert verdicts and set(verdicts) == {compare_runs.SAME}


def test_min_effect_holds_back_a_significant_small_change():
    rng = np.random.default_rng(3)
    a = _run(rng, n=30)
    b = _run(rng, n=30, shift={"highorder_success": 0.97})
    small = compare_runs.compare([a, b], min_effect_pct=5)
    strict = compare_runs.compare([a, b], min_effect_pct=1)
    def pick(doc):
        return next(r["runs"][1] for r in doc["rows"] if r["workload"] == "highalloc"
                    and r["figure"] == "highorder_success")
    assert pick(small)["p"] < 0.05
    assert pick(small)["verdict"] == compare_runs.SAME
    assert pick(strict)["verdict"] == compare_runs.REGRESSED


def _save(tmp_path, name, df):
    run_dir = tmp_path / name
    results.write_table(run_dir, df, metadata={"workloads": sorted(set(df["workload"]))})
    return run_dir


def test_command_line_outputs_and_fail_on_regression(tmp_path, capsys):
    rng = np.random.default_rng(5)
    a = _save(tmp_path, "base", _run(rng))
    b = _save(tmp_path, "worse", _run(rng, shift={"highorder_success": 0.5}))
    c = _save(tmp_path, "same", _run(rng))
    out = tmp_path / "out"
    assert cli.main(["compare-runs", str(a), str(c), "-o", str(out),
                     "--fail-on-regression"]) == 0
    assert cli.main(["compare-runs", str(a), str(b), "-o", str(out),
                     "--fail-on-regression"]) == 1
    captured = capsys.readouterr()
    assert "1 regressions (e.g. highalloc highorder_success -5" in captured.err
    assert "highorder_success" in captured.out
    saved = sorted((out / "compare").iterdir())
    assert len(saved) == 2
    for d in saved:
        assert {p.name for p in d.iterdir()} == {"compare.md", "compare.html", "compare.json",
                                                 "compare.png"}
    doc = json.loads((saved[-1] / "compare.json").read_text())
    assert doc["runs"] == ["base", "worse"] and doc["counts"]["regression"] == 1
    assert "background:#fcbba1" in (saved[-1] / "compare.html").read_text()


def test_command_line_bad_input(tmp_path, capsys):
    rng = np.random.default_rng(1)
    a = _save(tmp_path, "a", _run(rng))
    assert cli.main(["compare-runs", str(a)]) == 2
    assert cli.main(["compare-runs", str(a), str(tmp_path / "missing")]) == 2
    assert cli.main(["compare-runs", str(a), str(a), "--alpha", "2", "--no-save"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("foliobench: error: ") for line in err)
    assert "does not exist" in err[1] and "--alpha 2.0" in err[2]


def test_repeats_of_a_real_simulated_run_find_no_change(tmp_path):
    """The same quick run saved twice (three seeds each) compares as unchanged."""
    dirs = []
    for name in ("one", "two"):
        root = tmp_path / name
        assert cli.main(["run", "highalloc", "--quick", "--repeat", "3", "--strategy", "legacy",
                         "--out", str(root), "--format", "csv"]) == 0
        dirs.append(next((root / "runs").iterdir()))
    frames = [results.load_run(d)[0] for d in dirs]
    doc = compare_runs.compare(frames, ["one", "two"])
    verdicts = {r["figure"]: r["runs"][1]["verdict"] for r in doc["rows"]}
    assert "highorder_success" in verdicts
    # wall time is not deterministic; every simulated figure is
    assert {v for f, v in verdicts.items() if f != "sim_wall_s"} == {compare_runs.SAME}
