"""Recipe search for the committed run (issue #6): named training recipes run through `common.fit` on the
real data, several at a time (one process each), on a GPU or on this CPU. Every run writes
<out>/<name>.json (best validation metric, its epoch, the history and flip-TTA metrics of the best model);
`summary` prints them as one table, with the recipe's estimated time on the 2-core CPU (from `cost`).

  python experiments/sweep.py pack --out .devdata        # compact copy of the data to take to a GPU machine
  python experiments/sweep.py run --group cls --jobs 4 --data .devdata --out runs/sweep
  python experiments/sweep.py run --group bb --classifier runs/sweep/cls_p16/best.pt ...
  python experiments/sweep.py summary runs/sweep
  python experiments/sweep.py collect runs/sweep --into experiments/results/sweep_cpu.json --round 4
  python experiments/sweep.py cost                       # per-epoch CPU costs -> experiments/cpu_costs.json

The packed Tiny ImageNet images are WebP at quality 60 (to fit the 64 MiB a GPU call can carry), so the
numbers rank recipes; the committed metrics come from the cpu-profile notebooks on the original files.
"""
import argparse
import functools
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

# per-epoch costs on the 2-core CPU behind the "est. minutes" column, measured by `sweep.py cost`
COSTS = Path(__file__).with_name("cpu_costs.json")
UNET = common.ROOT / "weights" / "unet.pt"      # notebook 02's base U-Net (round 17 starts a branch from it)
N_TINY_TRAIN, N_TINY_VAL, N_MOON_TRAIN, N_MOON_VAL = 45000, 5000, 640, 160    # the cpu profile's splits
CLS_SIZES = (64, 80, 96, 112, 128)

SEG_AUG = dict(scale=(0.6, 1.0), hflip=True, vflip=True, rotate=10, brightness=0.2, contrast=0.2, saturation=0.1)
CLS = dict(epochs=10, batch_size=128, lr=3e-3, label_smoothing=0.1)
SEG = dict(epochs=30, batch_size=16, lr=3e-3, weight_decay=1e-4)
BB = dict(epochs=20, batch_size=16, lr=3e-3, weight_decay=1e-4)
B30 = dict(BB, epochs=30, lr=2e-3, encoder_lr_mult=0.3)     # variant B from a trained A: the notebooks' recipe
P16 = dict(CLS, epochs=16, min_size=64, full_size_at=0.75)
P20 = dict(CLS, epochs=20, min_size=64, full_size_at=0.85)
FLIPS = dict(scale=(1.0, 1.0), rotate=0)     # on top of SEG_AUG: flips and colour jitter, no crop or rotation
# no flips, rotation or colour; the crop keeps its aspect-ratio jitter (ratio 3/4..4/3 at full area), so this is
# not quite `AugmentConfig.none()`, which the notebooks use
ASPECT_ONLY = dict(scale=(1.0, 1.0), rotate=0, vflip=False, hflip=False, brightness=0.0, contrast=0.0,
                   saturation=0.0)
NONE = dict(vars(common.AugmentConfig.none()))     # exactly `AugmentConfig.none()`
HFLIP = dict(ASPECT_ONLY, hflip=True)     # the notebooks' variant B since round 6 (and A since round 10)
STACK = dict(B30, encoder_lr_mult=1.0)      # the notebooks' variant B in rounds 10-14 (from an A trained with HFLIP)
B15 = dict(STACK, lr=SEG["lr"])     # ... and since round 15: at the base U-Net's learning rate (bb15_B_hr32_3lv_lr3)
HR3 = dict(full_res=(32, 64, 128))      # the base U-Net's upper levels as a branch: notebooks' network since round 14

GROUPS = {
    "cls": {
        "cls_base10": {"train": CLS},
        "cls_p16": {"train": P16},
        "cls_p20": {"train": P20},
        "cls_p16_wd05": {"train": dict(P16, weight_decay=0.05)},
        "cls_p16_lr6": {"train": dict(P16, lr=6e-3)},
        "cls_p16_s50": {"train": P16, "aug": dict(scale=(0.5, 1.0))},
        "cls_p16_s25": {"train": P16, "aug": dict(scale=(0.25, 1.0))},
        "cls_p16_b256": {"train": dict(P16, batch_size=256, lr=5e-3)},
        "cls_p16_nojit": {"train": P16, "aug": dict(brightness=0.1, contrast=0.1, saturation=0.1)},
    },
    "seg": {
        "seg_base30": {"train": SEG},
        "seg_e45": {"train": dict(SEG, epochs=45)},
        "seg_e60": {"train": dict(SEG, epochs=60)},
        "seg_lr1": {"train": dict(SEG, lr=1e-3)},
        "seg_lr6": {"train": dict(SEG, lr=6e-3)},
        "seg_bs8": {"train": dict(SEG, batch_size=8)},
        "seg_flipsonly": {"train": SEG, "aug": dict(scale=(1.0, 1.0), rotate=0)},
        "seg_strong": {"train": SEG, "aug": dict(scale=(0.35, 1.0), rotate=20, brightness=0.3, contrast=0.3)},
        "seg_bce": {"train": dict(SEG, dice_weight=0.0)},
        "seg_dice2": {"train": dict(SEG, dice_weight=2.0)},
        "seg_wd05": {"train": dict(SEG, weight_decay=0.05)},
        "seg_w64": {"train": SEG, "model": dict(widths=(64, 96, 128, 160, 192), decoder=(128, 96, 64, 32))},
    },
    "bb": {
        "bb_A": {"train": dict(BB, freeze_encoder_epochs=-1)},
        "bb_A_full": {"train": dict(BB, freeze_encoder_epochs=-1), "model": dict(full_res=16)},
        "bb_B": {"train": dict(BB, freeze_encoder_epochs=6, encoder_lr_mult=0.1)},
        "bb_B_full": {"train": dict(BB, freeze_encoder_epochs=6, encoder_lr_mult=0.1), "model": dict(full_res=16)},
        "bb_B_full_lr3": {"train": dict(BB, freeze_encoder_epochs=6, encoder_lr_mult=0.3),
                          "model": dict(full_res=16)},
        "bb_B_full_f0": {"train": dict(BB, freeze_encoder_epochs=0, encoder_lr_mult=0.1),
                         "model": dict(full_res=16)},
        "bb_B_full_e30": {"train": dict(BB, epochs=30, freeze_encoder_epochs=8, encoder_lr_mult=0.1),
                          "model": dict(full_res=16)},
    },
    # second round, after the first showed that lighter augmentation and more epochs help the U-Net
    "seg2": {
        "seg2_hflip_s6": {"train": SEG, "aug": dict(vflip=False, rotate=0)},
        "seg2_flips_s6": {"train": SEG, "aug": dict(rotate=0)},
        "seg2_flips_nocolour": {"train": SEG, "aug": dict(scale=(1.0, 1.0), rotate=0, brightness=0.0,
                                                           contrast=0.0, saturation=0.0)},
        "seg2_hflip": {"train": SEG, "aug": dict(scale=(1.0, 1.0), rotate=0, vflip=False)},
        "seg2_none": {"train": SEG, "aug": dict(scale=(1.0, 1.0), rotate=0, vflip=False, hflip=False,
                                                 brightness=0.0, contrast=0.0, saturation=0.0)},
        "seg2_flips_s8": {"train": SEG, "aug": dict(scale=(0.8, 1.0), rotate=0)},
        "seg2_flips_dec": {"train": SEG, "aug": FLIPS, "model": dict(decoder=(128, 96, 64, 32))},
        "seg2_flips_e45": {"train": dict(SEG, epochs=45), "aug": FLIPS},
        "seg2_flips_e45_dec": {"train": dict(SEG, epochs=45), "aug": FLIPS, "model": dict(decoder=(128, 96, 64, 32))},
    },
    # third round, on this CPU and the original files: variant B started from the trained variant A (--init)
    "bb3": {
        "bb3_fromA_e10_lr1": {"train": dict(BB, epochs=10, lr=1e-3, encoder_lr_mult=0.3), "aug": ASPECT_ONLY,
                              "model": dict(full_res=16)},
        "bb3_fromA_e10_lr1_enc01": {"train": dict(BB, epochs=10, lr=1e-3, encoder_lr_mult=0.1), "aug": ASPECT_ONLY,
                                    "model": dict(full_res=16)},
    },
    # fourth round, on this CPU and the original files: the classifier's stages on a 2x upscaled input
    # (strides 1..16 like the base U-Net), variant A frozen without augmentation as in notebook 03
    "bb4": {
        "bb4_A_up2": {"train": dict(BB, freeze_encoder_epochs=-1), "aug": NONE, "model": dict(upsample=2)},
        "bb4_B_up2_fromA": {"train": dict(BB, epochs=10, lr=1e-3, encoder_lr_mult=0.3), "aug": ASPECT_ONLY,
                            "model": dict(upsample=2)},
        "bb4_B_fromA_e30": {"train": B30, "aug": ASPECT_ONLY,
                            "model": dict(full_res=16)},
        "bb4_A_up2_e10": {"train": dict(BB, epochs=10, freeze_encoder_epochs=-1), "aug": NONE,
                          "model": dict(upsample=2)},
        "bb4_B_up2_e15_fromA10": {"train": dict(BB, epochs=15, lr=1e-3, encoder_lr_mult=0.3), "aug": ASPECT_ONLY,
                                  "model": dict(upsample=2)},
        "bb4_pretrained_e30": {"train": dict(BB, epochs=30), "aug": ASPECT_ONLY, "model": dict(full_res=16)},
        "bb4_scratch_e30": {"train": dict(BB, epochs=30), "aug": ASPECT_ONLY, "model": dict(full_res=16),
                            "random_init": True},
    },
    # fifth round, on this CPU: a trainable high-resolution branch shaped like the base U-Net's first levels
    # (strides 1 and 2, concatenated with the classifier's stem at stride 2) next to the classifier's stages;
    # A (10 epochs, frozen stages) then B from it (--init)
    "bb5": {
        "bb5_A_hr32": {"train": dict(BB, epochs=10, freeze_encoder_epochs=-1), "aug": NONE,
                       "model": dict(full_res=(32, 64))},
        "bb5_B_hr32_fromA": {"train": B30, "aug": ASPECT_ONLY,
                             "model": dict(full_res=(32, 64))},
        "bb5_A_hr16": {"train": dict(BB, epochs=10, freeze_encoder_epochs=-1), "aug": NONE,
                       "model": dict(full_res=(16, 32))},
        "bb5_B_hr16_fromA": {"train": B30, "aug": ASPECT_ONLY,
                             "model": dict(full_res=(16, 32))},
        # the base U-Net's first three levels (strides 1, 2, 4) next to the classifier's stages
        "bb5_A_hr32_3lv": {"train": dict(BB, epochs=10, freeze_encoder_epochs=-1), "aug": NONE,
                           "model": dict(full_res=(32, 64, 128))},
        "bb5_B_hr32_3lv_fromA": {"train": B30, "aug": ASPECT_ONLY,
                                 "model": dict(full_res=(32, 64, 128))},
        # the schedule control: the committed network in one run with the base U-Net's schedule and augmentation
        # (40 epochs one-cycle at lr 3e-3, none), from the classifier's weights, no variant A before it
        "bb5_pretrained_e40": {"train": dict(BB, epochs=40), "aug": NONE, "model": dict(full_res=16)},
    },
    # sixth round, on this CPU: the schedule control above showed the backbone U-Net overfitting (train loss below
    # the base U-Net's, validation loss rising after its best epoch), so B (the committed recipe, from the committed
    # variant A via --init) with more regularisation
    "bb6": {
        "bb6_B_hflip": {"train": B30, "aug": HFLIP,
                        "model": dict(full_res=16)},
        "bb6_B_wd05": {"train": dict(B30, weight_decay=0.05),
                       "aug": ASPECT_ONLY, "model": dict(full_res=16)},
        "bb6_B_scale": {"train": B30,
                        "aug": dict(ASPECT_ONLY, scale=(0.6, 1.0)), "model": dict(full_res=16)},
        "bb6_B_flips": {"train": B30,
                        "aug": dict(ASPECT_ONLY, hflip=True, vflip=True), "model": dict(full_res=16)},
    },
    # seventh round, on this CPU: round 6's winner (B30 with the horizontal flip, from the committed variant A via
    # --init) with one more change each: an average of the weights, the classifier's BatchNorm statistics kept,
    # a longer schedule, the encoder at the full learning rate, channel dropout on the classifier's features
    "bb7": {
        "bb7_B_ema": {"train": dict(B30, ema=0.995), "aug": HFLIP, "model": dict(full_res=16)},
        "bb7_B_bnfrozen": {"train": dict(B30, encoder_bn="frozen"), "aug": HFLIP, "model": dict(full_res=16)},
        "bb7_B_e45": {"train": dict(B30, epochs=45), "aug": HFLIP, "model": dict(full_res=16)},
        "bb7_B_enc1": {"train": dict(B30, encoder_lr_mult=1.0), "aug": HFLIP, "model": dict(full_res=16)},
        # channel dropout (Dropout2d 0.2) on the adapted classifier features
        "bb7_B_fdrop20": {"train": B30, "aug": HFLIP, "model": dict(full_res=16, feature_dropout=0.2)},
        # no change, another seed: how far B moves by chance alone
        "bb7_B_seed1": {"train": dict(B30, seed=1), "aug": HFLIP, "model": dict(full_res=16)},
    },
    # eighth round, on this CPU: only the classifier's first four stages (strides 2..16, the plain U-Net's depth;
    # without the fifth stage, which holds most of the classifier's weights): A, then B from it (--init)
    "bb8": {
        "bb8_A_s4": {"train": dict(BB, freeze_encoder_epochs=-1), "aug": NONE, "model": dict(full_res=16, stages=4)},
        "bb8_B_s4_fromA": {"train": B30, "aug": HFLIP, "model": dict(full_res=16, stages=4)},
    },
    # ninth round, on this CPU: the base U-Net of notebook 02 (40 epochs, no augmentation) with another seed, the
    # scale of chance on the other side of the B-against-base comparison (its seed-0 run is weights/unet.pt)
    "seg3": {
        "seg3_unet_e40_seed1": {"train": dict(SEG, epochs=40, seed=1), "aug": NONE},
    },
    # tenth round, on this CPU: (1) every augmentation so far kept the crop's aspect-ratio jitter, i.e. resampled the
    # training images and masks (bilinear, the mask re-thresholded) while validation images never are: B (B30 from
    # the committed variant A via --init) with the exact pixel flip only; (2) the small gains stacked: A with B's
    # augmentation, then B from it (--init) with the encoder at the full learning rate and the longer schedule
    "bb10": {
        "bb10_B_hflip_exact": {"train": B30, "aug": dict(NONE, hflip=True), "model": dict(full_res=16)},
        "bb10_A_hflip": {"train": dict(BB, freeze_encoder_epochs=-1), "aug": HFLIP, "model": dict(full_res=16)},
        "bb10_B_stack_fromA": {"train": dict(STACK, epochs=45), "aug": HFLIP, "model": dict(full_res=16)},
        # what the stack's longer schedule buys: the same B from the same A with the notebooks' earlier 30 epochs
        "bb10_B_stack_e30_fromA": {"train": STACK, "aug": HFLIP, "model": dict(full_res=16)},
    },
    # eleventh round, on this CPU: the classifier learned on 64 px images upscaled to 128, i.e. on soft images, while
    # the moon frames are sharp at 128; here it sees the frame averaged over 2x2 pixels and upscaled back
    # (backbone_unet(lowpass=True)) while the full-resolution block sees the frame itself: A, then B from it (--init)
    "bb11": {
        "bb11_A_lowpass": {"train": dict(BB, freeze_encoder_epochs=-1), "aug": HFLIP,
                           "model": dict(full_res=16, lowpass=True)},
        "bb11_B_lowpass_fromA": {"train": dict(STACK, epochs=45), "aug": HFLIP,
                                 "model": dict(full_res=16, lowpass=True)},
    },
    # twelfth round, on this CPU: round 10 showed the crop's aspect-ratio jitter regularising B; the base U-Net's
    # "none" rows of round 2 (GPU, WebP frames) had it too, while notebook 02 trains without it, a step never
    # measured on its own: notebook 02's recipe with the jitter
    "seg4": {
        "seg4_unet_e40_aspect": {"train": dict(SEG, epochs=40), "aug": ASPECT_ONLY},
    },
    # thirteenth round, on this CPU: is the classifier's architecture what holds B back? Both backbone U-Nets from
    # random weights with one recipe (40 epochs at lr 3e-3 like the base U-Net, B's augmentation): the classifier's
    # ResNet-like stages against stages built like the plain U-Net's levels (max-pool + double conv, same widths
    # and strides, `Classifier(block="plain")`); a clear gain would make a classifier of that shape worth training
    "bb13": {
        "bb13_scratch_basic": {"train": dict(BB, epochs=40), "aug": HFLIP, "model": dict(full_res=16),
                               "random_init": True},
        "bb13_scratch_plain": {"train": dict(BB, epochs=40), "aug": HFLIP, "model": dict(full_res=16),
                               "classifier": {"block": "plain"}, "random_init": True},
    },
    # fourteenth round, on this CPU: round 13 left the high-resolution capacity as the architectures' difference
    # (the base U-Net's 32-, 64- and 128-wide levels at strides 1, 2 and 4 against a 16-wide full-resolution block and
    # the classifier's thin first stages); its branch of round 5 (full_res=(32, 64, 128)) with the notebooks' recipe
    # since round 10: A with B's augmentation, then B from it (--init); and the same network from random weights
    "bb14": {
        "bb14_A_hr32_3lv": {"train": dict(BB, freeze_encoder_epochs=-1), "aug": HFLIP, "model": HR3},
        "bb14_B_hr32_3lv_fromA": {"train": STACK, "aug": HFLIP, "model": HR3},
        "bb14_scratch_hr32_3lv": {"train": dict(BB, epochs=40), "aug": HFLIP, "model": HR3, "random_init": True},
        # the same with as many epochs as A and B together (20 + 30)
        "bb14_scratch_hr32_3lv_e50": {"train": dict(BB, epochs=50), "aug": HFLIP, "model": HR3, "random_init": True},
    },
    # fifteenth round, on this CPU: B of round 14 (from bb14_A_hr32_3lv via --init) with one change each, at the
    # same cost: the exact pixel flip without the crop's aspect-ratio jitter (the base U-Net, whose upper levels the
    # branch copies, does better without it), and the base U-Net's learning rate
    "bb15": {
        "bb15_B_hr32_3lv_exact": {"train": STACK, "aug": dict(NONE, hflip=True), "model": HR3},
        "bb15_B_hr32_3lv_lr3": {"train": B15, "aug": HFLIP, "model": HR3},
        # no change, another seed: how far the notebooks' B moves by chance alone (like bb7_B_seed1 for round 6's B)
        "bb15_B_hr32_3lv_lr3_seed1": {"train": dict(B15, seed=1), "aug": HFLIP, "model": HR3},
    },
    # sixteenth round, on this CPU: B of round 15 (from bb14_A_hr32_3lv via --init) with the base U-Net's exact
    # recipe: no augmentation at all (notebook 02 trains without it; round 12 measured the jitter costing it)
    "bb16": {
        "bb16_B_hr32_3lv_none": {"train": B15, "aug": NONE, "model": HR3},
        # B's classifier stages drift far from the classifier's weights (notebook 03's conclusion prints how far);
        # L2-SP pulls them back toward those weights instead of toward zero: the pull per step is lr * coef of the
        # distance, a time constant of 1 / (lr * coef) steps
        "bb16_B_hr32_3lv_sp3": {"train": dict(B15, encoder_sp=3.0), "aug": HFLIP, "model": HR3},
        "bb16_B_hr32_3lv_sp10": {"train": dict(B15, encoder_sp=10.0), "aug": HFLIP, "model": HR3},
    },
    # seventeenth round, on this CPU: B and the base U-Net err on different pixels (their average beats an average of
    # two U-Nets or of two Bs); does B gain when its branch, built like the base U-Net's three upper levels, starts
    # from those trained levels (weights/unet.pt, `common.load_branch`) instead of random weights? A with that branch, then B from it (--init)
    "bb17": {
        "bb17_A_hr32_3lv_unetbranch": {"train": dict(BB, freeze_encoder_epochs=-1), "aug": HFLIP, "model": HR3,
                                       "branch_from_unet": True},
        "bb17_B_hr32_3lv_unetbranch_fromA": {"train": B15, "aug": HFLIP, "model": HR3},
        "bb17_B_hr32_3lv_unetbranch_fromA_seed1": {"train": dict(B15, seed=1), "aug": HFLIP, "model": HR3},
        # the control: the same network with that branch but random classifier stages, one run as long as A and B
        # together (like bb14_scratch_hr32_3lv_e50): what the classifier's weights add to the U-Net's levels
        "bb17_scratch_hr32_3lv_unetbranch_e50": {"train": dict(BB, epochs=50), "aug": HFLIP, "model": HR3,
                                                 "random_init": True, "branch_from_unet": True},
    },
    "bb2": {
        "bb2_A_full_flips": {"train": dict(BB, freeze_encoder_epochs=-1), "aug": FLIPS, "model": dict(full_res=16)},
        "bb2_B_full_f0_flips": {"train": dict(BB, encoder_lr_mult=0.1), "aug": FLIPS, "model": dict(full_res=16)},
        "bb2_B_full_f0_flips_e30": {"train": dict(BB, epochs=30, encoder_lr_mult=0.1), "aug": FLIPS,
                                    "model": dict(full_res=16)},
        "bb2_B_full_f0_flips_lr3": {"train": dict(BB, encoder_lr_mult=0.3), "aug": FLIPS, "model": dict(full_res=16)},
        "bb2_B_full_f0_flips_full32": {"train": dict(BB, encoder_lr_mult=0.1), "aug": FLIPS,
                                       "model": dict(full_res=32, decoder=(128, 96, 64, 32, 32))},
    },
}


def seg_kind(group, spec_model=None, frozen=False):
    """The cost-table key of a segmentation recipe (`common.cost_kind`)."""
    return common.cost_kind({"arch": "unet"} if group.startswith("seg") else spec_model or {}, frozen)


@functools.lru_cache(maxsize=None)
def _costs():
    return json.loads(COSTS.read_text())


def cpu_minutes(group, train, model=None):
    """Estimated minutes of a recipe on the 2-core CPU, from the measured per-epoch costs (validation included)."""
    c = _costs()
    cfg = common.TrainConfig(**train)
    if group == "cls":
        s = sum(N_TINY_TRAIN / c["cls_train_img_s"][str(common.epoch_input_size(cfg, e))] + c["cls_val_s"]
                for e in range(cfg.epochs))
    elif group.startswith("seg"):
        s = cfg.epochs * c["seg_epoch_s"]["unet"]
    else:
        frozen = cfg.epochs if cfg.freeze_encoder_epochs < 0 else cfg.freeze_encoder_epochs
        s = frozen * c["seg_epoch_s"][seg_kind(group, model, True)] + \
            (cfg.epochs - frozen) * c["seg_epoch_s"][seg_kind(group, model, False)]
    return s / 60


def measure_costs(out=COSTS, steps=8):
    """Measure the per-epoch costs on this machine with `fit` itself: `steps` training steps of each kind of
    run (after a warm-up run of the same shapes) on random pixels of the real sizes, and one validation pass.
    The pixel values do not change the cost; the split sizes are the cpu profile's."""
    import tempfile
    g = torch.Generator().manual_seed(0)
    pixels = lambda n, side: torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)  # noqa: E731
    names = [f"c{i}" for i in range(100)]
    tiny = common.ImageSet(pixels(CLS["batch_size"] * steps, 64), torch.randint(0, 100, (CLS["batch_size"] * steps,),
                                                                                 generator=g), names, names)
    moon = common.MaskSet(pixels(BB["batch_size"] * steps, 128), torch.randint(0, 2, (BB["batch_size"] * steps, 1, 128, 128),
                                                                                generator=g, dtype=torch.uint8),
                          list(range(BB["batch_size"] * steps)), (360, 240))
    tmp = Path(tempfile.mkdtemp())

    def img_s(model, data, cfg):
        for _ in range(2):                  # the first run warms up the kernels for these shapes
            h = common.fit(model, data, data.subset(range(8)), cfg, tmp, progress=False)
            (tmp / "last.pt").unlink()
        return float(h["images_per_s"].iloc[-1])

    def val_s(model, data, n):
        common.predict(model, data.images[:64])
        t = time.time()
        common.predict(model, data.images)
        return (time.time() - t) * n / len(data)

    env = common.environment()
    res = {"device": env["device"], "machine": env["machine"], "precision": common.compute_precision().name,
           "torch": env["torch"], "threads": env["threads"], "steps": steps,
           "cls_train_img_s": {}, "seg_epoch_s": {}}
    for side in CLS_SIZES:
        cfg = common.TrainConfig(**dict(CLS, epochs=1), min_size=side if side < common.INPUT_SIZE else 0,
                                 full_size_at=1.0, max_steps_per_epoch=steps)
        res["cls_train_img_s"][str(side)] = img_s(common.Classifier(100), tiny, cfg)
    res["cls_val_s"] = val_s(common.Classifier(100).eval(), tiny, N_TINY_VAL)
    cls_config = common.Classifier(100).config
    kinds = {seg_kind("seg"): (common.unet, 0)}
    models = [spec.get("model", {}) for g, runs in GROUPS.items() if g.startswith("bb") for spec in runs.values()]
    for m in [{}] + models:         # every kind the recipes need, measured on the first model of that kind
        for frozen in (True, False):
            kinds.setdefault(seg_kind("bb", m, frozen), (lambda m=m: common.backbone_unet(cls_config, **m),
                                                         -1 if frozen else 0))
    for kind, (make, freeze) in kinds.items():
        cfg = common.TrainConfig(**dict(BB, epochs=1), freeze_encoder_epochs=freeze, max_steps_per_epoch=steps,
                                 augment=common.AugmentConfig.none())
        res["seg_epoch_s"][kind] = N_MOON_TRAIN / img_s(make(), moon, cfg) + val_s(make().eval(), moon, N_MOON_VAL)
        print(kind, f"{res['seg_epoch_s'][kind]:.1f} s/epoch", flush=True)
    common.save_json(res, out)
    print(json.dumps(res, indent=1))


# --- data ---------------------------------------------------------------------------------------------
def _webp(images, quality):
    """uint8 (N,3,H,W) -> one byte blob of WebP files and their offsets."""
    from PIL import Image
    blobs, offsets = [], [0]
    for x in images.permute(0, 2, 3, 1).numpy():
        b = io.BytesIO()
        Image.fromarray(x).save(b, "WEBP", quality=quality)
        blobs.append(b.getvalue())
        offsets.append(offsets[-1] + len(blobs[-1]))
    return np.frombuffer(b"".join(blobs), np.uint8), np.array(offsets)


def _unwebp(blob, offsets):
    from PIL import Image
    blob = blob.tobytes()
    imgs = np.stack([np.asarray(Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]])).convert("RGB"))
                     for i in range(len(offsets) - 1)])
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()


def pack(out, quality=55):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tr, va, _, _ = common.load_datasets("tiny", "cpu")
    blob, offsets = _webp(torch.cat([tr.images, va.images]), quality)
    np.savez(out / "tiny.npz", blob=blob, offsets=offsets, labels=torch.cat([tr.labels, va.labels]).numpy(),
             n_train=len(tr), classes=np.array(tr.classes))
    mtr, mva, _ = common.load_datasets("moon", "cpu")
    blob, offsets = _webp(torch.cat([mtr.images, mva.images]), 90)
    np.savez_compressed(out / "moon.npz", blob=blob, offsets=offsets, n_train=len(mtr),
                        masks=np.packbits(torch.cat([mtr.masks, mva.masks]).numpy()))
    print({p.name: f"{p.stat().st_size / 2 ** 20:.1f} MiB" for p in out.iterdir()})


def load(data, group):
    """(train, val) from a pack folder, or from the real data via `common.load_datasets` when data is None."""
    if data is None:
        if group == "cls":
            return common.load_datasets("tiny", "cpu", progress=False)[:2]
        return common.load_datasets("moon", "cpu", progress=False)[:2]
    if group == "cls":
        z = np.load(Path(data) / "tiny.npz")
        images = _unwebp(z["blob"], z["offsets"])
        classes = [str(c) for c in z["classes"]]
        full = common.ImageSet(images, torch.from_numpy(z["labels"]), classes, classes)
        n = int(z["n_train"])
        return full.subset(range(n)), full.subset(range(n, len(full)))
    z = np.load(Path(data) / "moon.npz")
    images = _unwebp(z["blob"], z["offsets"])
    masks = torch.from_numpy(np.unpackbits(z["masks"])[:images[:, :1].numel()].reshape(images[:, :1].shape))
    full = common.MaskSet(images, masks, list(range(len(images))), (360, 240))
    n = int(z["n_train"])
    return full.subset(range(n)), full.subset(range(n, len(full)))


def backbone_model(classifier_config, spec):
    """A 'bb' recipe's backbone U-Net (fresh weights): spec["model"] are backbone_unet keywords, spec["classifier"]
    overrides settings of the classifier's configuration (a control from random weights only)."""
    return common.backbone_unet({**classifier_config, **spec.get("classifier", {})}, **spec.get("model", {}))


# --- one run ------------------------------------------------------------------------------------------
def run_one(name, group, data, out, classifier=None, smoke=False, init=None):
    spec = GROUPS[group][name]
    base_aug = {} if group == "cls" else SEG_AUG
    aug = common.AugmentConfig(**{**base_aug, **spec.get("aug", {})})
    cfg = common.TrainConfig(**spec["train"], augment=aug)
    train, val = load(data, group)
    if smoke:       # a check of the script itself: 2 epochs of 2 batches, small validation
        cfg.epochs, cfg.max_steps_per_epoch, val = 2, 2, val.subset(range(64))
    if group == "cls":
        make = lambda: common.Classifier(len(train.classes), **spec.get("model", {}))
    elif group.startswith("seg"):
        make = lambda: common.unet(**spec.get("model", {}))
    else:
        cls_model, _ = common.load_checkpoint(classifier, expect_task="classification")
        start = common.load_checkpoint(init, expect_task="segmentation")[0].state_dict() if init else None
        if spec.get("classifier") and not spec.get("random_init"):
            raise ValueError(f"{name}: another classifier architecture has no trained weights here (random_init)")

        def make():
            m = backbone_model(cls_model.config, spec)
            if not spec.get("random_init"):     # a control run: the same network without the classifier's weights
                common.load_backbone(m, cls_model)
            if spec.get("branch_from_unet"):
                common.load_branch(m, common.load_checkpoint(UNET, expect_task="segmentation")[0])
            if start is not None:       # start from a trained backbone U-Net (variant A), not a fresh decoder
                m.load_state_dict(start)
            return m
    model = make()
    t0 = time.time()
    hist = common.fit(model, train, val, cfg, Path(out) / name, progress=False)
    best, _ = common.load_checkpoint(Path(out) / name / "best.pt")
    best.to(common.default_device())
    res = {"name": name, "group": group, "params": common.count_params(model), "wall_s": time.time() - t0,
           "machine": common.machine(), "precision": common.compute_precision(verbose=False).name,
           "spec": json.loads(json.dumps(spec, default=list)),
           "history": hist.to_dict(orient="list")}
    if group == "cls":
        for tta in (False, True):
            r = common.classification_results(best, val, tta=tta)
            res[f"top1{'_tta' if tta else ''}"] = float(r["metrics"]["top1"])
    else:
        for tta in (False, True):
            logits = common.predict(best, val.images, tta=tta)
            thr, _ = common.best_threshold(logits, val.masks)
            m = common.seg_metrics(common.confusion_counts(logits, val.masks, 0.5))
            mt = common.seg_metrics(common.confusion_counts(logits, val.masks, thr))
            sfx = "_tta" if tta else ""
            res.update({f"iou{sfx}": m["iou"], f"iou_thr{sfx}": mt["iou"], f"thr{sfx}": thr})
    res["best_epoch"] = int(hist[[c for c in hist if c in ("val_top1", "val_iou")][0]].idxmax()) + 1
    common.save_json(res, Path(out) / f"{name}.json")
    print(json.dumps({k: v for k, v in res.items() if k not in ("history", "spec")}), flush=True)


# the members of the ensemble analysis, name: (kind, checkpoint): the notebooks' base U-Net and B, and the search's
# runs of the same recipes with other seeds (seg3_*, bb17_B_*), and round 15's B (its branch from random weights)
# with two seeds; the search's checkpoints are in runs/ after those rounds
ENSEMBLE = {"unet": ("unet", "weights/unet.pt"),
            "seg3_unet_e40_seed1": ("unet", "runs/seg3/seg3_unet_e40_seed1/best.pt"),
            "backbone_unet_finetuned": ("B", "weights/backbone_unet_finetuned.pt"),
            "bb17_B_hr32_3lv_unetbranch_fromA": ("B", "runs/bb17/bb17_B_hr32_3lv_unetbranch_fromA/best.pt"),
            "bb17_B_hr32_3lv_unetbranch_fromA_seed1": ("B", "runs/bb17b/bb17_B_hr32_3lv_unetbranch_fromA_seed1/best.pt"),
            "bb15_B_hr32_3lv_lr3": ("B15", "runs/bb15/bb15_B_hr32_3lv_lr3/best.pt"),
            "bb15_B_hr32_3lv_lr3_seed1": ("B15", "runs/bb15b/bb15_B_hr32_3lv_lr3_seed1/best.pt")}


def ensembles(into, members=ENSEMBLE):
    """Do B and the base U-Net err on the same pixels? Every pair of `members` averaged (flip-TTA probabilities,
    threshold chosen on validation like a single model's): pairs of different kinds that beat pairs of one kind
    (other seeds) err differently. Writes each member's kind, IoU and weight digest and every pair's IoU under
    "ensembles" of the results file `into`."""
    import itertools
    _, val = load(None, "seg")
    probs, rows = {}, {}
    for name, (kind, path) in members.items():
        model, _ = common.load_checkpoint(common.ROOT / path, expect_task="segmentation")
        model.tta = True
        probs[name] = torch.sigmoid(common.predict(model, val.images))
        rows[name] = {"kind": kind, "path": path, "digest": common.state_digest(model.state_dict())}

    def score(p):
        r = common.segmentation_scores(torch.logit(p.clamp(1e-6, 1 - 1e-6)), val.masks)
        return {"iou": r["metrics"]["iou"], "threshold": r["threshold"]}

    for name in members:
        rows[name].update(score(probs[name]))
    pairs = [{"a": a, "b": b, **score((probs[a] + probs[b]) / 2)} for a, b in itertools.combinations(members, 2)]
    into = Path(into)
    data = json.loads(into.read_text())
    data["ensembles"] = {"members": rows, "pairs": pairs}
    common.save_json(data, into)
    for r in pairs:
        print(f"{r['a']} + {r['b']}: IoU {r['iou']:.4f} (threshold {r['threshold']})")


def summary(out):
    rows = [json.loads(p.read_text()) for p in sorted(Path(out).glob("*.json"))]
    for r in rows:      # derived from the recipe and the measured cost table, never stored
        r["est_cpu_min"] = cpu_minutes(r["group"], r["spec"]["train"], r["spec"].get("model"))
    keys = ["top1", "top1_tta", "iou", "iou_thr", "iou_tta", "iou_thr_tta", "thr_tta", "best_epoch",
            "est_cpu_min", "wall_s", "params"]
    print("| run | " + " | ".join(keys) + " |")
    print("|" + "---|" * (len(keys) + 1))
    for r in rows:
        cells = [f"{r[k]:.4f}" if isinstance(r.get(k), float) and k not in ("est_cpu_min", "wall_s")
                 else (f"{r[k]:.1f}" if isinstance(r.get(k), float) else str(r.get(k, ""))) for k in keys]
        print(f"| {r['name']} | " + " | ".join(cells) + " |")


def collect(out, into, round_):
    """Add the runs in `out` to a results file (experiments/results/*.json) as round `round_`; a run of the
    same name is replaced."""
    into = Path(into)
    data = json.loads(into.read_text())
    new = [dict(json.loads(p.read_text()), round=round_) for p in sorted(Path(out).glob("*.json"))]
    names = {r["name"] for r in new}
    data["runs"] = [r for r in data["runs"] if r["name"] not in names] + new
    common.save_json(data, into)
    print(f"{into}: {len(new)} runs of round {round_} added, {len(data['runs'])} in all")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--out", default=".devdata")
    r = sub.add_parser("run")
    r.add_argument("--group", choices=list(GROUPS), required=True)
    r.add_argument("--names", nargs="*", help="runs of the group (default: all)")
    r.add_argument("--data", default=None, help="a pack folder (default: the real data)")
    r.add_argument("--out", default="runs/sweep")
    r.add_argument("--jobs", type=int, default=1)
    r.add_argument("--classifier", default=None, help="classifier checkpoint for the 'bb' groups")
    r.add_argument("--init", default=None, help="backbone U-Net checkpoint to start the 'bb' runs from")
    r.add_argument("--smoke", action="store_true", help="2 epochs of 2 batches per run (checks the script)")
    r.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    s = sub.add_parser("summary")
    s.add_argument("out")
    c = sub.add_parser("cost", help="measure the per-epoch CPU costs behind the est. minutes (a few minutes)")
    c.add_argument("--out", default=str(COSTS))
    k = sub.add_parser("collect", help="add the runs of an --out folder to a results file")
    k.add_argument("out")
    k.add_argument("--into", required=True)
    k.add_argument("--round", type=int, required=True)
    e = sub.add_parser("ensembles", help="IoU of every pair of ENSEMBLE's models averaged, into a results file")
    e.add_argument("--into", required=True)
    a = ap.parse_args()
    if a.cmd == "ensembles":
        return ensembles(a.into)
    if a.cmd == "collect":
        return collect(a.out, a.into, a.round)
    if a.cmd == "pack":
        return pack(a.out)
    if a.cmd == "cost":
        return measure_costs(a.out)
    if a.cmd == "summary":
        return summary(a.out)
    names = a.names or list(GROUPS[a.group])
    if a.one:
        return run_one(names[0], a.group, a.data, a.out, a.classifier, a.smoke, a.init)
    procs, queue = [], list(names)
    while queue or procs:
        while queue and len(procs) < a.jobs:
            cmd = [sys.executable, __file__, "run", "--one", "--group", a.group, "--out", a.out,
                   "--names", queue.pop(0)] + (["--data", a.data] if a.data else []) + \
                  (["--classifier", a.classifier] if a.classifier else []) + (["--smoke"] if a.smoke else []) + \
                  (["--init", a.init] if a.init else [])
            procs.append(subprocess.Popen(cmd))
        time.sleep(1)
        procs = [p for p in procs if p.poll() is None]


if __name__ == "__main__":
    main()
