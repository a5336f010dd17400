"""torch.compile's inductor compiles its graphs into a fresh private folder per process (never
a shared /tmp one, never what an earlier process left); its ISA probes and precompiled
headers, and JAX's compilations, go into persistent folders private to the user and the CPU,
and a process that finds them there gives the numbers a fresh one gives
(`harness/adapters/compilecache.py`)."""

import os
import stat
import subprocess
import sys

CODE = (
    "import glob, hashlib, os, stat\n"
    "import numpy as np\n"
    "from implementations import torch_impl, jax_impl\n"
    "torch = torch_impl._torch(); jax = jax_impl._jax()\n"
    "from harness.adapters import registry\n"
    "from harness.adapters.workers import call_adapter\n"
    "from harness.inputs import regimes\n"
    "case = regimes.make_case('near_ties', 'float16', (8, 100), 'smoothing', 0)\n"
    "out = call_adapter(registry.get('torch.compile.cross_entropy'), case, 'cpu').output\n"
    "digest = hashlib.sha256(np.asarray(out.loss).tobytes() + np.asarray(out.grad).tobytes()).hexdigest()\n"
    "from torch._inductor.runtime.cache_dir_utils import cache_dir\n"
    "from torch._inductor import codecache, cpu_vec_isa\n"
    "probes = glob.glob(os.path.join(os.environ['CESTAB_CACHE_DIR'], 'inductor-isa-*', '*', '*.so'))\n"
    "print(cache_dir()); print(oct(stat.S_IMODE(os.stat(cache_dir()).st_mode))); print(codecache._HEADER_DIR)\n"
    "print(jax.config.jax_compilation_cache_dir)\n"
    "print(str(cpu_vec_isa.pick_vec_isa()).replace(' ', '+')); print(digest)\n"
    "print(os.listdir(codecache._HEADER_DIR) != ['locks']); print(min(os.stat(p).st_mtime_ns for p in probes))\n"
    "print(glob.glob(os.path.join(cache_dir(), '*', '*.main.cpp')) != [])\n"
)


def _folders(env):
    p = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def test_torch_graphs_compile_fresh_per_process_and_its_toolchain_and_jax_persist_privately(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    cache = str(tmp_path / "cache")
    env["CESTAB_CACHE_DIR"] = cache
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "shared")  # a folder the user set is overridden too
    first, second = _folders(env), _folders(env)
    for inductor, mode, headers, jax_dir, isa, digest, built, probed, kernels in (first, second):
        assert os.path.basename(inductor).startswith("cestab-inductor-") and mode == "0o700"
        assert kernels == "True"  # the graph's kernels were built in the fresh folder
        assert not os.path.exists(inductor)  # removed when the process ended
        # the headers: in the user's own folder (not /tmp/torchinductor_<user>), and built there
        assert os.path.dirname(headers) == cache and os.path.basename(headers).startswith("inductor-headers-")
        assert stat.S_IMODE(os.stat(headers).st_mode) == 0o700 and built == "True"
        assert os.path.dirname(jax_dir) == cache and os.path.basename(jax_dir).startswith("jax-")
    assert first[0] != second[0] and not (tmp_path / "shared").exists()
    assert second[4:6] == first[4:6]  # the same ISA and the same numbers, bit for bit
    assert second[7] == first[7]  # the second process loaded the first one's ISA probes, built none


JAX_CODE = (
    "import hashlib, numpy as np\n"
    "from implementations import jax_impl\n"
    "jax = jax_impl._jax()\n"
    "hits = []\n"
    "jax.monitoring.register_event_listener(lambda name, **kw: hits.append(name) if name.endswith('cache_hits') else None)\n"
    "from harness.adapters import registry\n"
    "from harness.adapters.workers import call_adapter\n"
    "from harness.inputs import regimes\n"
    "case = regimes.make_case('typical', 'bfloat16', (8, 100), 'index', 0)\n"
    "h = hashlib.sha256()\n"
    "for a in ('jax.optax.softmax_cross_entropy_with_integer_labels', 'jax.optax.softmax_cross_entropy_with_integer_labels.jit'):\n"
    "    out = call_adapter(registry.get(a), case, 'cpu').output\n"
    "    h.update(np.asarray(out.loss).tobytes()); h.update(np.asarray(out.grad).tobytes())\n"
    "print(h.hexdigest(), len(hits), jax.config.jax_compilation_cache_dir)\n"
)


def _jax_run(cache):
    env = dict(os.environ, CESTAB_CACHE_DIR=str(cache))
    p = subprocess.run([sys.executable, "-c", JAX_CODE], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    digest, hits, folder = p.stdout.split()
    return digest, int(hits), folder


def test_jax_cache_hit_gives_the_numbers_of_a_fresh_compile(tmp_path):
    first = _jax_run(tmp_path)
    entries = os.listdir(first[2])
    second = _jax_run(tmp_path)
    assert len(entries) > 5  # eager dispatch's compilations are kept too
    assert second[1] >= first[1] + len(entries) // 2  # the second process loads instead of compiling
    assert second[0] == first[0]  # bit for bit, eager and jit
    assert stat.S_IMODE(os.stat(first[2]).st_mode) == 0o700


def test_a_cache_folder_another_user_could_write_is_not_used(tmp_path, monkeypatch):
    from harness.adapters import compilecache

    monkeypatch.setenv("CESTAB_CACHE_DIR", str(tmp_path))
    folder = compilecache.private_dir("jax")
    assert folder is not None and folder.startswith(str(tmp_path))
    os.chmod(folder, 0o777)
    assert compilecache.private_dir("jax") is None
    os.chmod(folder, 0o700)
    (tmp_path / "x").write_text("")
    monkeypatch.setenv("CESTAB_CACHE_DIR", str(tmp_path / "x"))  # not a folder
    assert compilecache.private_dir("jax") is None


def test_an_adapters_error_quoting_its_fresh_inductor_folder_reads_the_same_in_every_run():
    """torch.compile's kernels raise errors that name their .cpp file, inside this process's
    fresh folder (`fresh_dir`, a random name): the message names the folder by what it is, so
    two runs' tables differ only where the results do."""
    import dataclasses

    from harness.adapters import compilecache, registry
    from harness.adapters.contract import Unsupported
    from harness.adapters.workers import call_adapter
    from harness.inputs import regimes

    folder = compilecache.fresh_dir("inductor")
    case = regimes.make_case("typical", "float32", (4, 10), "index", 0)

    def kernel_error(case, device):
        raise RuntimeError(f"kernel, {folder}/ao/cao.main.cpp:118, index out of bounds: 0 <= tmp10 < ks1")

    def refused(case, device):
        raise Unsupported(f"no compiler in {folder}/x")

    adapter = registry.get("numpy.stable")
    error = call_adapter(dataclasses.replace(adapter, compute=kernel_error), case, "cpu")
    assert error.status == "error"
    assert error.message == ("RuntimeError: kernel, <cestab-inductor folder>/ao/cao.main.cpp:118, index out of bounds:"
                             " 0 <= tmp10 < ks1"), error.message
    unsupported = call_adapter(dataclasses.replace(adapter, compute=refused), case, "cpu")
    assert unsupported.message == "no compiler in <cestab-inductor folder>/x", unsupported.message
    assert compilecache.without_fresh_dirs("/tmp/elsewhere/cestab-inductor-x/y") == "/tmp/elsewhere/cestab-inductor-x/y"
