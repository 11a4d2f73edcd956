"""tools/history: asv over the last commits, the published site and its regressions feed, and
the site opened in a real headless browser (Debian's chromium through selenium).

The history is built from a clone of this repository: its last 2 commits plus one synthetic
commit that makes the folio strategy split large folios (as the 6.9 interim step did), so the
feed must show exactly that step. Only the cheap CompactionOutcome benchmarks run: about 10 s a
commit, plus about a minute for each simcore version among the commits on a fresh clone (numba
compiles it once; the working tree's cache serves HEAD's), so 1-3 minutes in all."""
import functools
import http.server
import json
import pathlib
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
REAL_COMMITS = 2    # each simcore version among them is a numba compile on a fresh clone
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
SPLIT_RATE = "bench_compaction.CompactionOutcome.track_large_folio_split_rate"

pytestmark = pytest.mark.slow   # an asv pass per commit and a browser: minutes

SYNTHETIC_REGRESSION = '''
# synthetic regression (tests/test_history.py): folio compaction splits large folios again
from simcore import freescan as _freescan
from simcore.strategies import Folio as _Folio
_Folio.split_free_pages = True
_Folio.target_policy = _freescan.TARGET_ORDER0
'''


MATRIX_PAGE = "<!DOCTYPE html><html><body><h1>feature matrix</h1></body></html>\n"
NARROW_MATRIX_PAGE = "<!DOCTYPE html><html><body><h1>one cell</h1></body></html>\n"


def _git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd), "-c", "user.name=foliobench test",
                           "-c", "user.email=test@foliobench.invalid", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A clone with one synthetic commit on top, and its history built by tools/history."""
    try:
        head = _git(REPO, "rev-parse", "HEAD")
        count = int(_git(REPO, "rev-list", "--count", "HEAD"))
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout: {exc}")
    if count < REAL_COMMITS:
        pytest.skip(f"history needs {REAL_COMMITS} commits, this clone has {count} "
                    f"(shallow clone? git fetch --unshallow)")
    clone = tmp_path_factory.mktemp("history") / "repo"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    _git(clone, "checkout", "--quiet", "-B", "main", head)
    real = _git(clone, "rev-list", "--first-parent", f"--max-count={REAL_COMMITS}",
                "HEAD").split()[::-1]
    with open(clone / "workloads" / "__init__.py", "a") as fh:
        fh.write(SYNTHETIC_REGRESSION)
    _git(clone, "commit", "--quiet", "-am", "synthetic: folio compaction splits large folios")
    synthetic = _git(clone, "rev-parse", "HEAD")
    matrix = clone / "results" / "matrix" / "full.html"     # as foliobench matrix saves it
    matrix.parent.mkdir(parents=True)
    matrix.write_text(MATRIX_PAGE)
    (matrix.parent / "latest.html").write_text(NARROW_MATRIX_PAGE)    # a narrow run after it
    proc = subprocess.run([str(REPO / "tools" / "history"), str(REAL_COMMITS + 1),
                           "CompactionOutcome", "--repo", str(clone),
                           # a fixed workdir keeps the numba caches from one run to the next
                           "--workdir", str(REPO / ".asv" / "history-test")],
                          cwd=REPO, capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return {"clone": clone, "html": clone / "results" / "html", "real": real,
            "synthetic": synthetic, "stdout": proc.stdout}


def test_every_commit_is_run_and_recorded(history):
    commits = history["real"] + [history["synthetic"]]
    for commit in commits:
        assert f"  {commit[:8]}  ok" in history["stdout"], history["stdout"]
        files = list((history["clone"] / "results" / "asv").glob(f"*/{commit[:8]}-*.json"))
        assert files, f"no asv results for {commit[:8]}"
        doc = json.loads(files[0].read_text())
        assert SPLIT_RATE in doc["results"]
        # filed apart from tools/bench's working-tree results for the same interpreter
        assert doc["env_vars"] == {"FOLIOBENCH_SOURCE": "commit"}
    index = json.loads((history["html"] / "index.json").read_text())
    assert set(index["revision_to_hash"].values()) >= set(commits)
    # the full feature matrix is published next to the site (not the last narrow one), with
    # a link back
    page = (history["html"] / "matrix.html").read_text()
    assert "<h1>feature matrix</h1>" in page and "one cell" not in page
    assert '<a href="index.html">' in page


def test_the_feed_lists_the_synthetic_step_and_nothing_at_it_but_folio(history):
    """asv's regressions.json and regressions.xml name the benchmark the synthetic commit
    moved; since every value is exact, no other step appears at that commit."""
    feed = json.loads((history["html"] / "regressions.json").read_text())["regressions"]
    rev_to_hash = json.loads((history["html"] / "index.json").read_text())["revision_to_hash"]
    at = {}
    for name, _path, _params, _idx, _last, _best, jumps in feed:
        for _a, after_rev, before, after in jumps:
            at.setdefault(rev_to_hash[str(after_rev)], []).append((name, before, after))
    steps = at.get(history["synthetic"], [])
    names = [name for name, _, _ in steps]
    assert f"{SPLIT_RATE}('folio')" in names, feed
    assert all(name.endswith("('folio')") for name in names), names
    before, after = next((b, a) for n, b, a in steps if n == f"{SPLIT_RATE}('folio')")
    assert after > before
    # the published Atom feed has an entry for it that links to the commit
    root = ET.parse(history["html"] / "regressions.xml").getroot()
    ns = {"atom": "http://www.w3.org/2005/Atom"}
    entries = [(e.findtext("atom:title", namespaces=ns), e.find("atom:link", ns).get("href"))
               for e in root.findall("atom:entry", ns)]
    assert any(title.endswith(f"{SPLIT_RATE}('folio')") and history["synthetic"] in href
               for title, href in entries), entries


@pytest.fixture
def site(history):
    """The published site over http on an ephemeral port (asv's pages fetch JSON, which
    browsers refuse from file://)."""
    handler = functools.partial(_QuietHandler, directory=str(history["html"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def browser(tmp_path):
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("chromium or chromedriver not installed (tools/setup installs the Debian "
                    "packages chromium and chromium-driver when run as root with apt)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: selenium-manager would otherwise try to download one
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _severe(driver):
    # chromium asks every site for /favicon.ico, which asv does not publish: not a page error
    return [e for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]


def test_the_site_opens_in_chromium_and_plots_a_track_benchmark(history, site, browser,
                                                                tmp_path):
    browser.get(site)
    names = _wait(lambda: browser.execute_script(
        "return $('a.benchmark-container').map(function () {"
        "  return $(this).attr('href'); }).get();"), "the benchmark grid")
    assert f"#{SPLIT_RATE}" in names, names
    # each benchmark's thumbnail is plotted from its summary graph
    _wait(lambda: browser.execute_script(
        "return $('.benchmark-plot').filter(function () {"
        "  return $(this).data('plot'); }).length;") == len(names), "the thumbnails")
    browser.save_screenshot(str(tmp_path / "index.png"))
    assert _severe(browser) == []
    assert browser.execute_script("return $('#nav-li-matrix a').attr('href');") == "matrix.html"

    browser.get(f"{site}#/regressions")
    _wait(lambda: SPLIT_RATE in browser.find_element("id", "regressions-body").text,
          "the regressions table")
    assert history["synthetic"][:8] in browser.find_element("id", "regressions-body").text

    browser.get(f"{site}#{SPLIT_RATE}")
    # flot draws into canvases inside #main-graph; wait until it holds the plotted series
    points = _wait(lambda: browser.execute_script(
        "var plot = $('#main-graph').data('plot');"
        "if (!plot) return 0;"
        "return plot.getData().reduce(function (n, s) { return n + s.data.length; }, 0);"),
        "the plot of the split-rate graph")
    assert points >= REAL_COMMITS + 1
    canvases = browser.execute_script(
        "return $('#main-graph canvas').map(function () {"
        "  return [[this.width, this.height]]; }).get();")
    assert canvases and all(w > 0 and h > 0 for w, h in canvases), canvases
    browser.save_screenshot(str(tmp_path / "graph.png"))
    assert _severe(browser) == []
    # everything came from the site itself (asv's CDN libraries are served from vendor/)
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; });")
    assert resources and all(r.startswith(site) for r in resources), resources
