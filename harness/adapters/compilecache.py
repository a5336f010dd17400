"""A fresh, private folder per process for a compiler's on-disk cache (torch.compile's inductor).

Why fresh, not shared and not persistent: a verdict must be a function of the adapter and the
input, never of what compiled on the machine before. Measured (torch 2.13, CPU): the same
`torch.compile` of `F.cross_entropy(label_smoothing=0.1)` on the same float32 input came back
`ok` from a kernel the machine-wide cache (`/tmp/torchinductor_<user>`) held from earlier
processes (forward and backward partitioned one way) and `lossy` (gradient 2.9x the attainable
bound) from a fresh compile (partitioned another way); the fresh result is what every clean CI
machine sees. A cache pre-seeded by another ISA setting (`ATEN_CPU_CAPABILITY`) returned
garbage (every gradient element wrong). Inductor also reads and runs code from that shared
folder, which another user can write.

So each worker process (and the pytest process) gets `<tmp>/cestab-<name>-XXXX` (mode 0700,
from `tempfile.mkdtemp`), removed when the process exits normally (a killed worker leaves it
in the temp folder). The cost is compiling once per process, as on a fresh machine.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile


@functools.cache
def fresh_dir(name: str) -> str:
    """This process's private folder for `name`'s cache (made once per process)."""
    path = tempfile.mkdtemp(prefix=f"cestab-{name}-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def use_fresh_inductor_cache() -> None:
    """Point inductor (its FX graph, AOT-autograd and profile-guided caches) at this process's
    fresh folder; call before torch is imported. Overrides a TORCHINDUCTOR_CACHE_DIR the user
    set, for the reason in the module docstring."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = fresh_dir("inductor")


def use_fresh_inductor_headers() -> None:
    """Inductor builds the precompiled C++ headers every kernel includes in
    `<tmp>/torchinductor_<user>` whatever TORCHINDUCTOR_CACHE_DIR says (torch 2.13:
    `codecache._HEADER_DIR`, fixed at import). Point it into the fresh folder; call after
    torch is imported, before compiling. A torch without that attribute is left alone."""
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    try:
        from torch._inductor import codecache
    except ImportError:
        return
    if folder and hasattr(codecache, "_HEADER_DIR"):
        codecache._HEADER_DIR = os.path.join(folder, "precompiled_headers")
        codecache._HEADER_LOCK_DIR = os.path.join(codecache._HEADER_DIR, "locks")
