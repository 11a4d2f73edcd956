"""Fixtures shared across test modules."""
import contextlib
import fcntl
import pathlib
import subprocess
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent

# modules whose tests write the repository's own asv results (results/asv, .asv/, asv's
# machine file): one at a time
ASV_MODULES = {"test_regression_gate", "test_history", "test_history_site"}
LOCK_DIR = pathlib.Path(tempfile.gettempdir())


@pytest.fixture(scope="module", autouse=True)
def one_module_at_a_time_where_they_share_state(request):
    """pytest-xdist (pyproject addopts: -n auto --dist loadfile) runs a module's tests on one
    worker, in order, but two modules at once. Modules with a live test change and read the
    one running kernel, and the asv modules write the same results: each such module holds a
    lock shared by its kind for its whole run, module-scoped fixtures included (a higher
    scope's autouse fixture is set up first). Other modules run beside them freely."""
    module = request.module.__name__
    if module in ASV_MODULES:
        kind = "asv"
    elif any(item.get_closest_marker("live") is not None for item in request.session.items
             if item.module is request.module):
        kind = "live-kernel"
    else:
        yield
        return
    with shared_state_lock(kind):
        yield


_held = {}


@contextlib.contextmanager
def shared_state_lock(kind):
    """An exclusive lock between test processes (xdist workers), re-entrant within one."""
    if kind in _held:
        _held[kind][1] += 1
    else:
        lock = open(LOCK_DIR / f"foliobench-tests-{kind}.lock", "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
        _held[kind] = [lock, 1]
    try:
        yield
    finally:
        _held[kind][1] -= 1
        if not _held[kind][1]:
            _held.pop(kind)[0].close()


@pytest.fixture(scope="session")
def asv_outcome_pass():
    """One quick asv pass over the working tree's Outcome benchmarks (tools/bench Outcome),
    run at most once per test session whichever tests ask for it: the results land under
    results/asv/ for HEAD's hash, where benchmarks.gate reads them. Returns the finished
    process (returncode, stdout, stderr)."""
    with shared_state_lock("asv"):
        return subprocess.run([str(REPO / "tools" / "bench"), "Outcome"], cwd=REPO,
                              capture_output=True, text=True, timeout=1500)

