"""Fixtures shared across test modules."""
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def asv_outcome_pass():
    """One quick asv pass over the working tree's Outcome benchmarks (tools/bench Outcome),
    run at most once per test session whichever tests ask for it: the results land under
    results/asv/ for HEAD's hash, where benchmarks.gate reads them. Returns the finished
    process (returncode, stdout, stderr)."""
    return subprocess.run([str(REPO / "tools" / "bench"), "Outcome"], cwd=REPO,
                          capture_output=True, text=True, timeout=1500)
