"""Honest outputs: each workload's headline figures reach the printed table, `show` and the
metrics picture; counters are printed exactly."""
import pandas as pd
import pytest

import workloads
from foliobench import cli, report
from workloads.base import headline_columns


def test_every_workload_names_headline_figures_it_produces():
    for name in workloads.workloads():
        df = workloads.run(name, strategies=["folio"], quick=True)
        shown = headline_columns(list(df.columns), [name])
        assert shown, name
        assert set(shown) <= set(cli._summary(df).columns), name
        if name == "thp-heavy":
            assert "huge_pct" in shown and any(c.startswith("fallback_") for c in shown)


def test_hot_unplug_failure_reasons_are_kept_in_the_row():
    df = workloads.run("hotunplug-cycles", strategies=["folio"], quick=True,
                       params={"movable": "0", "slab": 0.2})
    assert df["offline_success"].iloc[0] < 1
    reasons = df["offline_failures"].iloc[0]
    assert reasons and ":" in reasons                    # "busy: 3; ..."
    assert "offline_failures" in cli._summary(df).columns


@pytest.mark.parametrize("value, text", [(2048, "2048"), (2048.0, "2048"), (0.2725, "0.273"),
                                         (123456, "123k")])
def test_picture_labels_print_counters_exactly(value, text):
    assert report._fmt_value(value) == text


def test_compare_prints_counters_exactly():
    assert cli._exact(2048) == "2048"
    assert cli._exact(pd.Series([2048]).iloc[0]) == "2048"           # numpy int64
    assert cli._exact(0.27251) == "0.273"
    assert cli._exact(float("nan")) == "-"
