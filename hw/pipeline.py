"""What the notebooks do around the models: the recipe of every profile in one place, the set-up cell, the data of
a profile, the "train or reuse" step, and the final results written beside the weights."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .augment import AugmentConfig
from .checkpoints import load_checkpoint, save_checkpoint, weights_digest
from .core import MOON_HINT, ROOT, TINY_URL, CheckpointError, DataError, atomic_write, count_params, data_root, \
    results_file, save_json, seed_everything, shown_path
from .data import find_dataset, moon_selection, moon_splits, read_moon, read_tiny_imagenet, stratified_split, \
    tiny_folder
from .metrics import best_threshold, bootstrap_iou, confusion_counts, per_image_iou, seg_metrics, topk_correct
from .precision import compute_precision, environment
from .synthetic import make_synthetic_moon, make_synthetic_tiny_imagenet
from .evaluation import predict
from .training import TrainConfig, fit

# ---------------------------------------------------------------------------------------------------- recipes
CLASSIFIER_AUGMENT = AugmentConfig()            # random resized crop (35-100 % of the area), h-flip, colour
BACKBONE_AUGMENT = AugmentConfig(scale=(1.0, 1.0), hflip=True, vflip=False, rotate=0.0, brightness=0.0, contrast=0.0,
                                 saturation=0.0)     # the h-flip and the crop's aspect-ratio jitter at full area


@dataclass(frozen=True)
class Recipe:
    """One profile: the number of classes and the training recipe of each model (variant A: the classifier's stages
    frozen; variant B: fine-tuned after A). synthetic: the sizes of the demo's stand-ins (None: the real data).
    fit_on_val: the segmentation models' final fit uses train + val (without broken frames) and keeps its last
    epoch, with the epochs and the threshold (`TrainConfig.threshold`) fixed beforehand by experiments on train and
    val (experiments/README.md); val then scores nothing, the test split does."""
    classes: int
    classifier: TrainConfig
    unet: TrainConfig
    frozen: TrainConfig
    finetuned: TrainConfig
    synthetic: dict | None = None
    fit_on_val: bool = True

    def configs(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), TrainConfig)}


def _recipe(classes, cls, seg, bb_a, bb_b, synthetic=None):
    """A profile from its differences: cls (classifier), seg (U-Net), bb_a / bb_b (variants A and B) are TrainConfig
    fields; the segmentation models share weight decay 1e-4 and BCE + Dice; A and B share the backbone augmentation."""
    seg_base = dict(weight_decay=1e-4, lr=seg["lr"], batch_size=seg["batch_size"])
    return Recipe(classes, TrainConfig(**cls, label_smoothing=0.1, augment=CLASSIFIER_AUGMENT),
                  TrainConfig(**{**seg_base, **seg}, augment=AugmentConfig.none()),
                  TrainConfig(**seg_base, **bb_a, freeze_encoder_epochs=-1, augment=BACKBONE_AUGMENT),
                  TrainConfig(**seg_base, **bb_b, freeze_encoder_epochs=0, augment=BACKBONE_AUGMENT), synthetic)


PROFILES = {
    # synthetic data made by `synthetic`: all three notebooks in under 3 minutes on 2 cores without native bf16
    # (it shows that the pipeline works, not the quality)
    "demo": _recipe(10, dict(epochs=3, batch_size=64, lr=3e-3, min_size=64, full_size_at=0.6),
                    dict(epochs=4, batch_size=16, lr=3e-3), dict(epochs=3), dict(epochs=2),
                    synthetic={"n_classes": 10, "n_train": 40, "n_val": 10, "n_moon": 40, "moon_size": (360, 240),
                               "broken": (5, 18, 31)}),
    # the real data on 2 CPU cores; the classifier grows its input 64 -> 128 px until 85 % of its epochs
    "cpu": _recipe(100, dict(epochs=20, batch_size=128, lr=3e-3, min_size=64, full_size_at=0.85),
                   dict(epochs=40, batch_size=16, lr=3e-3), dict(epochs=20), dict(epochs=30)),
    # all 200 classes and longer schedules on a CUDA GPU
    "gpu": _recipe(200, dict(epochs=40, batch_size=256, lr=4e-3, min_size=64, full_size_at=0.85),
                   dict(epochs=80, batch_size=32, lr=3e-3), dict(epochs=60), dict(epochs=60)),
}


def recipe(profile, seed=0, epochs=None, batch_size=None, num_classes=None):
    """A profile's `Recipe` with the notebooks' overrides applied to every model's configuration."""
    r = PROFILES[profile]
    change = {"seed": seed, **({"epochs": epochs} if epochs else {}), **({"batch_size": batch_size} if batch_size else {})}
    return dataclasses.replace(r, classes=num_classes or r.classes,
                               **{k: dataclasses.replace(c, **change) for k, c in r.configs().items()})


def resolve_profile(profile="auto", data_dir=None):
    """'auto' -> 'cpu' (or 'gpu' on CUDA) when the real data is found, else 'demo' (and says so)."""
    if profile != "auto":
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {list(PROFILES)} or 'auto', not {profile!r}")
        return profile
    if find_dataset("tiny", data_dir) is None or find_dataset("moon", data_dir) is None:
        print("The real data was not found (data/, ../shared/data or data_dir): running the 'demo' profile on "
              "synthetic stand-ins.")
        return "demo"
    return "gpu" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------------- set-up
@dataclass
class Setup:
    """What a notebook's set-up cell decides: the profile and its recipe, the output folders, the precision."""
    profile: str
    recipe: Recipe
    out: Path
    data_dir: str | None
    seed: int
    precision: object
    environment: dict = field(default_factory=dict)

    @property
    def demo(self):
        return self.profile == "demo"

    @property
    def figures(self):
        return self.out / "figures"

    def datasets(self, kind, progress=True):
        return load_datasets(kind, self.profile, self.data_dir, self.out, self.seed, progress, self.recipe.classes)


def setup(profile="auto", data_dir=None, output_dir=".", seed=0, precision="auto", epochs=None, batch_size=None,
          num_classes=None):
    """The set-up cell of every notebook: resolves the profile, seeds, decides the precision (printed with its
    reason), turns on LaTeX tables for the PDF export, and prints the machine."""
    import pandas as pd
    from .plots import report_formats
    pd.set_option("display.precision", 4)
    report_formats()
    profile = resolve_profile(profile, data_dir)
    seed_everything(seed)
    s = Setup(profile, recipe(profile, seed, epochs, batch_size, num_classes), Path(output_dir), data_dir, seed,
              compute_precision(precision=precision), environment())
    print(f"profile: {profile}; seed: {seed}; " + ", ".join(f"{k}: {v}" for k, v in s.environment.items()))
    return s


# ---------------------------------------------------------------------------------------------------- data
MOON_TEST, MOON_VAL = 0.2, 0.15      # fractions of all moon frames in the test and validation splits


def load_datasets(kind, profile, data_dir=None, out_dir=ROOT, seed=0, progress=True, classes=None):
    """The data of one notebook for a profile: real data, or synthetic stand-ins written under out_dir/data.
    Returns (train, val, test, info).
    tiny: a stratified 90/10 train/val split of the train images; test = the official validation images of the
    chosen classes (None where the archive has none).
    moon: train / val / test = 65 / 15 / 20 % of the frames, stratified by rock coverage (fixed seed, `moon_splits`);
    the test split is drawn only from frames that served no earlier choice (hw/moon_selection.json) and is for the
    final report only. Broken frames (`MaskSet.broken`) are dropped from train and kept in val and test;
    info says how many there are."""
    syn = PROFILES[profile].synthetic
    if syn:
        base = Path(out_dir) / "data" / "synthetic"
        if kind == "tiny":
            root = base / "tiny-imagenet-200"
            if not (root / "val" / "val_annotations.txt").exists():
                make_synthetic_tiny_imagenet(root, syn["n_classes"], syn["n_train"], syn["n_val"], seed)
        else:
            root = base / "MOON_SEGMENTATION_BINARY"
            if not (root / "images" / "ground" / f"ground{syn['n_moon']:04d}.png").exists():
                make_synthetic_moon(root, syn["n_moon"], syn["moon_size"], seed, broken=syn["broken"])
    else:
        root = find_dataset(kind, data_dir)
        if root is None:
            where = "Tiny ImageNet-200 (" + TINY_URL + ")" if kind == "tiny" else MOON_HINT
            raise DataError(f"the {profile!r} profile needs the real data: put {where} into "
                            f"{data_dir or data_root()} or ../shared/data, or run the 'demo' profile.")
    info = {"root": shown_path(root), "synthetic": bool(syn), "profile": profile}
    if kind == "tiny":
        full = read_tiny_imagenet(root, classes=classes or PROFILES[profile].classes, progress=progress)
        tr, va = stratified_split(full.labels.numpy(), 0.1, seed)
        test = (read_tiny_imagenet(root, classes=full.classes, split="val", progress=progress)
                if (tiny_folder(root) / "val" / "val_annotations.txt").exists() else None)
        return full.subset(tr), full.subset(va), test, info
    full = read_moon(root, progress=progress)
    # the frames that served a choice so far (hw/moon_selection.json) are never test; synthetic frames served none
    selection = [] if syn else sorted({i for ids in moon_selection().values() for i in ids})
    tr, va, te = moon_splits(full.coverage, full.ids, MOON_TEST, MOON_VAL, selection, seed)
    broken = full.broken.numpy()                 # decided once, on all frames
    train = tr[~broken[tr]]
    info.update(orig_size=list(full.orig_size), n_frames=len(full), n_broken=int(broken.sum()),
                broken_ids=[full.ids[i] for i in np.flatnonzero(broken)], n_broken_train=len(tr) - len(train),
                n_selection=len(selection))
    return full.subset(train), full.subset(va), full.subset(te), info


def decisions():
    """The recipe decisions of experiments/compare.py (experiments/results/decisions.json) as the notebooks quote them:
    {"candidates": {name: row}, "threshold": {model: row}, ...}; a candidate's row holds its seeds, the difference to
    the baseline (pooled and per seed), its interval at its `level` and the verdict."""
    d = results_file("decisions.json")
    return {**d, "candidates": {r["candidate"]: r for r in d["candidates"]},
            "threshold": {r["model"].split(" ")[0]: r for r in d["threshold"]}}


def data_signature(train, val):
    h = hashlib.sha1()
    for t in (train.images, val.images):
        h.update(t[:: max(1, len(t) // 64)].numpy().tobytes())
    return {"n_train": len(train), "n_val": len(val), "sample_hash": h.hexdigest()[:16]}


# ---------------------------------------------------------------------------------------------------- train or reuse
TRAIN_INSTEAD = ("Instead of waiting: train='auto' reuses the weights in weights/ when they were trained with this "
                 "configuration and data (the committed ones are, for the cpu profile); the 'gpu' profile trains on a "
                 "CUDA GPU (Colab); fewer epochs (epochs=) or classes (num_classes=, notebook 01) train faster. "
                 "Interrupting is safe: the next run resumes from the last finished epoch.")


def run_key(cfg, model, train, val, depends_on=()):
    """What weights/<name>.pt must have been trained with to be reused: the configuration, the architecture, the data
    and the weights of the checkpoints it starts from."""
    key = {"train": cfg.key(), "model": model.config, "data": data_signature(train, val)}
    if depends_on:
        key["depends_on"] = {Path(p).name: weights_digest(p) for p in depends_on}
    return json.loads(json.dumps(key))


def fit_data(train, val, fit_on_val):
    """What a final fit trains on: train, or with fit_on_val train + val without val's broken frames."""
    return train.join(val.subset(torch.nonzero(~val.broken).flatten())) if fit_on_val else train


def train_or_reuse(name, make_model, train, val, cfg, out_dir=ROOT, mode="auto", meta=None, callback=None,
                   progress=True, device=None, depends_on=(), precision=None, fit_on_val=False):
    """The notebooks' training step. weights/<name>.pt is reused when it was trained with this exact configuration on
    this data (mode 'auto' or False), and from the same weights in `depends_on` (checkpoints that make_model loads
    weights from, e.g. the classifier); otherwise the model is trained (mode 'auto' or True), resuming an interrupted
    run from runs/<name>/last.pt, and its best epoch is exported to weights/<name>.pt with weights/<name>_history.csv
    beside it. fit_on_val (segmentation, `Recipe.fit_on_val`): train on `fit_data(train, val, True)` and export the
    last epoch; val is still scored each epoch, as part of the fit. Before training it prints how long that will
    take on this machine and what to do instead. Returns (model, history DataFrame, meta)."""
    import pandas as pd
    out_dir = Path(out_dir)
    wpath, hpath = out_dir / "weights" / f"{name}.pt", out_dir / "weights" / f"{name}_history.csv"
    model = make_model()
    train = fit_data(train, val, fit_on_val)
    key = run_key(cfg, model, train, val, depends_on)
    if mode in ("auto", False) and wpath.exists() and hpath.exists():
        loaded, m = load_checkpoint(wpath)
        if m.get("run_key") == key:
            print(f"reusing {shown_path(wpath)} (trained {m.get('created')}; machine: "
                  f"{m.get('machine', 'not recorded')}; precision: {m.get('precision', 'not recorded')}); "
                  f"set train=True to retrain")
            return loaded, pd.read_csv(hpath), m
        print(f"{shown_path(wpath)} was trained with another configuration or data: training anew")
    if mode is False:
        raise CheckpointError(f"no weights at {wpath} match this configuration; set train=True or 'auto'.")
    run_dir = out_dir / "runs" / name
    t0 = time.time()
    # train=True retrains a finished run in run_dir; 'auto' exports it; an interrupted run is continued either way
    history = fit(model, train, val, cfg, run_dir, device=device, progress=progress, callback=callback,
                  meta={**(meta or {}), "fit_on": "train+val" if fit_on_val else "train"}, retrain_finished=mode is True,
                  precision=precision, estimate=TRAIN_INSTEAD, keep="last" if fit_on_val else "best")
    best, m = load_checkpoint(run_dir / "best.pt")
    frozen = sum(p.numel() for p in best.encoder_parameters()) if cfg.freeze_encoder_epochs < 0 else 0
    m = {**m, "run_key": key, "train_time_s": float(history["epoch_time_s"].sum()), "wall_time_s": time.time() - t0,
         "epochs": cfg.epochs, "trainable_params": count_params(best) - frozen}
    atomic_write(hpath, lambda p: history.to_csv(p, index=False))
    save_checkpoint(wpath, best, **m)
    return best, history, m


# ---------------------------------------------------------------------------------------------------- results
def classification_results(model, data, tta=None):
    """Logits and metrics of a classifier on a split: top-1, top-5, per-class accuracy, confusion matrix."""
    logits = predict(model, data.images, tta=tta)
    n_cls = logits.shape[1]
    c = topk_correct(logits, data.labels, (1, min(5, n_cls)))
    pred = logits.argmax(1)
    conf = torch.zeros(n_cls, n_cls, dtype=torch.long)
    conf.index_put_((data.labels, pred), torch.ones_like(pred), accumulate=True)
    per_class = (conf.diag().float() / conf.sum(1).clamp(min=1)).numpy()
    return {"logits": logits, "pred": pred, "confusion": conf, "per_class": per_class,
            "metrics": {"top1": c[1] / len(pred), "top5": c[min(5, n_cls)] / len(pred), "n": len(pred)}}


def segmentation_results(model, data, threshold=None, tta=None):
    """Probabilities and metrics of a segmentation model on a split. threshold=None chooses it on `data` (see
    `best_threshold`); the metrics are then reported at that threshold. tta as in `predict`. The metrics of every
    threshold of the grid are in "threshold_table" either way."""
    return segmentation_scores(predict(model, data.images, tta=tta), data.masks, threshold)


def segmentation_scores(logits, masks, threshold=None):
    """`segmentation_results` of logits already computed."""
    best, table = best_threshold(logits, masks)
    threshold = best if threshold is None else threshold
    counts = confusion_counts(logits, masks, threshold)
    return {"probs": torch.sigmoid(logits), "counts": counts, "threshold": threshold, "threshold_table": table,
            "iou_per_image": per_image_iou(counts), "metrics": {"threshold": threshold, **seg_metrics(counts)}}


def split_scores(counts):
    """Micro IoU, Dice, pixel accuracy of a split's per-image counts, and the 95 % bootstrap interval of the IoU."""
    m = seg_metrics(counts)
    return {"iou": m["iou"], "dice": m["dice"], "pixel_acc": m["pixel_acc"], "iou_ci": bootstrap_iou(counts),
            "n": len(counts)}


def held_out_scores(result, test):
    """The "test" object of a metrics file from `segmentation_results` on the test split (at the recipe's threshold,
    fixed beforehand): the scores with their interval, on all test frames and without the broken ones."""
    return {**split_scores(result["counts"]), "without_broken": split_scores(result["counts"][~test.broken])}


def export_final(name, model, meta, metrics, out_dir=ROOT):
    """Write the final metrics beside the weights (weights/<name>_metrics.json) and into the checkpoint."""
    out_dir = Path(out_dir)
    meta = {**meta, "metrics": metrics}
    if "threshold" in metrics:
        meta["threshold"] = metrics["threshold"]
    save_checkpoint(out_dir / "weights" / f"{name}.pt", model, **meta)
    summary = {"name": name, "params": meta["params"], "trainable_params": meta.get("trainable_params"),
               "train_time_s": meta.get("train_time_s"), "epochs": meta.get("epochs"),
               "profile": meta.get("profile"), "synthetic": meta.get("synthetic"), "fit_on": meta.get("fit_on", "train"),
               **metrics}
    save_json(summary, out_dir / "weights" / f"{name}_metrics.json")
    return summary
