"""Recipe experiments on top of the product's recipes: a candidate is one model's recipe of a profile
(`common.PROFILES`, the recipe the notebooks train with) plus named changes, trained with `common.fit` on that
profile's data and splits, with one or more seeds. Every run writes <out>/<name>_seed<k>.json (the best validation
metric, its epoch, the history, and the flip-TTA metrics of the best model, all on the validation split: the test
split is never loaded here); `summary` prints them as one table and `collect` adds them to a results file under
experiments/results/.

    python experiments/sweep.py run unet --name bce_only --set task.dice=0 --seeds 0 1
    python experiments/sweep.py run unet --name flips --set augment.hflip=True augment.vflip=True
    python experiments/sweep.py run backbone_unet_fullres_frozen --name fullres_A --branch-from weights/unet.pt
    python experiments/sweep.py run unet --name lovasz --loss lovasz --seeds 0 1
    python experiments/sweep.py run unet --name focal --loss focal --seeds 0 1
    python experiments/sweep.py run unet --name train75 --train-fraction 0.75 --seeds 0 1
    python experiments/sweep.py run backbone_unet_finetuned --name random_B --random-encoder --set epochs=50 --seeds 0 1
    python experiments/sweep.py summary runs/sweep
    python experiments/sweep.py collect runs/sweep --into experiments/results/<file>.json --round <n>

The search rounds recorded in experiments/results/sweep_cpu.json and sweep_h200.json used options that the product
no longer has; commit bc939f67 (tag `search-rounds`) holds the code that reruns them (experiments/README.md).
"""
import argparse
import ast
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.ops import sigmoid_focal_loss  # noqa: E402

import common  # noqa: E402

MODELS = tuple(common.CPU.models())     # the recipe's names: classifier, unet, backbone_unet_frozen, ...


def lovasz_hinge(logits, target):
    """The Lovasz hinge (Berman et al., 2018), per image then averaged: a convex surrogate of 1 - IoU of the rock
    class, computed from the hinge errors sorted in decreasing order."""
    losses = []
    for lg, t in zip(logits.float().flatten(1), target.float().flatten(1)):
        errors, order = torch.sort(1 - lg * (2 * t - 1), descending=True)
        gt = t[order]
        inter, union = gt.sum() - gt.cumsum(0), gt.sum() + (1 - gt).cumsum(0)
        jaccard = 1 - inter / union
        grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(torch.relu(errors), grad))
    return torch.stack(losses).mean()


class LovaszTask(common.SegmentationTask):
    """Segmentation with loss = bce * BCE + dice * Lovasz hinge (the Dice term replaced)."""

    def loss(self, out, y):
        return self.bce * F.binary_cross_entropy_with_logits(out.float(), y) + self.dice * lovasz_hinge(out, y)


# the focal loss (Lin et al., 2017) of the binary case, as torchvision has it: BCE per pixel weighted by
# (1 - p_t) ** gamma, so pixels already right count less (gamma = 0 is BCE); alpha = -1: no class weighting
focal_bce = functools.partial(sigmoid_focal_loss, alpha=-1, gamma=2.0, reduction="mean")


class FocalTask(common.SegmentationTask):
    """Segmentation with loss = bce * focal term + dice * Dice (the BCE term replaced)."""

    def loss(self, out, y):
        return self.bce * focal_bce(out.float(), y) + self.dice * common.dice_loss(out, y)


LOSSES = {"bce_dice": common.SegmentationTask, "lovasz": LovaszTask, "focal": FocalTask}


def load_branch(seg_model, unet_model):
    """Copy a trained base U-Net's first level into a backbone U-Net's full-resolution level, which is built like it:
    the level starts from what the base U-Net learned instead of random weights."""
    if not isinstance(seg_model.encoder, common.BranchedEncoder):
        raise common.CheckpointError("this backbone U-Net has no full-resolution level (backbone_unet(branch=...))")
    try:
        seg_model.encoder.full.load_state_dict(unet_model.encoder.stages[0].state_dict())
    except RuntimeError as e:
        raise common.CheckpointError(f"the base U-Net's first level (width {unet_model.config['widths'][0]}) does not fit "
                                     f"this one ({seg_model.config['branch']}): {str(e).splitlines()[0]}") from e
    return seg_model


def subsample(train, fraction, seed=0):
    """A stratified (by rock coverage) `fraction` of the training frames: the learning-curve candidate."""
    if fraction >= 1:
        return train
    keep, _ = common.stratified_split(common.coverage_bins(train.coverage, 5), 1 - fraction, seed)
    return train.subset(keep)


def candidate(profile, model, changes, seed, loss="bce_dice"):
    """(TrainConfig, task) of `model` in the profile's recipe with `changes` ({"field": value, "augment.field": value,
    "task.field": value}), `seed` and, for segmentation, the task class of `loss`."""
    spec = getattr(common.recipe(profile, seed=seed), model)
    part = lambda prefix: {k.split(".", 1)[1]: v for k, v in changes.items() if k.startswith(prefix)}  # noqa: E731
    cfg = dataclasses.replace(spec.train, **{k: v for k, v in changes.items() if "." not in k},
                              augment=dataclasses.replace(spec.train.augment, **part("augment.")))
    task = spec.task if model == "classifier" else LOSSES[loss](**spec.task.params())
    return cfg, dataclasses.replace(task, **part("task."))


def build(model, classifier, init, branch=(), branch_from=None, random_encoder=False):
    """A fresh model of the kind the notebooks train: the classifier, the base U-Net, or the backbone U-Net on a
    trained classifier (variant B from a trained variant A with --init). branch: the extension's high-resolution
    branch (`backbone_unet(branch=...)`; default: the recipe's, e.g. the full-resolution pair's), started from a
    trained base U-Net's levels with branch_from.
    random_encoder: the classifier's stages keep their random initial weights (the control of what the trained
    classifier brings)."""
    if model == "unet":
        return common.unet()
    cls, _ = common.load_checkpoint(classifier, expect_task="classification")
    if model == "classifier":
        return common.Classifier(cls.config["num_classes"])
    seg = common.backbone_unet(cls.config, branch=tuple(branch or common.CPU.models()[model].architecture["branch"]))
    if not random_encoder:
        common.load_backbone(seg, cls)
    if branch_from:
        load_branch(seg, common.load_checkpoint(branch_from, expect_task="segmentation")[0])
    if init:
        seg.load_state_dict(common.load_checkpoint(init, expect_task="segmentation")[0].state_dict())
    return seg


def run(args):
    changes = {k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    kind = "tiny" if args.model == "classifier" else "moon"
    train, val = common.recipe(args.profile).datasets(kind, args.data, Path(args.out), progress=False)[:2]
    train = subsample(train, args.train_fraction)
    for seed in args.seeds:
        name = f"{args.name}_seed{seed}"
        cfg, task = candidate(args.profile, args.model, changes, seed, args.loss)
        if args.smoke:       # a check of the script itself: 2 epochs of 2 batches, a small validation split
            cfg = dataclasses.replace(cfg, epochs=2)
            train, val = train.subset(range(min(2 * cfg.batch_size, len(train)))), val.subset(range(min(16, len(val))))
        t0 = time.time()
        common.seed_everything(seed)        # the initial weights too are the seed's, whatever ran before in this process
        init = args.init and args.init.format(seed=seed)      # e.g. runs/abl/A_seed{seed}/best.pt: B from its own A
        model = build(args.model, args.classifier, init, args.branch, args.branch_from, args.random_encoder)
        hist = common.fit(model, train, val, cfg, task, Path(args.out) / name)
        best, _ = common.load_checkpoint(Path(args.out) / name / "best.pt")
        res = {"name": name, "candidate": args.name, "model": args.model, "profile": args.profile, "seed": seed,
               "changes": {**changes, **({"loss": args.loss} if args.loss != "bce_dice" else {}),
                           **({"train_fraction": args.train_fraction} if args.train_fraction < 1 else {}),
                           **({"encoder": "random"} if args.random_encoder else {}),
                           **({"init": init} if init else {})},
               "classifier": common.weights_digest(args.classifier) if args.model != "unet" else None,
               "n_train": len(train), "architecture": best.config, "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
               "task": task.params(), "wall_s": time.time() - t0,
               "machine": common.machine(), "precision": common.compute_precision(verbose=False).name,
               "best_epoch": int(hist[[c for c in hist if c in ("val_top1", "val_iou")][0]].idxmax()) + 1,
               "history": hist.to_dict(orient="list")}
        for tta in (False, True):
            sfx = "_tta" if tta else ""
            if args.model == "classifier":
                res[f"top1{sfx}"] = float(common.classification_results(best, val, tta=tta)["metrics"]["top1"])
            else:
                r = common.segmentation_results(best, val, tta=tta)          # threshold chosen on val
                res.update({f"iou{sfx}": common.segmentation_results(best, val, 0.5, tta)["metrics"]["iou"],
                            f"iou_thr{sfx}": r["metrics"]["iou"], f"thr{sfx}": r["threshold"]})
        common.save_json(res, Path(args.out) / f"{name}.json")
        print(json.dumps({k: v for k, v in res.items() if k not in ("history", "config")}), flush=True)


def summary(out):
    rows = [json.loads(p.read_text()) for p in sorted(Path(out).glob("*.json"))]
    keys = ["top1", "top1_tta", "iou", "iou_thr", "iou_tta", "iou_thr_tta", "best_epoch", "wall_s"]
    print("| run | changes | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 2))
    for r in rows:
        cells = [f"{r[k]:.4f}" if isinstance(r.get(k), float) and k != "wall_s" else
                 f"{r[k]:.0f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        print(f"| {r['name']} | {r.get('changes', '')} | " + " | ".join(cells) + " |")


def collect(out, into, round_):
    """Add the runs in `out` to a results file as round `round_`; a run of the same name is replaced."""
    into = Path(into)
    data = json.loads(into.read_text()) if into.exists() else {"runs": []}
    new = [dict(json.loads(p.read_text()), round=round_) for p in sorted(Path(out).glob("*.json"))]
    names = {r["name"] for r in new}
    data["runs"] = [r for r in data["runs"] if r["name"] not in names] + new
    common.save_json(data, into)
    print(f"{into}: {len(new)} runs of round {round_} added, {len(data['runs'])} in all")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train one candidate with one or more seeds")
    r.add_argument("model", choices=MODELS)
    r.add_argument("--name", required=True)
    r.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="changes to the recipe: TrainConfig fields, augment.<field> for AugmentConfig ones, "
                        "task.<field> for the task's (e.g. task.dice=0)")
    r.add_argument("--seeds", nargs="+", type=int, default=[0])
    r.add_argument("--profile", default="cpu", choices=list(common.PROFILES))
    r.add_argument("--data", default=None, help="folder with the dataset archives (default: data/, ../shared/data)")
    r.add_argument("--out", default="runs/sweep")
    r.add_argument("--classifier", default=str(common.ROOT / "weights" / "classifier.pt"))
    r.add_argument("--init", default=None, help="a backbone U-Net checkpoint to start from (variant B from A); "
                   "{seed} in the path becomes each run's seed")
    r.add_argument("--random-encoder", action="store_true",
                   help="backbone U-Net: keep the classifier's stages at random initial weights (the control)")
    r.add_argument("--branch", nargs="*", type=int, default=[], help="backbone U-Net: the width of a full-resolution level (one value)")
    r.add_argument("--branch-from", default=None, help="a base U-Net checkpoint whose first level starts the full-resolution level")
    r.add_argument("--loss", default="bce_dice", choices=list(LOSSES),
                   help="segmentation: BCE + Dice, BCE + Lovasz hinge, or focal + Dice")
    r.add_argument("--train-fraction", type=float, default=1.0, help="train on this stratified fraction of train")
    r.add_argument("--smoke", action="store_true", help="2 epochs of 2 batches per run (checks the script)")
    s = sub.add_parser("summary")
    s.add_argument("out")
    c = sub.add_parser("collect", help="add the runs of an --out folder to a results file")
    c.add_argument("out")
    c.add_argument("--into", required=True)
    c.add_argument("--round", type=int, required=True)
    a = ap.parse_args(argv)
    if a.cmd == "run":
        return run(a)
    if a.cmd == "summary":
        return summary(a.out)
    return collect(a.out, a.into, a.round)


if __name__ == "__main__":
    main()
