"""Compilation caches live in a private per-user folder, never a shared /tmp one."""

import os
import stat
import subprocess
import sys

from harness.adapters import cachedirs


def test_private_dir_is_made_under_the_cache_home_with_mode_0700(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = cachedirs.private_dir("inductor")
    assert path == tmp_path / "cestab" / "inductor"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_a_cache_dir_others_may_write_is_closed_before_use(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    shared = tmp_path / "cestab" / "jax"
    shared.mkdir(parents=True)
    os.chmod(shared, 0o777)
    assert cachedirs.private_dir("jax") == shared
    assert not shared.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def test_torch_and_jax_workers_compile_into_the_private_folders(tmp_path):
    code = (
        "import os\n"
        "from implementations import torch_impl, jax_impl\n"
        "torch_impl._torch(); jax = jax_impl._jax()\n"
        "from torch._inductor.runtime.cache_dir_utils import cache_dir\n"
        "jax.jit(lambda x: x * 2)(jax.numpy.ones(3)).block_until_ready()\n"
        "torch_impl.compiled_cross_entropy('float32', 'index', 0.0, 'cpu')\n"
        "from torch._inductor import codecache\n"
        "print(cache_dir()); print(jax.config.jax_compilation_cache_dir); print(codecache._HEADER_DIR)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR")}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    inductor, jax_dir, headers = p.stdout.split()
    assert inductor == str(tmp_path / "cestab" / "inductor") and jax_dir == str(tmp_path / "cestab" / "jax")
    assert headers.startswith(inductor)  # inductor's precompiled headers too, not /tmp/torchinductor_<user>
    assert any(name.startswith("jit_") for name in os.listdir(jax_dir))  # a compiled executable was kept
