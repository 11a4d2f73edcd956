"""The live backend on this machine's real kernel: real fault sizes, every workload, and the
safety guarantees (Ctrl-C, SIGTERM and a failing step restore everything; no root, over the
cap and --dry-run change nothing). Skips, with the reason, where a capability is missing."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from livestate import leftovers, settings

import workloads
from foliobench import cli
from livekernel import backend as live_backend
from livekernel.probe import probe
from livekernel.session import LiveSession

pytestmark = pytest.mark.live

CAPS = probe() if os.path.exists("/sys/kernel/mm") else {}
ROOT = bool(CAPS) and CAPS["root"].available
MTHP = bool(CAPS) and CAPS["mthp"].available and bool(live_backend.mthp_sizes())
needs_root = pytest.mark.skipif(not ROOT, reason=CAPS["root"].detail if CAPS else "no sysfs")
needs_mthp = pytest.mark.skipif(not (ROOT and MTHP), reason="needs root and a kernel with "
                                "per-size mTHP (/sys/kernel/mm/transparent_hugepage/"
                                "hugepages-*kB/enabled)")
needs_hugetlb = pytest.mark.skipif(not (ROOT and os.path.exists(live_backend.HUGETLB_POOL)),
                                   reason="needs root and a 2 MiB hugetlb pool")
ARENA = "512M"
REPO = pathlib.Path(__file__).resolve().parent.parent


@needs_mthp
def test_fault_sizes_are_observed_from_the_kernel(tmp_path):
    before = settings()
    with LiveSession(mem=ARENA, workdir=str(tmp_path)) as live:
        b = live.factory(seed=0)
        got = b.fault_anon(2048, [4])                    # 2048 x 64 KiB with only 64K enabled
        assert open(live_backend.mthp_sizes()[4] / "enabled").read().count("[madvise]") == 1
        orders = {o: len(h) for o, h in got.items()}
        assert sum(len(h) << o for o, h in got.items()) == 2048 << 4
        assert orders.get(4, 0) >= 1024, orders          # a mostly free machine gives 64K folios
        handles = got[4]
        assert (b.folio_orders(handles) == 4).all()
        base = b.fault_anon(256, [0])
        assert list(base) == [0] and len(base[0]) == 256
        b.free(handles[::2])
        assert b.used_pages == (2048 << 4) - (len(handles[::2]) << 4) + 256
        b.close()
        assert not list(tmp_path.iterdir())
    assert settings() == before


@needs_mthp
@pytest.mark.parametrize("workload", ["thp-heavy", "highalloc", "pagecache-churn"])
def test_workloads_run_live_and_leave_nothing_changed(workload, tmp_path):
    before = settings()
    with LiveSession(mem=ARENA, workdir=str(tmp_path)) as live:
        row = workloads.run_one(workload, "kernel", mem=live.mem, quick=True,
                                backend_factory=live.factory)
    assert row["backend"] == "live" and row["unsupported"] == ""
    assert row["highorder_requested"] > 0
    assert 0 <= row["highorder_success"] <= 1
    assert row["fragindex_9_before"] is not None
    assert settings() == before
    assert not leftovers(tmp_path)


@needs_root
def test_unsupported_step_is_reported_and_the_run_goes_on(tmp_path):
    with LiveSession(mem=ARENA, workdir=str(tmp_path)) as live:
        row = workloads.run_one("hotunplug-cycles", "kernel", mem=live.mem, quick=True,
                                backend_factory=live.factory)
        assert row["unsupported"].startswith("unsupported on this kernel: memory offline "
                                             "needs --allow-offline")
        assert np.isnan(row["highorder_success"])
        if not CAPS["cma"].available:
            row = workloads.run_one("cma-reservations", "kernel", mem=live.mem, quick=True,
                                    backend_factory=live.factory)
            assert "no CMA area" in row["unsupported"]


@needs_hugetlb
@needs_mthp
def test_a_failing_step_in_the_middle_restores_everything(tmp_path, monkeypatch):
    before = settings()
    calls = []
    real = live_backend.LiveBackend._hugetlb

    def failing(self, count):
        got = real(self, count)                   # the pool has grown: now fail
        calls.append(len(got))
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        return got

    monkeypatch.setattr(live_backend.LiveBackend, "_hugetlb", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        with LiveSession(mem=ARENA, workdir=str(tmp_path)) as live:
            workloads.run_one("highalloc", "kernel", mem=live.mem, quick=True,
                              backend_factory=live.factory)
    assert len(calls) == 2 and calls[1] > 0
    assert settings() == before
    assert not leftovers(tmp_path)


def _live_cli(workload, tmp_path, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "foliobench", "run", workload, "--backend", "live", "--mem",
         "1G", "--no-save", "--live-dir", str(tmp_path), *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_change(proc, before, timeout=90):
    """Poll until the run has changed some setting; return what changed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        now = settings()
        changed = {k: v for k, v in now.items() if before.get(k) != v}
        if changed:
            return changed
        time.sleep(0.005)
    out, err = proc.communicate(timeout=60)
    pytest.fail(f"the run changed no setting (rc {proc.returncode}): {err[-2000:]}")


@needs_hugetlb
@pytest.mark.parametrize("sig, workload, code", [(signal.SIGINT, "highalloc", 130),
                                                 (signal.SIGTERM, "thp-heavy", 143)])
def test_killed_mid_way_restores_every_setting(sig, workload, code, tmp_path):
    before = settings()
    proc = _live_cli(workload, tmp_path)
    try:
        changed = _wait_for_change(proc, before)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-2000:]
    assert changed                                   # it was interrupted mid-way
    assert settings() == before
    assert not leftovers(tmp_path)


@needs_root
def test_refuses_without_root_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("livekernel.session.os.geteuid", lambda: 1000)
    before = settings()
    rc = cli.main(["run", "highalloc", "--backend", "live", "--mem", ARENA, "--no-save"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "need root (running as uid 1000)" in err
    assert settings() == before


def test_refuses_over_the_cap_before_touching_anything(capsys, tmp_path):
    before = settings()
    rc = cli.main(["run", "highalloc", "--backend", "live", "--mem", "100T", "--no-save",
                   "--dry-run", "--live-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "would exceed the live memory cap" in err and err.count("\n") == 1
    assert settings() == before


@needs_mthp
def test_dry_run_prints_the_writes_and_changes_nothing(capsys, tmp_path):
    before = settings()
    rc = cli.main(["run", "thp-heavy", "--backend", "live", "--dry-run", "--mem", ARENA,
                   "--live-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "dry-run: would write 'madvise' to /sys/kernel/mm/transparent_hugepage/" in out
    assert "nothing was changed" in out
    assert settings() == before
    assert not list(tmp_path.iterdir())


@needs_mthp
def test_side_by_side_table_has_a_backend_column(capsys, tmp_path):
    rc = cli.main(["run", "thp-heavy", "--backend", "sim", "--backend", "live", "--mem", ARENA,
                   "--quick", "--no-save", "--live-dir", str(tmp_path), "--format", "csv"])
    out = capsys.readouterr().out
    assert rc == 0
    import io

    import pandas as pd
    df = pd.read_csv(io.StringIO(out))
    assert list(df["backend"]) == ["sim", "live"]
    assert list(df["strategy"]) == ["folio", "kernel"]
    assert df["param_mix"].nunique() == 1
    mem_total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    sim_bytes = workloads.base.parse_size(df["mem"][0], "mem")
    assert mem_total - (2 << 20) < sim_bytes <= mem_total   # the simulator sized as this host


@needs_hugetlb
@needs_mthp
def test_twin_side_by_side_starts_the_simulator_from_the_live_memory(tmp_path):
    out = tmp_path / "out"
    # the arena is smaller than the shape's demand: both backends decline the same pages
    rc = cli.main(["run", "thp-heavy", "--backend", "sim", "--backend", "live", "--twin",
                   "--mem", ARENA, "--param", "mix=64K:1", "--param", "fill=0.33",
                   "--param", "phase2=order9", "--param", "second=0.9", "--strategy", "legacy",
                   "--strategy", "folio", "--out", str(out), "--live-dir", str(tmp_path),
                   "--no-plots", "--progress", "none"])
    assert rc == 0
    run_dir, = (out / "runs").iterdir()
    import pandas as pd
    df = pd.read_csv(run_dir / "results.csv")
    assert list(df["backend"]) == ["live", "sim", "sim"]
    assert (df["backend_notes"][1:] == "digital twin of snapshot-seed0.npz").all()
    declined = df["arena_declined_pages"]
    assert declined[0] > 0 and (declined == declined[0]).all()
    assert (df["highorder_requested"] == df["highorder_requested"][0]).all()
    snapshot = run_dir / "snapshot-seed0.npz"
    import simcore
    twin = simcore.Machine.from_snapshot(str(snapshot))
    assert twin.managed_pages > workloads.base.parse_size(ARENA, "mem") // 4096
    for strategy in ("kernel", "legacy", "folio"):
        text = (run_dir / f"buddyinfo-before-phase2-thp-heavy-{strategy}-seed0.txt").read_text()
        assert "Normal" in text


@needs_root
def test_offline_and_online_one_removable_block(tmp_path):
    blocks = [b for b in live_backend.LiveBackend.memory_blocks(None)
              if b["removable"] and b["state"] == "online" and b["zone"] in ("Normal",
                                                                              "Movable")]
    if not blocks:
        pytest.skip("no online block listed removable in Normal or Movable")
    before = settings()
    index = blocks[-1]["index"]
    with LiveSession(mem=ARENA, allow_offline=True, workdir=str(tmp_path)) as live:
        b = live.factory(seed=0)
        done, reason = b.offline_block(index)
        if done:
            assert open(f"/sys/devices/system/memory/memory{index}/state").read().strip() \
                == "offline"
            assert b.online_block(index) == (True, "")
        else:
            assert reason                     # the kernel's reason, e.g. Device or resource busy
        b.close()
    assert settings() == before


@needs_mthp
def test_calibrate_writes_a_cost_model_the_simulator_loads(tmp_path):
    before = settings()
    out = tmp_path / "costs.json"
    rc = cli.main(["live", "calibrate", "--mem", "512M", "--repeat", "1", "-o", str(out)])
    assert rc == 0 and out.exists()
    from livekernel.calibrate import load_costs
    costs = load_costs(out)
    assert costs["copy_ns_per_page"] + costs["migrate_folio_fixed_ns"] > 0
    import json
    doc = json.loads(out.read_text())
    assert doc["kernel"] == os.uname().release
    assert {m["order"] for m in doc["measurements"]} == {0, 2, 4, 6, 8}
    for sim in (doc["simulated"]["default_costs"], doc["simulated"]["calibrated_costs"]):
        assert set(sim) == {"0", "2", "4", "6", "8"}
        assert all(r["pgmigrate_success"] > 0 for r in sim.values())
    import simcore
    m = simcore.Machine(mem="64M", costs=costs)
    assert m.costs[1] == pytest.approx(costs["copy_ns_per_page"])
    assert settings() == before


@needs_mthp
def test_sigkill_leaves_a_journal_that_live_restore_undoes(tmp_path):
    state = tmp_path / "state"
    env = dict(os.environ, FOLIOBENCH_STATE_DIR=str(state))
    before = settings()
    proc = subprocess.Popen(
        [sys.executable, "-m", "foliobench", "run", "thp-heavy", "--backend", "live", "--mem",
         "1G", "--no-save", "--live-dir", str(tmp_path)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_change(proc, before)
        proc.kill()                                     # SIGKILL: nothing can run
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    journals = list(state.glob("journal-*.json"))
    assert len(journals) == 1
    restore = subprocess.run([sys.executable, "-m", "foliobench", "live", "restore"], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=120)
    assert restore.returncode == 0, restore.stderr
    assert f"restored the settings of live run pid {proc.pid}" in restore.stdout
    assert settings() == before
    assert not leftovers(tmp_path) and not list(state.glob("journal-*.json"))


@needs_mthp
def test_close_goes_on_past_a_failing_step(tmp_path, monkeypatch):
    # a refused KSM write-back used to end close() before the work directory went
    from livekernel import ksm
    from livekernel.journal import JournalError
    before = settings()

    def refused(journal, old, unmerge):
        raise JournalError("writing '0' to /sys/kernel/mm/ksm/run: Interrupted system call")

    with LiveSession(mem=ARENA, workdir=str(tmp_path)) as live:
        b = live.factory(compaction_proactiveness=0)
        b.fault_anon(8, [0])
        b.alloc(4, 0, kind="file")
        b._ksm = ("0", False)
        monkeypatch.setattr(ksm, "stop", refused)
        with pytest.raises(JournalError, match="Interrupted"):
            b.close()
        assert not b._regions and not b.workdir.exists()
        assert live.journal.read("/proc/sys/vm/compaction_proactiveness") == \
            before["/proc/sys/vm/compaction_proactiveness"]
        assert all(e[1] != "live backend memory (mappings, files, pipes)"
                   for e in live.journal.entries)
    assert settings() == before
    assert not leftovers(tmp_path)


def test_a_movable_memory_block_comes_back_movable(tmp_path, monkeypatch):
    # "state" reads "online" in any zone; writing "online" back let the kernel pick the zone,
    # so a ZONE_MOVABLE block could return as ZONE_NORMAL (no longer removable)
    from livekernel.journal import SettingsJournal
    memory = tmp_path / "memory"
    for index, zone in ((5, "Movable"), (6, "Normal")):
        block = memory / f"memory{index}"
        block.mkdir(parents=True)
        (block / "state").write_text("online\n")
        (block / "removable").write_text("1\n")
        (block / "valid_zones").write_text(f"{zone}\n")
    from livekernel import hotplug
    monkeypatch.setattr(hotplug, "MEMORY", str(memory))
    work = tmp_path / "work"
    work.mkdir()
    journal = SettingsJournal(out=open(os.devnull, "w"))
    with journal:
        b = live_backend.LiveBackend(journal=journal, arena_bytes=64 << 20, allow_offline=True,
                                     workdir=str(work))
        assert b.offline_block(5) == (True, "") and b.offline_block(6) == (True, "")
        assert (memory / "memory5/state").read_text() == "offline"
        assert b.online_block(5) == (True, "")
        assert (memory / "memory5/state").read_text() == "online_movable"
        (memory / "memory5/state").write_text("online\n")        # what the kernel shows
        assert b.offline_block(5) == (True, "")
    assert (memory / "memory5/state").read_text() == "online_movable"
    assert (memory / "memory6/state").read_text() == "online"
    assert not journal.errors
