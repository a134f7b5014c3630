"""``guardtune-ops``: the internal ops CLI."""
