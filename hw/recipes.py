"""The recipe of every profile in one place: the number of classes, each model's `TrainConfig`, the two tasks (loss
and threshold), and the data a profile trains on."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from .augment import AugmentConfig
from .core import ROOT
from .data import find_dataset, load_datasets, missing_moon_error
from .evaluation import ClassificationTask, SegmentationTask
from .training import TrainConfig

CLASSIFIER_AUGMENT = AugmentConfig()            # random resized crop (35-100 % of the area), h-flip, colour
BACKBONE_AUGMENT = AugmentConfig(scale=(1.0, 1.0), hflip=True, vflip=False, rotate=0.0, brightness=0.0, contrast=0.0,
                                 saturation=0.0)     # the h-flip and the crop's aspect-ratio jitter at full area


@dataclass(frozen=True)
class Recipe:
    """One profile: the number of classes and the training recipe of each model (variant A: the classifier's stages
    frozen; variant B: fine-tuned after A). synthetic: the sizes of the demo's stand-ins (None: the real data).
    fit_on_val: the segmentation models' final fit uses train + val (without broken frames) and keeps its last
    epoch, with the epochs and the threshold (`SegmentationTask.threshold`) fixed beforehand by experiments on train
    and val (experiments/README.md); val then scores nothing, the test split does."""
    classes: int
    classifier: TrainConfig
    unet: TrainConfig
    frozen: TrainConfig
    finetuned: TrainConfig
    classification: ClassificationTask = field(default_factory=lambda: ClassificationTask(label_smoothing=0.1))
    segmentation: SegmentationTask = field(default_factory=SegmentationTask)     # BCE + Dice, threshold 0.5
    synthetic: dict | None = None
    fit_on_val: bool = True

    def configs(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), TrainConfig)}

    def datasets(self, kind, data_dir=None, out_dir=ROOT, seed=0, progress=True):
        """(train, val, test, info) of this profile: see `load_datasets`."""
        return load_datasets(kind, self.synthetic, data_dir, out_dir, seed, progress, self.classes)


def _recipe(classes, cls, seg, bb_a, bb_b, synthetic=None):
    """A profile from its differences: cls (classifier), seg (U-Net), bb_a / bb_b (variants A and B) are TrainConfig
    fields; the segmentation models share weight decay 1e-4; A and B share the backbone augmentation."""
    seg_base = dict(weight_decay=1e-4, lr=seg["lr"], batch_size=seg["batch_size"])
    return Recipe(classes, TrainConfig(**cls, augment=CLASSIFIER_AUGMENT),
                  TrainConfig(**{**seg_base, **seg}, augment=AugmentConfig.none()),
                  TrainConfig(**seg_base, **bb_a, freeze_encoder=True, augment=BACKBONE_AUGMENT),
                  TrainConfig(**seg_base, **bb_b, augment=BACKBONE_AUGMENT), synthetic=synthetic)


PROFILES = {
    # synthetic data made by `synthetic`: all three notebooks in under 3 minutes on 2 cores without native bf16
    # (it shows that the pipeline works, not the quality)
    "demo": _recipe(10, dict(epochs=3, batch_size=64, lr=3e-3, min_size=64, full_size_at=0.6),
                    dict(epochs=4, batch_size=16, lr=3e-3), dict(epochs=3), dict(epochs=2),
                    synthetic={"n_classes": 10, "n_train": 40, "n_val": 10, "n_moon": 40, "moon_size": (360, 240),
                               "broken": (5, 18, 31)}),
    # the real data on 2 CPU cores; the classifier grows its input 64 -> 128 px until 85 % of its epochs
    "cpu": _recipe(100, dict(epochs=20, batch_size=128, lr=3e-3, min_size=64, full_size_at=0.85),
                   dict(epochs=40, batch_size=16, lr=3e-3), dict(epochs=20), dict(epochs=30)),
    # all 200 classes and longer schedules on a CUDA GPU
    "gpu": _recipe(200, dict(epochs=40, batch_size=256, lr=4e-3, min_size=64, full_size_at=0.85),
                   dict(epochs=80, batch_size=32, lr=3e-3), dict(epochs=60), dict(epochs=60)),
}


def recipe(profile, seed=0, epochs=None, batch_size=None, num_classes=None):
    """A profile's `Recipe` with the notebooks' overrides applied to every model's configuration."""
    r = PROFILES[profile]
    change = {"seed": seed, **({"epochs": epochs} if epochs else {}), **({"batch_size": batch_size} if batch_size else {})}
    return dataclasses.replace(r, classes=num_classes or r.classes,
                               **{k: dataclasses.replace(c, **change) for k, c in r.configs().items()})


NOTEBOOK_DATA = {"01": ("tiny",), "02": ("moon",), "03": ("moon",)}    # what each notebook reads (03: also 01's weights)


def resolve_profile(profile="auto", data_dir=None, notebook=None):
    """'auto' -> 'gpu' on CUDA, else 'cpu': the real data, never the synthetic demo unless asked for. The moon set
    that `notebook` needs (`NOTEBOOK_DATA`) must be found, else a DataError says where to put it (Tiny ImageNet is
    downloaded when missing, by `load_datasets`)."""
    if profile not in (*PROFILES, "auto"):
        raise ValueError(f"profile must be one of {list(PROFILES)} or 'auto', not {profile!r}")
    if profile == "auto" or PROFILES[profile].synthetic is None:
        for kind in NOTEBOOK_DATA.get(notebook, ()):
            if kind == "moon" and find_dataset(kind, data_dir) is None:
                raise missing_moon_error(data_dir)
    if profile != "auto":
        return profile
    return "gpu" if torch.cuda.is_available() else "cpu"
