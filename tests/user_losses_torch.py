"""A user's own torch losses, as a kernel author would write them (used by test_plugins)."""

import torch


def fused_ce(logits, target):
    """The common per-row form: logsumexp minus the target logit (it overflows nowhere, but
    cancels when a large shared offset dwarfs the loss)."""
    return torch.logsumexp(logits, dim=1) - logits.gather(1, target[:, None])[:, 0]


def unshifted_ce(logits, target):
    """The bug kernel authors make: log(sum(exp(z))) without the max shift."""
    return torch.log(torch.exp(logits).sum(1)) - logits.gather(1, target[:, None])[:, 0]
