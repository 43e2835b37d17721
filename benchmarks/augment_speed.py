"""Batched augmentation: the project's one-grid-per-sample `BatchAugment` against kornia's
AugmentationSequential doing the same (random resized crop to 128, flips, rotation, colour jitter), image +
mask, per-sample parameters, on the same batch and device.

    python benchmarks/augment_speed.py [--json r.json]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402


def bench(fn, reps=10):
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1000


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=10, help="timed calls per measurement (after one warm-up)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    rows = []
    torch.set_num_threads(2)
    device = common.default_device()
    g = torch.Generator().manual_seed(0)
    for name, shape, cfg in (("classifier, 128×(3×64×64)", (128, 3, 64, 64), common.AugmentConfig()),
                             ("U-Net, 16×(3×128×128)+mask", (16, 3, 128, 128),
                              common.AugmentConfig(scale=(0.6, 1), vflip=True, rotate=10))):
        x = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
        m = (torch.rand(shape[0], 1, *shape[2:], device=device) > 0.8).to(torch.uint8)
        ours = common.BatchAugment(cfg)
        t_ours = bench(lambda: ours(x, m, g), args.reps)
        line, row = f"{name}: ours {t_ours:.1f} ms", {"batch": name, "ours_ms": t_ours, "kornia_ms": None}
        try:
            import kornia.augmentation as K
            seq = K.AugmentationSequential(
                K.RandomResizedCrop((128, 128), scale=cfg.scale, ratio=cfg.ratio),
                K.RandomHorizontalFlip(), K.RandomVerticalFlip(p=0.5 if cfg.vflip else 0.0),
                K.RandomRotation(cfg.rotate, p=1.0 if cfg.rotate else 0.0),
                K.ColorJiggle(cfg.brightness, cfg.contrast, cfg.saturation, p=1.0),
                data_keys=["input", "mask"])
            xf = x.float() / 255
            t_k = bench(lambda: seq(xf, m.float()), args.reps)
            line += f" | kornia {t_k:.1f} ms ({t_k / t_ours:.1f}× ours)"
            row["kornia_ms"] = t_k
        except ImportError:
            line += " | kornia not installed"
        print(line, flush=True)
        rows.append(row)
    if args.json:
        common.save_json({"machine": common.machine(device), "reps": args.reps, "rows": rows}, args.json)


if __name__ == "__main__":
    main()
