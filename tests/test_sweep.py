"""foliobench sweep: the grid, the Parquet dataset, and the same rows serially, on a local Dask
cluster and on a separately started scheduler and workers; resume after SIGKILL; failing cells;
bad specs refused before any work."""
import functools
import io
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from foliobench import cli, sweep
from foliobench.sweep_spec import Cell, grid_doc, parse_spec
from foliobench.sweep_store import SweepStore

REPO = pathlib.Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
# small cells: 128M machines, quick parameter values (a fraction of a second each)
SMALL = {"workloads": ["highalloc"], "strategies": ["legacy", "folio"], "mem": ["128M"],
         "seeds": [0, 1], "params": {"load": [0.3, 0.8]}, "quick": True}
INJECTED = {"strategy": "folio", "seed": 1}


def _run(tmp_path, spec, **kw):
    store = SweepStore.create(tmp_path, spec)
    ran, failed, interrupted = sweep.run_sweep(spec, store, progress_stream=io.StringIO(), **kw)
    assert not interrupted
    return store.path, ran, failed


def _rows(path):
    """The dataset without the wall-clock columns, in cell order."""
    df = pd.read_parquet(path).drop(columns=list(sweep.TIMING_COLUMNS), errors="ignore")
    df["workload"] = df["workload"].astype(str)
    return df.sort_values(["cell", "repeat"]).reset_index(drop=True)


def flaky_cell(cell, repeats):
    """run_cell, except that one cell's task raises (as a lost worker would)."""
    if all(cell[k] == v for k, v in INJECTED.items()) and dict(cell["params"])["load"] == 0.8:
        raise RuntimeError("injected failure")
    return sweep.run_cell(cell, repeats)


@pytest.fixture(scope="module")
def serial_rows(tmp_path_factory):
    path, ran, failed = _run(tmp_path_factory.mktemp("serial"), parse_spec(SMALL), serial=True)
    assert (ran, failed) == (8, 0)
    return _rows(path)


def test_serial_dataset_has_run_columns_and_coordinates(serial_rows):
    df = serial_rows
    assert len(df) == 8 and df["cell"].is_unique
    for col in ("workload", "strategy", "profile", "mem", "seed", "param_load", "param_share",
                "highorder_success", "success_rest", "commit", "error", "repeat"):
        assert col in df.columns, col
    assert df["error"].isna().all()
    assert set(df["param_load"]) == {0.3, 0.8} and set(df["strategy"]) == {"legacy", "folio"}
    # the figures come from the cells' own runs: more load, fewer order-9 blocks
    by_load = df.groupby("param_load")["highorder_success"].mean()
    assert by_load[0.8] < by_load[0.3]


@pytest.mark.slow
def test_local_cluster_same_rows_as_serial_and_failing_cell_recorded(tmp_path, serial_rows):
    import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        path, ran, failed = _run(tmp_path, parse_spec(SMALL), workers=2, cell_fn=flaky_cell)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert (ran, failed) == (8, 1)
    df = _rows(path)
    bad = df[df["error"].notna()]
    assert len(bad) == 1 and "injected failure" in bad["error"].iloc[0]
    assert (bad["strategy"].iloc[0], bad["seed"].iloc[0]) == ("folio", 1)
    good = df[df["error"].isna()].dropna(axis=1, how="all").reset_index(drop=True)
    expected = serial_rows[serial_rows["cell"].isin(good["cell"])].reset_index(drop=True)
    # the failed row turns int columns into floats (NaN); the values stay exact
    pd.testing.assert_frame_equal(good, expected[good.columns], check_exact=True,
                                  check_dtype=False)


def test_run_cell_records_an_error_and_goes_on():
    cell = Cell("highalloc", "folio", "linux-6.18", "99M", 0, (), True)   # not a 2M multiple
    rows = sweep.run_cell(cell.to_dict(), repeats=2)
    assert [r["repeat"] for r in rows] == [0, 1]
    assert all("ValueError" in r["error"] and "99M" in r["error"] for r in rows)


def test_run_cell_keeps_no_machine(monkeypatch):
    import weakref

    from workloads.backend import SimBackend
    machines = []

    class Tracked(SimBackend):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            machines.append(weakref.ref(self.machine))

    monkeypatch.setattr(sweep, "SimBackend", Tracked)
    cell = Cell("highalloc", "folio", "linux-6.18", "64M", 0, (), True)
    rows = sweep.run_cell(cell.to_dict(), repeats=2)
    assert len(machines) == 2 and all(r["error"] is None for r in rows)
    assert all(ref() is None for ref in machines)           # freed before run_cell returned
    assert all(isinstance(v, (str, int, float, bool, type(None))) for r in rows
               for v in r.values())                         # plain rows cross the wire


def _toml(doc):
    """A flat spec dict as TOML (lists of strings and numbers, one [params] table)."""
    def value(v):
        return "[" + ", ".join(value(x) for x in v) + "]" if isinstance(v, list) else \
            ("true" if v else "false") if isinstance(v, bool) else \
            f'"{v}"' if isinstance(v, str) else repr(v)
    lines = [f"{k} = {value(v)}" for k, v in doc.items() if k != "params"]
    lines += ["[params]"] + [f"{k} = {value(v)}" for k, v in doc.get("params", {}).items()]
    return "\n".join(lines) + "\n"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask(*args):
    return subprocess.Popen([str(pathlib.Path(sys.executable).parent / "dask"), *args],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


@pytest.mark.slow
def test_existing_cluster_same_rows_as_serial(tmp_path, serial_rows, monkeypatch):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")]
    try:
        for _ in range(2):
            procs.append(_dask("worker", address, "--nthreads", "1", "--no-dashboard",
                               "--memory-limit", "2GiB", "--host", "127.0.0.1"))
        from distributed import Client
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        # the command line with a spec file, the cluster found through Dask's own config
        spec = tmp_path / "small.toml"
        spec.write_text(_toml(SMALL))
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
        import dask
        dask.config.refresh()
        try:
            assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 0
        finally:
            monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
            dask.config.refresh()
        (path,) = (tmp_path / "out").iterdir()
        pd.testing.assert_frame_equal(_rows(path), serial_rows, check_exact=True)
        # a cell larger than every worker (2 GiB) is refused before anything is written
        assert cli.main(["sweep", "--grid", "workload=highalloc", "--grid", "mem=128G",
                         "--scheduler", address, "--out", str(tmp_path / "big")]) == 2
        assert not (tmp_path / "big").exists()
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _cell_files(path, prefix=""):
    """{file name: mtime} of the finished cells (not a killed writer's dot-named temporary)."""
    return {p.name: p.stat().st_mtime_ns for p in path.glob(f"{prefix}workload=*/*.parquet")
            if not p.name.startswith(".")}


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_repeats_nothing(tmp_path):
    argv = ["--grid", "workload=highalloc", "--grid", "strategy=legacy,split,folio",
            "--grid", "load=0.2:0.8:0.2", "--grid", "mem=256M", "--repeats", "2", "--quick"]
    total = 12
    proc = subprocess.Popen([sys.executable, "-m", "foliobench", "sweep", *argv, "--serial",
                             "--out", str(tmp_path)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(_cell_files(tmp_path, "*/")) >= 3:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    (run_dir,) = tmp_path.iterdir()
    before = _cell_files(run_dir)
    assert 3 <= len(before) < total, "the sweep was not killed mid-way"
    assert cli.main(["sweep", "--resume", str(run_dir), "--serial"]) == 0
    after = _cell_files(run_dir)
    assert len(after) == total
    assert all(after[name] == mtime for name, mtime in before.items())   # none run again
    df = pd.read_parquet(run_dir)
    assert len(df) == total * 2 and df["error"].isna().all()
    assert (df.groupby("cell")["repeat"].apply(sorted) == pd.Series([[0, 1]] * total)
            .set_axis(sorted(df["cell"].unique()))).all()
    assert not list(run_dir.rglob(".tmp-*"))
    # a second resume finds nothing to do
    assert cli.main(["sweep", "--resume", str(run_dir), "--serial"]) == 0
    assert _cell_files(run_dir) == after


BAD = [
    (["--grid", "workload=highalloc", "--grid", "fill=0.5"], "parameter 'fill' is unknown"),
    (["--grid", "workload=highalloc", "--grid", "load=0.5,1.5"], "out of range"),
    (["--grid", "workload=highalloc", "--grid", "strategy=,"], "empty grid"),
    (["--grid", "workload=highalloc", "--grid", "load=0.9:0.1:0.1"], "stop >= start"),
    (["--grid", "workload=nosuch"], "workload 'nosuch' is unknown"),
    (["--grid", "workload=highalloc", "--grid", "mem=16G", "--worker-memory", "512M"],
     "needs about"),
    (["--grid", "workload=highalloc", "--grid", "mem=3M"], "multiple of 2M"),
    (["--grid", "workload=highalloc", "--workers", "0"], "at least 1"),
    (["--grid", "workload=highalloc", "--repeats", "0"], "repeats = 0"),
    ([], "needs a SPEC"),
]


@pytest.mark.parametrize("argv, message", BAD)
def test_bad_grid_one_line_exit_2_nothing_written(tmp_path, capsys, argv, message):
    assert cli.main(["sweep", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, message", [
    ('workloads = ["highalloc"]\nstrategies = []\n', "empty grid: 'strategies'"),
    ('workloads = ["highalloc"]\ncolour = 1\n', "spec key 'colour' is unknown"),
    ('workloads = ["highalloc"]\n[params]\nload = {start = 0.1}\n', "needs stop"),
    ('workloads = ["highalloc"]\n[params]\nload = []\n', "empty grid"),
    ('workloads = ["highalloc"\n', "not valid TOML"),
    ('workloads = ["highalloc", "thp-heavy"]\n[params]\nload = [0.5]\n',
     "unknown for workload thp-heavy"),
])
def test_bad_spec_file(tmp_path, capsys, text, message):
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_spec_ranges_and_grid_flags():
    # strategies named: other tests register strategies of their own in this process
    spec = parse_spec({"workloads": "highalloc", "seeds": {"start": 3, "count": 3},
                       "strategies": ["legacy", "split", "folio"],
                       "profiles": ["linux-6.1", "linux-6.18"],
                       "params": {"load": {"start": 0.1, "stop": 0.7, "step": 0.2},
                                  "slab": {"start": 0.0, "stop": 0.1, "num": 3}}})
    assert spec.seeds == (3, 4, 5)
    assert dict(spec.params) == {"load": (0.1, 0.3, 0.5, 0.7), "slab": (0.0, 0.05, 0.1)}
    assert len(spec.cells()) == 3 * 2 * 3 * 4 * 3
    assert len({c.key for c in spec.cells()}) == len(spec.cells())
    assert spec.swept() == ["strategy", "profile", "seed", "param_load", "param_slab"]
    doc = grid_doc(["workload=thp-heavy", "mix=16K:1,64K:1", "fill=0.5:0.9:0.2", "seed=0,1"])
    grid = parse_spec(doc)
    assert dict(grid.params) == {"mix": ("16K:1", "64K:1"), "fill": (0.5, 0.7, 0.9)}
    assert grid.seeds == (0, 1)


def test_show_tables_and_plots(tmp_path, capsys):
    spec = parse_spec({**SMALL, "strategies": ["folio"], "seeds": [0, 1],
                       "params": {"load": [0.3, 0.8], "slab": [0.0, 0.1]}})
    path, _, _ = _run(tmp_path, spec, serial=True)
    assert cli.main(["sweep", "show", str(path), "--figure", "highorder_success"]) == 0
    out = capsys.readouterr().out
    assert "8/8 cells finished, 0 failed" in out and "highorder_success" in out
    plots = sorted(p.name for p in (path / "_plots").glob("*.png"))
    assert "highorder_success-vs-load.png" in plots
    assert "highorder_success-vs-slab.png" in plots
    assert "highorder_success-load-x-slab.png" in plots
    # the plots and the manifest stay out of the dataset
    assert len(pd.read_parquet(path)) == 8


# ---- snapshots as an axis, failed cells run again on resume ---------------------------------

@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    """Two 64M snapshots of differently fragmented machines (simcore's export, as `foliobench
    live snapshot` would write them)."""
    from simcore import Machine, snapshot_export, snapshot_file
    d = tmp_path_factory.mktemp("snapshots")
    paths = []
    for name, seed in (("a", 1), ("b", 2)):
        m = Machine(mem="64M", seed=seed)
        pfns = m.alloc_many(m.managed_pages // 8, 2, "movable", "anon", 0, compact=False)
        m.free_many(pfns[m.rng.random(len(pfns)) < 0.5])
        snapshot_file.save(d / f"{name}.npz", snapshot_export.export(m))
        paths.append(str(d / f"{name}.npz"))
    return paths


def test_snapshots_are_an_axis_each_cell_on_its_twin(tmp_path, snapshots):
    a, b = snapshots
    argv = ["sweep", "--grid", "workload=highalloc", "--grid", "strategy=folio",
            "--grid", f"snapshot={a},{b}", "--quick", "--serial", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    (run_dir,) = tmp_path.iterdir()
    df = pd.read_parquet(run_dir).set_index("snapshot")
    assert sorted(df.index) == [a, b] and (df["mem"] == "64M").all()
    assert df["error"].isna().all()
    # each row is the workload run on that snapshot's twin (foliobench run --snapshot)
    from foliobench.replay import twin_factory
    from workloads.base import run_one
    for path in (a, b):
        row = run_one("highalloc", "folio", "64M", 0, quick=True,
                      backend_factory=functools.partial(twin_factory(path),
                                                        profile="linux-6.18"))
        for col in ("highorder_success", "pages_migrated", "compact_stall"):
            assert df.loc[path, col] == row[col], (path, col)
    assert df.loc[a, "pages_migrated"] != df.loc[b, "pages_migrated"]   # two machines
    # the same grid from a TOML spec, and back from the sweep directory for --resume
    spec = tmp_path / "spec.toml"
    spec.write_text(f'workloads = ["highalloc"]\nstrategies = ["folio"]\nquick = true\n'
                    f'snapshots = ["{a}", "{b}"]\n')
    from foliobench.sweep_spec import load_spec
    assert load_spec(spec).cells() == SweepStore(run_dir).spec().cells()


@pytest.mark.parametrize("extra, message", [
    (["--worker-memory", "64M"], "needs about"),
    (["--grid", "mem=1G"], "give mem or snapshots, not both"),
])
def test_snapshot_sweeps_refused_up_front(tmp_path, capsys, snapshots, extra, message):
    argv = ["sweep", "--grid", "workload=highalloc", "--grid", f"snapshot={snapshots[0]}",
            *extra, "--serial", "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    if "needs about" in message:
        assert snapshots[0] in err               # names the snapshot too large for a worker
    assert not (tmp_path / "out").exists()


def test_a_snapshot_that_is_not_one_is_refused(tmp_path, capsys):
    (tmp_path / "x.npz").write_text("not a snapshot")
    for value, message in ((tmp_path / "x.npz", "not a readable foliobench snapshot"),
                           (tmp_path / "none.npz", "is not a file")):
        argv = ["sweep", "--grid", "workload=highalloc", "--grid", f"snapshot={value}",
                "--serial", "--out", str(tmp_path / "out")]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def failing_cell(cell, repeats):
    """flaky_cell, with the failure recorded in the rows as run_cell records its errors."""
    try:
        return flaky_cell(cell, repeats)
    except RuntimeError as exc:
        return sweep.error_rows(Cell.from_dict(cell), repeats, exc)


def test_resume_runs_the_failed_cells_again_and_nothing_else(tmp_path, serial_rows):
    spec = parse_spec(SMALL)
    path, ran, failed = _run(tmp_path, spec, serial=True, cell_fn=failing_cell)
    assert (ran, failed) == (8, 1)
    before = _cell_files(path)
    store = SweepStore(path)
    (bad,) = store.failed_keys()
    assert [c.key for c in store.todo(spec.cells())] == [bad] and not store.missing(spec.cells())
    ran, failed, interrupted = sweep.run_sweep(spec, store, serial=True,
                                               progress_stream=io.StringIO())
    assert (ran, failed, interrupted) == (1, 0, False)
    after = _cell_files(path)
    assert {n for n in after if after[n] != before[n]} == {f"{bad}.parquet"}
    # the error column is a string column once a cell recorded one; the values are the same
    pd.testing.assert_frame_equal(_rows(path), serial_rows, check_exact=True, check_dtype=False)
    assert not store.failed_keys() and not store.todo(spec.cells())
