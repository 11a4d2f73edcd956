"""foliobench fidelity --trace without root: the traced runs of the committed corpus, their
stored tracepoints against the kernel's own counters, the twin's tracepoints against its
counters, the comparison in the table and the outputs, and the stored trace format."""
import json
import pathlib

import numpy as np
import pytest

from foliobench import fidelity_corpus, fidelity_report, fidelity_trace, fidelity_twin
from foliobench.cli import main

REPO = pathlib.Path(__file__).resolve().parent.parent
CORPORA = sorted(p.parent for p in (REPO / "fidelity" / "corpus").glob("*/manifest.json"))
CORPUS = CORPORA[-1] if CORPORA else None
pytestmark = pytest.mark.skipif(CORPUS is None, reason="no committed fidelity corpus")


def _traced_runs(manifest):
    return [(exp["name"], run) for exp in manifest["experiments"] for run in exp["runs"]
            if "trace" in run]


def _sum(data, event, field):
    cols = data.events.get(event)
    return 0 if cols is None else int(cols[field].astype(np.int64).sum())


def test_every_experiment_has_a_traced_run_with_nothing_lost():
    manifest = fidelity_corpus.load(CORPUS)
    traced = _traced_runs(manifest)
    assert {name for name, _ in traced} == {e["name"] for e in manifest["experiments"]}
    for _name, run in traced:
        path = CORPUS / run["trace"]["file"]
        assert path.stat().st_size == run["trace"]["bytes"] <= fidelity_trace.MAX_TRACE_BYTES
        data = fidelity_trace.load(path)
        assert data.header["lost_events"] == 0 == run["trace"]["lost_events"]
        assert data.header["counts"] == run["trace"]["counts"]
        assert data.header["kernel"] == manifest["kernel"]
        for event in data.header["stored"]:
            ts = data.events[event]["ts"]
            assert len(ts) == data.count(event) and np.all(np.diff(ts) >= 0)


def test_a_stored_trace_adds_up_to_the_kernel_counters_of_its_run():
    """The kernel's vmstat deltas around the action and its tracepoints during it are two
    records of the same work: migrate_pages batches sum to pgmigrate_success/fail, the
    scanners' blocks to compact_migrate_scanned/free_scanned."""
    manifest = fidelity_corpus.load(CORPUS)
    for _name, run in _traced_runs(manifest):
        data = fidelity_trace.load(CORPUS / run["trace"]["file"])
        c = run["live"]["counters"]
        pairs = [(c["pgmigrate_success"], _sum(data, "mm_migrate_pages", "succeeded")),
                 (c["pgmigrate_fail"], _sum(data, "mm_migrate_pages", "failed")),
                 (c["compact_migrate_scanned"],
                  _sum(data, "mm_compaction_isolate_migratepages", "nr_scanned")),
                 (c["compact_free_scanned"],
                  _sum(data, "mm_compaction_isolate_freepages", "nr_scanned")
                  + _sum(data, "mm_compaction_fast_isolate_freepages", "nr_scanned"))]
        for counter, traced in pairs:
            # vmstat is read just outside the traced window: others may add a little
            assert abs(counter - traced) <= max(16, counter // 100), (run["snapshot"], pairs)


def test_twin_tracepoints_of_a_traced_run_add_up_to_its_counters():
    """The twin replays the traced compact_memory run with its tracepoints on; the comparison
    holds the same counts the twin's counters give, whatever the model produces."""
    manifest = fidelity_corpus.load(CORPUS, ["compact_memory"])
    (name, run), *_ = _traced_runs(manifest)
    data = fidelity_trace.load(CORPUS / run["trace"]["file"])
    twin = fidelity_twin.replay_run(CORPUS / run["snapshot"], run, "linux-6.18", None, data)
    cmp = twin["trace"]
    assert cmp["twin_lost"] == 0
    assert cmp["twin"]["migrate_pages"]["succeeded"] == twin["counters"]["pgmigrate_success"]
    assert cmp["twin"]["migrate_pages"]["failed"] == twin["counters"]["pgmigrate_fail"]
    assert sum(cmp["twin"]["status"].values()) == len(cmp["twin_runs"]) \
        == cmp["twin"]["counts"]["mm_compaction_end"]
    # the live side is the stored trace, unchanged by the replay
    assert cmp["live"]["migrate_pages"]["succeeded"] == _sum(data, "mm_migrate_pages",
                                                             "succeeded")
    assert len(cmp["live_runs"]) == data.count("mm_compaction_end")
    # compact_memory compacts each zone once on both sides: the runs pair by zone
    assert cmp["pairing"] == "zone"
    for run_ in cmp["live_runs"] + cmp["twin_runs"]:
        assert run_["zone_start"] <= run_["migrate_begin"] <= run_["migrate_end"]
        assert run_["free_end"] <= run_["free_begin"] < run_["zone_end"]
    lines = fidelity_trace.format_experiment(name, twin["strategy"], run["snapshot"], cmp)
    assert lines[-1].startswith("  first divergence: ")


@pytest.mark.slow
def test_the_traced_replay_is_deterministic():
    manifest = fidelity_corpus.load(CORPUS, ["compact_memory"])
    (_name, run), *_ = _traced_runs(manifest)
    data = fidelity_trace.load(CORPUS / run["trace"]["file"])
    a, b = (fidelity_twin.replay_run(CORPUS / run["snapshot"], run, "linux-6.18", None, data)
            for _ in range(2))
    assert fidelity_report.to_json(a["trace"]) == fidelity_report.to_json(b["trace"])


@pytest.mark.slow
def test_the_command_compares_traced_runs_in_the_table_and_outputs(tmp_path, capsys):
    assert main(["fidelity", "--corpus", str(CORPUS), "--trace", "--experiment",
                 "compact_memory", "--runs", "1", "--quiet", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "compact_memory [" in out and "tracepoints, live kernel vs twin" in out
    assert "mm_compaction_end status=" in out and "first divergence:" in out
    (run,) = (tmp_path / "fidelity").iterdir()
    md = (run / "fidelity.md").read_text()
    assert "## Tracepoints, live kernel vs twin" in md and "| compaction run 0 |" in md
    assert "mm_migrate_pages pages succeeded" in md
    doc = json.loads((run / "fidelity.json").read_text())
    assert doc["traced"] is True
    twins = doc["experiments"][0]["strategies"][0]["twin_runs"]
    # run 1 (untraced) and the traced run
    assert [("trace" in t) for t in twins] == [False, True]
    assert twins[1]["trace"]["live"]["counts"]["mm_compaction_end"] > 0


def test_without_trace_nothing_is_compared():
    manifest = fidelity_corpus.load(CORPUS, ["kcompactd"])
    a = fidelity_twin.replay_corpus(manifest, runs=1)
    assert [("trace" in t) for t in a["experiments"][0]["strategies"][0]["twin_runs"]] == [
        False]
    assert "tracepoints, live kernel vs twin" not in fidelity_report.table(a)


# ---- the stored format ----------------------------------------------------------------------

def _events(n, seed=0):
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(10**12, 10**12 + 10**9, n)).astype(np.uint64)
    return {"mm_page_free": {"ts": ts, "cpu": rng.integers(0, 2, n).astype(np.uint16),
                             "pfn": rng.integers(0, 1 << 22, n).astype(np.uint64),
                             "order": rng.integers(0, 10, n).astype(np.uint32)},
            "mm_compaction_end": {"ts": ts[:3] + 1, "cpu": np.zeros(3, np.uint16),
                                  "status": np.array([5, 7, 8], np.int32)}}


def test_a_trace_too_large_drops_the_page_allocator_first_and_keeps_its_count(tmp_path):
    events = _events(200_000)
    path = tmp_path / "x.trace.npz"
    header = fidelity_trace.save(path, {"kernel": "k", "lost_events": 0}, events,
                                 max_bytes=50_000)
    assert header["dropped_for_size"] == ["mm_page_free"]
    assert path.stat().st_size <= 50_000
    data = fidelity_trace.load(path)
    assert data.count("mm_page_free") == 200_000 and "mm_page_free" not in data.events
    assert data.events["mm_compaction_end"]["status"].tolist() == [5, 7, 8]
    # kept whole when it fits; timestamps come back exactly
    events = _events(20_000, seed=1)
    assert "dropped_for_size" not in fidelity_trace.save(
        path, {"kernel": "k", "lost_events": 0}, events)
    data = fidelity_trace.load(path)
    for name, cols in events.items():
        for col, arr in cols.items():
            assert np.array_equal(data.events[name][col].astype(np.int64),
                                  arr.astype(np.int64)), (name, col)


def test_bad_stored_traces_are_named(tmp_path):
    path = tmp_path / "x.trace.npz"
    fidelity_trace.save(path, {"kernel": "k", "lost_events": 0}, _events(1000))
    cut = tmp_path / "cut.trace.npz"
    cut.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(ValueError, match="cut.trace.npz is not a readable fidelity trace"):
        fidelity_trace.load(cut)
    snap = next(CORPUS.glob("*-1.npz"))
    with pytest.raises(ValueError, match="not a fidelity trace"):
        fidelity_trace.load(snap)


def test_a_corpus_missing_a_trace_is_refused(tmp_path, capsys):
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    exp = next(e for e in manifest["experiments"] if any("trace" in r for r in e["runs"]))
    run = next(r for r in exp["runs"] if "trace" in r)
    manifest["experiments"] = [{"name": exp["name"], "runs": [run]}]
    (tmp_path / run["snapshot"]).write_bytes((CORPUS / run["snapshot"]).read_bytes())
    fidelity_corpus.write_manifest(tmp_path, manifest)
    with pytest.raises(fidelity_corpus.CorpusError, match="trace .* is missing"):
        fidelity_corpus.load(tmp_path)
    assert main(["fidelity", "--corpus", str(tmp_path), "--trace", "--no-save"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is missing" in err[0]


def test_append_needs_record(capsys, tmp_path):
    assert main(["fidelity", "--corpus", str(CORPUS), "--append", "--no-save"]) == 2
    assert "--append adds runs" in capsys.readouterr().err


def test_recording_again_names_its_traces_and_keeps_the_rest(tmp_path):
    """--append --trace replaces a corpus's traced runs: the old trace files not named by the
    new manifest go, every other file stays."""
    from foliobench import fidelity_live
    for name in ("compact_memory-1.npz", "compact_memory-4.npz", "compact_memory-4.trace.npz",
                 "compact_memory-5.trace.npz", "mine-1.npz"):
        (tmp_path / name).write_bytes(b"x")
    manifest = {"experiments": [{"name": "compact_memory", "runs": [
        {"snapshot": "compact_memory-1.npz"},
        {"snapshot": "compact_memory-4.npz", "trace": {"file": "compact_memory-4.trace.npz"}}]}]}
    fidelity_live._remove_stale_snapshots(tmp_path, manifest)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "compact_memory-1.npz", "compact_memory-4.npz", "compact_memory-4.trace.npz",
        "mine-1.npz"]
    assert fidelity_live._next_index(manifest, "compact_memory") == 5


def _zone_run(start, end, migrate_end, status="complete", batches=()):
    return {"zone_start": start, "zone_end": end, "migrate_begin": start, "free_begin": end - 512,
            "migrate_end": migrate_end, "free_end": migrate_end, "status": status,
            "batches": list(batches)}


def test_the_twins_folded_dma_zone_is_not_the_first_divergence():
    """The kernel compacts ZONE_DMA and DMA32 apart; the twin has one zone for both. Their
    zone starts differ by layout: the first divergence is where compaction itself parts."""
    from foliobench import compaction_trace
    batch = {"succeeded": 95, "failed": 0}
    live = [_zone_run(0x1, 0x1000, 0xe00), _zone_run(0x1000, 0x100000, 0xffe00),
            _zone_run(0x100000, 0x640000, 0x10ae00, batches=[batch, batch])]
    twin = [_zone_run(0x0, 0x100000, 0xffe00),
            _zone_run(0x100000, 0x640000, 0x103e50, "contended",
                      batches=[batch, {"succeeded": 15, "failed": 16}])]
    d = compaction_trace.first_divergence(live, fidelity_trace._on_live_zones(live, twin))
    assert d["event"] == "run 1 mm_migrate_pages 1" and d["twin"]["failed"] == 16
    # as recorded, the folded zone's start is what parts first
    assert compaction_trace.first_divergence(live, twin)["event"] == "run 0 begin"
    # identical compaction: only the zone the twin lacks remains
    same = [_zone_run(0x0, 0x100000, 0xffe00), live[2]]
    d = compaction_trace.first_divergence(live, fidelity_trace._on_live_zones(live, same))
    assert d["event"] == "zone 0x1-0x1000 only live"
