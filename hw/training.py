"""Training: `TrainConfig`, one training step (`train_step`) and `fit`, the loop that trains all four models:
resumable, with atomic checkpoints and a history CSV; `estimate_fit_time` says beforehand how long it will take."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .augment import AugmentConfig, BatchAugment
from .checkpoints import save_checkpoint
from .core import INPUT_SIZE, CheckpointError, TrainingError, atomic_write, default_device, progress_bar, \
    seed_everything, shown_path
from .evaluation import evaluate, make_task, prepare_batch, to_device
from .precision import compute_precision, machine


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3                   # AdamW with a one-cycle schedule: the peak learning rate
    weight_decay: float = 5e-4         # on conv and linear weights only
    warmup: float = 0.15               # fraction of the steps spent warming up
    label_smoothing: float = 0.1       # classification
    bce_weight: float = 1.0            # segmentation: loss = bce_weight * BCE + dice_weight * Dice
    dice_weight: float = 1.0
    threshold: float = 0.5             # segmentation: the metrics' threshold while training
    freeze_encoder_epochs: int = 0     # backbone U-Net: epochs with the classifier's stages frozen (-1: always)
    encoder_lr_mult: float = 1.0       # backbone U-Net: the classifier's stages learn at lr * this
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    max_steps_per_epoch: int = 0       # 0 = full epochs (tests and benchmarks cap it; not part of the run key)
    min_size: int = 0                  # progressive resizing: the training input grows from min_size x min_size
    full_size_at: float = 0.0          # ... to INPUT_SIZE at this fraction of the epochs (0 = always full size)

    def key(self):
        """What identifies a training run of this configuration (stored with its checkpoints)."""
        d = asdict(self)
        d.pop("max_steps_per_epoch")
        return d

    def steps_per_epoch(self, n):
        steps = n // self.batch_size or 1
        return min(steps, self.max_steps_per_epoch) if self.max_steps_per_epoch else steps

    def frozen(self, epoch):
        """Whether the classifier's stages of a backbone U-Net are frozen in `epoch` (0-based)."""
        return self.freeze_encoder_epochs < 0 or epoch < self.freeze_encoder_epochs

    def input_size(self, epoch):
        """Progressive resizing: the side of the training crops in `epoch` (0-based), growing linearly from min_size
        in steps of 16 until full_size_at * epochs, then INPUT_SIZE. Validation is always at INPUT_SIZE, so the last
        epochs (at full size) also settle BatchNorm and the scale of features."""
        end = self.full_size_at * self.epochs
        if not self.min_size or epoch >= end:
            return INPUT_SIZE
        return int(self.min_size + (INPUT_SIZE - self.min_size) * epoch / end) // 16 * 16


def train_step(model, x, y, task, opt, scaler, prec, check=None):
    """One optimisation step on a prepared batch in precision `prec`; returns the loss and the output (detached,
    before the update: `fit` scores the training batches with them). check(loss), when
    given, runs before anything is updated (fit stops on a non-finite loss there). `fit`, `estimate_fit_time` and
    benchmarks/train_speed.py all train through this one function."""
    with prec.autocast():
        out = model(x)
    loss = task.loss(out, y)
    if check is not None:
        check(loss)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss.detach(), out.detach()


def make_optimizer(model, cfg, total_steps):
    """AdamW with weight decay on conv/linear weights only, a backbone U-Net's classifier stages in groups of their
    own at lr * encoder_lr_mult; the one-cycle schedule over `total_steps`."""
    enc = {id(p) for p in (model.encoder_parameters() if hasattr(model.encoder, "backbone") else [])}
    groups = {}
    for p in model.parameters():
        groups.setdefault(("enc" if id(p) in enc else "rest", p.dim() > 1), []).append(p)
    groups = [{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "part": part,
               "lr": cfg.lr * (cfg.encoder_lr_mult if part == "enc" else 1.0)}
              for (part, decay), ps in sorted(groups.items())]
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=total_steps,
                                                pct_start=cfg.warmup, div_factor=25, final_div_factor=1e3)
    return opt, sched


def on_device(data, device):
    """On a GPU the whole split lives there as uint8 and is augmented there; elsewhere it stays as it is."""
    if device.type != "cuda":
        return data
    moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in vars(data).items()}
    return type(data)(**moved)


def resume(last, key, model, opt, sched, epochs, retrain_finished, progress):
    """(history, first epoch, best) from out_dir/last.pt when it holds a run of this configuration (`key`), its
    state loaded into model, optimiser and schedule; a fresh start otherwise."""
    fresh = [], 0, -float("inf")
    for stale in last.parent.glob(".*.tmp*"):       # left by a process killed in the middle of a write
        stale.unlink()
    if not last.exists():
        return fresh
    try:
        state = torch.load(last, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{last} is damaged ({e}); delete it to start this run from scratch.") from e
    if state.get("run_key") != key:
        if progress:
            print(f"{shown_path(last)} belongs to another configuration; starting afresh")
        return fresh
    if state["epoch"] >= epochs and retrain_finished:
        print(f"{shown_path(last)} holds a finished run of this configuration: training anew")
        return fresh
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if state["epoch"] >= epochs:
        print(f"reusing the finished run in {shown_path(last.parent)}")
    elif progress:
        print(f"resuming from {shown_path(last)}: {state['epoch']} of {epochs} epochs done")
    return state["history"], state["epoch"], state["best"]


def fit(model, train, val, cfg: TrainConfig, out_dir, device=None, progress=True, callback=None, meta=None,
        retrain_finished=False, precision=None, estimate=False, keep="best", task=None):
    """Train `model` on `train` (ImageSet or MaskSet), validate on `val` after every epoch; returns the history.

    out_dir/last.pt      the state after the last finished epoch, written atomically: calling `fit` again with the
                         same configuration resumes there (a finished run is returned as it is, or trained anew with
                         retrain_finished=True). Shuffling and augmentation are drawn from generators seeded by
                         (seed, epoch), so a resumed run repeats an uninterrupted one exactly on a CPU.
    out_dir/best.pt      the model at the best monitored metric (val_top1 / val_iou), a `load_checkpoint` checkpoint
                         with `meta` and the epoch's metrics in its meta; with keep="last", the last finished epoch
                         (for a final fit whose `val` is part of `train`, where no epoch may be chosen on it).
    out_dir/history.csv  one row per epoch.
    precision: see `compute_precision`; not part of the run key, so a run resumes on a machine that computes
    otherwise. estimate: first print how long the remaining epochs will take here (and the string given, when
    that is over five minutes); stored in best.pt's meta. task: the loss and metrics (default `make_task(train,
    cfg)`; experiments pass a task of their own)."""
    import pandas as pd
    device, out_dir = torch.device(device or default_device()), Path(out_dir)
    task, prec = task or make_task(train, cfg), compute_precision(device, precision)
    seed_everything(cfg.seed)
    to_device(model, device, prec)
    train = on_device(train, device)
    n_batches = cfg.steps_per_epoch(len(train))
    opt, sched = make_optimizer(model, cfg, cfg.epochs * n_batches)
    scaler, last = prec.scaler(), out_dir / "last.pt"
    key = json.loads(json.dumps({"train": cfg.key(), "model": model.config, "n_train": len(train), "n_val": len(val)}))
    out_dir.mkdir(parents=True, exist_ok=True)
    history, start, best = resume(last, key, model, opt, sched, cfg.epochs, retrain_finished, progress)
    if estimate and start < cfg.epochs:
        est = estimate_fit_time(model, train, val, cfg, device, prec, start)
        print(f"estimated training time on this machine ({machine(device)}; {prec.name}): {est['total_s'] / 60:.1f} min "
              f"for epochs {start + 1}-{cfg.epochs} (one step: " +
              ", ".join(f"{k} {v:.2f} s" for k, v in est["step_s"].items()) + ")", flush=True)
        if isinstance(estimate, str) and est["total_s"] > 300:
            print(estimate, flush=True)
        meta = {**(meta or {}), "estimated_train_s": est["total_s"]}

    for epoch in range(start, cfg.epochs):
        if hasattr(model, "freeze_encoder"):
            model.freeze_encoder(cfg.frozen(epoch))
        torch.manual_seed(cfg.seed * 100003 + epoch)             # dropout
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        perm = torch.randperm(len(train), generator=gen).to(train.images.device)
        aug = BatchAugment(cfg.augment, cfg.input_size(epoch))
        model.train()
        t0, total, seen = time.time(), 0.0, 0
        task.start()                                  # the task's metrics on the augmented training batches
        bar = progress_bar(range(n_batches), progress, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for b in bar:
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x, y = prepare_batch(train.images[idx], task.targets(train)[idx], task, device, prec, aug, gen)

            def finite(loss):
                if not torch.isfinite(loss):
                    kept = (f"the last good checkpoint ({last}, epoch {epoch}) is kept" if epoch else
                            "no epoch had finished, so there is no checkpoint")
                    raise TrainingError(f"the loss became {float(loss.detach())} in epoch {epoch + 1}, batch {b + 1}. "
                                        f"Lower the learning rate (now {cfg.lr}) or check the data; {kept}.")
            loss, out = train_step(model, x, y, task, opt, scaler, prec, check=finite)
            task.update(out.float(), y)
            sched.step()
            total, seen = total + float(loss) * len(idx), seen + len(idx)
            if b % 10 == 0 and hasattr(bar, "set_postfix"):     # no bar in a headless run
                bar.set_postfix(loss=f"{total / seen:.4f}")
        seconds = time.time() - t0
        row = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), **{f"train_{k}": v for k, v in task.result().items()},
               **{f"val_{k}": v for k, v in evaluate(model, val, task, device=device, precision=prec).items()},
               "lr": opt.param_groups[-1]["lr"], "input_size": aug.out_size, "epoch_time_s": seconds,
               "images_per_s": seen / max(seconds, 1e-9)}
        history.append(row)
        improved = row[task.monitor] > best
        if improved:
            best = row[task.monitor]
        if improved or keep == "last":
            save_checkpoint(out_dir / "best.pt", model, task=task.name, **{
                "seed": cfg.seed, **(meta or {}), "precision": prec.name, "epoch": epoch + 1,
                "metrics": {k: v for k, v in row.items() if k.startswith("val_")}})
        atomic_write(out_dir / "history.csv", lambda p: pd.DataFrame(history).to_csv(p, index=False))
        state = {"run_key": key, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "history": history, "epoch": epoch + 1, "best": best}
        atomic_write(last, lambda p: torch.save(state, p))
        if progress:
            print(f"epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(
                f"{k}={v:.4f}" for k, v in row.items() if k.startswith(("train_", "val_"))) +
                f" ({seconds:.0f}s, {row['images_per_s']:.0f} img/s)" + (" *" if improved else ""))
        if callback is not None:
            callback(pd.DataFrame(history))
    model.eval()
    return pd.DataFrame(history)


def estimate_fit_time(model, train, val, cfg: TrainConfig, device=None, precision=None, first_epoch=0, steps=3):
    """Seconds that `fit` will take for epochs first_epoch..cfg.epochs on this machine, measured on a copy of
    `model`: its weights, the caller's optimiser and every random generator stay untouched (exact resume depends
    on them). Each kind of step the schedule has (the smallest and largest input side of progressive resizing,
    with the encoder frozen or not) is timed once, 1 warm-up + `steps` steps, their median (the warm-up alone where
    it says the whole run is under a minute: it is the slowest step); sides in between are interpolated by pixel
    count; one validation batch is timed and scaled to the split. Returns {"total_s", "epoch_s",
    "step_s": {"<side> px[, frozen]": seconds}}."""
    import copy
    import numpy as np
    device = torch.device(device or default_device())
    prec = compute_precision(device, precision, verbose=False)
    task, n_batches = make_task(train, cfg), cfg.steps_per_epoch(len(train))
    can_freeze = hasattr(model, "freeze_encoder")
    epochs = range(first_epoch, cfg.epochs)
    kinds = {(cfg.input_size(e), can_freeze and cfg.frozen(e)) for e in epochs}
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    step_s = {}
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        m = to_device(copy.deepcopy(model), device, prec)
        opt, scaler = torch.optim.AdamW(m.parameters(), lr=1e-6), prec.scaler()
        gen = torch.Generator().manual_seed(0)
        for frozen in sorted({f for _, f in kinds}):
            if can_freeze:
                m.freeze_encoder(frozen)
            m.train()
            sides = sorted(s for s, f in kinds if f == frozen)
            for side in {sides[0], sides[-1]}:
                aug, times = BatchAugment(cfg.augment, side), []
                for i in range(1 + steps):
                    t0 = time.perf_counter()
                    if i == 1 and times[0] * n_batches * len(epochs) < 60:     # short anyway: the warm-up is enough
                        break
                    idx = torch.randint(0, len(train), (min(cfg.batch_size, len(train)),), generator=gen)
                    idx = idx.to(train.images.device)
                    x, y = prepare_batch(train.images[idx], task.targets(train)[idx], task, device, prec, aug, gen)
                    train_step(m, x, y, task, opt, scaler, prec)
                    sync()
                    times.append(time.perf_counter() - t0)
                step_s[side, frozen] = float(np.median(times[1:] or times))
        sample = val.subset(range(min(len(val), 2 * cfg.batch_size)))
        evaluate(m, sample, task, device=device, precision=prec)       # warm-up
        t0 = time.perf_counter()
        evaluate(m, sample, task, device=device, precision=prec)
        val_s = (time.perf_counter() - t0) * len(val) / len(sample)
    del m, opt

    def per_step(side, frozen):
        sides = sorted(s for s, f in step_s if f == frozen)
        lo, hi = sides[0], sides[-1]
        w = 0.0 if lo == hi else (side ** 2 - lo ** 2) / (hi ** 2 - lo ** 2)
        return (1 - w) * step_s[lo, frozen] + w * step_s[hi, frozen]
    epoch_s = [n_batches * per_step(cfg.input_size(e), can_freeze and cfg.frozen(e)) + val_s for e in epochs]
    return {"total_s": float(sum(epoch_s)), "epoch_s": epoch_s,
            "step_s": {f"{s} px" + (", frozen" if f else ""): t for (s, f), t in sorted(step_s.items())}}
