"""tensorflow adapters (being written)."""
