"""Saving and loading runs: `results/runs/<UTC timestamp>-<workload>/`.

A run directory holds the tidy results table (`results.csv` and `results.json`) and any extra
artefacts (vmstat deltas, buddyinfo before and after, pictures).

Atomicity, file by file: every file is written to a temporary file in the run directory
(`.<name>.<random>.tmp`), flushed to disk and renamed over its final name with os.replace(), so a
reader never sees half a file. The run directory is created by the first write, not by
new_run_dir(). `results.json` is written last and marks a complete run: load_run() refuses a
directory without it. When a write fails, what that call wrote is removed (the temporary files,
and in write_table() a `results.csv` it had already put in place), and so is the run directory if
that call created it and it is empty: a failed run leaves nothing behind.

NaN and +-inf become null in JSON (strict JSON has no NaN); numpy scalars and arrays, pandas
timestamps, datetimes and paths are converted to plain JSON values.
"""
import datetime as _dt
import json
import math
import os
import pathlib
import platform
import re
import shutil
import tempfile
import time

import numpy as np
import pandas as pd

import simcore
from livekernel.journal import pid_alive
from workloads.base import git_commit  # noqa: F401  (part of this module's API)

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
FORMAT = "foliobench-results/1"
FORMATS = ("table", "csv", "json")

_REPO_DIR = pathlib.Path(__file__).resolve().parent.parent
_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_STANDARD_KEYS = ("format", "foliobench_version", "git_commit", "python", "created")


# --- run directories --------------------------------------------------------------------------

def new_run_dir(out_root, workload, now=None):
    """`<out_root>/runs/<YYYYmmddTHHMMSSZ>-<workload>/`, made unique with -2, -3... when taken.

    `now` is a datetime (naive means UTC; default: the current time). The directory is not
    created here: the first write_*() creates it."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(workload)).strip("._")
    if not name:
        raise ValueError(f"workload name {workload!r} is empty once reduced to a file name")
    if now is None:
        now = _dt.datetime.now(_dt.timezone.utc)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=_dt.timezone.utc)
    stamp = now.astimezone(_dt.timezone.utc).strftime(_TIMESTAMP)
    runs = pathlib.Path(out_root) / "runs"
    base = f"{stamp}-{name}"
    candidate, n = runs / base, 1
    while candidate.exists():
        n += 1
        candidate = runs / f"{base}-{n}"
    return candidate


# --- whole runs: staged, then published with one rename ------------------------------------

PARTIAL_SUFFIX = ".partial"
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.partial$")
_RUN_NAME = re.compile(r"^\d{8}T\d{6}Z-")
LEFTOVER_AGE_S = 600


def staging_dir(run_dir):
    """The hidden sibling of run_dir that save_run() writes into: `.<name>.<pid>.partial`."""
    run_dir = pathlib.Path(run_dir)
    return run_dir.with_name(f".{run_dir.name}.{os.getpid()}{PARTIAL_SUFFIX}")


def save_run(run_dir, write):
    """Write a whole run atomically: write(staging) fills a hidden staging directory (it must
    end with write_table()), which is then renamed to run_dir (or run_dir-2, ... when taken).
    Returns the final directory. When write() fails the staging directory is removed; when the
    process is killed it stays hidden, and cleanup_leftovers() removes it later: a run directory
    never exists without its results.json."""
    run_dir = pathlib.Path(run_dir)
    staging = staging_dir(run_dir)
    try:
        write(staging)
        if not (staging / RESULTS_JSON).is_file():
            raise ValueError(f"a run needs its {RESULTS_JSON}: write_table() was not called")
        final, n = run_dir, 1
        while True:
            try:
                if final.exists():
                    raise FileExistsError(final)
                os.rename(staging, final)
                break
            except FileExistsError:
                n += 1
                final = run_dir.with_name(f"{run_dir.name}-{n}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(final.parent)
    return final


def cleanup_leftovers(runs_dir, now=None):
    """Remove what killed runs left in `runs_dir` (`<out>/runs`): staging directories whose
    process is gone, and run directories without results.json that nothing has touched for
    LEFTOVER_AGE_S seconds (left by versions before save_run()). Returns the removed paths."""
    runs_dir = pathlib.Path(runs_dir)
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(runs_dir.iterdir())
    except OSError:
        return removed
    for path in entries:
        if not path.is_dir() or path.is_symlink():
            continue
        partial = _PARTIAL.match(path.name)
        if partial:
            stale = not pid_alive(int(partial["pid"]))
        else:
            stale = (_RUN_NAME.match(path.name) is not None
                     and not (path / RESULTS_JSON).exists()
                     and now - path.stat().st_mtime > LEFTOVER_AGE_S)
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


# --- JSON conversion --------------------------------------------------------------------------

def _jsonable(obj):
    """obj as plain JSON values: NaN/inf -> None, numpy -> Python, dict keys -> str."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, int):
        return obj
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return _jsonable(obj.to_dict(orient="records"))
    if isinstance(obj, pd.Series):
        return _jsonable(obj.to_dict())
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, (_dt.datetime, _dt.date, pd.Timestamp)):
        return obj.isoformat()
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    try:   # other scalars pandas knows as missing (e.g. decimal NaN)
        if pd.isna(obj):
            return None
    except (TypeError, ValueError):
        pass
    raise TypeError(f"cannot write {type(obj).__name__} {obj!r} as JSON")


def _dumps(obj):
    return json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n"


# --- atomic writes ----------------------------------------------------------------------------

def _check_name(name):
    name = str(name)
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"artefact name {name!r} must be a plain file name (no directories, "
                         "not hidden)")
    return name


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_output_dir(path, option):
    """ValueError (naming `option`) unless `path` is a directory, or one mkdir -p can make, that
    this process can write: checked before a long (or live) run, not after it."""
    path = pathlib.Path(path).absolute()
    probe = path
    while not probe.exists():
        if probe.is_symlink() or probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{option} {str(path)!r}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {str(path)!r}: {probe} is not writable")


def _ensure_dir(run_dir):
    """Create run_dir (and parents); True when this call created it."""
    try:
        run_dir.mkdir(parents=True)
        return True
    except FileExistsError:
        if not run_dir.is_dir():
            raise NotADirectoryError(f"{run_dir} exists and is not a directory") from None
        return False


def file_mode():
    """The mode a plain open() would give a new file (0666 less the umask); mkstemp's 0600
    would otherwise survive the rename."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _temp_file(run_dir, name, data):
    """Write data to a temporary file in run_dir, flushed to disk; return its path."""
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _rmdir_if_empty(path):
    try:
        path.rmdir()
    except OSError:
        pass


def _write_files(run_dir, files):
    """Write {name: bytes} into run_dir atomically, in order; on failure undo this call."""
    run_dir = pathlib.Path(run_dir)
    created = _ensure_dir(run_dir)
    temps, placed = [], []
    try:
        for name, data in files.items():
            temps.append((_temp_file(run_dir, name, data), run_dir / name))
        for tmp, final in temps:
            existed = final.exists()
            os.replace(tmp, final)
            if not existed:
                placed.append(final)
        _fsync_dir(run_dir)
    except BaseException:
        for tmp, _ in temps:
            _unlink(tmp)
        for final in placed:
            _unlink(final)
        if created:
            _rmdir_if_empty(run_dir)
        raise
    return [final for _, final in temps]


# --- metadata ---------------------------------------------------------------------------------

def _metadata(extra=None, now=None):
    now = now or _dt.datetime.now(_dt.timezone.utc)
    meta = {
        "format": FORMAT,
        "foliobench_version": simcore.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "created": now.astimezone(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    for key, value in (extra or {}).items():
        if key in meta:
            raise ValueError(f"metadata key {key!r} is reserved (set by foliobench)")
        meta[str(key)] = value
    return meta


# --- the results table ------------------------------------------------------------------------

def write_table(run_dir, df, metadata=None):
    """Write `results.csv` and `results.json` into run_dir, atomically; return the run dir.

    results.json is {"metadata": {format, foliobench_version, git_commit, python, created, and
    the keys of `metadata`}, "schema": {"columns": [...], "dtypes": {...}}, "records": [...]}.
    Everything is serialised before anything touches the disk."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"write_table needs a pandas DataFrame, not {type(df).__name__}")
    if not df.columns.is_unique:
        raise ValueError(f"duplicate column names: {sorted(df.columns[df.columns.duplicated()])}")
    df = df.reset_index(drop=True)
    columns = [str(c) for c in df.columns]
    df.columns = columns
    doc = {
        "metadata": _metadata(metadata),
        "schema": {"columns": columns, "dtypes": {c: str(df[c].dtype) for c in columns}},
        "records": df.to_dict(orient="records"),
    }
    files = {RESULTS_CSV: df.to_csv(index=False).encode(),   # results.json last: the marker
             RESULTS_JSON: _dumps(doc).encode()}
    _write_files(run_dir, files)
    return pathlib.Path(run_dir)


def write_json(run_dir, name, obj):
    """Write obj as JSON to run_dir/name (".json" added when name has no suffix), atomically.
    Returns the path."""
    name = _check_name(name)
    if not pathlib.PurePath(name).suffix:
        name += ".json"
    _reserved(name)
    return _write_files(run_dir, {name: _dumps(obj).encode()})[0]


def write_text(run_dir, name, text):
    """Write text to run_dir/name, atomically. Returns the path."""
    name = _check_name(name)
    _reserved(name)
    if not isinstance(text, str):
        raise TypeError(f"write_text needs a str, not {type(text).__name__}")
    return _write_files(run_dir, {name: text.encode()})[0]


def write_bytes(run_dir, name, data):
    """Write bytes to run_dir/name, atomically. Returns the path."""
    name = _check_name(name)
    _reserved(name)
    return _write_files(run_dir, {name: bytes(data)})[0]


def _reserved(name):
    if name in (RESULTS_CSV, RESULTS_JSON):
        raise ValueError(f"{name} is the results table: write it with write_table()")


def _read_doc(json_path):
    expected = ("expected a foliobench run: a directory holding results.json (and results.csv), "
                "or one of those two files")
    try:
        doc = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{json_path.parent} is not a foliobench run: no {RESULTS_JSON} "
                         f"({expected})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{json_path} is not a foliobench results file: {exc} "
                         f"({expected})") from None
    if (not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict)
            or doc["metadata"].get("format") != FORMAT or not isinstance(doc.get("records"), list)):
        raise ValueError(f"{json_path} is not a foliobench results file: expected a JSON object "
                         f"with \"metadata\" (format {FORMAT!r}) and \"records\"")
    return doc


def _restore_dtypes(df, dtypes):
    for col, dtype in dtypes.items():
        if col not in df.columns:
            continue
        try:
            dtype = pd.api.types.pandas_dtype(dtype)
        except TypeError:
            continue
        try:
            if dtype.kind == "f":
                df[col] = pd.to_numeric(df[col], errors="coerce").astype(dtype)
            elif dtype.kind in "iub" and not df[col].isna().any():
                df[col] = df[col].astype(dtype)
            elif dtype.kind == "M":
                df[col] = pd.to_datetime(df[col])
        except (TypeError, ValueError):
            pass   # keep what pandas read; dtypes may widen
    return df


def load_run(path):
    """(DataFrame, metadata) of a run: path is the run directory, its results.json or its
    results.csv (the table is then read from the CSV, the metadata from results.json beside it).
    ValueError when path is not a foliobench run."""
    path = pathlib.Path(path)
    if path.is_dir():
        json_path, csv_path = path / RESULTS_JSON, None
    elif path.name == RESULTS_JSON:
        json_path, csv_path = path, None
    elif path.name == RESULTS_CSV:
        json_path, csv_path = path.with_name(RESULTS_JSON), path
    elif not path.exists():
        raise ValueError(f"{path} does not exist (expected a foliobench run directory, or its "
                         f"{RESULTS_JSON} or {RESULTS_CSV})")
    else:
        raise ValueError(f"{path} is not a foliobench run: expected a run directory, or its "
                         f"{RESULTS_JSON} or {RESULTS_CSV}")
    if csv_path is not None and not csv_path.exists():
        raise ValueError(f"{csv_path} does not exist (expected a foliobench run directory, or "
                         f"its {RESULTS_JSON} or {RESULTS_CSV})")
    doc = _read_doc(json_path)
    schema = doc.get("schema") or {}
    columns = schema.get("columns")
    if csv_path is None:
        df = pd.DataFrame.from_records(doc["records"], columns=columns)
    else:
        df = _read_csv_checked(csv_path, columns, len(doc["records"]))
    df = _restore_dtypes(df, schema.get("dtypes") or {})
    return df, doc["metadata"]


def _read_csv_checked(csv_path, columns, nrows):
    """results.csv as a DataFrame, refused (ValueError, one line) unless it is whole: ends with
    a newline and has the columns and the number of rows results.json records."""
    try:
        raw = csv_path.read_bytes()
        df = pd.read_csv(csv_path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{csv_path} is not a readable results table: "
                         f"{str(exc).splitlines()[0] if str(exc) else exc}") from None
    problem = None
    if raw and not raw.endswith(b"\n"):
        problem = "it does not end with a newline"
    elif columns is not None and [str(c) for c in df.columns] != list(columns):
        problem = f"its columns differ from the {len(columns)} of {RESULTS_JSON}"
    elif len(df) != nrows:
        problem = f"it has {len(df)} rows, {RESULTS_JSON} records {nrows}"
    if problem:
        raise ValueError(f"{csv_path} is truncated or damaged ({problem}); {RESULTS_JSON} beside "
                         f"it holds the whole table")
    return df


# --- printing ---------------------------------------------------------------------------------

def _sig3(x):
    if x is None or pd.isna(x):
        return "-"
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x.is_integer() and abs(x) < 2 ** 53:
        return str(int(x))          # a counter (or a mean of equal counters) stays exact
    r = float(f"{x:.3g}")
    if 1e3 <= abs(r) < 1e9:
        return f"{r:.0f}"
    return f"{r:.3g}"


def format_table(df, fmt):
    """The table as text: "table" (aligned, floats to 3 significant digits unless whole numbers,
    which print exactly; missing as "-"),
    "csv", or "json" (records, NaN as null)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}: expected one of "
                         + ", ".join(repr(f) for f in FORMATS))
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return _dumps(df.to_dict(orient="records"))
    if df.empty and len(df.columns) == 0:
        return "(no results)\n"
    shown = pd.DataFrame(index=df.index)
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_float_dtype(s.dtype):
            shown[str(col)] = s.map(_sig3)
        else:
            shown[str(col)] = s.map(lambda v: "-" if _missing(v) else
                                    _sig3(v) if isinstance(v, float) else str(v))
    return shown.to_string(index=False) + "\n"


def _missing(v):
    try:
        return v is None or bool(pd.isna(v))
    except (TypeError, ValueError):
        return False
