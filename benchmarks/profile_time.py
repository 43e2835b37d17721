"""How long the `cpu` profile's training takes on this machine, per model, before training anything: the same
estimate each notebook prints when it is about to train (`common.estimate_fit_time`: a few timed steps of each
kind the schedule has, on a copy of the model), on the real data, for the training configuration stored in each
committed checkpoint.

    python benchmarks/profile_time.py --json benchmarks/estimates/<machine kind>.json

Run it on each kind of machine (on one with native bf16, ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 caps it
to AVX2 and fp32, which the result says). The README's table of training times per kind of machine is rendered
from these files.
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=["cpu", "gpu", "demo"],
                    help="demo: its synthetic data (written under --out) and schedules: checks the script quickly")
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default=str(ROOT), help="where the demo's synthetic data is written")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if torch.get_num_threads() > 2 and common.default_device().type == "cpu":
        torch.set_num_threads(2)
    prec = common.compute_precision()
    r, models = common.recipe(args.profile), {}
    tiny, moon = (r.datasets(kind, args.data, args.out, progress=False) for kind in ("tiny", "moon"))
    # each model (its committed architecture) with the profile's recipe, as the notebooks train it
    for name in ("classifier", "unet", "backbone_unet_frozen", "backbone_unet_finetuned"):
        spec = getattr(r, name)
        model, _ = common.load_checkpoint(ROOT / "weights" / f"{name}.pt")
        data = tiny[:2] if name == "classifier" else (common.fit_data(*moon[:2], spec.fit_on_val), moon[1])
        models[name] = (model, *data, spec.train, spec.task)        # as the final fit trains it
    res = {"machine": common.machine(), "precision": prec.name, "profile": args.profile, "torch": torch.__version__,
           "commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "minutes": {}}
    for name, (model, train, val, cfg, task) in models.items():
        est = common.estimate_fit_time(model, train, val, cfg, task, prec)
        res["minutes"][name] = est["total_s"] / 60
        print(f"{name}: {est['total_s'] / 60:.1f} min ({cfg.epochs} epochs; one step: " +
              ", ".join(f"{k} {v:.2f} s" for k, v in est["step_s"].items()) + ")", flush=True)
    res["total_minutes"] = sum(res["minutes"].values())
    print(f"{res['machine']}, {prec.name}: {res['total_minutes']:.0f} min of training in all")
    if args.json:
        common.save_json(res, args.json)


if __name__ == "__main__":
    main()
