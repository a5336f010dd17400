"""careful_cross_entropy as a drop-in for F.cross_entropy (implementations/torch_careful.py).

Its accuracy is tested against the attainable bound in tests/test_bounds.py; here: the
interface (reductions, ignore_index, dtypes out) agrees with F.cross_entropy, and the one
documented difference, a single backward per forward.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from implementations.torch_careful import careful_cross_entropy  # noqa: E402


def batch(dtype):
    g = torch.Generator().manual_seed(0)
    z = (3 * torch.randn(6, 50, generator=g, dtype=torch.float64)).to(dtype)
    t = torch.tensor([3, -100, 49, 0, 7, -100])
    return z, t


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_matches_f_cross_entropy_with_ignore_index_in_every_reduction(reduction):
    z, t = batch(torch.float64)
    mine_z = z.clone().requires_grad_()
    ref_z = z.clone().requires_grad_()
    mine = careful_cross_entropy(mine_z, t, ignore_index=-100, reduction=reduction)
    ref = F.cross_entropy(ref_z, t, ignore_index=-100, reduction=reduction)
    torch.testing.assert_close(mine, ref, rtol=1e-13, atol=1e-15)
    mine.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(mine_z.grad, ref_z.grad, rtol=1e-12, atol=1e-15)
    assert (mine_z.grad[t == -100] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_outputs_keep_the_input_dtype(dtype):
    z, t = batch(dtype)
    z.requires_grad_()
    loss = careful_cross_entropy(z, t, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), z)
    assert loss.dtype == dtype and grad.dtype == dtype
    expected = F.cross_entropy(z.detach().double(), t, reduction="none")
    np.testing.assert_allclose(loss.detach().double().numpy(), expected.numpy(), rtol=2 * 2.0 ** -8)


def test_a_second_backward_through_the_same_graph_is_refused():
    z, t = batch(torch.float32)
    z.requires_grad_()
    loss = careful_cross_entropy(z, t)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="saved buffer"):
        loss.backward()
