"""A user's own JAX loss (used by test_plugins)."""

import jax


def gather_ce(logits, labels):
    log_p = jax.nn.log_softmax(logits)
    return -log_p[jax.numpy.arange(logits.shape[0]), labels]
