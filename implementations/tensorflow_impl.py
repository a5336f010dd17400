"""TensorFlow and Keras adapters: tf.nn's fused softmax-CE kernels (eager and XLA) and Keras's
cross-entropy losses on the TensorFlow backend.

Both frameworks' adapters live in this module because Keras 3 here runs on TensorFlow.
Neither is imported until an adapter runs (`frameworks`).

What each adapter feeds its API is what a user would write:
- logits become a tf tensor of the case's dtype, bit for bit (TF stores bfloat16 as
  `ml_dtypes.bfloat16`, so `tf.constant` copies it exactly; a test checks all 65536 patterns);
- sparse APIs get the int64 class indices; dense APIs get `case.target_distribution()` in
  the tested dtype, except smoothing, which is built from one-hot labels *in the tested
  dtype*: by hand (y * (1 - eps) + eps / V) for tf.nn, by `label_smoothing=eps` for Keras;
- Keras losses are built with `dtype=case.dtype` and `reduction=None`. Their default dtype is
  `keras.backend.floatx()` (float32), which would silently compute a float64 (or bfloat16)
  case in float32; with the tested dtype Keras casts `y_true` to it, so in bfloat16 a class
  index above 256 is rounded to a neighbouring class - a finding, left as it is.

The gradient is TF's own autodiff (`tf.GradientTape`) of the sum of per-row losses, p - y.
"""

from __future__ import annotations

import functools
import os
import time

import numpy as np

from harness.adapters import Adapter, Framework, Output, Prepared, register, register_framework
from harness.numerics.cases import Case

DENSE_KINDS = ("onehot", "soft", "smoothing")

#: The class Keras's sparse loss is told to ignore; ignored rows get it as their target.
#: -1 is exact in every dtype, so the loss dtype cast cannot turn it into a real class.
IGNORE_CLASS = -1

#: Phrases of TensorFlow's errors that mean "no kernel for this dtype", not a bug.
REFUSALS = (
    "Could not find device for node",  # eager: no kernel registered for T=DT_...
    "list of allowed values",  # the op's type attribute T does not allow the dtype
    "Detected unsupported operations when trying to compile",  # XLA lacks the op/dtype
)


@functools.cache
def frameworks():
    """(tensorflow, keras), imported on first use with quiet logs and the TF backend.

    KERAS_BACKEND is set explicitly (not setdefault): a user's JAX or torch backend would
    make these "keras" rows measure another framework's kernels.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"keras was imported earlier with the {keras.backend.backend()} backend")
    return tf, keras


class Tensorflow(Framework):
    """TensorFlow's (and Keras's: one runtime, one worker) glue: quiet logs and the TF
    backend set before import, "no kernel for this dtype" errors as refusals, user
    functions through a GradientTape."""

    name = "tensorflow"
    package = "tensorflow"
    refusals = REFUSALS
    quote_first_line = True

    def refusal_types(self):
        tf, _ = frameworks()
        return (tf.errors.NotFoundError, tf.errors.InvalidArgumentError, TypeError)

    def warm_up(self) -> None:
        frameworks()

    def set_threads(self, n: int) -> None:
        tf, _ = frameworks()
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # the runtime already started: TF_NUM_*_THREADS set before import hold
            pass

    def to_native(self, a: np.ndarray, device: str):
        return frameworks()[0].constant(a)

    def to_numpy(self, x) -> np.ndarray:
        return np.array(x.numpy(), copy=True)

    def sync(self, x):
        return materialize(x)

    def wrap_function(self, fn, adapter_id: str) -> Adapter:
        """`fn(logits, labels) -> per-row loss` gets the exact logits and int64 class
        indices as tf tensors; a GradientTape of the summed loss gives the gradient."""
        return _user_function(fn, adapter_id)


FRAMEWORK = register_framework(Tensorflow())


def refusals_as_unsupported():
    """Turn TensorFlow's "no kernel for this dtype" errors into `Unsupported` (first line)."""
    return FRAMEWORK.refusals_as_unsupported()


def logits_tensor(case: Case):
    """The case's logits as a tf tensor of the same dtype and bits, (N, T, V) for a 3-D case:
    tf.nn and Keras take any leading axes, labels shaped alike (`case.unflatten`)."""
    tf, _ = frameworks()
    z = tf.constant(case.unflatten(case.logits))
    if z.dtype.name != case.dtype:
        raise TypeError(f"logits became {z.dtype.name}, expected {case.dtype}")
    return z


def dense_labels(case: Case):
    """Dense labels in the tested dtype; for "smoothing" the *unsmoothed* one-hot rows."""
    if case.label_kind == "smoothing":
        y = np.zeros(case.shape)
        y[np.arange(case.shape[0]), case.target] = 1.0
    else:
        y = case.target_distribution()
    return frameworks()[0].constant(case.unflatten(y.astype(case.logits.dtype)))


def loss_and_grad(loss_fn, z, labels):
    """Per-row loss and the gradient of its sum w.r.t. the logits."""
    tf, _ = frameworks()
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = loss_fn(z, labels)
        total = tf.reduce_sum(loss)
    return loss, tape.gradient(total, z)


def to_output(loss, grad, compile_seconds: float = 0.0) -> Output:
    return Output(loss.numpy(), grad.numpy(), compile_seconds=compile_seconds)


# --- tf.nn ---------------------------------------------------------------------------------


def tf_dense(eps: float):
    """tf.nn.softmax_cross_entropy_with_logits, smoothing the labels in their own dtype."""

    def loss_fn(z, y):
        tf, _ = frameworks()
        if eps:
            y = y * (1 - eps) + eps / y.shape[-1]  # as a user writes it, in y's dtype
        return tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=z)

    return loss_fn


def tf_sparse(z, target):
    return frameworks()[0].nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=z)


def tf_inputs(case: Case, sparse: bool):
    labels = frameworks()[0].constant(case.unflatten(case.target)) if sparse else dense_labels(case)
    return logits_tensor(case), labels


def tf_eager(sparse: bool):
    def compute(case: Case, device: str) -> Output:
        loss_fn = tf_sparse if sparse else tf_dense(case.smoothing)
        with refusals_as_unsupported():
            return to_output(*loss_and_grad(loss_fn, *tf_inputs(case, sparse)))

    return compute


@functools.cache
def xla_function(sparse: bool, dtype: str, label_kind: str, eps: float):
    """One jit-compiled loss-and-gradient per (API, dtype, label kind); TF retraces per shape.

    Returns the tf.function and the set of logits shapes it has already compiled.
    """
    tf, _ = frameworks()
    loss_fn = tf_sparse if sparse else tf_dense(eps)
    return tf.function(functools.partial(loss_and_grad, loss_fn), jit_compile=True), set()


def tf_xla(sparse: bool):
    """The same kernel under XLA. On a new shape the first call (tracing, XLA compilation
    and one run) is timed as `compile_seconds`; the result comes from a second call."""

    def compute(case: Case, device: str) -> Output:
        fn, compiled = xla_function(sparse, case.dtype, case.label_kind, case.smoothing)
        z, labels = tf_inputs(case, sparse)
        compile_seconds = 0.0
        with refusals_as_unsupported():
            if case.nd_shape not in compiled:
                t0 = time.perf_counter()
                fn(z, labels)[0].numpy()  # .numpy(): wait for the run to finish
                compile_seconds = time.perf_counter() - t0
                compiled.add(case.nd_shape)
            return to_output(*fn(z, labels), compile_seconds=compile_seconds)

    return compute


# --- Keras ---------------------------------------------------------------------------------


def keras_dense_build(from_logits: bool):
    """CategoricalCrossentropy; with from_logits=False it is fed tf.nn.softmax(z), the
    probability path users write. tf.nn.softmax (not keras.ops.softmax) on purpose:
    keras.ops.softmax tags its output with the logits and the loss quietly uses those."""

    def build(case: Case) -> tuple:
        tf, keras = frameworks()
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=from_logits, label_smoothing=case.smoothing, reduction=None, dtype=case.dtype
        )

        def loss_fn(z, y):
            return loss(y, z if from_logits else tf.nn.softmax(z))

        return loss_fn, logits_tensor(case), dense_labels(case)

    return build


def keras_dense(from_logits: bool):
    build = keras_dense_build(from_logits)

    def compute(case: Case, device: str) -> Output:
        with refusals_as_unsupported():
            return to_output(*loss_and_grad(*build(case)))

    return compute


def keras_sparse(case: Case, device: str) -> Output:
    with refusals_as_unsupported():
        return to_output(*loss_and_grad(*keras_sparse_build(case)))


def keras_sparse_build(case: Case) -> tuple:
    """SparseCategoricalCrossentropy(from_logits=True); ignored rows via `ignore_class`,
    which zeroes their logits before the loss and their loss after it (loss 0, gradient 0)."""
    tf, keras = frameworks()
    target = case.target
    ignore_class = None
    if case.has_ignored:
        target = np.where(case.ignored, IGNORE_CLASS, target)
        ignore_class = IGNORE_CLASS
    loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=ignore_class, reduction=None, dtype=case.dtype
    )
    return (lambda z, t: loss(t, z)), logits_tensor(case), tf.constant(case.unflatten(target))


# --- timing (cestab bench) -----------------------------------------------------------------


def tf_build(sparse: bool):
    """(loss_fn, logits, labels) of a tf.nn adapter, as its compute builds them."""

    def build(case: Case) -> tuple:
        return (tf_sparse if sparse else tf_dense(case.smoothing)), *tf_inputs(case, sparse)

    return build


def materialize(result):
    """Prepared.sync: `.numpy()` of every tensor, so the work behind them has been done."""
    for t in frameworks()[0].nest.flatten(result):
        t.numpy()
    return result


def preparer(build, xla: bool = False):
    """Adapter.prepare from `build(case) -> (loss_fn, logits, labels)`. Under XLA both
    passes are tf.function(jit_compile=True); their first call traces and compiles."""

    def prepare(case: Case, device: str) -> Prepared:
        tf, _ = frameworks()
        loss_fn, z, labels = build(case)
        forward, forward_backward = loss_fn, functools.partial(loss_and_grad, loss_fn)
        if xla:
            forward = tf.function(forward, jit_compile=True)
            forward_backward = tf.function(forward_backward, jit_compile=True)

        def call(fn):
            with refusals_as_unsupported():
                return fn(z, labels)

        return Prepared(
            forward=lambda: call(forward),
            forward_backward=lambda: call(forward_backward),
            sync=materialize,
            compiles_on_first_call=xla,
        )

    return prepare


register(
    Adapter(
        "tf.nn.softmax_cross_entropy_with_logits",
        "tensorflow",
        tf_eager(sparse=False),
        "fused dense-label kernel, eager; smoothed labels built in the tested dtype",
        label_kinds=DENSE_KINDS,
        prepare=preparer(tf_build(sparse=False)),
    )
)
register(
    Adapter(
        "tf.nn.softmax_cross_entropy_with_logits.xla",
        "tensorflow",
        tf_xla(sparse=False),
        "dense-label kernel under tf.function(jit_compile=True)",
        label_kinds=DENSE_KINDS,
        prepare=preparer(tf_build(sparse=False), xla=True),
    )
)
register(
    Adapter(
        "tf.nn.sparse_softmax_cross_entropy_with_logits",
        "tensorflow",
        tf_eager(sparse=True),
        "fused integer-label kernel, eager",
        label_kinds=("index",),
        prepare=preparer(tf_build(sparse=True)),
    )
)
register(
    Adapter(
        "tf.nn.sparse_softmax_cross_entropy_with_logits.xla",
        "tensorflow",
        tf_xla(sparse=True),
        "integer-label kernel under tf.function(jit_compile=True)",
        label_kinds=("index",),
        prepare=preparer(tf_build(sparse=True), xla=True),
    )
)
register(
    Adapter(
        "keras.categorical_crossentropy",
        "keras",
        keras_dense(from_logits=True),
        "CategoricalCrossentropy(from_logits=True, label_smoothing=eps), loss dtype = tested dtype",
        label_kinds=DENSE_KINDS,
        prepare=preparer(keras_dense_build(from_logits=True)),
    )
)
register(
    Adapter(
        "keras.sparse_categorical_crossentropy",
        "keras",
        keras_sparse,
        "SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1); y_true cast to the loss dtype",
        label_kinds=("index",),
        supports_ignore=True,
        prepare=preparer(keras_sparse_build),
    )
)
register(
    Adapter(
        "keras.categorical_crossentropy.probs",
        "keras",
        keras_dense(from_logits=False),
        "CategoricalCrossentropy(from_logits=False) fed tf.nn.softmax(z): clips p to [1e-7, 1 - 1e-7]",
        label_kinds=DENSE_KINDS,
        prepare=preparer(keras_dense_build(from_logits=False)),
    )
)


def _user_function(fn, adapter_id: str) -> Adapter:
    """See `Tensorflow.wrap_function`."""

    def compute(case: Case, device: str) -> Output:
        with refusals_as_unsupported():
            return to_output(*loss_and_grad(fn, *tf_inputs(case, sparse=True)))

    return Adapter(adapter_id, "tensorflow", compute, f"user function {adapter_id}", label_kinds=("index",))
