"""The two tasks: what differs between classification and segmentation — the targets, the loss with its
parameters (part of every run's key), and the metrics accumulated over batches. The loss is here: `task.loss`."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .metrics import confusion_counts, seg_metrics, topk_correct


def dice_loss(logits, target, eps=1.0):
    p = torch.sigmoid(logits.float())
    inter = (p * target).sum((1, 2, 3))
    return (1 - (2 * inter + eps) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + eps)).mean()


class Task:
    """A task's parameters (its dataclass fields) are part of a run's key; the metrics accumulate over batches by
    start / update / result."""

    def params(self):
        return asdict(self)


@dataclass
class ClassificationTask(Task):
    """Cross-entropy with label smoothing; top-1 / top-5 accuracy, accumulated by start / update / result."""
    label_smoothing: float = 0.0
    name = "classification"
    monitor = "val_top1"

    def targets(self, data):
        return data.labels

    def loss(self, out, y):
        return F.cross_entropy(out.float(), y, label_smoothing=self.label_smoothing)

    def start(self):
        self._n, self._top1, self._top5 = 0, 0, 0

    def update(self, out, y):
        k = min(5, out.shape[1])
        c = topk_correct(out.float(), y, (1, k))
        self._n, self._top1, self._top5 = self._n + len(y), self._top1 + c[1], self._top5 + c[k]

    def result(self):
        return {"top1": float(self._top1) / max(self._n, 1), "top5": float(self._top5) / max(self._n, 1)}


@dataclass
class SegmentationTask(Task):
    """loss = bce * BCE + dice * Dice on 1-channel logits; IoU, Dice, pixel accuracy at `threshold` (fixed
    beforehand, experiments/README.md), accumulated as per-image confusion counts."""
    bce: float = 1.0
    dice: float = 1.0
    threshold: float = 0.5
    name = "segmentation"
    monitor = "val_iou"

    def targets(self, data):
        return data.masks

    def loss(self, out, y):
        y = y.float()       # uint8 masks as a split holds them, float as a training batch brings them
        return self.bce * F.binary_cross_entropy_with_logits(out.float(), y) + self.dice * dice_loss(out, y)

    def start(self):
        self._counts = []

    def update(self, out, y):
        self._counts.append(confusion_counts(out, y, self.threshold))     # on the device: no wait per batch

    def result(self):
        m = seg_metrics(torch.cat(self._counts).cpu())
        return {k: m[k] for k in ("iou", "dice", "pixel_acc")}
