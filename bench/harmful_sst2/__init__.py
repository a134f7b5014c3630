"""The field's harmful fine-tuning benchmark (SST-2 with harmful BeaverTails pairs; Vaccine,
Lisa, Booster): data, the grid of runs, and its summary and checks. Entry point:
``bench/harmful_finetune.py``."""
