"""Verdicts of the large-folio feature matrix: how one cell's evidence (success share, share of
large folios keeping their order, cost per byte) becomes "perfectly" .. "not at all".

Presentation policy of the matrix, so it lives next to it (foliobench/matrix.py) and not in the
simulator: simcore measures, this module judges."""
import math

PERFECTLY = "perfectly"
SUB_OPTIMALLY = "sub-optimally"
BARELY = "barely"
NOT_AT_ALL = "not at all"
UNTESTED = "untested"
VERDICTS = (PERFECTLY, SUB_OPTIMALLY, BARELY, NOT_AT_ALL, UNTESTED)
PERFECT_SUCCESS = 0.99        # success share for "perfectly"
PERFECT_KEPT_ORDER = 0.99     # share of large folios keeping their order for "perfectly"
SUBOPTIMAL_SUCCESS = 0.90     # at least this much success: "sub-optimally" at worst
BARELY_SUCCESS = 0.10         # at least this much: "barely"; below: "not at all"
COST_RATIO_LIMIT = 2.0        # cost per byte above this many times base pages': degraded
VERDICT_RULES = (
    (PERFECTLY, f">= {PERFECT_SUCCESS:.0%} success and >= {PERFECT_KEPT_ORDER:.0%} of large "
                f"folios keep their order (and cost per byte at most {COST_RATIO_LIMIT:g}x "
                f"that of base pages)"),
    (SUB_OPTIMALLY, f">= {SUBOPTIMAL_SUCCESS:.0%} success, but folios split or degrade, or cost "
                    f"per byte > {COST_RATIO_LIMIT:g}x that of base pages"),
    (BARELY, f"{BARELY_SUCCESS:.0%}-{SUBOPTIMAL_SUCCESS:.0%} success"),
    (NOT_AT_ALL, f"< {BARELY_SUCCESS:.0%} success"),
    (UNTESTED, "no evidence on this backend, with the reason"),
)


def matrix_verdict(success, kept_order=None, cost_ratio=None, untested=None):
    """(verdict, why) for one cell of the feature matrix.

    success: share of the probe's work that succeeded (0..1); kept_order: share of the large
    folios that kept their order (None when not applicable, e.g. 4K); cost_ratio: cost per byte
    over that of base pages in the same probe (None when unknown); untested: the reason there
    is no evidence (then the verdict is "untested")."""
    if untested:
        return UNTESTED, str(untested)
    if success is None or (isinstance(success, float) and math.isnan(success)):
        return UNTESTED, "the probe produced no sample"
    pct = f"{success:.0%} success"
    if success < BARELY_SUCCESS:
        return NOT_AT_ALL, pct
    if success < SUBOPTIMAL_SUCCESS:
        return BARELY, pct
    problems = []
    if kept_order is not None and kept_order < PERFECT_KEPT_ORDER:
        problems.append(f"only {kept_order:.0%} of large folios kept their order")
    if cost_ratio is not None and cost_ratio > COST_RATIO_LIMIT:
        problems.append(f"cost per byte {cost_ratio:.1f}x that of base pages")
    if success < PERFECT_SUCCESS:
        problems.insert(0, "some failures")
    if problems:
        return SUB_OPTIMALLY, f"{pct}; " + "; ".join(problems)
    return PERFECTLY, pct + ("" if kept_order is None else
                             f", {kept_order:.0%} of large folios kept their order")
