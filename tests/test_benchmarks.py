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
