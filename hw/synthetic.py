"""Synthetic stand-ins for both datasets, written in their on-disk layouts: the demo profile and the tests read them
with the same readers as the real data."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

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
        for i in range(n_train):
            save(_synthetic_class_image(rng, k, n_classes), d / f"{w}_{i}.JPEG", i)
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


def make_synthetic_moon(root, n=40, size=(720, 480), seed=0, broken=()):
    """Write procedural lunar scenes in the moon set's layout (images/render, images/ground) into `root`:
    a dark sky band, shaded regolith with texture, rocks of many sizes lit from one side with shadows;
    the ground masks mark the rocks (0/255). The frames numbered in `broken` lose their ground as some of the real
    renders do: the lower half of the render turns pure black, the mask stays. Deterministic for a seed. Returns root."""
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
        if i in broken:
            img[h // 2:] = 0
        Image.fromarray((img * 255).astype(np.uint8)).save(root / "images" / "render" / f"render{i:04d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "images" / "ground" / f"ground{i:04d}.png")
    return root
