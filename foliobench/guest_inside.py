"""The guest's side of `foliobench guest`: the commands of one boot (split at ++) run one after
the other in this one Python process, each only when the one before succeeded, with each
command's time on stderr. Under QEMU's TCG, importing foliobench (numpy, numba, pandas,
matplotlib, read over 9p) takes minutes; one process pays for it once, not once per command."""
import sys
import time

_T0 = time.monotonic(), time.process_time()
# pandas imports pyarrow whenever it is installed: 13 s of a TCG guest's imports, measured
# (docs/guests.md); only `sweep` writes Parquet, so the other commands go without it (pandas
# then keeps its strings in Python objects)
if __name__ == "__main__" and "sweep" not in sys.argv[1:]:
    sys.modules["pyarrow"] = None
from foliobench import cli  # noqa: E402 - timed: the imports are a guest's largest cost
from foliobench.guest import split_commands  # noqa: E402

IMPORT_S = time.monotonic() - _T0[0], time.process_time() - _T0[1]


def main(argv):
    """Exit code of the first command that failed, else 0."""
    # guest.log interleaves stdout and stderr: lines in the order they were printed
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    print(f"foliobench guest: imports {IMPORT_S[0]:.1f} s ({IMPORT_S[1]:.1f} s CPU)",
          file=sys.stderr, flush=True)
    code = 0
    for part in split_commands(argv):
        t0, c0 = time.monotonic(), time.process_time()
        code = cli.main(part)
        sys.stdout.flush()
        print(f"foliobench guest: `{' '.join(part[:2])}` exit {code} in "
              f"{time.monotonic() - t0:.1f} s ({time.process_time() - c0:.1f} s CPU)",
              file=sys.stderr, flush=True)
        if code:
            break
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
