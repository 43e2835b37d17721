"""The one input path of every model, one verb: `preprocess_batch` makes a uint8 batch the normalised float input,
in validation geometry (the whole image resized, `data.resize`) or augmented on its device (`BatchAugment`: one affine
grid per sample moves image and mask together; colour factors per sample, vectorised); `checkpoints.preprocess` does
the same for one image of any size. Training, evaluation and inference all go through it."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .core import INPUT_SIZE
from .data import resize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalize(x, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """float 0..255 (N,3,H,W) -> normalised float (ImageNet's mean and std, stored in every checkpoint)."""
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1) * 255
    return (x - m) / s


@dataclass(kw_only=True)
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


def preprocess_batch(x, y, device, prec, aug=None, gen=None):
    """A uint8 batch and its targets (labels (N,), masks (N,1,H,W), or None) -> the normalised float input on `device`
    in the precision's memory layout, and the targets: augmented by `aug` (training) or in validation geometry."""
    x, y = x.to(device, non_blocking=True), y if y is None else y.to(device, non_blocking=True)
    if y is not None and y.dim() == 4:     # masks move with their images
        x, y = aug(x, y, gen) if aug else (resize(x, INPUT_SIZE), y.float())
    else:
        x = aug(x, gen=gen) if aug else resize(x, INPUT_SIZE)
    return _normalize(x).contiguous(memory_format=prec.memory_format), y
