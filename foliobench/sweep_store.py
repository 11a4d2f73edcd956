"""A sweep's results on disk: a Parquet dataset partitioned by workload, one file per cell.

    DIR/_sweep.json                       the spec, the cells and the command (the manifest)
    DIR/0-schema.parquet                  no rows: every column of the dataset, with its type
    DIR/workload=NAME/CELLKEY.parquet     one finished cell: a row per repeat

Each file is written to a dot-named temporary and renamed, so a killed sweep leaves only whole
cells. pyarrow takes a dataset's schema from its first file in path order; 0-schema.parquet sorts
first and holds the union of every cell's columns, so `pd.read_parquet(DIR)` reads every column
of every cell (names starting with "_" or "." are not part of the dataset).
"""
import datetime
import json
import os
import pathlib
import urllib.parse

import pyarrow as pa
import pyarrow.parquet as pq

from .sweep_spec import Cell, parse_spec

MANIFEST = "_sweep.json"
SCHEMA_FILE = "0-schema.parquet"
PARTITION = "workload"


def new_sweep_dir(root):
    """A fresh results/sweeps/<UTC timestamp>/ directory (a suffix when two start together)."""
    root = pathlib.Path(root)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        path = root / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise OSError(f"cannot create a sweep directory under {root}")


def _atomic_write(path, write):
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _table(rows):
    """An Arrow table from row dicts; a column that is None everywhere stays a null column and
    takes its type from the other cells' files."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in rows])


class SweepStore:
    """The directory of one sweep: its manifest, its schema file and its cells' files."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        schema_path = self.path / SCHEMA_FILE
        self.schema = pq.read_schema(schema_path) if schema_path.exists() else pa.schema([])

    @classmethod
    def create(cls, root, spec, argv=(), spec_text=None):
        path = new_sweep_dir(root)
        store = cls(path)
        doc = {"spec": spec.to_dict(), "argv": list(argv),
               "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
               "cells": len(spec.cells())}
        _atomic_write(path / MANIFEST, lambda p: p.write_text(json.dumps(doc, indent=1) + "\n"))
        if spec_text is not None:
            _atomic_write(path / "_spec.toml", lambda p: p.write_text(spec_text))
        return store

    def manifest(self):
        try:
            return json.loads((self.path / MANIFEST).read_text())
        except FileNotFoundError:
            raise ValueError(f"{str(self.path)!r} is not a sweep directory (no {MANIFEST})") \
                from None

    def spec(self):
        doc = dict(self.manifest()["spec"])
        return parse_spec(doc)

    def cell_path(self, cell):
        # URI-encoded as pyarrow's hive partitioning decodes it: a trace:FILE workload's name
        # holds a path, and its "/" must not become a directory
        value = urllib.parse.quote(str(cell.workload), safe="")
        return self.path / f"{PARTITION}={value}" / f"{cell.key}.parquet"

    def done_keys(self):
        """The keys of the cells with a file (finished, with figures or with an error)."""
        return {p.stem for p in self.path.glob(f"{PARTITION}=*/*.parquet")
                if not p.name.startswith(".")}

    def missing(self, cells):
        done = self.done_keys()
        return [c for c in cells if c.key not in done]

    def failed_keys(self):
        """The keys of the finished cells that have an error in a row."""
        out = set()
        for p in self.path.glob(f"{PARTITION}=*/*.parquet"):
            if p.name.startswith("."):
                continue
            errors = pq.read_table(p, columns=["error"]).column("error")
            if errors.null_count < len(errors):
                out.add(p.stem)
        return out

    def todo(self, cells):
        """The cells to run: those without a file, and those whose file records an error
        (a resumed sweep tries its failed cells again)."""
        done, failed = self.done_keys(), self.failed_keys()
        return [c for c in cells if c.key not in done or c.key in failed]

    def write_cell(self, cell: Cell, rows):
        """Write one finished cell's rows (atomically); widen the schema file first when the
        cell brings a column or a type the dataset has not seen."""
        table = _table([{k: v for k, v in row.items() if k != PARTITION} for row in rows])
        merged = pa.unify_schemas([self.schema, table.schema], promote_options="permissive")
        if not merged.equals(self.schema):
            _atomic_write(self.path / SCHEMA_FILE,
                          lambda p: pq.write_table(merged.empty_table(), p))
            self.schema = merged
        target = self.cell_path(cell)
        target.parent.mkdir(exist_ok=True)
        _atomic_write(target, lambda p: pq.write_table(table, p))
        return target

    def clean_temporaries(self):
        """Remove what a killed sweep left half-written."""
        for p in self.path.rglob(".tmp-*"):
            p.unlink(missing_ok=True)
