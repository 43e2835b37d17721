"""Training: `TrainConfig`, one training step, `fit` (resumable, with atomic checkpoints and a history CSV), the run
key that identifies a run, and `estimate_fit_time`, which says beforehand how long a run will take."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .augment import AugmentConfig, BatchAugment, preprocess_batch
from .checkpoints import save_checkpoint
from .core import INPUT_SIZE, CheckpointError, TrainingError, atomic_write, progress_bar, seed_everything, \
    shown_path, tr
from .evaluation import evaluate
from .precision import compute_precision, timed


@dataclass(kw_only=True)
class TrainConfig:
    """How a model is trained (what it learns is its task's: loss, metrics, threshold)."""
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3                   # AdamW with a one-cycle schedule: the peak learning rate
    weight_decay: float = 5e-4         # on conv and linear weights only
    warmup: float = 0.15               # fraction of the steps spent warming up
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    min_size: int = 0                  # progressive resizing: the training input grows from min_size x min_size
    full_size_at: float = 0.0          # ... to INPUT_SIZE at this fraction of the epochs (0 = always full size)
    freeze_encoder: bool = False       # backbone U-Net: the classifier's stages stay frozen (variant A)
    seed: int = 0
    init: dict | None = None           # {checkpoint file: weights digest} the initial weights come from (B: its A)

    def steps_per_epoch(self, n):
        return n // self.batch_size or 1

    def input_size(self, epoch):
        """Progressive resizing: the side of the training crops in `epoch` (0-based), growing linearly from min_size
        in steps of 16 until full_size_at * epochs, then INPUT_SIZE. Validation is always at INPUT_SIZE, so the last
        epochs (at full size) also settle BatchNorm and the scale of features."""
        end = self.full_size_at * self.epochs
        if not self.min_size or epoch >= end:
            return INPUT_SIZE
        return int(self.min_size + (INPUT_SIZE - self.min_size) * epoch / end) // 16 * 16


def run_key(cfg, task, model, train, val):
    """What identifies a training run: the configuration (with `init`, the checkpoints its initial weights come
    from), the task's parameters, the architecture, and the data. `fit` resumes only a run of the same key;
    `train_or_reuse` reuses only weights of the same key."""
    h = hashlib.sha1()
    for t in (train.images, val.images):        # the data: its sizes and 64 images of each split
        h.update(t[:: max(1, len(t) // 64)].cpu().numpy().tobytes())
    data = {"n_train": len(train), "n_val": len(val), "sample_hash": h.hexdigest()[:16]}
    return json.loads(json.dumps({"train": asdict(cfg), "task": task.params(), "model": model.config, "data": data}))


def train_step(model, x, y, task, opt, scaler, prec):
    """One optimisation step on a prepared batch in precision `prec`; returns the loss and the output (detached,
    before the update). `fit`, `estimate_fit_time` and benchmarks/train_speed.py all train through it."""
    with prec.autocast():
        out = model(x)
    loss = task.loss(out, y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss.detach(), out.detach()


def to_device(obj, device, prec=None):
    """A model on `device` in the precision's memory layout; a split's tensors on a GPU, where the whole split lives
    as uint8 and is augmented there (elsewhere a split stays as it is)."""
    if isinstance(obj, torch.nn.Module):
        return obj.to(device).to(memory_format=prec.memory_format)
    if device.type != "cuda":
        return obj
    return type(obj)(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in vars(obj).items()})


def make_optimizer(model, cfg, total_steps):
    """AdamW with weight decay on conv/linear weights only; the one-cycle schedule over `total_steps`."""
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    # on a GPU the fused AdamW: one kernel per step, and GradScaler then skips an overflowing step without asking the
    # GPU whether it overflowed (no wait per step in fp16)
    opt = torch.optim.AdamW([{"params": rest, "weight_decay": 0.0},
                             {"params": decay, "weight_decay": cfg.weight_decay}], lr=cfg.lr,
                            fused=True if next(model.parameters()).is_cuda else None)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=cfg.warmup,
                                                div_factor=25, final_div_factor=1e3)
    return opt, sched


def load_state(obj, state):
    """obj.load_state_dict(state); an optimizer keeps its own kernel choice (fused on a GPU), not the saved one: a run
    resumed on another device, or begun before the choice, would otherwise hand GradScaler's arguments to a kernel
    that takes none."""
    kernel = [(g.get("fused"), g.get("foreach")) for g in getattr(obj, "param_groups", [])]
    obj.load_state_dict(state)
    for g, (fused, foreach) in zip(getattr(obj, "param_groups", []), kernel):
        g["fused"], g["foreach"] = fused, foreach


def resume_state(last, key, verbose=True):
    """The state in `last` (out_dir/last.pt) when it holds a run of this key, else None. Temporary files left by a
    process killed in the middle of a write are removed; a damaged file stops with a hint."""
    for stale in last.parent.glob(".*.tmp*"):
        stale.unlink()
    if not last.exists():
        return None
    try:
        state = torch.load(last, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{shown_path(last)} is damaged ({e}); delete it to start this run from scratch.") from e
    if state.get("run_key") != key:
        if verbose:
            print(tr(f"{shown_path(last)} belongs to another run: starting afresh",
                     f"{shown_path(last)} — от другого запуска: начинаю заново"))
        return None
    return state


def _check_finite(total, epoch, b, cfg, last):
    """Stop with a hint when the loss of the last batches (summed) is no longer finite."""
    if not torch.isfinite(total):
        raise TrainingError(f"the loss became {float(total)} in epoch {epoch + 1}, by batch {b + 1}. Lower the "
                            f"learning rate (now {cfg.lr}) or check the data; " + (
                                f"the last good checkpoint ({shown_path(last)}, epoch {epoch}) is kept."
                                if epoch else "no epoch had finished, so there is no checkpoint."))


def fit(model, train, val, cfg: TrainConfig, task, out_dir, precision=None, callback=None):
    """Train `model` for `task` on `train`, validate on `val` after every epoch; returns the history (per epoch: the
    task's metrics on the augmented training batches, before each update, and on val). out_dir gets last.pt (the state
    after each epoch, written atomically: the same run key resumes there, and shuffling, augmentation and dropout are
    seeded by (seed, epoch), so a resumed run repeats an uninterrupted one on a CPU), best.pt (the best epoch on val,
    a `load_checkpoint` checkpoint) and history.csv. In fp16 a gradient scaler skips the steps whose gradients overflow
    (its state is in last.pt; the history records its scale per epoch). callback(history) runs after every epoch (e.g.
    `LivePlot`)."""
    import pandas as pd
    prec = compute_precision(precision=precision)
    device, out_dir = torch.device(prec.device), Path(out_dir)
    key, last = run_key(cfg, task, model, train, val), out_dir / "last.pt"
    seed_everything(cfg.seed)
    to_device(model, device, prec)
    train, n_batches = to_device(train, device), cfg.steps_per_epoch(len(train))
    opt, sched = make_optimizer(model, cfg, cfg.epochs * n_batches)
    scaler, history, start, best = prec.scaler(), [], 0, -float("inf")
    check_every = 32 if device.type == "cuda" else 1     # the loss is checked every batch where that costs no wait
    out_dir.mkdir(parents=True, exist_ok=True)
    if (state := resume_state(last, key)) is not None:
        for obj, k in ((model, "model"), (opt, "optimizer"), (sched, "scheduler"), (scaler, "scaler")):
            if state.get(k):        # a scaler's state only where the run was in fp16
                load_state(obj, state[k])
        history, start, best = state["history"], state["epoch"], state["best"]
        more = start < cfg.epochs
        print(f"{shown_path(out_dir)}: " + tr(f"{start} of {cfg.epochs} epochs were done" + ", resuming" * more,
                                              f"пройдено эпох {start} из {cfg.epochs}" + ", продолжаю" * more))
    if hasattr(model, "freeze_encoder"):
        model.freeze_encoder(cfg.freeze_encoder)
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(cfg.seed * 100003 + epoch)             # dropout
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        perm = torch.randperm(len(train), generator=gen).to(train.images.device)
        aug, t0, losses, seen = BatchAugment(cfg.augment, cfg.input_size(epoch)), time.time(), [], 0
        model.train()
        task.start()
        for b in progress_bar(range(n_batches), True, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x, y = preprocess_batch(train.images[idx], task.targets(train)[idx], device, prec, aug, gen)
            loss, out = train_step(model, x, y, task, opt, scaler, prec)
            task.update(out.float(), y)
            sched.step()
            losses.append(loss)             # tensors: the GPU is not waited for after every batch
            seen += len(idx)
            if (b + 1) % check_every == 0 or b + 1 == n_batches:
                _check_finite(torch.stack(losses[-check_every:]).sum(), epoch, b, cfg, last)
        seconds = time.time() - t0
        row = {"epoch": epoch + 1, "train_loss": float(torch.stack(losses).cpu().double().mean()),
               **{f"train_{k}": v for k, v in task.result().items()},
               **{f"val_{k}": v for k, v in evaluate(model, val, task, device=device, precision=prec).items()},
               "lr": opt.param_groups[-1]["lr"], "input_size": aug.out_size, "epoch_time_s": seconds,
               "images_per_s": seen / max(seconds, 1e-9)}
        if scaler.is_enabled():         # fp16: the loss scale after this epoch (it halves at each skipped step)
            row["loss_scale"] = scaler.get_scale()
        history.append(row)
        if improved := row[task.monitor] > best:
            best = row[task.monitor]
            save_checkpoint(out_dir / "best.pt", model, task=task.name, seed=cfg.seed, precision=prec.name,
                            epoch=epoch + 1, metrics={k: v for k, v in row.items() if k.startswith("val_")})
        atomic_write(out_dir / "history.csv", lambda p: pd.DataFrame(history).to_csv(p, index=False))
        state = {"run_key": key, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "history": history,
                 "epoch": epoch + 1, "best": best}
        atomic_write(last, lambda p: torch.save(state, p))
        print(tr("epoch", "эпоха") + f" {epoch + 1}/{cfg.epochs}: " + ", ".join(
            f"{k}={v:.4f}" for k, v in row.items() if k.startswith(("train_", "val_"))) +
            f" ({seconds:.0f} s, {row['images_per_s']:.0f} img/s)" + " *" * improved)
        if callback is not None:
            callback(pd.DataFrame(history))
    model.eval()
    return pd.DataFrame(history)


def estimate_fit_time(model, train, val, cfg: TrainConfig, task, precision=None, first_epoch=0, steps=3):
    """Seconds that `fit` will take for epochs first_epoch..cfg.epochs here, timed on a copy of `model` (weights and
    random generators untouched): the smallest and largest input side of the schedule, 1 warm-up + `steps` steps each
    (their median; the warm-up alone where the run is under a minute anyway), sides in between interpolated by pixel
    count, plus validation. Returns {"total_s", "epoch_s", "step_s": {"<side> px[, frozen]": seconds}}."""
    import copy
    import numpy as np
    prec = compute_precision(precision=precision, verbose=False)
    device, n_batches = torch.device(prec.device), cfg.steps_per_epoch(len(train))
    frozen = hasattr(model, "freeze_encoder") and cfg.freeze_encoder
    epochs = range(first_epoch, cfg.epochs)
    sides = sorted({cfg.input_size(e) for e in epochs})
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    step_s = {}
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        m = to_device(copy.deepcopy(model), device, prec)
        if hasattr(m, "freeze_encoder"):
            m.freeze_encoder(cfg.freeze_encoder)
        m.train()
        opt, scaler = make_optimizer(m, cfg, 1)[0], prec.scaler()     # fit's optimizer, on a copy
        gen = torch.Generator().manual_seed(0)
        for side in {sides[0], sides[-1]}:
            aug, times = BatchAugment(cfg.augment, side), []
            for i in range(1 + steps):
                t0 = time.perf_counter()
                if i == 1 and times[0] * n_batches * len(epochs) < 60:     # short anyway: the warm-up is enough
                    break
                idx = torch.randint(0, len(train), (min(cfg.batch_size, len(train)),), generator=gen)
                idx = idx.to(train.images.device)
                x, y = preprocess_batch(train.images[idx], task.targets(train)[idx], device, prec, aug, gen)
                train_step(m, x, y, task, opt, scaler, prec)
                sync()
                times.append(time.perf_counter() - t0)
            step_s[side] = float(np.median(times[1:] or times))
        sample = val.subset(range(min(len(val), 2 * cfg.batch_size)))
        val_s = timed(lambda: evaluate(m, sample, task, device=device, precision=prec), reps=1) * len(val) / len(sample)
    lo, hi = sides[0], sides[-1]        # a side in between: interpolated by its pixel count
    ws = [0.0 if lo == hi else (cfg.input_size(e) ** 2 - lo ** 2) / (hi ** 2 - lo ** 2) for e in epochs]
    epoch_s = [n_batches * ((1 - w) * step_s[lo] + w * step_s[hi]) + val_s for w in ws]
    return {"total_s": float(sum(epoch_s)), "epoch_s": epoch_s,
            "step_s": {f"{s} px" + (", frozen" if frozen else ""): t for s, t in sorted(step_s.items())}}
