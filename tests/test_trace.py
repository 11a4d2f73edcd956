"""Recorded traces: the tracefs readers on real output captured on this machine, the trace file,
its replay on the twin, `live record` (live tests) and the bad input around them."""
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from livekernel import record, tracefs
from simcore import trace_file

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "tracefs"
TRACE = REPO / "traces" / "stress-ng-vm.npz"
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def formats():
    return [tracefs.parse_format(p.read_text()) for p in sorted(DATA.glob("*.format"))]


def fmt(name):
    return next(f for f in formats() if f.name == name)


# -- format files ----------------------------------------------------------------------------

def test_format_of_mm_page_alloc_as_this_kernel_wrote_it():
    f = fmt("mm_page_alloc")
    assert f.system == "" and f.id > 0
    assert f.fields == {"pfn": (8, 8, 0), "order": (16, 4, 0), "gfp_flags": (24, 8, 0),
                        "migratetype": (32, 4, 1)}
    tracefs.require_fields(f, trace_file.REPLAY_FIELDS["mm_page_alloc"])
    m = fmt("mm_migrate_pages")
    assert set(m.fields) >= {"succeeded", "failed", "thp_split", "mode", "reason"}


def test_a_format_without_a_replayed_field_is_refused():
    text = (DATA / "mm_page_alloc.format").read_text().replace("migratetype;", "mtype;")
    with pytest.raises(tracefs.TraceFormatError, match="no 4-byte field 'migratetype'"):
        tracefs.require_fields(tracefs.parse_format(text),
                               trace_file.REPLAY_FIELDS["mm_page_alloc"])
    with pytest.raises(tracefs.TraceFormatError, match="not a tracepoint format"):
        tracefs.parse_format("hello")


def test_gfp_table_from_the_print_format():
    table = dict(tracefs.gfp_flag_table(fmt("mm_page_alloc").print_fmt))
    assert table["__GFP_MOVABLE"] == 1 << 3 and table["__GFP_COMP"] == 1 << 18
    assert table["GFP_KERNEL"] == (1 << 10) | (1 << 11) | (1 << 6) | (1 << 7)
    assert tracefs.text_value("GFP_KERNEL|__GFP_ZERO", list(table.items())) == \
        table["GFP_KERNEL"] | 1 << 8


# -- binary pages against the text of the same buffer ----------------------------------------

def _text_events():
    table = tracefs.gfp_flag_table(fmt("mm_page_alloc").print_fmt)
    rows = []
    for line in (DATA / "trace.txt").read_text().splitlines():
        parsed = tracefs.parse_text_line(line)
        if parsed is None:
            continue
        event, cpu, ts, kv = parsed
        if event == "mm_page_free_batched":
            kv.pop("order")          # printed as a constant "order=0", not a field
        values = tuple(tracefs.text_value(kv[k], table if k == "gfp_flags" else None)
                       for k in ("pfn", "order", "migratetype", "gfp_flags") if k in kv)
        rows.append((event, cpu, ts // 1000) + values)
    return rows


def _binary_events():
    rows = []
    for cpu in (0, 1):
        recs = tracefs.walk_pages((DATA / f"cpu{cpu}.raw").read_bytes())
        cols, unknown = tracefs.decode(recs, formats())
        assert unknown == 0 and recs.bad_pages == 0
        for name, c in cols.items():
            keys = [k for k in ("pfn", "order", "migratetype", "gfp_flags") if k in c]
            if name == "mm_page_free_batched":
                keys = ["pfn"]
            for i in range(len(c["ts"])):
                # trace prints microseconds rounded (ns2usecs())
                rows.append((name, cpu, (int(c["ts"][i]) + 500) // 1000)
                            + tuple(int(c[k][i]) for k in keys))
    return rows


def test_binary_pages_decode_to_what_the_kernel_printed():
    text, binary = _text_events(), _binary_events()
    assert len(text) == 2855          # "entries-in-buffer/entries-written: 2855/2855"
    assert sorted(binary) == sorted(text)
    names = {r[0] for r in binary}
    assert {"mm_page_alloc", "mm_page_free", "mm_page_free_batched"} <= names


def test_per_cpu_stats_count_the_dropped_events():
    stats = record.parse_stats((DATA / "cpu0.stats").read_text())
    assert stats["dropped events"] == 3000 and stats["overrun"] == 0


def test_partial_or_corrupt_pages():
    raw = (DATA / "cpu0.raw").read_bytes()
    with pytest.raises(tracefs.TraceFormatError, match="whole number"):
        tracefs.walk_pages(raw[:-100])
    bad = bytearray(raw[:4096])
    bad[8:16] = (5000).to_bytes(8, "little")          # data size beyond the page
    assert tracefs.walk_pages(bytes(bad)).bad_pages == 1
    lost = bytearray(raw[:4096])
    size = int.from_bytes(lost[8:16], "little") & tracefs.COMMIT_SIZE_MASK
    if size + 24 <= 4096:
        lost[8:16] = (size | tracefs.MISSED_EVENTS | tracefs.MISSED_STORED).to_bytes(8, "little")
        lost[16 + size:24 + size] = (7).to_bytes(8, "little")
        assert tracefs.walk_pages(bytes(lost)).lost == 7


def test_batched_frees_repeat_a_free_of_the_same_page():
    cols = {}
    for cpu in (0, 1):
        c, _ = tracefs.decode(tracefs.walk_pages((DATA / f"cpu{cpu}.raw").read_bytes()),
                              formats())
        for name in ("mm_page_free", "mm_page_free_batched"):
            cols.setdefault(name, []).append(c[name]["pfn"])
    freed = set(np.concatenate(cols["mm_page_free"]).tolist())
    batched = np.concatenate(cols["mm_page_free_batched"]).tolist()
    assert batched and set(batched) <= freed


# -- the trace file --------------------------------------------------------------------------

def _tiny(tmp_path, snapshot=b"snap", **header):
    events = {"mm_page_alloc": {"ts": np.arange(3, dtype=np.uint64),
                                "cpu": np.zeros(3, np.uint16),
                                "pfn": np.array([10, 20, 30], np.uint64),
                                "order": np.zeros(3, np.uint32),
                                "gfp_flags": np.zeros(3, np.uint64),
                                "migratetype": np.ones(3, np.int32)},
              "mm_page_free": {"ts": np.array([5], np.uint64), "cpu": np.zeros(1, np.uint16),
                               "pfn": np.array([20], np.uint64), "order": np.zeros(1, np.uint32)}}
    head = {"kernel": "6.18.0", "events": {
        "mm_page_alloc": {"fields": {"pfn": "<u8", "order": "<u4", "gfp_flags": "<u8",
                                     "migratetype": "<i4"}},
        "mm_page_free": {"fields": {"pfn": "<u8", "order": "<u4"}}}}
    head.update(header)
    path = tmp_path / "t.npz"
    trace_file.save(path, head, events, snapshot)
    return path


def test_trace_file_round_trip(tmp_path):
    t = trace_file.load(_tiny(tmp_path))
    assert t.snapshot == b"snap" and t.count("mm_page_alloc") == 3
    assert t.events["mm_page_free"]["pfn"].tolist() == [20]


def test_bad_trace_files(tmp_path):
    path = _tiny(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="truncated or foreign"):
        trace_file.load(cut)
    with pytest.raises(ValueError, match="no start snapshot"):
        trace_file.load(_tiny(tmp_path, snapshot=b""))
    odd = _tiny(tmp_path, events={"mm_page_alloc": {"fields": {"pfn": "<u4"}},
                                  "mm_page_free": {"fields": {"pfn": "<u8", "order": "<u4"}}})
    with pytest.raises(ValueError, match="does not know that format"):
        trace_file.load(odd)


# -- replay --------------------------------------------------------------------------------

def test_gfp_to_request():
    from workloads.trace import request_of
    assert request_of(0, 1, 0x140dca) == ("movable", "anon", False)      # a user fault
    assert request_of(9, 1, 0x1c4cca | 1 << 8) == ("movable", "anon", True)
    assert request_of(4, 1, 0x152c4a) == ("movable", "file", True)       # readahead
    assert request_of(0, 2, 1 << 4) == ("reclaimable", "slab", False)
    assert request_of(2, 0, 0xcc0 | 1 << 18) == ("unmovable", "slab", True)
    assert request_of(0, 0, 0xcc0) == ("unmovable", "kernel", False)


def test_frees_follow_their_allocations_on_a_small_machine():
    import simcore
    from workloads.trace import Replayer
    m = simcore.Machine(mem="64M")
    r = Replayer(m)
    # recorded: order 2 at pfn 1000 (non-compound), freed as four order-0 pages; order 0 at 77
    r.alloc(0, 1000, 2, 0, 0xcc0, 0)
    r.alloc(1, 77, 0, 1, 0x100cca, 1)
    for pfn in (1001, 1000, 1003, 1002):
        r.free(pfn, 0)
    r.free(77, 0)
    r.free(5, 0)                       # never allocated in the trace, nothing at 5 at start
    m.check()
    f = r.figures
    assert f["frees_matched"] == 5 and f["folios_split"] == 1 and f["frees_unmatched"] == 1
    assert m.allocated_pages() == 0 and not r.live


def test_an_allocation_over_a_start_folio_supersedes_it():
    import simcore
    from workloads.trace import Replayer
    m = simcore.Machine(mem="64M")
    start = m.alloc(3, "movable", "anon")          # in the snapshot already
    r = Replayer(m)
    r.alloc(0, start + 2, 0, 1, 0x140dca, 0)        # the kernel allocated a page inside it
    assert r.figures["start_state_superseded"] == 1
    r.free(start + 2, 0)
    r.free(start, 3)                                # gone already: nothing to free twice
    m.check()
    assert m.allocated_pages() == 0 and r.figures["frees_unmatched"] == 1


def test_compaction_frees_move_the_owner_folio_instead_of_freeing_it():
    """mm/migrate.c frees a moved folio's source page (mm_page_free) inside compaction's
    migration window; compact_zone() releases unused isolated free pages before its end.
    Neither is an owner's free: the owner's folio stays, moved, until its owner frees it at a
    pfn the free scanner isolated from."""
    import simcore
    from workloads.trace import (
        K_BEGIN,
        K_END,
        K_ISOLATE_FREE,
        K_ISOLATE_MIGRATE,
        K_MIGRATE,
        Replayer,
    )
    m = simcore.Machine(mem="64M")
    r = Replayer(m)
    anon = 0x140dca | 1 << 8
    r.alloc(0, 5000, 0, 1, anon, 0)
    r.alloc(1, 5001, 0, 1, anon, 0)
    held = m.allocated_pages()
    r.compaction_event(K_BEGIN, 0, 0, 16384)
    r.compaction_event(K_ISOLATE_MIGRATE, 0, 4608, 5120)
    r.compaction_event(K_ISOLATE_FREE, 0, 15872, 16384)
    r.free(5000, 0, 1)          # the source page, freed after the task moved to CPU 1
    assert m.allocated_pages() == held and r.figures["frees_migrated"] == 1
    r.compaction_event(K_MIGRATE, 0, 0, 0)
    r.free(16000, 0, 0)         # an isolated free page handed back: no owner, in the run
    assert r.figures["frees_compaction_released"] == 1 and m.allocated_pages() == held
    r.compaction_event(K_END, 0, 0, 16384)
    r.free(5001, 0, 0)          # the window is closed: its owner's free
    r.free(16001, 0, 0)         # the moved folio, freed by its owner where it went
    assert r.figures["frees_of_moved"] == 1 and r.figures["frees_matched"] == 2
    assert m.allocated_pages() == held - 2
    r.free(16002, 0, 0)         # nothing moved is left
    assert r.figures["frees_unmatched"] == 1
    m.check()


def test_migration_frees_of_a_real_compaction_add_up_to_its_migrated_pages():
    """On a live compact_memory's recorded trace (the fidelity corpus), the frees inside the
    migration windows are the pages mm_migrate_pages reports moved."""
    from foliobench import fidelity_trace
    from workloads import trace as wt
    found = sorted(REPO.glob("fidelity/corpus/*/compact_memory-*.trace.npz"))
    if not found:
        pytest.skip("no traced compact_memory run in the corpus")
    data = fidelity_trace.load(found[-1])
    if "mm_page_free" not in data.events:
        pytest.skip("the traced run's mm_page_free events were dropped for size")
    s = wt.stream_of(data)
    mig = wt.MigrationFrees()
    pages = 0
    for kind, cpu, pfn, order, end in zip(s.kind.tolist(), s.cpu.tolist(), s.pfn.tolist(),
                                          s.order.tolist(), s.end.tolist()):
        if kind == wt.K_FREE:
            pages += mig.is_migration_free(pfn) << order
        elif kind != wt.K_ALLOC:
            mig.event(kind, cpu, pfn, end)
    moved = int(data.events["mm_migrate_pages"]["succeeded"].sum())
    assert moved > 0 and abs(pages - moved) <= moved // 100
    assert pages < data.count("mm_page_free")


@pytest.mark.slow
@pytest.mark.skipif(not TRACE.exists(), reason="the committed trace is missing")
def test_committed_trace_replays_deterministically():
    import simcore
    from workloads.trace import load_trace, replay
    trace = load_trace(str(TRACE))
    assert trace.header["lost_events"] == 0
    digests, figures = [], []
    for _ in range(2):
        m = simcore.Machine.from_snapshot(trace.snapshot, profile="linux-6.18")
        figures.append(replay(m, trace))
        m.check()
        digests.append(m.digest())
        del m
    assert digests[0] == digests[1] and figures[0] == figures[1]
    f = figures[0]
    assert f["allocs"] == trace.count("mm_page_alloc") - f["allocs_failed_recorded"]
    assert f["frees"] == trace.count("mm_page_free")
    assert f["frees_matched"] > 0.9 * f["frees"]


# -- the command line ----------------------------------------------------------------------

def cli(*args):
    return subprocess.run([sys.executable, "-m", "foliobench", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("make, message", [
    ("cut", "truncated or foreign"),
    ("nosnap", "no start snapshot"),
    ("format", "does not know that format"),
])
def test_replay_refuses_bad_traces(tmp_path, make, message):
    path = _tiny(tmp_path, snapshot=b"" if make == "nosnap" else b"snap",
                 **({"events": {"mm_page_alloc": {"fields": {"pfn": "<u4"}}}}
                    if make == "format" else {}))
    if make == "cut":
        data = path.read_bytes()
        path.write_bytes(data[:len(data) - 200])
    out = tmp_path / "rows.json"
    done = cli("replay", str(path), "-o", str(out))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not out.exists()


@pytest.mark.parametrize("make, message", [
    ("cut", "truncated or foreign"),
    ("nosnap", "no start snapshot"),
    ("format", "does not know that format"),
    ("large", "to simulate"),
    ("badsnap", "not a readable foliobench snapshot"),
])
def test_a_bad_trace_as_a_workload_is_refused(tmp_path, monkeypatch, capsys, make, message):
    """`run`, `sweep` and `compare` with trace:FILE: the same refusals as `replay`, one line,
    exit 2, no results."""
    from foliobench.cli import main
    if make == "large":
        if not TRACE.exists():
            pytest.skip("the committed trace is missing")
        from simcore import snapshot as snap_mod
        monkeypatch.setattr(snap_mod, "estimate_bytes", lambda *a, **k: 1 << 60)
        path = TRACE
    else:
        path = _tiny(tmp_path, snapshot=b"" if make == "nosnap" else b"snap",
                     **({"events": {"mm_page_alloc": {"fields": {"pfn": "<u4"}}}}
                        if make == "format" else {}))
        if make == "cut":
            data = path.read_bytes()
            path.write_bytes(data[:len(data) - 200])
    out = tmp_path / "results"
    for argv in (["run", f"trace:{path}", "--strategy", "folio", "--out", str(out)],
                 ["sweep", "--grid", f"workload=trace:{path}", "--grid", "strategy=folio",
                  "--serial", "--out", str(out)],
                 ["compare", "legacy", "folio", "--workload", f"trace:{path}", "--fast",
                  "-o", str(out)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv[0], err)
        assert not out.exists() or not any(p.is_file() for p in out.rglob("*")), argv[0]


def test_replay_refuses_a_machine_too_large(tmp_path, monkeypatch, capsys):
    from simcore import snapshot as snap_mod
    from workloads import trace as trace_mod
    trace = trace_mod.load_trace(str(TRACE)) if TRACE.exists() else None
    if trace is None:
        pytest.skip("the committed trace is missing")
    monkeypatch.setattr(snap_mod, "estimate_bytes", lambda *a, **k: 1 << 60)
    from foliobench.cli import main
    out = tmp_path / "rows.json"
    assert main(["replay", str(TRACE), "--strategy", "folio", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "to simulate" in err, err
    assert not out.exists()


def test_record_without_root_is_refused(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("runs as root: the refusal is for other users")
    out = tmp_path / "t.npz"
    done = cli("live", "record", "-o", str(out), "--duration", "1")
    assert done.returncode == 2 and "needs root" in done.stderr and not out.exists()


def test_record_arguments_are_checked(tmp_path):
    out = tmp_path / "t.npz"
    for args in (["--duration", "1", "--", "true"], [], ["--duration", "0"],
                 ["--", "/nonexistent/program"]):
        done = cli("live", "record", "-o", str(out), *args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not out.exists()


# -- live ----------------------------------------------------------------------------------

def _require_live():
    if os.geteuid() != 0:
        pytest.skip("live recording needs root")
    if not os.path.isdir(record.TRACEFS):
        pytest.skip("this kernel has no tracefs")


def _instances():
    inst = pathlib.Path(record.TRACEFS, "instances")
    return sorted(p.name for p in inst.iterdir()) if inst.is_dir() else []


@pytest.mark.live
def test_live_record_of_a_short_command(tmp_path):
    _require_live()
    mounted = os.path.isdir(os.path.join(record.TRACEFS, "instances"))
    before = _instances()
    out = tmp_path / "t.npz"
    done = cli("live", "record", "-o", str(out), "--buffer-kb", "8192", "--",
               "sh", "-c", "head -c 8M /dev/zero | cat > /dev/null")
    assert done.returncode == 0, done.stderr
    assert "lost events 0" in done.stdout
    t = trace_file.load(out)
    assert t.count("mm_page_alloc") > 100 and t.header["lost_events"] == 0
    assert _instances() == before
    assert os.path.isdir(os.path.join(record.TRACEFS, "instances")) == mounted


def _start_recording(tmp_path):
    out = tmp_path / "t.npz"
    proc = subprocess.Popen([sys.executable, "-m", "foliobench", "live", "record", "-o", str(out),
                             "--no-baseline", "--buffer-kb", "1024", "--", "sleep", "60"],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 400        # the lock may be held by another live run
    while time.monotonic() < deadline:
        if any(n == f"foliobench-{proc.pid}" for n in _instances()):
            time.sleep(1.0)
            return proc, out
        if proc.poll() is not None:
            pytest.fail(f"record ended early: {proc.stderr.read()}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail("record never made its instance")


@pytest.mark.live
def test_live_record_restores_on_sigint(tmp_path):
    _require_live()
    mounted = os.path.isdir(os.path.join(record.TRACEFS, "instances"))
    before = _instances()
    proc, out = _start_recording(tmp_path)
    proc.send_signal(2)
    proc.wait(timeout=60)
    assert proc.returncode == 130, proc.stderr.read()
    assert _instances() == before and not out.exists()
    assert os.path.isdir(os.path.join(record.TRACEFS, "instances")) == mounted


@pytest.mark.live
def test_live_record_restored_by_live_restore_after_sigkill(tmp_path):
    _require_live()
    mounted = os.path.isdir(os.path.join(record.TRACEFS, "instances"))
    before = _instances()
    proc, out = _start_recording(tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    assert f"foliobench-{proc.pid}" in _instances()
    done = cli("live", "restore")
    assert done.returncode == 0, done.stderr
    assert _instances() == before and not out.exists()
    assert os.path.isdir(os.path.join(record.TRACEFS, "instances")) == mounted


def test_a_snapshot_without_action_is_pointed_to_action(tmp_path, capsys):
    from foliobench.cli import main
    path = tmp_path / "snap.npz"
    np.savez(path, header=np.zeros(1, np.uint8), kpf_values=np.zeros(1))
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a snapshot: replay it with --action" in err


@pytest.mark.slow
@pytest.mark.skipif(not TRACE.exists(), reason="the committed trace is missing")
def test_a_trace_is_a_workload(capsys):
    from foliobench.cli import main
    assert main(["run", f"trace:{TRACE}", "--strategy", "folio", "--no-save",
                 "--format", "json"]) == 0
    import json
    rows = json.loads(capsys.readouterr().out)
    row = rows[0] if isinstance(rows, list) else rows["records"][0]
    assert row["workload"] == f"trace:{TRACE}" and row["allocs"] > 20000
    assert row["highorder_requested"] == row["allocs"] and row["frees_matched"] > 0


@pytest.mark.slow
@pytest.mark.skipif(not TRACE.exists(), reason="the committed trace is missing")
def test_a_trace_in_a_sweep(tmp_path):
    import pandas as pd

    from foliobench.cli import main
    assert main(["sweep", "--grid", f"workload=trace:{TRACE}", "--grid", "strategy=folio",
                 "--serial", "--out", str(tmp_path)]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    df = pd.read_parquet(run)
    assert df["workload"].tolist() == [f"trace:{TRACE}"] and df["allocs"].iloc[0] > 20000



def _ops():
    from hypothesis import strategies as st
    return st.lists(st.tuples(st.sampled_from(["alloc", "free", "pieces", "free_start",
                                               "over_start", "unknown"]),
                              st.integers(0, 3), st.integers(0, 10_000)),
                    max_size=60)


def _replay_property(ops):
    """Any stream of recorded allocations and frees (whole, in order-0 pieces, of the start
    state, over the start state, of pages never seen): check() holds, and once every recorded
    allocation is freed the twin holds exactly the start folios that no event released."""
    import simcore
    from workloads.trace import Replayer
    m = simcore.Machine(mem="64M")
    start = {}
    for order in (0, 2, 3, 0, 1):
        pfn = m.alloc(order, "unmovable", "kernel")
        start[pfn] = order
    r = Replayer(m)
    base = 1 << 20                    # recorded pfns of this stream: no start folio there
    live = {}
    next_slot = base
    for kind, order, pick in ops:
        if kind == "alloc":
            next_slot = (next_slot + (1 << order) - 1) >> order << order
            r.alloc(0, next_slot, order, 0, 0xcc0, 0)
            live[next_slot] = order
            next_slot += 1 << order
        elif kind in ("free", "pieces") and live:
            pfn = sorted(live)[pick % len(live)]
            order = live.pop(pfn)
            if kind == "free":
                r.free(pfn, order)
            else:
                for j in reversed(range(1 << order)):
                    r.free(pfn + j, 0)
        elif kind in ("free_start", "over_start") and start:
            pfn = sorted(start)[pick % len(start)]
            order = start.pop(pfn)
            if kind == "free_start":
                r.free(pfn, order)
            else:
                r.alloc(0, pfn, 0, 0, 0xcc0, 0)
                live[pfn] = 0
        elif kind == "unknown":
            r.free(base - 1 - pick, 0)
        m.check()
    for pfn, order in list(live.items()):
        r.free(pfn, order)
    m.check()
    assert m.allocated_pages() == sum(1 << o for o in start.values())
    assert not r.live


def test_replay_keeps_the_books_for_any_stream():
    from hypothesis import given, settings
    settings(max_examples=40, deadline=None)(given(_ops())(_replay_property))()


@pytest.mark.live
def test_live_record_for_a_duration(tmp_path):
    _require_live()
    before = _instances()
    out = tmp_path / "idle.npz"
    done = cli("live", "record", "-o", str(out), "--duration", "1", "--buffer-kb", "4096")
    assert done.returncode == 0, done.stderr
    t = trace_file.load(out)
    assert t.header["duration_s"] == 1 and t.header["traced_s"] >= 1
    assert t.header["lost_events"] == 0 and _instances() == before
