"""The large-folio feature matrix of every simulator kernel profile.

MatrixOutcome's track_ values are exact (the simulator is deterministic), so the CI gate
(benchmarks/gate.py) fails when a change to simcore flips a verdict; lower is better: cells
below "perfectly" per profile and subsystem. time_sim_matrix times the whole matrix of one
profile (all sizes), the figure behind the README's "foliobench matrix <= 30 s" target.
"""
from foliobench import matrix
from foliobench.verdicts import PERFECTLY, UNTESTED
from simcore import profiles
from workloads.matrix_probes import PROBE_NAMES

ORDERS = sorted(matrix.SIZE_ORDERS.values())


class MatrixOutcome:
    """Verdicts of every simulator profile x subsystem over all nine sizes."""

    params = [profiles.profiles(), list(PROBE_NAMES)]
    param_names = ["profile", "subsystem"]
    timeout = 900

    def setup_cache(self):
        doc = matrix.run_sim(orders=ORDERS)
        return {f"{m['profile']}|{row['probe']}": [c["verdict"] for c in row["cells"].values()]
                for m in doc["matrices"] for row in m["rows"]}

    def track_cells_below_perfectly(self, verdicts, profile, subsystem):
        """Sizes (of nine) whose verdict is sub-optimally, barely or not at all."""
        return sum(v not in (PERFECTLY, UNTESTED) for v in verdicts[f"{profile}|{subsystem}"])

    track_cells_below_perfectly.unit = "cells"

    def track_cells_not_at_all(self, verdicts, profile, subsystem):
        """Sizes (of nine) where the subsystem does not work at all (< 10% success)."""
        return sum(v == "not at all" for v in verdicts[f"{profile}|{subsystem}"])

    track_cells_not_at_all.unit = "cells"


class SimMatrixTime:
    params = [profiles.profiles()]
    param_names = ["profile"]
    timeout = 300

    def time_sim_matrix(self, profile):
        """One profile's matrix: 13 probes x 9 sizes, each on a fresh simulated machine."""
        matrix.sim_matrix(profile, ORDERS)
