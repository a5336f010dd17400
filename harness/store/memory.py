"""The one place that bounds how much memory a request may need, before anything is allocated.

Why: a `--shapes 4096x32000` run, a 10^12-element `.npy` header or a case file claiming a
huge batch used to end in MemoryError (or in the kernel's OOM killer taking the machine's
other work with it) after minutes of computing. Every size a user controls is checked here
first, against a limit that defaults to half of this machine's memory (or of the cgroup's
limit, in a container) and is set with `--max-memory`; the error says how much the request
needs, so the user knows what to ask for.

The figures are estimates of the peak, measured on a numpy run: one case of N x V logits
holds, in the driver, the logits, the float64 reference (logits, probabilities, gradient)
and the metrics' float64 work, about 88 bytes per element for float64 cases; a worker
holds a copy of the logits and its framework's own work and outputs. `BYTES_PER_ELEMENT`
rounds the total up.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from harness.errors import UsageError

#: Peak bytes per logit element of one case while it runs (driver + one worker), measured
#: at 88 (float64, soft labels) in the driver, rounded up for the worker's share.
BYTES_PER_ELEMENT = 128
#: The default limit: this fraction of the machine's (or container's) memory.
DEFAULT_FRACTION = 0.5
#: Environment variable read when `--max-memory` is not given (same syntax).
ENV = "CESTAB_MAX_MEMORY"

_limit: int | None = None

_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse(text: str) -> int:
    """Bytes from "512M", "8G", "1.5g", "1000000" (binary units); UsageError otherwise."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([kmgt]?)(?:i?b)?\s*", str(text).lower())
    if not m:
        raise UsageError(f"memory size must be a number with an optional unit K, M, G or T, got {text!r}")
    value = float(m[1]) * _UNITS[m[2]]
    if not math.isfinite(value) or value < 2**20 or value > 2**60:
        raise UsageError(f"memory size must be between 1M and 1E (2**60 bytes), got {text!r}")
    return int(value)


def machine_bytes() -> int:
    """Physical memory, or the cgroup's limit when that is lower (containers, CI runners)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def default_limit() -> int:
    return int(machine_bytes() * DEFAULT_FRACTION)


def limit() -> int:
    """The bound in bytes: `set_limit`'s, else $CESTAB_MAX_MEMORY, else half the machine."""
    if _limit is not None:
        return _limit
    env = os.environ.get(ENV)
    return parse(env) if env else default_limit()


def set_limit(nbytes: int | None) -> None:
    """Set (None: reset to the default) the bound for this process (the CLI's --max-memory)."""
    global _limit
    _limit = nbytes


def human(nbytes: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{int(nbytes)} B"


def require(nbytes: float, what: str) -> None:
    """UsageError, before allocating, if `what` needs more than the limit."""
    bound = limit()
    if nbytes > bound:
        raise UsageError(
            f"{what} needs about {human(nbytes)} of memory, more than the limit of {human(bound)} "
            f"(--max-memory or ${ENV}; default {DEFAULT_FRACTION:.0%} of this machine's {human(machine_bytes())})"
        )


def case_bytes(elements: int) -> int:
    """Peak bytes of running one case of `elements` logits (see `BYTES_PER_ELEMENT`)."""
    return int(elements) * BYTES_PER_ELEMENT


def ahead_elements(adapters: int) -> int:
    """How many logit elements of cases may wait in the frameworks' lanes at once
    (`runner._pipelined`) for `adapters` adapters a case: a quarter of the limit, each
    element holding its logit and every adapter's gradient element (float64 at most: 8 bytes
    each). Half the machine's 24 GiB and 26 adapters: about 15 M elements."""
    return max(1, limit() // 4 // (8 * (1 + max(1, int(adapters)))))


def require_case(shape, dtype: str = "", what: str = "") -> None:
    """Bound one case of logits `shape` (N, V) or (N, T, V) before it is drawn or loaded."""
    elements = math.prod(int(d) for d in shape)
    label = what or f"a {'x'.join(str(int(d)) for d in shape)}{' ' + dtype if dtype else ''} case"
    require(case_bytes(elements), label)


#: glibc's malloc settings for a process that makes and frees many arrays of about a
#: megabyte (`reuse_freed_memory`): below MMAP_THRESHOLD an array comes from the heap, and
#: up to TRIM_THRESHOLD of freed heap stays with the process for the next one.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 128 << 20


def reuse_freed_memory() -> bool:
    """Keep freed memory for reuse instead of handing it back to the kernel at once.

    Why: judging a 4 x 32000 case makes ~50 temporaries of 1 MB. glibc's defaults map such
    arrays afresh (or trim the heap once they are freed), so every one is faulted in page by
    page: a default run took 10.5 M page faults and 40 s of system time, and `metrics.measure`
    on that case ran 1.5x faster with these settings. Linux/glibc only (mallopt); elsewhere
    nothing changes. Returns whether the settings took."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
