"""foliobench fidelity: the figures and verdicts, the recorded corpus replayed on the twin, and
bad input (no root, unknown experiment, missing or foreign corpus) refused in one line."""
import json
import os
import pathlib

import numpy as np
import pytest

from foliobench import fidelity_corpus, fidelity_metrics, fidelity_report, fidelity_twin
from foliobench.cli import main
from simcore.snapshot import KPF

REPO = pathlib.Path(__file__).resolve().parent.parent
CORPORA = sorted(p.parent for p in (REPO / "fidelity" / "corpus").glob("*/manifest.json"))


def _words(*names):
    return np.uint64(sum(1 << KPF[n] for n in names))


def test_large_anon_pages_counts_heads_and_tails_of_anon_folios_only():
    flags = np.array([_words("anon", "compound_head"), _words("anon", "compound_tail"),
                      _words("anon"),                                  # order 0
                      _words("compound_head", "huge"), _words("compound_tail", "huge"),
                      _words("lru", "compound_head"),                  # large file folio
                      _words("buddy")], dtype=np.uint64)
    assert fidelity_metrics.large_anon_pages(flags) == 2


def test_figures_from_counters():
    fig = fidelity_metrics.figures(
        {"compact_stall": 4, "compact_success": 1, "pgmigrate_success": 10},
        {"asked": 8, "granted": 6}, 200, 150,
        {"Normal": [0] * 9 + [1, 0]})
    assert fig["granted_share"] == 75.0
    assert fig["compaction_success"] == 25.0
    assert fig["large_kept"] == 75.0
    assert fig["pgmigrate_success"] == 10
    assert fig["unusable_after"] == 0.0          # all free memory is one order-9 block
    none = fidelity_metrics.figures({}, {}, 0, 0, {})
    assert none["granted_share"] is None and none["compaction_success"] is None
    assert none["large_kept"] is None and none["unusable_after"] is None


@pytest.mark.parametrize("figure,twin,live,dist,bar", [
    ("granted_share", 80.0, 75.0, 5.0, True),
    ("granted_share", 60.0, 75.0, -15.0, False),
    ("pgmigrate_success", 150, 100, 1.5, True),
    ("pgmigrate_success", 400, 100, 4.0, False),
    ("compact_stall", 0, 0, 1.0, True),              # the floor of 1 keeps zero finite
    ("unusable_after", 0.30, 0.25, 5.0, True),
])
def test_distance_and_bar(figure, twin, live, dist, bar):
    d = fidelity_metrics.distance(figure, twin, live)
    assert d == pytest.approx(dist)
    assert fidelity_metrics.meets_bar(figure, d) is bar


def test_judge_uses_the_live_spread_not_one_draw():
    j = fidelity_metrics.judge("compact_stall", [4, 1300, 20], [900])
    assert j["live"] == (20, 4, 1300)
    assert j["within_spread"] is True            # inside 4..1300 although 45x the median
    assert j["meets_bar"] is False
    assert fidelity_metrics.judge("compact_stall", [4, 5], [6])["within_spread"] is False


@pytest.mark.parametrize("release,profile", [("6.18.44-fc-v1045", "linux-6.18"),
                                             ("6.19.0", "linux-6.18"), ("5.4.0", "linux-6.1")])
def test_profile_matching_the_kernel(release, profile):
    assert fidelity_twin.profile_for_kernel(release) == profile


# ---- bad input: one line, exit 2, nothing written ---------------------------------------------

def _refused(capsys, tmp_path, argv):
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
    return err


def test_live_fidelity_without_root_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in _refused(capsys, tmp_path, ["fidelity"])
    rec = tmp_path / "rec"
    assert "needs root" in _refused(capsys, tmp_path, ["fidelity", "--record", str(rec)])
    assert not rec.exists()


def test_unknown_experiment_is_refused(capsys, tmp_path):
    err = _refused(capsys, tmp_path, ["fidelity", "--experiment", "defrag"])
    assert "'defrag' is unknown" in err and "compact_memory" in err


def test_missing_and_foreign_corpus_are_refused(capsys, tmp_path):
    assert "does not exist" in _refused(capsys, tmp_path,
                                        ["fidelity", "--corpus", str(tmp_path / "none")])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a fidelity corpus" in _refused(capsys, tmp_path,
                                               ["fidelity", "--corpus", str(empty)])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    assert "not a fidelity corpus manifest" in _refused(
        capsys, tmp_path, ["fidelity", "--corpus", str(foreign)])
    (foreign / "manifest.json").write_text("{not json")
    assert "not readable JSON" in _refused(capsys, tmp_path,
                                           ["fidelity", "--corpus", str(foreign)])


def test_corpus_with_a_missing_snapshot_is_refused(tmp_path):
    manifest = fidelity_corpus.new_manifest("6.18.0", 1, {})
    manifest["experiments"].append({"name": "compact_memory", "runs": [
        {"snapshot": "compact_memory-1.npz", "action": "compact_memory", "twin": {},
         "live": {}}]})
    fidelity_corpus.write_manifest(tmp_path, manifest)
    with pytest.raises(fidelity_corpus.CorpusError, match="compact_memory-1.npz.*missing"):
        fidelity_corpus.load(tmp_path)


# ---- the recorded corpus --------------------------------------------------------------------

def test_the_repository_holds_a_corpus_within_20_mb():
    assert CORPORA, "no fidelity/corpus/<kernel-release>/manifest.json in the repository"
    for corpus in CORPORA:
        manifest = fidelity_corpus.load(corpus)
        assert {e["name"] for e in manifest["experiments"]} == {
            "compact_memory", "hugetlb", "mthp64k", "kcompactd"}
        assert all(len(e["runs"]) >= 3 for e in manifest["experiments"])
    size = sum(p.stat().st_size for p in (REPO / "fidelity").rglob("*") if p.is_file())
    assert size <= 20 << 20


def test_corpus_replay_of_one_run():
    """The fast CI check: one experiment, one twin run, judged against the live spread."""
    corpus = CORPORA[0]
    manifest = fidelity_corpus.load(corpus, ["compact_memory"])
    a = fidelity_twin.replay_corpus(manifest, runs=1)
    figs = {f["figure"]: f for f in a["experiments"][0]["strategies"][0]["figures"]}
    assert figs["pgmigrate_success"]["twin"] > 0      # the twin did compact
    assert len(figs["pgmigrate_success"]["live"]) == 3
    assert figs["granted_share"]["live"] is None       # compact_memory asks for nothing
    assert a["profile"] == fidelity_twin.profile_for_kernel(manifest["kernel"])
    assert "compact_memory [" in fidelity_report.table(a)


@pytest.mark.slow
def test_corpus_replay_is_deterministic():
    corpus = CORPORA[0]
    a, b = (fidelity_twin.replay_corpus(fidelity_corpus.load(corpus, ["kcompactd"]), runs=1)
            for _ in range(2))
    # compared as JSON text: a figure that does not apply has error NaN, and NaN != NaN
    assert fidelity_report.to_json(a) == fidelity_report.to_json(b)


@pytest.mark.slow
def test_whole_corpus_replays_through_the_command(tmp_path, capsys):
    corpus = CORPORA[0]
    assert main(["fidelity", "--corpus", str(corpus), "--quiet", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("compact_memory", "hugetlb", "mthp64k", "kcompactd"):
        assert name in out
    (run,) = (tmp_path / "fidelity").iterdir()
    assert sorted(p.name for p in run.iterdir()) == ["fidelity.html", "fidelity.json",
                                                     "fidelity.md", "fidelity.png"]
    doc = json.loads((run / "fidelity.json").read_text())
    assert len(doc["experiments"]) == 4


# ---- the gate on the fidelity errors --------------------------------------------------------

def test_gate_fails_a_fidelity_error_only_beyond_its_tolerance():
    from benchmarks import gate
    key = "bench_fidelity.FidelityOutcome.track_share_error(hugetlb)"
    counter = "bench_fidelity.FidelityOutcome.track_counter_error(compact_memory)"
    base = {key: 5.0, counter: 1.0, "bench_compaction.CompactionOutcome.x(folio)": 3.0}
    assert gate.compare(base, {**base, key: 6.5}) == []                 # within 2 points
    assert gate.drift(base, {**base, key: 6.5}) == [(key, 5.0, 6.5)]
    assert gate.compare(base, {**base, key: 1.0}) == []                 # better passes
    assert gate.compare(base, {**base, key: 7.5}) == [(key, 5.0, 7.5)]  # worse beyond 2
    assert gate.compare(base, {**base, counter: 1.3}) == [(counter, 1.0, 1.3)]
    assert gate.compare(base, {**base, counter: 1.2}) == []
    # every other benchmark stays exact
    other = "bench_compaction.CompactionOutcome.x(folio)"
    assert gate.compare(base, {**base, other: 2.9}) == [(other, 3.0, 2.9)]
    # a figure that appears or vanishes is a change
    assert gate.compare(base, {k: v for k, v in base.items() if k != key}) == [
        (key, 5.0, "missing")]


def test_fidelity_benchmarks_are_in_the_baseline():
    from benchmarks import bench_fidelity, gate
    assert "bench_fidelity.FidelityOutcome" in gate.DETERMINISTIC
    baseline = json.loads(gate.BASELINE.read_text())
    for exp in bench_fidelity.EXPERIMENTS:
        for track in gate.FIDELITY_TOLERANCE:
            assert f"bench_fidelity.FidelityOutcome.{track}({exp})" in baseline


def test_re_recording_removes_snapshots_the_new_manifest_does_not_name(tmp_path):
    from foliobench import fidelity_live
    for name in ("compact_memory-1.npz", "compact_memory-4.npz", "hugetlb-2.npz", "mine-1.npz"):
        (tmp_path / name).write_bytes(b"x")
    manifest = {"experiments": [{"name": "compact_memory",
                                 "runs": [{"snapshot": "compact_memory-1.npz"}]}]}
    fidelity_live._remove_stale_snapshots(tmp_path, manifest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compact_memory-1.npz", "mine-1.npz"]


TRACE = """\
 python-1 [000] ..... 1.0: mm_compaction_isolate_freepages: range=(0x10 ~ 0x20) \
nr_scanned=9 nr_taken=9
 python-1 [000] ..... 1.1: mm_compaction_begin: zone_start=0x1000 migrate_pfn=0x1000 \
free_pfn=0xffe00 zone_end=0x100000, mode=sync
 python-1 [000] ..... 1.2: mm_compaction_isolate_migratepages: range=(0x1000 ~ 0x1200) \
nr_scanned=512 nr_taken=0
 python-1 [000] ..... 1.3: mm_compaction_end: zone_start=0x1000 migrate_pfn=0xffe00 \
free_pfn=0xffe00 zone_end=0x100000, mode=sync status=complete
 python-1 [000] ..... 1.4: mm_compaction_begin: zone_start=0x100000 migrate_pfn=0x100000 \
free_pfn=0x5b7e00 zone_end=0x5b8000, mode=sync
 python-1 [000] ..... 1.5: mm_compaction_isolate_migratepages: range=(0x100000 ~ 0x100200) \
nr_scanned=512 nr_taken=264
 python-1 [000] ..... 1.6: mm_compaction_isolate_freepages: range=(0x5b7e00 ~ 0x5b8000) \
nr_scanned=512 nr_taken=0
 python-1 [000] ..... 1.7: mm_compaction_isolate_freepages: range=(0x58cc00 ~ 0x58cc58) \
nr_scanned=88 nr_taken=80
 python-1 [000] ..... 1.8: mm_compaction_migratepages: nr_migrated=0 nr_failed=264
 python-1 [000] ..... 1.9: mm_compaction_end: zone_start=0x100000 migrate_pfn=0x100200 \
free_pfn=0x58cc58 zone_end=0x5b8000, mode=sync status=contended
"""


def test_compaction_zones_from_a_trace():
    from livekernel.fidelity import compaction_zones
    dma32, normal = compaction_zones(TRACE)
    assert (dma32["status"], dma32["migrate_scanned"], dma32["free_scanned"]) == \
        ("complete", 512, 0)
    assert normal["status"] == "contended"
    assert (normal["migrate_begin"], normal["migrate_end"]) == (0x100000, 0x100200)
    assert (normal["free_begin"], normal["free_end"]) == (0x5b7e00, 0x58cc58)
    assert (normal["migrate_taken"], normal["free_scanned"], normal["free_taken"]) == \
        (264, 600, 80)
    # a zone run without its end line is not reported
    assert compaction_zones(TRACE.rsplit("\n", 2)[0]) == [dma32]


def test_fidelity_help_prints(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fidelity", "--help"])
    assert exc.value.code == 0
    from foliobench.fidelity_live import DEFAULT_CAP
    assert f"{DEFAULT_CAP} of MemAvailable" in capsys.readouterr().out
