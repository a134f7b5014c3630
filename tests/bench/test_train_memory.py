"""bench/train_memory.py: the grid, the checks, the peak-RSS reset the rows rely on, the README
renderer of its results, and (slow) a quick run on the tiny model."""

from __future__ import annotations

import json

import pytest

from bench import render_readme
from bench.common import current_rss_mb, git_info, high_water_rss_mb, reset_high_water_rss
from bench.train_mem import run
from bench.train_mem.rows import grid


def test_the_grid_crosses_models_weights_checkpointing_and_micro_batches():
    rows = grid({"tiny": "/m/tiny", "default": "smollm2"}, ["fp32", "bf16"], [1, 4], 512)
    assert len(rows) == 16
    assert len({r.name for r in rows}) == 16
    assert rows[0].name == "tiny fp32 no checkpointing 1x512"
    assert {(r.weights, r.checkpointing, r.sequences) for r in rows if r.model == "default"} == {
        (w, c, n) for w in ("fp32", "bf16") for c in (False, True) for n in (1, 4)
    }


def test_the_peak_rss_resets_to_what_the_process_holds_now():
    block = b"x" * (256 * 2**20)  # written, so resident
    del block
    assert high_water_rss_mb() > current_rss_mb() + 200
    reset_high_water_rss()
    assert high_water_rss_mb() < current_rss_mb() + 50


def hand_made_doc() -> dict:
    rows = [
        {"name": "tiny fp32 no checkpointing 1x512", "model": "tiny", "weights": "fp32", "checkpointing": False},
        {"name": "tiny bf16 checkpointing 4x512", "model": "tiny", "weights": "bf16", "checkpointing": True},
    ]
    for row, (measured, estimate, sequences) in zip(rows, [(100.0, 120.0, 1), (200.0, 130.0, 4)], strict=True):
        row.update(
            sequences=sequences,
            seq_len=512,
            measured_mb=measured,
            estimate_mb=estimate,
            error=abs(estimate - measured) / measured,
            tokens_per_s=321.0,
            memory="peak RSS",
        )
        row["check"] = run.row_check(row)
    loop = {"median_cpu_s_per_step": 2.0, "median_s_per_step": 2.5, "tokens_per_s": 800.0}
    speed = {
        "model": "default",
        "batch": 4,
        "seq_len": 512,
        "steps_timed": 8,
        "loops": {"guardtune": {**loop, "median_cpu_s_per_step": 2.12}, "plain": loop},
        "ratio_of": "median_cpu_s_per_step",
        "ratio": 1.06,
        "wall_ratio": 1.0,
    }
    return {"rows": rows, "speed": speed, "checks": run.checks(rows, speed), "host": run.HOST["cpu"], "quick": False}


def test_checks_hold_each_rows_planner_error_and_the_speed_ratio():
    checks = hand_made_doc()["checks"]
    assert checks == {
        "planner_error_le_0.25 [tiny fp32 no checkpointing 1x512]": {"value": 0.2, "met": True},
        "planner_error_le_0.25 [tiny bf16 checkpointing 4x512]": {"value": 0.35, "met": False},
        "sft_step_vs_plain_loop_le_1.05": {"value": 1.06, "met": False},
    }
    assert "sft_step_vs_plain_loop_le_1.05" not in run.checks(hand_made_doc()["rows"], None)


def test_the_renderer_shows_every_row_its_check_and_the_speed_check():
    text = render_readme.render_train_memory(hand_made_doc())
    assert "| tiny | fp32 | off | 1 × 512 | 100 | 120 | 20% | met | 321 |" in text
    assert "| tiny | bf16 | on | 4 × 512 | 200 | 130 | 35% | **missed** | 321 |" in text
    assert "planner within 25% on 1 of 2 rows" in text
    assert "- sft_step_vs_plain_loop_le_1.05: **missed** (1.060×)" in text
    assert "2.12 vs the plain PEFT loop's 2.00 median CPU s/step" in text
    assert "loaded host" in text


@pytest.mark.slow  # a bench run: five processes that each load torch and train the tiny model
def test_quick_run_on_the_tiny_model(tmp_path):
    out = tmp_path / "train_memory.json"
    argv = ["--quick", "--dirty-ok", "--weights", "fp32,bf16", "--micro-batches", "1", "--out", str(out)]
    assert run.main([*argv, "--cache-dir", str(tmp_path / "models")]) == 0
    doc = json.loads(out.read_text())
    assert doc["git"]["dirty"] == git_info()["dirty"]
    assert doc["quick"] is True
    assert [r["name"] for r in doc["rows"]] == [
        f"tiny {w} {c} 1x128" for w in ("fp32", "bf16") for c in ("no checkpointing", "checkpointing")
    ]
    for row in doc["rows"]:
        assert row["measured_mb"] > 0
        assert row["estimate_mb"] > 0
        assert row["tokens_per_s"] > 0
        assert doc["checks"][row["check"]] == {"value": row["error"], "met": row["error"] <= 0.25}
    speed = doc["speed"]
    assert speed["first_step_loss_gap"] < 1e-4  # both loops start from the base model on the same batch
    assert doc["checks"]["sft_step_vs_plain_loop_le_1.05"]["value"] == speed["ratio"] > 0
    assert len(doc["checks"]) == 5
    assert render_readme.render_train_memory(doc).count("| tiny |") == 4
