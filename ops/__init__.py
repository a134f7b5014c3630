"""``guardtune-ops``'s command groups, one module each (assembled in :mod:`cli.ops`)."""
