"""The benchmark script runs and writes its figures (speed is measured there, never asserted here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a minute; it checks only that the script runs (CI's time goes to what proves the numbers)
def test_benchmark_quick_run_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    r = json.loads(out.read_text())
    assert set(r["xor"]) == {"numpy_twin", "keras_fit_epoch_per_step", "kerasbp_train", "kerasbp_train_logger_stats"}
    assert r["xor"]["numpy_twin"]["ratio_to_numpy"] == 1.0
    assert set(r["overhead"]) == {"fit", "fit_logger_stats_every_step", "fit_logger_stats_every_4", "fit_logger_full_every_50"}
    assert r["memory"]["parameters"] == 784 * 1024 + 1024 + 1024 * 256 + 256 + 256 * 10 + 10
    # 20 steps of ~1.07M float32 gradients were streamed to disk
    assert abs(r["memory"]["streamed_mb"] - 20 * r["memory"]["parameters"] * 4 / 2**20) < 0.01
    assert "us/step" in proc.stdout
    assert r["time_to_result"]["numpy_twin_fit"]["ratio_to_numpy_twin"] == 1.0
    assert {"fresh_model_and_logger", "same_model_new_logger_epochs_plus_1", "steady_state", "first_run_in_a_fresh_process", "train_xor_script_help"} <= set(r["time_to_result"])
    assert r["in_step_cost"]["floor_added_us"] > 0
    for key in ("in_step_cost", "in_step_cost_adam", "in_step_cost_xla"):
        assert r[key]["update_us"] > 0 and r[key]["logged_update_us"] > 0
