"""torch.compile's inductor compiles into a fresh private folder per process (never a shared
/tmp one, never what an earlier process left), headers included; JAX keeps no persistent
compilation cache (`harness/adapters/compilecache.py`)."""

import os
import stat
import subprocess
import sys

CODE = (
    "import os, stat\n"
    "from implementations import torch_impl, jax_impl\n"
    "torch_impl._torch(); jax = jax_impl._jax()\n"
    "from harness.adapters import compilecache\n"
    "compilecache.use_fresh_inductor_headers()\n"
    "from torch._inductor.runtime.cache_dir_utils import cache_dir\n"
    "from torch._inductor import codecache\n"
    "print(cache_dir()); print(oct(stat.S_IMODE(os.stat(cache_dir()).st_mode))); print(codecache._HEADER_DIR)\n"
    "print(jax.config.jax_compilation_cache_dir)\n"
)


def _folders(env):
    p = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def test_each_torch_process_compiles_into_its_own_fresh_private_folder_and_jax_keeps_no_cache(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "shared")  # a folder the user set is overridden too
    first, second = _folders(env), _folders(env)
    for inductor, mode, headers, jax_dir in (first, second):
        assert os.path.basename(inductor).startswith("cestab-inductor-") and mode == "0o700"
        assert headers.startswith(inductor)  # inductor's precompiled headers too, not /tmp/torchinductor_<user>
        assert jax_dir == "None"  # no persistent JAX cache: compiled in memory, per process
        assert not os.path.exists(inductor)  # removed when the process ended
    assert first[0] != second[0] and not (tmp_path / "shared").exists()
