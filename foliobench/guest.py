"""Run a foliobench command inside a disposable guest kernel (virtme-ng + QEMU).

    foliobench guest --kernel 6.1 --mem 4G --numa 2 --movable 1G -- live probe

The guest boots the given kernel (an installed release from /boot, a bzImage, or a kernel build
tree) with virtme-ng, which shares the host's root filesystem read-only over 9p, so the guest
runs this very checkout and virtual environment as root. Only the run directory
(results/guest/<stamp>-<release>-<boot params>/) is shared writable: the command's results
(FOLIOBENCH_RESULTS points there), its output (guest.log) and guest.json (kernel, boot
parameters, boot and run times, exit code) come home there, and nothing else on the host can
change. KVM is used where a short probe boot shows it works (cached per host boot under
/run/foliobench), QEMU's TCG otherwise. No more guests run at once than the host's CPUs hold
their vCPUs (a lock per slot); a guest that outlives --timeout is killed with its whole
process group.

Everything the options ask for is checked against the kernel before anything boots: a kernel
that does not exist, one without 9p/virtio (it could not mount the host's filesystem), NUMA nodes
on a kernel without CONFIG_NUMA, a --movable zone that leaves the kernel no memory.
"""
import contextlib
import dataclasses
import datetime as _dt
import fcntl
import os
import pathlib
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from simcore.units import format_size, parse_size

REPO = pathlib.Path(__file__).resolve().parent.parent
STATE_DIR = pathlib.Path(os.environ.get("FOLIOBENCH_STATE_DIR", "/run/foliobench"))
READY = "@@foliobench-guest-ready@@"
MIN_MEM = 512 << 20               # below this Debian's kernels with a virtme initramfs do not boot
MIN_NORMAL = 384 << 20            # memory --movable must leave to the kernel's own allocations
MIN_NODE = 128 << 20
MAX_CPUS = 64
GUEST_MATRIX_TIMEOUT_S = 3600     # the whole matrix under TCG on a loaded machine
KVM_PROBE_S = 45                  # a KVM boot to `true` takes seconds; the firmware hang is forever
KILL_GRACE_S = 5
SEPARATOR = "++"                  # between commands run in one boot
GUEST_DISK = "/mnt"               # where the scratch disk (--disk) is mounted in the guest
# numba's compiled code for the guest's (emulated) CPU, kept between boots: the checkout is
# read-only in the guest, and compiling simcore under TCG takes minutes
GUEST_CACHE = pathlib.Path(os.environ.get("FOLIOBENCH_GUEST_CACHE",
                                          "/var/tmp/foliobench-guest-cache"))
NUMBA_CACHE = GUEST_CACHE / "numba"
# the guest shares the host's 9p root; these make it mountable (y or m; modules from /lib/modules)
NEEDED_CONFIG = ("CONFIG_VIRTIO_PCI", "CONFIG_NET_9P", "CONFIG_NET_9P_VIRTIO", "CONFIG_9P_FS")


class GuestUnavailable(RuntimeError):
    """This machine cannot boot guests (no qemu, virtme-ng, kmod or busybox): one line, exit 1."""


class GuestFailed(RuntimeError):
    """The command in the guest failed: one line, exit 1."""


class GuestTimeout(RuntimeError):
    """The guest outlived --timeout and was killed; boot_s: when it had booted, or None."""
    boot_s = None


@dataclasses.dataclass
class Kernel:
    image: str                    # what vng -r gets: a bzImage or a build tree
    release: str
    config: dict                  # CONFIG_X -> "y"/"m"/value; empty when unknown

    def has(self, option):
        return self.config.get(option) in ("y", "m")


# --- kernels -----------------------------------------------------------------------------------

def bzimage_release(path):
    """The release string in a bzImage's setup header (the kernel_version field, boot protocol
    2.00+), or ValueError when the file is not an x86 bzImage."""
    with open(path, "rb") as f:
        head = f.read(0x10000)
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        raise ValueError(f"kernel '{path}' is not an x86 bzImage (no 'HdrS' setup header)")
    offset = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    text = head[offset:offset + 256].split(b"\0", 1)[0].decode("ascii", "replace")
    return text.split(" ", 1)[0] or "unknown"


def read_config(path):
    """{CONFIG_X: value} from a kernel .config; {} when there is none."""
    out = {}
    try:
        lines = pathlib.Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.startswith("CONFIG_"):
            out[key] = value.strip('"')
    return out


def installed_releases(boot="/boot"):
    """Releases with a /boot/vmlinuz-<release>, oldest first (version order)."""
    names = [p.name[len("vmlinuz-"):] for p in pathlib.Path(boot).glob("vmlinuz-*")]
    return sorted(names, key=_version_key)


def _version_key(release):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", release)]


def resolve_kernel(spec=None, boot="/boot"):
    """A Kernel from a bzImage path, a kernel build tree, or an installed release (exact, or a
    prefix such as "6.1": the newest /boot/vmlinuz-6.1.* or 6.1-*); default the newest
    installed. ValueError naming the kernel when there is no such kernel or it cannot share the
    host's filesystem."""
    boot = pathlib.Path(boot)
    path = pathlib.Path(spec) if spec else None
    if path is not None and path.is_dir():
        image = path / "arch/x86/boot/bzImage"
        if not image.is_file():
            raise ValueError(f"kernel build tree {spec!r} has no arch/x86/boot/bzImage; build "
                             f"it first")
        release = bzimage_release(image)
        kernel = Kernel(str(path), release, read_config(path / ".config"))
    elif path is not None and path.is_file():
        release = bzimage_release(path)
        config = read_config(boot / f"config-{release}")
        kernel = Kernel(str(path), release, config)
    else:
        releases = installed_releases(boot)
        if spec is None:
            if not releases:
                raise ValueError(f"no kernel installed in {boot} (tools/setup installs Debian's "
                                 f"6.1 and 6.12); give --kernel PATH")
            release = releases[-1]
        elif "/" in spec:
            raise ValueError(f"kernel {spec!r} does not exist")
        else:
            matches = [r for r in releases if r == spec or r.startswith(spec + ".")
                       or r.startswith(spec + "-") or r.startswith(spec + "+")]
            if not matches:
                raise ValueError(f"kernel {spec!r} is neither a file, a build tree nor an "
                                 f"installed release; installed: "
                                 f"{', '.join(releases) or 'none'}")
            release = spec if spec in matches else matches[-1]
        image = boot / f"vmlinuz-{release}"
        bzimage_release(image)
        kernel = Kernel(str(image), release, read_config(boot / f"config-{release}"))
    if kernel.config:
        missing = [c for c in NEEDED_CONFIG if not kernel.has(c)]
        if missing:
            raise ValueError(f"kernel {kernel.release} cannot mount the host's filesystem in a "
                             f"guest: {', '.join(missing)} not set")
    return kernel


# --- boot parameters ---------------------------------------------------------------------------

@dataclasses.dataclass
class BootParams:
    mem: int = 4 << 30
    cpus: int = 2
    numa: int = 1
    movable: int = 0
    append: str = ""
    disk: int = 0                 # an ext4 virtio block device of this size at /mnt; 0: none
    swap_disk: int = 0            # a raw virtio block device for swap (--swap-disk); 0: none
    cma: int = 0                  # the CMA area (cma=, --cma); 0: none

    def label(self):
        parts = [f"m{format_size(self.mem)}", f"c{self.cpus}"]
        if self.numa > 1:
            parts.append(f"numa{self.numa}")
        if self.movable:
            parts.append(f"movable{format_size(self.movable)}")
        if self.disk:
            parts.append(f"disk{format_size(self.disk)}")
        if self.swap_disk:
            parts.append(f"swapdisk{format_size(self.swap_disk)}")
        if self.cma:
            parts.append(f"cma{format_size(self.cma)}")
        if self.append:
            parts.append("append")
        return "-".join(parts)

    def node_bytes(self):
        """Each NUMA node's memory, in whole MiB (QEMU wants them to add up to -m)."""
        per = (self.mem >> 20) // self.numa
        return [per << 20] * self.numa

    def kernel_args(self):
        args = []
        if self.movable:
            args.append(f"movablecore={self.movable >> 20}M")
        if self.cma:
            args.append(f"cma={self.cma >> 20}M")
        if self.append:
            args.append(self.append)
        return " ".join(args)


def boot_params(mem="4G", cpus=2, numa=1, movable=None, append="", disk=None,
                kernel=None, swap_disk=None, cma=None):
    """Checked BootParams: ValueError naming an option the guest (or its kernel) cannot
    honour."""
    p = BootParams(mem=parse_size(mem, "--mem"), cpus=int(cpus), numa=int(numa),
                   movable=parse_size(movable, "--movable") if movable else 0,
                   append=append or "",
                   disk=parse_size(disk, "--disk") if disk else 0,
                   swap_disk=parse_size(swap_disk, "--swap-disk") if swap_disk else 0,
                   cma=parse_size(cma, "--cma") if cma else 0)
    if p.mem < MIN_MEM:
        raise ValueError(f"--mem {mem} is below the {format_size(MIN_MEM)} a guest needs")
    if not 1 <= p.cpus <= MAX_CPUS:
        raise ValueError(f"--cpus {cpus} must be in 1..{MAX_CPUS}")
    if p.numa < 1:
        raise ValueError(f"--numa {numa} must be at least 1")
    if p.numa > 1 and p.node_bytes()[0] < MIN_NODE:
        raise ValueError(f"--numa {numa} nodes of --mem {mem} leave each node less than "
                         f"{format_size(MIN_NODE)}")
    if p.movable and p.movable > p.mem - MIN_NORMAL:
        raise ValueError(f"--movable {movable} leaves the kernel less than "
                         f"{format_size(MIN_NORMAL)} of --mem {mem} outside ZONE_MOVABLE")
    if "\n" in p.append or '"' in p.append:
        raise ValueError("--append must be one line of kernel parameters without quotes")
    if p.cma and p.cma + p.movable > p.mem - MIN_NORMAL:
        raise ValueError(f"--cma {cma} leaves the kernel less than {format_size(MIN_NORMAL)} "
                         f"of --mem {mem} outside the CMA area and ZONE_MOVABLE")
    _check_cma(p, kernel)
    if kernel is not None and kernel.config:
        if p.numa > 1 and not kernel.has("CONFIG_NUMA"):
            raise ValueError(f"--numa {numa}: kernel {kernel.release} has no CONFIG_NUMA")
        for option in ("CONFIG_VIRTIO_BLK", "CONFIG_EXT4_FS"):
            if p.disk and not kernel.has(option):
                raise ValueError(f"--disk: kernel {kernel.release} has no {option}")
        if p.swap_disk and not kernel.has("CONFIG_VIRTIO_BLK"):
            raise ValueError(f"--swap-disk: kernel {kernel.release} has no CONFIG_VIRTIO_BLK")
    if p.disk and p.disk < 64 << 20:
        raise ValueError(f"--disk {disk} is below the 64M an ext4 scratch disk needs")
    if p.swap_disk and p.swap_disk < 16 << 20:
        raise ValueError(f"--swap-disk {swap_disk} is below 16M")
    return p


def _check_cma(params, kernel):
    """A CMA area (--cma, or cma= in --append) needs CONFIG_CMA: without it the kernel ignores
    cma= and the guest would have no area to measure (Debian's 6.1 and 6.12 are built so)."""
    asked = params.cma or any(a.startswith("cma=") for a in params.append.split())
    if asked and kernel is not None and kernel.config and not kernel.has("CONFIG_CMA"):
        what = f"--cma {format_size(params.cma)}" if params.cma else "cma= in --append"
        raise ValueError(f"{what}: kernel {kernel.release} has no CONFIG_CMA, so it would "
                         f"ignore cma= (boot a kernel built with CONFIG_CMA)")


# --- the host's tools --------------------------------------------------------------------------

def _tool_path():
    """PATH for vng: the venv's bin (vng itself) and the sbin directories (depmod)."""
    extra = [str(pathlib.Path(sys.executable).parent), "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
    return os.pathsep.join(dict.fromkeys(os.environ.get("PATH", "").split(os.pathsep) + extra))


def unavailable_reason():
    """Why this machine cannot boot a guest, or None when it can."""
    path = _tool_path()
    needs = {"vng": "virtme-ng (pip install virtme-ng)",
             "qemu-system-x86_64": "QEMU (Debian: qemu-system-x86)",
             "depmod": "kmod (Debian: kmod)", "busybox": "busybox (Debian: busybox-static)"}
    missing = [what for tool, what in needs.items() if not shutil.which(tool, path=path)]
    if missing:
        return f"missing {', '.join(missing)}; tools/setup installs them"
    if not installed_releases():
        return "no kernel in /boot; tools/setup installs Debian's 6.1 and 6.12"
    return None


# --- running -----------------------------------------------------------------------------------

def vng_command(kernel, params, script, *, kvm, rwdir, hide_dir, disk_image=None,
                swap_image=None):
    """The vng command line for one boot (a list)."""
    cmd = ["vng", "-r", kernel.image, "-m", f"{params.mem >> 20}M", "-p", str(params.cpus),
           "--user", "root", f"--rwdir={rwdir}", f"--rwdir={GUEST_CACHE}",
           # udev coldplug loads every module the machine model wants: a minute under TCG and
           # nothing foliobench needs; virtme-ng's init skips udev when it finds no udevd
           f"--rodir=/usr/lib/systemd={hide_dir}"]
    if not kvm:
        cmd.append("--disable-kvm")
    if params.numa > 1:
        for node, size in enumerate(params.node_bytes()):
            cpus = [c for c in range(params.cpus) if c % params.numa == node]
            spec = f"{size >> 20}M" + (f",cpus={cpus[0]}-{cpus[-1]}" if cpus else "")
            if cpus and len(cpus) > 1 and cpus != list(range(cpus[0], cpus[-1] + 1)):
                spec = f"{size >> 20}M" + "".join(f",cpus={c}" for c in cpus)
            cmd += ["--numa", spec]
        cmd[cmd.index("-m") + 1] = f"{sum(params.node_bytes()) >> 20}M"
    kargs = params.kernel_args()
    if kargs:
        cmd += ["--append", kargs]
    drives = [f"-drive file={image},if=virtio,format=raw,cache=unsafe"
              for image in (disk_image, swap_image) if image]
    if drives:
        cmd.append("--qemu-opts=" + " ".join(drives))
    cmd += ["--exec", script]
    return cmd


def guest_script(argv, run_dir, disk=False, swap_disk=False):
    """The shell command the guest runs: the ready mark, the scratch disk mounted at /mnt (a
    disk filesystem for swap files and page-cache files: the guest's /var/tmp is tmpfs), then
    foliobench from this checkout (several commands split at ++, each after the previous one
    succeeded, all in one Python process)."""
    env = {"FOLIOBENCH_RESULTS": str(run_dir), "PYTHONPATH": str(REPO), "HOME": "/root",
           "FOLIOBENCH_GUEST": "1", "NUMBA_CACHE_DIR": str(NUMBA_CACHE),
           "MPLCONFIGDIR": str(GUEST_CACHE / "matplotlib")}
    # the guest is disposable: load what Debian builds as modules and the probes may use
    # (zram for `matrix --swap zram`); a module that is missing only leaves its probe untested
    mount = "modprobe zram num_devices=0 2>/dev/null; "
    if disk:
        env["FOLIOBENCH_GUEST_DISK"] = GUEST_DISK
        mount += (f"modprobe ext4 2>/dev/null; mount -t ext4 /dev/vda {GUEST_DISK} || "
                 f"{{ echo 'foliobench: could not mount the scratch disk'; exit 97; }}; ")
    if swap_disk:         # virtio disks take /dev/vda, vdb... in the order they are given
        env["FOLIOBENCH_GUEST_SWAP"] = "/dev/vdb" if disk else "/dev/vda"
    if os.environ.get("PYTHONPROFILEIMPORTTIME"):       # where the guest's imports go
        env["PYTHONPROFILEIMPORTTIME"] = "1"
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    split_commands(argv)
    # one Python process for every command (foliobench.guest_inside): the imports are paid once
    run = f"env {assigns} {shlex.quote(sys.executable)} -m foliobench.guest_inside"
    return (f"echo {READY}; {mount}cd {shlex.quote(str(REPO))} && {run} "
            + " ".join(shlex.quote(a) for a in argv))


def split_commands(argv):
    """`live probe ++ run highalloc ...` -> [["live", "probe"], ["run", "highalloc", ...]]:
    several foliobench commands in one boot, each run only when the one before succeeded."""
    parts, part = [], []
    for arg in argv:
        if arg == SEPARATOR:
            parts.append(part)
            part = []
        else:
            part.append(arg)
    parts.append(part)
    for part in parts:
        if not part:
            raise ValueError(f"an empty foliobench command around {SEPARATOR!r}")
        if part[0] == "guest":
            raise ValueError("a guest inside a guest is not supported")
    return parts


def boot_slots(cpus, host_cpus=None):
    """How many guests of `cpus` vCPUs may run at once: as many as the host's CPUs hold
    (QEMU's TCG runs one host thread per vCPU), at least one."""
    host_cpus = host_cpus or os.cpu_count() or 1
    return max(1, host_cpus // max(int(cpus), 1))


@contextlib.contextmanager
def _boot_lock(cpus=1, out=sys.stderr):
    """No more guests at once than the host has CPUs for their vCPUs (boot_slots): a slot is
    an flock on STATE_DIR/guest.lock[.N]; a guest that finds every slot taken says so and
    waits for one."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    names = ["guest.lock"] + [f"guest.lock.{n}" for n in range(1, boot_slots(cpus))]
    files = [open(STATE_DIR / name, "w") for name in names]
    try:
        said = False
        while True:
            for f in files:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                yield
                return
            if not said:
                print("foliobench: other guests are using this machine's CPUs; waiting",
                      file=out)
                said = True
            time.sleep(1.0)
    finally:
        for f in files:
            f.close()


def _kill_group(proc):
    """SIGTERM the guest's process group (vng and its qemu), SIGKILL after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure no member (qemu) outlived it
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def group_cpu_s(pgrp):
    """CPU seconds (user + system) of the live processes of a process group: QEMU's share is
    what a guest costs, whatever the machine's load."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgrp:                # fields from "state": pgrp is the 3rd
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _children_cpu_s():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _stream(cmd, timeout, log, echo, cpu=None):
    """Run cmd in its own process group; copy its output to log and echo; returns
    (exit code, seconds until the ready mark or None, seconds in all). GuestTimeout when it
    runs past timeout (the group is killed). cpu: a dict that gets the group's CPU seconds at
    the ready mark ("boot_cpu_s") and in all ("total_cpu_s", the reaped children's)."""
    env = dict(os.environ, PATH=_tool_path())
    t0 = time.monotonic()
    cpu0 = _children_cpu_s()
    ready = None
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    try:
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                _kill_group(proc)
                raise GuestTimeout(f"the guest ran past --timeout {timeout:g} s and was killed")
            if not sel.select(min(left, 1.0)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                if READY in line:
                    if ready is None and cpu is not None:
                        cpu["boot_cpu_s"] = round(group_cpu_s(proc.pid), 1)
                    ready = time.monotonic() - t0 if ready is None else ready
                    continue
                log.write(line + "\n")
                log.flush()
                if echo is not None:
                    echo.write(line + "\n")
                    echo.flush()
        left = max(timeout - (time.monotonic() - t0), 0.1)
        try:
            code = proc.wait(left)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise GuestTimeout(f"the guest ran past --timeout {timeout:g} s and was killed") \
                from None
    except GuestTimeout as exc:
        exc.boot_s = ready
        raise
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        sel.close()
        proc.stdout.close()
    if buf:
        log.write(buf.decode(errors="replace") + "\n")
    if cpu is not None:
        cpu["total_cpu_s"] = round(_children_cpu_s() - cpu0, 1)
    return code, ready, time.monotonic() - t0


def kvm_works(kernel, hide_dir):
    """Whether KVM boots this machine's guests: a short boot, its answer cached per host boot
    in /run/foliobench (nested KVM can hang in the firmware forever)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    cache = STATE_DIR / f"guest-kvm-{os.uname().release}"
    try:
        return cache.read_text().strip() == "yes"
    except OSError:
        pass
    cmd = vng_command(kernel, BootParams(mem=MIN_MEM, cpus=1), "true", kvm=True,
                      rwdir=hide_dir, hide_dir=hide_dir)
    try:
        code, _, _ = _stream(cmd, KVM_PROBE_S, open(os.devnull, "w"), None)
        works = code == 0
    except GuestTimeout:
        works = False
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp")
    tmp.write_text("yes\n" if works else "no\n")
    tmp.replace(cache)
    return works


def new_guest_dir(root, kernel, params):
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{stamp}-{kernel.release}-{params.label()}")
    base = pathlib.Path(root) / "guest"
    run_dir, n = base / name, 1
    while run_dir.exists():
        n += 1
        run_dir = base / f"{name}-{n}"
    return run_dir


def run_guest(argv, kernel, params, *, timeout=900, kvm="auto", root=None, echo=sys.stdout):
    """Boot kernel with params, run `foliobench <argv>` inside; returns (exit code, run dir,
    guest.json dict). Raises GuestTimeout, GuestUnavailable."""
    from foliobench import results
    reason = unavailable_reason()
    if reason:
        raise GuestUnavailable(f"cannot boot a guest here: {reason}")
    root = pathlib.Path(root) if root else REPO / "results"
    run_dir = new_guest_dir(root, kernel, params)
    run_dir.mkdir(parents=True)
    meta = {"kernel": kernel.release, "image": kernel.image, "host_kernel": os.uname().release,
            "params": dataclasses.asdict(params), "argv": list(argv), "timeout_s": timeout}
    with tempfile.TemporaryDirectory(prefix="foliobench-guest-", dir="/var/tmp") as tmp, \
            _boot_lock(params.cpus):
        hide = pathlib.Path(tmp) / "empty"
        hide.mkdir()
        NUMBA_CACHE.mkdir(parents=True, exist_ok=True)
        (GUEST_CACHE / "matplotlib").mkdir(exist_ok=True)
        disk_image = None
        if params.disk:
            disk_image = pathlib.Path(tmp) / "scratch.img"
            with open(disk_image, "wb") as f:
                f.truncate(params.disk)
            subprocess.run(["mkfs.ext4", "-q", "-F", str(disk_image)], check=True,
                           env=dict(os.environ, PATH=_tool_path()), capture_output=True)
        swap_image = None
        if params.swap_disk:
            swap_image = pathlib.Path(tmp) / "swap.img"
            with open(swap_image, "wb") as f:
                f.truncate(params.swap_disk)
        use_kvm = {"on": True, "off": False}.get(kvm)
        if use_kvm is None:
            use_kvm = kvm_works(kernel, str(hide))
        # the script goes in a file: virtme-ng passes --exec on the kernel command line, and a
        # long one (past the 2048 bytes of x86's COMMAND_LINE_SIZE) never boots
        script = guest_script(argv, run_dir, bool(disk_image), bool(swap_image))
        results.write_text(run_dir, "guest.sh", script + "\n")
        cmd = vng_command(kernel, params, f"sh {shlex.quote(str(run_dir / 'guest.sh'))}",
                          kvm=use_kvm, rwdir=str(run_dir), hide_dir=str(hide),
                          disk_image=disk_image, swap_image=swap_image)
        meta.update(accelerator="kvm" if use_kvm else "tcg", vng=cmd)
        started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        cpu = {}
        with open(run_dir / "guest.log", "w") as log:
            try:
                code, ready, total = _stream(cmd, timeout, log, echo, cpu)
            except GuestTimeout as exc:
                meta.update(cpu)
                meta.update(started=started, exit_code=None, error=str(exc),
                            booted=exc.boot_s is not None,
                            boot_s=round(exc.boot_s, 1) if exc.boot_s is not None else None)
                results.write_json(run_dir, "guest.json", meta)
                raise
    meta.update(cpu)
    meta.update(started=started, exit_code=code, booted=ready is not None,
                boot_s=round(ready, 1) if ready is not None else None,
                run_s=round(total - ready, 1) if ready is not None else None,
                total_s=round(total, 1))
    results.write_json(run_dir, "guest.json", meta)
    return code, run_dir, meta


# --- command line ------------------------------------------------------------------------------

def add_parser(sub):
    p = sub.add_parser("guest", help="run a foliobench command inside a disposable guest kernel "
                                     "(virtme-ng, QEMU)")
    p.add_argument("--kernel", help="an installed release (6.1, 6.12.117+deb12-amd64), a "
                                    "bzImage or a kernel build tree (default: the newest in "
                                    "/boot)")
    p.add_argument("--mem", default="4G", help="guest memory (default 4G)")
    p.add_argument("--cpus", type=int, default=2, help="virtual CPUs (default 2)")
    p.add_argument("--numa", type=int, default=1, help="NUMA nodes (memory split evenly, CPUs "
                                                       "round-robin; default 1)")
    p.add_argument("--movable", help="ZONE_MOVABLE size (movablecore=), e.g. 1G")
    p.add_argument("--disk", help="attach an ext4 scratch disk of this size (a virtio block "
                                  f"device, mounted at {GUEST_DISK}: live runs' swap files and "
                                  "page-cache files), e.g. 1G")
    p.add_argument("--swap-disk", help="attach an empty virtio block device of this size for "
                                       "swap (its path in $FOLIOBENCH_GUEST_SWAP: /dev/vdb "
                                       "after --disk, else /dev/vda; matrix --swap /dev/vdb)")
    p.add_argument("--cma", help="reserve a CMA area of this size (cma=, e.g. 256M; the kernel "
                                 "needs CONFIG_CMA, which Debian's 6.1 and 6.12 lack)")
    p.add_argument("--append", default="", help="more kernel parameters")
    p.add_argument("--timeout", type=float, default=900, help="kill the guest after this many "
                                                              "seconds (default 900)")
    p.add_argument("--kvm", choices=("auto", "on", "off"), default="auto",
                   help="auto: KVM when a short probe boot works, else TCG")
    p.add_argument("-o", "--out", help="results root (default: the repository's results/)")
    p.add_argument("command", nargs="*", metavar="-- COMMAND",
                   help="the foliobench command to run inside, after --; several are "
                        f"separated by {SEPARATOR}")
    p.set_defaults(func=main)
    return p


def main(args):
    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise ValueError("guest needs a foliobench command after --, e.g. "
                         "'foliobench guest -- live probe'")
    split_commands(argv)
    if args.timeout <= 0:
        raise ValueError(f"--timeout {args.timeout:g} must be positive")
    kernel = resolve_kernel(args.kernel)
    params = boot_params(args.mem, args.cpus, args.numa, args.movable, args.append,
                         args.disk, kernel=kernel, swap_disk=args.swap_disk, cma=args.cma)
    if args.out:
        from foliobench import results
        results.check_output_dir(pathlib.Path(args.out) / "guest", "-o/--out")
    try:
        code, run_dir, meta = run_guest(argv, kernel, params, timeout=args.timeout,
                                        kvm=args.kvm, root=args.out)
    except (GuestTimeout, GuestUnavailable) as exc:
        print(f"foliobench: {exc}", file=sys.stderr)
        return 1
    if not meta["booted"]:
        print(f"foliobench: kernel {kernel.release} did not boot to the command (vng exit "
              f"{code}); its console is in {run_dir / 'guest.log'}", file=sys.stderr)
        return 1
    print(f"guest {kernel.release} ({meta['accelerator']}): booted in {meta['boot_s']} s, "
          f"command ran {meta['run_s']} s, exit {code}; results: {run_dir}", file=sys.stderr)
    if code:
        print(f"foliobench: the command failed in the guest (exit {code}); its output is in "
              f"{run_dir / 'guest.log'}", file=sys.stderr)
    return code


# --- the matrix of a guest kernel ------------------------------------------------------------

GUEST_MATRIX_PARAMS = dict(mem="4G", cpus=2, numa=2, movable="1G", disk="1G", swap_disk="256M")
GUEST_SWAP = "/dev/vdb"           # the swap disk, after the scratch disk


def guest_matrix(release, args, probes):
    """`foliobench matrix --backend guest:RELEASE`: the live matrix measured inside a guest
    with two NUMA nodes, a ZONE_MOVABLE of 1G, a scratch disk and a swap disk (swap on a whole
    virtio block device unless --swap zram); memory-failure, offlining and zswap allowed (the
    guest is disposable). Returns the matrix document (backend "guest")."""
    import json
    kernel = resolve_kernel(release)
    params = boot_params(**GUEST_MATRIX_PARAMS, kernel=kernel)
    argv = ["matrix", "--backend", "live", "--allow-offline", "--allow-poison", "--allow-zswap",
            "--live-dir", GUEST_DISK, "--sizes", args.sizes, "--seed", str(args.seed),
            "--swap", GUEST_SWAP if args.swap == "file" else args.swap, "--format", "json"]
    if args.mem:
        argv += ["--mem", args.mem]
    if getattr(args, "no_cost_reference", False):
        argv.append("--no-cost-reference")
    for probe in probes:
        argv += ["--probe", probe.name]
    root = pathlib.Path(args.out) if getattr(args, "out", None) else None
    code, run_dir, meta = run_guest(argv, kernel, params, timeout=GUEST_MATRIX_TIMEOUT_S,
                                    root=root, echo=None)
    if not meta["booted"] or code:
        raise GuestFailed(f"the matrix in guest {kernel.release} failed (exit {code}); see "
                          f"{run_dir / 'guest.log'}")
    doc = json.loads((run_dir / "matrix" / "latest.json").read_text())
    for m in doc["matrices"]:
        m.update(backend="guest", label=f"guest {m['kernel']}",
                 guest={k: meta[k] for k in ("params", "accelerator", "boot_s", "run_s")},
                 guest_dir=str(run_dir))
    doc["backend"] = "guest"
    return doc
