"""The settings journal: every change foliobench makes to a live kernel, and how to undo it.

Each write to /proc/sys or /sys goes through SettingsJournal.write(), which reads and records the
old value before writing the new one. restore() undoes everything in reverse order: old values
written back (and read back to check), then generic undo actions (a swapoff, a file removed, a
memory block onlined, ...) registered with add_undo(). It runs once, on normal exit of the
`with` block, on any exception, on SIGINT/SIGTERM/SIGHUP (the handler raises KeyboardInterrupt
or SystemExit(128 + signal) so the stack unwinds through __exit__) and, as a last resort, from
atexit. While restoring, those signals are ignored so that a second Ctrl-C cannot leave half the
settings changed.

Write-only files (compact_memory, drop_caches) go through write_only(): logged, never restored.
In dry-run mode nothing is written: each write is printed ("would write ...") with the value it
would replace.

A SIGKILL cannot be caught, so with a state_dir the journal also keeps its settings (and the
paths to remove) in <state_dir>/journal-<pid>.json, rewritten atomically on every new entry and
removed once restored; restore_leftovers() (`foliobench live restore`) undoes the journals of
processes that are gone.
"""
import atexit
import json
import os
import tempfile
import time
import re
import signal
import sys
import threading

RESTORE_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_CHOICE_RE = re.compile(r"\[([^\]]+)\]")


class JournalError(RuntimeError):
    """A write the kernel refused (with the path, the value and the kernel's reason)."""


def current_value(text):
    """The value to write back: the bracketed choice of "always [madvise] never", else the
    stripped text."""
    text = text.strip()
    match = _CHOICE_RE.search(text)
    return match.group(1) if match else text


class SettingsJournal:
    """Records old values, then writes; restores them all, in reverse order, exactly once.

    dry_run: print the writes instead of doing them. out: where dry-run lines and restore
    problems go (default stderr). root: prefix for every path (tests point it at a fake tree).
    """

    def __init__(self, dry_run=False, out=None, root="/", state_dir=None):
        self.dry_run = dry_run
        self.state_dir = None if dry_run or state_dir is None else str(state_dir)
        self._state_file = None
        self._persisted = {}       # id(undo entry) -> [(kind, arg)] a leftover restore does
        self.out = out
        self.root = root
        self.entries = []          # ("setting", path, old) or ("undo", description, callback)
        self._recorded = set()
        self._pretend = {}         # dry run: path -> value it would have now
        self.log = []              # every write, in order: (path, value)
        self.errors = []           # restore problems, as text
        self.restored = False
        self._old_handlers = {}
        self._lock = threading.RLock()
        self._atexit = False

    # -- paths -----------------------------------------------------------------------------

    def _path(self, path):
        path = str(path)
        return path if self.root in ("/", "") else os.path.join(self.root, path.lstrip("/"))

    def _say(self, text):
        print(text, file=self.out or sys.stderr, flush=True)

    def read(self, path):
        """The current value of a setting (bracketed choice or stripped text); in dry-run mode,
        the value the journal pretends it wrote."""
        if str(path) in self._pretend:
            return self._pretend[str(path)]
        with open(self._path(path)) as fh:
            return current_value(fh.read())

    def _write(self, path, value):
        try:
            with open(self._path(path), "w") as fh:
                fh.write(str(value))
        except OSError as exc:
            raise JournalError(f"writing {value!r} to {path}: {exc.strerror or exc}") from None

    # -- changes ---------------------------------------------------------------------------

    def write(self, path, value):
        """Record the old value of `path` (the first time only), then write `value`."""
        path = str(path)
        value = str(value)
        with self._lock:
            if self.restored:
                raise JournalError(f"journal already restored; refusing to write {path}")
            try:
                old = self.read(path)
            except OSError as exc:
                raise JournalError(f"reading {path} before writing it: "
                                   f"{exc.strerror or exc}") from None
            if path not in self._recorded:
                self._recorded.add(path)
                self.entries.append(("setting", path, old))
                self._persist()
            self.log.append((path, value))
            if self.dry_run:
                self._say(f"dry-run: would write {value!r} to {path} (now {old!r})")
                self._pretend[path] = value
                return old
            self._write(path, value)
            return old

    def write_only(self, path, value):
        """A trigger such as compact_memory or drop_caches: written, logged, nothing to undo."""
        path = str(path)
        self.log.append((path, str(value)))
        if self.dry_run:
            self._say(f"dry-run: would write {value!r} to {path} (a trigger, nothing to restore)")
            return
        self._write(path, value)

    def add_undo(self, description, callback, remove=(), command=None):
        """Register an undo action (run in reverse registration order, interleaved with the
        settings). What a restore after a SIGKILL does in its place: delete the paths in
        `remove`, run `command` (an argv list, e.g. ["swapoff", path]). Returns a token for
        discard_undo()."""
        with self._lock:
            entry = ("undo", description, callback)
            self.entries.append(entry)
            persisted = [("command", list(map(str, command)))] if command else []
            persisted += [("remove", str(p)) for p in remove]
            if persisted:
                self._persisted[id(entry)] = persisted
                self._persist()
            return entry

    def run(self, argv, undo_argv, description=None):
        """Run a command (e.g. swapon FILE) and register the command that undoes it (swapoff
        FILE), both in the journal's order; dry runs only print it."""
        import subprocess
        argv, undo_argv = [str(a) for a in argv], [str(a) for a in undo_argv]
        self.log.append((" ".join(argv), ""))
        if self.dry_run:
            self._say(f"dry-run: would run {' '.join(argv)} (undone by {' '.join(undo_argv)})")
            return
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode:
            raise JournalError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.returncode}")

        def undo():
            done = subprocess.run(undo_argv, capture_output=True, text=True)
            if done.returncode:
                raise JournalError(f"{' '.join(undo_argv)}: {done.stderr.strip()}")
        return self.add_undo(description or " ".join(undo_argv), undo, command=undo_argv)

    # -- the state file (for a restore after SIGKILL) --------------------------------------

    def _state(self):
        steps = []
        for e in self.entries:
            if e[0] == "setting":
                steps.append(["setting", e[1], e[2]])
            else:
                steps.extend([kind, arg] for kind, arg in self._persisted.get(id(e), ()))
        return {"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "root": self.root, "steps": steps}

    def _persist(self):
        if self.state_dir is None:
            return
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self._state_file = os.path.join(self.state_dir, f"journal-{os.getpid()}.json")
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".journal.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(self._state(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._state_file)

    def _drop_state(self):
        if self._state_file and not self.errors:
            try:
                os.unlink(self._state_file)
            except OSError:
                pass

    def discard_undo(self, token):
        """The action was done already (e.g. a file removed early): forget it."""
        with self._lock:
            try:
                self.entries.remove(token)
            except ValueError:
                return
            if self._persisted.pop(id(token), None):
                self._persist()

    def touched(self):
        """{path: old value} of every setting written so far."""
        return {e[1]: e[2] for e in self.entries if e[0] == "setting"}

    # -- restore ---------------------------------------------------------------------------

    def restore(self):
        """Undo everything, newest first; every step is tried even when one fails. Returns the
        list of problems (also printed)."""
        with self._lock:
            if self.restored:
                return self.errors
            self.restored = True
            masked = self._mask_signals()
            try:
                while self.entries:
                    entry = self.entries.pop()
                    try:
                        if entry[0] == "setting":
                            self._restore_setting(entry[1], entry[2])
                        else:
                            entry[2]()
                    except BaseException as exc:      # keep going: restore everything we can
                        what = entry[1]
                        self.errors.append(f"could not restore {what}: {exc}")
                        self._say(f"foliobench: could not restore {what}: {exc}")
            finally:
                self._drop_state()
                self._unmask_signals(masked)
            return self.errors

    def _restore_setting(self, path, old):
        if self.dry_run:
            return
        if self.read(path) == old:
            return
        self._write(path, old)
        now = self.read(path)
        if now != old:
            raise JournalError(f"wrote {old!r} back to {path} but it reads {now!r}")

    def _mask_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, signal.SIG_IGN) for s in RESTORE_SIGNALS}

    def _unmask_signals(self, masked):
        for s, handler in masked.items():
            signal.signal(s, handler)

    # -- context manager and signals -------------------------------------------------------

    def _on_signal(self, signum, frame):
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in RESTORE_SIGNALS:
                self._old_handlers[s] = signal.signal(s, self._on_signal)
        if not self._atexit:
            atexit.register(self.restore)
            self._atexit = True
        return self

    def __exit__(self, *exc):
        try:
            self.restore()
        finally:
            for s, handler in self._old_handlers.items():
                signal.signal(s, handler)
            self._old_handlers.clear()
            if self._atexit:
                atexit.unregister(self.restore)
                self._atexit = False
        return False


def restore_leftovers(state_dir, out=None):
    """Undo the journals left in state_dir by processes that no longer run (killed with
    SIGKILL, or a crashed machine's /run survived): settings written back newest first, the
    recorded paths removed. Returns [(pid, [problems])]."""
    done = []
    try:
        names = sorted(os.listdir(state_dir))
    except FileNotFoundError:
        return done
    for name in names:
        if not (name.startswith("journal-") and name.endswith(".json")):
            continue
        path = os.path.join(state_dir, name)
        try:
            with open(path) as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            continue
        pid = int(state.get("pid", -1))
        if pid == os.getpid() or _alive(pid):
            continue
        journal = SettingsJournal(out=out, root=state.get("root", "/"))
        for kind, *args in state.get("steps", []):
            if kind == "setting":
                journal.entries.append(("setting", args[0], args[1]))
            elif kind == "remove":
                journal.entries.append(("undo", f"remove {args[0]}",
                                        lambda p=args[0]: _remove_path(p)))
            elif kind == "command":
                journal.entries.append(("undo", " ".join(args[0]),
                                        lambda argv=args[0]: _run_checked(argv)))
        problems = journal.restore()
        if not problems:
            os.unlink(path)
        done.append((pid, problems))
    return done


def _alive(pid):
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_path(path):
    import shutil
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _run_checked(argv):
    import subprocess
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        raise JournalError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
