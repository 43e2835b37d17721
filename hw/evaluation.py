"""Evaluation: `predict` / `evaluate`, which compute in fp32 on every machine, and the scores the notebooks report
(the tasks' losses and metrics are in tasks.py)."""
from __future__ import annotations

import torch

from .augment import preprocess_batch
from .metrics import bootstrap_iou, best_threshold, confusion_counts, per_image_iou, seg_metrics, topk_correct
from .precision import evaluation_precision


@torch.no_grad()
def predict(model, images, batch_size=256, device=None, tta=None, precision=None):
    """Logits (float32, on the CPU) for a uint8 batch (N,3,h,w) in validation geometry. tta: None uses the model's
    own setting (`model.tta`), True/False overrides it for this call. In fp32 unless `precision` says otherwise, so
    reported metrics are the same on every machine."""
    device = device or next(model.parameters()).device
    prec = evaluation_precision(device, precision)
    model.eval()
    fn = model if tta is None else lambda x: model.infer(x, tta)      # noqa: E731
    outs = []
    for i in range(0, len(images), batch_size):
        x, _ = preprocess_batch(images[i:i + batch_size], None, device, prec)
        with prec.autocast():
            outs.append(fn(x).float().cpu())
    return torch.cat(outs)


@torch.no_grad()
def evaluate(model, data, task, batch_size=256, device=None, precision=None):
    """Loss and the task's metrics on a whole split; in fp32 unless `precision` says otherwise (`fit` validates
    each epoch in its training precision: those numbers only pick the best epoch)."""
    # the logits come back to the CPU (predict); so do the targets, wherever the split lives
    out, y = predict(model, data.images, batch_size, device, precision=precision), task.targets(data).cpu()
    task.start()
    task.update(out, y)
    return {"loss": float(task.loss(out, y)), **task.result()}


# ---------------------------------------------------------------------------------------------------- reported scores
def classification_results(model, data, tta=None):
    """Logits and metrics of a classifier on a split: top-1, top-5, per-class accuracy, confusion matrix."""
    logits = predict(model, data.images, tta=tta)
    n_cls = logits.shape[1]
    c = topk_correct(logits, data.labels, (1, min(5, n_cls)))
    pred = logits.argmax(1)
    conf = torch.bincount(data.labels * n_cls + pred, minlength=n_cls * n_cls).view(n_cls, n_cls)
    per_class = (conf.diag().float() / conf.sum(1).clamp(min=1)).numpy()
    return {"logits": logits, "pred": pred, "confusion": conf, "per_class": per_class,
            "metrics": {"top1": int(c[1]) / len(pred), "top5": int(c[min(5, n_cls)]) / len(pred), "n": len(pred)}}


def segmentation_results(model, data, threshold=None, tta=None):
    """Probabilities and metrics of a segmentation model on a split. threshold=None chooses it on `data` (see
    `best_threshold`); the metrics are then reported at that threshold. tta as in `predict`. The metrics of every
    threshold of the grid are in "threshold_table" either way."""
    logits = predict(model, data.images, tta=tta)
    best, table = best_threshold(logits, data.masks)
    threshold = best if threshold is None else threshold
    counts = confusion_counts(logits, data.masks, threshold)
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


@torch.no_grad()
def bn_refresh_probe(model, fit_data, val, task, batch_size):
    """What unfreezing alone does to a frozen-encoder model (variant A) before any step: val IoU without TTA, in fp32,
    with its encoder's BatchNorm statistics as frozen, and after one pass over the fit's frames in training mode
    refreshed them (momentum as in training; no weight changes). Works on a copy."""
    import copy
    m = copy.deepcopy(model)
    m.tta = False
    frozen = evaluate(m, val, task)["iou"]
    m.freeze_encoder(False)
    m.train()
    device = next(m.parameters()).device
    prec = evaluation_precision(device)
    for i in range(0, len(fit_data), batch_size):
        m.logits(preprocess_batch(fit_data.images[i:i + batch_size], None, device, prec)[0])
    return {"frozen": frozen, "refreshed": evaluate(m, val, task)["iou"]}
