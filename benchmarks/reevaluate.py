"""The committed weights re-evaluated on this machine, as the notebooks evaluate them (flip TTA as stored in each
checkpoint, fp32 evaluation, the segmentation models on the moon test split at their stored threshold, the
classifier on its own validation split), against the committed metrics files. Metrics are computed in fp32 on every
machine, but the fp32 kernels differ between CPUs, so the scores may differ in the last digits; the README's
reproduction sentence is rendered from these files (the largest difference over the machines measured).

    python benchmarks/reevaluate.py --json benchmarks/reevaluation/<machine kind>.json

Run it on each kind of machine (on one with native bf16, ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 caps it
to AVX2, which the result says).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import common  # noqa: E402
from benchmarks.train_speed import commit  # noqa: E402

SEGMENTATION = ("unet", "backbone_unet_frozen", "backbone_unet_finetuned")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if torch.get_num_threads() > 2:
        torch.set_num_threads(2)
    weights = ROOT / "weights"
    committed = {n: json.loads((weights / f"{n}_metrics.json").read_text()) for n in ("classifier", *SEGMENTATION)}
    res = {"machine": common.machine(), "torch": torch.__version__, "commit": commit(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "models": {}}
    model, _ = common.load_checkpoint(weights / "classifier.pt")
    val = common.load_datasets("tiny", None, args.data, progress=False, classes=committed["classifier"]["classes"])[1]
    m = common.classification_results(model, val)["metrics"]
    res["models"]["classifier"] = {"top1": m["top1"], "committed_top1": committed["classifier"]["val_top1"]}
    test = common.load_datasets("moon", None, args.data, progress=False)[2]
    for name in SEGMENTATION:
        model, meta = common.load_checkpoint(weights / f"{name}.pt")
        m = common.segmentation_results(model, test, meta["threshold"])["metrics"]
        res["models"][name] = {"iou": m["iou"], "committed_iou": committed[name]["test"]["iou"]}
    for name, r in res["models"].items():
        key = "top1" if "top1" in r else "iou"
        print(f"{name}: {key} {r[key]:.5f} here, {r['committed_' + key]:.5f} committed", flush=True)
    if args.json:
        common.save_json(res, args.json)


if __name__ == "__main__":
    main()
