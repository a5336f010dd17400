"""jax adapters (being written)."""
