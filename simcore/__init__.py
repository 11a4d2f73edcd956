"""simcore: a deterministic simulation of Linux physical memory in the kernel's own terms."""
from .machine import InvariantError, Machine
from .units import format_size, parse_size

__version__ = "0.1.0"
__all__ = ["Machine", "InvariantError", "parse_size", "format_size", "__version__"]
