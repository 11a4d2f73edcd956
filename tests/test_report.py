"""foliobench.report: the fragmentation map and the metric bars, from synthetic data."""
import os

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from foliobench import report
from simcore.mmzone import MIGRATETYPE_NAMES

NBLOCKS = 8192          # 16 GiB of 2 MiB pageblocks


def panels(n=NBLOCKS, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for title in ("legacy before", "legacy after", "folio after"):
        mt = rng.choice(len(MIGRATETYPE_NAMES), n, p=[0.1, 0.75, 0.08, 0.03, 0.03, 0.01])
        free = rng.random(n)
        free[rng.random(n) < 0.1] = 1.0
        free[rng.random(n) < 0.1] = 0.0
        out.append({"title": title, "migratetype": mt, "free_share": free})
    return out


def results_table(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for strategy in ("legacy", "split", "folio"):
        for s in range(3):
            rows.append({
                "strategy": strategy, "seed": s,
                "compaction_success_rate": rng.random(),
                "migration_gib_per_s": 3 * rng.random(),
                "large_folio_preservation": np.nan if strategy == "legacy" else rng.random(),
                "fragindex_9_after": int(rng.integers(-1000, 1000)),
                "pages_migrated": int(rng.integers(10_000, 1_000_000)),
                "unknown_metric": rng.random(),
            })
    return pd.DataFrame(rows)


def assert_picture(path, min_colours=12):
    assert path.exists() and path.stat().st_size > 20_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 400 and img.shape[1] > 600
    rgb = (img[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > min_colours
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_fragmentation_map(tmp_path):
    path = report.fragmentation_map(panels(), tmp_path / "frag.png", title="fragment, 16G")
    assert path == tmp_path / "frag.png"
    assert_picture(path, min_colours=200)    # 6 migratetypes x many free shares


def test_fragmentation_map_grid_and_labels():
    assert report._grid_width(NBLOCKS) == 64          # 128 rows of 64 blocks
    assert report._grid_width(32768) == 128
    assert report._grid_width(1) == 1
    fig = report._fragmentation_figure(panels(n=3000), title="t")
    maps = [ax for ax in fig.axes if ax.get_images() and ax.get_title().startswith(("legacy",
                                                                                   "folio"))]
    assert len(maps) == 3
    assert all("(GiB)" in ax.get_ylabel() and "MiB" in ax.get_xlabel() for ax in maps)
    image = maps[0].get_images()[0].get_array()
    assert image.shape[1] == 64 and image.shape[0] * 64 >= 3000
    key = [ax for ax in fig.axes if ax.get_legend() is not None]
    assert len(key) == 1 and "free share of the pageblock" in key[0].get_xlabel()
    assert [t.get_text() for t in key[0].get_legend().get_texts()] == list(MIGRATETYPE_NAMES)


def test_fragmentation_map_lighter_is_freer():
    mt = np.array([1, 1])
    used, free = report._cell_colours(mt, np.array([0.0, 1.0]))
    assert free.sum() > used.sum() and (free <= 1).all()


@pytest.mark.parametrize("panel, message", [
    ({"title": "x", "migratetype": [0, 9], "free_share": [0, 0]}, "migratetype 9"),
    ({"title": "x", "migratetype": [0, 1], "free_share": [0, 1.5]}, r"free_share 1\.5"),
    ({"title": "x", "migratetype": [0, 1], "free_share": [0, np.nan]}, "free_share nan"),
    ({"title": "x", "migratetype": [0, 1], "free_share": [0]}, "same non-zero length"),
    ({"title": "x"}, "must be a dict"),
])
def test_fragmentation_map_bad_input(tmp_path, panel, message):
    with pytest.raises(ValueError, match=message):
        report.fragmentation_map([panel], tmp_path / "f.png")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="at least one panel"):
        report.fragmentation_map([], tmp_path / "f.png")


def test_metric_bars(tmp_path):
    df = results_table()
    metrics = ["compaction_success_rate", "migration_gib_per_s", "large_folio_preservation",
               "fragindex_9_after", "pages_migrated", "unknown_metric"]
    path = report.metric_bars(df, metrics, tmp_path / "bars.png", title="fragment, 3 seeds")
    assert path == tmp_path / "bars.png"
    assert_picture(path)


def test_metric_bars_equal_repeats_whose_mean_rounds_outside_min_max(tmp_path):
    """The mean of 0.1 repeated 50 times is one ulp below 0.1: no negative error bar."""
    df = pd.DataFrame({"strategy": ["folio"] * 50, "highorder_success": [0.1] * 50})
    report.metric_bars(df, ["highorder_success"], tmp_path / "bars.png")
    assert (tmp_path / "bars.png").stat().st_size > 0


def test_metric_bars_nan_is_not_a_bar():
    df = results_table()
    fig = report._metric_bars_figure(df, ["compaction_success_rate", "large_folio_preservation",
                                          "fragindex_9_after", "unknown_metric"])
    axes = [ax for ax in fig.axes if ax.get_visible()]
    labels = [ax.get_ylabel() for ax in axes]
    assert labels == ["compaction_success_rate (fraction)", "large_folio_preservation (fraction)",
                      "fragindex_9_after (x1000)", "unknown_metric"]

    def bars(ax):
        return [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars(axes[0])) == 3
    assert len(bars(axes[1])) == 2                   # legacy has no value: no bar ...
    assert all(np.isfinite(b.get_height()) and b.get_height() > 0 for b in bars(axes[1]))
    assert "n/a" in [t.get_text() for t in axes[1].texts]     # ... but "n/a"
    assert "n/a" not in [t.get_text() for t in axes[0].texts]
    # mean over the seeds, whiskers min..max
    folio = df[df.strategy == "folio"]["compaction_success_rate"]
    assert bars(axes[0])[2].get_height() == pytest.approx(folio.mean())
    assert axes[0].collections                       # the error bars
    assert [t.get_text() for t in axes[0].get_xticklabels()] == [
        "legacy\nn=3", "split\nn=3", "folio\nn=3"]


def test_metric_bars_all_nan_and_single_rows(tmp_path):
    df = pd.DataFrame({"strategy": ["legacy", "folio"], "highorder_success": [np.nan, np.nan],
                       "sim_wall_s": [1.5, 0.5]})
    fig = report._metric_bars_figure(df, ["highorder_success", "sim_wall_s"])
    nan_ax, wall_ax = fig.axes[:2]
    assert not nan_ax.patches and [t.get_text() for t in nan_ax.texts] == ["n/a", "n/a"]
    assert len(wall_ax.patches) == 2 and not wall_ax.collections   # one row each: no whiskers
    assert wall_ax.get_ylabel() == "sim_wall_s (s)"
    assert_picture(report.metric_bars(df, ["highorder_success", "sim_wall_s"],
                                      tmp_path / "b.png"), min_colours=5)


def test_metric_bars_bad_input(tmp_path):
    df = results_table()
    with pytest.raises(ValueError, match="no column 'nope'"):
        report.metric_bars(df, ["nope"], tmp_path / "b.png")
    with pytest.raises(ValueError, match="no column 'kernel'"):
        report.metric_bars(df, ["pages_migrated"], tmp_path / "b.png", group="kernel")
    with pytest.raises(ValueError, match="at least one metric"):
        report.metric_bars(df, [], tmp_path / "b.png")
    assert not list(tmp_path.iterdir())


def test_save_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "bars.png"
    target.write_bytes(b"old picture")

    def crash(src, dst):
        raise OSError("simulated crash")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        report.metric_bars(results_table(), ["pages_migrated"], target)
    assert target.read_bytes() == b"old picture"
    assert [p.name for p in tmp_path.iterdir()] == ["bars.png"]
