"""torch adapters (being written)."""
