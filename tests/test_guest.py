"""foliobench guest: kernels resolved and checked, boot parameters checked, bad input refused
before anything boots, a hanging guest killed with its process group, guests limited to the
host's CPUs. The real boots of Debian's 6.1 and 6.12 are tests/test_guest_real_*.py."""
import io
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest

from foliobench import cli, guest

REPO = pathlib.Path(__file__).resolve().parent.parent


def _bzimage(path, release="6.99.0-test"):
    """A file with an x86 setup header whose kernel_version points at `release`."""
    data = bytearray(0x1000)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x400 - 0x200).to_bytes(2, "little")
    text = f"{release} (builder@host) #1 SMP".encode()
    data[0x400:0x400 + len(text)] = text
    path.write_bytes(bytes(data))
    return path


FULL_CONFIG = "\n".join(f"{c}=y" for c in guest.NEEDED_CONFIG + ("CONFIG_NUMA",
                                                                   "CONFIG_VIRTIO_BLK",
                                                                   "CONFIG_EXT4_FS")) + "\n"


def test_bzimage_release_reads_the_setup_header(tmp_path):
    assert guest.bzimage_release(_bzimage(tmp_path / "bz", "6.13.0-rc1+")) == "6.13.0-rc1+"
    (tmp_path / "text").write_text("not a kernel\n")
    with pytest.raises(ValueError, match="not an x86 bzImage"):
        guest.bzimage_release(tmp_path / "text")


def test_resolve_kernel_by_release_prefix_path_and_tree(tmp_path):
    boot = tmp_path / "boot"
    boot.mkdir()
    for rel in ("6.1.0-9-amd64", "6.1.0-12-amd64", "6.12.5+deb12-amd64"):
        _bzimage(boot / f"vmlinuz-{rel}", rel)
        (boot / f"config-{rel}").write_text(FULL_CONFIG)
    assert guest.installed_releases(boot) == ["6.1.0-9-amd64", "6.1.0-12-amd64",
                                              "6.12.5+deb12-amd64"]
    assert guest.resolve_kernel("6.1", boot).release == "6.1.0-12-amd64"     # newest 6.1
    assert guest.resolve_kernel("6.12", boot).release == "6.12.5+deb12-amd64"
    assert guest.resolve_kernel("6.1.0-9-amd64", boot).release == "6.1.0-9-amd64"
    assert guest.resolve_kernel(None, boot).release == "6.12.5+deb12-amd64"
    k = guest.resolve_kernel(str(boot / "vmlinuz-6.1.0-9-amd64"), boot)
    assert k.release == "6.1.0-9-amd64" and k.has("CONFIG_9P_FS")
    with pytest.raises(ValueError, match="installed: 6.1.0-9-amd64, 6.1.0-12-amd64"):
        guest.resolve_kernel("5.10", boot)
    tree = tmp_path / "linux"
    (tree / "arch/x86/boot").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no arch/x86/boot/bzImage"):
        guest.resolve_kernel(str(tree), boot)
    _bzimage(tree / "arch/x86/boot/bzImage", "6.19.0-rc2-dirty")
    (tree / ".config").write_text(FULL_CONFIG.replace("CONFIG_9P_FS=y",
                                                      "# CONFIG_9P_FS is not set"))
    with pytest.raises(ValueError, match="6.19.0-rc2-dirty cannot mount the host's filesystem "
                                         "in a guest: CONFIG_9P_FS not set"):
        guest.resolve_kernel(str(tree), boot)


def test_boot_params_refuse_what_cannot_be_honoured():
    k = guest.Kernel("/x", "6.1.0-test", {c: "y" for c in guest.NEEDED_CONFIG})
    p = guest.boot_params("4G", 2, 2, "1G", "numa_balancing=enable", "256M")
    assert p.label() == "m4G-c2-numa2-movable1G-disk256M-append"
    assert p.kernel_args() == "movablecore=1024M numa_balancing=enable"
    for kwargs, message in [({"movable": "4G"}, "leaves the kernel less than"),
                            ({"mem": "256M"}, "below the 512M"),
                            ({"numa": 0}, "must be at least 1"),
                            ({"numa": 16, "mem": "1G"}, "less than 128M"),
                            ({"cpus": 0}, "must be in 1..64"),
                            ({"disk": "1M"}, "below the 64M"),
                            ({"append": 'a="b"'}, "without quotes")]:
        with pytest.raises(ValueError, match=message):
            guest.boot_params(**kwargs)
    with pytest.raises(ValueError, match="6.1.0-test has no CONFIG_NUMA"):
        guest.boot_params(numa=2, kernel=k)
    with pytest.raises(ValueError, match="6.1.0-test has no CONFIG_VIRTIO_BLK"):
        guest.boot_params(disk="128M", kernel=k)


def test_a_cma_area_is_asked_for_only_where_the_kernel_has_cma():
    with_cma = guest.Kernel("/x", "6.99-cma", {"CONFIG_CMA": "y", "CONFIG_NUMA": "y"})
    p = guest.boot_params("2G", 2, 2, "512M", cma="256M", kernel=with_cma)
    assert p.kernel_args() == "movablecore=512M cma=256M" and p.label().endswith("-cma256M")
    debian = guest.Kernel("/x", "6.12.117+deb12-amd64", {"CONFIG_NUMA": "y"})
    with pytest.raises(ValueError, match="6.12.117.deb12-amd64 has no CONFIG_CMA"):
        guest.boot_params("2G", cma="256M", kernel=debian)
    with pytest.raises(ValueError, match="--cma 1200M leaves the kernel less than"):
        guest.boot_params("2G", movable="512M", cma="1200M", kernel=with_cma)
    assert guest.boot_params("2G", kernel=debian).kernel_args() == ""


def test_vng_command_lays_out_nodes_movable_and_disk():
    k = guest.Kernel("/boot/vmlinuz-x", "x", {})
    p = guest.boot_params("3G", 4, 2, "1G", disk="128M")
    cmd = guest.vng_command(k, p, "echo hi", kvm=False, rwdir="/r", hide_dir="/h",
                            disk_image="/d.img", swap_image="/s.img")
    assert cmd[:3] == ["vng", "-r", "/boot/vmlinuz-x"]
    assert "--disable-kvm" in cmd and "--rwdir=/r" in cmd and "--rodir=/usr/lib/systemd=/h" in cmd
    nodes = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--numa"]
    assert nodes == ["1536M,cpus=0,cpus=2", "1536M,cpus=1,cpus=3"]
    assert cmd[cmd.index("-m") + 1] == "3072M"
    assert cmd[cmd.index("--append") + 1] == "movablecore=1024M"
    assert ("--qemu-opts=-drive file=/d.img,if=virtio,format=raw,cache=unsafe "
            "-drive file=/s.img,if=virtio,format=raw,cache=unsafe") in cmd
    assert cmd[-2:] == ["--exec", "echo hi"]


def test_guest_script_runs_this_checkout_with_its_results_dir():
    script = guest.guest_script(["run", "highalloc", "--param", "a=b c"], "/res/x", disk=True)
    assert script.startswith(f"echo {guest.READY}; ")
    assert "mount -t ext4 /dev/vda /mnt" in script
    assert f"FOLIOBENCH_RESULTS=/res/x PYTHONPATH={REPO}" in script
    assert script.endswith(f"{sys.executable} -m foliobench.guest_inside run highalloc "
                           f"--param 'a=b c'")
    # several commands: one process (the imports, minutes under TCG, are paid once)
    two = guest.guest_script(["live", "probe", "++", "list"], "/res/x")
    assert two.count(" -m foliobench") == 1
    assert two.endswith(" -m foliobench.guest_inside live probe ++ list")
    assert "mount" not in two and "FOLIOBENCH_GUEST_SWAP" not in two
    # zram is a module in Debian's kernels: loaded (with no device) before any command
    assert two.index("modprobe zram num_devices=0") < two.index(" -m foliobench")
    assert "FOLIOBENCH_GUEST_SWAP=/dev/vdb" in guest.guest_script(["list"], "/r", True, True)
    assert "FOLIOBENCH_GUEST_SWAP=/dev/vda" in guest.guest_script(["list"], "/r", False, True)


def test_the_commands_of_a_boot_run_in_one_process_until_one_fails(monkeypatch, capsys):
    from foliobench import guest_inside
    ran = []

    def fake_main(argv):
        ran.append(argv)
        return 3 if argv[0] == "fail" else 0
    monkeypatch.setattr(guest_inside.cli, "main", fake_main)
    assert guest_inside.main(["live", "probe", "++", "list"]) == 0
    assert ran == [["live", "probe"], ["list"]]
    ran.clear()
    assert guest_inside.main(["list", "++", "fail", "x", "++", "list"]) == 3
    assert ran == [["list"], ["fail", "x"]]         # nothing after the failure
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("foliobench guest: `fail x` exit 3 in ")


@pytest.mark.parametrize("argv,message", [
    (["--kernel", "5.99-none", "--", "live", "probe"], "neither a file"),
    (["--kernel", "/nonexistent/bzImage", "--", "live", "probe"], "does not exist"),
    (["--kernel", "/etc/hostname", "--", "live", "probe"], "not an x86 bzImage"),
    (["--mem", "2G", "--movable", "1900M", "--", "live", "probe"], "--movable 1900M"),
    (["--numa", "2", "--", "live", "probe"], "has no CONFIG_NUMA"),
    (["--", "guest", "--", "live", "probe"], "a guest inside a guest"),
    (["--", "live", "probe", "++"], "an empty foliobench command"),
    ([], "needs a foliobench command"),
    (["--timeout", "0", "--", "list"], "--timeout 0"),
    (["--cma", "256M", "--", "live", "probe"], "--cma 256M: kernel 6.1.0-test has no CONFIG_CMA"),
    (["--append", "cma=64M", "--", "list"], "cma= in --append: kernel 6.1.0-test has no "),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, monkeypatch, argv,
                                                          message):
    boot = tmp_path / "boot"
    boot.mkdir()
    _bzimage(boot / "vmlinuz-6.1.0-test", "6.1.0-test")
    (boot / "config-6.1.0-test").write_text(FULL_CONFIG.replace("CONFIG_NUMA=y\n", ""))
    resolve = guest.resolve_kernel
    monkeypatch.setattr(guest, "resolve_kernel", lambda spec=None: resolve(spec, boot))

    def no_boot(*args, **kwargs):
        raise AssertionError("bad input reached run_guest")
    monkeypatch.setattr(guest, "run_guest", no_boot)
    out = tmp_path / "out"
    out.mkdir()
    code = cli.main(["guest", "-o", str(out)] + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("foliobench: error: ") and message in err[0]
    assert list(out.iterdir()) == []


def _running(pid):
    """Alive and not a zombie (an orphan's reaper may be slow to collect it)."""
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_hanging_guest_is_killed_with_its_process_group(tmp_path):
    """_stream() kills the whole group at the timeout: the child 'qemu' too."""
    pidfile = tmp_path / "child"
    cmd = ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo {guest.READY}; echo booted; "
                       f"wait"]
    log = open(tmp_path / "log", "w")
    t0 = time.monotonic()
    with pytest.raises(guest.GuestTimeout, match="past --timeout 2 s and was killed") as exc:
        guest._stream(cmd, 2, log, None)
    assert 0 <= exc.value.boot_s < 2
    assert time.monotonic() - t0 < 2 + 2 * guest.KILL_GRACE_S
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not _running(child)
    log.close()
    assert (tmp_path / "log").read_text() == "booted\n"


def test_stream_reports_exit_code_and_boot_time(tmp_path):
    with open(tmp_path / "log", "w") as log:
        code, ready, total = guest._stream(["sh", "-c", f"sleep 0.3; echo {guest.READY}; "
                                                        f"echo out; exit 3"], 30, log, None)
    assert code == 3 and 0.2 < ready <= total
    assert (tmp_path / "log").read_text() == "out\n"


# the real guests (TCG): tests/test_guest_real_6_1.py, tests/test_guest_real_6_12.py


def test_a_whole_swap_device_only_in_a_guest(monkeypatch):
    from livekernel import swap
    monkeypatch.delenv("FOLIOBENCH_GUEST", raising=False)
    with pytest.raises(ValueError, match="only swapped on in a disposable guest"):
        swap.check_kind("/dev/vdb")
    with pytest.raises(ValueError, match="allowed: file, zram, or /dev/DEVICE"):
        swap.check_kind("tape")
    monkeypatch.setenv("FOLIOBENCH_GUEST", "1")
    assert swap.check_kind("/dev/vdb") == "/dev/vdb"


@pytest.mark.parametrize("argv,message", [
    (["--backend", "guest:5.99-none"], "neither a file"),
    (["--backend", "guest:"], "invalid _backend value"),
    (["--backend", "guest:6.1", "--profile", "linux-6.1"], "--profile selects simulator"),
])
def test_matrix_guest_backend_bad_input(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(guest, "run_guest", lambda *a, **k: pytest.fail("booted"))
    assert cli.main(["matrix", "-o", str(tmp_path)] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert list(tmp_path.iterdir()) == []


def test_guests_run_side_by_side_only_while_the_host_has_cpus_for_them(tmp_path, monkeypatch):
    assert guest.boot_slots(1, host_cpus=2) == 2          # CI: the 6.1 and 6.12 tests at once
    assert guest.boot_slots(2, host_cpus=2) == 1
    assert guest.boot_slots(4, host_cpus=2) == 1
    monkeypatch.setattr(guest, "STATE_DIR", tmp_path)
    monkeypatch.setattr(guest.os, "cpu_count", lambda: 2)
    out = io.StringIO()
    with guest._boot_lock(1, out), guest._boot_lock(1, out):
        assert out.getvalue() == ""                       # two slots: neither waits
        # a third guest finds both slots taken: it says so and waits
        done = threading.Event()

        def third():
            with guest._boot_lock(1, out):
                done.set()
        t = threading.Thread(target=third, daemon=True)
        t.start()
        time.sleep(0.5)
        assert not done.is_set() and "waiting" in out.getvalue()
    t.join(5)
    assert done.is_set()                                  # it got a slot once one was freed


def test_the_guest_side_runs_its_commands_without_pyarrow():
    """guest_inside keeps pyarrow out (13 s of a TCG guest's imports) for every command but
    sweep: importing the command line must not need it."""
    out = subprocess.run([sys.executable, "-m", "foliobench.guest_inside", "list"],
                         capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "highalloc" in out.stdout
    assert "foliobench guest: imports " in out.stderr and "`list` exit 0 in " in out.stderr
