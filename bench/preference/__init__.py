"""The preference (DPO) attack benchmark: ``bench/dpo_safety.py``."""
