"""Evaluation: the two tasks (what differs between classification and segmentation: targets, loss, metrics), a
batch brought to the model's input, and `predict` / `evaluate`, which compute in fp32 on every machine."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .augment import model_input, normalize
from .data import MaskSet
from .metrics import confusion_counts, seg_metrics, topk_correct
from .precision import compute_precision, evaluation_precision


def dice_loss(logits, target, eps=1.0):
    p = torch.sigmoid(logits.float())
    inter = (p * target).sum((1, 2, 3))
    return (1 - (2 * inter + eps) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + eps)).mean()


class ClassificationTask:
    name, monitor = "classification", "val_top1"

    def __init__(self, cfg):
        self.cfg = cfg

    def targets(self, data):
        return data.labels

    def loss(self, out, y):
        return F.cross_entropy(out.float(), y, label_smoothing=self.cfg.label_smoothing)

    def start(self):
        self.n, self.top1, self.top5 = 0, 0, 0

    def update(self, out, y):
        k = min(5, out.shape[1])
        c = topk_correct(out.float(), y, (1, k))
        self.n, self.top1, self.top5 = self.n + len(y), self.top1 + c[1], self.top5 + c[k]

    def result(self):
        return {"top1": self.top1 / max(self.n, 1), "top5": self.top5 / max(self.n, 1)}


class SegmentationTask(ClassificationTask):
    name, monitor = "segmentation", "val_iou"

    def targets(self, data):
        return data.masks

    def loss(self, out, y):
        return (self.cfg.bce_weight * F.binary_cross_entropy_with_logits(out.float(), y)
                + self.cfg.dice_weight * dice_loss(out, y))

    def start(self):
        self.counts = []

    def update(self, out, y):
        self.counts.append(confusion_counts(out, y, self.cfg.threshold).cpu())

    def result(self):
        m = seg_metrics(torch.cat(self.counts))
        return {k: m[k] for k in ("iou", "dice", "pixel_acc")}


def make_task(data, cfg):
    return SegmentationTask(cfg) if isinstance(data, MaskSet) else ClassificationTask(cfg)


def to_device(model, device, prec):
    return model.to(device).to(memory_format=prec.memory_format)


def prepare_batch(x, y, task, device, prec, aug=None, gen=None):
    """A uint8 batch -> the normalised float input on `device` in the precision's memory layout, and the target:
    augmented by `aug` (training) or in validation geometry (aug=None)."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if isinstance(task, SegmentationTask):
        x, y = aug(x, y, gen) if aug else (model_input(x), y.float())
    else:
        x = aug(x, gen=gen) if aug else model_input(x)
    return normalize(x).contiguous(memory_format=prec.memory_format), y


@torch.no_grad()
def predict(model, images, batch_size=256, device=None, tta=None, precision=None):
    """Logits (float32, on the CPU) for a uint8 batch (N,3,h,w) in validation geometry. tta: None uses the model's
    own setting (`model.tta`), True/False overrides it for this call. In fp32 unless `precision` says otherwise, so
    reported metrics are the same on every machine."""
    device = device or next(model.parameters()).device
    prec = compute_precision(device, precision, verbose=False) if precision else evaluation_precision(device)
    model.eval()
    fn = model if tta is None else lambda x: model.infer(x, tta)      # noqa: E731
    outs = []
    for i in range(0, len(images), batch_size):
        x = normalize(model_input(images[i:i + batch_size].to(device)))
        with prec.autocast():
            outs.append(fn(x.contiguous(memory_format=prec.memory_format)).float().cpu())
    return torch.cat(outs)


@torch.no_grad()
def evaluate(model, data, task, batch_size=256, device=None, precision=None):
    """Loss and the task's metrics on a whole split; in fp32 unless `precision` says otherwise (`fit` validates
    each epoch in its training precision: those numbers only pick the best epoch)."""
    device = device or next(model.parameters()).device
    prec = compute_precision(device, precision, verbose=False) if precision else evaluation_precision(device)
    model.eval()
    task.start()
    total = 0.0
    for i in range(0, len(data), batch_size):
        x, y = prepare_batch(data.images[i:i + batch_size], task.targets(data)[i:i + batch_size], task, device, prec)
        with prec.autocast():
            out = model(x)
        total += float(task.loss(out, y)) * len(x)
        task.update(out.float(), y)
    return {"loss": total / max(len(data), 1), **task.result()}
