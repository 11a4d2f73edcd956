"""A trace the simulator writes (simcore.page_trace), read back, reproduces the run: the same
final state (digest) and counters, through the API and through `foliobench replay`."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simcore
from foliobench.cli import main
from simcore import page_trace, snapshot, snapshot_export, snapshot_file, trace_file
from simcore.mmzone import KIND_NAMES, KINDS
from workloads import trace as wtrace

REQUESTS = [("movable", "anon"), ("movable", "file"), ("reclaimable", "slab"),
            ("unmovable", "kernel")]
MT = {"unmovable": 0, "movable": 1, "reclaimable": 2}


@pytest.fixture(scope="module")
def snap_blob(tmp_path_factory):
    """A 64 MiB machine, half its order-0 pages freed: the start of every run below."""
    base = simcore.Machine("64M", seed=1)
    pfns = base.alloc_many(8000, 0, "movable", "anon", compact=False)
    base.free_many(pfns[::2])
    base.drain_all_pages()
    path = tmp_path_factory.mktemp("snap") / "s.npz"
    snapshot_file.save(path, snapshot_export.export(base))
    return path.read_bytes()


def _run(m, seed, steps=2500, bulk=False):
    """A seeded mix of allocations (orders up to 9, so compaction runs) and frees of folios
    wherever compaction moved them, on both CPUs; alloc_many/free_many too when `bulk`."""
    rng = np.random.default_rng(seed)
    handles = []
    mem_map, table = m.pgdat.mem_map, lambda: m.pgdat.folio_pfn
    for _ in range(steps):
        r = rng.random()
        if r < 0.6 or not handles:
            mt, kind = REQUESTS[int(rng.integers(len(REQUESTS)))]
            pfn = m.alloc(int(rng.choice([0, 0, 0, 2, 4, 9])), mt, kind,
                          compact=bool(rng.random() < 0.9), cpu=int(rng.integers(2)))
            if pfn is not None:
                handles.append(int(mem_map["next"][pfn]))
        elif bulk and r < 0.65:
            got = m.alloc_many(int(rng.integers(1, 50)), int(rng.choice([0, 9])), "movable",
                               "anon", cpu=int(rng.integers(2)))
            handles += [int(h) for h in mem_map["next"][got]]
        elif bulk and r < 0.7 and len(handles) > 10:
            idx = sorted(rng.choice(len(handles), 5, replace=False), reverse=True)
            m.free_many(np.array([table()[handles[i]] for i in idx]))
            for i in idx:
                handles.pop(i)
        else:
            h = handles.pop(int(rng.integers(len(handles))))
            m.free(int(table()[h]), cpu=int(rng.integers(2)))


def _recorded(snap_blob, tmp_path, strategy="folio", bulk=False):
    m = simcore.Machine.from_snapshot(snap_blob, compaction=strategy)
    m.trace_page_events()
    _run(m, seed=7, bulk=bulk)
    path = tmp_path / f"sim-{strategy}.npz"
    page_trace.save(path, m, snap_blob)
    return m, path


def _replayed(path):
    t = trace_file.load(path)
    h = t.header
    m = simcore.Machine.from_snapshot(t.snapshot, profile=h["profile"], compaction=h["strategy"],
                                      seed=h["seed"])
    return m, wtrace.replay(m, t), t


@pytest.mark.parametrize("strategy", ["legacy", "folio"])
def test_a_simulated_trace_read_back_reproduces_the_run(snap_blob, tmp_path, strategy):
    m, path = _recorded(snap_blob, tmp_path, strategy)
    ms = m.migration_stats()
    assert m.vmstat()["compact_stall"] > 0 and ms["succeeded"] > 0, "the run compacts"
    twin, fig, t = _replayed(path)
    twin.check()
    assert twin.digest() == m.digest()
    assert twin.vmstat() == m.vmstat() and twin.migration_stats() == ms
    assert t.header["inexact"] == 0 and t.header["lost_events"] == 0
    log = m.page_event_log
    allocs = t.count("mm_page_alloc")
    assert fig["allocs"] == allocs == fig["allocs_granted"] + fig["allocs_failed"]
    assert fig["allocs_failed"] == fig["allocs_failed_recorded"] > 0
    assert fig["same_pfn"] == fig["allocs_granted"] and fig["first_divergence"] is None
    assert fig["frees"] == fig["frees_matched"] == t.count("mm_page_free")
    assert allocs + t.count("mm_page_free") == len(log)


def test_bulk_calls_reproduce_layout_and_counters(snap_blob, tmp_path):
    """alloc_many/free_many replay as single calls: the same pages, free blocks, pageblocks
    and counters, though the handle table may have grown differently."""
    m, path = _recorded(snap_blob, tmp_path, bulk=True)
    twin, fig, _ = _replayed(path)
    assert snapshot.layout_digest(twin) == snapshot.layout_digest(m)
    assert twin.vmstat() == m.vmstat() and twin.migration_stats() == m.migration_stats()
    assert fig["frees_unmatched"] == 0 and fig["first_divergence"] is None


def test_off_by_default_and_tracing_changes_nothing(snap_blob):
    plain = simcore.Machine.from_snapshot(snap_blob)
    assert plain.page_event_log is None
    traced = simcore.Machine.from_snapshot(snap_blob)
    traced.trace_page_events()
    _run(plain, seed=3, steps=600)
    _run(traced, seed=3, steps=600)
    assert plain.digest() == traced.digest() and len(traced.page_event_log) > 0
    with pytest.raises(ValueError, match="trace_page_events"):
        page_trace.save("never.npz", plain, snap_blob)
    traced.trace_page_events(False)
    assert traced.page_event_log is None


def test_replay_cli_reproduces_the_counters(snap_blob, tmp_path, capsys):
    m, path = _recorded(snap_blob, tmp_path)
    out = tmp_path / "rows.json"
    assert main(["replay", str(path), "--strategy", "folio", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    row = doc["rows"][0]
    assert row["profile"] == m.profile.name and doc["first_divergence"] == [None]
    stats, ms = m.vmstat(), m.migration_stats()
    for counter in ("compact_stall", "compact_success", "compact_fail"):
        assert row[counter] == stats[counter], counter
    assert row["pages_migrated"] == ms["succeeded"]
    assert row["same_pfn"] == row["allocs_granted"] and row["frees_unmatched"] == 0


@settings(max_examples=200, deadline=None)
@given(order=st.integers(0, 10), mt=st.sampled_from(sorted(MT)),
       kind=st.sampled_from(KIND_NAMES), compact=st.booleans())
def test_gfp_round_trips_where_it_says_it_does(order, mt, kind, compact):
    gfp = page_trace.gfp_of(order, MT[mt], KINDS[kind], compact)
    back = wtrace.request_of(order, MT[mt], gfp)
    if page_trace.exact(order, MT[mt], KINDS[kind], 0):
        assert back == (mt, kind, compact and order > 0)
    else:
        assert back[1] != kind


def test_replay_trace_compares_the_tracepoints_event_by_event(snap_blob, tmp_path, capsys):
    """A simulated trace carrying its own compaction, migration and fallback tracepoints: its
    replay under the same strategy parts from them nowhere; under another one it does."""
    m = simcore.Machine.from_snapshot(snap_blob, compaction="folio")
    m.trace_page_events()
    m.trace_events(True, capacity=1 << 20)
    _run(m, seed=7)
    recs = m.trace_records()
    path = tmp_path / "traced.npz"
    page_trace.save(path, m, snap_blob)
    out = tmp_path / "rows.json"
    assert main(["replay", str(path), "--strategy", "folio", "--strategy", "legacy", "--trace",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "tracepoints, live kernel vs twin" in text and "first divergence: none" in text
    same, other = json.loads(out.read_text())["rows"]
    tp = same["tracepoints"]
    assert tp["first_divergence"] is None and tp["live"] == tp["twin"]
    counts = tp["live"]["counts"]
    assert counts["mm_compaction_begin"] == counts["mm_compaction_end"] > 0
    assert counts["mm_compaction_isolate_migratepages"] > 0
    assert counts["mm_compaction_isolate_freepages"] > 0
    assert counts["mm_migrate_pages"] == sum(r["event"] == "migrate:mm_migrate_pages"
                                             for r in recs)
    assert sum(tp["live"]["status"].values()) == counts["mm_compaction_end"]
    assert tp["live_runs"] == tp["twin_runs"] and len(tp["live_runs"]) > 0
    assert other["tracepoints"]["first_divergence"] is not None


def test_a_recorded_trace_refuses_live_trace(snap_blob, tmp_path, capsys):
    m, path = _recorded(snap_blob, tmp_path)
    assert main(["replay", str(path), "--trace", "--live-trace", "x.trace"]) == 2
    err = capsys.readouterr().err
    assert "--live-trace applies to a snapshot" in err and err.count("\n") == 1
