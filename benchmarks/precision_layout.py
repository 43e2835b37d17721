"""Why common.compute_precision decides as it does on a CPU: the training step (forward, backward; batch of
random inputs) and inference of the real models in each precision and memory layout, on this machine.

    python benchmarks/precision_layout.py --json benchmarks/layout/<machine kind>.json

bf16 is timed only where it is native (emulated, one step takes minutes), unless --emulated-bf16. The decision
it supports: channels_last on every CPU; bf16 only where native (and the probe confirms it is faster).
"""
import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import common  # noqa: E402
from benchmarks.train_speed import commit  # noqa: E402


def img_s(model, batch, dtype, channels_last, train, reps=3):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train(train)
    x = torch.randn(batch, 3, 128, 128, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=fmt)

    def step():
        with torch.set_grad_enabled(train), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            out = model(x)
        if train:
            out.float().square().mean().backward()
    return batch / common.timed(step, reps)   # best of `reps` after a warm-up


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None)
    ap.add_argument("--emulated-bf16", action="store_true", help="time bf16 even where it is not native")
    ap.add_argument("--quick", action="store_true", help="batches of 2, one timing each: checks the script, not speed")
    args = ap.parse_args(argv)
    div, reps = (32, 1) if args.quick else (1, 3)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    dtypes = ["fp32"] + (["bf16"] if common.native_bf16() or args.emulated_bf16 else [])
    rows = []
    for name, make, batch in (("classifier", lambda: common.Classifier(100), 64), ("unet", common.unet, 16)):
        for dtype in dtypes:
            for cl in (False, True):
                torch.manual_seed(0)
                row = {"model": name, "batch": max(1, batch // div), "precision": dtype, "channels_last": cl,
                       "train_img_s": img_s(make(), max(1, batch // div), dtype, cl, True, reps),
                       "inference_img_s": img_s(make(), max(1, (128 if name == "classifier" else 32) // div), dtype,
                                                cl, False, reps)}
                rows.append(row)
                print(f"{name:10s} {dtype} {'channels_last' if cl else 'NCHW         '}: train "
                      f"{row['train_img_s']:6.1f} img/s, inference {row['inference_img_s']:6.1f} img/s", flush=True)
    res = {"machine": common.machine(), "native_bf16": common.native_bf16(), "torch": torch.__version__,
           "quick": args.quick,
           "commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    if args.json:
        common.save_json(res, args.json)


if __name__ == "__main__":
    main()
