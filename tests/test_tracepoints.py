"""The simulator's compaction and migration tracepoints (simcore.tracepoints), and the
traced compact_memory replay beside a live trace (foliobench.compaction_trace)."""
import json

import pytest
from test_replay import snap_path  # noqa: F401  (module fixture: a fragmented twin snapshot)
from test_twin import fragmented

from foliobench import compaction_trace
from foliobench.cli import main
from livekernel.fidelity import compaction_zones
from simcore import Machine, migrate, tracepoints

BEGIN, END, MIGRATE = (tracepoints.COMPACTION_BEGIN, tracepoints.COMPACTION_END,
                       tracepoints.MIGRATE_PAGES)
EXTFRAG, ISO_MIGRATE, ISO_FREE = (tracepoints.PAGE_ALLOC_EXTFRAG,
                                  tracepoints.ISOLATE_MIGRATEPAGES,
                                  tracepoints.ISOLATE_FREEPAGES)


def _traced_compact(seed=3, capacity=65536):
    m = fragmented("64M", seed=seed, rounds=40)
    before = m.vmstat()
    m.trace_events(True, capacity=capacity)
    result = m.compact()
    after = m.vmstat()
    return m, result, {k: after[k] - before.get(k, 0) for k in after}


def test_off_by_default_and_nothing_logged():
    m = fragmented("64M", seed=3, rounds=40)
    m.compact()
    assert len(m.migrate_stats) == migrate.NR_MS
    assert m.trace_records() == [] and m.trace_lost() == 0


def test_records_match_the_counters():
    m, result, delta = _traced_compact()
    recs = m.trace_records()
    assert m.trace_lost() == 0
    begins = [r for r in recs if r["event"] == BEGIN]
    ends = [r for r in recs if r["event"] == END]
    batches = [r for r in recs if r["event"] == MIGRATE]
    # one begin/end pair per zone compact_node() compacted, with its result
    zones = dict(m.zones)
    assert [r["status"] for r in ends] == [result[zones[i]] for i in sorted(zones)
                                           if m.pgdat.zones[i, 1] > m.pgdat.zones[i, 0]]
    assert len(begins) == len(ends) >= 1
    for b, e in zip(begins, ends):
        assert b["migrate_pfn"] == b["zone_start"] and b["sync"] and e["sync"]
        assert b["free_pfn"] < b["zone_end"] and b["free_pfn"] % 512 == 0
    assert batches, "a fragmented machine migrates something"
    assert sum(r["succeeded"] for r in batches) == delta["pgmigrate_success"] > 0
    assert sum(r["failed"] for r in batches) == delta["pgmigrate_fail"]
    assert sum(r["thp_succeeded"] for r in batches) == delta["thp_migration_success"]
    assert {r["mode"] for r in batches} <= {"MIGRATE_ASYNC", "MIGRATE_SYNC"}
    assert {r["reason"] for r in batches} == {"compaction"}
    runs = tracepoints.compaction_zones(recs)
    assert sum(len(r["batches"]) for r in runs) == len(batches)


def test_tracing_changes_nothing_and_is_deterministic():
    plain = fragmented("64M", seed=3, rounds=40)
    plain.compact()
    m1, _, _ = _traced_compact()
    m2, _, _ = _traced_compact()
    assert m1.digest() == plain.digest() == m2.digest()
    assert m1.trace_records() == m2.trace_records()
    m1.trace_events(False)
    assert m1.trace_records() == [] and m1.digest() == plain.digest()


def test_a_full_log_counts_what_it_drops():
    full, _, _ = _traced_compact()
    n = len(full.trace_records())
    m, _, _ = _traced_compact(capacity=2)
    assert m.trace_records() == full.trace_records()[:2]
    assert m.trace_lost() == n - 2


def test_direct_compaction_pairs_and_migrate_syscall():
    m = Machine("64M", seed=5)                   # one zone: a compact_zone() run per stall
    pfns = m.alloc_many(14000, 0, "movable", "anon")
    m.free_many(pfns[m.rng.random(len(pfns)) < 0.5])
    before = m.vmstat()
    m.trace_events(True)
    assert len(m.alloc_many(8, 9, "movable", "anon")) == 8
    after = m.vmstat()
    recs = m.trace_records()
    kinds = [r["event"] for r in recs if r["event"] in (BEGIN, END)]
    assert kinds == [BEGIN, END] * (after["compact_stall"] - before["compact_stall"]) != []
    assert len(tracepoints.compaction_zones(recs)) == len(kinds) // 2
    assert sum(r["succeeded"] for r in recs if r["event"] == MIGRATE) == \
        after["pgmigrate_success"] - before["pgmigrate_success"]
    heads = m.folios()["pfn"][:3]
    m.trace_events(True)
    m.migrate(heads, mode="sync", reason="syscall")
    (rec,) = m.trace_records()
    assert (rec["event"], rec["mode"], rec["reason"]) == \
        (MIGRATE, "MIGRATE_SYNC", "syscall_or_cpuset")


def test_isolate_records_are_the_scanners_blocks():
    m, _, delta = _traced_compact()
    recs = m.trace_records()
    runs, cur = [], None
    for r in recs:
        if r["event"] == BEGIN:
            cur = (r, [], [])
        elif r["event"] == END:
            runs.append(cur)
            cur = None
        elif r["event"] == ISO_MIGRATE:
            cur[1].append(r)
        elif r["event"] == ISO_FREE:
            cur[2].append(r)
    assert any(mig for _, mig, _ in runs) and any(free for _, _, free in runs)
    for begin, mig, free in runs:
        lo, hi = begin["zone_start"], begin["zone_end"]
        for r in mig + free:
            assert lo <= r["start_pfn"] <= r["end_pfn"] <= hi
            assert 0 <= r["nr_taken"] <= r["nr_scanned"]
            # one pageblock, or past its end over a folio or buddy of up to MAX_PAGE_ORDER
            assert r["end_pfn"] - r["start_pfn"] <= 1 << 10
        # the migrate scanner walks up from zone_start, the linear free scanner down
        starts = [r["start_pfn"] for r in mig]
        assert starts == sorted(starts) and (not mig or starts[0] >= begin["migrate_pfn"])
        # each walk of the free scanner stays in one pageblock; it may resume inside one
        assert all(r["start_pfn"] >> 9 == (r["end_pfn"] - 1) >> 9 for r in free)
    taken = sum(r["nr_taken"] for r in recs if r["event"] in (ISO_MIGRATE, ISO_FREE))
    scanned = sum(r["nr_scanned"] for r in recs if r["event"] == ISO_MIGRATE)
    # the fast scanners (fast_find_migrateblock, fast_isolate_freepages) are not traced
    assert 0 < taken <= delta["compact_isolated"]
    assert 0 < scanned <= delta["compact_migrate_scanned"]


def test_extfrag_records_each_fallback():
    m = Machine("64M", seed=2)
    m.alloc_many(13000, 0, "movable", "anon", compact=False)    # movable blocks everywhere
    m.trace_events(True)
    seen = 0
    for _ in range(400):
        assert m.alloc(0, "unmovable", "kernel", compact=False) is not None
        recs = [r for r in m.trace_records() if r["event"] == EXTFRAG]
        types = m.pageblock_map()[0]
        for r in recs[seen:]:
            assert (r["alloc_migratetype"], r["fallback_migratetype"]) in ((0, 1), (0, 2))
            assert r["fallback_order"] >= r["alloc_order"] == 0
            # whether the block is the requester's now (MIGRATE_UNMOVABLE is 0)
            assert r["change_ownership"] == (types[r["pfn"] // 512] == 0), r
        seen = len(recs)
    assert seen > 0 and any(r["change_ownership"] for r in recs)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, 1 << 30])
def test_bad_capacity_is_named(bad):
    m = fragmented("16M", seed=1, rounds=2)
    with pytest.raises(ValueError, match="capacity"):
        m.trace_events(True, capacity=bad)


def test_json_round_trip(tmp_path):
    m, _, _ = _traced_compact()
    path = tmp_path / "t.json"
    tracepoints.write_json(path, m.trace_records(), m.trace_lost())
    doc = json.loads(path.read_text())
    assert doc["records"] == m.trace_records() and doc["lost"] == 0


LIVE = """\
 sh-1 [000] ..... 1.1: mm_compaction_begin: zone_start=0x1000 migrate_pfn=0x1000 \
free_pfn=0x3e00 zone_end=0x4000, mode=sync
 sh-1 [000] ..... 1.2: mm_migrate_pages: nr_succeeded=30 nr_failed=2 nr_thp_succeeded=0 \
nr_thp_failed=0 nr_thp_split=0 nr_split=1 mode=MIGRATE_ASYNC reason=compaction
 sh-1 [000] ..... 1.3: mm_compaction_end: zone_start=0x1000 migrate_pfn=0x3e00 \
free_pfn=0x3e00 zone_end=0x4000, mode=sync status=complete
"""


def test_live_batches_parse_and_the_first_divergence():
    (run,) = compaction_zones(LIVE)
    assert run["batches"] == [{"succeeded": 30, "failed": 2, "thp_succeeded": 0,
                               "thp_failed": 0, "thp_split": 0, "large_folio_split": 1,
                               "mode": "MIGRATE_ASYNC", "reason": "compaction"}]
    twin = [dict(run, batches=[dict(run["batches"][0])])]
    assert compaction_trace.first_divergence([run], twin) is None
    twin[0]["batches"][0]["succeeded"] = 31
    d = compaction_trace.first_divergence([run], twin)
    assert d["event"] == "run 0 mm_migrate_pages 0"
    assert (d["live"]["succeeded"], d["twin"]["succeeded"]) == (30, 31)
    j, live_batch, twin_batch = compaction_trace.first_batch_divergence(run, twin[0])
    assert (j, live_batch["succeeded"], twin_batch["succeeded"]) == (0, 30, 31)
    assert compaction_trace.first_batch_divergence(run, run) is None
    d = compaction_trace.first_divergence([run], [])
    assert d["event"] == "zone 0x1000-0x4000 only live" and d["twin"] is None


def test_runs_pair_by_zone_overlap():
    (run,) = compaction_zones(LIVE)
    dma = dict(run, zone_start=0x1, zone_end=0x1000)       # the twin has no ZONE_DMA
    twin = [dict(run, zone_start=0)]
    pairs = compaction_trace.pair_runs([run, dma], twin)
    assert pairs == [(dma, None), (run, twin[0])]
    d = compaction_trace.first_divergence([dma, run], twin)
    assert d["event"] == "run 0 begin" and (d["live"]["zone_start"], d["twin"]["zone_start"]) \
        == (0x1000, 0)
    assert compaction_trace.first_divergence([dma, run], [run])["event"] == \
        "zone 0x1-0x1000 only live"


def test_replay_trace_command(snap_path, tmp_path, capsys):  # noqa: F811
    live = tmp_path / "live.trace"
    live.write_text(LIVE)
    out = tmp_path / "rows.json"
    assert main(["replay", str(snap_path), "--action", "compact_memory", "--trace",
                 "--live-trace", str(live), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "compaction runs, traced" in text and "first divergence: run 0" in text
    (row,) = json.loads(out.read_text())
    runs = row["compaction_runs"]
    assert len(runs) == 1 and runs[0]["status"] == row["outcome"]["result"]["DMA32"]
    assert sum(b["succeeded"] for r in runs for b in r["batches"]) == \
        row["counters"]["pgmigrate_success"]
    assert row["live_compaction_runs"][0]["batches"][0]["succeeded"] == 30


@pytest.mark.parametrize("argv,needle", [
    (["--live-trace", "x.trace"], "--live-trace needs --trace"),
    (["--trace", "--live-trace", "/nonexistent.trace"], "is not a file"),
])
def test_trace_flags_bad_input_is_one_line(snap_path, capsys, argv, needle):  # noqa: F811
    assert main(["replay", str(snap_path), "--action", "compact_memory"] + argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
