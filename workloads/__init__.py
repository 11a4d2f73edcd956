"""foliobench workloads: parameterized sequences of memory operations run against a backend.

    workloads.run("thp-heavy", strategies=["legacy", "folio"], mem="16G", seed=0) -> DataFrame

Every module of this package is imported here, so a workload module registers itself with
@register (workloads.base) and needs no entry in a hand-kept list.
"""
import importlib as _importlib
import pkgutil as _pkgutil

from .base import Param, Workload, get_workload, resolve_params, run, run_one, workloads

for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["run", "run_one", "workloads", "get_workload", "resolve_params", "Workload", "Param"]
