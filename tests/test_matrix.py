"""The large-folio feature matrix: verdict thresholds, the simulator profiles reproducing the
kernel's history, evidence in every cell, the three renderings, the command line."""
import html.parser
import json
import pathlib
import subprocess
import sys

import pytest

from foliobench import matrix
from foliobench import verdicts as metrics
from foliobench.verdicts import matrix_verdict
from simcore import profiles as simprofiles
from workloads.backend import Backend, SimBackend, Unsupported
from workloads.matrix_probes import PROBES, get_probe

REPO = pathlib.Path(__file__).resolve().parent.parent


# --- verdicts -------------------------------------------------------------------------------

@pytest.mark.parametrize("success, kept, cost, verdict", [
    (1.0, 1.0, 1.0, "perfectly"),
    (0.99, 0.99, 2.0, "perfectly"),
    (1.0, None, None, "perfectly"),
    (0.989, 1.0, 1.0, "sub-optimally"),          # some failures
    (1.0, 0.98, 1.0, "sub-optimally"),           # folios split
    (1.0, 1.0, 2.01, "sub-optimally"),           # cost per byte > 2x base pages
    (0.90, None, None, "sub-optimally"),
    (0.8999, 1.0, 1.0, "barely"),
    (0.10, 0.0, None, "barely"),
    (0.0999, 1.0, 1.0, "not at all"),
    (0.0, None, None, "not at all"),
])
def test_verdict_thresholds(success, kept, cost, verdict):
    assert matrix_verdict(success, kept, cost)[0] == verdict


def test_untested_keeps_its_reason():
    assert matrix_verdict(1.0, untested="no CMA area") == ("untested", "no CMA area")
    assert matrix_verdict(None)[0] == "untested"
    assert [v for v, _ in metrics.VERDICT_RULES] == list(metrics.VERDICTS)


# --- the simulator's profiles reproduce the documented history --------------------------------

@pytest.fixture(scope="module")
def doc():
    return matrix.run_sim(["linux-6.1", "linux-6.9", "linux-6.10", "linux-6.12", "linux-6.18"],
                          orders=[0, 4, 9])


def verdict(doc, profile, probe, size):
    m = next(m for m in doc["matrices"] if m["profile"] == profile)
    row = next(r for r in m["rows"] if r["probe"] == probe)
    return row["cells"][size]["verdict"]


@pytest.mark.parametrize("probe", ["compaction-direct", "compaction-proactive",
                                   "compaction-memory"])
def test_compaction_of_64k_not_at_all_before_6_9(doc, probe):
    assert verdict(doc, "linux-6.1", probe, "64K") == "not at all"
    assert verdict(doc, "linux-6.1", probe, "4K") == "perfectly"
    assert verdict(doc, "linux-6.18", probe, "2M") == "untested"


def test_direct_compaction_of_64k_works_from_6_9_with_some_splits(doc):
    """6.9+ migrates 64K folios whole into large targets; async direct compaction's free
    scanner looks at every 32nd PFN (isolate_freepages()'s stride), passes over some holes,
    and the folios that find no target are split: "sub-optimally", as a 6.12 guest measured
    (docs/guests.md: 100% served, 68% of the 64K folios kept)."""
    for p in ("linux-6.9", "linux-6.10", "linux-6.18"):
        assert verdict(doc, p, "compaction-direct", "64K") in ("perfectly", "sub-optimally")


@pytest.mark.parametrize("probe", ["compaction-proactive", "compaction-memory"])
def test_sync_compaction_passes_over_a_folio_hole_layout_once_its_stride_grew(doc, probe):
    """The probe's layout: blocks of alternating 64K folios and 64K holes, each block starting
    with a folio, and the order-9 blocks that were free taken first. Once a pageblock gave the
    free scanner nothing its stride doubles, and from then on its looks (a folio stepped over,
    then `stride` PFNs on) never land on a free block's head: the kernel's
    isolate_freepages() arithmetic, which simcore.freescan keeps. So whole-zone compaction
    frees hardly any order-9 block there on 6.9+ either, yet moves no 64K folio apart."""
    m = next(m for m in doc["matrices"] if m["profile"] == "linux-6.18")
    cell = next(r for r in m["rows"] if r["probe"] == probe)["cells"]["64K"]
    assert cell["evidence"]["success"] < 0.1
    assert cell["evidence"]["kept_order"] > 0.95


def test_ksm_and_memory_failure_split_throughout(doc):
    for m in doc["matrices"]:
        for probe in ("ksm", "memory-failure"):
            assert verdict(doc, m["profile"], probe, "4K") == "perfectly"
            assert verdict(doc, m["profile"], probe, "64K") == "sub-optimally"
            assert verdict(doc, m["profile"], probe, "2M") == "sub-optimally"


def test_swap_history(doc):
    for p in ("linux-6.1", "linux-6.9"):
        assert verdict(doc, p, "swap-out", "64K") == "sub-optimally"
        assert verdict(doc, p, "swap-out", "2M") == "perfectly"      # THP_SWAP, free cluster
    for p in ("linux-6.10", "linux-6.12", "linux-6.18"):
        assert verdict(doc, p, "swap-out", "64K") == "perfectly"
    assert verdict(doc, "linux-6.10", "swap-in", "64K") == "sub-optimally"
    assert verdict(doc, "linux-6.12", "swap-in", "64K") == "perfectly"
    assert verdict(doc, "linux-6.18", "swap-in", "2M") == "sub-optimally"  # below PMD only
    assert verdict(doc, "linux-6.12", "zswap", "64K") == "not at all"       # rejected
    assert verdict(doc, "linux-6.18", "zswap", "64K") == "sub-optimally"    # loads order 0


def test_numa_and_khugepaged_history(doc):
    assert verdict(doc, "linux-6.9", "numa", "64K") == "not at all"
    assert verdict(doc, "linux-6.9", "numa", "2M") == "perfectly"
    assert verdict(doc, "linux-6.10", "numa", "64K") == "perfectly"
    for m in doc["matrices"]:
        assert verdict(doc, m["profile"], "khugepaged", "64K") == "not at all"
        assert verdict(doc, m["profile"], "khugepaged", "2M") == "perfectly"
        assert verdict(doc, m["profile"], "migration", "64K") == "perfectly"


def test_every_cell_keeps_its_evidence(doc):
    for m in doc["matrices"]:
        assert len(m["rows"]) == len(PROBES)
        for row in m["rows"]:
            for _size, cell in row["cells"].items():
                ev = cell["evidence"]
                if cell["verdict"] == "untested":
                    assert cell["reason"]
                    continue
                assert ev["sample"] > 0 and ev["attempted"] > 0
                # counters moved, or nothing happened and the evidence says why
                assert ev["counters"] or (ev["succeeded"] == 0 and ev.get("reasons"))
                assert 0 <= ev["success"] <= 1
                # the verdict follows from the evidence it carries
                assert matrix_verdict(ev["success"], ev["kept_order"],
                                      ev["cost_ratio_vs_4k"])[0] == cell["verdict"]


def test_matrix_is_deterministic():
    a = matrix.sim_matrix("linux-6.10", [0, 4])
    b = matrix.sim_matrix("linux-6.10", [0, 4])
    assert a == b


# --- any backend: what it cannot do is untested with the reason ------------------------------

class NoSwapBackend(SimBackend):
    name = "noswap"

    def swap_out(self, handles):
        raise Unsupported("no swap device configured")


def test_unsupported_steps_become_untested_with_the_reason():
    probe = get_probe("swap-out")
    m = matrix.run_matrix(lambda p: NoSwapBackend(mem="64M", **{k: v for k, v in p.sim.items()
                                                                if k != "mem"}),
                          [0, 4], "noswap", probes=[probe, get_probe("ksm")])
    swap_row, ksm_row = m["rows"]
    assert {c["verdict"] for c in swap_row["cells"].values()} == {"untested"}
    assert "no swap device configured" in swap_row["cells"]["64K"]["reason"]
    assert ksm_row["cells"]["64K"]["verdict"] == "sub-optimally"
    # the Backend base class itself supports none of the optional steps
    for step in ("migrate", "swap_out", "swap_in", "set_zswap", "ksm_merge", "memory_failure",
                 "collapse", "numa_migrate"):
        with pytest.raises(Unsupported):
            args = {"migrate": ([],), "swap_out": ([],), "swap_in": ([],), "set_zswap": (True,),
                    "ksm_merge": ([], []), "memory_failure": (0, 0), "collapse": ([], 9),
                    "numa_migrate": ([],)}[step]
            getattr(Backend, step)(None, *args)


def test_a_setting_the_kernel_refuses_makes_the_cell_untested():
    # a journal write refused (a sysctl an older kernel lacks, zswap that cannot be enabled)
    # used to end the whole live matrix in a traceback
    from livekernel.journal import JournalError

    def refusing(probe):
        raise JournalError("reading /proc/sys/vm/compaction_proactiveness before writing it: "
                           "No such file or directory")
    m = matrix.run_matrix(refusing, [0, 4], "old kernel", probes=[get_probe("zswap")])
    cells = m["rows"][0]["cells"]
    assert {c["verdict"] for c in cells.values()} == {"untested"}
    assert "compaction_proactiveness" in cells["64K"]["reason"]


# --- renderings ----------------------------------------------------------------------------

class _Cells(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "td" and "v" in attrs.get("class", "").split():
            self.cells.append(attrs)


def test_markdown_html_json_render_every_cell(doc):
    md = matrix.render_markdown(doc)
    for m in doc["matrices"]:
        assert f"### {m['label']} (kernel {m['kernel']})" in md
    table_rows = [row for row in md.splitlines()
                  if row.startswith("| ") and "subsystem" not in row]
    assert len(table_rows) == len(PROBES) * (len(doc["matrices"]) + 1)
    parsed = json.loads(matrix.render_json(doc))
    assert parsed["format"] == matrix.FORMAT and len(parsed["matrices"]) == 5
    parser = _Cells()
    parser.feed(matrix.render_html(doc))
    assert len(parser.cells) == len(PROBES) * 3 * 5
    colours = {c["class"].split()[1] for c in parser.cells}
    assert {"perfectly", "sub-optimally", "not-at-all", "untested"} <= colours
    assert all(c["title"].split(":")[0] in metrics.VERDICTS for c in parser.cells)
    assert any("counters: " in c["title"] and "sample" in c["title"] for c in parser.cells)


def test_parse_sizes():
    assert matrix.parse_sizes("2M, 4K,64K,64k") == [0, 4, 9]
    for bad in ("3K", "4M", "", "x"):
        with pytest.raises(ValueError, match="allowed: 4K, 16K"):
            matrix.parse_sizes(bad)


# --- command line and README ----------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "foliobench", "matrix", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args, message", [
    (["--profile", "linux-2.6"], "kernel profile 'linux-2.6' is unknown"),
    (["--sizes", "3K"], "folio size '3K' is not a matrix column"),
    (["--format", "pdf"], "invalid choice"),
    (["--backend", "live", "--profile", "linux-6.1"], "--profile selects simulator profiles"),
])
def test_cli_bad_input_one_line_exit_2(args, message, tmp_path):
    out = run_cli(*args, "-o", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and message in out.stderr
    assert "Traceback" not in out.stderr and not list(tmp_path.iterdir())


def test_cli_output_that_cannot_be_a_directory_is_refused_before_the_run(tmp_path):
    # used to run every probe, then end in a NotADirectoryError traceback
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = run_cli("--probe", "migration", "--sizes", "4K", "-o", str(blocker / "sub"))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "is not a directory" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    calibrate = subprocess.run([sys.executable, "-m", "foliobench", "live", "calibrate", "-o",
                                str(blocker / "costs.json")], cwd=REPO, capture_output=True,
                               text=True, timeout=120)
    assert calibrate.returncode == 2 and "Traceback" not in calibrate.stderr
    assert calibrate.stderr.count("\n") == 1 and "-o/--output" in calibrate.stderr


def test_cli_saves_md_html_json_and_latest(tmp_path):
    out = run_cli("--profile", "linux-6.1", "--sizes", "4K,64K", "--format", "json",
                  "-o", str(tmp_path))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [m["profile"] for m in doc["matrices"]] == ["linux-6.1"]
    (run_dir,) = [p for p in (tmp_path / "matrix").iterdir() if p.is_dir()]
    assert sorted(p.name for p in run_dir.iterdir()) == ["matrix.html", "matrix.json",
                                                         "matrix.md"]
    for fmt in ("md", "html", "json"):
        assert (tmp_path / "matrix" / f"latest.{fmt}").read_text() == \
            (run_dir / f"matrix.{fmt}").read_text()
    assert json.loads((run_dir / "matrix.json").read_text())["matrices"][0]["rows"]
    # a narrow run is not the full matrix the history site links
    assert doc["complete"] is False and not (tmp_path / "matrix" / "full.html").exists()


def test_only_the_full_default_selection_is_saved_as_full(doc, tmp_path):
    everything = sorted(matrix.SIZE_ORDERS.values())
    assert matrix.full_selection(simprofiles.profiles(), everything, matrix.PROBES)
    assert not matrix.full_selection(simprofiles.profiles(), [0, 4, 9], matrix.PROBES)
    assert not matrix.full_selection(["linux-6.18"], everything, matrix.PROBES)
    assert not matrix.full_selection(simprofiles.profiles(), everything, matrix.PROBES[:1])
    assert doc["complete"] is False
    matrix.save(dict(doc, complete=True), tmp_path, "sim")
    narrow = dict(doc, complete=False, created="narrow")
    matrix.save(narrow, tmp_path, "sim")
    assert "narrow" in (tmp_path / "matrix" / "latest.html").read_text()
    full = (tmp_path / "matrix" / "full.html").read_text()
    assert "narrow" not in full and full == matrix.render_html(dict(doc, complete=True))


@pytest.mark.slow    # tens of seconds or more: CI runs it, -m 'not slow' does not
def test_matrix_docs_match_the_code():
    """docs/matrix.md's verdict rules are the code's, and its side-by-side table is what the
    simulator produces now (regenerate it with `foliobench matrix --no-save`)."""
    readme = (REPO / "docs" / "matrix.md").read_text()
    for v, rule in metrics.VERDICT_RULES:
        assert f"**{v}**: {rule}" in readme
    full = matrix.run_sim()
    side = matrix.render_markdown(full).split("\n### ")[0].strip()
    assert side in readme


def test_the_4k_cost_reference_can_be_skipped_where_4k_is_not_asked_for():
    """A guest under TCG spends minutes on a 4K cell: --no-cost-reference runs only the sizes
    asked for (cost ratios unknown), and still runs 4K when it is asked for."""
    import io

    from workloads.matrix_probes import Probe, _evidence
    ran = []

    def run(backend, order, seed):
        ran.append(order)
        return _evidence(10, 10, "pages", order, 10, {}, 100.0 * (order + 1), 4096)
    probe = Probe("fake", "fake", run)
    progress = io.StringIO()
    m = matrix.run_matrix(lambda p: object(), [4], "t", probes=(probe,), reference=False,
                          progress=progress)
    assert ran == [4] and m["rows"][0]["cells"]["64K"]["evidence"]["cost_ratio_vs_4k"] is None
    assert progress.getvalue().startswith("matrix: fake (64K) ")
    ran.clear()
    m = matrix.run_matrix(lambda p: object(), [4], "t", probes=(probe,))
    assert ran == [0, 4] and m["rows"][0]["cells"]["64K"]["evidence"]["cost_ratio_vs_4k"] == 5
    ran.clear()
    matrix.run_matrix(lambda p: object(), [0, 4], "t", probes=(probe,), reference=False)
    assert ran == [0, 4]
