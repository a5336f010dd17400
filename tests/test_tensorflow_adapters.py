"""tf.nn and Keras adapters against the reference, and what TensorFlow/Keras do to inputs.

The findings tests assert what TF 2.21 / Keras 3.15 actually do (checked by hand first):
they document behaviour the harness must report, not behaviour to fix.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from harness.run import judge
from harness.adapters import registry
from harness import adapters
from harness.numerics import dtypes
from harness.numerics import reference
from harness.inputs import regimes  # noqa: E402
from harness.adapters import Unsupported  # noqa: E402
from harness.numerics.cases import Case  # noqa: E402
from implementations import tensorflow_impl  # noqa: E402

DENSE = [
    "tf.nn.softmax_cross_entropy_with_logits",
    "tf.nn.softmax_cross_entropy_with_logits.xla",
    "keras.categorical_crossentropy",
]
SPARSE = [
    "tf.nn.sparse_softmax_cross_entropy_with_logits",
    "tf.nn.sparse_softmax_cross_entropy_with_logits.xla",
    "keras.sparse_categorical_crossentropy",
]
PROBS = "keras.categorical_crossentropy.probs"
ALL = DENSE + SPARSE + [PROBS]
RTOL = {"float32": 1e-5, "float64": 1e-12}


def result(adapter_id: str, case: Case) -> dict:
    ref = reference.loss_and_grad(case)
    out = adapters.get(adapter_id).compute(case, "cpu")
    return judge.accuracy(ref, out.loss, out.grad, case.dtype) | {"out": out, "ref": ref}


def assert_matches_reference(r: dict, dtype: str) -> None:
    # within the textbook bound: ok, or lossy where the max-shift forms lose relative accuracy
    # (smoothed targets near their label, small losses) and a careful implementation does not
    assert r["status"] in ("ok", "lossy"), r["message"]
    rtol = RTOL[dtype]
    np.testing.assert_allclose(r["out"].loss.astype(np.float64), np.asarray(r["ref"].loss, np.float64), rtol=rtol)
    np.testing.assert_allclose(
        r["out"].grad.astype(np.float64), np.asarray(r["ref"].grad, np.float64), rtol=rtol, atol=rtol * 1e-3
    )


def manual(logits, dtype: str, target, **labels) -> Case:
    return Case("manual", "manual", dtype, dtypes.exact(np.asarray(logits), dtype), np.asarray(target), **labels)


def typical_params():
    for adapter_id in ALL:
        kinds = adapters.get(adapter_id).label_kinds
        # The probability path clips p to [1e-7, 1 - 1e-7]: at V=50 some N(0, 3) rows have a
        # target below 1e-7 (test_probs_path_fails_on_typical_logits_at_50_classes): it is held to (64, 10) here.
        shapes = [(64, 10)] if adapter_id == PROBS else [(64, 10), (16, 50)]
        for dtype in RTOL:
            for kind in kinds:
                for shape in shapes:
                    label = f"{adapter_id}-{dtype}-{kind}-{shape[0]}x{shape[1]}"
                    yield pytest.param(adapter_id, dtype, kind, shape, id=label)


@pytest.mark.parametrize("adapter_id, dtype, kind, shape", list(typical_params()))
def test_typical_inputs_agree_with_reference(adapter_id, dtype, kind, shape):
    r = result(adapter_id, regimes.make_case("typical", dtype, shape, kind, seed=1))
    assert_matches_reference(r, dtype)


def test_registry_declares_what_each_adapter_supports():
    found = adapters.all_adapters()
    for adapter_id in ALL:
        a = found[adapter_id]
        assert a.framework == ("keras" if adapter_id.startswith("keras.") else "tensorflow")
        assert set(a.dtypes) == set(dtypes.DTYPE_NAMES)
        assert a.label_kinds == (("index",) if adapter_id in SPARSE else ("onehot", "soft", "smoothing"))
        assert a.supports_ignore == (adapter_id == "keras.sparse_categorical_crossentropy")
        assert registry.framework_version(a.framework) != "unknown"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_every_16_bit_pattern_reaches_tensorflow_unchanged(dtype):
    bits = np.arange(1 << 16, dtype=np.uint16)
    logits = bits.view(dtypes.get(dtype).numpy_dtype).reshape(256, 256)
    case = Case("bits", "manual", dtype, logits, np.zeros(256, np.int64))
    z = tensorflow_impl.logits_tensor(case)
    assert z.dtype.name == dtype
    np.testing.assert_array_equal(tf.bitcast(z, tf.uint16).numpy().ravel(), bits)
    np.testing.assert_array_equal(z.numpy().view(np.uint16).ravel(), bits)  # and back to numpy


@pytest.mark.parametrize("dtype, uint", [("float32", np.uint32), ("float64", np.uint64)])
def test_wide_bit_patterns_reach_tensorflow_unchanged(dtype, uint):
    rng = np.random.default_rng(0)
    bits = rng.integers(0, np.iinfo(uint).max, size=(64, 64), dtype=uint, endpoint=True)
    bits[0, :4] = [1, 2, 3, np.iinfo(uint).max]  # subnormals and a NaN payload
    case = Case("bits", "manual", dtype, bits.view(dtypes.get(dtype).numpy_dtype), np.zeros(64, np.int64))
    np.testing.assert_array_equal(tensorflow_impl.logits_tensor(case).numpy().view(uint), bits)


@pytest.mark.parametrize("dtype", dtypes.DTYPE_NAMES)
def test_outputs_come_back_in_the_tested_dtype(dtype):
    for adapter_id in ALL:
        kind = "index" if adapter_id in SPARSE else "onehot"
        out = adapters.get(adapter_id).compute(regimes.make_case("typical", dtype, (4, 5), kind, seed=0), "cpu")
        assert out.loss.dtype == out.grad.dtype == dtypes.get(dtype).numpy_dtype, adapter_id
        assert out.loss.shape == (4,) and out.grad.shape == (4, 5)


def test_xla_reports_compile_time_once_per_shape():
    case = regimes.make_case("typical", "float32", (3, 17), "index", seed=5)  # a shape no other test uses
    adapter = adapters.get("tf.nn.sparse_softmax_cross_entropy_with_logits.xla")
    first, second = adapter.compute(case, "cpu"), adapter.compute(case, "cpu")
    assert first.compile_seconds > 0 and second.compile_seconds == 0
    np.testing.assert_array_equal(first.grad, second.grad)
    eager = adapters.get("tf.nn.sparse_softmax_cross_entropy_with_logits").compute(case, "cpu")
    assert eager.compile_seconds == 0
    np.testing.assert_allclose(first.grad, eager.grad, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", RTOL)
def test_keras_ignore_class_gives_ignored_rows_loss_and_gradient_zero(dtype):
    case = regimes.make_case("ignored_rows", dtype, (12, 7), "index", seed=2)  # includes an all -inf row
    r = result("keras.sparse_categorical_crossentropy", case)
    assert_matches_reference(r, dtype)
    assert np.all(r["out"].loss[case.ignored] == 0) and np.all(r["out"].grad[case.ignored] == 0)
    for adapter_id in SPARSE[:2]:  # tf.nn has no ignore_index: the runner marks these unsupported
        assert "no way to ignore rows" in adapters.get(adapter_id).unsupported_reason(case, "cpu")


def test_refusals_become_unsupported_with_tensorflows_own_first_line():
    # No softmax-CE API refuses a dtype on CPU in TF 2.21; Cholesky in float16 does (no kernel).
    with pytest.raises(Unsupported, match=r"^Could not find device for node: .*Cholesky\[T=DT_HALF\]$"):
        with tensorflow_impl.refusals_as_unsupported():
            tf.linalg.cholesky(tf.constant(np.eye(2), dtype=tf.float16))
    with pytest.raises(tf.errors.InvalidArgumentError):  # a real error stays an error
        with tensorflow_impl.refusals_as_unsupported():
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=[5], logits=tf.zeros((1, 3)))


# --- findings ------------------------------------------------------------------------------


def test_keras_rounds_class_257_to_256_in_bfloat16():
    # Keras casts y_true to the loss dtype before the kernel casts it back to int64: in
    # bfloat16 (8 significant bits) 257 rounds to 256, so the loss is row 256's loss.
    rng = np.random.default_rng(3)
    logits = rng.normal(0.0, 3.0, (2, 300))
    keras_sparse = adapters.get("keras.sparse_categorical_crossentropy")
    keras_out = keras_sparse.compute(manual(logits, "bfloat16", [257, 3]), "cpu")
    as_256 = adapters.get(SPARSE[0]).compute(manual(logits, "bfloat16", [256, 3]), "cpu")
    np.testing.assert_array_equal(keras_out.loss.view(np.uint16), as_256.loss.view(np.uint16))
    np.testing.assert_array_equal(keras_out.grad.view(np.uint16), as_256.grad.view(np.uint16))
    assert float(keras_out.grad[0, 256]) < 0 and float(keras_out.grad[0, 257]) > 0  # the "target" moved
    assert result("keras.sparse_categorical_crossentropy", manual(logits, "bfloat16", [257, 3]))["status"] == "inaccurate"
    # float32 holds 257 exactly: the same call is right there.
    assert result("keras.sparse_categorical_crossentropy", manual(logits, "float32", [257, 3]))["status"] == "ok"


@pytest.mark.parametrize("kind, soft", [("onehot", None), ("soft", [[0.25, 0.0, 0.75]])])
def test_eager_dense_kernel_turns_a_minus_inf_mask_into_nan_but_xla_does_not(kind, soft):
    # y = 0 on the masked class, log p = -inf there: the eager kernel computes 0 * -inf = NaN;
    # XLA's lowering of the same op gives the finite loss. The gradient is right in both.
    masked = [[0.0, -np.inf, 1.0]]
    case = manual(masked, "float32", [2], label_kind=kind, soft_labels=None if soft is None else np.array(soft))
    for adapter_id in ["tf.nn.softmax_cross_entropy_with_logits", "keras.categorical_crossentropy"]:
        eager = result(adapter_id, case)
        assert eager["status"] == "nonfinite" and np.isnan(eager["out"].loss[0]) and eager["n_grad_nonfinite"] == 0
    assert_matches_reference(result("tf.nn.softmax_cross_entropy_with_logits.xla", case), "float32")
    assert_matches_reference(result(SPARSE[0], manual(masked, "float32", [2])), "float32")  # the sparse kernel is right


def clipped_case(dtype: str) -> Case:
    """Row 0: p_target = e^-25 ~ 1.4e-11, far below Keras's clip at 1e-7; row 1: p_target ~ 0.73."""
    return manual([[0.0, 25.0], [0.0, 1.0]], dtype, [0, 1], label_kind="onehot")


@pytest.mark.parametrize("dtype", RTOL)
def test_probs_path_clips_a_tiny_target_probability_and_zeroes_its_row_gradient(dtype):
    # Keras clips p to [1e-7, 1 - 1e-7]: the loss stops at -log(1e-7) = 16.1 (truth 25) and
    # clip_by_value passes no gradient, so the whole row's gradient is 0 (truth: +-1).
    r = result(PROBS, clipped_case(dtype))
    assert r["status"] == "inaccurate"
    assert float(r["ref"].loss[0]) == pytest.approx(25.0)
    np.testing.assert_allclose(r["out"].loss[0], -np.log(np.asarray(1e-7, dtype)), rtol=RTOL[dtype])
    assert np.all(r["out"].grad[0] == 0)
    np.testing.assert_allclose(r["out"].grad[1], np.asarray(r["ref"].grad[1], np.float64), rtol=RTOL[dtype])
    assert_matches_reference(result("keras.categorical_crossentropy", clipped_case(dtype)), dtype)


def test_probs_path_fails_on_typical_logits_at_50_classes():
    # It is not an edge case: N(0, 3) logits over 50 classes already put a target below 1e-7.
    r = result(PROBS, regimes.make_case("typical", "float32", (16, 50), "onehot", seed=1))
    assert r["status"] == "inaccurate" and r["n_loss_bad"] == 1
    assert np.all(r["out"].grad[11] == 0) and r["ref"].loss[11] > -np.log(1e-7)


def test_keras_ops_softmax_hands_the_loss_its_logits():
    # keras.ops.softmax tags its output with the logits, and CategoricalCrossentropy(from_logits=
    # False) then quietly uses them: no clipping. The .probs adapter feeds tf.nn.softmax instead.
    case = clipped_case("float32")
    z, y = tensorflow_impl.logits_tensor(case), tensorflow_impl.dense_labels(case)
    loss = keras.losses.CategoricalCrossentropy(from_logits=False, reduction=None, dtype="float32")
    tagged = loss(y, keras.ops.softmax(z)).numpy()
    np.testing.assert_array_equal(tagged, adapters.get("keras.categorical_crossentropy").compute(case, "cpu").loss)
    assert tagged[0] == pytest.approx(25.0) and loss(y, tf.nn.softmax(z)).numpy()[0] == pytest.approx(16.118, abs=1e-3)


def test_keras_losses_default_to_float32_whatever_the_logits():
    # Without dtype= a Keras loss computes in floatx (float32): float64 logits are rounded to
    # float32 and the loss comes back float32. The adapters pass dtype=case.dtype.
    case = regimes.make_case("typical", "float64", (16, 50), "onehot", seed=1)
    default = keras.losses.CategoricalCrossentropy(from_logits=True, reduction=None)(
        tensorflow_impl.dense_labels(case), tensorflow_impl.logits_tensor(case)
    )
    assert default.dtype == tf.float32
    ref = np.asarray(reference.loss_and_grad(case).loss, np.float64)
    err = np.max(np.abs(default.numpy() - ref) / ref)
    assert 1e-9 < err < 1e-6  # float32-sized error on a float64 case
    assert_matches_reference(result("keras.categorical_crossentropy", case), "float64")


@pytest.mark.parametrize("dtype, gap", [("float32", 100.0), ("float64", 720.0)])
def test_tensorflow_flushes_subnormal_gradients_to_zero(dtype, gap):
    # TF's CPU kernels run with flush-to-zero: p = exp(-gap) is a subnormal of the dtype
    # (3.7e-44 in float32, 2.0e-313 in float64) and comes back as 0, eager and XLA alike.
    case = manual([[0.0, -gap]], dtype, [0])
    truth = float(reference.loss_and_grad(case).grad[0, 1])
    assert 0 < truth < np.finfo(dtype).smallest_normal
    for adapter_id in SPARSE:
        r = result(adapter_id, case)
        assert r["out"].grad[0, 1] == 0 and r["n_flushed"] == 3  # loss, p_t - 1 and p_1: all +-p_1, adapter_id
        assert r["status"] == "ok" and r["grad_ulps"] > 20, adapter_id  # counted, not judged
    assert result("numpy.stable", case)["status"] == "ok"  # numpy keeps it in the same process
