"""Layers one way: workload -> backend -> counters -> metrics -> results; nothing imports
back up."""
import ast
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
# package -> packages it must never import (they sit above it in the flow)
ABOVE = {
    "simcore": {"workloads", "livekernel", "foliobench", "benchmarks"},
    "workloads": {"livekernel", "foliobench", "benchmarks"},
    "livekernel": {"foliobench", "benchmarks"},
}


def imported_packages(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_no_package_imports_a_layer_above_it(package):
    wrong = {f"{path.relative_to(REPO)} imports {name}"
             for path in sorted((REPO / package).glob("*.py"))
             for name in imported_packages(path) if name in ABOVE[package]}
    assert not wrong, sorted(wrong)


def test_importing_workloads_loads_no_live_kernel_code():
    code = "import sys, workloads, workloads.backend; print(sorted(m for m in sys.modules " \
           "if m.split('.')[0] in ('livekernel', 'foliobench')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_matrix_verdicts_live_next_to_the_matrix():
    import simcore.metrics
    from foliobench import verdicts
    assert not hasattr(simcore.metrics, "matrix_verdict")
    assert verdicts.matrix_verdict(1.0)[0] == verdicts.PERFECTLY


def test_sim_backend_reports_folio_pfns():
    # a second definition raising Unsupported used to replace the working one
    from workloads.backend import SimBackend
    b = SimBackend(mem="256M")
    handles = b.alloc(4, 2)
    assert list(b.folio_pfns(handles)) == list(b.machine.handle_pfn(handles))


def test_workloads_run_refuses_the_live_backend():
    import workloads
    with pytest.raises(ValueError, match="foliobench run --backend live"):
        workloads.run("highalloc", backend="live")


def test_workload_modules_register_themselves_without_a_list():
    import importlib
    import pkgutil

    import workloads
    from workloads.base import Workload
    init = (REPO / "workloads" / "__init__.py").read_text()
    found = set()
    for info in pkgutil.iter_modules(workloads.__path__):
        assert f"import {info.name}" not in init and f" {info.name}," not in init
        module = importlib.import_module(f"workloads.{info.name}")
        found |= {obj.name for obj in vars(module).values()
                  if isinstance(obj, type) and issubclass(obj, Workload) and obj.name}
    assert found and found == set(workloads.workloads())
