"""Everything the three notebooks share: data, augmentation, models, metrics, training, checkpoints, plots.

Read top to bottom:
    1. errors and small utilities
    2. data: readers of Tiny ImageNet-200 and the moon set (folder or zip, decoded once into uint8
       tensors, cached under data/), stratified splits, synthetic stand-ins in the same on-disk layouts
    3. augmentation on whole batches of tensors (one affine grid per sample, image and mask together)
    4. models: the classifier (its stages exposed as an encoder), one U-Net decoder, two U-Nets
    5. metrics: IoU / Dice / pixel accuracy (micro and per image), top-k accuracy
    6. training: one `fit` for all four models (resumable, atomic checkpoints, history CSV)
    7. checkpoints: the contract `load_checkpoint(path) -> (model, meta)` and `preprocess(pil, meta)`
    8. plots and widgets for the notebooks
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import os
import platform
import random
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent
DATA_DIR = ROOT / "data"                      # git-ignored: unpacked archives and tensor caches
SHARED_DATA = ROOT.parent / "shared" / "data"  # the course archives, when present beside the project
WEIGHTS_DIR = ROOT / "weights"
FIGURES_DIR = ROOT / "figures"
INPUT_SIZE = 128

TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MOON_HINT = ("the course's MOON_SEGMENTATION_BINARY archive (or Kaggle's 'Artificial Lunar Rocky Landscape "
             "Dataset' by Romain Pessia)")


# ----------------------------------------------------------------------------------------------------
# 1. Errors and small utilities
# ----------------------------------------------------------------------------------------------------
class DataError(ValueError):
    """A problem with the data on disk; the message names the path and says how to fix it."""


class CheckpointError(ValueError):
    """A checkpoint that is not ours, is damaged, or does not fit the model it should build."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


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


# ----------------------------------------------------------------------------------------------------
# 1b. Compute precision: decided once per device, in this one place
# ----------------------------------------------------------------------------------------------------
PRECISIONS = ("bf16", "fp16", "fp32")
PRECISION_ENV = "HW_PRECISION"      # "auto" (default), "bf16", "fp16" (CUDA only) or "fp32"
BF16_MIN_SPEEDUP = 1.2              # the probe keeps bf16 only where it is at least this much faster than fp32:
# well below what it prints where bf16 is native and far above where it is emulated, so neither a busy machine nor
# the probe's noise flips the choice (benchmarks/precision_layout.py times the real models: benchmarks/layout/*.json)


@dataclass(frozen=True)
class Precision:
    """How the training step computes on a device. name: 'bf16' / 'fp16' autocast or plain 'fp32';
    channels_last: the memory layout of the model and its inputs; reason: why, in words."""
    device: str
    name: str
    channels_last: bool
    reason: str

    def autocast(self):
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=torch.bfloat16 if self.name == "bf16" else torch.float16)

    def scaler(self):
        """A gradient scaler, enabled for fp16 only (bf16 has fp32's exponent range and needs none)."""
        return torch.amp.GradScaler(self.device if self.device == "cuda" else "cpu", enabled=self.name == "fp16")

    @property
    def memory_format(self):
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def evaluation(self):
        """The same layout in fp32: predictions and reported metrics are computed in fp32 on every machine."""
        return Precision(self.device, "fp32", self.channels_last, "evaluation in fp32")


def cpu_flags():
    """The CPU's feature flags that decide speed here (Linux; an empty set elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    return set(line.split(":", 1)[-1].split()) & {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile",
                                                  "bf16", "asimd", "sve"}


def cpu_name():
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16():
    """Whether this CPU computes bf16 natively: oneDNN says so (it honours an ONEDNN_MAX_CPU_ISA cap) and, where
    the flags can be read, they name a bf16 instruction set (AVX-512 BF16, AMX, Arm's BF16)."""
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):      # a torch build without oneDNN (some ARM builds)
        onednn = False
    flags = cpu_flags()
    return onednn and (not flags or bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}))


def machine(device=None):
    """The machine a number was measured on, in words: the GPU's name, or the CPU's model, threads and the
    features that decide its speed. Written into checkpoints, timings and benchmark results."""
    device = torch.device(device or default_device())
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU (MPS), {platform.machine()}"
    isa = torch.backends.cpu.get_cpu_capability()
    capped = ", ".join(f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(k))
    return (f"{cpu_name()}, {torch.get_num_threads()} threads, {isa}, "
            f"{'native bf16' if native_bf16() else 'no native bf16'}" + (f" (capped: {capped})" if capped else ""))


def _timed(fn, reps=3):
    fn()                                    # warm-up: the kernels for these shapes
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _probe_cpu():
    """Seconds of one 3x3 convolution step (64 -> 64 channels, 8 x 32 x 32, forward and backward, channels_last) in
    fp32 and under bf16 autocast; well under a second in all. A private generator: no random state moves."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, 32, 32, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    w = (torch.randn(64, 64, 3, 3, generator=g) * 0.05).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out = {}
    for dt in ("fp32", "bf16"):
        def step():         # enable_grad: the first decision may come from inside a no_grad evaluation
            with torch.enable_grad():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dt == "bf16"):
                    y = F.conv2d(x, w, padding=1)
                y.float().square().mean().backward()
        out[dt] = _timed(step)
    return out


@functools.lru_cache(maxsize=None)
def _decide(device_type, requested):
    if device_type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "fp16" or (requested == "auto" and not bf16_ok):
            return Precision("cuda", "fp16", True, ("asked for" if requested == "fp16" else "this GPU has no bf16:") +
                             " fp16 autocast with a gradient scaler")
        if requested == "bf16" and not bf16_ok:
            raise ValueError(f"{torch.cuda.get_device_name()} has no bf16; use 'fp16', 'fp32' or 'auto'")
        if requested == "fp32":
            return Precision("cuda", "fp32", True, "asked for: fp32")
        return Precision("cuda", "bf16", True, "asked for" if requested == "bf16" else "the GPU supports bf16")
    if device_type != "cpu":
        if requested not in ("auto", "fp32"):
            raise ValueError(f"precision {requested!r} is not supported on {device_type}; use 'fp32' or 'auto'")
        return Precision(device_type, "fp32", False, f"fp32 on {device_type}")
    if requested == "fp16":
        raise ValueError("fp16 autocast is for CUDA GPUs; on a CPU use 'bf16', 'fp32' or 'auto'")
    # channels_last on every CPU: it trained both models faster in fp32 and in bf16, with and without native bf16
    # (benchmarks/layout/*.json, from benchmarks/precision_layout.py); a one-convolution probe cannot judge it
    if requested != "auto":
        return Precision("cpu", requested, True, f"asked for: {requested}")
    if not native_bf16():
        return Precision("cpu", "fp32", True, "the CPU has no native bf16 (emulated, it would be many times slower)")
    t = _probe_cpu()
    speedup = t["fp32"] / t["bf16"]
    if speedup >= BF16_MIN_SPEEDUP:
        return Precision("cpu", "bf16", True, f"the CPU has native bf16; a probe measured it {speedup:.1f}x faster than fp32")
    return Precision("cpu", "fp32", True, f"the CPU reports native bf16, but a probe measured it only {speedup:.1f}x "
                                          f"as fast as fp32 (< {BF16_MIN_SPEEDUP}x)")


def _evaluation_precision(device):
    """fp32 in the memory layout that is faster on `device` (predictions and reported metrics)."""
    return compute_precision(device, "fp32", verbose=False).evaluation()


def compute_precision(device=None, precision=None, verbose=True):
    """The training step's precision on `device`: precision 'bf16' / 'fp16' / 'fp32' forces one, None or 'auto'
    follows the environment variable HW_PRECISION, else decides: on CUDA bf16 where the GPU has it, else fp16 with
    a gradient scaler; on a CPU bf16 only where it is native (its flags) and a short timed probe confirms it is at
    least BF16_MIN_SPEEDUP x faster than fp32, else fp32; MPS fp32. channels_last everywhere but on MPS. Decided
    once per process, device and request (the first call prints the choice and why); a Precision passes through."""
    if isinstance(precision, Precision):
        return precision
    device = torch.device(device or default_device())
    requested = precision if precision not in (None, "auto") else os.environ.get(PRECISION_ENV, "auto") or "auto"
    if requested not in PRECISIONS + ("auto",):
        raise ValueError(f"precision must be one of {PRECISIONS} or 'auto', not {requested!r} "
                         f"(from {'the argument' if precision not in (None, 'auto') else PRECISION_ENV})")
    first = _decide.cache_info().currsize
    p = _decide(device.type, requested)
    if verbose and _decide.cache_info().currsize > first:
        print(f"precision on {device.type}: {p.name}{', channels_last' if p.channels_last else ''} ({p.reason})")
    return p


def environment():
    """Versions, device and machine, recorded in every checkpoint and shown in the notebooks."""
    import torchvision
    dev = default_device()
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "device": dev.type, "machine": machine(dev),
            "threads": torch.get_num_threads()}


def count_params(model, trainable_only=False):
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _progress(iterable, enabled, **kw):
    """A progress bar (a widget in Jupyter); none in a headless run (HW_STATIC_WIDGETS, see `browse`), whose
    notebook keeps the printed lines instead."""
    if not enabled or os.environ.get("HW_STATIC_WIDGETS"):
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, **kw)


# ----------------------------------------------------------------------------------------------------
# 2. Data
# ----------------------------------------------------------------------------------------------------
IMAGE_EXTS = {".jpeg", ".jpg", ".png"}


def pil_to_rgb(im):
    """PIL image of any mode -> HxWx3 uint8 array; transparent parts of RGBA/LA/palette images become black."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", im.size, (0, 0, 0))
        bg.paste(rgba, mask=rgba.split()[-1])
        im = bg
    return np.asarray(im.convert("RGB"))


def _open_rgb(path_or_file, what="image"):
    """Decode an image fully into an RGB numpy array; grayscale, palette and RGBA images become RGB."""
    try:
        with Image.open(path_or_file) as im:
            im.load()
            return pil_to_rgb(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read {what} {path_or_file}: {e}. The file is truncated or not an image; "
                        f"delete it or unpack the dataset again.") from e


def resize(x, size):
    """The one resize of the project: bilinear with antialiasing on float tensors (N,C,H,W)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x.float()
    return F.interpolate(x.float(), size=size, mode="bilinear", antialias=True, align_corners=False)


def to_uint8(x):
    return x.round().clamp_(0, 255).to(torch.uint8)


def _resize_uint8(arr, size):
    """HxWx3 uint8 array -> 3xSxS uint8 tensor with `resize`."""
    x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)[None]
    return to_uint8(resize(x, size))[0]


def _unpack_zip(zip_path):
    """Unpack an archive once into data/<name>/ (a marker file says it finished) and return that folder."""
    zip_path = Path(zip_path)
    if not zipfile.is_zipfile(zip_path):
        raise DataError(f"{zip_path} is not a zip archive (damaged download?). Download it again.")
    dest = DATA_DIR / zip_path.stem
    marker = dest / ".unpacked"
    stamp = f"{zip_path.resolve()} {zip_path.stat().st_size}"
    if marker.exists() and marker.read_text() == stamp:
        return dest
    print(f"unpacking {zip_path} -> {dest} (once)")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(dest)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"cannot unpack {zip_path}: {e}. The archive is damaged; download it again.") from e
    marker.write_text(stamp)
    return dest


def _locate(root, marker, name, hint):
    """Find the dataset folder (the one containing `marker`) in root, in a zip, or one/two levels below."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{name} not found at {root}. Get it from {hint} and pass the folder or the zip.")
    if root.is_file():
        root = _unpack_zip(root)
    for cand in [root, *sorted(root.glob("*")), *sorted(root.glob("*/*"))]:
        if cand.is_dir() and (cand / marker).exists():
            return cand
    raise DataError(f"{root} does not look like {name}: no '{marker}' inside it (or one or two levels below). "
                    f"Expected the official layout; get the data from {hint}.")


def _cache_path(kind, key):
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return DATA_DIR / "cache" / f"{kind}-{digest}.pt"


def _source_key(folder, files):
    """Identify the source by its path and the names/sizes/mtimes of its files."""
    h = hashlib.sha1()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)};".encode())
    return {"folder": str(Path(folder).resolve()), "files": h.hexdigest()}


def _cached(kind, key, build):
    path = _cache_path(kind, key)
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a damaged cache is rebuilt, never trusted
            path.unlink()
    obj = build()
    atomic_write(path, lambda p: torch.save(obj, p))
    return obj


def _decode_all(paths, decode, desc, progress=True):
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as ex:
        return list(_progress(ex.map(decode, paths), progress and len(paths) > 500,
                              total=len(paths), desc=desc, leave=False))


@dataclass
class ImageSet:
    """Classification data held in memory: images uint8 (N,3,64,64), labels int64 (N,),
    classes = wnids in label order, names = human-readable names (from words.txt)."""
    images: torch.Tensor
    labels: torch.Tensor
    classes: list
    names: list

    def __len__(self):
        return len(self.labels)

    def subset(self, idx):
        idx = torch.as_tensor(idx)
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.names)


@dataclass
class MaskSet:
    """Segmentation data held in memory: images uint8 (N,3,S,S), masks uint8 (N,1,S,S) of 0/1,
    ids = frame numbers, orig_size = (W,H) of the frames on disk."""
    images: torch.Tensor
    masks: torch.Tensor
    ids: list
    orig_size: tuple = (0, 0)

    def __len__(self):
        return len(self.masks)

    def subset(self, idx):
        idx = torch.as_tensor(idx)
        return MaskSet(self.images[idx], self.masks[idx], [self.ids[i] for i in idx.tolist()], self.orig_size)

    @property
    def coverage(self):
        return self.masks.float().mean(dim=(1, 2, 3))


def download(url, dest):
    """Download url to dest (atomically); offline or on an HTTP error, a DataError that says what to do."""
    import urllib.request
    dest = Path(dest)
    if dest.exists():
        return dest
    print(f"downloading {url} -> {dest}")
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            atomic_write(dest, lambda p: Path(p).write_bytes(r.read()))
    except OSError as e:
        raise DataError(f"cannot download {url} ({e}). Without internet, copy the file to {dest} by hand "
                        f"(or pass the folder/zip you have as data_dir).") from e
    return dest


def find_dataset(name, data_dir=None):
    """Where the notebooks look: data_dir (if given), data/, then ../shared/data (the course archives)."""
    cands = {"tiny": ["tiny-imagenet-200", "tiny-imagenet-200.zip", "tiny-imagenet-200-train100",
                      "tiny-imagenet-200-train100.zip"],
             "moon": ["MOON_SEGMENTATION_BINARY", "MOON_SEGMENTATION_BINARY.zip",
                      "MOON_SEGMENTATION_BINARY-800", "MOON_SEGMENTATION_BINARY-800.zip"]}[name]
    for base in ([Path(data_dir)] if data_dir else []) + [DATA_DIR, SHARED_DATA]:
        for c in cands:
            if (base / c).exists():
                return base / c
    return None


def _tiny_classes(folder, classes):
    wnids_file = folder / "wnids.txt"
    wnids = [w.strip() for w in wnids_file.read_text().split() if w.strip()]
    if classes is None:
        chosen = wnids
    elif isinstance(classes, int):
        if classes < 1 or classes > len(wnids):
            raise DataError(f"asked for {classes} classes but {wnids_file} lists {len(wnids)}. "
                            f"Choose at most {len(wnids)}.")
        chosen = wnids[:classes]
    else:
        chosen = list(classes)
        unknown = [c for c in chosen if c not in wnids]
        if unknown:
            raise DataError(f"classes {unknown[:5]} are not listed in {wnids_file}.")
    names = {}
    words = folder / "words.txt"
    if words.exists():
        for line in words.read_text(encoding="utf-8", errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            names[wnid] = text.split(",")[0].strip()
    return chosen, [names.get(c, c) for c in chosen]


def read_tiny_imagenet(root, classes=None, split="train", size=64, progress=True):
    """Read Tiny ImageNet-200 (official layout) into an `ImageSet`.

    root: the dataset folder (with wnids.txt), a folder above it, or the zip.
    classes: None (all of wnids.txt), N (the first N of wnids.txt) or a list of wnids.
    split: "train" (train/<wnid>/images/*.JPEG) or "val" (val/images + val/val_annotations.txt).
    Images are kept at their native 64x64 (any other size is resized to it); the model input is brought to
    128x128 on the batch (see `BatchAugment` and `model_input`), so memory holds 4x less.
    """
    folder = _locate(root, "wnids.txt", "Tiny ImageNet-200", TINY_URL)
    chosen, names = _tiny_classes(folder, classes)
    label_of = {w: i for i, w in enumerate(chosen)}
    files, labels = [], []
    if split == "train":
        for w in chosen:
            d = folder / "train" / w / "images"
            if not d.is_dir():
                raise DataError(f"class folder {d} is missing (wnids.txt lists {w}). Unpack the dataset again "
                                f"or choose classes that exist.")
            imgs = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS)
            if not imgs:
                raise DataError(f"class folder {d} holds no images. Unpack the dataset again.")
            files += imgs
            labels += [label_of[w]] * len(imgs)
    elif split == "val":
        ann = folder / "val" / "val_annotations.txt"
        if not ann.exists():
            raise DataError(f"{ann} is missing: the official val split needs val/images and val_annotations.txt.")
        for line in ann.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] in label_of:
                p = folder / "val" / "images" / parts[0]
                if not p.exists():
                    raise DataError(f"{ann} names {parts[0]}, but {p} does not exist. Unpack the dataset again.")
                files.append(p)
                labels.append(label_of[parts[1]])
        if not files:
            raise DataError(f"{ann} names no image of the chosen classes.")
    else:
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")

    key = {"source": _source_key(folder, files), "classes": chosen, "split": split, "size": size}

    def build():
        arrs = _decode_all(files, lambda f: _resize_uint8(_open_rgb(f), size), f"decoding {split}", progress)
        return {"images": torch.stack(arrs), "labels": torch.tensor(labels, dtype=torch.int64)}

    data = _cached("tiny", key, build)
    return ImageSet(data["images"], data["labels"], chosen, names)


def _mask_from_array(arr, path):
    """Grayscale 0/255 (or 0/1) masks, or the original RGB convention (red sky, green small rocks,
    blue large rocks, black ground) -> bool rock mask."""
    if arr.ndim == 3 and arr.shape[2] >= 3 and not (np.array_equal(arr[..., 0], arr[..., 1])
                                                      and np.array_equal(arr[..., 1], arr[..., 2])):
        rgb = arr[..., :3].astype(np.int16)
        hi = rgb >= 128
        pure = (np.abs(rgb - np.where(hi, 255, 0)) <= 60).all(-1)      # every channel near 0 or 255
        one_hot = hi.sum(-1) <= 1                                       # black, red, green or blue
        if not (pure & one_hot).mean() > 0.99:
            raise DataError(f"mask {path} is RGB but not the dataset's colour convention "
                            f"(black ground, red sky, green/blue rocks). Use 0/255 masks or the original ones.")
        return hi[..., 1] | hi[..., 2]
    g = arr if arr.ndim == 2 else arr[..., 0]
    values = np.unique(g)
    if set(values.tolist()) <= {0, 255}:
        return g == 255
    if set(values.tolist()) <= {0, 1}:
        return g == 1
    raise DataError(f"mask {path} has values {values[:8].tolist()}... but a binary mask holds only 0 and 255 "
                    f"(or 0 and 1). Re-export the masks or use the course's binarised set.")


def read_moon(root, size=INPUT_SIZE, progress=True):
    """Read MOON_SEGMENTATION_BINARY (images/render/renderNNNN.png + images/ground/groundNNNN.png) into a
    `MaskSet` at size x size.

    Whole frames are resized (not cropped) to size x size with `resize`, so every output pixel maps to a
    known region of the frame whatever its size (360x240 here, 720x480 originals): the 3:2 frame is squeezed
    horizontally by 1.5. Masks are resized as area fractions and thresholded at 0.5.
    A mask of another size than its render is resized to the render's size first (with a warning).
    """
    folder = _locate(root, "images/render", "the moon set (MOON_SEGMENTATION_BINARY)", MOON_HINT)
    rdir, gdir = folder / "images" / "render", folder / "images" / "ground"
    if not gdir.is_dir():
        raise DataError(f"{gdir} is missing: every render needs its mask in images/ground/groundNNNN.png.")
    num = lambda p, pre: p.stem[len(pre):]
    renders = {num(p, "render"): p for p in rdir.iterdir()
               if p.suffix.lower() in IMAGE_EXTS and p.stem.startswith("render")}
    grounds = {num(p, "ground"): p for p in gdir.iterdir()
               if p.suffix.lower() in IMAGE_EXTS and p.stem.startswith("ground")}
    if not renders:
        raise DataError(f"{rdir} holds no renderNNNN.png files.")
    if set(renders) - set(grounds):
        k = sorted(set(renders) - set(grounds))[0]
        raise DataError(f"render {renders[k]} has no mask {gdir}/ground{k}.png. Restore the mask or remove "
                        f"the render.")
    if set(grounds) - set(renders):
        k = sorted(set(grounds) - set(renders))[0]
        raise DataError(f"mask {grounds[k]} has no render {rdir}/render{k}.png. Restore the render or remove "
                        f"the mask.")
    ids = sorted(renders)
    files = [renders[i] for i in ids] + [grounds[i] for i in ids]
    key = {"source": _source_key(folder, files), "size": size}

    def decode(i):
        img = _open_rgb(renders[i], "render")
        try:
            with Image.open(grounds[i]) as m:
                m.load()
                marr = np.asarray(m.convert("RGB") if m.mode in ("P", "RGBA", "LA", "CMYK") else m)
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot read mask {grounds[i]}: {e}. Unpack the dataset again.") from e
        mask = _mask_from_array(marr, grounds[i])
        if mask.shape != img.shape[:2]:
            print(f"warning: mask {grounds[i].name} is {mask.shape[1]}x{mask.shape[0]} but its render is "
                  f"{img.shape[1]}x{img.shape[0]}; resizing the mask to the render")
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(
                (img.shape[1], img.shape[0]), Image.BILINEAR)) >= 128
        m = resize(torch.from_numpy(mask.astype(np.float32))[None, None], size)[0] >= 0.5
        return _resize_uint8(img, size), m.to(torch.uint8), (img.shape[1], img.shape[0])

    def build():
        out = _decode_all(ids, decode, "decoding moon frames", progress)
        return {"images": torch.stack([o[0] for o in out]), "masks": torch.stack([o[1] for o in out]),
                "orig_size": torch.tensor(out[0][2])}

    data = _cached("moon", key, build)
    return MaskSet(data["images"], data["masks"], [int(i) if i.isdigit() else i for i in ids],
                   tuple(data["orig_size"].tolist()))


def stratified_split(strata, val_fraction=0.1, seed=0):
    """Stratified train/val indices (scikit-learn, fixed seed)."""
    from sklearn.model_selection import train_test_split
    strata = np.asarray(strata)
    idx = np.arange(len(strata))
    tr, va = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=strata)
    return np.sort(tr), np.sort(va)


def coverage_bins(coverage, n_bins=5):
    """Quantile bins of rock coverage, the strata of the moon split."""
    cov = np.asarray(coverage, dtype=np.float64)
    edges = np.quantile(cov, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, cov, side="right")


# --- synthetic stand-ins in the same on-disk layouts ------------------------------------------------
def _synthetic_class_image(rng, k, n_classes, size=64):
    """Class k: a hue and a stripe orientation of its own, with random phase, noise and brightness."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = math.pi * k / n_classes
    freq = 3 + (k % 3) * 2
    phase = rng.uniform(0, 2 * math.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
    hue = k / n_classes
    base = np.array([0.5 + 0.5 * math.cos(2 * math.pi * (hue + s)) for s in (0, 1 / 3, 2 / 3)], np.float32)
    img = base[None, None] * (0.4 + 0.6 * stripes[..., None]) * rng.uniform(0.7, 1.1)
    img += rng.normal(0, 0.06, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_synthetic_tiny_imagenet(root, n_classes=10, n_train=50, n_val=10, seed=0):
    """Write a small Tiny-ImageNet-shaped dataset (train + val with val_annotations.txt) into `root`.
    Classes differ in hue and stripe orientation, so a small CNN can learn them apart; every 9th image is
    grayscale, as ~2% of the real ones are. Deterministic for a seed. Returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    wnids = [f"n9{k:07d}" for k in range(n_classes)]
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "val" / "images").mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tsynthetic class {k}, stripes\n" for k, w in enumerate(wnids)))

    def save(arr, path, i):
        im = Image.fromarray(arr)
        (im.convert("L") if i % 9 == 4 else im).save(path, quality=90)

    ann = []
    for k, w in enumerate(wnids):
        d = root / "train" / w / "images"
        d.mkdir(parents=True, exist_ok=True)
        boxes = []
        for i in range(n_train):
            save(_synthetic_class_image(rng, k, n_classes), d / f"{w}_{i}.JPEG", i)
            boxes.append(f"{w}_{i}.JPEG\t0\t0\t63\t63")
        (root / "train" / w / f"{w}_boxes.txt").write_text("\n".join(boxes) + "\n")
        for i in range(n_val):
            name = f"val_{k * n_val + i}.JPEG"
            save(_synthetic_class_image(rng, k, n_classes), root / "val" / "images" / name, i)
            ann.append(f"{name}\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    return root


def _smooth_noise(rng, h, w, cells):
    """Low-frequency noise in [0,1]: random values on a coarse grid, upsampled bicubically."""
    small = rng.random((cells, max(2, cells * w // h))).astype(np.float32)
    t = F.interpolate(torch.from_numpy(small)[None, None], size=(h, w), mode="bicubic", align_corners=False)
    return t[0, 0].clamp(0, 1).numpy()


def make_synthetic_moon(root, n=40, size=(720, 480), seed=0):
    """Write procedural lunar scenes in the moon set's layout (images/render, images/ground) into `root`:
    a dark sky band, shaded regolith with texture, rocks of many sizes lit from one side with shadows;
    the ground masks mark the rocks (0/255). Deterministic for a seed. Returns root."""
    root = Path(root)
    w, h = size
    (root / "images" / "render").mkdir(parents=True, exist_ok=True)
    (root / "images" / "ground").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(1, n + 1):
        horizon = rng.uniform(0.1, 0.3) * h
        ground = 0.35 + 0.25 * _smooth_noise(rng, h, w, 6) + 0.1 * _smooth_noise(rng, h, w, 40)
        ground *= 0.6 + 0.4 * (yy / h)                                  # darker towards the horizon
        img = np.repeat(ground[..., None], 3, axis=2) * np.array([1.0, 0.97, 0.92], np.float32)
        mask = np.zeros((h, w), bool)
        light = rng.uniform(0, 2 * math.pi)
        lx, ly = math.cos(light), math.sin(light)
        n_rocks = rng.integers(8, 30)
        for _ in range(n_rocks):
            cy = rng.uniform(horizon + 5, h)
            depth = (cy - horizon) / (h - horizon)                       # nearer rocks look bigger
            r = float(np.clip(rng.lognormal(math.log(6 + 30 * depth), 0.5), 2, h / 4))
            cx = rng.uniform(0, w)
            ry = r * rng.uniform(0.5, 0.9)
            dx, dy = (xx - cx) / r, (yy - cy) / ry
            d2 = dx * dx + dy * dy
            shadow = ((xx - cx + lx * r * 0.8) / r) ** 2 + ((yy - cy + ly * ry * 0.8) / ry) ** 2 < 1.2
            img[shadow & ~mask] *= 0.35
            rock = d2 < 1
            shade = np.clip(0.55 + 0.45 * (-dx * lx - dy * ly) + 0.15 * _smooth_noise(rng, h, w, 30), 0.1, 1.2)
            img[rock] = (shade[rock, None] * rng.uniform(0.6, 0.9)) * np.array([1.0, 0.98, 0.95], np.float32)
            mask |= rock
        sky = yy < horizon + 4 * np.sin(xx / w * rng.uniform(3, 9) * math.pi)
        img[sky] = 0.03 + 0.02 * rng.random((int(sky.sum()), 1))
        mask &= ~sky
        img = np.clip(img + rng.normal(0, 0.015, img.shape), 0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(root / "images" / "render" / f"render{i:04d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "images" / "ground" / f"ground{i:04d}.png")
    return root


# ----------------------------------------------------------------------------------------------------
# 3. Augmentation on batches of tensors
# ----------------------------------------------------------------------------------------------------
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(x, mean, std):
    """float 0..255 (N,3,H,W) -> normalised float."""
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1) * 255
    return (x - m) / s


@dataclass
class AugmentConfig:
    """Per-sample random parameters; one affine grid per sample carries crop, flips, rotation together."""
    scale: tuple = (0.35, 1.0)      # area fraction of the random resized crop
    ratio: tuple = (3 / 4, 4 / 3)   # aspect ratio of the crop
    hflip: bool = True
    vflip: bool = False
    rotate: float = 0.0             # max degrees
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3

    @classmethod
    def none(cls):
        """No augmentation at all (the training batch is the validation input)."""
        return cls(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False, vflip=False, rotate=0.0, brightness=0.0,
                   contrast=0.0, saturation=0.0)


class BatchAugment:
    """Augments a uint8 batch (N,3,h,w) [+ mask (N,1,h,w)] into float (N,3,S,S) [+ (N,1,S,S)] on its device.

    Geometry: random resized crop + flips + rotation as one affine matrix per sample, applied with a single
    `grid_sample` (bilinear) to the image and the mask (mask re-thresholded at 0.5), so both move together.
    Colour: brightness, contrast and saturation factors per sample, vectorised.
    """

    def __init__(self, cfg: AugmentConfig, out_size=INPUT_SIZE):
        self.cfg, self.out_size = cfg, out_size
        self.identity = cfg == AugmentConfig.none()

    def _theta(self, n, gen, device):
        c = self.cfg
        u = lambda: torch.rand(n, generator=gen)
        area = c.scale[0] + (c.scale[1] - c.scale[0]) * u()
        log_r = math.log(c.ratio[0]) + (math.log(c.ratio[1]) - math.log(c.ratio[0])) * u()
        r = torch.exp(log_r)
        sx = torch.sqrt(area * r).clamp(max=1.0)          # half-extent of the crop in [-1,1] coordinates
        sy = torch.sqrt(area / r).clamp(max=1.0)
        tx = (1 - sx) * (2 * u() - 1)
        ty = (1 - sy) * (2 * u() - 1)
        ang = (2 * u() - 1) * math.radians(c.rotate)
        fx = torch.where(u() < 0.5, -1.0, 1.0) if c.hflip else torch.ones(n)
        fy = torch.where(u() < 0.5, -1.0, 1.0) if c.vflip else torch.ones(n)
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.stack([torch.stack([sx * cos * fx, -sx * sin * fy, tx], 1),
                             torch.stack([sy * sin * fx, sy * cos * fy, ty], 1)], 1)
        return theta.to(device)

    def _colour(self, x, gen):
        c, n = self.cfg, x.shape[0]
        f = lambda a: (1 + (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1) * a).to(x.device)
        x = x * f(c.brightness)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * f(c.contrast) + mean
        gray = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = (x - gray) * f(c.saturation) + gray
        return x.clamp_(0, 255)

    def __call__(self, x, mask=None, gen=None):
        n, s = x.shape[0], self.out_size
        if self.identity and x.shape[-1] == s:        # nothing to do
            return x.float() if mask is None else (x.float(), mask.float())
        theta = self._theta(n, gen, x.device)
        grid = F.affine_grid(theta, (n, 1, s, s), align_corners=False)
        img = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        img = self._colour(img, gen)
        if mask is None:
            return img
        m = F.grid_sample(mask.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return img, (m >= 0.5).float()


def model_input(x, size=INPUT_SIZE):
    """Validation-time geometry: the whole image resized to size x size (float 0..255)."""
    return resize(x, size)


# ----------------------------------------------------------------------------------------------------
# 4. Models
# ----------------------------------------------------------------------------------------------------
def conv_bn(cin, cout, k=3, stride=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Conv-BN-ReLU-Conv-BN plus identity (or 1x1 stride-s projection) shortcut, then ReLU."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, 1, act=False))
        self.short = (nn.Identity() if stride == 1 and cin == cout
                      else conv_bn(cin, cout, 1, stride, act=False))

    def forward(self, x):
        return F.relu(self.body(x) + self.short(x), inplace=True)


def flip_tta(fn, x, spatial):
    """Test-time augmentation: the mean of fn(x) and fn(horizontally flipped x), the latter flipped back when
    the output is a map (spatial=True)."""
    f = fn(x.flip(-1))
    return (fn(x) + (f.flip(-1) if spatial else f)) / 2


class FlipTTA:
    """Mixin of the project's models: `logits(x)` is the network; `tta` (saved in the checkpoint's meta) makes
    the eval-mode forward average over the horizontal flip; `spatial` says whether the output is a map."""
    spatial = False

    def infer(self, x, tta):
        return flip_tta(self.logits, x, self.spatial) if tta else self.logits(x)

    def forward(self, x):
        return self.infer(x, self.tta and not self.training)


class StagedEncoder(nn.Module):
    """An encoder made of `self.stages`; returns every stage's output (shallow to deep)."""

    def forward(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class ClassifierEncoder(StagedEncoder):
    """The classifier's convolutional stages. `stages[i]` maps stage i-1's output to stage i's;
    `out_channels[i]` and `strides[i]` describe each stage's output (smp-style), so a U-Net can reuse them.

    stem: 128x128 inputs are 64x64 images upscaled, so the stem goes to 64x64 at once with a stride-2 conv
    (no information is lost, and every later stage costs 4x less than at 128x128).
    block: "basic" stages are ResNet-like (a stride-2 `BasicBlock`, then `blocks[i] - 1` more); "plain" stages are
    built like the plain U-Net's levels (`unet_level`: a 2x2 max-pool and a double Conv-BN-ReLU, then
    `blocks[i] - 1` more double convs), at the same strides.
    """

    def __init__(self, widths=(32, 64, 128, 256, 384), blocks=(1, 1, 2, 1, 1), block="basic"):
        super().__init__()
        if block not in ("basic", "plain"):
            raise ValueError(f"block must be 'basic' or 'plain', not {block!r}")
        self.widths, self.blocks = tuple(widths), tuple(blocks)
        stages = [nn.Sequential(conv_bn(3, widths[0], 3, 2),
                                *[BasicBlock(widths[0], widths[0]) for _ in range(blocks[0] - 1)])]
        for i in range(1, len(widths)):
            if block == "basic":
                first, more = BasicBlock(widths[i - 1], widths[i], 2), BasicBlock
            else:
                first, more = unet_level(widths[i - 1], widths[i], pool=True), partial(unet_level, pool=False)
            stages.append(nn.Sequential(first, *[more(widths[i], widths[i]) for _ in range(blocks[i] - 1)]))
        self.stages = nn.ModuleList(stages)
        self.out_channels = list(widths)
        self.strides = [2 ** (i + 1) for i in range(len(widths))]


class Classifier(FlipTTA, nn.Module):
    """Own ResNet-like CNN for 128x128x3: encoder stages, then global average pooling, dropout, linear.
    block="plain" builds the stages like the plain U-Net's levels instead (see `ClassifierEncoder`)."""

    def __init__(self, num_classes, widths=(32, 64, 128, 256, 384), blocks=(1, 1, 2, 1, 1), dropout=0.1,
                 block="basic"):
        super().__init__()
        self.config = {"arch": "classifier", "num_classes": num_classes, "widths": list(widths),
                       "blocks": list(blocks), "dropout": dropout}
        if block != "basic":        # only when set, so the configs of committed classifiers stay valid
            self.config["block"] = block
        self.encoder = ClassifierEncoder(widths, blocks, block)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(widths[-1], num_classes))
        self.tta = False     # in eval mode, average over the horizontal flip (stored in the checkpoint's meta)

    def logits(self, x):
        return self.head(self.encoder(x)[-1])


def full_res_widths(full_res):
    """`backbone_unet`'s full_res as a list of level widths: 0 -> [], w -> [w], (w1, w2, ...) -> [w1, w2, ...]."""
    return ([full_res] if isinstance(full_res, int) else list(full_res)) if full_res else []


def unet_level(cin, cout, pool):
    """One level of the plain U-Net's encoder: a 2x2 max-pool (except at full resolution), then a double
    Conv-BN-ReLU."""
    return nn.Sequential(*([nn.MaxPool2d(2)] if pool else []), conv_bn(cin, cout), conv_bn(cout, cout))


class UNetEncoder(StagedEncoder):
    """The plain U-Net encoder: a double Conv-BN-ReLU at full resolution, then 4 levels each downsampled
    by 2x2 max-pooling followed by a double conv. Outputs at strides 1, 2, 4, 8, 16."""

    def __init__(self, widths=(32, 64, 128, 160, 192)):
        super().__init__()
        self.widths = tuple(widths)
        cins = (3,) + self.widths[:-1]
        self.stages = nn.ModuleList(unet_level(c, w, pool=i > 0) for i, (c, w) in enumerate(zip(cins, self.widths)))
        self.out_channels = list(widths)
        self.strides = [2 ** i for i in range(len(widths))]



class AdaptedEncoder(nn.Module):
    """A classifier's encoder with 1x1 Conv-BN-ReLU adapters that bring each stage to the decoder's widths.
    full_res adds a trainable high-resolution branch on the input itself, built like the first levels of the
    plain U-Net (`unet_level`): an int w is one double Conv-BN-ReLU of width w, a stride-1 skip (the classifier's
    first stage is already at stride 2), so the decoder's last level sees full-resolution detail; a tuple
    (w1, w2, ...) adds max-pooled levels at strides 2, 4, ... whose outputs are concatenated with the adapted
    classifier stage of the same stride.
    upsample > 1 feeds the classifier a bilinearly upscaled input: its stages then sit at strides
    2/upsample, 4/upsample, ... of the input, so with 2 they start at full resolution, and the input looks like
    the 64->128 px upscaled images the classifier was trained on.
    lowpass=True feeds the classifier the input averaged over 2x2 pixels and upscaled back (bilinear): as soft as
    the 64->128 px images it was trained on, at no extra cost; the high-resolution branch still sees the input itself.
    Freezing touches only the classifier's stages; the adapters and the high-resolution branch always train.
    feature_dropout > 0 drops whole channels of the adapted classifier features while training (Dropout2d)."""

    def __init__(self, backbone: ClassifierEncoder, widths, full_res=0, upsample=1, feature_dropout=0.0,
                 lowpass=False):
        super().__init__()
        if lowpass and upsample != 1:
            raise ValueError("lowpass and upsample are two ways to match the classifier's input: use one of them")
        self.backbone, self.upsample, self.lowpass = backbone, upsample, lowpass
        self.adapters = nn.ModuleList(conv_bn(c, w, 1) for c, w in zip(backbone.out_channels, widths))
        self.drop = nn.Dropout2d(feature_dropout) if feature_dropout else nn.Identity()
        full = full_res_widths(full_res)
        if len(full) > 1 and (upsample != 1 or len(full) > len(widths)):
            raise ValueError("a high-resolution branch of several levels needs upsample=1 and at most one "
                             "level per classifier stage")
        self.full = unet_level(3, full[0], pool=False) if full else None
        self.down = nn.ModuleList(unet_level(a, b, pool=True) for a, b in zip(full, full[1:]))
        out = list(widths)
        for i, w in enumerate(full[1:]):         # branch level i+1 (stride 2**(i+1)) joins classifier stage i
            out[i] += w
        self.out_channels = full[:1] + out
        self.strides = ([1] if full else []) + [s // upsample for s in backbone.strides]

    def forward(self, x):
        if self.lowpass:
            xb = F.interpolate(F.avg_pool2d(x, 2), size=x.shape[-2:], mode="bilinear", align_corners=False)
        elif self.upsample != 1:
            xb = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        else:
            xb = x
        feats = [self.drop(a(f)) for a, f in zip(self.adapters, self.backbone(xb))]
        if self.full is None:
            return feats
        hr = [self.full(x)]
        for level in self.down:
            hr.append(level(hr[-1]))
        return hr[:1] + [torch.cat([f, h], 1) for f, h in zip(feats, hr[1:])] + feats[len(hr) - 1:]


class UNetDecoder(nn.Module):
    """One decoder for both U-Nets (smp-style): from the deepest feature up, each step interpolates to the
    next skip's size (x2 when strides differ by 2; any mismatch is absorbed), concatenates it and applies a
    double Conv-BN-ReLU. A 1x1 head gives 1-channel logits, interpolated to the input size if the shallowest
    skip is not at full resolution."""

    def __init__(self, encoder_channels, decoder_channels):
        super().__init__()
        enc = list(encoder_channels)[::-1]           # deepest first
        blocks, cin = [], enc[0]
        for skip, cout in zip(enc[1:], decoder_channels):
            blocks.append(nn.Sequential(conv_bn(cin + skip, cout), conv_bn(cout, cout)))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, 1, 1)

    def forward(self, feats, out_size):
        feats = feats[::-1]
        x = feats[0]
        for block, skip in zip(self.blocks, feats[1:]):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        x = self.head(x)
        if x.shape[-2:] != out_size:
            x = F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)
        return x


class SegmentationModel(FlipTTA, nn.Module):
    """Encoder + `UNetDecoder`; returns logits (N,1,H,W). Built by `unet()` or `backbone_unet()`."""
    spatial = True

    def __init__(self, encoder, decoder_channels, config):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.decoder = UNetDecoder(encoder.out_channels, decoder_channels)
        self.encoder_frozen = False
        self.encoder_stats_frozen = False   # TrainConfig.encoder_bn="frozen": the stages train, their BN statistics don't
        self.tta = False     # in eval mode, average over the horizontal flip (stored in the checkpoint's meta)

    def logits(self, x):
        return self.decoder(self.encoder(x), x.shape[-2:])

    # Freezing: only a backbone encoder can be frozen (the classifier's stages).
    def _frozen_part(self):
        return getattr(self.encoder, "backbone", self.encoder)

    def freeze_encoder(self):
        """Stop gradients into the classifier's stages and keep their BatchNorm statistics fixed."""
        for p in self._frozen_part().parameters():
            p.requires_grad_(False)
        self.encoder_frozen = True
        return self.train(self.training)

    def unfreeze_encoder(self):
        for p in self._frozen_part().parameters():
            p.requires_grad_(True)
        self.encoder_frozen = False
        return self.train(self.training)

    def train(self, mode=True):
        super().train(mode)
        if self.encoder_frozen or self.encoder_stats_frozen:
            self._frozen_part().eval()   # its BatchNorm statistics stay fixed even after model.train()
        return self

    def encoder_parameters(self):
        return list(self._frozen_part().parameters())


def unet(widths=(32, 64, 128, 160, 192), decoder=(128, 64, 32, 16)):
    """The base U-Net: 4 max-pool levels down, 4 up, skips at every level, base width 32."""
    cfg = {"arch": "unet", "widths": list(widths), "decoder": list(decoder)}
    return SegmentationModel(UNetEncoder(widths), decoder, cfg)


def backbone_unet(classifier_config, adapters=None, decoder=None, full_res=0, upsample=1, stages=None,
                  feature_dropout=0.0, lowpass=False):
    """A U-Net whose encoder is a classifier's stages (strides 2..32) with 1x1 adapters and the same decoder
    as `unet`. Without `full_res` the decoder ends at stride 2 and is interpolated to full size; with it, a
    full-resolution skip feeds one more decoder level (the default `decoder` (128, 96, 64, 32) then gets a
    last width of 16; an explicit one needs a width per level). upsample=2 runs the
    classifier's stages on a 2x upscaled input instead (strides 1..16, no full-resolution block needed; see
    `AdaptedEncoder`). stages=n keeps only the classifier's first n stages (4: down to stride 16, like the plain
    U-Net); the default adapters (32, 64, 96, 128, 192) and decoder are cut to match. feature_dropout: Dropout2d on
    the adapted classifier features; lowpass: the classifier sees a softened input (both: see `AdaptedEncoder`).
    Load the classifier's weights with `load_backbone`."""
    cls_cfg = {k: v for k, v in classifier_config.items()}
    n = stages or len(cls_cfg["widths"])
    if not 2 <= n <= len(cls_cfg["widths"]):
        raise ValueError(f"stages must be 2..{len(cls_cfg['widths'])} (the classifier's stages), not {stages}")
    backbone = ClassifierEncoder(cls_cfg["widths"][:n], cls_cfg["blocks"][:n], cls_cfg.get("block", "basic"))
    if adapters is None:
        adapters = (32, 64, 96, 128, 192)[:n]
    if len(adapters) != n:
        raise ValueError(f"adapters need one width per classifier stage ({n}), got {len(adapters)}")
    encoder = AdaptedEncoder(backbone, adapters, full_res, upsample, feature_dropout, lowpass)
    if decoder is None:
        decoder = (128, 96, 64, 32)[5 - n:] + ((16,) if full_res else ())
    if len(decoder) != len(encoder.out_channels) - 1:
        raise ValueError(f"the decoder needs {len(encoder.out_channels) - 1} widths for this encoder, "
                         f"got {len(decoder)}")
    cfg = {"arch": "backbone_unet", "classifier": cls_cfg, "adapters": list(adapters), "decoder": list(decoder),
           "full_res": full_res, "upsample": upsample}
    # the options below enter the config only when set, so the configs (and run keys) of committed models stay valid
    if stages:
        cfg["stages"] = n
    if feature_dropout:
        cfg["feature_dropout"] = feature_dropout
    if lowpass:
        cfg["lowpass"] = True
    return SegmentationModel(encoder, decoder, cfg)


def load_backbone(seg_model, classifier):
    """Copy a trained classifier's encoder weights into a backbone U-Net (the head is dropped)."""
    n = len(seg_model.encoder.backbone.stages)       # a backbone U-Net may use only the first stages
    state = {k: v for k, v in classifier.encoder.state_dict().items() if int(k.split(".")[1]) < n}
    try:
        seg_model.encoder.backbone.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"the classifier's stages do not fit this backbone U-Net (built for another "
                              f"classifier configuration): {str(e).splitlines()[0]}") from e
    return seg_model


def load_branch(seg_model, unet_model):
    """Copy a trained base U-Net's upper levels into a backbone U-Net's high-resolution branch, which is built
    like them (`unet_level`): the branch starts from what the base U-Net learned instead of random weights."""
    enc = seg_model.encoder
    if getattr(enc, "full", None) is None:
        raise CheckpointError("this backbone U-Net has no high-resolution branch (backbone_unet(full_res=...))")
    branch, stages = [enc.full, *enc.down], unet_model.encoder.stages
    if len(branch) > len(stages):
        raise CheckpointError(f"the branch has {len(branch)} levels, the base U-Net only {len(stages)}")
    for level, stage in zip(branch, stages):
        try:
            level.load_state_dict(stage.state_dict())
        except RuntimeError as e:
            raise CheckpointError(f"the base U-Net's levels (widths {unet_model.config['widths']}) do not fit this "
                                  f"branch (full_res {seg_model.config['full_res']}): {str(e).splitlines()[0]}") from e
    return seg_model


def cost_kind(config, frozen=False):
    """The key of a segmentation model's measured per-epoch cost in experiments/cpu_costs.json (`sweep.py cost`):
    'unet', or 'bb_frozen' / 'bb_tuned' plus '_full' (one full-resolution level), '_hr<w1>_<w2>...' (a branch of
    several levels), '_up2' (2x upscaled encoder input), '_s<n>' (the classifier's first n stages only); lowpass adds
    two cheap interpolations and no key. config: a model's `config`, or backbone_unet keywords."""
    if config.get("arch") == "unet":
        return "unet"
    fr = full_res_widths(config.get("full_res"))
    return ("bb_frozen" if frozen else "bb_tuned") + ("_full" if len(fr) == 1 else "") + \
        ("_hr" + "_".join(map(str, fr)) if len(fr) > 1 else "") + ("_up2" if config.get("upsample", 1) == 2 else "") + \
        (f"_s{config['stages']}" if config.get("stages") else "")


def build_model(config):
    """Rebuild any of the project's models from its `config` dict (stored in every checkpoint)."""
    config = dict(config)
    arch = config.pop("arch", None)
    if arch == "classifier":
        return Classifier(**config)
    if arch == "unet":
        return unet(**config)
    if arch == "backbone_unet":
        return backbone_unet(config["classifier"], config["adapters"], config["decoder"], config.get("full_res", 0),
                             config.get("upsample", 1), config.get("stages"), config.get("feature_dropout", 0.0),
                             config.get("lowpass", False))
    raise CheckpointError(f"unknown architecture {arch!r}")


# ----------------------------------------------------------------------------------------------------
# 5. Metrics
# ----------------------------------------------------------------------------------------------------
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
    tp, fp, fn, tn = c.unbind(1)
    div = lambda a, b: torch.where(b > 0, a / b.clamp(min=1), torch.ones_like(a))
    T = c.sum(0)
    out = {"iou": float(div(T[0], T[0] + T[1] + T[2])), "dice": float(div(2 * T[0], 2 * T[0] + T[1] + T[2])),
           "pixel_acc": float((T[0] + T[3]) / T.sum())}
    out["iou_per_image"] = float(div(tp, tp + fp + fn).mean())
    out["dice_per_image"] = float(div(2 * tp, 2 * tp + fp + fn).mean())
    return out


def per_image_iou(counts):
    c = counts.double()
    tp, fp, fn, _ = c.unbind(1)
    return torch.where(tp + fp + fn > 0, tp / (tp + fp + fn).clamp(min=1), torch.ones_like(tp))


def paired_bootstrap_iou(counts_a, counts_b, n=2000, seed=0, level=0.95):
    """How much the micro IoU difference b - a depends on which images the validation split happened to hold:
    both models' per-image counts (N,4) resampled with the same images n times. Returns the difference on the
    split itself and the central `level` interval of the resampled differences."""
    if counts_a.shape != counts_b.shape:
        raise ValueError("the two models must be scored on the same images")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(counts_a), (n, len(counts_a)), generator=g)
    iou = lambda c: c[..., 0] / (c[..., 0] + c[..., 1] + c[..., 2]).clamp(min=1)      # noqa: E731
    diffs = iou(counts_b.double()[idx].sum(1)) - iou(counts_a.double()[idx].sum(1))
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(diffs, q).tolist()
    return {"diff": float(iou(counts_b.double().sum(0)) - iou(counts_a.double().sum(0))), "low": lo, "high": hi}


def tolerant_scores(pred, target, radii=(0, 1, 2, 4)):
    """Where the errors are: precision, recall and F1 when a pixel within r pixels (a (2r+1)^2 square) counts
    as a hit. r = 0 gives the usual scores (F1 = micro Dice). An outline off by a pixel or two stops counting
    at r = 2..4; a rock missed or invented does not, so a gap between two models that stays as r grows is
    about what they detect, not about how finely they draw it. pred, target: (N,1,H,W) bool or 0/1."""
    p, t = pred.float(), (target > 0.5).float()
    near = lambda x, r: F.max_pool2d(x, 2 * r + 1, 1, r) if r else x   # noqa: E731
    out = {}
    for r in radii:
        prec = float((p * near(t, r)).sum()) / max(float(p.sum()), 1.0)
        rec = float((t * near(p, r)).sum()) / max(float(t.sum()), 1.0)
        out[f"F1 ±{r} px"] = 2 * prec * rec / max(prec + rec, 1e-12)
        if r in (radii[0], radii[-1]):
            out[f"precision ±{r} px"], out[f"recall ±{r} px"] = prec, rec
    return out


def topk_correct(logits, labels, ks=(1, 5)):
    """Number of samples whose label is among the top-k logits, for each k."""
    top = logits.topk(max(ks), dim=1).indices
    hit = top == labels[:, None]
    return {k: int(hit[:, :k].any(1).sum()) for k in ks}


# ----------------------------------------------------------------------------------------------------
# 6. Training: one `fit` for all four models
# ----------------------------------------------------------------------------------------------------
def dice_loss(logits, target, eps=1.0):
    p = torch.sigmoid(logits.float())
    inter = (p * target).sum((1, 2, 3))
    return (1 - (2 * inter + eps) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + eps)).mean()


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    optimizer: str = "adamw"           # "adamw" or "sgd"
    schedule: str = "onecycle"         # "onecycle" or "cosine"
    warmup: float = 0.15               # fraction of steps (one-cycle) / epochs of linear warm-up (cosine)
    label_smoothing: float = 0.1       # classification
    bce_weight: float = 1.0            # segmentation: loss = bce_weight * BCE + dice_weight * Dice
    dice_weight: float = 1.0
    threshold: float = 0.5             # segmentation metric threshold during training
    freeze_encoder_epochs: int = 0     # backbone U-Net: epochs with the encoder frozen (-1: always)
    encoder_lr_mult: float = 1.0       # backbone U-Net: encoder lr = lr * this
    encoder_sp: float = 0.0            # backbone U-Net: > 0 pulls the classifier's stages toward the weights they start
                                       # with (L2-SP, decoupled like AdamW's decay: w -= lr * encoder_sp * (w - w_start))
                                       # instead of decaying them toward zero
    encoder_bn: str = "train"          # backbone U-Net, encoder trainable: "train" or "frozen" (its BatchNorm
                                       # layers keep the running statistics they start with; weights still learn)
    ema: float = 0.0                   # > 0: validate and save an exponential moving average of the weights
                                       # with this decay per step (0 = the raw weights)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    max_steps_per_epoch: int = 0       # 0 = full epochs (tests and benchmarks cap it)
    min_size: int = 0                  # progressive resizing: the training input grows from min_size x min_size
    full_size_at: float = 0.0          # ... to INPUT_SIZE at this fraction of the epochs (0 = always full size)


def epoch_input_size(cfg: TrainConfig, epoch):
    """Progressive resizing: the side of the training crops in `epoch` (0-based), growing linearly from
    cfg.min_size in steps of 16 until cfg.full_size_at * epochs, then INPUT_SIZE. Validation is always at
    INPUT_SIZE, so the last epochs (at full size) also settle BatchNorm and the scale of features."""
    end = cfg.full_size_at * cfg.epochs
    if not cfg.min_size or epoch >= end:
        return INPUT_SIZE
    return int(cfg.min_size + (INPUT_SIZE - cfg.min_size) * epoch / end) // 16 * 16


class Task:
    """What differs between classification and segmentation: the loss, the metrics, the monitored metric."""
    monitor = ""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg


class ClassificationTask(Task):
    name, monitor = "classification", "val_top1"

    def batch(self, data, idx):
        return data.images[idx], data.labels[idx]

    def loss(self, out, y):
        return F.cross_entropy(out.float(), y, label_smoothing=self.cfg.label_smoothing)

    def start(self):
        self.n, self.top1, self.top5 = 0, 0, 0

    def update(self, out, y):
        self.n += len(y)
        c = topk_correct(out.float(), y, (1, min(5, out.shape[1])))
        self.top1 += c[1]
        self.top5 += c[min(5, out.shape[1])]

    def result(self):
        return {"top1": self.top1 / max(self.n, 1), "top5": self.top5 / max(self.n, 1)}


class SegmentationTask(Task):
    name, monitor = "segmentation", "val_iou"

    def batch(self, data, idx):
        return data.images[idx], data.masks[idx]

    def loss(self, out, y):
        c = self.cfg
        return (c.bce_weight * F.binary_cross_entropy_with_logits(out.float(), y)
                + c.dice_weight * dice_loss(out, y))

    def start(self):
        self.counts = []

    def update(self, out, y):
        self.counts.append(confusion_counts(out, y, self.cfg.threshold).cpu())

    def result(self):
        m = seg_metrics(torch.cat(self.counts))
        return {k: m[k] for k in ("iou", "dice", "pixel_acc")}


def make_task(data, cfg):
    return SegmentationTask(cfg) if isinstance(data, MaskSet) else ClassificationTask(cfg)


def _to_device(model, device, prec):
    return model.to(device).to(memory_format=prec.memory_format)


def _prepare(x, y, task, device, train, aug, gen, mean, std, fmt=torch.channels_last):
    """uint8 batch on `device` -> normalised float input (in memory format `fmt`) and float/long target."""
    x = x.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    if isinstance(task, SegmentationTask):
        if train:
            x, y = aug(x, y, gen)
        else:
            x, y = model_input(x), y.float()
    else:
        x = aug(x, gen=gen) if train else model_input(x)
    x = normalize(x, mean, std).contiguous(memory_format=fmt)
    return x, y


@torch.no_grad()
def predict(model, images, batch_size=256, device=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, tta=None,
            precision=None):
    """Logits (float32, on the CPU) for a uint8 batch (N,3,h,w) in validation geometry. tta: None uses the model's
    own setting (`model.tta`), True/False overrides it for this call. Computed in fp32 unless `precision` says
    otherwise, so reported metrics are the same on every machine."""
    device = device or next(model.parameters()).device
    prec = compute_precision(device, precision, verbose=False) if precision else _evaluation_precision(device)
    model.eval()
    fn = model if tta is None else lambda x: model.infer(x, tta)      # noqa: E731
    outs = []
    for i in range(0, len(images), batch_size):
        x = normalize(model_input(images[i:i + batch_size].to(device)), mean, std)
        with prec.autocast():
            outs.append(fn(x.contiguous(memory_format=prec.memory_format)).float().cpu())
    return torch.cat(outs)


@torch.no_grad()
def evaluate(model, data, task, batch_size=256, device=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, precision=None):
    """Validation loss and the task's metrics on a whole split; in fp32 unless `precision` says otherwise (`fit`
    validates each epoch in its training precision: those numbers only pick the best epoch)."""
    device = device or next(model.parameters()).device
    prec = compute_precision(device, precision, verbose=False) if precision else _evaluation_precision(device)
    model.eval()
    task.start()
    total, n = 0.0, 0
    for i in range(0, len(data), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(data)))
        x, y = _prepare(*task.batch(data, idx), task, device, False, None, None, mean, std, prec.memory_format)
        with prec.autocast():
            out = model(x)
        total += float(task.loss(out, y)) * len(idx)
        n += len(idx)
        task.update(out.float(), y)
    return {"loss": total / max(n, 1), **task.result()}


def _param_groups(model, cfg):
    """Weight decay on conv/linear weights only; a separate (lower-lr) group for a backbone encoder."""
    enc = {id(p) for p in (model.encoder_parameters() if hasattr(model, "encoder_parameters")
                           and hasattr(model.encoder, "backbone") else [])}
    groups = {}
    for p in model.parameters():
        key = ("enc" if id(p) in enc else "rest", p.dim() > 1)
        groups.setdefault(key, []).append(p)
    out = []
    for (part, decay), params in sorted(groups.items()):
        mult = cfg.encoder_lr_mult if part == "enc" else 1.0
        wd = cfg.weight_decay if decay and not (part == "enc" and cfg.encoder_sp) else 0.0
        out.append({"params": params, "weight_decay": wd, "lr_mult": mult, "part": part})
    return out


def _make_optimizer(model, cfg, steps_total):
    groups = _param_groups(model, cfg)
    for g in groups:
        g["lr"] = cfg.lr * g["lr_mult"]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', not {cfg.optimizer!r}")
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in groups], total_steps=steps_total, pct_start=cfg.warmup,
            div_factor=25, final_div_factor=1e3)
    elif cfg.schedule == "cosine":
        warm = max(1, int(cfg.warmup * steps_total))
        f = lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) /
                                                                          max(1, steps_total - warm)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
    else:
        raise ValueError(f"schedule must be 'onecycle' or 'cosine', not {cfg.schedule!r}")
    return opt, sched


# fields added after runs were committed: at their defaults they stay out of the run key, so those runs still match
_LATER_FIELDS = {"encoder_bn": "train", "ema": 0.0, "encoder_sp": 0.0}


def _config_dict(cfg):
    d = asdict(cfg)
    d.pop("max_steps_per_epoch", None)
    for k, default in _LATER_FIELDS.items():
        if d[k] == default:
            d.pop(k)
    return d


class EMA:
    """Exponential moving average of a model's weights and BatchNorm statistics (integer buffers are copied).
    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates, so early weights fade fast."""

    def __init__(self, model, decay):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, v in zip(self.model.state_dict().values(), model.state_dict().values()):
            if e.is_floating_point():
                e.lerp_(v, 1 - d)
            else:
                e.copy_(v)


@torch.no_grad()
def _pull_toward(groups, anchors, coef):
    """L2-SP's decoupled step: each parameter of `groups` moves toward its anchor (one list per group) by
    lr * coef of the distance, at most onto it."""
    for g, anchor in zip(groups, anchors):
        alpha = min(1.0, g["lr"] * coef)
        for p, a in zip(g["params"], anchor):
            p.sub_(p - a, alpha=alpha)


def train_step(model, x, y, task, opt, scaler, prec, check=None):
    """One optimisation step on a prepared batch in precision `prec`; returns the loss (detached). check(loss), when
    given, runs before anything is updated (fit stops on a non-finite loss there). `fit`, `estimate_fit_time` and
    benchmarks/train_speed.py all train through this one function."""
    with prec.autocast():
        out = model(x)
    loss = task.loss(out, y)
    if check is not None:
        check(loss)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss.detach()


def estimate_fit_time(model, train, val, cfg: TrainConfig, device=None, precision=None, first_epoch=0, steps=3,
                      mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Seconds that `fit` will take for epochs first_epoch..cfg.epochs on this machine, measured on a copy of
    `model`: its weights, the caller's optimiser and every random generator stay untouched (exact resume depends
    on them). Each kind of step the schedule has (the smallest and largest input side of progressive resizing,
    with the encoder frozen or not) is timed once, 1 warm-up + `steps` steps, their median (the warm-up alone where
    it says the whole run is under a minute: it is the slowest step); sides in between are interpolated by pixel count; one
    validation batch is timed and scaled to the split. Returns {"total_s", "epoch_s",
    "step_s": {"<side> px[, frozen]": seconds}}."""
    device = torch.device(device) if device else default_device()
    prec = compute_precision(device, precision, verbose=False)
    task = make_task(train, cfg)
    n_batches = len(train) // cfg.batch_size or 1
    if cfg.max_steps_per_epoch:
        n_batches = min(n_batches, cfg.max_steps_per_epoch)
    can_freeze = hasattr(model, "freeze_encoder")
    frozen_in = lambda e: can_freeze and (cfg.freeze_encoder_epochs < 0 or e < cfg.freeze_encoder_epochs)  # noqa: E731
    epochs = range(first_epoch, cfg.epochs)
    kinds = {(epoch_input_size(cfg, e), frozen_in(e)) for e in epochs}
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    step_s = {}
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        m = _to_device(copy.deepcopy(model), device, prec)
        opt, scaler = torch.optim.AdamW([p for p in m.parameters()], lr=1e-6), prec.scaler()
        gen = torch.Generator().manual_seed(0)
        for frozen in sorted({f for _, f in kinds}):
            if can_freeze:
                m.freeze_encoder() if frozen else m.unfreeze_encoder()
            m.train()
            sides = sorted(s for s, f in kinds if f == frozen)
            for side in {sides[0], sides[-1]}:
                aug = BatchAugment(cfg.augment, side)
                times = []
                for i in range(1 + steps):
                    t0 = time.perf_counter()
                    if i == 1 and times[0] * n_batches * len(epochs) < 60:     # short anyway: the warm-up is enough
                        break
                    idx = torch.randint(0, len(train), (min(cfg.batch_size, len(train)),), generator=gen)
                    x, y = _prepare(*task.batch(train, idx), task, device, True, aug, gen, mean, std,
                                    prec.memory_format)
                    train_step(m, x, y, task, opt, scaler, prec)
                    sync()
                    times.append(time.perf_counter() - t0)
                step_s[side, frozen] = float(np.median(times[1:] or times))
        n_val = min(len(val), 2 * cfg.batch_size)
        evaluate(m, val.subset(range(n_val)), task, device=device, mean=mean, std=std, precision=prec)   # warm-up
        t0 = time.perf_counter()
        evaluate(m, val.subset(range(n_val)), task, device=device, mean=mean, std=std, precision=prec)
        val_s = (time.perf_counter() - t0) * len(val) / n_val
    del m, opt

    def per_step(side, frozen):
        sides = sorted(s for s, f in step_s if f == frozen)
        lo, hi = sides[0], sides[-1]
        if lo == hi:
            return step_s[lo, frozen]
        w = (side ** 2 - lo ** 2) / (hi ** 2 - lo ** 2)
        return (1 - w) * step_s[lo, frozen] + w * step_s[hi, frozen]
    epoch_s = [n_batches * per_step(epoch_input_size(cfg, e), frozen_in(e)) + val_s for e in epochs]
    return {"total_s": float(sum(epoch_s)), "epoch_s": epoch_s,
            "step_s": {f"{s} px" + (", frozen" if f else ""): t for (s, f), t in sorted(step_s.items())}}


def fit(model, train, val, cfg: TrainConfig, out_dir, device=None, progress=True, callback=None,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, meta=None, retrain_finished=False, precision=None, estimate=False):
    """Train `model` on `train` (ImageSet or MaskSet), validate on `val` after every epoch.

    out_dir/last.pt   state after the last finished epoch (model, optimiser, schedule, history): written
                      atomically after every epoch; calling `fit` again with the same config resumes there
                      (a finished run is returned as it is, or trained anew with retrain_finished=True).
    out_dir/best.pt   the model at the best value of the monitored metric (val_top1 / val_iou), in the
                      checkpoint format of `load_checkpoint`.
    out_dir/history.csv  one row per epoch.
    With cfg.ema > 0 the moving average of the weights (`EMA`) is what is validated, saved as best.pt and left in
    `model` at the end; the raw weights go on training.
    Randomness (shuffling, augmentation) is drawn from generators seeded by (seed, epoch), so a resumed run
    repeats an uninterrupted one exactly on CPU. precision: see `compute_precision` (None decides per device); it is
    not part of the run key, so a run resumes on a machine that computes otherwise. estimate: before training,
    print the time the remaining epochs will take here (`estimate_fit_time`), and a string given here too when that
    is over five minutes; the estimate is stored in best.pt's meta. Returns the history as a pandas DataFrame.
    """
    import pandas as pd
    if cfg.encoder_bn not in ("train", "frozen"):
        raise ValueError(f"encoder_bn must be 'train' or 'frozen', not {cfg.encoder_bn!r}")
    if cfg.encoder_bn == "frozen" and not hasattr(model, "encoder_stats_frozen"):
        raise ValueError("encoder_bn='frozen' is for segmentation models (it keeps their encoder's BatchNorm "
                         f"statistics); {type(model).__name__} has no encoder to keep")
    device = torch.device(device) if device else default_device()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = make_task(train, cfg)
    prec = compute_precision(device, precision)
    seed_everything(cfg.seed)
    _to_device(model, device, prec)
    if device.type == "cuda":   # the whole dataset lives on the GPU as uint8 and is augmented there
        train = copy.copy(train)
        train.images = train.images.to(device)
        if isinstance(train, MaskSet):
            train.masks = train.masks.to(device)
        else:
            train.labels = train.labels.to(device)
    n_batches = len(train) // cfg.batch_size or 1
    if cfg.max_steps_per_epoch:
        n_batches = min(n_batches, cfg.max_steps_per_epoch)
    opt, sched = _make_optimizer(model, cfg, cfg.epochs * n_batches)
    scaler = prec.scaler()
    history, start_epoch, best = [], 0, -float("inf")
    run_key = json.loads(json.dumps({"train": _config_dict(cfg), "model": model.config,
                                     "n_train": len(train), "n_val": len(val)}))

    last = out_dir / "last.pt"
    for stale in out_dir.glob(".*.tmp*"):      # left by a process killed in the middle of a write
        stale.unlink()
    if last.exists():
        try:
            state = torch.load(last, map_location="cpu", weights_only=False)
        except Exception as e:
            raise CheckpointError(f"{last} is damaged ({e}); delete it to start this run from scratch.") from e
        finished = state.get("run_key") == run_key and state["epoch"] >= cfg.epochs
        if finished and retrain_finished:       # said whatever `progress` is: it decides what is returned
            print(f"{last} holds a finished run of this configuration: training anew")
        elif state.get("run_key") == run_key:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            history, start_epoch, best = state["history"], state["epoch"], state["best"]
            if finished:
                print(f"reusing the finished run in {out_dir}")
            elif progress:
                print(f"resuming from {last}: {start_epoch} of {cfg.epochs} epochs done")
        elif progress:
            print(f"{last} belongs to another configuration; starting afresh")
    if estimate and start_epoch < cfg.epochs:
        est = estimate_fit_time(model, train, val, cfg, device, prec, start_epoch, mean=mean, std=std)
        print(f"estimated training time on this machine ({machine(device)}; {prec.name}): "
              f"{est['total_s'] / 60:.1f} min for epochs {start_epoch + 1}-{cfg.epochs} (one step: " +
              ", ".join(f"{k} {v:.2f} s" for k, v in est["step_s"].items()) + ")", flush=True)
        if isinstance(estimate, str) and est["total_s"] > 300:
            print(estimate, flush=True)
        meta = {**(meta or {}), "estimated_train_s": est["total_s"]}
    ema = EMA(model, cfg.ema) if cfg.ema else None
    if ema is not None and start_epoch:
        ema.model.load_state_dict(state["ema"])
        ema.updates = state["ema_updates"]
    validated = ema.model if ema is not None else model     # the weights that are validated and saved
    enc_groups = [g for g in opt.param_groups if g["part"] == "enc"] if cfg.encoder_sp else []
    anchor = [[p.detach().clone() for p in g["params"]] for g in enc_groups]     # L2-SP: the starting weights
    if anchor and start_epoch:
        anchor = [[a.to(device) for a in group] for group in state["sp_anchor"]]

    if hasattr(model, "encoder_stats_frozen"):      # kept by the model's own train() (like a frozen encoder)
        model.encoder_stats_frozen = cfg.encoder_bn == "frozen"
    frozen_epochs = cfg.freeze_encoder_epochs if hasattr(model, "freeze_encoder") else 0
    for epoch in range(start_epoch, cfg.epochs):
        if frozen_epochs < 0 or epoch < frozen_epochs:
            model.freeze_encoder()
        elif hasattr(model, "unfreeze_encoder") and model.encoder_frozen:
            model.unfreeze_encoder()
        torch.manual_seed(cfg.seed * 100003 + epoch)             # dropout etc.
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        perm = torch.randperm(len(train), generator=gen)
        model.train()
        aug = BatchAugment(cfg.augment, epoch_input_size(cfg, epoch))
        t0, total, seen = time.time(), 0.0, 0
        bar = _progress(range(n_batches), progress, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for b in bar:
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x, y = _prepare(*task.batch(train, idx.to(train.images.device)), task, device, True, aug, gen,
                            mean, std, prec.memory_format)
            def finite(loss):
                if not torch.isfinite(loss):
                    kept = (f"the last good checkpoint ({last}, epoch {epoch}) is kept" if epoch else
                            "no epoch had finished, so there is no checkpoint")
                    raise TrainingError(f"the loss became {float(loss.detach())} in epoch {epoch + 1}, batch {b + 1}. "
                                        f"Lower the learning rate (now {cfg.lr}) or check the data; {kept}.")
            loss = train_step(model, x, y, task, opt, scaler, prec, check=finite)
            if anchor:
                _pull_toward(enc_groups, anchor, cfg.encoder_sp)
            sched.step()
            if ema is not None:
                ema.update(model)
            total += float(loss) * len(idx)
            seen += len(idx)
            if progress and b % 10 == 0 and hasattr(bar, "set_postfix"):     # no bar in a headless run
                bar.set_postfix(loss=f"{total / seen:.4f}")
        train_time = time.time() - t0
        val_metrics = evaluate(validated, val, task, device=device, mean=mean, std=std, precision=prec)
        row = {"epoch": epoch + 1, "train_loss": total / max(seen, 1),
               **{f"val_{k}": v for k, v in val_metrics.items()},
               "lr": opt.param_groups[-1]["lr"], "input_size": aug.out_size, "epoch_time_s": train_time,
               "images_per_s": seen / max(train_time, 1e-9)}
        history.append(row)
        improved = row[task.monitor] > best
        if improved:
            best = row[task.monitor]
            m = {"seed": cfg.seed, **(meta or {}), "precision": prec.name, "epoch": epoch + 1,
                 "metrics": {k: v for k, v in row.items() if k.startswith("val_")}}
            save_checkpoint(out_dir / "best.pt", validated, task=task.name, mean=mean, std=std, **m)
        atomic_write(out_dir / "history.csv", lambda p: pd.DataFrame(history).to_csv(p, index=False))
        state = {"run_key": run_key, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "history": history, "epoch": epoch + 1, "best": best}
        if ema is not None:
            state.update(ema=ema.model.state_dict(), ema_updates=ema.updates)
        if anchor:
            state["sp_anchor"] = anchor
        atomic_write(last, lambda p: torch.save(state, p))
        if progress:
            print(f"epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(
                f"{k}={v:.4f}" for k, v in row.items() if k.startswith(("train_loss", "val_"))) +
                f" ({train_time:.0f}s, {row['images_per_s']:.0f} img/s)" + (" *" if improved else ""))
        if callback is not None:
            callback(pd.DataFrame(history))
    if ema is not None:        # the model ends as the weights that were validated
        model.load_state_dict(ema.model.state_dict())
    model.eval()
    return pd.DataFrame(history)


# ----------------------------------------------------------------------------------------------------
# 7. Checkpoints: the contract other tools rely on
# ----------------------------------------------------------------------------------------------------
CHECKPOINT_FORMAT = "hw-unet-backbone/1"


def save_checkpoint(path, model, task, mean=IMAGENET_MEAN, std=IMAGENET_STD, **meta):
    """Self-describing checkpoint: architecture config + weights + meta (task, input size, normalisation,
    parameter count, metrics, classes or threshold, seed, versions). Written atomically."""
    meta = {"task": task, "input_size": INPUT_SIZE, "mean": list(mean), "std": list(std),
            "params": count_params(model), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            **environment(), **meta}
    if task == "segmentation":
        meta.setdefault("threshold", 0.5)
        meta.setdefault("source_size", INPUT_SIZE)
    else:
        meta.setdefault("source_size", 64)
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
        raise CheckpointError(f"checkpoint {path} does not exist; train the model first (run its notebook).")
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
    x = _resize_uint8(pil_to_rgb(pil_image), meta.get("source_size", meta["input_size"]))[None]
    return normalize(model_input(x, meta["input_size"]), meta["mean"], meta["std"])[0]


# ----------------------------------------------------------------------------------------------------
# 7b. Profiles and the notebooks' "train or reuse" step
# ----------------------------------------------------------------------------------------------------
PROFILES = {
    # synthetic data made by `common`: all three notebooks in under 3 minutes on 2 cores without native bf16
    # (it shows that the pipeline works, not the quality)
    "demo": {"classes": 10, "cls_epochs": 3, "cls_batch": 64, "cls_lr": 3e-3, "cls_min_size": 64, "cls_full_at": 0.6,
             "seg_epochs": 4, "seg_batch": 16, "seg_lr": 3e-3, "bb_epochs": 3, "bb_b_epochs": 2,
             "synthetic": {"n_classes": 10, "n_train": 40, "n_val": 10, "n_moon": 40, "moon_size": (360, 240)}},
    # the real data on 2 CPU cores, all three notebooks in about 90 minutes
    # classifier: 20 epochs with progressive resizing (64 -> 128 px until 85 % of them); what that costs against
    # epochs at 128 px is in the README's recipe-search table (experiments/sweep.py)
    "cpu": {"classes": 100, "cls_epochs": 20, "cls_batch": 128, "cls_lr": 3e-3, "cls_min_size": 64, "cls_full_at": 0.85,
            "seg_epochs": 40, "seg_batch": 16, "seg_lr": 3e-3, "bb_epochs": 20, "bb_b_epochs": 30},
    # all 200 classes and longer schedules on a CUDA GPU
    "gpu": {"classes": 200, "cls_epochs": 40, "cls_batch": 256, "cls_lr": 4e-3, "cls_min_size": 64, "cls_full_at": 0.85,
            "seg_epochs": 80, "seg_batch": 32, "seg_lr": 3e-3, "bb_epochs": 60, "bb_b_epochs": 60},
}


def resolve_profile(profile="auto", data_dir=None):
    """'auto' -> 'cpu' (or 'gpu' on CUDA) when the real data is found, else 'demo' (and says so)."""
    if profile != "auto":
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {list(PROFILES)} or 'auto', not {profile!r}")
        return profile
    found = (find_dataset("tiny", data_dir) is not None and find_dataset("moon", data_dir) is not None)
    if not found:
        print("The real data was not found (data/, ../shared/data or data_dir): running the 'demo' profile on "
              "synthetic stand-ins.")
        return "demo"
    return "gpu" if torch.cuda.is_available() else "cpu"


def load_datasets(kind, profile, data_dir=None, out_dir=ROOT, seed=0, progress=True):
    """The data of one notebook for a profile: real data, or synthetic stand-ins written under out_dir/data.
    kind 'tiny' -> (train, val, test_or_None, info); kind 'moon' -> (train, val, info)."""
    p = PROFILES[profile]
    if profile == "demo":
        syn = p["synthetic"]
        base = Path(out_dir) / "data" / "synthetic"
        if kind == "tiny":
            root = base / "tiny-imagenet-200"
            if not (root / "val" / "val_annotations.txt").exists():
                make_synthetic_tiny_imagenet(root, syn["n_classes"], syn["n_train"], syn["n_val"], seed)
        else:
            root = base / "MOON_SEGMENTATION_BINARY"
            if not (root / "images" / "ground" / f"ground{syn['n_moon']:04d}.png").exists():
                make_synthetic_moon(root, syn["n_moon"], syn["moon_size"], seed)
    else:
        root = find_dataset(kind, data_dir)
        if root is None:
            where = "Tiny ImageNet-200 (" + TINY_URL + ")" if kind == "tiny" else MOON_HINT
            raise DataError(f"the {profile!r} profile needs the real data: put {where} into "
                            f"{data_dir or DATA_DIR} or ../shared/data, or run the 'demo' profile.")
    info = {"root": str(root), "synthetic": profile == "demo", "profile": profile}
    if kind == "tiny":
        full = read_tiny_imagenet(root, classes=p["classes"], progress=progress)
        tr, va = stratified_split(full.labels.numpy(), 0.1, seed)
        folder = _locate(root, "wnids.txt", "Tiny ImageNet-200", TINY_URL)
        test = (read_tiny_imagenet(root, classes=full.classes, split="val", progress=progress)
                if (folder / "val" / "val_annotations.txt").exists() else None)
        return full.subset(tr), full.subset(va), test, info
    full = read_moon(root, progress=progress)
    tr, va = stratified_split(coverage_bins(full.coverage, 5), 0.2, seed)
    info["orig_size"] = list(full.orig_size)
    return full.subset(tr), full.subset(va), info


def _data_signature(train, val):
    h = hashlib.sha1()
    for t in (train.images, val.images):
        h.update(t[:: max(1, len(t) // 64)].numpy().tobytes())
    return {"n_train": len(train), "n_val": len(val), "sample_hash": h.hexdigest()[:16]}


def weights_digest(path):
    """A short SHA-256 of a checkpoint's weights (its state_dict, not its meta: `export_final` rewrites the meta
    of a checkpoint whose weights stay the same); identifies the checkpoint another model starts from."""
    return state_digest(torch.load(path, map_location="cpu", weights_only=False)["state_dict"])


def state_digest(state):
    """`weights_digest` of a state_dict in memory (a loaded model's `state_dict()` gives its checkpoint's)."""
    import hashlib
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


TRAIN_INSTEAD = ("Instead of waiting: train='auto' reuses the weights in weights/ when they were trained with this "
                 "configuration and data (the committed ones are, for the cpu profile); the 'gpu' profile trains on a "
                 "CUDA GPU (Colab); fewer epochs (epochs=) or classes (num_classes=, notebook 01) train faster. "
                 "Interrupting is safe: the next run resumes from the last finished epoch.")


def train_or_reuse(name, make_model, train, val, cfg, out_dir=ROOT, mode="auto", meta=None, callback=None,
                   progress=True, device=None, depends_on=(), precision=None):
    """The notebooks' training step. weights/<name>.pt is reused when it was trained with this exact
    configuration on this data (mode 'auto' or False), and from the same weights in `depends_on` (checkpoints
    that make_model loads weights from, e.g. the classifier); otherwise the model is trained (mode 'auto' or True),
    resuming an interrupted run from runs/<name>/last.pt, and its best epoch is exported to weights/<name>.pt
    with weights/<name>_history.csv beside it. Before training it prints how long that will take on this machine
    and what to do instead. precision: see `compute_precision`. Returns (model, history DataFrame, meta)."""
    import pandas as pd
    out_dir = Path(out_dir)
    wpath, hpath = out_dir / "weights" / f"{name}.pt", out_dir / "weights" / f"{name}_history.csv"
    model = make_model()
    key = {"train": _config_dict(cfg), "model": model.config, "data": _data_signature(train, val)}
    if depends_on:
        key["depends_on"] = {Path(p).name: weights_digest(p) for p in depends_on}
    key = json.loads(json.dumps(key))
    if mode in ("auto", False) and wpath.exists() and hpath.exists():
        loaded, m = load_checkpoint(wpath)
        if m.get("run_key") == key:
            print(f"reusing {wpath} (trained {m.get('created')}; machine: {m.get('machine', 'not recorded')}; "
                  f"precision: {m.get('precision', 'not recorded')}); set train=True to retrain")
            return loaded, pd.read_csv(hpath), m
        print(f"{wpath} was trained with another configuration or data: training anew")
    if mode is False:
        raise CheckpointError(f"no weights at {wpath} match this configuration; set train=True or 'auto'.")
    run_dir = out_dir / "runs" / name
    t0 = time.time()
    # train=True retrains a finished run in run_dir; 'auto' exports it; an interrupted run is continued either way
    history = fit(model, train, val, cfg, run_dir, device=device, progress=progress, callback=callback,
                  meta={**(meta or {}), "seed": cfg.seed}, retrain_finished=mode is True, precision=precision,
                  estimate=TRAIN_INSTEAD)
    best, m = load_checkpoint(run_dir / "best.pt")
    m = {**m, "run_key": key, "train_time_s": float(history["epoch_time_s"].sum()),
         "wall_time_s": time.time() - t0, "epochs": cfg.epochs}
    if cfg.freeze_encoder_epochs < 0 and hasattr(best, "encoder_parameters"):     # frozen for good
        m["trainable_params"] = count_params(best) - sum(p.numel() for p in best.encoder_parameters())
    else:
        m["trainable_params"] = count_params(best)
    atomic_write(hpath, lambda p: history.to_csv(p, index=False))
    save_checkpoint(wpath, best, **m)
    return best, history, m


def best_threshold(logits, masks, grid=np.arange(0.2, 0.81, 0.05)):
    """The probability threshold that maximises micro IoU on a split; returns (threshold, table)."""
    import pandas as pd
    rows = [{"threshold": round(float(t), 2), **seg_metrics(confusion_counts(logits, masks, float(t)))}
            for t in grid]
    table = pd.DataFrame(rows)
    return float(table.loc[table["iou"].idxmax(), "threshold"]), table


def classification_results(model, data, tta=None):
    """Validation logits and metrics of a classifier: top-1, top-5, per-class accuracy, confusion matrix."""
    logits = predict(model, data.images, tta=tta)
    n_cls = logits.shape[1]
    c = topk_correct(logits, data.labels, (1, min(5, n_cls)))
    pred = logits.argmax(1)
    conf = torch.zeros(n_cls, n_cls, dtype=torch.long)
    conf.index_put_((data.labels, pred), torch.ones_like(pred), accumulate=True)
    per_class = (conf.diag().float() / conf.sum(1).clamp(min=1)).numpy()
    return {"logits": logits, "pred": pred, "confusion": conf, "per_class": per_class,
            "metrics": {"top1": c[1] / len(pred), "top5": c[min(5, n_cls)] / len(pred), "n": len(pred)}}


def segmentation_results(model, data, threshold=None, tta=None):
    """Validation probabilities and metrics of a segmentation model. threshold=None chooses it on `data`
    (see `best_threshold`); the metrics are then reported at that threshold. tta as in `predict`. The metrics of
    every threshold of the grid are in "threshold_table" either way."""
    return segmentation_scores(predict(model, data.images, tta=tta), data.masks, threshold)


def segmentation_scores(logits, masks, threshold=None):
    """`segmentation_results` of logits already computed (e.g. of several models averaged)."""
    best, table = best_threshold(logits, masks)
    threshold = best if threshold is None else threshold
    counts = confusion_counts(logits, masks, threshold)
    return {"probs": torch.sigmoid(logits), "counts": counts, "threshold": threshold, "threshold_table": table,
            "iou_per_image": per_image_iou(counts), "metrics": {"threshold": threshold, **seg_metrics(counts)}}


def stored_threshold(meta):
    """The thresholds that a checkpoint's final metrics were reported at, {"tta": t, "no_tta": t}, for weights that
    `export_final` wrote (reused weights keep them: choosing again on another machine could move them); None for
    a model just trained, whose threshold is still to be chosen on validation."""
    m = meta.get("metrics") or {}
    if "threshold" not in m:
        return None
    return {"tta": m["threshold"], "no_tta": m.get("threshold_no_tta", m["threshold"])}


def export_final(name, model, meta, metrics, out_dir=ROOT):
    """Write the final metrics beside the weights (weights/<name>_metrics.json) and into the checkpoint."""
    out_dir = Path(out_dir)
    meta = {**meta, "metrics": metrics}
    if "threshold" in metrics:
        meta["threshold"] = metrics["threshold"]
    save_checkpoint(out_dir / "weights" / f"{name}.pt", model, **meta)
    summary = {"name": name, "params": meta["params"], "trainable_params": meta.get("trainable_params"),
               "train_time_s": meta.get("train_time_s"), "epochs": meta.get("epochs"),
               "profile": meta.get("profile"), "synthetic": meta.get("synthetic"), **metrics}
    save_json(summary, out_dir / "weights" / f"{name}_metrics.json")
    return summary


# ----------------------------------------------------------------------------------------------------
# 8. Plots and widgets
# ----------------------------------------------------------------------------------------------------
def to_hwc(x):
    """uint8 (3,H,W) tensor -> (H,W,3) array for imshow; anything else is returned as it is."""
    return x.permute(1, 2, 0).numpy().astype(np.uint8) if x.dtype == torch.uint8 else x


def plot_history(history, metrics, title="", path=None, marks=None):
    """Loss and metric curves per epoch from a history DataFrame; saved to `path` if given. marks: {x: label}
    draws a dotted vertical line with its label at each x (e.g. where the input size steps up)."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2))
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes, metrics):
        for col, style in ((m, "-o"), (f"val_{m}", "-s")):
            if col in history:
                ax.plot(history["epoch"], history[col], style, ms=3, label=col)
        if m == "loss" and "train_loss" in history:
            ax.plot(history["epoch"], history["train_loss"], "-o", ms=3, label="train_loss")
        for x, label in (marks or {}).items():
            ax.axvline(x, color="gray", ls=":", lw=1)
            ax.text(x, 1.0, f" {label}", transform=ax.get_xaxis_transform(), fontsize=7, color="gray",
                    rotation=90, va="top", ha="left")
        ax.set_xlabel("epoch")
        ax.set_title(m)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    if path:
        save_figure(fig, path)
    return fig


def formatted(df, formats=None, precision=None):
    """A DataFrame of display strings: formats maps a column to a format string ("{:.3f}") or a function;
    other float columns get `precision` decimals (or stay as they are). Unlike a pandas Styler, it shows in every
    export: HTML, plain text and (with `report_formats`) LaTeX."""
    import pandas as pd
    out = df.copy()
    for col in out.columns:
        f = (formats or {}).get(col)
        if f is None and precision is not None and pd.api.types.is_float_dtype(out[col]):
            f = f"{{:.{precision}f}}"
        if f is not None:
            fn = f.format if isinstance(f, str) else f
            out[col] = [fn(v) if v == v else "" for v in out[col]]       # NaN (v != v) shows empty
    return out


def latex_table(df):
    """A DataFrame as a LaTeX table (special characters escaped), shrunk to the page width when wider."""
    body = df.to_latex(escape=True)
    return "\\begin{center}\\adjustbox{max width=\\linewidth}{%\n" + body + "}\\end{center}\n"


def report_formats():
    """In a notebook kernel: every DataFrame also carries a LaTeX representation, so nbconvert's PDF (LaTeX)
    route prints tables as tables, not as text cut at the page edge. Does nothing outside IPython."""
    try:
        from IPython import get_ipython
        import pandas as pd
    except ImportError:
        return
    ip = get_ipython()
    if ip is not None:
        ip.display_formatter.formatters["text/latex"].for_type(pd.DataFrame, latex_table)


def save_figure(fig, path):
    path = Path(path)
    return atomic_write(path, lambda p: fig.savefig(p, dpi=110, bbox_inches="tight", format=path.suffix[1:]))


def show_images(images, titles=None, ncols=8, path=None, size=1.6):
    """A grid of uint8 (N,3,H,W) images with titles."""
    import matplotlib.pyplot as plt
    n = len(images)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(to_hwc(images[i]))
            if titles:
                ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    if path:
        save_figure(fig, path)
    return fig


def overlay_errors(image, pred, target):
    """RGB picture of a prediction against the truth: green = hit, red = false rock, blue = missed rock."""
    img = to_hwc(image).astype(np.float32) / 255 * 0.55
    p, t = pred.squeeze().numpy().astype(bool), target.squeeze().numpy().astype(bool)
    for mask, colour in ((p & t, (0, 1, 0)), (p & ~t, (1, 0, 0)), (~p & t, (0, 0.4, 1))):
        img[mask] = img[mask] * 0.4 + np.array(colour) * 0.6
    return np.clip(img, 0, 1)


def show_segmentation(images, masks, probs, threshold=0.5, titles=None, path=None):
    """Rows of (input, probability, prediction, ground truth, error overlay)."""
    import matplotlib.pyplot as plt
    n = len(images)
    fig, axes = plt.subplots(n, 5, figsize=(12, 2.5 * n), squeeze=False)
    heads = ["вход", "вероятность", "предсказание", "разметка", "ошибки (зел. верно, красн. лишнее, син. пропуск)"]
    for i in range(n):
        pred = probs[i] > threshold
        panels = [to_hwc(images[i]), probs[i].squeeze().numpy(), pred.squeeze().numpy(),
                  masks[i].squeeze().numpy(), overlay_errors(images[i], pred, masks[i])]
        for j, (ax, p) in enumerate(zip(axes[i], panels)):
            ax.imshow(p, cmap="gray" if j in (1, 2, 3) else None, vmin=0, vmax=1 if j in (1, 2, 3) else None)
            ax.axis("off")
            if i == 0:
                ax.set_title(heads[j], fontsize=8)
        if titles:
            axes[i][0].set_ylabel(titles[i])
            axes[i][0].text(2, 10, titles[i], color="yellow", fontsize=8, va="top")
    fig.tight_layout()
    if path:
        save_figure(fig, path)
    return fig


class LivePlot:
    """A callback for `fit` that redraws the curves after every epoch in a notebook, in place: the lines printed
    before (precision, time estimate) and the epochs' log stay visible."""

    def __init__(self, metrics, title=""):
        self.metrics, self.title, self.handle = metrics, title, None

    def __call__(self, history):
        import matplotlib.pyplot as plt
        from IPython.display import display
        fig = plot_history(history, self.metrics, self.title)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)


def caption(text):
    """A figure's caption under it, in every export (HTML, PDF)."""
    from IPython.display import Markdown, display
    display(Markdown(f"*{text}*"))


def browse(n, render, description="№"):
    """A slider over n items; render(i) draws item i. Returns the widget (or None without ipywidgets).
    In a headless run (run_all.py sets HW_STATIC_WIDGETS=1) no widget is built: nbclient, which papermill runs
    notebooks with, can wait forever on a cell that creates ipywidgets (jupyter/nbclient#312; seen here on a
    re-render), and a saved slider cannot move anyway; the static figure beside every slider is the report's."""
    if os.environ.get("HW_STATIC_WIDGETS"):
        print(f"(слайдер по {n} примерам работает при запуске в Jupyter; в отчёте — статичная версия ниже)")
        return None
    try:
        import ipywidgets as widgets
    except ImportError:
        print("(слайдер не построен: нет пакета ipywidgets — `pip install ipywidgets` и перезапуск ядра; "
              "статичная версия — ниже)")
        return None
    return widgets.interactive(render, i=widgets.IntSlider(min=0, max=max(n - 1, 0), step=1, value=0,
                                                         description=description, continuous_update=False))
