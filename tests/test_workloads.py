"""Workloads and the foliobench command: real runs at quick size, bad input, saved results."""
import json
import math
import pathlib
import signal
import subprocess
import sys

import pandas as pd
import pytest

import workloads
from foliobench import results
from workloads.base import parse_size_mix, resolve_params

REPO = pathlib.Path(__file__).resolve().parent.parent
FOLIOBENCH = [sys.executable, "-m", "foliobench"]


def run_cli(*args, cwd=REPO, timeout=600):
    return subprocess.run(FOLIOBENCH + list(args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("name", workloads.workloads())
def test_every_workload_runs_quick_under_every_strategy(name):
    df = workloads.run(name, quick=True)
    assert list(df["strategy"]) == ["legacy", "split", "folio"]
    assert (df["workload"] == name).all()
    for col in ("highorder_success", "pages_migrated", "large_folio_preservation",
                "migration_gib_per_s", "sim_wall_s", "param_" + next(iter(
                    workloads.get_workload(name).params))):
        assert col in df.columns
    assert df["highorder_granted"].le(df["highorder_requested"]).all()


@pytest.mark.parametrize("name", ["thp-heavy", "pagecache-churn"])
def test_same_seed_same_rows_other_seed_other_rows(name):
    """Every random choice comes from the seed: --repeat 3 gives three different rows (same
    parameters, only the seed differs), and the same seeds again give the same rows."""
    a = workloads.run(name, strategies=["folio"], quick=True, seed=5, repeat=3)
    b = workloads.run(name, strategies=["folio"], quick=True, seed=5, repeat=3)
    cols = [c for c in a.columns if c != "sim_wall_s"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    measured = [c for c in cols if c not in ("seed", "commit") and not c.startswith("param_")]
    rows = [tuple(map(str, r)) for r in a[measured].itertuples(index=False)]
    assert len(set(rows)) == 3, a[measured].T


@pytest.mark.slow    # tens of seconds or more: CI runs it, -m 'not slow' does not
def test_thp_heavy_tells_the_strategies_apart():
    df = workloads.run("thp-heavy").set_index("strategy")       # the 16G default size
    assert math.isnan(df.loc["legacy", "large_folio_preservation"])   # never touched them
    assert df.loc["split", "large_folio_preservation"] == 0
    assert df.loc["folio", "large_folio_preservation"] > 0.8
    assert df.loc["folio", "compact_stall"] > 0


def test_hotunplug_with_zone_movable_succeeds_and_slab_blocks_normal():
    with_movable = workloads.run("hotunplug-cycles", strategies=["folio"], quick=True)
    assert with_movable["offline_success"].iloc[0] == 1.0
    no_movable = workloads.run("hotunplug-cycles", strategies=["folio"], quick=True,
                               params={"movable": "0", "slab": 0.2})
    assert no_movable["offline_success"].iloc[0] < 1.0


def test_cma_pinned_folios_make_cma_alloc_fail():
    # 64M of requests in a 128M CMA area that holds movable folios: they migrate folios out
    params = {"fill": 0.9, "requests": "32M:2"}
    ok = workloads.run("cma-reservations", strategies=["folio"], quick=True,
                       params=dict(params, pinned=0.0))
    pinned = workloads.run("cma-reservations", strategies=["folio"], quick=True,
                           params=dict(params, pinned=0.5))
    assert ok["pages_migrated"].iloc[0] > 0
    assert ok["highorder_success"].iloc[0] == 1.0
    assert pinned["highorder_success"].iloc[0] < ok["highorder_success"].iloc[0]


def test_parameter_checks():
    with pytest.raises(ValueError, match="fill=2.0 is out of range"):
        resolve_params("thp-heavy", {"fill": "2"})
    with pytest.raises(ValueError, match="parameter 'bogus' is unknown"):
        resolve_params("thp-heavy", {"bogus": 1})
    with pytest.raises(ValueError, match="phase2='x' is not allowed"):
        resolve_params("thp-heavy", {"phase2": "x"})
    with pytest.raises(ValueError, match="power of two"):
        parse_size_mix("24K:1")
    assert parse_size_mix("16K:1,2M:3") == {2: 1.0, 9: 3.0}


# ---- the command line ---------------------------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    (["run", "nope"], "workload 'nope' is unknown"),
    (["run", "thp-heavy", "--strategy", "foo"], "compaction strategy 'foo' is unknown"),
    (["run", "thp-heavy", "--param", "fill=2"], "fill=2.0 is out of range"),
    (["run", "thp-heavy", "--param", "fill"], "must look like KEY=VALUE"),
    (["run", "thp-heavy", "--mem", "12Q"], "'12Q' is not a size"),
    (["run", "thp-heavy", "--repeat", "0"], "must be at least 1"),
    (["run", "thp-heavy", "--format", "xml"], "invalid choice"),
    (["run"], "needs a WORKLOAD or --all"),
    (["show", "/nonexistent/run"], "/nonexistent/run"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, needle):
    if args[0] == "run":
        args = args + ["--out", str(tmp_path)]
    proc = run_cli(*args)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line
             and not line.startswith("  ")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())


def test_run_saves_results_that_show_reads_back(tmp_path):
    proc = run_cli("run", "highalloc", "--quick", "--repeat", "2", "--out", str(tmp_path),
                   "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    df, meta = results.load_run(run_dir)
    assert len(df) == 6 and set(df["seed"]) == {0, 1}
    assert meta["git_commit"] is None or len(meta["git_commit"]) == 40
    for name in ("fragmap-highalloc.png", "metrics-highalloc.png",
                 "buddyinfo-after-highalloc-folio-seed0.txt",
                 "vmstat-delta-highalloc-folio-seed1.json"):
        assert (run_dir / name).stat().st_size > 0
    delta = json.loads((run_dir / "vmstat-delta-highalloc-folio-seed0.json").read_text())
    assert delta["compact_stall"] == df[(df.strategy == "folio") & (df.seed == 0)][
        "compact_stall"].iloc[0]
    shown = run_cli("show", str(run_dir), "--format", "json")
    assert shown.returncode == 0
    assert len(json.loads(shown.stdout)) == 6


def test_list_names_everything():
    proc = run_cli("list")
    assert proc.returncode == 0
    for name in workloads.workloads() + ["legacy", "split", "folio"]:
        assert name in proc.stdout


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_keep_completed_rows(tmp_path, signum, code):
    # a shell's background job starts with SIGINT ignored, and Python then keeps it ignored:
    # give the child the default disposition, as a terminal's foreground job has
    proc = subprocess.Popen(FOLIOBENCH + ["run", "--all", "--quick", "--repeat", "100",
                                          "--progress", "lines", "--out", str(tmp_path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # wait for the event itself (two runs done), not a fixed time: 1500 quick runs take minutes,
    # so the run is still going when the signal comes
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("done 2/"):
            break
    assert proc.poll() is None, "".join(lines)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    df, _ = results.load_run(runs[0])
    assert 2 <= len(df) < 5 * 3 * 100


def test_compare_writes_pyperf_files_and_prints_both_tables(tmp_path):
    proc = run_cli("compare", "split", "folio", "--workload", "thp-heavy", "-o", str(tmp_path),
                   "--pyperf-args", "--processes", "1", "--values", "1", "--warmups", "1",
                   "--loops", "1")
    assert proc.returncode == 0, proc.stderr
    files = sorted(tmp_path.glob("*.json"))
    assert [f.name for f in files] == ["thp-heavy-folio.json", "thp-heavy-split.json"]
    stats = subprocess.run([sys.executable, "-m", "pyperf", "stats", str(files[0])],
                           capture_output=True, text=True)
    assert stats.returncode == 0
    assert "thp-heavy-split" in proc.stdout and "thp-heavy-folio" in proc.stdout   # compare_to
    assert "large_folio_preservation" in proc.stdout
    # one verdict, pyperf's own: the summary line says what compare_to says
    verdict = subprocess.run([sys.executable, "-m", "pyperf", "compare_to", str(files[1]),
                              str(files[0])], capture_output=True, text=True).stdout
    summary = [line for line in proc.stdout.splitlines() if line.startswith("folio vs split")]
    assert len(summary) == 1
    assert ("not significant" in summary[0]) == ("Not significant" in verdict)
    # counters exactly: the deterministic table prints pages_migrated as the integer it is
    row = workloads.run_one("thp-heavy", "folio", quick=True)
    migrated = [line.split() for line in proc.stdout.splitlines()
                if line.split()[:1] == ["pages_migrated"]]
    assert migrated and str(row["pages_migrated"]) in migrated[0]
    assert "(1/3)" in proc.stderr and "(3/3)" in proc.stderr          # progress


@pytest.mark.parametrize("args,needle", [
    (["compare", "legacy", "nope"], "compaction strategy 'nope' is unknown"),
    (["compare", "legacy", "folio", "--workload", "nope"], "workload 'nope' is unknown"),
    (["compare", "folio", "folio"], "two different strategies"),
])
def test_compare_bad_input(tmp_path, args, needle):
    proc = run_cli(*args, "-o", str(tmp_path))
    assert proc.returncode == 2 and needle in proc.stderr
    assert not any(tmp_path.iterdir())


def test_an_os_error_is_one_line_and_exit_1(monkeypatch, capsys):
    """A refusal from the kernel or the filesystem is no usage error and no bug: one line on
    stderr, exit code 1, no traceback."""
    from foliobench import cli

    def full_disk(args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cli, "_demo", full_disk)
    assert cli.main(["demo"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "Traceback" not in err


def test_a_simulator_beside_a_live_arena_serves_what_fits_there():
    from workloads.backend import sim_factory
    b = sim_factory((64 << 20), budget_hugetlb=True)(mem="256M", seed=0)
    assert b.total_pages == 16384
    got = b.fault_anon(300, [4])                     # 4800 pages of 16384 fit
    assert sum(len(h) for h in got.values()) == 300 and b.arena_declined_pages == 0
    got = b.alloc(30, 9, kind="hugetlb")             # 11584 pages left: 22 of 30 fit
    assert len(got) == 22 and b.arena_declined_pages == 8 << 9
    pool = sim_factory((64 << 20), budget_hugetlb=False)(mem="256M", seed=0)
    assert len(pool.alloc(40, 9, kind="hugetlb")) > 32 and pool.arena_declined_pages == 0
    row = workloads.base.run_one("thp-heavy", "folio", "256M", 0,
                                 {"second": 0.9, "phase2": "order9"}, True,
                                 backend_factory=sim_factory(64 << 20))
    assert row["arena_declined_pages"] > 0
