"""The benchmarks train through the library's own step (common.preprocess_batch, common.train_step): a short run of
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


def bench(script, *args, timeout=600):
    out = subprocess.run([sys.executable, str(common.ROOT / "benchmarks" / script), *map(str, args)],
                         capture_output=True, text=True, timeout=timeout, cwd=common.ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow
def test_precision_layout_times_each_model_in_each_layout_and_native_precision(tmp_path):
    bench("precision_layout.py", "--quick", "--json", tmp_path / "l.json")
    r = json.loads((tmp_path / "l.json").read_text())
    dtypes = ["fp32"] + (["bf16"] if common.native_bf16() else [])
    assert r["machine"] == common.machine() and r["quick"]
    assert [(x["model"], x["precision"], x["channels_last"]) for x in r["rows"]] == [
        (m, d, cl) for m in ("classifier", "unet") for d in dtypes for cl in (False, True)]
    assert all(x["train_img_s"] > 0 and x["inference_img_s"] > 0 for x in r["rows"])


@pytest.mark.slow
def test_profile_time_estimates_each_committed_model_before_training(tmp_path):
    """The estimate the notebooks print, for the committed architectures, here on the demo's data and schedules."""
    out = bench("profile_time.py", "--profile", "demo", "--out", tmp_path, "--json", tmp_path / "t.json")
    r = json.loads((tmp_path / "t.json").read_text())
    assert list(r["minutes"]) == ["classifier", "unet", "backbone_unet_frozen", "backbone_unet_finetuned"]
    assert all(m > 0 for m in r["minutes"].values()) and r["total_minutes"] == pytest.approx(sum(r["minutes"].values()))
    assert r["profile"] == "demo" and r["machine"] == common.machine() and "min of training in all" in out
    assert (tmp_path / "data" / "synthetic").is_dir()       # the demo's data went where it was told, not into data/


@pytest.mark.slow
def test_augment_speed_times_our_batched_augmentation(tmp_path):
    out = bench("augment_speed.py", "--reps", 1, "--json", tmp_path / "a.json")
    r = json.loads((tmp_path / "a.json").read_text())
    assert [x["batch"].split(",")[0] for x in r["rows"]] == ["classifier", "U-Net"]
    assert all(x["ours_ms"] > 0 for x in r["rows"]) and out.count("ours") == 2


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
