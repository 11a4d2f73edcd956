"""Workload definitions, parameters, the registry and the runner.

A workload is a class with a name, documented parameters (default, quick value, allowed range)
and a run(backend, p) method that drives the backend and returns its own figures (requests
granted, cycles that succeeded, ...). The runner wraps every run the same way: counters before
and after, simcore.metrics.compaction_metrics() over the deltas, one row per workload x
strategy x seed.
"""
import dataclasses
import functools
import math
import pathlib
import re
import subprocess
import time

import pandas as pd

import simcore
from simcore.metrics import compaction_metrics, delta, ratio
from simcore.strategies import get_strategy
from simcore.units import parse_size

from .backend import SimBackend, Unsupported
from .memory import MAX_REPEAT, NotEnoughMemory, check_memory, check_repeat, memory_needed  # noqa: F401

QUICK_MEM = "1G"
DEFAULT_MEM = "16G"
MAX_SEED = (1 << 63) - 1
_REGISTRY = {}


@dataclasses.dataclass(frozen=True)
class Param:
    default: object
    doc: str
    quick: object = None
    low: float = None
    high: float = None
    choices: tuple = None

    def parse(self, name, value):
        """The value from a string (command line) or a Python value, checked against the range."""
        kind = type(self.default)
        if isinstance(value, str) and kind is not str and not value.strip().isascii():
            # int() and float() take full-width and other non-ASCII digits; a number here is 0-9
            raise ValueError(f"parameter {name}={value!r} is not a {kind.__name__} (digits 0-9)")
        if isinstance(value, str) and kind is not str:
            try:
                value = kind(value) if kind is not bool else value.lower() in ("1", "true", "yes")
            except ValueError:
                raise ValueError(f"parameter {name}={value!r} is not a {kind.__name__}") from None
        if kind in (int, float) and (isinstance(value, bool)
                                     or not isinstance(value, (int, float))):
            raise ValueError(f"parameter {name}={value!r} is not a {kind.__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"parameter {name}={value!r} is not a finite number")
        if kind is int and isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"parameter {name}={value!r} is not an integer")
            value = int(value)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"parameter {name}={value!r} is not allowed; "
                             f"allowed: {', '.join(map(str, self.choices))}")
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            raise ValueError(f"parameter {name}={value!r} is out of range {self.low}..{self.high}")
        return value

    def describe(self):
        allowed = f"one of {', '.join(map(str, self.choices))}" if self.choices else \
            (f"{self.low}..{self.high}" if self.low is not None else "")
        return allowed


class Workload:
    name = None
    description = ""
    params = {}
    machine = {}          # extra simcore.Machine arguments, from params: {"cma": "cma_size"}
    # the figures this workload is about, shown in the printed table, `show` and the metrics
    # picture; a name ending in * is a prefix ("fallback_*": one column per folio size)
    headline = ()

    def run(self, backend, p, extra):
        """Drive the backend with parameters p; return this workload's figures (a dict;
        "requested" and "granted" feed highorder_success). `extra` takes artefacts for the
        report (anything JSON-serialisable)."""
        raise NotImplementedError


def check_seed(seed):
    """ValueError unless seed is an integer 0..MAX_SEED (a seed column stays int64)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed!r} must be an integer from 0 to {MAX_SEED} (2**63 - 1)")
    return seed


def register(cls):
    _REGISTRY[cls.name] = cls
    return cls


def workloads():
    return sorted(_REGISTRY)


def get_workload(name):
    if isinstance(name, str) and name.startswith("trace:"):
        from .trace import trace_workload  # a recorded trace (docs/traces.md)
        return trace_workload(name[len("trace:"):])
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"workload {name!r} is unknown; known: {', '.join(workloads())} "
                         f"or trace:FILE") from None


def resolve_params(workload, overrides=None, quick=False):
    """Defaults (or quick values) overlaid with overrides, every value checked."""
    cls = get_workload(workload) if isinstance(workload, str) else workload
    values = {}
    for name, param in cls.params.items():
        values[name] = param.quick if quick and param.quick is not None else param.default
    for name, value in (overrides or {}).items():
        if name not in cls.params:
            raise ValueError(f"parameter {name!r} is unknown for workload {cls.name}; known: "
                             f"{', '.join(cls.params) or '(none)'}")
        values[name] = cls.params[name].parse(name, value)
    return values


def run_one(workload, strategy="folio", mem=None, seed=0, params=None, quick=False,
            backend_factory=SimBackend, keep=None):
    """One workload x strategy x seed: a dict row of parameters, figures and metrics.
    `keep`, a dict, receives the backend and the before/after snapshots for reports."""
    cls = get_workload(workload) if isinstance(workload, str) else workload
    p = resolve_params(cls, params, quick)
    mem = mem or (QUICK_MEM if quick else DEFAULT_MEM)
    machine_kw = {arg: p[name] for arg, name in cls.machine.items()}
    backend_for = getattr(cls, "backend_for", None)      # a trace runs on its own twin
    if backend_for is not None:
        backend_factory = backend_for(backend_factory)
    backend = backend_factory(mem=mem, seed=seed, strategy=strategy, **machine_kw)
    try:
        return _run_on(cls, p, backend, strategy, mem, seed, keep)
    finally:
        close = getattr(backend, "close", None)      # the live backend gives memory back
        if close is not None:
            close()


def _pageblock_map(backend):
    """The backend's pageblock map, or None where it cannot observe one."""
    try:
        return backend.pageblock_map()
    except Unsupported:
        return None


def _run_on(cls, p, backend, strategy, mem, seed, keep):
    wall0 = time.perf_counter()
    before = backend.counters()
    frag0 = backend.fragmentation()
    extra = {}
    if keep is not None:
        keep["buddyinfo_before"] = backend.buddyinfo()
        keep["map_before"] = _pageblock_map(backend)
    try:
        figures = cls().run(backend, p, extra)
        unsupported = ""
    except Unsupported as exc:
        # the step the backend cannot do ends this workload; its own figures stay untested
        figures = {}
        unsupported = f"unsupported on this kernel: {exc}"
    except simcore.OutOfMemory as exc:
        # an allocation that had to succeed could not: the OOM killer ends the workload
        figures = {"oom": str(exc)}
        unsupported = ""
    after = backend.counters()
    d = delta(after, before)
    migration = {k[len("migrate_"):]: v for k, v in d.items() if k.startswith("migrate_")}
    row = {"workload": cls.name, "strategy": strategy, "seed": seed, "mem": mem,
           "backend": backend.name, "simcore_version": simcore.__version__,
           "commit": git_commit(), "unsupported": unsupported}
    if getattr(backend, "notes", ""):
        row["backend_notes"] = backend.notes
    if getattr(backend, "arena_pages", None) is not None:
        # a live run's arena (and a simulator beside it) serves only what fits in it
        row["arena_declined_pages"] = backend.arena_declined_pages
    row.update({f"param_{k}": v for k, v in p.items()})
    row.update(compaction_metrics(d, migration=migration,
                                  requested=figures.pop("requested", None),
                                  granted=figures.pop("granted", None),
                                  frag_before=frag0, frag_after=backend.fragmentation(),
                                  wall_s=time.perf_counter() - wall0))
    row.update(figures)
    if keep is not None:
        # what the report needs, never the backend: a kept backend keeps its whole machine
        keep["vmstat_delta"] = d
        keep["buddyinfo_after"] = backend.buddyinfo()
        keep["map_after"] = _pageblock_map(backend)
        keep.update(extra)
        for name in ("map_before", "map_after"):
            if keep.get(name) is None:
                keep.pop(name, None)
    return row


def run(workload, strategies=("legacy", "split", "folio"), mem=None, seed=0, repeat=1,
        params=None, quick=False, backend="sim"):
    """Every strategy on the same seeded workload (seeds seed..seed+repeat-1): a DataFrame with
    one row per strategy x seed, on the simulator.

    The live kernel is chosen above this layer (workloads never import livekernel): `foliobench
    run --backend live`, or run_one(..., backend_factory=LiveSession(...).factory)."""
    check_repeat(repeat)
    check_seed(seed)
    check_seed(seed + repeat - 1)
    if backend != "sim":
        raise ValueError(f"backend {backend!r}: workloads.run() runs the simulator (sim); run the "
                         f"live kernel with 'foliobench run --backend live' or run_one() with "
                         f"a LiveSession's factory")
    if isinstance(strategies, str):
        strategies = [strategies]
    for s in strategies:
        get_strategy(s)
    check_memory(mem or (QUICK_MEM if quick else DEFAULT_MEM))
    rows = [run_one(workload, s, mem, seed + r, params, quick)
            for r in range(repeat) for s in strategies]
    return pd.DataFrame(rows)


def headline_columns(columns, names=None):
    """The headline figures among `columns`, in workload then column order (names: the
    workloads to take them from; default every registered one)."""
    out = []
    for name in names if names is not None else workloads():
        for pattern in get_workload(name).headline:
            if pattern.endswith("*"):
                out.extend(c for c in columns if c.startswith(pattern[:-1]))
            elif pattern in columns:
                out.append(pattern)
    return list(dict.fromkeys(out))


# one ratio helper: a workload's share of requests is simcore.metrics.ratio
share = ratio


@functools.lru_cache(maxsize=8)
def git_commit(repo_dir=None):
    """`git rev-parse HEAD` of repo_dir (default: this checkout), or None without git or a
    repository."""
    repo_dir = pathlib.Path(__file__).resolve().parent.parent if repo_dir is None \
        else pathlib.Path(repo_dir)
    try:
        out = subprocess.run(["git", "-C", str(repo_dir), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", commit):
        return None
    return commit


def parse_size_mix(text):
    """"16K:1,64K:2,2M:1" -> {order: weight}; sizes 4K..2M (orders 0..9)."""
    mix = {}
    for item in str(text).split(","):
        size, _, weight = item.partition(":")
        nbytes = parse_size(size.strip(), "folio size")
        order = nbytes.bit_length() - 13
        if nbytes < 4096 or nbytes & (nbytes - 1) or order > 9:
            raise ValueError(f"folio size {size!r} must be a power of two from 4K to 2M")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"weight {weight!r} in {item!r} is not a number") from None
        if w < 0:
            raise ValueError(f"weight {weight!r} in {item!r} is negative")
        mix[order] = mix.get(order, 0.0) + w
    if not mix or sum(mix.values()) <= 0:
        raise ValueError(f"size mix {text!r} has no positive weight")
    return mix
