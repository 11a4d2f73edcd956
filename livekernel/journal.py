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
paths to remove) in <state_dir>/journal-<pid>-<n>.json, rewritten atomically on every new entry and
removed once restored; restore_leftovers() (`foliobench live restore`) undoes the journals of
processes that are gone, newest first, and only journals this user wrote. While a journal is
entered it holds <state_dir>/lock, so no two processes change settings at once and no leftover
restore runs under a live run. A command and its undo (journal.run(), critical()) are one step:
a signal arriving in between is delivered once the undo is journaled.
"""
import atexit
import contextlib
import fcntl
import itertools
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time

RESTORE_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_CHOICE_RE = re.compile(r"\[([^\]]+)\]")
_SEQ = itertools.count(1)          # journals of one process each get their own state file
LOCK_NAME = "lock"
_LOCKS = {}                        # state_dir -> [fd, holders]: one flock per process and dir


class JournalError(OSError):
    """A write the kernel refused (with the path, the value and the kernel's reason); an
    OSError, as what the kernel refuses elsewhere is (a matrix cell reports it as untested)."""


class LiveRunBusy(JournalError):
    """Another process holds the live-run lock: its settings journal is still in use."""


def _lock_holder(fd):
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or -1)
    except (OSError, ValueError):
        return -1


def acquire_run_lock(state_dir, timeout=0.0):
    """Hold <state_dir>/lock (flock, released by the kernel even on SIGKILL) so that no two
    processes run live at once: each would record the other's values as the ones to restore,
    and the one ending last would leave them behind. Nested journals of one process share it.
    Raises LiveRunBusy naming the holder after `timeout` seconds."""
    state_dir = str(state_dir)
    held = _LOCKS.get(state_dir)
    if held:
        held[1] += 1
        return
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = _lock_holder(fd)
                os.close(fd)
                raise LiveRunBusy(f"another live run (pid {holder}) is in progress; live runs "
                                  f"change the same kernel settings and must not overlap") \
                    from None
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _LOCKS[state_dir] = [fd, 1]


def release_run_lock(state_dir):
    state_dir = str(state_dir)
    held = _LOCKS.get(state_dir)
    if not held:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _LOCKS[state_dir]
        os.close(held[0])


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
        self._created = time.time()
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
        self._locked = False
        self.lock_timeout = 0.0    # seconds __enter__ waits for another live run to end
        self._critical = 0         # > 0: a restore signal waits in _pending until it ends
        self._pending = None

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

    def run(self, argv, undo_argv, description=None, undo_first=False):
        """Run a command (e.g. swapon FILE) and register the command that undoes it (swapoff
        FILE), both in the journal's order; dry runs only print it. undo_first: journal the
        undo (and write it to disk) before the command runs, for an effect a SIGKILL could
        leave behind mid-command; the undo must then be harmless when the effect is absent."""
        import subprocess
        argv, undo_argv = [str(a) for a in argv], [str(a) for a in undo_argv]
        self.log.append((" ".join(argv), ""))
        if self.dry_run:
            self._say(f"dry-run: would run {' '.join(argv)} (undone by {' '.join(undo_argv)})")
            return

        def undo():
            done = subprocess.run(undo_argv, capture_output=True, text=True)
            if done.returncode:
                raise JournalError(f"{' '.join(undo_argv)}: {done.stderr.strip()}")
        # a Ctrl-C or SIGTERM between the command's effect (swap on) and its undo being
        # journaled would leave the effect behind: the signal waits, and the command runs in
        # its own process group so that the terminal's Ctrl-C does not kill it half-way
        with self.critical():
            token = self.add_undo(description or " ".join(undo_argv), undo,
                                  command=undo_argv) if undo_first else None
            proc = subprocess.run(argv, capture_output=True, text=True, process_group=0)
            if proc.returncode:
                if token is not None:
                    self.discard_undo(token)
                raise JournalError(f"{' '.join(argv)} failed: "
                                   f"{proc.stderr.strip() or proc.returncode}")
            return token or self.add_undo(description or " ".join(undo_argv), undo,
                                          command=undo_argv)

    @contextlib.contextmanager
    def critical(self):
        """A change and the registration of its undo, as one step: SIGINT/SIGTERM/SIGHUP
        arriving meanwhile are delivered (as KeyboardInterrupt/SystemExit) once it ends."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
            if not self._critical and self._pending is not None:
                signum, self._pending = self._pending, None
                self._on_signal(signum, None)

    # -- the state file (for a restore after SIGKILL) --------------------------------------

    def _state(self):
        steps = []
        for e in self.entries:
            if e[0] == "setting":
                steps.append(["setting", e[1], e[2]])
            else:
                steps.extend([kind, arg] for kind, arg in self._persisted.get(id(e), ()))
        return {"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "created": self._created, "root": self.root, "steps": steps}

    def _persist(self):
        if self.state_dir is None:
            return
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        if self._state_file is None:       # nested journals must not share (and drop) one file
            self._state_file = os.path.join(self.state_dir,
                                            f"journal-{os.getpid()}-{next(_SEQ)}.json")
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".journal.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self._state(), fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._state_file)
        except BaseException:             # a signal mid-write: no stray temporary file
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

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
        masked = self._mask_signals()      # first: a signal must not cut the restore short
        with self._lock:
            if self.restored:
                self._unmask_signals(masked)
                return self.errors
            self.restored = True
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
        if self._critical:
            self._pending = signum
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def __enter__(self):
        if self.state_dir is not None and not self._locked:
            acquire_run_lock(self.state_dir, self.lock_timeout)
            self._locked = True
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
            # a signal before restore() masked them leaves it undone: atexit still does it
            if self._atexit and self.restored:
                atexit.unregister(self.restore)
                self._atexit = False
            if self._locked and self.restored:
                release_run_lock(self.state_dir)
                self._locked = False
        return False


def restore_leftovers(state_dir, out=None):
    """Undo the journals left in state_dir by processes that no longer run (killed with
    SIGKILL, or a crashed machine's /run survived): the newest journal first, in each the
    settings written back newest first, the recorded paths removed. Refused (LiveRunBusy)
    while another process runs live: it recorded the leftovers as the values to put back, so
    restoring under it would have them written again when it ends. Returns [(pid, [problems])]."""
    done = []
    if not os.path.isdir(state_dir):
        return done
    acquire_run_lock(state_dir)
    try:
        return _restore_leftovers(state_dir, out)
    finally:
        release_run_lock(state_dir)


def _restore_leftovers(state_dir, out):
    done = []
    journals = []
    for name in os.listdir(state_dir):
        if not (name.startswith("journal-") and name.endswith(".json")):
            continue
        path = os.path.join(state_dir, name)
        try:
            if os.lstat(path).st_uid != os.geteuid():
                continue          # its commands run as us: only journals we wrote ourselves
            with open(path) as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            continue
        journals.append((float(state.get("created", 0)), name, path, state))
    # the journal started last recorded the values the earlier ones left: undo it first
    for _, _, path, state in sorted(journals, key=lambda j: (j[0], j[1]), reverse=True):
        pid = int(state.get("pid", -1))
        if pid == os.getpid() or pid_alive(pid):
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


def pid_alive(pid):
    """Whether process `pid` exists (signal 0; EPERM means it exists under another user). The
    one such check: foliobench.results uses it for the staging directories of killed runs."""
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
