"""A short real training run for the interruption test: python tests/train_job.py OUT_DIR DATA_DIR.
With SLOW_CHECKPOINT=1, every write of last.pt pauses 3 s after the temporary file is written (torch.save patched
for this process only), so a test can kill the process in the middle of a checkpoint write."""
import os
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

torch.set_num_threads(1)
out, data = Path(sys.argv[1]), Path(sys.argv[2])
save = torch.save


def slow_save(obj, f, *a, **kw):
    save(obj, f, *a, **kw)
    if ".last.pt.tmp" in str(f):
        print("writing checkpoint", flush=True)
        time.sleep(3)


root = data / "tiny"
if not (root / "wnids.txt").exists():
    common.make_synthetic_tiny_imagenet(root, n_classes=4, n_train=30, n_val=2, seed=0)
ds = common.read_tiny_imagenet(root, progress=False)
tr, va = common.stratified_split(ds.labels.numpy(), 0.25, seed=0)
common.seed_everything(0)
model = common.Classifier(4, widths=(8, 16, 16, 32, 32), blocks=(1, 1, 1, 1, 1))
cfg = common.TrainConfig(epochs=5, batch_size=15, lr=3e-3, seed=0)
with mock.patch("torch.save", slow_save if os.environ.get("SLOW_CHECKPOINT") else save):
    common.fit(model, ds.subset(tr), ds.subset(va), cfg, common.ClassificationTask(), out,
               callback=lambda h: print(f"finished epoch {len(h)}", flush=True))
print("done", flush=True)
