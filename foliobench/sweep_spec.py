"""A sweep's grid: the spec (a TOML file or --grid flags), its validation and its cells.

A spec names lists of workloads, strategies, kernel profiles, machine sizes (mem) and seeds, and
any workload parameter as a list or a range; the grid is their cartesian product and each point
of it is one cell (one task). `repeats` runs each cell again with the same seed (the figures are
identical; the wall-clock ones vary). Everything is checked before any cell runs: a problem is a
ValueError naming the value and what is allowed.

    workloads = ["highalloc"]
    strategies = ["legacy", "split", "folio"]
    profiles = ["linux-6.1", "linux-6.18"]
    mem = ["1G"]
    seeds = {start = 0, count = 5}
    # or, instead of mem: snapshots = ["fleet/a.npz", "fleet/b.npz"] (each cell on the digital
    # twin of that snapshot, Machine.from_snapshot; the machine has the snapshot's size)
    [params]
    load = {start = 0.1, stop = 0.9, step = 0.2}
"""
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os

import simcore
from simcore import profiles as simprofiles
from simcore.machine import MAX_MEM, MIN_MEM
from simcore.mmzone import PAGE_DTYPE, PAGEBLOCK_NR_PAGES
from simcore.strategies import get_strategy
from simcore.units import format_size, parse_size
from workloads.base import DEFAULT_MEM, QUICK_MEM, get_workload, resolve_params

# spec key -> the names --grid also accepts for it
AXES = {"workloads": ("workload",), "strategies": ("strategy",), "profiles": ("profile",),
        "mem": ("mems",), "seeds": ("seed",), "snapshots": ("snapshot",)}
SCALARS = ("repeats", "quick")
MAX_CELLS = 1_000_000

# Bytes a cell needs per simulated page, from how simcore sizes its arrays: mem_map (one
# PAGE_DTYPE record, 12 bytes, per pfn), the folio handle table (int64 per folio, grown by
# doubling: up to two slots per page when every folio is order 0), and the workload's own int64
# handle arrays with their temporaries (concatenations, masks, pageblock_map()'s per-page
# counts): eight int64 per page in all. Measured peaks over the worker's own footprint at 16G
# were 44-71 bytes per page (highalloc 174 MB, cma-reservations 285 MB; docs/sweeps.md).
# CELL_BASE_BYTES is a worker process with numpy, numba's compiled simcore, pandas and
# distributed loaded: 271 MB measured after a 64M cell with numba's cache warm (2026-12-02),
# but a worker that finds a function not yet cached compiles it and peaks well above that
# (the nanny restarted 400 MB workers in a fresh clone's test run), so the base leaves room.
BYTES_PER_PAGE = PAGE_DTYPE.itemsize + 8 * 8
# A twin cell also decodes its snapshot: kpageflags (uint64) and kpagecount (uint16) per PFN,
# and the run-length decoding's int64 repeat counts
SNAPSHOT_BYTES_PER_PAGE = 8 + 2 + 8
CELL_BASE_BYTES = 640 << 20
PAGE_SIZE = 4096


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of the grid. `params` is a tuple of (name, value) pairs, sorted by name."""
    workload: str
    strategy: str
    profile: str
    mem: str
    seed: int
    params: tuple = ()
    quick: bool = False
    snapshot: str = ""          # a snapshot file: the cell runs on its twin ("" for none)

    def coords(self):
        """The grid coordinates as columns (parameters as param_<name>, like `run`'s rows;
        snapshot only in a sweep over snapshots)."""
        out = {"workload": self.workload, "strategy": self.strategy, "profile": self.profile,
               "mem": self.mem, "seed": self.seed}
        if self.snapshot:
            out["snapshot"] = self.snapshot
        out.update({f"param_{k}": v for k, v in self.params})
        return out

    @property
    def key(self):
        """A stable name for the cell (its file name): a hash of its coordinates (the snapshot
        only when there is one, so the keys of sweeps without snapshots stay as they were)."""
        coords = [self.workload, self.strategy, self.profile, self.mem, self.seed,
                  [list(p) for p in self.params], self.quick]
        if self.snapshot:
            coords.append(self.snapshot)
        text = json.dumps(coords, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{**d, "params": tuple(tuple(p) for p in d["params"])})


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    workloads: tuple
    strategies: tuple
    profiles: tuple
    mem: tuple
    seeds: tuple
    params: tuple = ()          # ((name, (values...)), ...)
    repeats: int = 1
    quick: bool = False
    snapshots: tuple = ()       # snapshot files: an axis in place of mem

    def machines(self):
        """[(mem, snapshot file or "")]: the mem axis, or each snapshot with its own size."""
        if self.snapshots:
            return [(snapshot_mem(path), path) for path in self.snapshots]
        return [(m, "") for m in self.mem]

    def cells(self):
        """Every cell of the grid, in a fixed order."""
        names = [n for n, _ in self.params]
        out = []
        for w, s, pr, (m, snap), seed in itertools.product(
                self.workloads, self.strategies, self.profiles, self.machines(), self.seeds):
            for values in itertools.product(*(v for _, v in self.params)):
                out.append(Cell(w, s, pr, m, seed, tuple(zip(names, values, strict=True)),
                                self.quick, snap))
        return out

    def swept(self):
        """The names of the axes with more than one value (parameters as param_<name>)."""
        axes = {"workload": self.workloads, "strategy": self.strategies,
                "profile": self.profiles, "seed": self.seeds}
        if self.snapshots:
            axes["snapshot"] = self.snapshots
        else:
            axes["mem"] = self.mem
        axes.update({f"param_{n}": v for n, v in self.params})
        return [name for name, values in axes.items() if len(values) > 1]

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["params"] = {n: list(v) for n, v in self.params}
        for key in AXES:
            d[key] = list(d[key])
        if self.snapshots:
            del d["mem"]            # the snapshots' own sizes
        else:
            del d["snapshots"]
        return d


def cell_bytes(cell):
    """Estimated peak memory of one cell's simulated machine, in bytes (without the worker's
    own CELL_BASE_BYTES); a twin also holds its decoded snapshot."""
    per_page = BYTES_PER_PAGE + (SNAPSHOT_BYTES_PER_PAGE if cell.snapshot else 0)
    return parse_size(cell.mem) // PAGE_SIZE * per_page


@functools.lru_cache(maxsize=256)
def snapshot_mem(path):
    """The machine size of a snapshot file ("64M"), from its header alone; ValueError naming
    the file when it is not a readable foliobench snapshot."""
    import zipfile

    import numpy as np

    from simcore import snapshot_file
    try:
        with np.load(path, allow_pickle=False) as npz:
            header = json.loads(npz["header"].tobytes().decode())
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ValueError(f"snapshot {path!r} is not a readable foliobench snapshot: {reason}") \
            from None
    nr = header.get("nr_pfns") if isinstance(header, dict) else None
    if (not isinstance(header, dict) or header.get("format") != snapshot_file.FORMAT
            or not isinstance(nr, int) or nr <= 0):
        raise ValueError(f"snapshot {path!r} is not a foliobench snapshot")
    return format_size(nr * PAGE_SIZE)


def _snapshots(values, doc):
    if "mem" in doc:
        raise ValueError("give mem or snapshots, not both: a twin has its snapshot's size")
    out = []
    for v in values:
        if not isinstance(v, str) or not v:
            raise ValueError(f"snapshot {v!r} is not a file name")
        path = os.path.abspath(v)          # workers may run in another directory
        if not os.path.isfile(path):
            raise ValueError(f"snapshot {v!r} is not a file")
        snapshot_mem(path)
        out.append(path)
    return out


def _values(name, raw):
    """A list of values from a TOML list, a scalar or a range table {start, stop, step|num} /
    {start, count} (integers)."""
    if isinstance(raw, dict):
        return _range(name, raw)
    values = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    if not values:
        raise ValueError(f"empty grid: {name!r} has no values")
    return values


def _range(name, table):
    unknown = set(table) - {"start", "stop", "step", "num", "count"}
    if unknown or "start" not in table:
        raise ValueError(f"range for {name!r} must be {{start, stop, step}}, {{start, stop, num}} "
                         f"or {{start, count}}; got {table!r}")
    start = table["start"]
    for key, v in table.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"range for {name!r}: {key} = {v!r} is not a number")
    if "count" in table:
        count = table["count"]
        if not isinstance(count, int) or count < 1 or not isinstance(start, int):
            raise ValueError(f"range for {name!r}: start and count must be integers, count >= 1")
        return list(range(start, start + count))
    if "stop" not in table or ("step" in table) == ("num" in table):
        raise ValueError(f"range for {name!r} needs stop and one of step or num; got {table!r}")
    stop = table["stop"]
    if "num" in table:
        num = table["num"]
        if not isinstance(num, int) or num < 1:
            raise ValueError(f"range for {name!r}: num = {num!r} must be an integer >= 1")
        if num == 1:
            return [start]
        values = [start + (stop - start) * i / (num - 1) for i in range(num)]
    else:
        step = table["step"]
        if step <= 0 or stop < start:
            raise ValueError(f"range for {name!r}: step must be > 0 and stop >= start")
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        if n > MAX_CELLS:
            raise ValueError(f"range for {name!r} has {n} values; at most {MAX_CELLS}")
        values = [start + i * step for i in range(n)]
    if all(isinstance(v, int) for v in (start, stop, table.get("step", 0))) and "num" not in table:
        return values
    return [round(v, 10) for v in values]     # 0.1 + 2 * 0.1 is 0.30000000000000004


def _names(name, values, check):
    for v in values:
        if not isinstance(v, str):
            raise ValueError(f"{name} value {v!r} is not a name")
        check(v)
    return values


def _mem(values):
    out = []
    for v in values:
        nbytes = parse_size(v, "mem")
        if not MIN_MEM <= nbytes <= MAX_MEM or nbytes % (PAGEBLOCK_NR_PAGES * PAGE_SIZE):
            raise ValueError(f"mem {v!r} must be a multiple of 2M between {format_size(MIN_MEM)} "
                             f"and {format_size(MAX_MEM)}")
        out.append(format_size(nbytes))
    return out


def _seeds(values):
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"seed {v!r} must be a non-negative integer")
    return values


def parse_spec(doc):
    """A validated SweepSpec from a dict (a parsed TOML file, or built from --grid flags)."""
    if not isinstance(doc, dict):
        raise ValueError("a sweep spec is a TOML table of keys")
    known = set(AXES) | set(SCALARS) | {"params"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ValueError(f"spec key {unknown[0]!r} is unknown; allowed: {', '.join(sorted(known))}"
                         f" (workload parameters go under [params])")
    quick = doc.get("quick", False)
    if not isinstance(quick, bool):
        raise ValueError(f"quick = {quick!r} must be true or false")
    repeats = doc.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats = {repeats!r} must be an integer >= 1")
    if "workloads" not in doc:
        raise ValueError("the spec names no workloads; add workloads = [...] "
                         "(see 'foliobench list')")
    workloads = _names("workload", _values("workloads", doc["workloads"]), get_workload)
    strategies = _names("strategy", _values("strategies", doc.get("strategies",
                                                                   simcore.strategies())),
                        get_strategy)
    profiles = _names("profile", _values("profiles", doc.get("profiles",
                                                             [simprofiles.newest().name])),
                      simprofiles.get_profile)
    snapshots = _snapshots(_values("snapshots", doc["snapshots"]), doc) \
        if "snapshots" in doc else []
    mem = [] if snapshots else _mem(_values("mem", doc.get("mem", QUICK_MEM if quick
                                                          else DEFAULT_MEM)))
    seeds = _seeds(_values("seeds", doc.get("seeds", [0])))
    raw_params = doc.get("params", {})
    if not isinstance(raw_params, dict):
        raise ValueError("[params] must be a table of parameter = values")
    params = []
    for name, raw in raw_params.items():
        values = _values(f"params.{name}", raw)
        for w in workloads:
            # every value through the workload's own check: unknown names and ranges
            values = [resolve_params(w, {name: v}, quick)[name] for v in values]
        params.append((name, tuple(dict.fromkeys(values))))
    spec = SweepSpec(tuple(dict.fromkeys(workloads)), tuple(dict.fromkeys(strategies)),
                     tuple(dict.fromkeys(profiles)), tuple(dict.fromkeys(mem)),
                     tuple(dict.fromkeys(seeds)), tuple(params), repeats, quick,
                     tuple(dict.fromkeys(snapshots)))
    total = math.prod(len(v) for v in (spec.workloads, spec.strategies, spec.profiles,
                                       spec.snapshots or spec.mem, spec.seeds)) \
        * math.prod(len(v) for _, v in spec.params)
    if total > MAX_CELLS:
        raise ValueError(f"the grid has {total} cells; at most {MAX_CELLS}")
    return spec


def load_spec(path):
    """A validated SweepSpec from a TOML file."""
    try:
        import tomllib
    except ModuleNotFoundError:          # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"cannot read spec {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"spec {str(path)!r} is not valid TOML: {exc}") from None
    return parse_spec(doc)


def _grid_value(text):
    """A --grid value: an int, a float, true/false, or else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def grid_doc(items, quick=False, repeats=1):
    """A spec dict from --grid NAME=V1,V2,... (or NAME=START:STOP:STEP, a range) flags.
    NAME is workload(s), strategy(-ies), profile(s), mem, seed(s), snapshot(s) or a workload
    parameter."""
    doc = {"quick": quick, "repeats": repeats}
    alias = {a: key for key, names in AXES.items() for a in (key,) + names}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise ValueError(f"--grid {item!r} must look like NAME=V1,V2,... or "
                             f"NAME=START:STOP:STEP")
        parts = [_grid_value(p) for p in text.split(":")]
        if len(parts) == 3 and all(isinstance(p, (int, float)) and not isinstance(p, bool)
                                   for p in parts):
            values = dict(zip(("start", "stop", "step"), parts, strict=True))
        else:
            values = [_grid_value(v) for v in text.split(",") if v.strip()]
            if not values:
                raise ValueError(f"empty grid: --grid {item!r} has no values")
        if name in alias:
            key = alias[name]
            if key in ("mem", "snapshots") and isinstance(values, list):
                values = [str(v) for v in values]
            if key in doc:
                raise ValueError(f"--grid {name} is given twice")
            doc[key] = values
        else:
            params = doc.setdefault("params", {})
            if name in params:
                raise ValueError(f"--grid {name} is given twice")
            params[name] = values
    return doc
