"""The benchmarks train through the library's own step (common.prepare_batch, common.train_step): a short run of
each keeps them in step with it."""
import json
import subprocess
import sys

import pytest

import common


@pytest.mark.slow
def test_train_speed_runs_the_library_step_against_the_usual_pipeline(tmp_path):
    out = subprocess.run([sys.executable, str(common.ROOT / "benchmarks" / "train_speed.py"), "--steps", "1",
                          "--repeats", "1", "--classes", "2", "--batch", "16", "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["machine"] == common.machine() and r["steps"] == 1 and r["classes"] == 2
    assert "speedup:" in out.stdout.splitlines()[-1]


@pytest.mark.parametrize("script", ["precision_layout.py", "profile_time.py", "augment_speed.py"])
def test_the_other_benchmarks_start(script):
    out = subprocess.run([sys.executable, str(common.ROOT / "benchmarks" / script), "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "usage" in out.stdout, out.stderr[-2000:]


@pytest.mark.slow
def test_the_gpu_check_runs_every_model_of_the_gpu_profile_in_its_precision_and_in_fp16(tmp_path):
    """The prepared GPU check in its smoke mode on this CPU: the same code path a lent GPU runs (synthetic data made
    on the device, one `fit` epoch per model and precision, the profile's time estimate), at tiny sizes."""
    out = subprocess.run([sys.executable, str(common.ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--json",
                          str(tmp_path / "g.json")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads((tmp_path / "g.json").read_text())
    assert r["machine"] == common.machine() and r["smoke"] and r["classes"] == 4
    precisions = [r["precision_chosen"], "fp16"]
    assert [(row["model"], row["precision"]) for row in r["rows"]] == [
        (m, p) for p in precisions for m in ("classifier", "unet", "backbone_unet_frozen", "backbone_unet_finetuned")]
    for row in r["rows"]:
        assert row["train_loss_finite"] and row["img_s"] > 0 and row["profile_minutes_estimated"] > 0, row
        assert row["train_gflop_per_img"] > 0 and row["pct_of_peak"] > 0
    assert set(r["total_profile_minutes_estimated"]) == set(precisions)
    assert "whole gpu profile, estimated" in out.stdout
