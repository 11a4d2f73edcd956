"""Fixtures shared across test modules."""
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent

# modules whose tests write the repository's own asv results (results/asv, .asv/): one worker
ASV_MODULES = {"test_regression_gate", "test_history", "test_history_site"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist's --dist loadgroup (pyproject addopts): a module's tests run on
    one worker, in order, so module-scoped fixtures are built once; every module with a live
    test shares one group, since they change and read the one running kernel; the modules that
    write results/asv share another."""
    live_modules = {_module(item) for item in items
                    if item.get_closest_marker("live") is not None}
    for item in items:
        module = _module(item)
        if module in live_modules:
            group = "live-kernel"
        elif module in ASV_MODULES:
            group = "asv-results"
        else:
            group = module
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def asv_outcome_pass():
    """One quick asv pass over the working tree's Outcome benchmarks (tools/bench Outcome),
    run at most once per test session whichever tests ask for it: the results land under
    results/asv/ for HEAD's hash, where benchmarks.gate reads them. Returns the finished
    process (returncode, stdout, stderr)."""
    return subprocess.run([str(REPO / "tools" / "bench"), "Outcome"], cwd=REPO,
                          capture_output=True, text=True, timeout=1500)


def _module(item):
    return item.module.__name__ if getattr(item, "module", None) else item.nodeid.split("::")[0]
