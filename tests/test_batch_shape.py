"""3-D (N, T, V) batches: every framework adapter gets the batch as a sequence model holds it
and must still give p - y per row; plain functions get rows."""

import numpy as np
import pytest

from harness.adapters import registry
from harness.inputs import replay
from harness.inputs.regimes import make_case
from harness.run.rows import rows_for_case
from harness.adapters.workers import InProcess, call_adapter


def _rows(case):
    return rows_for_case(case, list(registry.all_adapters().values()), InProcess(), "cpu", base={})


@pytest.mark.parametrize("kind", ["index", "soft"])  # the sparse and the dense code paths
def test_every_adapter_is_right_on_a_3d_batch(kind):
    case = make_case("typical", "float32", (2, 3, 50), kind, seed=0)
    assert case.nd_shape == (2, 3, 50) and case.shape == (6, 50)
    assert case.case_id == f"typical/float32/2x3x50/{kind}/s0"
    rows = [r for r in _rows(case) if r["status"] != "unsupported"]
    assert len(rows) >= 8
    # Each adapter is exactly as right on (N, T, V) as on the same rows as (N*T, V); the one
    # known exception here is a finding in 2-D too (Keras clips probabilities at 1e-7).
    flat = {r["adapter"]: r["status"] for r in _rows(case.rows())}
    assert {r["adapter"]: r["status"] for r in rows} == {a: flat[a] for a in (r["adapter"] for r in rows)}
    bad = {r["adapter"]: (r["status"], r["message"]) for r in rows if r["status"] != "ok"}
    assert set(bad) <= {"keras.categorical_crossentropy.probs"}, bad


def test_3d_batch_with_ignored_positions_and_masks():
    # Ignored positions (one of them an all -inf padding position): the findings on
    # (N, T, V) are those on the same rows as (N*T, V), adapter by adapter.
    for regime in ("ignored_rows",):
        case = make_case(regime, "float32", (3, 4, 10), "index", seed=1)
        assert case.batch_shape == (3, 4)
        three_d = {r["adapter"]: r["status"] for r in _rows(case)}
        two_d = {r["adapter"]: r["status"] for r in _rows(case.rows())}
        assert three_d == two_d
        assert "ok" in three_d.values() and set(three_d.values()) != {"ok"}


def test_torch_sees_the_3d_tensor_and_its_strided_softmax_matches_the_2d_one():
    torch_ce = registry.get("torch.cross_entropy")
    case = make_case("typical", "float64", (2, 5, 7), "index", seed=3)
    three_d = call_adapter(torch_ce, case, "cpu").output
    two_d = call_adapter(torch_ce, case.rows(), "cpu").output
    assert three_d.loss.shape == (10,) and three_d.grad.shape == (10, 7)
    np.testing.assert_allclose(three_d.loss, two_d.loss, rtol=1e-14)
    np.testing.assert_allclose(three_d.grad, two_d.grad, rtol=1e-13, atol=1e-16)


def test_plain_functions_get_rows(tmp_path):
    seen = []

    def my_loss(z, t):
        import torch.nn.functional as F

        seen.append(tuple(z.shape))
        return F.cross_entropy(z, t, reduction="none")

    adapter = registry.from_function(my_loss, "user.rows", framework="torch")
    case = make_case("typical", "float32", (2, 3, 50), "index", seed=0)
    attempt = call_adapter(adapter, case, "cpu")
    assert attempt.status == "ran" and seen == [(6, 50)]


def test_3d_case_ids_replay_and_case_files_keep_the_batch_shape(tmp_path):
    from harness.store import casefile

    case, _ = replay.load("near_ties/bfloat16/2x4x257/soft/s0")
    assert case.batch_shape == (2, 4) and case.shape == (8, 257)
    path = casefile.save(case, tmp_path / "c.npz")
    back, _ = casefile.load(path)
    assert back.batch_shape == (2, 4)
    np.testing.assert_array_equal(back.logits.view(np.uint16), case.logits.view(np.uint16))
