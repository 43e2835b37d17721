"""The notebooks' steps around the models: the set-up cell, "train or reuse", and the export of the final weights
with their metrics."""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoints import load_checkpoint, save_checkpoint
from .core import LANG_ENV, ROOT, CheckpointError, atomic_write, count_params, save_json, seed_everything, \
    shown_path, tr
from .evaluation import held_out_scores, segmentation_results
from .models import build_model
from .precision import compute_precision, environment, machine
from .recipes import Recipe, recipe, resolve_profile
from .training import estimate_fit_time, fit, resume_state, run_key


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
        return self.recipe.datasets(kind, self.data_dir, self.out, self.seed, progress)


def setup(profile="auto", data_dir=None, output_dir=".", seed=0, precision="auto", epochs=None, batch_size=None,
          num_classes=None, notebook=None):
    """The set-up cell of every notebook ("01", "02" or "03"): Russian printed lines, the profile (the moon set that
    the notebook needs is looked for first: a DataError says where to put it), seeds, the precision (printed with
    its reason), LaTeX tables for the PDF export; prints the machine, and warns in the demo profile."""
    import pandas as pd
    from .plots import report_formats
    os.environ[LANG_ENV] = "ru"
    pd.set_option("display.precision", 4)
    report_formats()
    profile = resolve_profile(profile, data_dir, notebook)
    seed_everything(seed)
    s = Setup(profile, recipe(profile, seed, epochs, batch_size, num_classes), Path(output_dir), data_dir, seed,
              compute_precision(precision=precision), environment())
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


def train_or_reuse(name, make_model, train, val, cfg, task, out_dir=ROOT, mode="auto", depends_on=(), callback=None,
                   precision=None, fit_on_val=False):
    """The notebooks' training step; returns (model, history, meta). Modes "auto" and "reuse" reuse weights/<name>.pt
    when its `run_key` is this one (`depends_on`: the checkpoints make_model starts from); else "auto" and "train"
    print how long training takes here, then `fit` in runs/<name>/ (resuming; "train" trains a finished run anew).
    The model is the best epoch on val, or with fit_on_val the last epoch of a fit on train + val (`fit_data`). The
    history goes to weights/<name>_history.csv; `export_final` writes the weights, once."""
    import pandas as pd
    if mode not in ("auto", "train", "reuse"):
        raise ValueError(f"mode must be 'auto', 'train' or 'reuse', not {mode!r}")
    out_dir = Path(out_dir)
    wpath, hpath = out_dir / "weights" / f"{name}.pt", out_dir / "weights" / f"{name}_history.csv"
    model, train = make_model(), fit_data(train, val, fit_on_val)
    key = run_key(cfg, task, model, train, val, depends_on)
    dep = key.get("depends_on")      # a run from other initial weights is another run: its own folder
    run_dir = out_dir / "runs" / (name + (f"-{hashlib.sha1(json.dumps(dep, sort_keys=True).encode()).hexdigest()[:8]}"
                                          if dep else ""))
    if mode != "train" and wpath.exists() and hpath.exists():
        loaded, m = load_checkpoint(wpath)
        if m.get("run_key") == key:
            print(tr(f"reusing {shown_path(wpath)} (trained {m.get('created')}; machine: "
                     f"{m.get('machine', 'not recorded')}; precision: {m.get('precision', 'not recorded')}); set "
                     "train='train' to retrain", f"беру готовые веса {shown_path(wpath)} (обучены {m.get('created')}; "
                     f"машина: {m.get('machine', 'не записана')}; точность: {m.get('precision', 'не записана')}); "
                     "train='train' обучит заново"))
            return loaded, pd.read_csv(hpath), m
        print(tr(f"{shown_path(wpath)} was trained with another configuration or data: training anew",
                 f"{shown_path(wpath)} обучены с другой конфигурацией или данными: обучаю заново"))
    if mode == "reuse":
        raise CheckpointError(f"no weights at {shown_path(wpath)} match this configuration; use train='auto' or "
                              "'train'.")
    state = resume_state(run_dir / "last.pt", {k: v for k, v in key.items() if k != "depends_on"}, verbose=False)
    if state and mode == "train" and state["epoch"] >= cfg.epochs:
        print(tr(f"{shown_path(run_dir)} holds a finished run: training anew", f"{shown_path(run_dir)}: запуск уже "
                 "закончен, обучаю заново"))
        (run_dir / "last.pt").unlink()
        state = None
    start, prec, t0 = state["epoch"] if state else 0, compute_precision(precision=precision), time.time()
    est = estimate_fit_time(model, train, val, cfg, task, prec, start) if start < cfg.epochs else None
    if est:
        where, minutes = f"({machine(prec.device)}; {prec.name})", est["total_s"] / 60
        steps = ", ".join(f"{k} {v:.2f} s" for k, v in est["step_s"].items())
        print(tr(f"estimated training time on this machine {where}: {minutes:.1f} min for epochs",
                 f"оценка времени обучения на этой машине {where}: {minutes:.1f} мин на эпохи") +
              f" {start + 1}–{cfg.epochs} ({steps})", flush=True)
        if est["total_s"] > 300:
            print(tr(*TRAIN_INSTEAD), flush=True)
    history = fit(model, train, val, cfg, task, run_dir, prec, callback)
    if fit_on_val:
        final = build_model(model.config)
        m = {**environment(), "task": task.name, "seed": cfg.seed, "epoch": len(history), "precision": prec.name,
             "metrics": dict(history.iloc[-1].filter(like="val_"))}
        final.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    else:
        final, m = load_checkpoint(run_dir / "best.pt")
    m = {**m, "run_key": key, "fit_on": "train+val" if fit_on_val else "train", "train_time_s": float(
         history["epoch_time_s"].sum()), "wall_time_s": time.time() - t0, "epochs": cfg.epochs,
         "trainable_params": count_params(model, trainable_only=True),       # `fit` froze what cfg freezes
         **({"estimated_train_s": est["total_s"]} if est else {})}
    atomic_write(hpath, lambda p: history.to_csv(p, index=False))
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


def export_segmentation(name, model, meta, test, threshold, out_dir=ROOT):
    """A final segmentation fit exported with flip TTA, scored once on the test split at the threshold fixed
    beforehand (val is part of the fit: it scores nothing); returns its `segmentation_results` on test."""
    model.tta = True
    res = segmentation_results(model, test, threshold)
    scores = {"threshold": threshold, "epoch": meta["epoch"], "test": held_out_scores(res, test)}
    export_final(name, model, meta, scores, out_dir)
    return res
