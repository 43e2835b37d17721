"""Metrics: IoU / Dice / pixel accuracy from per-image confusion counts (micro and per image), the threshold
that maximises IoU, top-k accuracy, errors with a pixel tolerance, bootstrap intervals over images."""
from __future__ import annotations

import numpy as np
import torch


def confusion_counts(logits, target, threshold=0.5):
    """Per-image tp, fp, fn, tn (int64, shape (N,)) for binary masks; rock = sigmoid(logit) > threshold."""
    pred = torch.sigmoid(logits.float()) > threshold
    t = target > 0.5
    dims = tuple(range(1, pred.dim()))
    tp = (pred & t).sum(dims)
    fp = (pred & ~t).sum(dims)
    fn = (~pred & t).sum(dims)
    tn = (~pred & ~t).sum(dims)
    return torch.stack([tp, fp, fn, tn], 1).long()


def seg_metrics(counts):
    """IoU, Dice, pixel accuracy from (N,4) counts: micro (global sums over the split) and per-image means.
    Empty rule: an image with no rock in mask and prediction has IoU = Dice = 1 (nothing to find, nothing
    found); micro metrics are 0/0 only if the whole split has no rock, and then also 1."""
    c = counts.double()
    tp, fp, fn, _ = c.unbind(1)
    div = lambda a, b: torch.where(b > 0, a / b.clamp(min=1), torch.ones_like(a))
    T = c.sum(0)
    return {"iou": float(div(T[0], T[0] + T[1] + T[2])), "dice": float(div(2 * T[0], 2 * T[0] + T[1] + T[2])),
            "pixel_acc": float((T[0] + T[3]) / T.sum()), "iou_per_image": float(per_image_iou(counts).mean()),
            "dice_per_image": float(div(2 * tp, 2 * tp + fp + fn).mean())}


def per_image_iou(counts):
    c = counts.double()
    tp, fp, fn, _ = c.unbind(1)
    return torch.where(tp + fp + fn > 0, tp / (tp + fp + fn).clamp(min=1), torch.ones_like(tp))


def micro_iou(c):
    """Micro IoU of summed counts (..., 4)."""
    return c[..., 0] / (c[..., 0] + c[..., 1] + c[..., 2]).clamp(min=1)


def _resampled(n_items, n, seed):
    """n bootstrap resamples (with replacement) of n_items indices, from a private generator."""
    return torch.randint(0, n_items, (n, n_items), generator=torch.Generator().manual_seed(seed))


def _interval(samples, level):
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    return torch.quantile(samples.double(), q).tolist()


def bootstrap_iou(counts, n=2000, seed=0, level=0.95):
    """[low, high]: the central `level` interval of the micro IoU over the split's images resampled with replacement
    n times, i.e. how much the score depends on which images the split happened to hold. counts: (N,4)."""
    return _interval(micro_iou(counts.double()[_resampled(len(counts), n, seed)].sum(1)), level)


def bootstrap_accuracy(correct, n=2000, seed=0, level=0.95):
    """[low, high] of an accuracy over the split's images resampled n times. correct: (N,) bool."""
    return _interval(correct.double()[_resampled(len(correct), n, seed)].mean(1), level)


def paired_bootstrap_iou(counts_a, counts_b, n=2000, seed=0, level=0.95):
    """How much the micro IoU difference b - a depends on which images the split happened to hold: both models'
    per-image counts (N,4) resampled with the same images n times. Returns the difference on the split itself and
    the central `level` interval of the resampled differences."""
    if counts_a.shape != counts_b.shape:
        raise ValueError("the two models must be scored on the same images")
    idx = _resampled(len(counts_a), n, seed)
    diffs = micro_iou(counts_b.double()[idx].sum(1)) - micro_iou(counts_a.double()[idx].sum(1))
    lo, hi = _interval(diffs, level)
    return {"diff": float(micro_iou(counts_b.double().sum(0)) - micro_iou(counts_a.double().sum(0))),
            "low": lo, "high": hi}


def ceiling_iou(masks, size):
    """Micro IoU of a perfect prediction made at size x size: the masks (N,1,H,W) area-averaged to that size, brought
    back to H x W bilinearly (as a network's low-resolution logits are) and thresholded at 0.5. 1 at full size."""
    m = masks.float()
    if size != m.shape[-1]:
        small = torch.nn.functional.interpolate(m, size=(size, size), mode="area")
        m = torch.nn.functional.interpolate(small, size=masks.shape[-2:], mode="bilinear", align_corners=False)
    pred, true = m > 0.5, masks > 0.5
    union = int((pred | true).sum())
    return float((pred & true).sum()) / union if union else 1.0          # no rock anywhere: nothing to miss


def topk_correct(logits, labels, ks=(1, 5)):
    """Number of samples whose label is among the top-k logits, for each k (0-dim tensors on the logits' device, so
    training can count on a GPU without waiting for it)."""
    top = logits.topk(max(ks), dim=1).indices
    hit = top == labels[:, None]
    return {k: hit[:, :k].any(1).sum() for k in ks}


def best_threshold(logits, masks, grid=np.arange(0.2, 0.81, 0.05)):
    """The probability threshold that maximises micro IoU on a split; returns (threshold, table)."""
    import pandas as pd
    rows = [{"threshold": round(float(t), 2), **seg_metrics(confusion_counts(logits, masks, float(t)))}
            for t in grid]
    table = pd.DataFrame(rows)
    return float(table.loc[table["iou"].idxmax(), "threshold"]), table

