"""The notebooks' steps around the models: the set-up cell, "train or reuse", and the export of the final weights
with their metrics."""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoints import load_checkpoint, save_checkpoint, weights_digest
from .core import LANG_ENV, ROOT, CheckpointError, atomic_write, count_params, save_json, seed_everything, \
    shown_path, tr
from .evaluation import classification_results, held_out_scores, segmentation_results
from .metrics import bootstrap_accuracy
from .models import build_model
from .precision import compute_precision, environment, machine
from .recipes import Recipe, recipe, resolve_profile
from .training import estimate_fit_time, fit, resume_state, run_key


@dataclass(frozen=True)
class Runs:
    """Where and how a notebook's models train: the output folder (weights/, runs/), the mode ("auto": reuse the
    weights in weights/ when trained under the same run key, else train, resuming an interrupted run; "train": train
    even where reusable weights exist, resuming an unfinished run and restarting a finished one; "reuse": only
    reuse), and the precision (None: this machine's)."""
    out: Path = ROOT
    mode: str = "auto"
    precision: object = None

    def __post_init__(self):
        if self.mode not in ("auto", "train", "reuse"):
            raise ValueError(f"train must be 'auto', 'train' or 'reuse', not {self.mode!r}")

    @property
    def weights(self):
        return Path(self.out) / "weights"


@dataclass
class Setup:
    """What a notebook's set-up cell decides: the profile and its recipe, the output folders, the precision."""
    profile: str
    recipe: Recipe
    runs: Runs
    data_dir: str | None
    seed: int
    environment: dict = field(default_factory=dict)

    @property
    def out(self):
        return self.runs.out

    @property
    def precision(self):
        return self.runs.precision

    @property
    def demo(self):
        return self.profile == "demo"

    @property
    def figures(self):
        return self.out / "figures"

    def datasets(self, kind, progress=True):
        return self.recipe.datasets(kind, self.data_dir, self.out, self.seed, progress)

    def describe(self, meta, info, source_size, **more):
        """A run's meta with what its checkpoint records of the data: the profile, synthetic or not, the size the
        images are stored at (64: Tiny ImageNet; 128: the moon frames), and `more` (e.g. the class names)."""
        return {**meta, **more, "profile": self.profile, "synthetic": info["synthetic"], "source_size": source_size}


def setup(notebook, profile="auto", data_dir=None, output_dir=".", seed=0, precision="auto", train="auto", **overrides):
    """The set-up cell of notebook "01", "02" or "03" from its parameters: Russian printed lines, the profile (the moon
    set that the notebook needs is looked for first: a DataError says where to put it), seeds, the precision (printed
    with its reason), the training mode (`Runs`), LaTeX tables for the PDF export; prints the machine, and warns in
    the demo profile. overrides: epochs, batch_size, num_classes (None: the profile's)."""
    import pandas as pd
    from .plots import report_formats
    os.environ[LANG_ENV] = "ru"
    pd.set_option("display.precision", 4)
    report_formats()
    profile = resolve_profile(profile, data_dir, notebook)
    seed_everything(seed)
    runs = Runs(Path(output_dir), train, compute_precision(precision=precision))
    s = Setup(profile, recipe(profile, seed, **overrides), runs, data_dir, seed, environment())
    print(tr(f"profile: {profile}; seed: {seed}; ", f"профиль: {profile}; seed: {seed}; ") +
          ", ".join(f"{k}: {v}" for k, v in s.environment.items()))
    if s.demo:
        from IPython.display import Markdown, display
        display(Markdown(tr("> **The demo profile: every number below comes from synthetic stand-ins made by `common`; "
                            "it checks the pipeline, not the task.**", "> **Внимание: профиль demo — все данные и все "
                            "числа ниже получены на синтетических данных, сгенерированных `common`; это проверка "
                            "конвейера, а не результат задания.**")))
    return s


TRAIN_INSTEAD = (     # English, Russian
    "Instead of waiting: train='auto' reuses the weights in weights/ when they were trained with this configuration "
    "and data (the committed ones are, for the cpu profile); the 'gpu' profile trains on a CUDA GPU (Colab); fewer "
    "epochs (epochs=) or classes (num_classes=, notebook 01) train faster. Interrupting is safe: the next run resumes "
    "from the last finished epoch.",
    "Вместо ожидания: train='auto' берёт веса из weights/, если они обучены с этой конфигурацией и данными (так с "
    "закоммиченными весами профиля cpu); профиль 'gpu' обучает на CUDA (Colab); меньше эпох (epochs=) или классов "
    "(num_classes=, ноутбук 01) — быстрее. Прерывать безопасно: следующий запуск продолжит с последней эпохи.")


def fit_data(train, val, fit_on_val):
    """What a final fit trains on: train, or with fit_on_val train + val without val's broken frames."""
    return train.join(val.subset(torch.nonzero(~val.broken).flatten())) if fit_on_val else train


def reusable(name, key, weights):
    """Step 1: the weights of run `name` in the folder `weights`, when trained under this run key: (model, history,
    meta), else None."""
    import pandas as pd
    wpath, hpath = weights / f"{name}.pt", weights / f"{name}_history.csv"
    if not (wpath.exists() and hpath.exists()):
        return None
    model, m = load_checkpoint(wpath)
    if m.get("run_key") != key:
        print(tr(f"{shown_path(wpath)} was trained with another configuration or data: training anew",
                 f"{shown_path(wpath)} обучены с другой конфигурацией или данными: обучаю заново"))
        return None
    print(tr(f"reusing {shown_path(wpath)} (trained {m.get('created')}; machine: {m.get('machine', 'not recorded')}; "
             f"precision: {m.get('precision', 'not recorded')}); set train='train' to retrain",
             f"беру готовые веса {shown_path(wpath)} (обучены {m.get('created')}; машина: "
             f"{m.get('machine', 'не записана')}; точность: {m.get('precision', 'не записана')}); train='train' "
             "обучит заново"))
    return model.eval(), pd.read_csv(hpath), m


def _announce(model, train, val, cfg, task, prec, start):
    """Before training: how long the epochs left take on this machine, and what to do instead of waiting."""
    est = estimate_fit_time(model, train, val, cfg, task, prec, start) if start < cfg.epochs else None
    if est:
        where, minutes = f"({machine(prec.device)}; {prec.name})", est["total_s"] / 60
        steps = ", ".join(f"{k} {v:.2f} s" for k, v in est["step_s"].items())
        print(tr(f"estimated training time on this machine {where}: {minutes:.1f} min for epochs",
                 f"оценка времени обучения на этой машине {where}: {minutes:.1f} мин на эпохи") +
              f" {start + 1}–{cfg.epochs} ({steps})", flush=True)
        if est["total_s"] > 300:
            print(tr(*TRAIN_INSTEAD), flush=True)
    return est


def final_weights(model, history, run_dir, fit_on_val):
    """Step 3: the model a fit exports, with its meta: the last epoch of a final fit on train + val (its epochs fixed
    beforehand), else the best epoch on val (run_dir/best.pt)."""
    if not fit_on_val:
        return load_checkpoint(run_dir / "best.pt")
    final = build_model(model.config)
    final.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    return final, {**environment(), "epoch": len(history), "metrics": dict(history.iloc[-1].filter(like="val_"))}


def train_or_reuse(spec, model, data, runs, callback=None):
    """The notebooks' training step for the `ModelRecipe` spec, starting from `model`, on data = (train, val); returns
    (model, history, meta). One run key (`run_key`: the configuration with the digests of the checkpoints the model
    starts from, the task, the architecture, the data) decides both reuse (step 1, `reusable`) and resuming an
    interrupted fit in runs/<name>/ (step 2, `fit`); step 3 (`final_weights`) picks what is exported. The history
    goes to weights/<name>_history.csv; `export_final` writes the weights, once."""
    train, val = data
    train = fit_data(train, val, spec.fit_on_val)
    cfg = spec.train
    if deps := spec.depends_on(runs.weights):
        cfg = dataclasses.replace(cfg, init={p.name: weights_digest(p) for p in deps})
    key = run_key(cfg, spec.task, model, train, val)
    if runs.mode != "train" and (found := reusable(spec.name, key, runs.weights)):
        return found
    if runs.mode == "reuse":
        raise CheckpointError(f"no weights at {shown_path(runs.weights / spec.name)}.pt match this configuration; "
                              "use train='auto' or 'train'.")
    run_dir, prec, t0 = runs.out / "runs" / spec.name, compute_precision(precision=runs.precision), time.time()
    state = resume_state(run_dir / "last.pt", key, verbose=False)
    if state and runs.mode == "train" and state["epoch"] >= cfg.epochs:
        print(tr(f"{shown_path(run_dir)} holds a finished run: training anew", f"{shown_path(run_dir)}: запуск уже "
                 "закончен, обучаю заново"))
        (run_dir / "last.pt").unlink()
        state = None
    est = _announce(model, train, val, cfg, spec.task, prec, state["epoch"] if state else 0)
    history = fit(model, train, val, cfg, spec.task, run_dir, prec, callback)
    final, m = final_weights(model, history, run_dir, spec.fit_on_val)
    m = {**m, "task": spec.task.name, "seed": cfg.seed, "precision": prec.name, "run_key": key,
         "fit_on": "train+val" if spec.fit_on_val else "train", "train_time_s": float(history["epoch_time_s"].sum()),
         "wall_time_s": time.time() - t0, "epochs": cfg.epochs,
         "trainable_params": count_params(model, trainable_only=True),       # `fit` froze what cfg freezes
         **({"estimated_train_s": est["total_s"]} if est else {})}
    atomic_write(runs.weights / f"{spec.name}_history.csv", lambda p: history.to_csv(p, index=False))
    return final.eval(), history, m


def export_final(name, model, meta, metrics, out_dir=ROOT):
    """Write the final weights with their metrics (weights/<name>.pt, the checkpoint's meta) and the metrics beside
    them (weights/<name>_metrics.json)."""
    out_dir = Path(out_dir)
    meta = {**meta, "metrics": metrics}
    if "threshold" in metrics:
        meta["threshold"] = metrics["threshold"]
    save_checkpoint(out_dir / "weights" / f"{name}.pt", model, **meta)
    keep = ("trainable_params", "train_time_s", "epochs", "profile", "synthetic")
    summary = {"name": name, "params": count_params(model), **{k: meta.get(k) for k in keep},
               "fit_on": meta.get("fit_on", "train"), **metrics}
    save_json(summary, out_dir / "weights" / f"{name}_metrics.json")
    return summary


def export_classifier(model, val, test, meta, out_dir=ROOT):
    """The classifier exported with flip TTA: top-1 / top-5 on val with and without TTA, the 95 % bootstrap
    interval of top-1, and the same on the official validation images (test) when present; returns (summary,
    `classification_results` on val with TTA)."""
    plain = classification_results(model, val, tta=False)["metrics"]
    model.tta = True     # the exported model averages each prediction with that of the mirrored image
    res = classification_results(model, val)
    final = {"val_top1": res["metrics"]["top1"], "val_top5": res["metrics"]["top5"], "n_val": res["metrics"]["n"],
             "val_top1_ci": bootstrap_accuracy(res["pred"] == val.labels), "val_top1_no_tta": plain["top1"],
             "val_top5_no_tta": plain["top5"], "classes": len(val.names), "best_epoch": meta["epoch"], "test": None}
    if test is not None:     # the official validation images of these classes: no choice has looked at them
        t = classification_results(model, test)
        final["test"] = {"top1": t["metrics"]["top1"], "top5": t["metrics"]["top5"], "n": t["metrics"]["n"],
                         "top1_ci": bootstrap_accuracy(t["pred"] == test.labels)}
    return export_final("classifier", model, meta, final, out_dir), res


def export_segmentation(spec, model, meta, test, out_dir=ROOT, no_tta=False):
    """The final fit of the `ModelRecipe` spec exported with flip TTA, scored once on the test split at its task's
    threshold, fixed beforehand (val is part of the fit: it scores nothing); no_tta: the test IoU without TTA beside
    it. Returns (summary, `segmentation_results` on test)."""
    threshold = spec.task.threshold
    plain = segmentation_results(model, test, threshold, tta=False)["metrics"] if no_tta else None
    model.tta = True
    res = segmentation_results(model, test, threshold)
    scores = {"threshold": threshold, "epoch": meta["epoch"],
              "test": {**held_out_scores(res, test), **({"iou_no_tta": plain["iou"]} if no_tta else {})}}
    return export_final(spec.name, model, meta, scores, out_dir), res
