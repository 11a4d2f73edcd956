"""foliobench.results: run directories, atomic writes, round trips, printing."""
import datetime as dt
import json
import os

import numpy as np
import pandas as pd
import pytest

import simcore
from foliobench import results


def table():
    return pd.DataFrame({
        "strategy": ["legacy", "split", "folio", "folio"],
        "seed": np.array([0, 0, 0, 1], dtype=np.int64),
        "compaction_success_rate": [0.5, np.nan, 0.25, 1.0],
        "pages_migrated": np.array([10, 20, 30, 1 << 40], dtype=np.int64),
        "migration_gib_per_s": np.array([1.5, 2.25, np.nan, 3.0], dtype=np.float32),
        "whole": [True, False, True, True],
    })


def test_new_run_dir_name_and_uniqueness(tmp_path):
    now = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    first = results.new_run_dir(tmp_path, "fragment", now=now)
    assert first == tmp_path / "runs" / "20240506T070809Z-fragment"
    assert not first.exists()                       # created by the first write only
    first.mkdir(parents=True)
    second = results.new_run_dir(tmp_path, "fragment", now=now)
    assert second.name == "20240506T070809Z-fragment-2"
    second.mkdir()
    assert results.new_run_dir(tmp_path, "fragment", now=now).name.endswith("-3")
    # another time zone is converted to UTC; a naive time is taken as UTC
    cet = dt.timezone(dt.timedelta(hours=2))
    assert results.new_run_dir(tmp_path, "x", now=now.astimezone(cet)).name.startswith(
        "20240506T070809Z")
    assert results.new_run_dir(tmp_path, "x", now=now.replace(tzinfo=None)).name.startswith(
        "20240506T070809Z")
    assert results.new_run_dir(tmp_path, "a/b c").name.endswith("-a_b_c")
    with pytest.raises(ValueError, match="workload name"):
        results.new_run_dir(tmp_path, "//")


def test_round_trip(tmp_path):
    df = table()
    run = results.new_run_dir(tmp_path, "fragment")
    assert results.write_table(run, df, metadata={"workload": "fragment", "mem": "16G"}) == run
    assert sorted(p.name for p in run.iterdir()) == ["results.csv", "results.json"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert results.file_mode() == 0o666 & ~mask
    assert (run / "results.json").stat().st_mode & 0o777 == 0o666 & ~mask   # not mkstemp's 0600
    for path in (run, run / "results.json", run / "results.csv", str(run)):
        back, meta = results.load_run(path)
        pd.testing.assert_frame_equal(back, df, check_dtype=False)
        assert list(back.columns) == list(df.columns)
        assert meta["foliobench_version"] == simcore.__version__
        assert meta["python"].count(".") == 2
        assert meta["created"].endswith("+00:00")
        assert meta["workload"] == "fragment" and meta["mem"] == "16G"
        assert "git_commit" in meta
    back, _ = results.load_run(run)
    pd.testing.assert_frame_equal(back, df)          # the JSON keeps the dtypes exactly
    doc = json.loads((run / "results.json").read_text())
    assert doc["records"][1]["compaction_success_rate"] is None     # NaN -> null
    assert doc["records"][3]["pages_migrated"] == 1 << 40


def test_reserved_metadata_key(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        results.write_table(tmp_path / "r", table(), metadata={"python": "2.7"})
    assert not (tmp_path / "r").exists()


def test_git_commit(tmp_path):
    commit = results.git_commit()
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)
    assert results.git_commit(tmp_path) is None                 # not a repository
    assert results.git_commit(tmp_path / "missing") is None


def test_write_json_and_text(tmp_path):
    run = tmp_path / "run"
    obj = {"nan": np.nan, "inf": float("inf"), "i": np.int64(3), "f": np.float32(0.5),
           "arr": np.array([[1.0, np.nan], [2.0, 3.0]]), "ints": np.arange(3, dtype=np.uint8),
           "nested": {1: [np.bool_(True), None]}, "ts": pd.Timestamp("2024-01-01", tz="UTC")}
    path = results.write_json(run, "vmstat_delta", obj)
    assert path == run / "vmstat_delta.json"
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "inf": None, "i": 3, "f": 0.5,
                                "arr": [[1.0, None], [2.0, 3.0]], "ints": [0, 1, 2],
                                "nested": {"1": [True, None]}, "ts": "2024-01-01T00:00:00+00:00"}
    assert results.write_text(run, "buddyinfo_before.txt", "Node 0, zone Normal 1 2\n") \
        == run / "buddyinfo_before.txt"
    assert (run / "buddyinfo_before.txt").read_text() == "Node 0, zone Normal 1 2\n"
    assert sorted(p.name for p in run.iterdir()) == ["buddyinfo_before.txt", "vmstat_delta.json"]
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(ValueError, match="plain file name"):
            results.write_text(run, bad, "x")
    with pytest.raises(ValueError, match="write_table"):
        results.write_json(run, "results.json", {})
    with pytest.raises(TypeError, match="as JSON"):
        results.write_json(run, "bad", {"x": object()})
    assert sorted(p.name for p in run.iterdir()) == ["buddyinfo_before.txt", "vmstat_delta.json"]


def _fail_on_call(monkeypatch, n):
    """Make the n-th os.replace() call (1-based; 0: every call) raise, as a crash would."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if n == 0 or len(calls) == n:
            raise OSError("simulated crash")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    return calls


@pytest.mark.parametrize("n", [1, 2])
def test_crash_in_write_table_leaves_nothing(tmp_path, monkeypatch, n):
    run = results.new_run_dir(tmp_path, "fragment")
    calls = _fail_on_call(monkeypatch, n)
    with pytest.raises(OSError, match="simulated crash"):
        results.write_table(run, table())
    assert len(calls) == n
    assert not run.exists()                          # no directory, no partial or lone file
    assert list((tmp_path / "runs").iterdir()) == []


def test_crash_in_serialisation_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("serialiser died")
    monkeypatch.setattr(json, "dumps", boom)
    run = tmp_path / "runs" / "r"
    with pytest.raises(RuntimeError):
        results.write_table(run, table())
    assert not run.exists()


def test_crash_keeps_earlier_artefacts_and_old_file(tmp_path, monkeypatch):
    run = tmp_path / "run"
    results.write_text(run, "a.txt", "old")
    _fail_on_call(monkeypatch, 0)
    with pytest.raises(OSError):
        results.write_text(run, "a.txt", "new, but the machine crashed")
    with pytest.raises(OSError):
        results.write_json(run, "b", {"x": 1})
    monkeypatch.undo()
    assert sorted(p.name for p in run.iterdir()) == ["a.txt"]    # no temporary file left
    assert (run / "a.txt").read_text() == "old"


def test_load_run_errors(tmp_path):
    with pytest.raises(ValueError, match=r"no results\.json.*expected a foliobench run"):
        results.load_run(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        results.load_run(tmp_path / "nope")
    other = tmp_path / "notes.txt"
    other.write_text("hi")
    with pytest.raises(ValueError, match=r"notes\.txt is not a foliobench run"):
        results.load_run(other)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"results\.json is not a foliobench results file"):
        results.load_run(tmp_path)
    (tmp_path / "results.json").write_text('{"records": []}')
    with pytest.raises(ValueError, match="metadata"):
        results.load_run(tmp_path / "results.json")
    with pytest.raises(ValueError, match=r"results\.csv does not exist"):
        results.load_run(tmp_path / "results.csv")


def test_format_table():
    df = table()
    text = results.format_table(df, "table")
    lines = text.splitlines()
    assert len(lines) == 5 and len({len(line) for line in lines}) == 1    # aligned
    assert "0.5" in lines[1] and "-" in lines[2].split() and "1.5" in lines[1]
    assert "1099511627776" in lines[4]           # int columns untouched
    assert "nan" not in text.lower()
    assert results.format_table(pd.DataFrame({"x": [123456.789, 0.000123456, 2.0 / 3]}),
                                "table").split()[1:] == ["123000", "0.000123", "0.667"]
    # whole-number floats (counters in a float column, e.g. a mean over one seed) stay exact
    assert results.format_table(pd.DataFrame({"x": [4125.0, 2048.0, 1099511627776.0]}),
                                "table").split()[1:] == ["4125", "2048", "1099511627776"]
    assert results.format_table(df, "csv") == df.to_csv(index=False)
    records = json.loads(results.format_table(df, "json"))
    assert records[1]["compaction_success_rate"] is None and records[0]["strategy"] == "legacy"
    with pytest.raises(ValueError, match=r"'xml'.*'table', 'csv', 'json'"):
        results.format_table(df, "xml")


# --- whole runs: a kill while saving, leftovers, truncated tables (issue 12) ------------------

def _visible_runs(root):
    return sorted(p.name for p in (root / "runs").iterdir() if not p.name.startswith("."))


def test_save_run_publishes_a_complete_directory(tmp_path):
    run = results.new_run_dir(tmp_path, "fragment")

    def write(d):
        results.write_text(d, "buddyinfo.txt", "x")
        results.write_table(d, table())
    final = results.save_run(run, write)
    assert final == run and sorted(p.name for p in run.iterdir()) == [
        "buddyinfo.txt", "results.csv", "results.json"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [run.name]
    taken = results.save_run(run, write)            # the name is taken: -2
    assert taken.name == run.name + "-2"


@pytest.mark.parametrize("fail_at", ["artefact", "table", "no_table"])
def test_save_run_failing_midway_leaves_nothing(tmp_path, fail_at):
    run = results.new_run_dir(tmp_path, "fragment")

    def write(d):
        results.write_text(d, "buddyinfo.txt", "x")
        if fail_at == "artefact":
            raise RuntimeError("killed mid-save")
        if fail_at == "table":
            results.write_json(d, "more", {"a": 1})
            raise KeyboardInterrupt
    with pytest.raises((RuntimeError, KeyboardInterrupt, ValueError)):
        results.save_run(run, write)
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_run_killed_while_saving_leaves_no_run_dir_and_is_cleaned_up(tmp_path):
    import signal
    import subprocess
    import sys
    script = f"""
import os, signal, pathlib, sys
sys.path.insert(0, {str(os.getcwd())!r})
from foliobench import results
import pandas as pd
run = results.new_run_dir({str(tmp_path)!r}, "fragment")
def write(d):
    results.write_text(d, "buddyinfo.txt", "x")
    results.write_table(d, pd.DataFrame({{"a": [1, 2]}}))
    os.kill(os.getpid(), signal.SIGKILL)      # killed after the last write, before the rename
results.save_run(run, write)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    runs = tmp_path / "runs"
    left = list(runs.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".") and left[0].name.endswith(".partial")
    assert _visible_runs(tmp_path) == []            # no run directory without results.json
    assert results.cleanup_leftovers(runs) == left
    assert list(runs.iterdir()) == []


def test_cleanup_keeps_live_staging_and_recent_dirs(tmp_path):
    runs = tmp_path / "runs"
    mine = results.staging_dir(runs / "20260101T000000Z-x")       # this process is alive
    mine.mkdir(parents=True)
    old = runs / "20250101T000000Z-old"                # an older version's leftover
    old.mkdir()
    os.utime(old, (0, 0))
    recent = runs / "20260101T000000Z-recent"          # may still be being written
    recent.mkdir()
    other = runs / "notes"                             # not a run directory
    other.mkdir()
    assert results.cleanup_leftovers(runs) == [old]
    assert sorted(p.name for p in runs.iterdir()) == sorted(
        [mine.name, recent.name, other.name])


def test_show_refuses_a_truncated_csv_in_one_line(tmp_path, capsys):
    from foliobench import cli
    run = results.write_table(tmp_path / "runs" / "r", table())
    csv = run / "results.csv"
    whole = csv.read_bytes()
    assert cli.main(["show", str(csv), "--format", "csv"]) == 0
    capsys.readouterr()
    for cut in (len(whole) - 1, whole.rindex(b"\n", 0, len(whole) - 1) + 1, 40):
        csv.write_bytes(whole[:cut])
        assert cli.main(["show", str(csv)]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert len(err.strip().splitlines()) == 1 and "truncated" in err, err
    csv.write_bytes(b"")
    assert cli.main(["show", str(csv)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1


def test_show_cleans_up_leftovers_of_killed_runs(tmp_path, capsys):
    from foliobench import cli
    run = results.write_table(tmp_path / "runs" / "20260101T000000Z-ok", table())
    dead = tmp_path / "runs" / ".20260101T000001Z-x.999999999.partial"
    dead.mkdir()
    assert cli.main(["show", str(run)]) == 0
    assert not dead.exists() and run.exists()
