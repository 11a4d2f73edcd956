"""The settings journal on a fake /proc and /sys tree: old values first, restored in reverse,
on exceptions and signals too; dry runs write nothing."""
import io
import os
import signal

import pytest

from livekernel.calibrate import fit, load_costs
from livekernel.journal import JournalError, SettingsJournal, current_value
from livekernel.session import LiveRefused, arena_bytes, mem_cap_bytes

pytestmark = pytest.mark.live


@pytest.fixture
def tree(tmp_path):
    thp = tmp_path / "sys/kernel/mm/transparent_hugepage/hugepages-64kB"
    thp.mkdir(parents=True)
    (thp / "enabled").write_text("always inherit madvise [never]\n")
    vm = tmp_path / "proc/sys/vm"
    vm.mkdir(parents=True)
    (vm / "nr_hugepages").write_text("3\n")
    (vm / "compaction_proactiveness").write_text("20\n")
    (vm / "compact_memory").write_text("")
    return tmp_path


MTHP = "/sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled"
POOL = "/proc/sys/vm/nr_hugepages"
PRO = "/proc/sys/vm/compaction_proactiveness"


def read(tree, path):
    return current_value((tree / path.lstrip("/")).read_text())


def test_current_value_takes_the_bracketed_choice():
    assert current_value("always [madvise] never\n") == "madvise"
    assert current_value(" 42\n") == "42"


def test_restores_every_setting_in_reverse_with_undo_actions(tree):
    order = []
    with SettingsJournal(root=str(tree)) as j:
        j.write(MTHP, "madvise")
        j.add_undo("first undo", lambda: order.append(("undo1", read(tree, POOL))))
        j.write(POOL, 10)
        j.write(POOL, 12)                        # a second write keeps the first old value
        j.write(PRO, 0)
        j.add_undo("second undo", lambda: order.append(("undo2", read(tree, PRO))))
        assert j.touched() == {MTHP: "never", POOL: "3", PRO: "20"}
        assert read(tree, POOL) == "12"
    assert (read(tree, MTHP), read(tree, POOL), read(tree, PRO)) == ("never", "3", "20")
    # newest first: undo2 ran while proactiveness was still 0, undo1 after the pool came back
    assert order == [("undo2", "0"), ("undo1", "3")]


def test_restores_on_an_exception_and_keeps_going_past_a_failing_undo(tree):
    out = io.StringIO()
    with pytest.raises(RuntimeError, match="boom"):
        with SettingsJournal(root=str(tree), out=out) as j:
            j.write(POOL, 7)
            j.add_undo("broken undo", lambda: 1 / 0)
            j.write(MTHP, "always")
            raise RuntimeError("boom")
    assert (read(tree, MTHP), read(tree, POOL)) == ("never", "3")
    assert j.errors and "broken undo" in out.getvalue()


def test_sigterm_restores_and_exits_143(tree):
    with pytest.raises(SystemExit) as exc:
        with SettingsJournal(root=str(tree)) as j:
            j.write(PRO, 90)
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.5) if hasattr(signal, "sigtimedwait") else None
            pytest.fail("SIGTERM did not interrupt")
    assert exc.value.code == 143
    assert read(tree, PRO) == "20"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigint_restores_and_raises_keyboardinterrupt(tree):
    with pytest.raises(KeyboardInterrupt):
        with SettingsJournal(root=str(tree)) as j:
            j.write(MTHP, "madvise")
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            pytest.fail("SIGINT did not interrupt")
    assert read(tree, MTHP) == "never"


def test_dry_run_prints_and_writes_nothing(tree):
    out = io.StringIO()
    before = {p: (tree / p.lstrip("/")).read_text() for p in (MTHP, POOL)}
    with SettingsJournal(root=str(tree), dry_run=True, out=out) as j:
        j.write(MTHP, "madvise")
        assert j.read(MTHP) == "madvise"           # the journal pretends, the file does not
        j.write(POOL, 9)
        j.write_only("/proc/sys/vm/compact_memory", 1)
    assert {p: (tree / p.lstrip("/")).read_text() for p in (MTHP, POOL)} == before
    text = out.getvalue()
    assert "would write 'madvise' to " + MTHP + " (now 'never')" in text
    assert "would write '9' to " + POOL + " (now '3')" in text
    assert "compact_memory" in text


def test_refused_write_names_path_and_reason_and_no_writes_after_restore(tree):
    j = SettingsJournal(root=str(tree))
    with pytest.raises(JournalError, match="reading .*missing.*No such file"):
        j.write("/proc/sys/vm/missing", 1)
    j.restore()
    with pytest.raises(JournalError, match="already restored"):
        j.write(POOL, 1)


def test_memory_cap_and_arena():
    gib = 1 << 30
    assert mem_cap_bytes("50%", available=8 * gib) == 4 * gib
    assert mem_cap_bytes("2G", available=8 * gib) == 2 * gib
    assert arena_bytes(None, "25%", available=8 * gib) == 2 * gib
    assert arena_bytes("1G", "50%", available=8 * gib) == gib
    with pytest.raises(LiveRefused, match="would exceed the live memory cap"):
        arena_bytes("5G", "50%", available=8 * gib)
    with pytest.raises(LiveRefused, match="above 90%"):
        mem_cap_bytes("8G", available=8 * gib)
    with pytest.raises(LiveRefused, match=r"\(0, 90\]"):
        mem_cap_bytes("95%", available=8 * gib)


def test_cost_fit_recovers_known_parameters(tmp_path):
    fixed, copy, scan = 1500.0, 300.0, 5.0
    ms = []
    for order, pages, scanned in ((0, 50000, 1e6), (2, 80000, 1.5e6), (4, 60000, 0.7e6),
                                  (6, 90000, 1.2e6), (8, 70000, 2e6)):
        ms.append({"order": order, "pgmigrate_success": pages, "compact_migrate_scanned": scanned,
                   "compact_free_scanned": 0,
                   "elapsed_ns": fixed * pages / (1 << order) + copy * pages + scan * scanned})
    costs, r2 = fit(ms)
    assert costs["migrate_folio_fixed_ns"] == pytest.approx(fixed, rel=1e-6)
    assert costs["copy_ns_per_page"] == pytest.approx(copy, rel=1e-6)
    assert costs["scan_ns_per_pfn"] == pytest.approx(scan, rel=1e-6)
    assert r2 == pytest.approx(1.0)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "foliobench-costs/1", "costs": {"copy_ns_per_page": -1}}')
    with pytest.raises(ValueError, match="non-negative"):
        load_costs(bad)


def test_calibration_measures_again_until_three_compactions_migrated(monkeypatch):
    from livekernel import calibrate
    # the host's compact_memory moved nothing of the region on most passes: one more single
    # pass over the sizes at a time, until three compactions migrated something
    migrated = iter([0, 0, 0, 0, 0, 7, 0, 3, 0, 0, 9, 0, 0, 0, 0, 5, 5, 5, 5, 5])
    passes = []

    def measure(live, orders, repeat):
        passes.append(repeat)
        return [{"order": o, "pgmigrate_success": next(migrated)} for o in orders
                for _ in range(repeat)]

    monkeypatch.setattr(calibrate, "measure", measure)
    ms = calibrate.measure_enough(None, (0, 2, 4, 6, 8), 1)
    assert passes == [1, 1, 1] and sum(m["pgmigrate_success"] > 0 for m in ms) == 3
    # a host where nothing ever moves: EXTRA_PASSES more, then fit() says why in one line
    migrated = iter([0] * 100)
    passes.clear()
    ms = calibrate.measure_enough(None, (0, 2), 2)
    assert passes == [2] + [1] * calibrate.EXTRA_PASSES
    with pytest.raises(ValueError, match=r"only 0 of 10 compactions migrated anything; need 3"):
        fit(ms)


def test_commands_and_leftover_journal_of_a_dead_process(tree, tmp_path):
    import json

    from livekernel.journal import restore_leftovers
    state = tmp_path / "state"
    marker = tmp_path / "swapfile"
    j = SettingsJournal(root=str(tree), state_dir=state)
    j.write(POOL, 40)
    j.run(["touch", marker], ["rm", marker], "the swap file")   # stands in for swapon/swapoff
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    j.add_undo("scratch dir", lambda: None, remove=[scratch])
    j.write(MTHP, "always")
    assert marker.exists()
    (own,) = state.glob(f"journal-{os.getpid()}-*.json")
    doc = json.loads(own.read_text())
    assert [s[0] for s in doc["steps"]] == ["setting", "command", "remove", "setting"]
    # pretend the process died with SIGKILL: its journal under a pid that does not exist
    doc["pid"] = 2 ** 22 + 12345
    own.unlink()
    (state / "journal-dead.json").write_text(json.dumps(doc))
    done = restore_leftovers(state, out=io.StringIO())
    assert done == [(doc["pid"], [])]
    assert (read(tree, MTHP), read(tree, POOL)) == ("never", "3")
    assert not marker.exists() and not scratch.exists()
    assert not list(state.glob("journal-*.json"))
    j.entries.clear()                       # the live journal has nothing left to do


def test_signal_while_a_command_runs_waits_until_its_undo_is_journaled(tree, tmp_path):
    # SIGTERM while swapon runs used to kill it half-way or leave its effect without an undo
    made, undone = tmp_path / "made", tmp_path / "undone"
    j = SettingsJournal(root=str(tree))
    with pytest.raises(SystemExit) as exc:
        with j:
            j.run(["sh", "-c", f"kill -TERM {os.getpid()}; sleep 0.3; touch {made}"],
                  ["touch", undone], "the stand-in for swapoff")
            pytest.fail("the SIGTERM was not delivered after the command")
    assert exc.value.code == 128 + signal.SIGTERM
    assert made.exists() and undone.exists()


def test_signal_before_restore_masks_signals_leaves_the_atexit_restore(tree, monkeypatch):
    import livekernel.journal as journal_mod
    registered = []
    monkeypatch.setattr(journal_mod.atexit, "register", registered.append)
    monkeypatch.setattr(journal_mod.atexit, "unregister", registered.remove)
    j = SettingsJournal(root=str(tree))
    calls = []

    def interrupted_mask():
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt          # a Ctrl-C landing as restore() starts
        return {}
    j._mask_signals = interrupted_mask
    with pytest.raises(KeyboardInterrupt):
        with j:
            j.write(POOL, 40)
    assert read(tree, POOL) == "40" and not j.restored
    assert registered == [j.restore]         # still there for the interpreter's exit
    registered[0]()
    assert read(tree, POOL) == "3"


def test_nested_journals_keep_their_own_state_files(tree, tmp_path):
    import json
    state = tmp_path / "state"
    outer = SettingsJournal(root=str(tree), state_dir=state)
    with outer:
        outer.write(POOL, 40)
        with SettingsJournal(root=str(tree), state_dir=state) as inner:
            inner.write(MTHP, "always")
            assert len(list(state.glob("journal-*.json"))) == 2
        (left,) = state.glob("journal-*.json")           # the outer's survives the inner's
        assert json.loads(left.read_text())["steps"] == [["setting", POOL, "3"]]
    assert not list(state.glob("journal-*.json"))
    assert (read(tree, MTHP), read(tree, POOL)) == ("never", "3")


def _dead_journal(state, name, created, steps):
    import json
    state.mkdir(exist_ok=True)
    (state / name).write_text(json.dumps({"pid": 2 ** 22 + 4321, "created": created,
                                          "root": str(state.parent / "tree"), "steps": steps}))


def test_leftovers_restore_the_newest_journal_first(tmp_path):
    from livekernel.journal import restore_leftovers
    tree = tmp_path / "tree"
    (tree / "proc/sys/vm").mkdir(parents=True)
    (tree / "proc/sys/vm/nr_hugepages").write_text("99\n")
    state = tmp_path / "state"
    # run 1 found 3 and wrote 40; run 2, started while run 1 ran, found 40 and wrote 99
    _dead_journal(state, "journal-1.json", 100.0, [["setting", POOL, "3"]])
    _dead_journal(state, "journal-2.json", 200.0, [["setting", POOL, "40"]])
    done = restore_leftovers(state, out=io.StringIO())
    assert [p for _, p in done] == [[], []]
    assert read(tree, POOL) == "3"


def test_leftovers_wait_while_another_live_run_holds_the_lock(tmp_path, monkeypatch, capsys):
    import subprocess
    import sys

    from foliobench import cli
    from livekernel import session
    from livekernel.journal import LiveRunBusy, restore_leftovers
    tree = tmp_path / "tree"
    (tree / "proc/sys/vm").mkdir(parents=True)
    (tree / "proc/sys/vm/nr_hugepages").write_text("40\n")
    state = tmp_path / "state"
    _dead_journal(state, "journal-1.json", 100.0, [["setting", POOL, "3"]])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from livekernel.journal import "
         "acquire_run_lock; acquire_run_lock(sys.argv[1]); print('held', flush=True); "
         "time.sleep(60)", str(state)], stdout=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LiveRunBusy, match=f"pid {holder.pid}"):
            restore_leftovers(state, out=io.StringIO())
        assert read(tree, POOL) == "40"            # untouched while that run is live
        if os.geteuid() == 0:
            monkeypatch.setattr(session, "STATE_DIR", str(state))
            assert cli.main(["live", "restore"]) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "not restoring now" in err
            with pytest.raises(LiveRefused, match="in progress"):
                monkeypatch.setattr(session, "LOCK_WAIT_S", 0.2)
                with session.LiveSession(mem="64M", workdir=str(tmp_path)):
                    pass
    finally:
        holder.kill()
        holder.wait()
    assert restore_leftovers(state, out=io.StringIO()) == [(2 ** 22 + 4321, [])]
    assert read(tree, POOL) == "3"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_leftovers_skip_journals_another_user_wrote(tmp_path):
    from livekernel.journal import restore_leftovers
    state = tmp_path / "state"
    planted = tmp_path / "planted"
    _dead_journal(state, "journal-1.json", 100.0, [["command", ["touch", str(planted)]]])
    os.chown(state / "journal-1.json", 65534, 65534)
    assert restore_leftovers(state, out=io.StringIO()) == []
    assert not planted.exists() and (state / "journal-1.json").exists()


def test_sigkill_right_after_a_command_still_leaves_its_undo_on_disk(tmp_path):
    # a SIGKILL just after swapon used to leave the swap on with no swapoff in the journal
    import subprocess
    import sys

    from livekernel.journal import restore_leftovers
    state, made = tmp_path / "state", tmp_path / "made"
    code = ("import sys; from livekernel.journal import SettingsJournal; "
            "j = SettingsJournal(state_dir=sys.argv[1]); "
            "j.run(['sh', '-c', 'touch \"$0\"; kill -KILL $PPID; sleep 1', sys.argv[2]], "
            "['rm', sys.argv[2]], 'the stand-in for swapoff', undo_first=True)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code, str(state), str(made)], cwd=repo,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    import time
    deadline = time.monotonic() + 5
    while not made.exists() and time.monotonic() < deadline:
        time.sleep(0.01)                       # the command outlives its parent
    assert made.exists()
    done = restore_leftovers(state, out=io.StringIO())
    assert [problems for _, problems in done] == [[]]
    assert not made.exists()
