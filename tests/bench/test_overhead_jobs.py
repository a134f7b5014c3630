"""Whole-job costs of the overhead bench (``bench.overhead.report.job_costs``): every
guardtune job pays its scan, SFT included; the cached job's scan is its one forward pass."""

from __future__ import annotations

import argparse

import pytest

from bench.overhead.report import job_costs


def test_job_costs_charge_each_variant_its_scan() -> None:
    results = {
        "a": {"cpu_s_per_step": 1.0, "peak_rss_mb": 100.0},
        "b": {"cpu_s_per_step": 1.5, "peak_rss_mb": 110.0},
        "e": {"cpu_s_per_step": 1.02, "peak_rss_mb": 101.0, "scan_with_cache_cpu_s": 5.0},
        "d": {"cpu_s_per_step": 1.7, "peak_rss_mb": 190.0, "scan_once_cpu_s": 2.0},
    }
    jobs = job_costs(results, argparse.Namespace(n_examples=16, batch_size=4))
    assert jobs["cpu_s"]["3"] == pytest.approx({"a": 14.0, "b": 20.0, "e": 17.24, "d": 20.4})
    assert jobs["plain_sft_no_scan_cpu_s"]["3"] == pytest.approx(12.0)
    assert jobs["cached_3_epoch_job_vs_plain_sft_no_scan"] == pytest.approx(17.24 / 12.0)
    targets = jobs["targets"]
    assert targets["cached_3_epoch_job_vs_sft"]["value"] == pytest.approx(17.24 / 14.0)
    assert targets["paper_style_3_epoch_job_vs_cached"]["value"] == pytest.approx(20.4 / 17.24)
    assert job_costs({k: v for k, v in results.items() if k != "e"}, argparse.Namespace()) is None
