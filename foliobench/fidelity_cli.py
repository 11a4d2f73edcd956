"""`foliobench fidelity`: paired live/twin experiments (see docs/fidelity.md).

    foliobench fidelity                      # root: run the experiments live, replay, report
    foliobench fidelity --record DIR         # root: the same, the corpus kept in DIR
    foliobench fidelity --corpus DIR         # no root: replay a recorded corpus on the twin
    foliobench fidelity --corpus DIR --trace # ... and compare the traced runs' tracepoints
    foliobench fidelity --record DIR --append --trace --repeat 1
                                             # root: add (or redo) one traced run of each
"""
import datetime as _dt
import os
import pathlib
import shutil
import sys

from . import fidelity_corpus, fidelity_report, results

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO / "fidelity" / "corpus"
RESULTS_ROOT = pathlib.Path(os.environ.get("FOLIOBENCH_RESULTS", REPO / "results"))


def _progress(text):
    print(text, file=sys.stderr, flush=True)


def _write_outputs(out_root, comparison):
    """results/fidelity/<stamp>/ with fidelity.md/.html/.json/.png, staged in a hidden directory
    and renamed into place."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    final = pathlib.Path(out_root) / "fidelity" / stamp
    n = 1
    while final.exists():
        n += 1
        final = final.with_name(f"{stamp}-{n}")
    staging = final.with_name(f".{final.name}.{os.getpid()}.partial")
    try:
        staging.mkdir(parents=True)
        results.write_bytes(staging, "fidelity.png", fidelity_report.picture(comparison))
        results.write_text(staging, "fidelity.json", fidelity_report.to_json(comparison))
        results.write_text(staging, "fidelity.md", fidelity_report.markdown(comparison))
        results.write_text(staging, "fidelity.html",
                           fidelity_report.html_page(comparison, "fidelity.png"))
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _fidelity(args):
    from . import fidelity_live
    if args.corpus and args.record:
        raise ValueError("--corpus (replay) and --record (live) cannot be combined")
    if args.append and not args.record:
        raise ValueError("--append adds runs to the corpus of --record DIR; give --record")
    if args.repeat < 1:
        raise ValueError(f"--repeat {args.repeat} must be at least 1")
    if args.runs is not None and args.runs < 1:
        raise ValueError(f"--runs {args.runs} must be at least 1")
    if not args.no_save:
        results.check_output_dir(args.out or RESULTS_ROOT, "--out")
    if args.corpus:
        manifest = fidelity_corpus.load(args.corpus, args.experiment)
    else:
        names = fidelity_live.check_experiments(args.experiment)
        if os.geteuid() != 0:
            raise ValueError(f"foliobench fidelity runs experiments on the live kernel and "
                             f"needs root (running as uid {os.geteuid()}); replay a recorded "
                             f"corpus with --corpus DIR")
        if args.record:
            target = pathlib.Path(args.record)
            if args.append:
                fidelity_corpus.load(target)
            elif (target / fidelity_corpus.MANIFEST).exists() and not args.force:
                raise ValueError(f"--record {args.record!r} already holds a corpus; add "
                                 f"--force to record over it, or --append to add runs")
            results.check_output_dir(target, "--record")
        else:
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            target = pathlib.Path(args.out or RESULTS_ROOT) / "fidelity" / f"corpus-{stamp}"
        fidelity_live.record(target, names, args.repeat, args.mem_cap, progress=_progress,
                             trace=args.trace, append=args.append)
        manifest = fidelity_corpus.load(target, args.experiment)
        print(f"fidelity: corpus recorded in {target}")
    from . import fidelity_twin
    comparison = fidelity_twin.replay_corpus(
        manifest, args.strategy or [None], args.profile, args.runs,
        progress=None if args.quiet else _progress, trace=args.trace)
    print(fidelity_report.table(comparison))
    if not args.no_save:
        print(f"written: {_write_outputs(args.out or RESULTS_ROOT, comparison)}")
    return 0


def add_parser(sub):
    from .fidelity_live import DEFAULT_CAP, EXPERIMENTS
    p = sub.add_parser("fidelity", help="paired experiments on the live kernel and its digital "
                                        "twin; or replay a recorded corpus (--corpus)")
    p.add_argument("--corpus", metavar="DIR",
                   help="replay this recorded corpus on the twin (no root), e.g. "
                        "fidelity/corpus/<kernel-release>")
    p.add_argument("--record", metavar="DIR",
                   help="root: run the experiments live and keep the corpus in DIR")
    p.add_argument("--force", action="store_true", help="--record over an existing corpus")
    p.add_argument("--append", action="store_true",
                   help="--record: add the runs to the corpus in DIR (numbered after its own); "
                        "with --trace its traced runs are recorded again")
    p.add_argument("--trace", action="store_true",
                   help="live: record each action's compaction, migration and page-allocator "
                        "tracepoints with the run; replay: compare them with the twin's, run "
                        "by run, for every traced run")
    p.add_argument("--experiment", action="append",
                   help=f"only this experiment (repeatable): {', '.join(EXPERIMENTS)}")
    p.add_argument("--repeat", type=int, default=3,
                   help="live runs per experiment (default 3)")
    p.add_argument("--runs", type=int, default=None,
                   help="twin: replay only the first N runs of each experiment (default all)")
    p.add_argument("--mem-cap", default=DEFAULT_CAP,
                   help="live memory cap (default %(default)s of MemAvailable)")
    p.add_argument("--strategy", action="append",
                   help="twin compaction strategy (repeatable; default the profile's)")
    p.add_argument("--profile", help="twin kernel profile (default: the one matching the "
                                     "corpus's kernel release)")
    p.add_argument("--out", help="results root (default the repository's results/)")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    p.add_argument("--quiet", action="store_true", help="no per-run progress on stderr")
    p.set_defaults(func=_fidelity)
