"""The prepared GPU check: the `gpu` profile's models trained through `common.fit`, on synthetic data of the real
sizes made on the device (no network, no dataset files), in the precision the code chooses and again in fp16 (the
path of Colab's T4).

    python benchmarks/gpu_check.py                       # on a CUDA GPU (sized for under 8 minutes; not yet timed)
    python benchmarks/gpu_check.py --json benchmarks/results/gpu_check_<gpu>.json
    python benchmarks/gpu_check.py --smoke --json r.json # tiny sizes on the CPU (the test suite runs this)

Per model and precision: one epoch of `fit` at full input size (128 px) with validation, its img/s, the training
GFLOP/s (FLOPs per image counted by torch.utils.flop_counter) as a % of the matmul peak of that precision measured in
this run, the peak GPU memory, and the minutes of the whole `gpu` profile for that model as the notebooks estimate
them before training (`common.estimate_fit_time`). With --compile (CUDA), the classifier's step is also timed under
torch.compile, so its gain is a measured number before the product uses it.
"""
import argparse
import dataclasses
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402
from train_speed import commit, matmul_peak, sync, train_flops_per_image  # noqa: E402

REAL = {"images_per_class": 500, "moon_frames": 1000}           # Tiny ImageNet's train part, the course's moon set
SMOKE = {"images_per_class": 4, "moon_frames": 12}


def synthetic_sets(classes, per_class, frames, device, seed=0):
    """(train, val) of each task as the notebooks hold them (uint8; Tiny ImageNet at 64 px, moon frames at 128 px),
    split 90/10 and 65/15, made on `device` from random numbers: speed does not depend on content."""
    g = torch.Generator(device=device).manual_seed(seed)
    n = classes * per_class
    images = torch.randint(0, 256, (n, 3, 64, 64), generator=g, device=device, dtype=torch.uint8)
    labels = torch.arange(classes, device=device).repeat_interleave(per_class)
    names = [f"c{i}" for i in range(classes)]
    cut = n * 9 // 10
    perm = torch.randperm(n, generator=g, device=device)
    tiny = [common.ImageSet(images[i], labels[i], names, names) for i in (perm[:cut], perm[cut:])]
    frames_u8 = torch.randint(0, 256, (frames, 3, 128, 128), generator=g, device=device, dtype=torch.uint8)
    masks = (torch.rand(frames, 1, 128, 128, generator=g, device=device) < 0.1).to(torch.uint8)
    n_train, n_val = frames * 65 // 100, frames * 15 // 100
    ids = list(range(frames))
    moon = [common.MaskSet(frames_u8[a:b], masks[a:b], ids[a:b]) for a, b in ((0, n_train), (n_train, n_train + n_val))]
    return tiny, moon


def models(recipe):
    """(name, make_model, config, task, data) of the four trainings of the profile, in the notebooks' order (a
    backbone U-Net on an untrained classifier of the profile: the speed is the same)."""
    cls = recipe.classifier.build()
    return [(name, functools.partial(m.build, cls) if m.backbone else m.build, m.train, m.task,
             "tiny" if name == "classifier" else "moon")
            for name, m in recipe.models().items() if name in ("classifier", "unet", "backbone_unet_frozen",
                                                                "backbone_unet_finetuned")]


def compiled_step_img_s(make, data, cfg, task, prec, device, steps=20):
    """img/s of the classifier's training step at 128 px with and without torch.compile (after warm-up)."""
    out = {}
    for compiled in (False, True):
        model = common.to_device(make(), device, prec).train()
        run = torch.compile(model) if compiled else model
        opt, scaler = torch.optim.AdamW(model.parameters(), lr=1e-4), prec.scaler()
        aug, gen = common.BatchAugment(cfg.augment, 128), torch.Generator().manual_seed(0)
        t_compile = time.perf_counter()
        for s in range(steps + 3):
            if s == 3:
                sync(device)
                t0 = time.perf_counter()
                out["compile_s" if compiled else "eager_warmup_s"] = t0 - t_compile
            idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen).to(device)
            x, y = common.preprocess_batch(data.images[idx], task.targets(data)[idx], device, prec, aug, gen)
            common.train_step(run, x, y, task, opt, scaler, prec)
        sync(device)
        out["compiled_img_s" if compiled else "eager_img_s"] = steps * cfg.batch_size / (time.perf_counter() - t0)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, any device (the test suite's run)")
    ap.add_argument("--json", default=None, help="write the results here (e.g. benchmarks/results/gpu_check_h100.json)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="also time the classifier's step under torch.compile (default: on CUDA, not in --smoke)")
    args = ap.parse_args(argv)
    device = common.default_device()
    if device.type != "cuda" and not args.smoke:
        ap.error("no CUDA GPU here: run it on a GPU, or with --smoke to check the script on this machine")
    sizes = SMOKE if args.smoke else REAL
    recipe = common.recipe("gpu", num_classes=4 if args.smoke else None)
    if args.smoke:      # small batches and 2 epochs for the small sets (fp16 on a CPU is slow); the rest as profiled
        recipe = common.vary(recipe, **{n: dict(batch_size=4, epochs=2) for n in recipe.models()})
    os.environ.setdefault("HW_STATIC_WIDGETS", "1")         # the printed line per epoch, no progress bars
    chosen = common.compute_precision(device)
    precisions = [chosen] + ([common.Precision(device.type, "fp16", True, "the T4's path")]
                             if chosen.name != "fp16" else [])
    t_start = time.time()
    tiny, moon = synthetic_sets(recipe.classes, sizes["images_per_class"], sizes["moon_frames"], device)
    data = {"tiny": tiny, "moon": moon}
    results = {"device": device.type, "machine": common.machine(device), "precision_chosen": chosen.name,
               "precision_reason": chosen.reason, "torch": torch.__version__, "commit": commit(),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "smoke": args.smoke,
               "classes": recipe.classes, "sizes": sizes, "matmul_peak_gflops": {}, "rows": []}
    for prec in precisions:
        peak = results["matmul_peak_gflops"][prec.name] = matmul_peak(device, prec.name, n=256 if args.smoke else 8192)
        print(f"{results['machine']}: {prec.name} ({prec.reason}); matmul peak {peak:.0f} GFLOP/s", flush=True)
        for name, make, cfg, task, kind in models(recipe):
            train, val = data[kind]
            model = make()
            if cfg.freeze_encoder:          # variant A: no backward through the frozen stages
                model.freeze_encoder(True)
            flops = train_flops_per_image(model)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            one = dataclasses.replace(cfg, epochs=1, min_size=0)        # one epoch at full size
            with tempfile.TemporaryDirectory() as tmp:
                hist = common.fit(make(), train, val, one, task, tmp, prec)
            est = common.estimate_fit_time(make(), train, val, cfg, task, prec)
            img_s = float(hist["images_per_s"].iloc[0])
            row = {"model": name, "precision": prec.name, "batch": cfg.batch_size, "n_train": len(train),
                   "epoch_s": float(hist["epoch_time_s"].iloc[0]), "img_s": img_s,
                   "train_gflop_per_img": flops / 1e9, "pct_of_peak": 100 * img_s * flops / 1e9 / peak,
                   "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None,
                   "profile_epochs": cfg.epochs, "profile_minutes_estimated": est["total_s"] / 60,
                   "train_loss_finite": bool(torch.isfinite(torch.tensor(hist["train_loss"].to_numpy())).all())}
            results["rows"].append(row)
            print(f"  {name:24s} {prec.name}: {img_s:8.0f} img/s ({row['pct_of_peak']:.1f} % of peak), "
                  f"{row['epoch_s']:.1f} s/epoch, peak memory {row['peak_memory_gb'] or 0:.1f} GB; the gpu profile's "
                  f"{cfg.epochs} epochs: ~{row['profile_minutes_estimated']:.1f} min", flush=True)
    if args.compile if args.compile is not None else (device.type == "cuda" and not args.smoke):
        name, make, cfg, task, kind = models(recipe)[0]
        results["compile"] = {"model": name, "precision": chosen.name,
                              **compiled_step_img_s(make, data[kind][0], cfg, task, chosen, device)}
        print(f"  torch.compile, classifier step: {results['compile']}", flush=True)
    results["total_profile_minutes_estimated"] = {
        p.name: sum(r["profile_minutes_estimated"] for r in results["rows"] if r["precision"] == p.name)
        for p in precisions}
    results["check_s"] = time.time() - t_start
    print("the whole gpu profile, estimated: " + ", ".join(f"{k} {v:.0f} min" for k, v in
                                                            results["total_profile_minutes_estimated"].items()) +
          f" (this check took {results['check_s'] / 60:.1f} min)")
    if args.json:
        common.save_json(results, args.json)
    return results


if __name__ == "__main__":
    main()
