"""The settings journal on a fake /proc and /sys tree: old values first, restored in reverse,
on exceptions and signals too; dry runs write nothing."""
import io
import os
import signal

import pytest

from livekernel.calibrate import fit, load_costs
from livekernel.journal import JournalError, SettingsJournal, current_value
from livekernel.session import LiveRefused, arena_bytes, mem_cap_bytes


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
    doc = json.loads((state / f"journal-{os.getpid()}.json").read_text())
    assert [s[0] for s in doc["steps"]] == ["setting", "command", "remove", "setting"]
    # pretend the process died with SIGKILL: its journal under a pid that does not exist
    doc["pid"] = 2 ** 22 + 12345
    (state / f"journal-{os.getpid()}.json").unlink()
    (state / "journal-dead.json").write_text(json.dumps(doc))
    done = restore_leftovers(state, out=io.StringIO())
    assert done == [(doc["pid"], [])]
    assert (read(tree, MTHP), read(tree, POOL)) == ("never", "3")
    assert not marker.exists() and not scratch.exists()
    assert not list(state.glob("journal-*.json"))
    j.entries.clear()                       # the live journal has nothing left to do
