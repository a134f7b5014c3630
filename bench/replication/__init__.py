"""Replication v2 of the paper's claim (``bench/safety_replication.py`` is the entry point):
attacks, modes, seeds, statistics and the stricter refusal detector, one module each."""
