"""Test doubles shared by the tests and the benches (``bench/`` imports them from here)."""
