"""torch adapters: F.cross_entropy, log_softmax + nll_loss, softmax then log, torch.compile.

torch is imported inside the functions (`_torch()`), never when this module is imported,
so listing adapters loads no framework. Every adapter runs on the case's exact logits as a
tensor of the tested dtype, takes the gradient with autograd of the *sum* of the per-row
losses (so it is p - y, no 1/N), and returns torch's own output dtype unconverted.

Labels are given the way each API takes them: class indices as int64; one-hot and soft
labels as the dense distribution rounded to the tested dtype (the same bits every framework
gets); smoothing through `label_smoothing` where the API has it, else as a dense smoothed
distribution. Ignored rows use `ignore_index` where the API has one and, in the hand-written
patterns, a multiplied 0/1 mask, as user code does. An all -inf padding row then still
poisons the gradient with NaN (0 * NaN): that is a finding, not something to fix here.
"""

from __future__ import annotations

import functools
import time
import types

import ml_dtypes
import numpy as np

from harness.adapters import compilecache
from harness.adapters import Adapter, Framework, Output, Prepared, Unsupported, first_line, register, register_framework
from harness.numerics.cases import Case

IGNORE_INDEX = -100  # torch's default ignore_index
DENSE_KINDS = ("onehot", "soft")
DEVICES = ("cpu", "cuda")

#: Phrases of torch's refusals ("... not implemented for 'Half'", "... not supported ...").
REFUSALS = ("not implemented for", "not supported")


class Torch(Framework):
    """PyTorch's glue: bfloat16 through its bits, CUDA synchronisation, refusals by phrase
    ("... not implemented for 'Half'"), user functions differentiated by autograd."""

    name = "torch"
    package = "torch"
    refusals = REFUSALS
    # Two workers: torch.compile's ~38 fresh compilations of a default run (~170 s in one
    # process) were its long pole. Each dtype's graphs are its own (one code object per
    # signature, `compiled_cross_entropy`), so they compile as they do in one process (the
    # gate's rows are unchanged; tests/test_workers.py). Split by compile time measured here.
    worker_shards = (("float16", "float64"), ("bfloat16", "float32"))

    def refusal_types(self):
        return (RuntimeError,)  # NotImplementedError and dynamo's errors are RuntimeErrors

    def warm_up(self) -> None:
        _torch()

    def set_threads(self, n: int) -> None:
        torch = _torch()
        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only before the first parallel work; the budget above still holds
            pass

    def to_native(self, a: np.ndarray, device: str):
        return to_torch(a, device)

    def to_numpy(self, x) -> np.ndarray:
        return to_numpy(x)

    def sync(self, x):
        torch = _torch()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return x

    def wrap_function(self, fn, adapter_id: str) -> Adapter:
        """`fn(logits, target) -> per-row loss` gets the exact logits (a leaf tensor of the
        tested dtype on the device) and int64 class indices; torch's autograd of the summed
        loss gives the gradient. The kernel author's entry point:
        `cestab run --adapter mypkg.mymodule:my_loss`."""
        return _user_function(fn, adapter_id)


FRAMEWORK = register_framework(Torch())


@functools.cache
def _torch():
    compilecache.use_fresh_inductor_cache()  # before the import; see harness/adapters/compilecache.py
    import torch

    return torch


def native_dtype(name: str):
    """torch's dtype for a tested dtype name."""
    return getattr(_torch(), name)  # torch.float16, torch.bfloat16, ...


def to_torch(a: np.ndarray, device: str):
    """An exact copy of `a` on `device`. torch cannot read ml_dtypes' bfloat16, so bfloat16
    travels as its uint16 bit pattern; the copy keeps the case's arrays unaliased."""
    torch = _torch()
    a = np.ascontiguousarray(a)
    if a.dtype == ml_dtypes.bfloat16:
        t = torch.from_numpy(a.view(np.uint16).copy()).view(torch.bfloat16)
    else:
        t = torch.from_numpy(a.copy())
    if device == "cuda" and not torch.cuda.is_available():  # a CPU-only build, or no GPU
        try:
            torch.zeros(1, device="cuda")
        except (AssertionError, RuntimeError) as exc:  # torch's own words for why not
            raise Unsupported(first_line(exc)) from exc
    return t.to(torch.device(device))


def to_numpy(t) -> np.ndarray:
    """A host copy of tensor `t` in its own dtype (bfloat16 back through its bits)."""
    torch = _torch()
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.uint16).numpy().view(ml_dtypes.bfloat16).copy()
    return t.numpy().copy()


def index_target(case: Case, device: str):
    """Class indices (int64), ignored rows set to `IGNORE_INDEX`."""
    target = case.target.astype(np.int64)
    if case.has_ignored:
        target[case.ignored] = IGNORE_INDEX
    return to_torch(case.unflatten(target), device)


def dense_labels(case: Case, device: str):
    """The dense label matrix rounded to the tested dtype, as user code would hold it."""
    return to_torch(case.unflatten(case.target_distribution().astype(case.logits.dtype)), device)


def keep_rows(case: Case, loss):
    """loss * mask, 0 on ignored rows: how hand-written losses drop padding."""
    if not case.has_ignored:
        return loss
    return loss * to_torch(case.unflatten((~case.ignored).astype(case.logits.dtype)), loss.device.type)


def classes_in_dim1(t):
    """(N, T, V) -> (N, V, T): F.cross_entropy and F.nll_loss want the classes in dimension 1
    for sequence batches (the K-dimensional form), so sequence models call them this way;
    softmax then runs over a strided dimension, a different kernel from the 2-D one."""
    return t.transpose(1, -1) if t.dim() == 3 else t


def torch_refusals():
    """Turn torch's refusal of a combination into `Unsupported`; other errors pass."""
    return FRAMEWORK.refusals_as_unsupported()


def loss_and_grad(loss_fn, z, target) -> tuple:
    """Per-row loss and d(sum loss)/dz by autograd (eager)."""
    with torch_refusals():
        loss = loss_fn(z, target)
        (grad,) = _torch().autograd.grad(loss.sum(), z)
    return loss, grad


def logits(case: Case, device: str):
    """The case's exact logits as a leaf tensor that autograd differentiates: (N, V), or
    (N, T, V) for a 3-D case, as the model produced them."""
    return to_torch(case.unflatten(case.logits), device).requires_grad_()


def cross_entropy_target(case: Case, device: str) -> tuple:
    """F.cross_entropy's target and its form: class indices ("index", with ignore_index and
    label_smoothing) or class probabilities ("probabilities", one-hot and soft labels).
    torch applies ignore_index only to index targets, so probabilities with ignored rows
    are Unsupported rather than masked behind the API's back."""
    if case.label_kind not in DENSE_KINDS:
        return "index", index_target(case, device)
    if case.has_ignored:
        raise Unsupported("F.cross_entropy's ignore_index applies only to class-index targets")
    return "probabilities", dense_labels(case, device)


def cross_entropy_fn(case: Case, device: str) -> tuple:
    """F.cross_entropy(reduction="none"), see `cross_entropy_target` for the labels."""
    F = _torch().nn.functional
    form, target = cross_entropy_target(case, device)

    def loss_fn(z, t):
        t = classes_in_dim1(t) if form == "probabilities" else t
        return F.cross_entropy(classes_in_dim1(z), t, reduction="none", label_smoothing=case.smoothing,
                               ignore_index=IGNORE_INDEX)

    return loss_fn, target


def log_softmax_nll_fn(case: Case, device: str) -> tuple:
    """F.log_softmax, then F.nll_loss for class indices (with ignore_index) or
    -(y * log_softmax).sum(1) for dense labels (rows dropped by a mask). nll_loss has no
    label smoothing, so "smoothing" is not declared."""
    F = _torch().nn.functional
    if case.label_kind in DENSE_KINDS:
        target = dense_labels(case, device)

        def loss_fn(z, y):
            return keep_rows(case, -(y * F.log_softmax(z, dim=-1)).sum(dim=-1))

    else:
        target = index_target(case, device)

        def loss_fn(z, t):
            return F.nll_loss(classes_in_dim1(F.log_softmax(z, dim=-1)), t, reduction="none", ignore_index=IGNORE_INDEX)

    return loss_fn, target


def softmax_log_fn(case: Case, device: str) -> tuple:
    """The hand-written pattern p = softmax(z); -log p at the target (indices, gathered) or
    -(y * log p).sum(1) (dense and smoothed labels). log(0) = -inf once p underflows, and
    0 * -inf = NaN on masked classes: expected to break, which is the point."""
    torch = _torch()
    if case.label_kind == "index":
        target = to_torch(case.unflatten(case.target.astype(np.int64)), device)

        def loss_fn(z, t):
            return keep_rows(case, -torch.log(torch.softmax(z, dim=-1).gather(-1, t[..., None])).squeeze(-1))

    else:
        target = dense_labels(case, device)

        def loss_fn(z, y):
            return keep_rows(case, -(y * torch.log(torch.softmax(z, dim=-1))).sum(dim=-1))

    return loss_fn, target


def eager(build):
    """An adapter's compute from `build(case, device) -> (loss_fn, target)`."""

    def compute(case: Case, device: str) -> Output:
        loss_fn, target = build(case, device)
        loss, grad = loss_and_grad(loss_fn, logits(case, device), target)
        return Output(to_numpy(loss), to_numpy(grad))

    return compute


def device_memory(device: str) -> dict:
    """Prepared's memory hooks: torch's CUDA allocator on cuda; on CPU none (the bench reads
    the worker's RSS, which is what torch's CPU allocator takes from the system)."""
    if device != "cuda":
        return {}
    cuda = _torch().cuda
    return dict(
        peak_memory=cuda.max_memory_allocated,
        reset_peak_memory=cuda.reset_peak_memory_stats,
        memory_in_use=cuda.memory_allocated,
        memory_kind="cuda_max_allocated",
        release=cuda.empty_cache,
    )


def synchronizer(device: str):
    """Prepared.sync: CUDA kernels run asynchronously; CPU ops have finished on return."""

    def sync(result):
        _synchronize(device)
        return result

    return sync


def prepared_calls(case: Case, device: str, call, **extra) -> Prepared:
    """Prepared from `call(z) -> (loss, total)`: forward is the per-row losses with autograd
    recording (as in training), forward_backward adds autograd.grad of `total` w.r.t. z."""
    torch = _torch()
    z = logits(case, device)

    def forward():
        with torch_refusals():
            return call(z)[0]

    def forward_backward():
        with torch_refusals():
            loss, total = call(z)
            (grad,) = torch.autograd.grad(total, z)
        return loss, grad

    return Prepared(forward, forward_backward, sync=synchronizer(device), **device_memory(device), **extra)


def eager_preparer(build):
    """Adapter.prepare for `build(case, device) -> (loss_fn, target)`, the same loss_fn the
    accuracy run calls."""

    def prepare(case: Case, device: str) -> Prepared:
        loss_fn, target = build(case, device)

        def call(z):
            loss = loss_fn(z, target)
            return loss, loss.sum()

        return prepared_calls(case, device, call)

    return prepare


cross_entropy = eager(cross_entropy_fn)
log_softmax_nll = eager(log_softmax_nll_fn)
softmax_log = eager(softmax_log_fn)


def _cross_entropy_sum(smoothing: float):
    """The function torch.compile traces: per-row F.cross_entropy and their sum."""
    F = _torch().nn.functional

    def cross_entropy_sum(z, target):
        target = classes_in_dim1(target) if target.is_floating_point() else target
        rows = F.cross_entropy(classes_in_dim1(z), target, reduction="none", label_smoothing=smoothing,
                               ignore_index=IGNORE_INDEX)
        return rows, rows.sum()

    return cross_entropy_sum


@functools.cache
def compiled_cross_entropy(dtype: str, target_form: str, smoothing: float, device: str):
    """torch.compile(dynamic=True) of `_cross_entropy_sum`, one per signature.

    Dynamo keeps its compiled graphs, and its limit of 8 recompilations, per *code object*:
    closures of one `def` share them, and past 8 signatures dynamo silently runs eager. So
    each signature gets a copy of the function with its own code object.

    dynamic=True compiles one graph for all shapes with N >= 2 (measured on CPU: guards such
    as V <= 4096 and the N == 1 specialisation add at most a graph or two); the default
    would first compile each signature for one static shape and recompile at the second.
    One-hot and soft labels share `target_form` "probabilities": they trace the same graph.
    """
    compilecache.use_private_inductor_toolchain()
    fn = _cross_entropy_sum(smoothing)
    name = f"cross_entropy_sum_{dtype}_{target_form}_{device}"
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    fresh = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    return _torch().compile(fresh, dynamic=True)


def _graphs_compiled() -> int:
    """How many graphs dynamo has compiled in this process (its own counter; no public API
    says whether a call compiled)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _synchronize(device: str) -> None:
    """Wait for queued device work, so a clock read after it has timed it."""
    if device == "cuda":
        _torch().cuda.synchronize()


def compiled(case: Case, device: str) -> Output:
    """torch.compile of F.cross_entropy(reduction="none") and its sum; backward through it.

    A call that compiles is a warm-up: its time (torch.compile's setup, tracing, inductor,
    the C++ build, one run) is `compile_seconds`, and the result comes from a second, warm
    call. Dynamo is told to fail rather than fall back to eager when it runs out of
    recompilations, so this adapter never reports eager numbers as compiled ones.
    """
    torch = _torch()
    form, target = cross_entropy_target(case, device)
    z = logits(case, device)

    def run() -> tuple:
        fn = compiled_cross_entropy(case.dtype, form, case.smoothing, device)  # cached
        with torch_refusals():
            rows, total = fn(z, target)
            (grad,) = torch.autograd.grad(total, z)
        return rows, grad

    start = time.perf_counter()  # the first access to torch._dynamo imports it (~0.8 s)
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        before = _graphs_compiled()
        loss, grad = run()
        _synchronize(device)
        seconds = time.perf_counter() - start
        compile_seconds = 0.0
        if _graphs_compiled() != before:
            compile_seconds = seconds
            loss, grad = run()
    return Output(to_numpy(loss), to_numpy(grad), compile_seconds=compile_seconds)


def prepare_compiled(case: Case, device: str) -> Prepared:
    """The compiled function timed as the accuracy run calls it; the first call of each pass
    compiles (forward graph, then the backward graph), so it is the warm-up."""
    torch = _torch()
    form, target = cross_entropy_target(case, device)
    fn = compiled_cross_entropy(case.dtype, form, case.smoothing, device)

    def call(z):
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
            return fn(z, target)

    return prepared_calls(case, device, call, compiles_on_first_call=True)


register(
    Adapter(
        "torch.cross_entropy",
        "torch",
        cross_entropy,
        "F.cross_entropy(reduction='none'): indices with ignore_index/label_smoothing, or probabilities",
        devices=DEVICES,
        supports_ignore=True,  # index and smoothing; one-hot/soft with ignored rows: Unsupported
        prepare=eager_preparer(cross_entropy_fn),
    )
)
register(
    Adapter(
        "torch.log_softmax_nll",
        "torch",
        log_softmax_nll,
        "F.log_softmax then F.nll_loss (indices) or -(y * log_softmax).sum(1) (dense labels)",
        label_kinds=("index", "onehot", "soft"),
        devices=DEVICES,
        supports_ignore=True,
        prepare=eager_preparer(log_softmax_nll_fn),
    )
)
register(
    Adapter(
        "torch.softmax_log",
        "torch",
        softmax_log,
        "hand-written: p = torch.softmax(z); -log p at the target, or -(y * log p).sum(1)",
        devices=DEVICES,
        supports_ignore=True,
        prepare=eager_preparer(softmax_log_fn),
    )
)
register(
    Adapter(
        "torch.compile.cross_entropy",
        "torch",
        compiled,
        "torch.compile(dynamic=True) of F.cross_entropy(reduction='none') and its sum",
        devices=DEVICES,
        supports_ignore=True,  # as torch.cross_entropy
        prepare=prepare_compiled,
    )
)


def _user_function(fn, adapter_id: str) -> Adapter:
    """See `Torch.wrap_function`."""

    def build(case: Case, device: str) -> tuple:
        return fn, to_torch(case.target.astype(np.int64), device)

    return Adapter(adapter_id, "torch", eager(build), f"user function {adapter_id}", label_kinds=("index",), devices=DEVICES,
                   prepare=eager_preparer(build))
