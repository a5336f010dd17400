"""JAX adapters: optax's cross-entropy losses and the log_softmax + gather pattern, each
eager (op-by-op dispatch, `jax.value_and_grad` called directly) and under `jax.jit`.

Nothing here imports jax or optax at module import: `_jax()` does on first use, and turns
on `jax_enable_x64` before any array exists, because without it JAX silently turns every
float64 input into float32 (x64 only changes what 64-bit inputs become; float32 stays
float32 bit for bit - tests/test_jax_adapters.py checks that in a fresh process).

Every adapter differentiates the *sum* of its per-row losses with respect to the logits
(so the gradient is p - y, no 1/N) and returns JAX's outputs in JAX's own dtype.

Ignored rows (`Case.ignored`): optax's two main losses take `where`, and a row whose
`where` is False is left out of the log-softmax and of the sum, so it counts for nothing;
that is their honest way to ignore a row (there is no ignore_index). APIs without `where`
(`safe_softmax_cross_entropy`, the gather pattern) get what users write instead: the
per-row loss times a 0/1 mask before summing. The row's reported loss is that product,
the value the user sums: 0 for a finite row, NaN for an all -inf padding row (NaN * 0),
a finding rather than something to paper over.
"""

from __future__ import annotations

import functools
import time
from typing import Callable

import numpy as np

from harness.adapters import compilecache
from harness.adapters import Adapter, Framework, Output, Prepared, Unsupported, first_line, register, register_framework
from harness.numerics.cases import Case

DENSE_KINDS = ("onehot", "soft", "smoothing")

#: (adapter id, dtype, label kind, shape, device, masked) -> compiled executable. One
#: compilation per key, as a training loop gets: its time is reported once, not re-paid.
_compiled: dict[tuple, Callable] = {}


@functools.cache
def _jax():
    """jax, imported on first use with 64-bit types enabled (before any array is made), and
    its persistent compilation cache on (`compilecache.use_persistent_jax_cache`: each shape
    compiles once per machine, not once per run)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    compilecache.use_persistent_jax_cache(jax)
    return jax


@functools.cache
def _optax():
    """optax, or Unsupported naming what is missing (jax alone ships without it)."""
    _jax()
    try:
        import optax
    except ModuleNotFoundError as exc:
        raise Unsupported(f"optax is not installed: {exc}") from exc
    return optax


def jax_device(device: str):
    """The first JAX device of the harness's device name ("cpu" or "cuda")."""
    jax = _jax()
    try:
        return jax.devices({"cpu": "cpu", "cuda": "gpu"}[device])[0]
    except RuntimeError as exc:  # jax: "Unknown backend: 'gpu' requested, but no platforms ..."
        raise Unsupported(first_line(exc)) from exc


def inputs(case: Case, device: str, dense: bool):
    """(logits, labels, keep) as JAX arrays on `device`, exactly the case's values.

    Logits go in as they are (ml_dtypes.bfloat16 arrays convert without re-rounding).
    Integer labels are int32, JAX's default integer. Dense labels are the case's label
    matrix in the tested dtype; smoothed ones are built the optax way,
    `optax.smooth_labels(jax.nn.one_hot(target, V), eps)` in the tested dtype, outside
    the differentiated function (a data pipeline's job), so eager and jit see equal labels.
    `keep` is None, or the rows to count (bool, N) when some rows are ignored.
    A 3-D case's arrays go in as (N, T, V) logits and (N, T) labels: optax takes any
    leading axes, and XLA fuses the reductions of a 3-D batch differently.
    """
    jax = _jax()
    dev = jax_device(device)
    logits = jax.device_put(case.unflatten(case.logits), dev)
    target = case.unflatten(case.target.astype(np.int32))
    if not dense:
        labels = jax.device_put(target, dev)
    elif case.label_kind == "smoothing":
        onehot = jax.nn.one_hot(jax.device_put(target, dev), case.shape[1], dtype=logits.dtype)
        labels = _optax().smooth_labels(onehot, case.smoothing)
    else:
        labels = jax.device_put(case.unflatten(case.target_distribution().astype(case.logits.dtype)), dev)
    keep = jax.device_put(case.unflatten(~case.ignored), dev) if case.has_ignored else None
    return logits, labels, keep


def masked(loss, keep):
    """The user pattern for an API with no way to ignore rows: loss * 0/1 mask."""
    return loss if keep is None else loss * keep.astype(loss.dtype)


# Per-row losses: (logits, labels, keep) -> (N,). `keep` is None when nothing is ignored,
# so the unmasked call is exactly the plain API call a user makes.


def optax_dense(logits, labels, keep):
    return _optax().softmax_cross_entropy(logits, labels, where=keep)


def optax_integer(logits, labels, keep):
    return _optax().softmax_cross_entropy_with_integer_labels(logits, labels, where=keep)


def optax_safe(logits, labels, keep):
    optax = _optax()
    if not hasattr(optax, "safe_softmax_cross_entropy"):
        raise Unsupported(f"optax {optax.__version__} has no safe_softmax_cross_entropy")
    return masked(optax.safe_softmax_cross_entropy(logits, labels), keep)


def log_softmax_gather(logits, labels, keep):
    """-log_softmax(z)[target]: the pattern users write when they skip optax."""
    jnp = _jax().numpy
    log_p = _jax().nn.log_softmax(logits, axis=-1)
    return masked(-jnp.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0], keep)


def _summed(per_row):
    """value_and_grad of the summed loss, the per-row losses as aux."""

    def total(logits, labels, keep):
        loss = per_row(logits, labels, keep)
        return loss.sum(), loss

    return _jax().value_and_grad(total, has_aux=True)


def _run(adapter_id: str, per_row, dense: bool, jit: bool, case: Case, device: str) -> Output:
    """Eager: call value_and_grad directly (op-by-op dispatch, never jit). Jit: compile
    ahead of time once per key, timed apart, and run the compiled executable."""
    args = inputs(case, device, dense)
    fn = _summed(per_row)
    compile_seconds = 0.0
    if jit:
        key = (adapter_id, case.dtype, case.label_kind, case.nd_shape, device, args[2] is not None)
        if key not in _compiled:
            t0 = time.perf_counter()
            _compiled[key] = _jax().jit(fn).lower(*args).compile()
            compile_seconds = time.perf_counter() - t0
        fn = _compiled[key]
    (_, loss), grad = fn(*args)
    grad.block_until_ready()
    return Output(np.asarray(loss), np.asarray(grad), compile_seconds=compile_seconds)


def bench_inputs(case: Case, device: str, dense: bool):
    """`inputs` for the bench: dense labels of a one-hot case built on the device by
    `jax.nn.one_hot` in the tested dtype (the same values as `inputs` gives, without a
    float64 N x V matrix on the host: the GPU batches reach 4e9 elements)."""
    if not dense or case.label_kind != "onehot" or case.has_ignored:
        return inputs(case, device, dense)
    jax = _jax()
    logits, labels, _ = inputs(case, device, dense=False)
    return logits, jax.nn.one_hot(labels, case.shape[1], dtype=logits.dtype), None


def device_memory(device: str) -> dict:
    """Prepared's memory hooks on a GPU: XLA's peak bytes in use, which JAX cannot reset, so
    it is the worker's peak so far (batches run smallest first, so it is the largest one's);
    on CPU none (the bench reads the worker's RSS)."""
    if device != "cuda":
        return {}
    dev = jax_device(device)

    def stat(name):
        return lambda: int((dev.memory_stats() or {}).get(name, 0))

    return dict(peak_memory=stat("peak_bytes_in_use"), memory_in_use=stat("bytes_in_use"), memory_kind="xla_peak_bytes_in_use")


def _prepare(per_row, dense: bool, jit: bool, case: Case, device: str) -> Prepared:
    """Forward: the per-row losses; forward_backward: `_summed` (value_and_grad), the call the
    accuracy run makes. Under jit both are compiled ahead of time here, timed apart."""
    jax = _jax()
    args = bench_inputs(case, device, dense)
    passes = {"forward": per_row, "forward_backward": _summed(per_row)}
    compile_seconds = {}
    if jit:
        for name, fn in passes.items():
            t0 = time.perf_counter()
            passes[name] = jax.jit(fn).lower(*args).compile()
            compile_seconds[name] = time.perf_counter() - t0
    forward, forward_backward = passes["forward"], passes["forward_backward"]
    return Prepared(
        forward=lambda: forward(*args),
        forward_backward=lambda: forward_backward(*args),
        sync=jax.block_until_ready,
        compile_seconds=compile_seconds,
        **device_memory(device),
    )


def _register(api: str, per_row, dense: bool, description: str, supports_ignore: bool = True) -> None:
    kinds = DENSE_KINDS if dense else ("index",)
    for jit in (False, True):
        adapter_id = f"jax.{api}" + (".jit" if jit else "")
        compute = functools.partial(_run, adapter_id, per_row, dense, jit)
        mode = "under jax.jit, compiled ahead of time" if jit else "eager"
        register(
            Adapter(
                adapter_id,
                "jax",
                compute,
                f"{description}; {mode}",
                label_kinds=kinds,
                devices=("cpu", "cuda"),
                supports_ignore=supports_ignore,
                prepare=functools.partial(_prepare, per_row, dense, jit),
            )
        )


_register("optax.softmax_cross_entropy", optax_dense, True, "optax.softmax_cross_entropy, dense labels, where= for ignored rows")
_register(
    "optax.softmax_cross_entropy_with_integer_labels",
    optax_integer,
    False,
    "optax.softmax_cross_entropy_with_integer_labels, where= for ignored rows",
)
# Registered whatever the installed optax: the id stays in every results table, and an
# optax without this function (older releases) yields an `unsupported` row saying so,
# decided by hasattr on the real module when the adapter runs - exact, where a version
# threshold read from metadata at registration would be a guess.
_register(
    "optax.safe_softmax_cross_entropy",
    optax_safe,
    True,
    "optax.safe_softmax_cross_entropy (0 log 0 = 0 on -inf logits), loss * mask for ignored rows",
)
_register("log_softmax_gather", log_softmax_gather, False, "jax.nn.log_softmax + take_along_axis, loss * mask for ignored rows")


class Jax(Framework):
    """JAX's glue: x64 enabled before any array exists (float64 cases), optax imported
    with it, `block_until_ready` as the sync, user functions through `jax.value_and_grad`."""

    name = "jax"
    package = "jax"
    # Two workers, as torch's: JAX's eager and jit adapters in one worker were the default
    # run's long pole once torch.compile's compilations were split. XLA's executable for a
    # program does not depend on what the process ran before (tests/test_workers.py).
    worker_shards = (("float16", "float64"), ("bfloat16", "float32"))

    def warm_up(self) -> None:
        _jax()
        try:
            _optax()
        except Unsupported:
            pass

    def to_native(self, a: np.ndarray, device: str):
        return _jax().device_put(a, jax_device(device))

    def to_numpy(self, x) -> np.ndarray:
        return np.array(x, copy=True)

    def sync(self, x):
        return _jax().block_until_ready(x)

    def wrap_function(self, fn, adapter_id: str) -> Adapter:
        """`fn(logits, labels) -> per-row loss` gets the exact logits and int32 class
        indices; jax.value_and_grad of the summed loss gives the gradient, run eagerly (wrap
        `fn` in jax.jit yourself to test jit)."""
        return _user_function(fn, adapter_id)


FRAMEWORK = register_framework(Jax())


def _user_function(fn, adapter_id: str) -> Adapter:
    """See `Jax.wrap_function`."""

    def per_row(logits, labels, keep):
        return fn(logits, labels)

    def compute(case: Case, device: str) -> Output:
        logits, labels, _ = inputs(case, device, dense=False)
        (_, loss), grad = _summed(per_row)(logits, labels, None)
        grad.block_until_ready()
        return Output(np.asarray(loss), np.asarray(grad))

    return Adapter(adapter_id, "jax", compute, f"user function {adapter_id}", label_kinds=("index",), devices=("cpu", "cuda"))
