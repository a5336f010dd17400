"""Private, per-user cache folders for the frameworks' compilation caches.

Compiling is most of what a jitted adapter costs on a small batch (jax.jit, XLA,
torch.compile's inductor). Both JAX and inductor can keep compiled code on disk, so a
second run starts warm. Where they keep it matters: inductor's default is
`/tmp/torchinductor_<user>`, a shared folder another user (or a stale, half-written
cache of another version) can corrupt or pre-seed, and its code is loaded and run. So
cestab gives each framework a folder under the user's own cache home
(`$XDG_CACHE_HOME/cestab/<name>`, else `~/.cache/cestab/<name>`), created with mode 0700
and used only when it is owned by this user and writable by nobody else; otherwise the
framework runs without a persistent cache (`None`), never with a shared one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def cache_home() -> Path:
    base = os.environ.get("XDG_CACHE_HOME")
    return Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"


def private_dir(name: str) -> Path | None:
    """`<cache home>/cestab/<name>`, made private (0700); None if it cannot be made or is
    not this user's alone."""
    path = cache_home() / "cestab" / name
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = path.stat()
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            return None
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            os.chmod(path, 0o700)
            if path.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return None
    except OSError:
        return None
    return path


def use_inductor_cache() -> None:
    """Point torch.compile's inductor (and its FX graph cache) at a private folder; call
    before torch is imported. A folder the user set (TORCHINDUCTOR_CACHE_DIR) is kept."""
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return
    path = private_dir("inductor")
    if path is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)


def use_jax_cache(jax) -> None:
    """Turn on JAX's persistent compilation cache in a private folder, for every
    compilation however short (the default skips those under a second: all of ours).
    A folder the user configured (JAX_COMPILATION_CACHE_DIR) is kept."""
    if jax.config.jax_compilation_cache_dir:
        return
    path = private_dir("jax")
    if path is None:
        return
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def use_private_inductor_headers() -> None:
    """Inductor builds its precompiled C++ headers in `<tempdir>/torchinductor_<user>`
    whatever TORCHINDUCTOR_CACHE_DIR says (torch 2.13: `codecache._HEADER_DIR`, fixed at
    import), and includes them in every kernel it compiles: a shared /tmp folder again. Point
    it into the private cache folder; call after torch is imported, before compiling."""
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not folder:
        return
    try:
        from torch._inductor import codecache
    except ImportError:
        return
    if hasattr(codecache, "_HEADER_DIR"):
        codecache._HEADER_DIR = os.path.join(folder, "precompiled_headers")
        codecache._HEADER_LOCK_DIR = os.path.join(codecache._HEADER_DIR, "locks")
