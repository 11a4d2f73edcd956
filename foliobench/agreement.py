"""Real kernels against the simulator: each measured matrix (the host's live kernel, a guest's)
beside the simulator profile of the same release, cell by cell.

    foliobench agreement results/guest/*/matrix/latest.json results/matrix/<live run>/matrix.json

A measured cell is one the real kernel gave a verdict for (not "untested"); it agrees when the
simulator's verdict is the same. Both pieces of evidence stay with every cell, and each kernel
gets "N of M measured cells agree". The profile is the newest simulator profile whose version is
at most the kernel's release (6.1.0-57-amd64 -> linux-6.1, 6.12.117+deb12 -> linux-6.12,
6.18.44 -> linux-6.18); the simulator runs the same probes at the same sizes and seed.
"""
import datetime as _dt
import json
import pathlib
import re

from foliobench.verdicts import UNTESTED
from simcore import profiles as simprofiles

from . import matrix as fmatrix

FORMAT = "foliobench-agreement/1"


def _version(text):
    match = re.match(r"(?:linux-)?(\d+)\.(\d+)", str(text))
    if not match:
        raise ValueError(f"kernel release {text!r} does not start with MAJOR.MINOR")
    return int(match.group(1)), int(match.group(2))


def profile_for(release):
    """The simulator profile for a kernel release: the newest at or below it."""
    want = _version(release)
    fitting = [(v, n) for n in simprofiles.profiles()
               if (v := _version(simprofiles.get_profile(n).version)) <= want]
    if not fitting:
        raise ValueError(f"no simulator profile at or below kernel {release}; profiles: "
                         f"{', '.join(simprofiles.profiles())}")
    return max(fitting)[1]


def load_measured(path):
    """The measured matrices of a saved matrix document (live or guest backends)."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "matrix.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist (expected a saved matrix.json)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable matrix document: {exc}") from None
    if doc.get("format") != fmatrix.FORMAT:
        raise ValueError(f"{path} is not a foliobench matrix ({fmatrix.FORMAT})")
    measured = [m for m in doc["matrices"] if m.get("backend") in ("live", "guest")]
    if not measured:
        raise ValueError(f"{path} holds only simulator matrices; give a live or guest one")
    for m in measured:
        m.setdefault("source", str(path))
    return measured


def agree(real, sim):
    """Cell by cell: {"kernel", "profile", "rows": [...], "measured", "agreeing"}."""
    rows, measured, agreeing = [], 0, 0
    sim_rows = {r["probe"]: r for r in sim["rows"]}
    for row in real["rows"]:
        srow = sim_rows.get(row["probe"])
        if srow is None:
            continue
        cells = {}
        for size, rcell in row["cells"].items():
            scell = srow["cells"].get(size)
            if scell is None:
                continue
            is_measured = rcell["verdict"] != UNTESTED
            same = rcell["verdict"] == scell["verdict"]
            measured += is_measured
            agreeing += is_measured and same
            cells[size] = {"measured": is_measured, "agree": same if is_measured else None,
                           "real": rcell["verdict"], "sim": scell["verdict"],
                           "real_evidence": fmatrix.evidence_text(rcell),
                           "sim_evidence": fmatrix.evidence_text(scell)}
        rows.append({"probe": row["probe"], "label": row["label"], "cells": cells})
    return {"kernel": real.get("kernel"), "label": real.get("label"),
            "source": real.get("source"), "profile": sim["profile"], "sizes": real["sizes"],
            "rows": rows, "measured": measured, "agreeing": agreeing}


def agreement(measured, seed=0):
    """The agreement document of measured matrices, each against its release's profile."""
    from workloads.matrix_probes import get_probe
    out = []
    for real in measured:
        profile = profile_for(real.get("kernel") or "")
        orders = [fmatrix.SIZE_ORDERS[s] for s in real["sizes"]]
        probes = [get_probe(r["probe"]) for r in real["rows"]]
        sim = fmatrix.sim_matrix(profile, orders, seed=real.get("seed", seed), probes=probes)
        out.append(agree(real, sim))
    return {"format": FORMAT, "created": _dt.datetime.now(_dt.timezone.utc)
            .isoformat(timespec="seconds"), "kernels": out,
            "measured": sum(k["measured"] for k in out),
            "agreeing": sum(k["agreeing"] for k in out)}


def _mark(cell):
    if not cell["measured"]:
        return "·"
    return "=" if cell["agree"] else "≠"


def render_markdown(doc):
    s = fmatrix.SYMBOLS
    out = [f"{doc['agreeing']} of {doc['measured']} measured cells agree (all kernels).", ""]
    for k in doc["kernels"]:
        out.append(f"### kernel {k['kernel']} vs simulator {k['profile']}: {k['agreeing']} of "
                   f"{k['measured']} measured cells agree\n")
        legend = ", ".join(f"{v} {n}" for n, v in s.items())
        out.append(f"Each cell: real/simulated verdict ({legend}), then = agree, ≠ disagree, "
                   f"· not measured on the real kernel. "
                   f"Source: `{k['source']}`.\n")
        out.append("| subsystem | " + " | ".join(k["sizes"]) + " |")
        out.append("|---|" + "---|" * len(k["sizes"]))
        disagreements = []
        for row in k["rows"]:
            cells = []
            for size in k["sizes"]:
                c = row["cells"].get(size)
                if c is None:
                    cells.append("")
                    continue
                cells.append(f"{s[c['real']]}/{s[c['sim']]} {_mark(c)}")
                if c["measured"] and not c["agree"]:
                    disagreements.append((row["label"], size, c))
            out.append(f"| {row['label']} | " + " | ".join(cells) + " |")
        if disagreements:
            out.append("\nDisagreements, with both pieces of evidence:\n")
            for label, size, c in disagreements:
                out.append(f"- **{label}, {size}**: real: {c['real_evidence']}  \n"
                           f"  simulator: {c['sim_evidence']}")
        out.append("")
    return "\n".join(out) + "\n"


def render_json(doc):
    from foliobench.results import _dumps
    return _dumps(doc)


RENDERERS = {"md": render_markdown, "json": render_json}


def add_parser(sub):
    p = sub.add_parser("agreement", help="measured matrices (live, guests) against the "
                                         "simulator profile of the same release, cell by cell")
    p.add_argument("matrices", nargs="+", metavar="MATRIX",
                   help="saved matrix.json files (or their directories) of live or guest runs")
    p.add_argument("--format", choices=tuple(RENDERERS), default="md")
    p.add_argument("-o", "--out", help="results root (default: the repository's results/)")
    p.add_argument("--no-save", action="store_true", help="print only, write nothing")
    p.set_defaults(func=main)
    return p


def main(args):
    import sys

    from foliobench import results
    from foliobench.cli import REPO_RESULTS
    measured = [m for path in args.matrices for m in load_measured(path)]
    doc = agreement(measured)
    print(RENDERERS[args.format](doc), end="")
    if not args.no_save:
        root = pathlib.Path(args.out) if args.out else REPO_RESULTS
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        out = root / "agreement" / stamp
        for fmt, render in RENDERERS.items():
            results.write_text(out, f"agreement.{fmt}", render(doc))
        print(f"saved: {out}", file=sys.stderr)
    return 0
