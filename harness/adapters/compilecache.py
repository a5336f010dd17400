"""Compilers' on-disk caches: a fresh private folder per process for torch.compile's graphs
and kernels; persistent folders private to the user and the CPU for what does not depend on
the program (inductor's ISA probes and precompiled headers, `use_private_inductor_toolchain`)
and for JAX (`use_persistent_jax_cache`, at the end).

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

Two things inductor builds are not the program's and are kept per user and CPU: the probes
that decide which vector ISA the kernels use (a few test programs built with each ISA's flags
and loaded in a child process: 10-11 CPU seconds per process here, before the first graph)
and the precompiled header every kernel includes. Both are keyed by what decides their bits:
the probes by the compiler's version, the ISA flags and torch's version (inductor's own
fingerprint, made for this reuse), the header by the preprocessed header text, the full
command line (ISA flags and `CPU_CAPABILITY_*` macros included) and the compiler's version.
The probes still load their programs in a child on every start (an ISA the CPU or the loader
refuses is still refused). A torch worker's first graph went from 14-25 s to 6.6 s.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile


@functools.cache
def fresh_dir(name: str) -> str:
    """This process's private folder for `name`'s cache (made once per process), removed
    at exit (`remove_fresh_dirs`)."""
    path = tempfile.mkdtemp(prefix=f"cestab-{name}-")
    _FRESH.append(path)
    return path


_FRESH: list[str] = []  # the folders `fresh_dir` made in this process


@atexit.register
def remove_fresh_dirs() -> None:
    """Remove this process's fresh folders: at exit, and before a worker leaves without the
    interpreter's teardown (`workers._leave`)."""
    while _FRESH:
        shutil.rmtree(_FRESH.pop(), ignore_errors=True)


def without_fresh_dirs(text: str) -> str:
    """`text` with this process's fresh folders named by what they are (`<cestab-inductor
    folder>`), not by their random paths: an error message that quotes a kernel's file (a
    torch.compile kernel's "index out of bounds" names its .cpp) is then the same in every
    run, so two runs' tables differ only where the results do."""
    for path in _FRESH:
        if path in text:
            name = os.path.basename(path).rsplit("-", 1)[0]
            text = text.replace(path, f"<{name} folder>")
    return text


def use_fresh_inductor_cache() -> None:
    """Point inductor (its FX graph, AOT-autograd and profile-guided caches) at this process's
    fresh folder; call before torch is imported. Overrides a TORCHINDUCTOR_CACHE_DIR the user
    set, for the reason in the module docstring."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = fresh_dir("inductor")


@functools.cache
def use_private_inductor_toolchain() -> None:
    """Point inductor's precompiled headers and its ISA probes at folders private to this user
    and this CPU (`private_dir`), kept between processes (see the module docstring); call after
    torch is imported, before compiling. Inductor otherwise builds the headers in
    `<tmp>/torchinductor_<user>` whatever TORCHINDUCTOR_CACHE_DIR says (torch 2.13:
    `codecache._HEADER_DIR`, fixed at import), a folder another user can write. Without a
    private folder (none can be made) both go into this process's fresh one. A torch without
    these attributes is left alone. Once per process (cached)."""
    try:
        from torch._inductor import codecache, cpu_vec_isa
    except ImportError:
        return
    fresh = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or fresh_dir("inductor")
    if hasattr(codecache, "_HEADER_DIR"):
        headers = private_dir("inductor-headers") or os.path.join(fresh, "precompiled_headers")
        codecache._HEADER_DIR = headers
        codecache._HEADER_LOCK_DIR = os.path.join(headers, "locks")
    probes = private_dir("inductor-isa")
    if probes is None or not hasattr(cpu_vec_isa, "valid_vec_isa_list"):
        return
    # The probes write into inductor's cache folder (read from the environment at each
    # write); the answers stay in this process (functools caches), the kernels go to `fresh`.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = probes
    try:
        cpu_vec_isa.valid_vec_isa_list()
        cpu_vec_isa.pick_vec_isa()
    finally:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = fresh


#: Where persistent caches live: $CESTAB_CACHE_DIR, else ~/.cache/cestab.
CACHE_ENV = "CESTAB_CACHE_DIR"


def _cpu_key() -> str:
    """A short hash of this CPU's model and feature flags: code compiled for one x86 CPU
    is never loaded on another (an AVX-512 kernel on an AVX2 machine dies of SIGILL)."""
    import hashlib
    import platform

    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features"))]
        text += "".join(sorted(set(lines)))
    except OSError:
        text += platform.processor()
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def private_dir(name: str) -> str | None:
    """A persistent folder for `name`'s cache, private to this user and this CPU:
    `<cache>/<name>-<cpu key>`, mode 0700. None (no persistent cache) when the folder
    cannot be made, or is not a directory owned by this user that nobody else can write:
    a cache is code this process will run."""
    import stat

    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "cestab")
    path = os.path.join(root, f"{name}-{_cpu_key()}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None
    return path


def use_persistent_jax_cache(jax) -> str | None:
    """Turn on JAX's persistent compilation cache in `private_dir("jax")`, for every
    compilation (jit's and the op-by-op ones of eager dispatch: a threshold of 0 s and 0
    bytes). Unlike inductor's cache (above), a hit is the executable a compile would give:
    JAX's key hashes the program (HLO), the compile options, XLA_FLAGS (so the gate's
    `--xla_cpu_max_isa=AVX2` has entries of its own) and the jax/jaxlib versions, and the
    folder is per CPU. What it saves: the JAX worker of a default run compiles each shape
    once per machine instead of once per run. Returns the folder, or None if there is none."""
    path = private_dir("jax")
    if path is None:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path
