"""How much memory a simulated run needs, checked before a machine is built.

A simcore.Machine holds a few arrays with one entry per simulated page, so a run's memory grows
with --mem and with the machines alive at once; the estimate below is compared with psutil's
available memory so that a run which cannot fit is refused in one line instead of being ended
by the kernel's OOM killer (or a numpy MemoryError) minutes later.
"""
import psutil

from simcore.units import parse_size

# At most this many seeds per run: each repeat is one more row per strategy, and a run's time
# (not its memory: a machine lives only while its row is measured) grows with it.
MAX_REPEAT = 100
# Peak bytes one simulated page costs while a machine is alive: mem_map (12), the folio handle
# table (8, doubled while it grows) and the pageblock map's per-page scratch (8 + 8), rounded up.
SIM_BYTES_PER_PAGE = 48
# Interpreter, numba, pandas and matplotlib already loaded, and one picture being drawn.
PROCESS_BASE_BYTES = 400 << 20
PICTURE_BYTES = 150 << 20


class NotEnoughMemory(MemoryError, ValueError):
    """A run that would not fit in the memory this host has available; raised before it starts
    (a ValueError too, so the command line reports it as one line, exit code 2)."""


def memory_needed(mem, machines=1, pictures=False):
    """Bytes a simulated run needs: `machines` machines of `mem` alive at once, the process
    itself, and a picture when `pictures`."""
    pages = parse_size(mem, "--mem") // 4096
    return machines * pages * SIM_BYTES_PER_PAGE + PROCESS_BASE_BYTES + \
        (PICTURE_BYTES if pictures else 0)


def check_memory(mem, machines=1, pictures=False, available=None):
    """NotEnoughMemory unless memory_needed() fits in psutil's available memory (or
    `available` bytes): checked before a machine is built, never after it ran out."""
    need = memory_needed(mem, machines, pictures)
    if available is None:
        available = psutil.virtual_memory().available
    if need > available:
        raise NotEnoughMemory(
            f"--mem {mem}: a simulated run of this size needs about {_gib(need)}, "
            f"{machines} machine(s) alive at once, and this host has "
            f"{_gib(available)} available; use a smaller --mem")
    return need


def check_repeat(repeat):
    """ValueError unless 1 <= repeat <= MAX_REPEAT."""
    if isinstance(repeat, bool) or not isinstance(repeat, int) or \
            not 1 <= repeat <= MAX_REPEAT:
        raise ValueError(f"repeat {repeat!r} must be an integer from 1 to {MAX_REPEAT}")
    return repeat


def _gib(nbytes):
    return f"{nbytes / (1 << 30):.1f} GiB"
