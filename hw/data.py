"""Data: readers of Tiny ImageNet-200 and the moon set (a folder or its zip, decoded once into uint8 tensors cached
under data/), the in-memory sets, stratified splits, and the train / val / test splits of each notebook."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .core import INPUT_SIZE, MOON_HINT, ROOT, TINY_URL, DataError, atomic_write, data_root, progress_bar, \
    shared_data, shown_path, tr
from .synthetic import make_synthetic_moon, make_synthetic_tiny_imagenet

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


def resize_uint8(arr, size):
    """HxWx3 uint8 array -> 3xSxS uint8 tensor with `resize`."""
    x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)[None]
    return to_uint8(resize(x, size))[0]


def _unpack_zip(zip_path):
    """Unpack an archive once into data/<name>/ (a marker file says it finished) and return that folder."""
    zip_path = Path(zip_path)
    if not zipfile.is_zipfile(zip_path):
        raise DataError(f"{zip_path} is not a zip archive (damaged download?). Download it again.")
    dest = data_root() / zip_path.stem
    marker = dest / ".unpacked"
    stamp = f"{zip_path.resolve()} {zip_path.stat().st_size}"
    if marker.exists() and marker.read_text() == stamp:
        return dest
    print(tr(f"unpacking {shown_path(zip_path)} -> {shown_path(dest)} (once)",
             f"распаковываю {shown_path(zip_path)} -> {shown_path(dest)} (один раз)"))
    # into a side folder moved into place whole, so no reader sees a half-unpacked folder; a folder there that this
    # code did not unpack (no marker) is unpacked over, as it is
    ours = marker.exists() or not dest.exists()
    target = dest.with_name(dest.name + ".unpacking") if ours else dest
    if ours:
        shutil.rmtree(target, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(target)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"cannot unpack {zip_path}: {e}. The archive is damaged; download it again.") from e
    (target / ".unpacked").write_text(stamp)
    if ours:
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(target, dest)
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


def tiny_folder(root):
    """The Tiny ImageNet-200 folder (the one with wnids.txt) in root, its zip, or one or two levels below."""
    return _locate(root, "wnids.txt", "Tiny ImageNet-200", TINY_URL)


def moon_folder(root):
    """The moon set's folder (the one with images/render) in root, its zip, or one or two levels below."""
    return _locate(root, "images/render", "the moon set (MOON_SEGMENTATION_BINARY)", MOON_HINT)


def _source_key(folder, files):
    """Identify the source by its path and the names/sizes/mtimes of its files."""
    h = hashlib.sha1()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)};".encode())
    return {"folder": str(Path(folder).resolve()), "files": h.hexdigest()}


def _cached(kind, key, build):
    """build() once per source and settings: the tensors are kept in data/cache/<kind>-<digest of key>.pt."""
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = data_root() / "cache" / f"{kind}-{digest}.pt"
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
        return list(progress_bar(ex.map(decode, paths), progress and len(paths) > 500,
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


# `MaskSet.broken`: the share of the lower half of a frame that is pure black, and the share of those black pixels
# that the mask marks as rock, from which a frame counts as broken
BROKEN_BLACK, BROKEN_ROCK = 0.5, 0.01


@dataclass
class MaskSet:
    """Segmentation data held in memory: images uint8 (N,3,S,S), masks uint8 (N,1,S,S) of 0/1,
    ids = frame numbers, orig_size = (W,H) of the frames on disk. `broken` marks renders that lost their ground."""
    images: torch.Tensor
    masks: torch.Tensor
    ids: list
    orig_size: tuple = (0, 0)

    def __len__(self):
        return len(self.masks)

    def subset(self, idx):
        idx = torch.as_tensor(idx)
        return MaskSet(self.images[idx], self.masks[idx], [self.ids[i] for i in idx.tolist()], self.orig_size)

    def join(self, other):
        """The frames of both sets, self's first."""
        return MaskSet(torch.cat([self.images, other.images]), torch.cat([self.masks, other.masks]),
                       self.ids + other.ids, self.orig_size)

    @property
    def coverage(self):
        return self.masks.float().mean(dim=(1, 2, 3))

    @property
    def broken(self):
        """Frames whose render lost its ground while the mask kept its rocks (frame 750 of the course's set is one):
        at least BROKEN_BLACK (half) of the lower half of the frame is pure black (0, 0, 0), and the mask marks rock on
        at least BROKEN_ROCK (1 %) of those black pixels. A real render is never pure black where the ground is
        (shadows keep some light); its sky, pure black, is in the upper part and holds no rock."""
        h = self.images.shape[-2] // 2
        black = (self.images[:, :, h:].amax(1) == 0).flatten(1)
        rock = self.masks[:, 0, h:].bool().flatten(1)
        n_black = black.sum(1)
        return (n_black >= BROKEN_BLACK * black.shape[1]) & ((black & rock).sum(1) >= BROKEN_ROCK * n_black)


DATASET_NAMES = {"tiny": ("tiny-imagenet-200", "tiny-imagenet-200-train100"),
                 "moon": ("MOON_SEGMENTATION_BINARY", "MOON_SEGMENTATION_BINARY-800")}
# Colab: a zip uploaded in the Files pane lands in /content; a mounted Google Drive is /content/drive/MyDrive
COLAB_PLACES = (Path("/content"), Path("/content/drive/MyDrive"), Path("/content/drive/MyDrive/data"))


def data_places(data_dir=None):
    """Where the notebooks look for an archive or its folder, in order: data_dir (if given), data/, ../shared/data,
    then Colab's upload folder and a mounted Google Drive (where they exist)."""
    return ([Path(data_dir)] if data_dir else []) + [data_root(), shared_data()] + [
        p for p in COLAB_PLACES if p.is_dir()]


def find_dataset(name, data_dir=None):
    """The first archive or folder of dataset `name` ("tiny" or "moon") in `data_places`, else None; in each place
    the zip comes before a folder of its name, so a folder left half unpacked is unpacked again."""
    return next((c for b in data_places(data_dir) for n in DATASET_NAMES[name] for c in (b / f"{n}.zip", b / n)
                 if c.exists()), None)


def missing_moon_error(data_dir=None):
    """The DataError of a notebook whose moon set is nowhere in `data_places` (the one archive the notebooks cannot
    download): exactly where to put it, in Russian in the notebooks."""
    places = ", ".join(dict.fromkeys([*([str(data_dir)] if data_dir else []), shown_path(data_root()),
                                      shown_path(shared_data()), *map(str, COLAB_PLACES[:2])]))
    return DataError(tr(
        "The moon set was not found. Put MOON_SEGMENTATION_BINARY.zip (or its unpacked folder, with images/render "
        f"and images/ground) into one of: {places}. In Colab: upload the zip in the Files pane (it lands in /content), "
        "or put it at the top of your Google Drive and mount the Drive (from google.colab import drive; "
        f"drive.mount('/content/drive')); then run the cell again. The archive: {MOON_HINT}.",
        "Набор MOON_SEGMENTATION_BINARY не найден. Положите архив MOON_SEGMENTATION_BINARY.zip (или его "
        f"распакованную папку с images/render и images/ground) в одно из мест: {places}. В Colab: загрузите zip "
        "через панель «Файлы» (он окажется в /content) или положите его в корень Google Диска и подключите Диск "
        "(from google.colab import drive; drive.mount('/content/drive')); затем запустите ячейку снова. Архив — "
        "MOON_SEGMENTATION_BINARY из материалов курса (или с Kaggle: «Artificial Lunar Rocky Landscape Dataset», "
        "Romain Pessia)."))


def _tiny_classes(folder, classes):
    """(wnids, names) of the classes: None (all), N (the first N of wnids.txt) or a list of wnids; a name is the
    first of words.txt's names of its wnid (the wnid where words.txt is missing)."""
    wnids_file, words = folder / "wnids.txt", folder / "words.txt"
    wnids = wnids_file.read_text().split()
    if isinstance(classes, int) and not 1 <= classes <= len(wnids):
        raise DataError(f"asked for {classes} classes but {wnids_file} lists {len(wnids)}. "
                        f"Choose at most {len(wnids)}.")
    chosen = wnids[:classes] if isinstance(classes, int) else list(classes or wnids)
    if unknown := [c for c in chosen if c not in wnids]:
        raise DataError(f"classes {unknown[:5]} are not listed in {wnids_file}.")
    lines = words.read_text(encoding="utf-8", errors="replace").splitlines() if words.exists() else []
    names = {w: text.split(",")[0].strip() for w, _, text in (ln.partition("\t") for ln in lines)}
    return chosen, [names.get(c, c) for c in chosen]


def read_tiny_imagenet(root, classes=None, split="train", size=64, progress=True):
    """Tiny ImageNet-200 (official layout: root, a folder above it, or the zip) as an `ImageSet` at its native
    64x64 (brought to 128x128 on the batch: 4x less memory). classes: see `_tiny_classes`; split: "train" or "val"
    (val/images with val_annotations.txt)."""
    folder = tiny_folder(root)
    chosen, names = _tiny_classes(folder, classes)
    label_of = {w: i for i, w in enumerate(chosen)}
    if split == "train":
        pairs = []          # (image file, wnid)
        for w in chosen:
            d = folder / "train" / w / "images"
            imgs = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS) if d.is_dir() else []
            if not imgs:
                raise DataError(f"class folder {d} is missing or holds no images (wnids.txt lists {w}). Unpack the "
                                f"dataset again or choose classes that exist.")
            pairs += [(p, w) for p in imgs]
    elif split == "val":
        ann = folder / "val" / "val_annotations.txt"
        if not ann.exists():
            raise DataError(f"{ann} is missing: the official val split needs val/images and val_annotations.txt.")
        rows = [ln.split("\t") for ln in ann.read_text().splitlines()]
        pairs = [(folder / "val" / "images" / r[0], r[1]) for r in rows if len(r) >= 2 and r[1] in label_of]
        if lost := [p for p, _ in pairs if not p.exists()]:
            raise DataError(f"{ann} names {lost[0].name}, but {lost[0]} does not exist. Unpack the dataset again.")
        if not pairs:
            raise DataError(f"{ann} names no image of the chosen classes.")
    else:
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    files, labels = [f for f, _ in pairs], [label_of[w] for _, w in pairs]
    key = {"source": _source_key(folder, files), "classes": chosen, "split": split, "size": size}

    def build():
        arrs = _decode_all(files, lambda f: resize_uint8(_open_rgb(f), size), f"decoding {split}", progress)
        return {"images": torch.stack(arrs), "labels": torch.tensor(labels, dtype=torch.int64)}

    data = _cached("tiny", key, build)
    return ImageSet(data["images"], data["labels"], chosen, names)


def _mask_from_array(arr, path):
    """An HxWx3 mask as `_open_rgb` reads it: grey 0/255 (or 0/1), or the original RGB convention (red sky, green
    small rocks, blue large rocks, black ground) -> bool rock mask."""
    if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])):
        rgb = arr.astype(np.int16)
        hi = rgb >= 128
        pure = (np.abs(rgb - np.where(hi, 255, 0)) <= 60).all(-1)      # every channel near 0 or 255
        one_hot = hi.sum(-1) <= 1                                       # black, red, green or blue
        if not (pure & one_hot).mean() > 0.99:
            raise DataError(f"mask {path} is RGB but not the dataset's colour convention "
                            f"(black ground, red sky, green/blue rocks). Use 0/255 masks or the original ones.")
        return hi[..., 1] | hi[..., 2]
    g = arr[..., 0]
    values = np.unique(g)
    if set(values.tolist()) <= {0, 255}:
        return g == 255
    if set(values.tolist()) <= {0, 1}:
        return g == 1
    raise DataError(f"mask {path} has values {values[:8].tolist()}... but a binary mask holds only 0 and 255 "
                    f"(or 0 and 1). Re-export the masks or use the course's binarised set.")


def read_moon(root, size=INPUT_SIZE, progress=True):
    """MOON_SEGMENTATION_BINARY (images/render/renderNNNN.png, images/ground/groundNNNN.png) as a `MaskSet`: whole
    frames resized (not cropped) to size x size, so the 3:2 frame is squeezed by 1.5; masks resized as area fractions
    and thresholded at 0.5 (a mask of another size than its render is first resized to it, with a warning)."""
    folder = moon_folder(root)
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
    for have, other, a, b in ((renders, grounds, "render", "mask"), (grounds, renders, "mask", "render")):
        if lone := sorted(set(have) - set(other)):
            raise DataError(f"{a} {have[lone[0]]} has no {b} (frame {lone[0]}). Restore the {b} or remove the {a}.")
    ids = sorted(renders)
    files = [renders[i] for i in ids] + [grounds[i] for i in ids]
    key = {"source": _source_key(folder, files), "size": size}

    def decode(i):
        img = _open_rgb(renders[i], "render")
        mask = _mask_from_array(_open_rgb(grounds[i], "mask"), grounds[i])
        if mask.shape != img.shape[:2]:
            print(f"warning: mask {grounds[i].name} is {mask.shape[1]}x{mask.shape[0]} but its render is "
                  f"{img.shape[1]}x{img.shape[0]}; resizing the mask to the render")
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(
                (img.shape[1], img.shape[0]), Image.BILINEAR)) >= 128
        m = resize(torch.from_numpy(mask.astype(np.float32))[None, None], size)[0] >= 0.5
        return resize_uint8(img, size), m.to(torch.uint8), (img.shape[1], img.shape[0])

    def build():
        out = _decode_all(ids, decode, "decoding moon frames", progress)
        return {"images": torch.stack([o[0] for o in out]), "masks": torch.stack([o[1] for o in out]),
                "orig_size": torch.tensor(out[0][2])}

    data = _cached("moon", key, build)
    return MaskSet(data["images"], data["masks"], [int(i) if i.isdigit() else i for i in ids],
                   tuple(data["orig_size"].tolist()))


def stratified_split(strata, test_size=0.1, seed=0):
    """Stratified (rest, drawn) indices (scikit-learn, fixed seed); test_size: a fraction, or a number of items."""
    from sklearn.model_selection import train_test_split
    strata = np.asarray(strata)
    idx = np.arange(len(strata))
    tr, va = train_test_split(idx, test_size=test_size, random_state=seed, stratify=strata)
    return np.sort(tr), np.sort(va)


def coverage_bins(coverage, n_bins=5):
    """Quantile bins of rock coverage, the strata of the moon split."""
    cov = np.asarray(coverage, dtype=np.float64)
    edges = np.quantile(cov, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, cov, side="right")


MOON_SELECTION_FILE = Path(__file__).with_name("moon_selection.json")


def moon_selection(path=MOON_SELECTION_FILE):
    """{group: frame ids} of the moon frames that served a choice so far (hw/moon_selection.json says where each
    group came from); the test split is never drawn from them."""
    return {g["name"]: g["ids"] for g in json.loads(Path(path).read_text())["groups"]}


def moon_splits(coverage, ids, test=0.2, val=0.15, exclude_from_test=(), seed=0):
    """Indices (train, val, test) of the moon frames, stratified by rock coverage (5 quantile bins over all frames),
    fixed seed. test: that fraction of all frames, drawn only from frames whose id is not in exclude_from_test; val:
    that fraction of all frames, drawn from everything left (excluded frames included); train: the rest."""
    strata = coverage_bins(coverage, 5)
    n = len(strata)
    n_test, n_val = int(np.ceil(test * n)), int(np.ceil(val * n))
    pool = np.flatnonzero(~np.isin(np.asarray(ids), np.asarray(list(exclude_from_test))))
    if len(pool) <= n_test:
        raise DataError(tr(f"only {len(pool)} of {n} moon frames served no earlier choice (hw/moon_selection.json): "
                           f"too few for a test split of {n_test} frames; at least {n_test + 1} are needed.",
                           f"только {len(pool)} из {n} кадров не участвовали в прежних выборах (hw/moon_selection.json):"
                           f" для test из {n_test} кадров нужно не меньше {n_test + 1}."))
    _, te = stratified_split(strata[pool], n_test, seed)
    rest = np.setdiff1d(np.arange(n), pool[te])
    fit_i, val_i = stratified_split(strata[rest], n_val, seed)
    return rest[fit_i], rest[val_i], pool[te]


# ---------------------------------------------------------------------------------------------------- a notebook's data
MOON_TEST, MOON_VAL = 0.2, 0.15      # fractions of all moon frames in the test and validation splits
# the smallest sets the splits take: 40 moon frames (5 coverage strata in each of test, val and train); 10 images of
# each class (the 10 % val split then holds one of each)
MIN_MOON_FRAMES, MIN_IMAGES_PER_CLASS = 40, 10


def _check_size(n, minimum, what_en, what_ru):
    if n < minimum:
        raise DataError(tr(f"{what_en}: {n}, too few to split into train / val / test; at least {minimum} are needed.",
                           f"{what_ru}: {n} — слишком мало для разбиения на train / val / test; нужно не меньше "
                           f"{minimum}."))


def load_datasets(kind, synthetic=None, data_dir=None, out_dir=ROOT, seed=0, progress=True, classes=100):
    """(train, val, test, info) of one notebook: the real data, or the demo's stand-ins of sizes `synthetic` (written
    under out_dir/data). tiny: a stratified 90/10 split of the train images; test = the official val images of the
    classes (None where the archive has none). moon: `moon_splits` (test only from frames that served no choice,
    hw/moon_selection.json); broken frames (`MaskSet.broken`) leave train only; info counts them."""
    if synthetic:
        base = Path(out_dir) / "data" / "synthetic"
        if kind == "tiny":
            root = base / "tiny-imagenet-200"
            if not (root / "val" / "val_annotations.txt").exists():
                make_synthetic_tiny_imagenet(root, synthetic["n_classes"], synthetic["n_train"], synthetic["n_val"],
                                             seed)
        else:
            root = base / "MOON_SEGMENTATION_BINARY"
            if not (root / "images" / "ground" / f"ground{synthetic['n_moon']:04d}.png").exists():
                make_synthetic_moon(root, synthetic["n_moon"], synthetic["moon_size"], seed,
                                    broken=synthetic["broken"])
    else:
        root = find_dataset(kind, data_dir)
        if root is None and kind == "tiny":         # the one archive with a public address: fetched once
            from .download import download, tiny_imagenet_archive
            root = download(tiny_imagenet_archive(), data_root(), progress)
        if root is None:
            raise missing_moon_error(data_dir)
    info = {"root": shown_path(root), "synthetic": bool(synthetic)}
    if kind == "tiny":
        full = read_tiny_imagenet(root, classes=classes, progress=progress)
        counts = np.bincount(full.labels.numpy(), minlength=len(full.classes))
        _check_size(int(counts.min()), MIN_IMAGES_PER_CLASS, f"images of class {full.classes[counts.argmin()]}",
                    f"изображений класса {full.classes[counts.argmin()]}")
        tr, va = stratified_split(full.labels.numpy(), 0.1, seed)
        test = (read_tiny_imagenet(root, classes=full.classes, split="val", progress=progress)
                if (tiny_folder(root) / "val" / "val_annotations.txt").exists() else None)
        return full.subset(tr), full.subset(va), test, info
    full = read_moon(root, progress=progress)
    _check_size(len(full), MIN_MOON_FRAMES, f"moon frames in {shown_path(root)}", f"кадров в {shown_path(root)}")
    # the frames that served a choice so far (hw/moon_selection.json) are never test; synthetic frames served none
    selection = [] if synthetic else sorted({i for ids in moon_selection().values() for i in ids})
    tr, va, te = moon_splits(full.coverage, full.ids, MOON_TEST, MOON_VAL, selection, seed)
    broken = full.broken.numpy()                 # decided once, on all frames
    train = tr[~broken[tr]]
    info.update(orig_size=list(full.orig_size), n_frames=len(full), n_broken=int(broken.sum()),
                broken_ids=[full.ids[i] for i in np.flatnonzero(broken)], n_broken_train=len(tr) - len(train),
                n_selection=len(selection))
    return full.subset(train), full.subset(va), full.subset(te), info
