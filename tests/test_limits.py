"""Memory and limits: a run keeps no machine, refuses what will not fit, checks --out first."""
import gc
import pathlib
import subprocess
import sys
import weakref

import pytest

import workloads
from workloads.backend import SimBackend
from workloads.base import run_one
from workloads.memory import MAX_REPEAT, NotEnoughMemory, check_memory, check_repeat, memory_needed

REPO = pathlib.Path(__file__).resolve().parent.parent


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "foliobench"] + list(args), cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_a_row_keeps_the_report_artefacts_not_the_machine():
    built = []

    def factory(**kw):
        backend = SimBackend(**kw)
        built.append(weakref.ref(backend.machine))
        return backend

    keep = {}
    row = run_one("highalloc", "folio", quick=True, keep=keep, backend_factory=factory)
    gc.collect()
    assert row["workload"] == "highalloc"
    assert built and built[0]() is None                 # the machine is gone with its run
    assert not any(isinstance(v, SimBackend) for v in keep.values())
    assert {"vmstat_delta", "buddyinfo_before", "buddyinfo_after", "map_after"} <= set(keep)


def test_memory_needed_grows_with_size_and_machines():
    one = memory_needed("16G")
    assert memory_needed("32G") > one
    assert memory_needed("16G", machines=2) - one == memory_needed("32G") - one
    assert memory_needed("16G", pictures=True) > one


def test_check_memory_refuses_what_does_not_fit():
    need = memory_needed("16G")
    assert check_memory("16G", available=need) == need
    with pytest.raises(NotEnoughMemory, match=r"--mem 16G.*needs about .* GiB"):
        check_memory("16G", available=need - 1)
    assert issubclass(NotEnoughMemory, ValueError) and issubclass(NotEnoughMemory, MemoryError)


def test_simbackend_refuses_a_machine_larger_than_available_memory():
    with pytest.raises(MemoryError, match="needs about"):
        SimBackend(mem="64T")


@pytest.mark.parametrize("repeat", [0, MAX_REPEAT + 1, 2.0, True])
def test_repeat_is_bounded(repeat):
    with pytest.raises(ValueError, match="repeat"):
        check_repeat(repeat)
    with pytest.raises(ValueError, match="repeat"):
        workloads.run("highalloc", strategies=["folio"], quick=True, repeat=repeat)


@pytest.mark.parametrize("args, message", [
    (["--repeat", str(MAX_REPEAT + 1)], f"more than {MAX_REPEAT}"),
    (["--mem", "64T"], "needs about"),
    (["--out", "/proc/nonexistent/dir"], "cannot be written"),
])
def test_cli_refuses_before_any_work(args, message):
    proc = run_cli("run", "--all", "--quick", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("args, message", [
    (["--mem", "\uff11G"], "is not a size"),                       # full-width 1
    (["--param", "fill=\uff10.\uff15"], "fill"),
    (["--param", "fill=nan"], "parameter fill=nan is not a finite number"),
    (["--param", "fill=0.5", "--param", "fill=0.6"], "--param fill is given twice"),
    (["--seed", str(1 << 64)], "--seed"),
    (["--seed", "\uff11"], "--seed"),
    (["--me", "1G"], "unrecognized arguments: --me"),                 # no prefix matching
    (["--mem", "-4G"], "--mem -4G: a negative value is not allowed"),
])
def test_cli_bad_numbers_are_named(args, message):
    proc = run_cli("run", "thp-heavy", "--quick", "--no-save", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_api_refuses_non_ascii_digits_nan_and_huge_seeds():
    from simcore.units import parse_size
    from workloads.base import resolve_params
    with pytest.raises(ValueError, match="not a size"):
        parse_size("\uff11\uff16G")
    with pytest.raises(ValueError, match="fill"):
        resolve_params("thp-heavy", {"fill": "\uff10.5"})
    with pytest.raises(ValueError, match="fill=nan"):
        resolve_params("thp-heavy", {"fill": float("nan")})
    with pytest.raises(ValueError, match="seed"):
        workloads.run("highalloc", strategies=["folio"], quick=True, seed=1 << 63)


def test_matrix_takes_live_like_run():
    from foliobench.cli import build_parser
    args = build_parser().parse_args(["matrix", "--live"])
    assert args.backend == "live"
    assert build_parser().parse_args(["matrix"]).backend == "sim"
