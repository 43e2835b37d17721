import pytest
import torch
from torchmetrics.classification import (BinaryAccuracy, BinaryF1Score, BinaryJaccardIndex,
                                         MulticlassAccuracy)

import common


def test_segmentation_metrics_match_torchmetrics():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 1, 32, 32, generator=g) * 2
    target = (torch.rand(7, 1, 32, 32, generator=g) > 0.7).float()
    m = common.seg_metrics(common.confusion_counts(logits, target, 0.5))
    probs = torch.sigmoid(logits)
    assert m["iou"] == pytest.approx(float(BinaryJaccardIndex()(probs, target.long())), abs=1e-6)
    assert m["dice"] == pytest.approx(float(BinaryF1Score()(probs, target.long())), abs=1e-6)
    assert m["pixel_acc"] == pytest.approx(float(BinaryAccuracy()(probs, target.long())), abs=1e-6)
    per = [float(BinaryJaccardIndex()(probs[i], target[i].long())) for i in range(7)]
    assert m["iou_per_image"] == pytest.approx(sum(per) / 7, abs=1e-6)


def test_threshold_is_applied_to_probabilities():
    logits = torch.full((1, 1, 4, 4), 0.5)                      # sigmoid = 0.62
    target = torch.ones(1, 1, 4, 4)
    assert common.seg_metrics(common.confusion_counts(logits, target, 0.6))["iou"] == 1.0
    assert common.seg_metrics(common.confusion_counts(logits, target, 0.7))["iou"] == 0.0


def test_empty_mask_rule():
    target = torch.zeros(2, 1, 8, 8)
    logits = torch.full((2, 1, 8, 8), -5.0)
    logits[1, 0, 0, 0] = 5.0                                      # one false rock pixel on image 2
    counts = common.confusion_counts(logits, target)
    assert common.per_image_iou(counts).tolist() == [1.0, 0.0]
    m = common.seg_metrics(counts)
    assert m["iou"] == 0.0 and m["iou_per_image"] == 0.5
    assert common.seg_metrics(counts[:1])["iou"] == 1.0           # nothing to find, nothing found


def test_topk_matches_torchmetrics():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 12, generator=g)
    labels = torch.randint(0, 12, (50,), generator=g)
    c = common.topk_correct(logits, labels, (1, 5))
    for k in (1, 5):
        ref = MulticlassAccuracy(num_classes=12, top_k=k, average="micro")(logits, labels)
        assert int(c[k]) / 50 == pytest.approx(float(ref), abs=1e-6)


def test_paired_bootstrap_interval_covers_noise_and_excludes_a_clear_gain():
    g = torch.Generator().manual_seed(0)
    n = 200
    tp = torch.randint(50, 150, (n,), generator=g)
    base = torch.stack([tp, torch.randint(10, 60, (n,), generator=g), torch.randint(10, 60, (n,), generator=g),
                        torch.full((n,), 10000)], 1)
    same = common.paired_bootstrap_iou(base, base.clone())
    assert same["diff"] == 0 and same["low"] == same["high"] == 0
    better = base.clone()
    better[:, 1] = (better[:, 1] // 2)           # half the false positives on every image
    r = common.paired_bootstrap_iou(base, better)
    micro = lambda c: float(c[:, 0].sum() / (c[:, 0] + c[:, 1] + c[:, 2]).sum())
    assert r["diff"] == pytest.approx(micro(better) - micro(base))
    assert 0 < r["low"] < r["diff"] < r["high"]
    noisy = base.clone()              # 8 false positives more on half the images, 8 fewer on the other half
    noisy[:, 1] += 8 * (2 * (torch.randperm(n, generator=g) < n // 2) - 1)
    r = common.paired_bootstrap_iou(base, noisy)
    assert r["diff"] == pytest.approx(0, abs=1e-12) and r["low"] < -1e-3 and r["high"] > 1e-3
    with pytest.raises(ValueError, match="same images"):
        common.paired_bootstrap_iou(base, base[:10])


def test_bootstrap_intervals_hold_the_estimate_and_narrow_with_more_images():
    g = torch.Generator().manual_seed(0)
    def counts(n):      # per-image tp, fp, fn, tn of a model with IoU around 0.6
        tp = torch.randint(50, 150, (n,), generator=g)
        return torch.stack([tp, tp // 3, tp // 3, 4000 - tp], 1)
    small, large = counts(40), counts(640)
    lo, hi = common.bootstrap_iou(small)
    iou = common.seg_metrics(small)["iou"]
    assert lo < iou < hi
    lo2, hi2 = common.bootstrap_iou(large)
    assert hi2 - lo2 < (hi - lo) / 2                   # 16x the images: about a quarter of the width
    assert common.bootstrap_iou(small) == [lo, hi]     # a private generator: the same interval every time
    correct = torch.rand(400, generator=g) < 0.6
    lo, hi = common.bootstrap_accuracy(correct)
    assert lo < float(correct.double().mean()) < hi and hi - lo < 0.12


def test_ceiling_iou_is_what_a_perfect_prediction_keeps_at_a_lower_output_size():
    masks = torch.zeros(2, 1, 128, 128)
    masks[0, 0, 10:60, 20:90] = 1                             # a large rock survives 64x64 almost whole
    masks[1, 0, ::4, ::4] = 1                                 # single-pixel rocks vanish at 64x64
    assert common.ceiling_iou(masks, 128) == 1.0
    assert common.ceiling_iou(masks[:1], 64) > 0.95
    assert common.ceiling_iou(masks[1:], 64) == 0.0
    assert common.ceiling_iou(torch.zeros(1, 1, 128, 128), 64) == 1.0     # no rock anywhere: nothing to miss
