"""simcore: a deterministic simulation of Linux physical memory in the kernel's own terms."""
import hashlib
import os
import pathlib
import shutil

import numba


def _numba_cache_dir():
    """A compiled-code cache keyed by the hash of simcore's sources.

    numba invalidates a cached function only when its own file changes, not when a module it
    calls into does; keying the whole cache on every source file makes a stale mix impossible."""
    here = pathlib.Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(here.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    name = f"numba-{digest.hexdigest()[:16]}"
    for base in (here / "__pycache__", pathlib.Path.home() / ".cache" / "simcore"):
        try:
            base.mkdir(parents=True, exist_ok=True)
            if not os.access(base, os.W_OK):
                continue
            for old in base.glob("numba-*"):   # caches of earlier sources are never used again
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
            return str(base / name)
        except OSError:
            continue
    return ""


if not os.environ.get("NUMBA_CACHE_DIR"):
    numba.config.CACHE_DIR = _numba_cache_dir()

from .machine import InvariantError, Machine  # noqa: E402
from .strategies import CompactionStrategy, register_strategy, strategies  # noqa: E402
from .units import format_size, parse_size  # noqa: E402
from .vmscan import OutOfMemory  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Machine", "InvariantError", "OutOfMemory", "CompactionStrategy", "register_strategy",
           "strategies", "parse_size", "format_size", "__version__"]
