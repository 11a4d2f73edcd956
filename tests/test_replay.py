"""foliobench replay: an action on a snapshot's twin, per strategy; bad input refused."""
import json

import pytest
from test_twin import fragmented

from foliobench import replay
from foliobench.cli import main
from simcore import snapshot_export, snapshot_file


@pytest.fixture(scope="module")
def snap_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("snap") / "s.npz"
    snapshot_file.save(path, snapshot_export.export(fragmented("128M", seed=7, rounds=60)))
    return path


@pytest.mark.parametrize("text,parsed", [
    ("compact_memory", ("compact_memory", None)), ("hugetlb=3", ("hugetlb", 3)),
    ("order9=12", ("order9", 12)), ("fault=64K:100", ("fault", (4, 100))),
    ("fault=2M:1", ("fault", (9, 1))),
])
def test_parse_action(text, parsed):
    assert replay.parse_action(text) == parsed


@pytest.mark.parametrize("text", ["compact", "hugetlb=0", "order9=x", "fault=3K:1",
                                  "fault=64K", "fault=8M:1", ""])
def test_bad_action_is_named(text):
    with pytest.raises(ValueError, match="action|fault size"):
        replay.parse_action(text)


def test_replay_is_deterministic_and_per_strategy(snap_path, tmp_path, capsys):
    out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
    args = ["replay", str(snap_path), "--action", "order9=40", "--strategy", "legacy",
            "--strategy", "folio"]
    assert main(args + ["-o", str(out1)]) == 0
    assert main(args + ["-o", str(out2)]) == 0
    rows = json.loads(out1.read_text())
    assert out1.read_text() == out2.read_text()
    assert [r["strategy"] for r in rows] == ["legacy", "folio"]
    for row in rows:
        o = row["outcome"]
        assert 0 <= o["granted"] <= o["asked"] == 40
        assert row["buddyinfo_before"] != row["buddyinfo_after"] or o["granted"] == 0
    assert "granted" in capsys.readouterr().out


def test_compact_memory_on_a_twin_keeps_pages(snap_path):
    rows = replay.replay(str(snap_path), "compact_memory")
    row = rows[0]
    assert set(row["outcome"]["result"]) == {"DMA32"}
    assert row["counters"]["compact_migrate_scanned"] > 0


@pytest.mark.parametrize("argv,needle", [
    (["--action", "explode"], "action 'explode' is unknown"),
    (["--action", "compact_memory", "--profile", "linux-0.1"], "linux-0.1"),
])
def test_replay_bad_input_is_one_line(snap_path, capsys, argv, needle):
    assert main(["replay", str(snap_path)] + argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", None])
def test_replay_of_a_bad_file_is_one_line(tmp_path, snap_path, capsys, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(snap_path.read_bytes()[:500] if content is None else content)
    assert main(["replay", str(path), "--action", "compact_memory"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "snapshot" in err


def test_run_a_workload_on_a_twin(snap_path, capsys):
    assert main(["run", "thp-heavy", "--quick", "--snapshot", str(snap_path), "--strategy",
                 "folio", "--no-save"]) == 0
    out = capsys.readouterr().out
    assert "thp-heavy" in out and "folio" in out


def test_run_snapshot_bad_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"nope")
    assert main(["run", "thp-heavy", "--quick", "--snapshot", str(bad), "--no-save"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "snapshot" in err


def test_twin_refuses_machine_options(snap_path):
    with pytest.raises(ValueError, match="cannot take machine options"):
        replay.TwinBackend(snapshot=str(snap_path), cma="8M")


def test_twin_backend_reclaims_the_captured_page_cache_and_keeps_an_arena(snap_path):
    """A twin run (`run --snapshot`, `run --twin`) has reclaim on, as every simulator row; beside
    a live arena it serves only what fits there, and counts the rest."""
    from foliobench.replay import TwinBackend
    b = TwinBackend(snapshot=str(snap_path), seed=0, strategy="folio", arena_pages=4096)
    assert b.machine.reclaim and b.total_pages == 4096
    got = b.alloc(10, 9, kind="hugetlb", gfp="retry_mayfail")
    assert len(got) == 8 and b.arena_declined_pages == 2 << 9
    b.free(got[:2])
    assert len(b.alloc(3, 9, kind="hugetlb")) == 2 and b.arena_declined_pages == 3 << 9
    # the captured page cache sits on the LRU for reclaim to take
    from simcore import vmscan
    vmscan.lru_sync(b.machine)
    assert b.machine.lru.nr_pages.sum() > 0
    b.machine.check()


def test_twin_option_needs_both_backends(capsys):
    for extra in ([], ["--backend", "live", "--dry-run"], ["--backend", "sim"]):
        rc = main(["run", "thp-heavy", "--twin", "--no-save", *extra])
        assert rc == 2
        err = capsys.readouterr().err
        assert "--twin" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_run_on_a_snapshot_with_mem_keeps_to_that_arena(snap_path, tmp_path):
    import pandas as pd
    argv = ["run", "thp-heavy", "--snapshot", str(snap_path), "--strategy", "folio",
            "--param", "phase2=order9", "--param", "second=0.9", "--no-plots",
            "--progress", "none"]
    assert main(argv + ["--out", str(tmp_path / "a"), "--mem", "32M"]) == 0
    assert main(argv + ["--out", str(tmp_path / "b")]) == 0
    arena, = [pd.read_csv(d / "results.csv") for d in (tmp_path / "a" / "runs").iterdir()]
    whole, = [pd.read_csv(d / "results.csv") for d in (tmp_path / "b" / "runs").iterdir()]
    assert arena["arena_declined_pages"][0] > 0 and "arena_declined_pages" not in whole
    assert arena["highorder_requested"][0] < whole["highorder_requested"][0]
    assert arena["mem"][0] == whole["mem"][0] == "128M"      # the snapshot's size
