"""The history site's pages as benchmarks/history.py leaves them after asv publish: which feature
matrix it links (and the way back), and the Regressions tab when the feed is empty. Fast: a
stand-in for asv's published index.html, no asv run (tests/test_history.py runs the real one)."""
import json

from benchmarks import history

# the parts of asv's published index.html that history.py edits
INDEX = """<html><body><ul>
<li id="nav-li-summarylist"><a href="#/summarylist">Benchmark list</a></li>
<li id="nav-li-regressions"><a href="#/regressions">Regressions</a></li>
</ul>
<div id="regressions-display">
  <div id="regressions-body">
  </div>
</div></body></html>
"""
FULL = "<!DOCTYPE html><html><head></head><body>\n<h1>matrix</h1><h2>linux-6.1</h2></body></html>"
NARROW = "<!DOCTYPE html><html><head></head><body>\n<h1>matrix</h1><h2>one cell</h2></body></html>"


def _site(tmp_path, regressions=()):
    html = tmp_path / "html"
    html.mkdir()
    (html / "index.html").write_text(INDEX)
    (html / "regressions.json").write_text(json.dumps({"regressions": list(regressions)}))
    (html / "index.json").write_text(json.dumps({"revision_to_hash": {"1": "a" * 40,
                                                                      "2": "b" * 40}}))
    return html


def test_the_site_links_the_full_matrix_not_the_last_narrow_one_and_back(tmp_path):
    html = _site(tmp_path)
    matrix_dir = tmp_path / "repo" / "results" / "matrix"
    matrix_dir.mkdir(parents=True)
    (matrix_dir / "full.html").write_text(FULL)
    (matrix_dir / "latest.html").write_text(NARROW)    # a narrow run after the full one
    history.link_matrix(html, matrix_dir / history.FULL_MATRIX)
    page = (html / "matrix.html").read_text()
    assert "linux-6.1" in page and "one cell" not in page
    assert '<a href="index.html">' in page and page.index(history.BACK_LINK) < page.index("<h1>")
    index = (html / "index.html").read_text()
    assert index.count('<a href="matrix.html">Matrix</a>') == 1
    history.link_matrix(html, matrix_dir / history.FULL_MATRIX)       # publish again: once
    assert (html / "matrix.html").read_text().count(history.BACK_LINK) == 1
    assert (html / "index.html").read_text().count("matrix.html") == 1


def test_an_empty_feed_says_no_regressions_and_a_step_does_not(tmp_path):
    html = _site(tmp_path)
    assert history.read_feed(html) == []
    history.say_no_regressions(html)
    history.say_no_regressions(html)
    index = (html / "index.html").read_text()
    assert index.count("No regressions") == 1
    assert index.index("No regressions") < index.index('<div id="regressions-body">')


def test_publish_says_no_regressions_only_for_an_empty_feed(tmp_path, monkeypatch):
    step = ["bench.X.track_y", "graph", {}, None, 2.0, 1.0, [[1, 2, 1.0, 2.0]]]
    for name, feed in (("empty", []), ("step", [step])):
        root = tmp_path / name
        root.mkdir()
        html = _site(root, feed)
        monkeypatch.setattr(history.subprocess, "run", lambda *a, **k: None)   # no asv here
        monkeypatch.setattr(history, "committed_results", lambda *a: None)
        monkeypatch.setattr(history, "localize", lambda html: [])
        steps = history.publish(root / "repo", "asv", root / "conf.json",
                                {"results_dir": str(root / "res"), "html_dir": str(html)})
        said = "No regressions" in (html / "index.html").read_text()
        assert said == (not steps), (name, steps)
