"""Every model's settings in one place: per profile, each model's architecture, training, augmentation and task
(`ModelRecipe`), the number of classes, and the data the profile trains on. The "cpu" profile is written out in
full (`CPU`); the others are its differences, by keyword (`vary`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .augment import AugmentConfig
from .core import ROOT
from .data import find_dataset, load_datasets, missing_moon_error
from .models import build_model, load_backbone, with_weights
from .tasks import ClassificationTask, SegmentationTask
from .training import TrainConfig

CLASSIFIER_AUGMENT = AugmentConfig(scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), hflip=True, vflip=False, rotate=0.0,
                                   brightness=0.3, contrast=0.3, saturation=0.3)
NO_AUGMENT = AugmentConfig.none()       # the U-Net: a horizontal flip was undecided under the seed protocol
BACKBONE_AUGMENT = AugmentConfig(scale=(1.0, 1.0), ratio=(3 / 4, 4 / 3), hflip=True, vflip=False, rotate=0.0,
                                 brightness=0.0, contrast=0.0, saturation=0.0)  # h-flip, aspect jitter at full area
LIGHT_AUGMENT = AugmentConfig(scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3), hflip=True, vflip=True, rotate=10.0,
                              brightness=0.2, contrast=0.2, saturation=0.1)    # notebook 02 shows what it does to a mask
SEGMENTATION = SegmentationTask(bce=1.0, dice=1.0, threshold=0.5)
BACKBONE = {"arch": "backbone_unet", "adapters": [32, 64, 96, 128, 192], "decoder": [128, 96, 64, 32], "branch": []}
FULLRES = {**BACKBONE, "decoder": [128, 96, 64, 32, 16], "branch": [32]}   # + one U-Net level at 128x128


@dataclass(frozen=True, kw_only=True)
class ModelRecipe:
    """One model: its name (weights/<name>.pt), its architecture (a `build_model` config; a backbone U-Net's
    classifier comes from the trained classifier), how it trains, its task (loss, metrics, threshold), and the model
    whose trained weights it starts from (variant B: its A). fit_on_val: the final fit uses train + val (without
    broken frames) and keeps its last epoch, with the epochs and the threshold fixed beforehand by experiments on
    train and val (experiments/README.md); val then scores nothing, the test split does. Else the best epoch on
    val is kept."""
    name: str
    architecture: dict
    train: TrainConfig
    task: ClassificationTask | SegmentationTask
    starts_from: str | None = None
    fit_on_val: bool = False

    @property
    def backbone(self):
        return self.architecture["arch"] == "backbone_unet"

    def build(self, classifier=None, start=None):
        """The model before training: a backbone U-Net carries the trained `classifier`'s stages; `start`: the
        trained model of `starts_from`, whose weights it takes."""
        torch.manual_seed(self.train.seed)      # the initial weights are the seed's, whatever ran before
        if self.backbone:
            model = load_backbone(build_model({**self.architecture, "classifier": classifier.config}), classifier)
        else:
            model = build_model(self.architecture)
        return with_weights(model, start) if start is not None else model

    def depends_on(self, weights):
        """The checkpoints its initial weights come from (part of its run key): its start, else the classifier."""
        if self.starts_from:
            return [weights / f"{self.starts_from}.pt"]
        return [weights / "classifier.pt"] if self.backbone else []


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """One profile: every model's `ModelRecipe` (variant A: the classifier's stages frozen; B: fine-tuned after A;
    the full-resolution pair likewise), and the data. synthetic: the sizes of the demo's stand-ins (None: the real
    data)."""
    classifier: ModelRecipe
    unet: ModelRecipe
    backbone_unet_frozen: ModelRecipe
    backbone_unet_finetuned: ModelRecipe
    backbone_unet_fullres_frozen: ModelRecipe
    backbone_unet_fullres: ModelRecipe
    synthetic: dict | None = None

    @property
    def classes(self):
        return self.classifier.architecture["num_classes"]

    def models(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), ModelRecipe)}

    def datasets(self, kind, data_dir=None, out_dir=ROOT, seed=0, progress=True):
        """(train, val, test, info) of this profile: see `load_datasets`."""
        return load_datasets(kind, self.synthetic, data_dir, out_dir, seed, progress, self.classes)


def _seg(name, architecture, starts_from=None, **train):
    """A segmentation model of the "cpu" profile: BCE + Dice, a final fit on train + val, AdamW at 3e-3."""
    return ModelRecipe(name=name, architecture=architecture, task=SEGMENTATION, starts_from=starts_from,
                       fit_on_val=True, train=TrainConfig(**{"lr": 3e-3, "batch_size": 16, "weight_decay": 1e-4,
                                                             **train}))


CPU = Recipe(    # the real data on 2 CPU cores; the classifier grows its input 64 -> 128 px until 85 % of its epochs
    classifier=ModelRecipe(
        name="classifier",
        architecture={"arch": "classifier", "num_classes": 100, "widths": [32, 64, 128, 256, 384],
                      "blocks": [1, 1, 2, 1, 1], "dropout": 0.1},
        train=TrainConfig(epochs=20, batch_size=128, lr=3e-3, weight_decay=5e-4, warmup=0.15, min_size=64,
                          full_size_at=0.85, augment=CLASSIFIER_AUGMENT),
        task=ClassificationTask(label_smoothing=0.1)),
    unet=_seg("unet", {"arch": "unet", "widths": [32, 64, 128, 160, 192], "decoder": [128, 64, 32, 16]},
              epochs=40, augment=NO_AUGMENT),
    backbone_unet_frozen=_seg("backbone_unet_frozen", BACKBONE, epochs=20, freeze_encoder=True,
                              augment=BACKBONE_AUGMENT),
    backbone_unet_finetuned=_seg("backbone_unet_finetuned", BACKBONE, "backbone_unet_frozen", epochs=30,
                                 augment=BACKBONE_AUGMENT),
    backbone_unet_fullres_frozen=_seg("backbone_unet_fullres_frozen", FULLRES, epochs=20, freeze_encoder=True,
                                      augment=BACKBONE_AUGMENT),
    backbone_unet_fullres=_seg("backbone_unet_fullres", FULLRES, "backbone_unet_fullres_frozen", epochs=30,
                               augment=BACKBONE_AUGMENT))


def vary(base, classes=None, synthetic=None, **changes):
    """A profile as its differences from `base`: classes, the synthetic data (None: the base's), and per model (by
    its name) its `TrainConfig` changes by keyword."""
    if unknown := set(changes) - set(base.models()):
        raise ValueError(f"no model {sorted(unknown)} in the recipe; its models: {list(base.models())}")
    new = {n: dataclasses.replace(m, train=dataclasses.replace(m.train, **changes.get(n, {})))
           for n, m in base.models().items()}
    if classes:
        cls = new["classifier"]
        new["classifier"] = dataclasses.replace(cls, architecture={**cls.architecture, "num_classes": classes})
    return dataclasses.replace(base, synthetic=base.synthetic if synthetic is None else synthetic, **new)


AB = ("backbone_unet_frozen", "backbone_unet_finetuned", "backbone_unet_fullres_frozen", "backbone_unet_fullres")
PROFILES = {
    # synthetic data made by `synthetic`: all three notebooks in under 3 minutes on 2 cores without native bf16
    # (it shows that the pipeline works, not the quality)
    "demo": vary(CPU, classes=10, classifier=dict(epochs=3, batch_size=64, full_size_at=0.6), unet=dict(epochs=4),
                 **dict(zip(AB, [dict(epochs=3), dict(epochs=2)] * 2)),
                 synthetic={"n_classes": 10, "n_train": 40, "n_val": 10, "n_moon": 40, "moon_size": (360, 240),
                            "broken": (5, 18, 31)}),
    "cpu": CPU,
    # all 200 classes and longer schedules on a CUDA GPU
    "gpu": vary(CPU, classes=200, classifier=dict(epochs=40, batch_size=256, lr=4e-3), unet=dict(epochs=80, batch_size=32),
                **{n: dict(epochs=60, batch_size=32) for n in AB}),
}


def recipe(profile, seed=0, epochs=None, batch_size=None, num_classes=None):
    """A profile's `Recipe` with the notebooks' overrides applied to every model."""
    change = {"seed": seed, **({"epochs": epochs} if epochs else {}), **({"batch_size": batch_size} if batch_size else {})}
    return vary(PROFILES[profile], num_classes, **{n: change for n in CPU.models()})


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
