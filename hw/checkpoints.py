"""Checkpoints that describe themselves: the contract `load_checkpoint(path) -> (model, meta)` and
`preprocess(pil, meta)` that other tools rely on, and digests that identify a checkpoint's weights."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from .augment import IMAGENET_MEAN, IMAGENET_STD, _normalize
from .core import INPUT_SIZE, CheckpointError, atomic_write, count_params, shown_path, tr
from .data import pil_to_rgb, resize, resize_uint8
from .models import build_model
from .precision import environment

CHECKPOINT_FORMAT = "hw-unet-backbone/1"


def save_checkpoint(path, model, task, **meta):
    """Self-describing checkpoint: architecture config + weights + meta (task, input size, normalisation,
    parameter count, metrics, classes or threshold, seed, versions). Written atomically."""
    meta = {"task": task, "input_size": INPUT_SIZE, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "params": count_params(model), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            **environment(), **meta}
    if task == "segmentation":
        meta.setdefault("threshold", 0.5)
    meta.setdefault("source_size", INPUT_SIZE if task == "segmentation" else 64)     # the size the readers store
    meta["tta"] = bool(getattr(model, "tta", False))   # the model's own setting, whatever meta said
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"format": CHECKPOINT_FORMAT, "config": model.config, "state_dict": state,
           "meta": json.loads(json.dumps(meta))}
    atomic_write(path, lambda p: torch.save(obj, p))
    return path


def load_checkpoint(path, expect_task=None):
    """(model, meta) from a checkpoint file alone: the model is rebuilt from its stored config and returned
    in eval mode on CPU. Raises CheckpointError for a missing, damaged or foreign file, for weights that do
    not fit the stored architecture, and (with expect_task) for a checkpoint of the other task."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(tr(f"checkpoint {path} does not exist; train the model first (run its notebook).",
                                 f"нет чекпоинта {shown_path(path)}: сначала выполните ноутбук, который обучает эту "
                                 "модель (weights/classifier.pt — ноутбук 01, weights/unet.pt — ноутбук 02)."))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is damaged or not a PyTorch checkpoint ({type(e).__name__}); "
                              f"retrain or restore it from git.") from e
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this project (format "
                              f"{obj.get('format') if isinstance(obj, dict) else type(obj).__name__!r}).")
    meta = obj["meta"]
    if expect_task and meta.get("task") != expect_task:
        raise CheckpointError(f"{path} holds a {meta.get('task')} model, but a {expect_task} model is needed.")
    model = build_model(obj["config"])
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"the weights in {path} do not fit the architecture stored with them: "
                              f"{str(e).splitlines()[0]}") from e
    model.tta = bool(meta.get("tta", False))
    return model.eval(), meta


def preprocess(pil_image, meta):
    """Any PIL image (any size or mode) -> the model's input tensor (3,128,128), exactly as validation
    builds it: RGB, resized to the stored source size (64 for Tiny ImageNet, 128 for the moon frames) and
    quantised to uint8 as the readers store it, then resized to the input size and normalised."""
    x = resize_uint8(pil_to_rgb(pil_image), meta.get("source_size", meta["input_size"]))[None]
    return _normalize(resize(x, meta["input_size"]), meta["mean"], meta["std"])[0]


def weights_digest(source):
    """A short SHA-256 of the weights (not the meta) of a checkpoint file, or of a state_dict in memory (a loaded
    model's `state_dict()` gives its checkpoint's): identifies the checkpoint another model starts from."""
    state = source if isinstance(source, dict) else torch.load(     # a file, read as `load_checkpoint` reads it
        source, map_location="cpu", weights_only=True)["state_dict"]
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]

