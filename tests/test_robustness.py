"""Bad input gets a clear answer, interrupted work is never lost, runs repeat exactly."""
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch

import common
from common import CheckpointError, DataError

JOB = Path(__file__).with_name("train_job.py")


def test_zip_that_is_not_the_dataset(tmp_path):
    z = tmp_path / "photos.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("holiday/readme.txt", "not a dataset")
    with pytest.raises(DataError, match="does not look like Tiny ImageNet"):
        common.read_tiny_imagenet(z)
    with pytest.raises(DataError, match="does not look like the moon set"):
        common.read_moon(z)


def test_non_image_among_jpegs(tiny_root, tmp_path):
    import shutil
    root = shutil.copytree(tiny_root, tmp_path / "t")
    (root / "train" / "n90000003" / "images" / "notes.JPEG").write_text("a text file, not a picture")
    with pytest.raises(DataError, match="notes.JPEG.*not an image"):
        common.read_tiny_imagenet(root, progress=False)


def test_backbone_from_another_classifier_is_refused():
    seg = common.backbone_unet(common.Classifier(5).config)
    other = common.Classifier(5, widths=(16, 32, 64, 128, 256))
    with pytest.raises(CheckpointError, match="do not fit this backbone"):
        common.load_backbone(seg, other)


def test_nan_after_a_good_epoch_keeps_the_last_good_checkpoint(cls_data, small, tmp_path):
    ds = cls_data[0]
    model = small.classifier()

    def explode(hist):                         # after epoch 1, the weights blow up
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1e38)
    cfg = common.TrainConfig(epochs=3, batch_size=40)
    with pytest.raises(common.TrainingError, match="epoch 2.*epoch 1\\) is kept"):
        common.fit(model, ds.subset(range(80)), ds.subset(range(12)), cfg, common.ClassificationTask(), tmp_path,
                   callback=explode)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["epoch"] == 1 and all(torch.isfinite(v.float()).all() for v in state["model"].values())
    assert len(pd.read_csv(tmp_path / "history.csv")) == 1


def test_same_seed_same_metrics(cls_data, small, tmp_path):
    runs = []
    for d in ("a", "b"):
        torch.manual_seed(7)
        cfg = common.TrainConfig(epochs=2, batch_size=30, seed=3)
        runs.append(common.fit(small.classifier(), *cls_data, cfg, common.ClassificationTask(), tmp_path / d))
    cols = ["train_loss", "val_loss", "val_top1", "val_top5"]
    assert runs[0][cols].equals(runs[1][cols])
    _, meta = common.load_checkpoint(tmp_path / "a" / "best.pt")
    assert meta["seed"] == 3 and {"python", "torch", "torchvision", "device"} <= set(meta)


def run_job(out, data, env=None):
    import os
    env = {**os.environ, "HW_DATA_DIR": str(data / "cache-root"), **(env or {})}
    return subprocess.Popen([sys.executable, str(JOB), str(out), str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def kill_when(proc, marker, nth=1):
    for line in proc.stdout:
        if marker in line and (nth := nth - 1) == 0:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
    proc.wait()
    return False


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("ref")
    p = run_job(base / "out", base / "data")
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    return pd.read_csv(base / "out" / "history.csv"), base / "data"


@pytest.mark.slow
def test_killed_in_the_middle_of_a_checkpoint_write_resumes_and_ends_like_an_uninterrupted_run(reference, tmp_path):
    """SIGKILL while the second epoch's last.pt is being written: the first epoch's stays whole, the half-written
    file is cleaned up, and the resumed run ends exactly as one never interrupted."""
    ref, data = reference
    proc = run_job(tmp_path / "out", data, {"SLOW_CHECKPOINT": "1"})
    assert kill_when(proc, "writing checkpoint", nth=2), "ended before the kill"
    assert list((tmp_path / "out").glob(".last.pt.tmp*")), "the kill did not land in the middle of the write"
    assert torch.load(tmp_path / "out" / "last.pt", weights_only=False)["epoch"] == 1
    again = run_job(tmp_path / "out", data)
    log, _ = again.communicate(timeout=300)
    assert again.returncode == 0, log
    assert "epochs were done, resuming" in log
    got = pd.read_csv(tmp_path / "out" / "history.csv")
    cols = ["epoch", "train_loss", "val_loss", "val_top1", "val_top5"]
    assert got[cols].equals(ref[cols])


def test_headless_runs_build_no_widgets(monkeypatch, capsys):
    """run_all.py sets HW_STATIC_WIDGETS: papermill's nbclient can hang on a cell that creates ipywidgets
    (jupyter/nbclient#312), so `browse` then builds nothing and prints nothing (the notebook's text says where the
    slider works)."""
    drawn = []
    monkeypatch.delenv("HW_STATIC_WIDGETS", raising=False)
    widget = common.browse(5, lambda i: drawn.append(i))
    pytest.importorskip("ipywidgets")
    assert widget is not None and drawn == [0]          # in Jupyter: a slider, showing item 0
    monkeypatch.setenv("HW_STATIC_WIDGETS", "1")
    drawn.clear()
    capsys.readouterr()
    assert common.browse(5, lambda i: drawn.append(i)) is None and drawn == []
    assert capsys.readouterr().out == ""
