"""asv history over the last N commits of a branch, then `asv publish` (the site and the
regressions feed). Run through tools/history.

    tools/history [N] [REGEX]          # default: 5 commits, the deterministic Outcome benchmarks
    tools/history 10 --envs            # asv-built virtualenvs, one per commit (slow, faithful)

Default mode (cheap enough for CI): every commit is exported with `git archive` into one fixed
scratch directory and run by `asv run --python=same --quick --set-commit-hash <sha>` in the
repository's .venv, with that commit's benchmarks/, simcore/ and workloads/ first on the import
path (asv passes ASV_PYTHONPATH on as PYTHONPATH; the editable install's finder comes after it).
The numba cache is kept per simcore source hash (the key simcore itself uses), so commits that
did not touch simcore share one compilation, and the working tree's cache seeds the commit whose
simcore matches it. What differs from --envs: the dependencies are the .venv's, not the ones
each commit declares, and each commit runs its own benchmarks/ (asv's virtualenv mode runs the
working tree's benchmarks against every commit's build).

Results land in asv's results_dir (results/asv) under their own environment
(FOLIOBENCH_SOURCE=commit), apart from tools/bench's working-tree results. The site, built from
the committed code's results only, lands in html_dir (results/html) with the regressions feed
(regressions.json, regressions.xml): the default benchmarks are exact, so every step in it is a
change of behaviour, not noise (asv.conf.json sets their threshold to 0 and leaves the timings
out of the feed).
"""
import argparse
import collections
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
VENDOR = REPO / "tools" / "asv-www"
# asv's index.html loads its libraries from CDNs; the site is meant to work offline, so they are
# served from copies in tools/asv-www (see its README): CDN file name -> our file
VENDORED = {
    "jquery-3.3.1.min.js": "jquery-3.3.1.min.js",
    "jquery.flot.min.js": "jquery.flot.js",
    "jquery.flot.time.min.js": "jquery.flot.time.js",
    "jquery.flot.selection.min.js": "jquery.flot.selection.js",
    "jquery.flot.categories.min.js": "jquery.flot.categories.js",
    "jquery.flot.orderBars.js": "jquery.flot.orderBars.js",
    "stupidtable.min.js": "stupidtable.min.js",
    "md5.min.js": "md5.min.js",
    "bootstrap.min.js": "bootstrap.min.js",
    "bootstrap.min.css": "bootstrap.min.css",
}
EXTERNAL_TAG = re.compile(r'<(script|link)\b[^>]*?\b(?:src|href)="(https?://[^"]+)"[^>]*>')
DEFAULT_REGEX = "Outcome"
FULL_MATRIX = "full.html"    # foliobench.matrix.FULL_NAME: the last full default matrix
BACK_LINK = '<p id="history-back"><a href="index.html">&larr; back to the history site</a></p>'
NO_REGRESSIONS = ('<p id="no-regressions">No regressions: no commit in this history made a '
                  'tracked value worse.</p>')
KEEP_CACHES = 16            # numba caches (simcore versions) kept in WORKDIR/numba
# mtime given to a checkout's simcore sources when no live tree shares them: numba's cache index
# is keyed on each source's (mtime, size), so it must be the same on every export
FIXED_MTIME_NS = 946684800 * 10**9


def _git(repo, *args, check=True):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=check).stdout.strip()


def simcore_hash(simcore_dir):
    """The 16-hex-digit source hash simcore keys its numba cache on (simcore._numba_cache_dir)."""
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(simcore_dir).glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def last_commits(repo, branch, n):
    """The last `n` first-parent commits of `branch`, oldest first, and a note when fewer."""
    if subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet",
                       f"refs/heads/{branch}"], capture_output=True, check=False).returncode:
        raise ValueError(f"no branch {branch!r} in {repo} (asv.conf.json branches); "
                         f"create it, e.g. git branch {branch} HEAD")
    commits = _git(repo, "rev-list", "--first-parent", f"--max-count={n}", branch).split()
    note = None
    if len(commits) < n:
        shallow = _git(repo, "rev-parse", "--is-shallow-repository") == "true"
        note = (f"history: only {len(commits)} commit(s) on {branch}, {n} asked"
                + (" (shallow clone: git fetch --unshallow gets the rest)" if shallow else ""))
    return commits[::-1], note


def asv_config(repo, workdir, benchmark_dir, exported=False):
    """Our asv.conf.json (its regression settings go with this tool) with absolute paths into
    `repo`, written into `workdir`. `exported`: results are filed under their own environment
    (FOLIOBENCH_SOURCE=commit in its name, a selector on the site), apart from tools/bench's,
    which share the interpreter but measure the working tree, uncommitted edits included."""
    conf = json.loads((REPO / "asv.conf.json").read_text())
    if exported:
        conf["matrix"] = {"env_nobuild": {"FOLIOBENCH_SOURCE": ["commit"]}}
    conf["repo"] = str(repo)
    conf["benchmark_dir"] = str(benchmark_dir)
    for key in ("results_dir", "html_dir", "env_dir"):
        conf[key] = str((repo / conf.get(key, f".asv/{key}")).resolve())
    path = workdir / "asv.conf.json"
    path.write_text(json.dumps(conf, indent=1) + "\n")
    return path, conf


def export(repo, commit, dest):
    """The tree of `commit` into `dest` (emptied first), as git archive writes it."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tempfile.TemporaryFile() as tar:
        subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit], stdout=tar,
                       check=True)
        tar.seek(0)
        with tarfile.open(fileobj=tar) as tf:
            tf.extractall(dest, filter="data")


def _numba_subdir(py_dir):
    """The directory numba keeps a module's cache in below NUMBA_CACHE_DIR (it depends on the
    module's absolute path)."""
    from numba.core.caching import _CacheLocator
    return _CacheLocator.get_suitable_cache_subpath(str(pathlib.Path(py_dir) / "x.py"))


def _live_simcore():
    """(source dir, hash, numba cache dir) of the simcore this interpreter imports; Nones when
    it does not import (a tree in the middle of an edit), which only costs the seeding."""
    try:
        import numba

        import simcore
    except Exception as exc:        # noqa: BLE001 - any import failure just disables seeding
        print(f"history: no numba cache seeding: simcore does not import ({exc})",
              file=sys.stderr)
        return None, None, None
    src = pathlib.Path(simcore.__file__).parent
    return src, simcore_hash(src), pathlib.Path(numba.config.CACHE_DIR or "")


def prepare_numba_cache(src_simcore, store, live):
    """NUMBA_CACHE_DIR for the exported simcore: store/numba-<hash>. Sets the export's source
    mtimes so that the cache stays valid from one export to the next, and seeds the cache from
    the live tree's when the sources are the same."""
    digest = simcore_hash(src_simcore)
    cache = store / f"numba-{digest}"
    live_dir, live_hash, live_cache = live
    sources = sorted(src_simcore.glob("*.py"))
    if live_dir is not None and digest == live_hash:
        for path in sources:
            st = (live_dir / path.name).stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        seed = live_cache / _numba_subdir(live_dir)
        target = cache / _numba_subdir(src_simcore)
        if seed.is_dir() and not target.exists():
            shutil.copytree(seed, target)
    else:
        for path in sources:
            os.utime(path, ns=(FIXED_MTIME_NS, FIXED_MTIME_NS))
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def check_imports(src, env):
    """The exported simcore and workloads, not the editable install's, are the ones imported."""
    code = "import simcore, workloads; print(simcore.__file__); print(workloads.__file__)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir(), env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        return f"cannot import simcore/workloads: {proc.stderr.strip().splitlines()[-1:]}"
    for line in proc.stdout.split():
        if not pathlib.Path(line).resolve().is_relative_to(src.resolve()):
            return f"imported {line} instead of the commit's copy under {src}"
    return None


def run_fast(repo, commits, regex, workdir, asv, conf_path):
    """One `asv run --python=same` per commit; returns {commit: status}."""
    src = workdir / "src"
    store = workdir / "numba"
    live = _live_simcore()
    used = set()
    status = {}
    for commit in commits:
        short = commit[:8]
        export(repo, commit, src)
        if not (src / "benchmarks").is_dir() or not (src / "simcore").is_dir():
            status[commit] = "skipped: no benchmarks/ or simcore/ in this commit"
            print(f"history: {short}: {status[commit]}", flush=True)
            continue
        cache = prepare_numba_cache(src / "simcore", store, live)
        used.add(cache.name)
        env = dict(os.environ, ASV_PYTHONPATH=str(src), PYTHONPATH=str(src),
                   NUMBA_CACHE_DIR=str(cache))
        problem = check_imports(src, env)
        if problem:
            status[commit] = f"skipped: {problem}"
            print(f"history: {short}: {status[commit]}", flush=True)
            continue
        print(f"history: {short} {_git(repo, 'log', '-1', '--format=%s', commit)[:60]}",
              flush=True)
        t0 = time.monotonic()
        returncode, output = _tee([asv, "run", "--config", str(conf_path), "--python=same",
                                   "--quick", "--show-stderr", "--set-commit-hash", commit,
                                   "--bench", regex], cwd=repo, env=env)
        status[commit] = _status(returncode, output, regex, time.monotonic() - t0)
        print(f"history: {short}: {status[commit]}", flush=True)
    prune_caches(store, used)
    return status


def prune_caches(store, used, keep=KEEP_CACHES):
    """Marks the caches this run used as the most recent and removes all but the `keep` most
    recently used (each simcore version's compiled code is some megabytes)."""
    for name in used:
        os.utime(store / name)
    caches = sorted(store.glob("numba-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in caches[max(keep, len(used)):]:
        shutil.rmtree(old, ignore_errors=True)


def _tee(cmd, **kwargs):
    """Runs cmd with its output shown as it comes; returns (exit code, last lines)."""
    tail = collections.deque(maxlen=100)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **kwargs) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            tail.append(line)
    sys.stdout.flush()
    return proc.returncode, "".join(tail)


def _status(returncode, output, regex, took):
    if returncode == 0:
        return f"ok ({took:.0f} s)"
    if "No benchmarks selected" in output:
        return f"skipped: no benchmark matching {regex!r} in this commit"
    if "Failed to build the project and import the benchmark suite" in output:
        return "failed: its benchmarks do not import (asv's error above); nothing recorded"
    return (f"failed: asv exit {returncode} after {took:.0f} s; the benchmarks that ran are "
            f"recorded")


def run_envs(repo, commits, regex, workdir, asv, conf_path):
    """asv's own mode: a virtualenv per commit, the working tree's benchmarks."""
    hashfile = workdir / "commits.txt"
    hashfile.write_text("\n".join(commits) + "\n")
    proc = subprocess.run([asv, "run", "--config", str(conf_path), "--quick", "--show-stderr",
                           "--launch-method", "spawn", "--bench", regex, f"HASHFILE:{hashfile}"],
                          cwd=repo, check=False)
    return {c: "ok" if proc.returncode == 0 else f"asv exit {proc.returncode}" for c in commits}


def committed_results(results_dir, dest):
    """The results of committed code (this tool's runs and asv's virtualenv ones) copied into
    `dest` for asv publish, leaving out tools/bench's working-tree results (uncommitted edits
    filed under HEAD's hash, which would show as a step at HEAD). benchmarks.json keeps only the
    benchmarks that have a result, or the site would fetch graphs that do not exist."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    measured = set()
    for machine in results_dir.iterdir():
        if not (machine / "machine.json").is_file():
            continue
        (dest / machine.name).mkdir()
        shutil.copyfile(machine / "machine.json", dest / machine.name / "machine.json")
        for path in machine.glob("*.json"):
            if path.name == "machine.json":
                continue
            doc = json.loads(path.read_text())
            working_tree = (doc.get("env_name", "").startswith("existing-")
                            and (doc.get("env_vars") or {}).get("FOLIOBENCH_SOURCE") != "commit")
            if not working_tree:
                shutil.copyfile(path, dest / machine.name / path.name)
                measured.update(doc.get("results", {}))
    known = json.loads((results_dir / "benchmarks.json").read_text())
    kept = {k: v for k, v in known.items() if k == "version" or k in measured}
    (dest / "benchmarks.json").write_text(json.dumps(kept, indent=4) + "\n")


def publish(repo, asv, conf_path, conf):
    """asv publish of the committed results, the feature matrix next to the site when there is
    one, and the feed read back: [(benchmark, commit, value before, value after)]."""
    workdir = conf_path.parent
    publish_conf = dict(conf, results_dir=str(workdir / "published-results"))
    committed_results(pathlib.Path(conf["results_dir"]), pathlib.Path(publish_conf["results_dir"]))
    publish_path = workdir / "asv-publish.conf.json"
    publish_path.write_text(json.dumps(publish_conf, indent=1) + "\n")
    subprocess.run([asv, "publish", "--config", str(publish_path)], cwd=repo, check=True,
                   stdout=subprocess.DEVNULL)
    html = pathlib.Path(conf["html_dir"])
    for url in localize(html):
        print(f"history: warning: the site still loads {url} from the network", file=sys.stderr)
    matrix = repo / "results" / "matrix" / FULL_MATRIX
    if matrix.is_file():
        link_matrix(html, matrix)
    else:
        print(f"history: no full feature matrix at {matrix}: the site links none (`foliobench "
              f"matrix` with the default selection saves one)", file=sys.stderr)
    steps = read_feed(html)
    if not steps:
        say_no_regressions(html)
    return steps


def localize(html):
    """Points the site's pages at html/vendor/ copies of the CDN libraries; returns the external
    URLs left (an asv upgrade that needs a library we do not have)."""
    vendor = html / "vendor"
    vendor.mkdir(exist_ok=True)
    for name in set(VENDORED.values()):
        shutil.copyfile(VENDOR / name, vendor / name)
    left = []

    def local(match):
        tag, url = match.group(0), match.group(2)
        name = VENDORED.get(url.rsplit("/", 1)[-1])
        if name is None:
            left.append(url)
            return tag
        # same-origin copies: no subresource integrity or CORS attributes needed
        tag = re.sub(r'\s(?:integrity|crossorigin|referrerpolicy)="[^"]*"', "", tag)
        return tag.replace(url, f"vendor/{name}")

    for page in html.glob("*.html"):
        text = page.read_text()
        new = EXTERNAL_TAG.sub(local, text)
        if new != text:
            page.write_text(new)
    return left


def link_matrix(html, matrix):
    """The full default feature matrix (every profile, size and subsystem; foliobench matrix
    saves it as results/matrix/full.html) next to the site, linked from its navigation bar and
    linking back. Not latest.html: that is whatever matrix ran last, one cell after a narrow
    run."""
    page = matrix.read_text()
    if BACK_LINK not in page:
        page = page.replace("<body>", "<body>\n" + BACK_LINK, 1)
    (html / "matrix.html").write_text(page)
    index = html / "index.html"
    text = index.read_text()
    anchor = '<li id="nav-li-regressions">'
    if "matrix.html" not in text and anchor in text:
        index.write_text(text.replace(
            anchor, '<li id="nav-li-matrix"><a href="matrix.html">Matrix</a></li>\n'
            + anchor, 1))


def say_no_regressions(html):
    """asv's Regressions tab draws an empty table when the feed is empty; a line above it says
    there are none."""
    index = html / "index.html"
    text = index.read_text()
    anchor = '<div id="regressions-body">'
    if NO_REGRESSIONS not in text and anchor in text:
        index.write_text(text.replace(anchor, NO_REGRESSIONS + "\n" + anchor, 1))


def read_feed(html):
    """The steps in asv's regressions.json: [(benchmark, first bad commit, before, after)]."""
    regressions = json.loads((html / "regressions.json").read_text())["regressions"]
    rev_to_hash = json.loads((html / "index.json").read_text())["revision_to_hash"]
    steps = []
    for name, _path, _params, _idx, _last, _best, jumps in regressions:
        for _before_rev, after_rev, before, after in jumps or ():     # asv may give null
            steps.append((name, rev_to_hash[str(after_rev)], before, after))
    return steps


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tools/history", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="?", type=int, default=5, help="commits (default 5)")
    parser.add_argument("regex", nargs="?", default=DEFAULT_REGEX,
                        help=f"asv --bench regex (default {DEFAULT_REGEX!r}: the exact "
                             f"track_ benchmarks; '.' for all)")
    parser.add_argument("--envs", action="store_true",
                        help="asv-built virtualenv per commit (about 2.5 min a commit)")
    parser.add_argument("--branch", help="branch (default: asv.conf.json's first)")
    parser.add_argument("--repo", type=pathlib.Path, default=REPO,
                        help="git repository (default: this one); results go to its results/")
    parser.add_argument("--workdir", type=pathlib.Path,
                        help="scratch checkout and numba caches (default REPO/.asv/history)")
    parser.add_argument("--no-publish", action="store_true", help="skip asv publish")
    parser.add_argument("--publish-only", action="store_true",
                        help="run nothing: rebuild the site from the results there are")
    args = parser.parse_args(argv)
    if args.n < 1:
        print(f"history: N must be >= 1, got {args.n}", file=sys.stderr)
        return 2
    repo = args.repo.resolve()
    workdir = (args.workdir or repo / ".asv" / "history").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    lock = open(workdir / "lock", "w")     # noqa: SIM115 - held until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"history: another tools/history uses {workdir}; waiting for it", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    asv = str(pathlib.Path(sys.executable).parent / "asv")
    conf = json.loads((REPO / "asv.conf.json").read_text())
    branch = args.branch or (conf.get("branches") or ["main"])[0]
    bench_dir = repo / "benchmarks" if args.envs else workdir / "src" / "benchmarks"
    conf_path, conf = asv_config(repo, workdir, bench_dir, exported=not args.envs)
    if args.publish_only:
        return report(repo, asv, conf_path, conf)
    try:
        commits, note = last_commits(repo, branch, args.n)
    except ValueError as exc:
        print(f"history: {exc}", file=sys.stderr)
        return 2
    if note:
        print(note, file=sys.stderr)
    subprocess.run([asv, "machine", "--yes", "--config", str(conf_path)],
                   cwd=repo, check=True, stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    run = run_envs if args.envs else run_fast
    status = run(repo, commits, args.regex, workdir, asv, conf_path)
    print(f"history: {len(commits)} commit(s) in {time.monotonic() - t0:.0f} s")
    for commit in commits:
        print(f"  {commit[:8]}  {status[commit]}")
    if all(s.startswith("skipped") for s in status.values()):
        print("history: no commit produced results", file=sys.stderr)
        return 1
    if args.no_publish:
        return 0
    return report(repo, asv, conf_path, conf)


def report(repo, asv, conf_path, conf):
    """Publishes and says where the site is and what the feed lists."""
    if not (pathlib.Path(conf["results_dir"]) / "benchmarks.json").is_file():
        print(f"history: no asv results in {conf['results_dir']} yet: run tools/history first",
              file=sys.stderr)
        return 1
    try:
        steps = publish(repo, asv, conf_path, conf)
    except subprocess.CalledProcessError as exc:
        print(f"history: asv publish failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    html = pathlib.Path(conf["html_dir"])
    print(f"history site: {html / 'index.html'} (serve it: .venv/bin/asv preview)")
    print(f"regressions feed: {html / 'regressions.xml'}: {len(steps)} step(s)")
    for name, commit, before, after in steps:
        print(f"  {name}: {before:.6g} -> {after:.6g} at {commit[:8]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
