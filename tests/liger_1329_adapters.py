"""Liger-Kernel PR #1329's bfloat16 bug, reproduced on CPU as a plug-in adapter (test data).

https://github.com/linkedin/Liger-Kernel/pull/1329: the fused cross-entropy kernel wrote the
softmax p back into the bfloat16 logits buffer (a read-modify-write) and then subtracted 1
at the target from that bfloat16 value. With p_t = 0.999 and V = 32000, p_t rounds to
bfloat16's 1.0 (its ulp there is 2**-8), so the target's gradient p_t - 1 = -0.001 came out
as 0: 100 % wrong, where PyTorch's was 0.42 % off. Its absolute error (1e-3) is far below
the textbook allowance in bfloat16 at V = 32000 (about 0.066), so only the attainable bound
calls it what it is.

`liger1329.bf16_rmw` does exactly that in torch: everything in float32 (the max, the sum, the
loss, which is right), p rounded to the logits' dtype, then p_t - 1 formed from the rounded p.
"""

from __future__ import annotations

import numpy as np

from harness.adapters import Adapter, Output
from implementations import torch_impl


def _bf16_rmw(case, device):
    torch = torch_impl._torch()
    z = torch_impl.to_torch(case.logits, device)
    t = torch.from_numpy(case.target.astype(np.int64)).to(z.device)
    zf = z.float()
    m = zf.max(dim=1, keepdim=True).values
    e = torch.exp(zf - m)
    s = e.sum(dim=1, keepdim=True)
    loss = (torch.log(s) - (zf - m).gather(1, t[:, None])).squeeze(1)
    p = (e / s).to(z.dtype)  # written back into the logits' own (bfloat16) storage
    rows = torch.arange(len(t))
    p[rows, t] = p[rows, t] - 1  # the read-modify-write: p_t - 1 from the rounded p_t
    return Output(torch_impl.to_numpy(loss.to(z.dtype)), torch_impl.to_numpy(p))


BF16_RMW = Adapter("liger1329.bf16_rmw", "torch", _bf16_rmw,
                   "test only: Liger #1329's mechanism, p_t - 1 from p rounded to the tested dtype",
                   label_kinds=("index",))
