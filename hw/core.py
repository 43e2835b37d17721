"""Paths, errors and small utilities every other module uses."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]     # the repository: notebooks, weights/, figures/, experiments/
IN_CHECKOUT = (ROOT / "weights").is_dir()      # False where the package is pip-installed: data/ is then in the cwd
INPUT_SIZE = 128

TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MOON_HINT = ("the course's MOON_SEGMENTATION_BINARY archive (or Kaggle's 'Artificial Lunar Rocky Landscape "
             "Dataset' by Romain Pessia)")


class DataError(ValueError):
    """A problem with the data on disk; the message names the path and says how to fix it."""


class CheckpointError(ValueError):
    """A checkpoint that is not ours, is damaged, or does not fit the model it should build."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


LANG_ENV = "HW_LANG"      # "ru": the lines the library prints are Russian (the notebooks' set-up sets it), else English


def tr(en, ru):
    """A printed line in the language of the outputs: Russian in the notebooks (`setup` sets HW_LANG=ru), English in
    scripts and tests. Errors stay English, except those a notebook's reader must act on (missing or too little
    data, a missing checkpoint, a precision the GPU lacks)."""
    return ru if os.environ.get(LANG_ENV) == "ru" else en


def data_root():
    """The git-ignored folder of unpacked archives and tensor caches: $HW_DATA_DIR, else data/ in the repository (in
    the current folder where the package is installed)."""
    return Path(os.environ.get("HW_DATA_DIR") or (ROOT if IN_CHECKOUT else Path.cwd()) / "data")


def shared_data():
    """Where the course's archives lie when present beside the project: $HW_SHARED_DATA, else ../shared/data."""
    return Path(os.environ.get("HW_SHARED_DATA") or (ROOT if IN_CHECKOUT else Path.cwd()).parent / "shared" / "data")


def shown_path(path):
    """A path as outputs print it: relative to the repository (or to the folder above it, e.g. ../shared/data), else
    its name alone, so no notebook or report records the absolute paths of the machine that ran it."""
    p = Path(path).resolve()
    for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
        if p.is_relative_to(base):
            return prefix + (p.relative_to(base).as_posix() or ".")
    return p.name


def atomic_write(path, write):
    """Call write(tmp_path) and move the result over `path` in one step: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_json(obj, path):
    return atomic_write(path, lambda p: Path(p).write_text(json.dumps(obj, indent=2, ensure_ascii=False)))


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_device():
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def count_params(model, trainable_only=False):
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def progress_bar(iterable, enabled, **kw):
    """A progress bar (a widget in Jupyter); none in a headless run (HW_STATIC_WIDGETS, see `browse`), whose
    notebook keeps the printed lines instead."""
    if not enabled or os.environ.get("HW_STATIC_WIDGETS"):
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, **kw)
