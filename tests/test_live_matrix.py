"""The live feature matrix on this machine's kernel: every subsystem the capability probe says
can run here has a verdict backed by real counter deltas; the rest is untested with the
kernel's reason; every setting (THP, mTHP, KSM, zswap, swap areas, hugetlb pool, compaction
knobs) ends as it was found, on a normal end and on Ctrl-C mid-matrix. Skips, with the reason,
only where a capability is missing."""
import glob
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
from livestate import leftovers, settings

from foliobench.verdicts import matrix_verdict
from livekernel import backend as live_backend
from livekernel.probe import probe
from workloads.matrix_probes import PROBE_NAMES, sample_count

REPO = pathlib.Path(__file__).resolve().parent.parent
CAPS = probe() if os.path.exists("/sys/kernel/mm") else {}
ROOT = bool(CAPS) and CAPS["root"].available
MTHP = ROOT and CAPS["mthp"].available and 4 in live_backend.mthp_sizes()
pytestmark = [pytest.mark.live,
              pytest.mark.skipif(not MTHP, reason=(CAPS["root"].detail if CAPS and not ROOT else
                                                   "needs root and a kernel with the 64K mTHP "
                                                   "size (hugepages-64kB/enabled)"))]
HAVE_MKSWAP = shutil.which("mkswap") and shutil.which("swapon") and shutil.which("swapoff")
SIZES = "4K,64K,2M"


def run_matrix(tmp_path, *args, state=None):
    env = dict(os.environ, FOLIOBENCH_STATE_DIR=str(state or tmp_path / "state"))
    return subprocess.run([sys.executable, "-m", "foliobench", "matrix", "--backend", "live",
                           "--format", "json", "--live-dir", str(tmp_path), "-o",
                           str(tmp_path / "results"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One live matrix (4K, 64K, 2M; every probe), with the settings before and after."""
    tmp = tmp_path_factory.mktemp("live-matrix")
    before = settings()
    t0 = time.monotonic()
    out = run_matrix(tmp, "--sizes", SIZES, "--allow-zswap")
    wall = time.monotonic() - t0
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    rows = {r["probe"]: r for r in doc["matrices"][0]["rows"]}
    return {"doc": doc, "rows": rows, "before": before, "after": settings(), "wall": wall,
            "tmp": tmp, "stderr": out.stderr}


def cell(live, probe, size):
    return live["rows"][probe]["cells"][size]


def counters(live, probe, size):
    return cell(live, probe, size)["evidence"]["counters"]


def test_every_setting_is_back_and_nothing_is_left(live):
    assert live["after"] == live["before"]
    assert not leftovers(live["tmp"])
    assert "foliobench-live" not in open("/proc/swaps").read()
    assert not list((live["tmp"] / "state").glob("journal-*.json"))
    assert "could not restore" not in live["stderr"]


def test_the_document_is_saved_and_stays_fast(live):
    doc = live["doc"]
    assert doc["backend"] == "live" and doc["matrices"][0]["kernel"] == os.uname().release
    assert [r["probe"] for r in doc["matrices"][0]["rows"]] == list(PROBE_NAMES)
    assert (live["tmp"] / "results" / "matrix" / "latest.json").is_file()
    assert live["wall"] < 120, f"the live matrix took {live['wall']:.0f} s for three sizes"


def test_every_cell_has_evidence_or_a_reason(live):
    for name, row in live["rows"].items():
        for size, c in row["cells"].items():
            ev = c["evidence"]
            if c["verdict"] == "untested":
                assert c["reason"] and not ev, (name, size)
                continue
            assert ev["sample"] > 0 and ev["attempted"] > 0, (name, size)
            assert ev["counters"], (name, size)               # real counter deltas moved
            assert matrix_verdict(ev["success"], ev["kept_order"],
                                  ev["cost_ratio_vs_4k"])[0] == c["verdict"], (name, size)


@pytest.mark.skipif(not (CAPS.get("swap") and CAPS["swap"].available and HAVE_MKSWAP),
                    reason="no /proc/swaps or no mkswap/swapon/swapoff")
def test_swap_out_and_in_through_a_swap_file(live):
    for size, order in (("4K", 0), ("64K", 4), ("2M", 9)):
        n = sample_count(order)
        pages = n << order
        out = counters(live, "swap-out", size)
        assert out["pswpout"] >= pages, (size, out)
        # reclaim leaves nothing in the swap cache and reads nothing back to get there
        assert out.get("pswpin", 0) < pages // 100, (size, out)
        back = counters(live, "swap-in", size)
        assert back["pswpin"] >= pages, (size, back)          # every page read from the device
        if order:
            # a swap file takes no large swap entry (SWP_BLKDEV check in the swap allocator):
            # every large folio is split first and counted as a fallback
            stat = "thp_swpout" if order == 9 else "hugepages-64kB/swpout"
            whole = out.get(stat, 0)
            fallback = out.get("thp_swpout_fallback" if order == 9
                               else "hugepages-64kB/swpout_fallback", 0)
            assert whole + fallback == n, (size, out)
            ev = cell(live, "swap-out", size)["evidence"]
            assert ev["kept_order"] == pytest.approx(whole / n)
            # and a swap file is no SWP_SYNCHRONOUS_IO device: swap-in is order 0
            assert cell(live, "swap-in", size)["evidence"]["split_to"] == {"0": n}


@pytest.mark.skipif(not (CAPS.get("zswap") and CAPS["zswap"].available and HAVE_MKSWAP),
                    reason="kernel without zswap, or no mkswap")
def test_zswap_round_trip_counts_each_page_once(live):
    for size, order in (("4K", 0), ("64K", 4)):
        pages = sample_count(order) << order
        d = counters(live, "zswap", size)
        assert d["zswpout"] == pages and d["zswpin"] == pages, (size, d)


@pytest.mark.skipif(not (CAPS.get("ksm") and CAPS["ksm"].available), reason="no KSM")
def test_ksm_merges_pairs_and_splits_large_folios(live):
    for size, order in (("4K", 0), ("64K", 4), ("2M", 9)):
        n = sample_count(order)
        d = counters(live, "ksm", size)
        assert d["ksm/pages_sharing"] >= 0.99 * (n << order), (size, d)
        if order:
            ev = cell(live, "ksm", size)["evidence"]
            split = d.get("thp_split_page" if order == 9 else "hugepages-64kB/split", 0)
            assert split >= ev["split_folios"] > 0, (size, d, ev)
            assert ev["kept_order"] < 1


def test_madv_collapse_makes_pmd_folios_only(live):
    two = cell(live, "khugepaged", "2M")
    assert two["verdict"] == "perfectly"
    assert two["evidence"]["counters"]["thp_collapse_alloc"] == sample_count(9)
    small = cell(live, "khugepaged", "64K")
    assert small["verdict"] == "not at all"
    assert small["evidence"]["succeeded"] == 0
    assert all("MADV_COLLAPSE" in r and "still order 0" in r
               for r in small["evidence"]["reasons"])


def test_compaction_migrates_our_folios_or_says_what_happened(live):
    """Where the host put the sample decides whether compact_memory reaches it: each cell is
    either a verdict from folios whose PFN changed (with pgmigrate_success behind it) or
    untested with the counters; at least one of them must have reached the sample."""
    tested = 0
    for probe_name in ("migration", "compaction-memory"):
        for size in ("4K", "64K"):
            c = cell(live, probe_name, size)
            if c["verdict"] == "untested":
                assert "migrated none" in c["reason"] and "pgmigrate_success" in c["reason"]
                continue
            tested += 1
            ev = c["evidence"]
            d = ev["counters"]
            assert ev["succeeded"] == ev["attempted"] > 0
            assert ev["first_page_moved"] <= ev["attempted"]
            if size == "4K":
                assert d["pgmigrate_success"] >= ev["first_page_moved"] == ev["attempted"]
            else:
                # what the kernel counted: the folios split (per-size stat) or migrated
                split = sum(n for o, n in ev["split_to"].items() if o != "4")
                assert d.get("hugepages-64kB/split", 0) >= split
                assert d.get("pgmigrate_success", 0) > 0 or split
                assert ev["kept_order"] == pytest.approx(ev["moved_whole"] / ev["attempted"])
                assert ev["moved_whole"] == ev["split_to"].get("4", 0)
    assert tested, "compact_memory reached none of four samples"
    assert cell(live, "compaction-memory", "2M")["reason"].startswith("not applicable")


def test_direct_and_proactive_compaction_are_run_not_guessed(live):
    for probe_name, counter in (("compaction-direct", "compact_stall"),
                                ("compaction-proactive", "compact_daemon_wake")):
        c = cell(live, probe_name, "64K")
        if c["verdict"] == "untested":
            assert counter in c["reason"], c["reason"]
        else:
            assert c["evidence"]["succeeded"] > 0


def test_what_this_kernel_cannot_do_is_untested_with_its_reason(live):
    def reasons(probe_name):
        return {c["reason"] for c in live["rows"][probe_name]["cells"].values()
                if c["verdict"] == "untested"}
    if not CAPS["cma"].available:
        assert all("no CMA area" in r for r in reasons("cma"))
        assert {c["verdict"] for c in live["rows"]["cma"]["cells"].values()} == {"untested"}
    hotunplug = reasons("hotunplug")
    assert len(hotunplug) == 1 and ("ZONE_MOVABLE" in next(iter(hotunplug))
                                    or "--allow-offline" in next(iter(hotunplug)))
    mf = reasons("memory-failure")
    if not os.path.exists(live_backend.MEMORY_FAILURE):
        assert mf == {"this backend cannot: memory-failure injection: kernel without "
                      "CONFIG_MEMORY_FAILURE (no /proc/sys/vm/memory_failure_recovery; "
                      "MADV_SOFT_OFFLINE is refused)"}
    else:
        assert all("--allow-poison" in r for r in mf)
    if len(glob.glob("/sys/devices/system/node/node[0-9]*")) == 1:
        assert all("one NUMA node" in r for r in reasons("numa"))


@pytest.mark.skipif(not (os.path.exists("/sys/class/zram-control/hot_add") and HAVE_MKSWAP),
                    reason="kernel without zram (/sys/class/zram-control)")
def test_swap_out_to_zram_keeps_mthp_whole(tmp_path):
    before = settings()
    out = run_matrix(tmp_path, "--swap", "zram", "--sizes", "64K", "--probe", "swap-out",
                     "--probe", "swap-in")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {r["probe"]: r for r in json.loads(out.stdout)["matrices"][0]["rows"]}
    n = sample_count(4)
    d = rows["swap-out"]["cells"]["64K"]["evidence"]["counters"]
    # a block device with clusters: each 64K folio gets 16 contiguous swap entries
    assert d["hugepages-64kB/swpout"] == n and "hugepages-64kB/swpout_fallback" not in d
    assert rows["swap-out"]["cells"]["64K"]["verdict"] in ("perfectly", "sub-optimally")
    assert rows["swap-out"]["cells"]["64K"]["evidence"]["kept_order"] == 1.0
    back = rows["swap-in"]["cells"]["64K"]["evidence"]["counters"]
    assert back["pswpin"] == n << 4
    assert settings() == before and not leftovers(tmp_path)


def _wait_for_swap(proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if "foliobench-live-swap" in open("/proc/swaps").read():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.skipif(not HAVE_MKSWAP, reason="no mkswap/swapon/swapoff")
def test_ctrl_c_mid_matrix_restores_everything(tmp_path):
    before = settings()
    env = dict(os.environ, FOLIOBENCH_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.Popen([sys.executable, "-m", "foliobench", "matrix", "--backend", "live",
                             "--sizes", "64K", "--no-save", "--live-dir", str(tmp_path),
                             "--probe", "swap-out", "--probe", "zswap", "--probe", "ksm",
                             "--allow-zswap"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        swapping = _wait_for_swap(proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert swapping, f"the matrix never swapped on its swap file (rc {proc.returncode}): " \
                     f"{err[-2000:]}"
    assert proc.returncode == 130, err[-2000:]
    assert settings() == before
    assert not leftovers(tmp_path)
    assert not list((tmp_path / "state").glob("journal-*.json"))


@pytest.mark.skipif(not HAVE_MKSWAP, reason="no mkswap/swapon/swapoff")
def test_sigkill_mid_matrix_then_live_restore_removes_the_swap_area(tmp_path):
    """A SIGKILL runs no handler: the journal on disk must carry the swapoff and the file."""
    before = settings()
    state = tmp_path / "state"
    env = dict(os.environ, FOLIOBENCH_STATE_DIR=str(state))
    proc = subprocess.Popen([sys.executable, "-m", "foliobench", "matrix", "--backend", "live",
                             "--sizes", "64K", "--no-save", "--live-dir", str(tmp_path),
                             "--probe", "swap-out", "--probe", "zswap", "--allow-zswap"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        swapping = _wait_for_swap(proc)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert swapping
    assert "foliobench-live-swap" in open("/proc/swaps").read()     # left behind, for now
    restore = subprocess.run([sys.executable, "-m", "foliobench", "live", "restore"], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=120)
    assert restore.returncode == 0, restore.stderr
    assert settings() == before
    assert not list(tmp_path.glob("foliobench-live-swap-*"))
    assert not list(state.glob("journal-*.json"))


@pytest.mark.skipif(not (CAPS.get("zswap") and CAPS["zswap"].available and HAVE_MKSWAP),
                    reason="kernel without zswap, or no mkswap")
def test_zswap_stays_off_without_allow_zswap(tmp_path):
    """Switching zswap on has an effect no journal can undo (large swap-in stays off until
    reboot), so without --allow-zswap the probe is untested and zswap is never touched."""
    with open("/sys/module/zswap/parameters/enabled") as fh:
        if fh.read().strip() == "Y":
            pytest.skip("zswap is already on on this host: the probe needs no permission")
    before = settings()
    out = run_matrix(tmp_path, "--sizes", "64K", "--probe", "zswap")
    assert out.returncode == 0, out.stderr[-3000:]
    cell = json.loads(out.stdout)["matrices"][0]["rows"][0]["cells"]["64K"]
    assert cell["verdict"] == "untested" and "--allow-zswap" in cell["reason"], cell
    assert settings() == before


@pytest.mark.parametrize("flag", ["--allow-poison", "--allow-offline", "--allow-zswap",
                                  "--swap=zram"])
def test_live_only_flags_refused_for_the_simulator(flag, tmp_path):
    out = subprocess.run([sys.executable, "-m", "foliobench", "matrix", flag, "-o",
                          str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "apply to --backend live" in out.stderr
    assert not list(tmp_path.iterdir())
