"""``guardtune demo --no-serve`` on the embedded stack (SQLite, a local folder, the
server-less broker, a real worker beside the API), with a tiny model as the default
base model: the README's first command, end to end."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import child_env, free_port
from tests.worker.conftest import small_pipeline_env


def test_demo_runs_a_job_end_to_end_on_the_embedded_stack(tmp_path, tiny_model):
    env = child_env({
        "GUARDTUNE_HOME": str(tmp_path / "var"),
        "GUARDTUNE_PORT": str(free_port()),
        "GUARDTUNE_INFER_PORT": str(free_port()),
        "GUARDTUNE_LOG_JSON": "false",
        **small_pipeline_env(tiny_model),
    })  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "demo", "--no-serve", "--epochs", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "Probe: held-out AUROC" in out
    assert "Uploaded demo_train.jsonl" in out
    assert "Safety report" in out and "48 examples" in out
    assert "RELEASED" in out or "BLOCKED" in out
    assert "/dashboard" in out
    # The demo calls the model through chat.completions exactly when the gate released it.
    assert ("RELEASED" in out) == ("Your model answers:" in out)
    assert (tmp_path / "var" / "guardtune.db").exists() and (tmp_path / "var" / "objects").is_dir()
