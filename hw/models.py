"""The models: the classifier (its stages exposed as an encoder), the base U-Net, and the U-Net whose encoder is the
classifier's stages. Encoders and the one decoder are separate classes (smp-style); every model carries a `config`
dict from which `build_model` rebuilds it (stored in every checkpoint)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .core import CheckpointError


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


def unet_level(cin, cout, pool):
    """One level of the plain U-Net's encoder: a 2x2 max-pool (except at full resolution), then a double
    Conv-BN-ReLU."""
    return nn.Sequential(*([nn.MaxPool2d(2)] if pool else []), conv_bn(cin, cout), conv_bn(cout, cout))


class FlipTTA:
    """Mixin of the project's models: `logits(x)` is the network; `tta` (saved in the checkpoint's meta) makes the
    eval-mode forward average over the horizontal flip; `spatial` says whether the output is a map."""
    spatial, tta = False, False

    def infer(self, x, tta):
        if not tta:
            return self.logits(x)
        f = self.logits(x.flip(-1))
        return (self.logits(x) + (f.flip(-1) if self.spatial else f)) / 2

    def forward(self, x):
        return self.infer(x, self.tta and not self.training)


# ---------------------------------------------------------------------------------------------------- encoders
class StagedEncoder(nn.Module):
    """An encoder made of `self.stages`; returns every stage's output, shallow to deep. `out_channels[i]` and
    `strides[i]` describe stage i's output, so a decoder can be built for it."""

    def forward(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class ClassifierEncoder(StagedEncoder):
    """The classifier's convolutional stages: a stride-2 stem, then ResNet-like stages (a stride-2 `BasicBlock`,
    then `blocks[i] - 1` more), at strides 2, 4, 8, 16, 32. The stem goes to 64x64 at once: Tiny ImageNet's inputs
    are 64x64 images upscaled, which hold no finer detail, and every later stage costs 4x less than at 128x128."""

    def __init__(self, widths=(32, 64, 128, 256, 384), blocks=(1, 1, 2, 1, 1)):
        super().__init__()
        stages = [nn.Sequential(conv_bn(3, widths[0], 3, 2),
                                *[BasicBlock(widths[0], widths[0]) for _ in range(blocks[0] - 1)])]
        for i in range(1, len(widths)):
            stages.append(nn.Sequential(BasicBlock(widths[i - 1], widths[i], 2),
                                        *[BasicBlock(widths[i], widths[i]) for _ in range(blocks[i] - 1)]))
        self.stages = nn.ModuleList(stages)
        self.out_channels = list(widths)
        self.strides = [2 ** (i + 1) for i in range(len(widths))]


class UNetEncoder(StagedEncoder):
    """The plain U-Net encoder: a double Conv-BN-ReLU at full resolution, then 4 levels, each a 2x2 max-pool and
    a double conv. Outputs at strides 1, 2, 4, 8, 16."""

    def __init__(self, widths=(32, 64, 128, 160, 192)):
        super().__init__()
        cins = (3,) + tuple(widths[:-1])
        self.stages = nn.ModuleList(unet_level(c, w, pool=i > 0) for i, (c, w) in enumerate(zip(cins, widths)))
        self.out_channels = list(widths)
        self.strides = [2 ** i for i in range(len(widths))]


class AdaptedEncoder(nn.Module):
    """Part 3's encoder as the course asks it: a classifier's stages (`backbone`, its head removed), each followed by a
    1x1 Conv-BN-ReLU adapter that brings it to the decoder's width. Freezing touches only `backbone`."""

    def __init__(self, backbone: ClassifierEncoder, widths):
        super().__init__()
        self.backbone = backbone
        self.adapters = nn.ModuleList(conv_bn(c, w, 1) for c, w in zip(backbone.out_channels, widths))
        self.out_channels = list(widths)
        self.strides = list(backbone.strides)

    def forward(self, x):
        return [a(f) for a, f in zip(self.adapters, self.backbone(x))]


class BranchedEncoder(AdaptedEncoder):
    """`AdaptedEncoder` plus one full-resolution level built like the plain U-Net's first (`unet_level`, width
    branch[0]) on the input: one more skip at stride 1, so the decoder's logits are at 128x128 (the classifier's stem
    starts at stride 2)."""

    def __init__(self, backbone: ClassifierEncoder, widths, branch):
        super().__init__(backbone, widths)
        if len(branch) != 1:
            raise ValueError(f"the branch is one full-resolution level: one width, got {list(branch)}")
        self.full = unet_level(3, branch[0], pool=False)
        self.out_channels = [branch[0]] + self.out_channels
        self.strides = [1] + self.strides

    def forward(self, x):
        return [self.full(x)] + super().forward(x)


# ---------------------------------------------------------------------------------------------------- decoder
class UNetDecoder(nn.Module):
    """One decoder for every U-Net (smp-style): from the deepest feature up, each step interpolates to the next
    skip's size, concatenates it and applies a double Conv-BN-ReLU. A 1x1 head gives 1-channel logits, interpolated
    to the input size when the shallowest skip is not at full resolution."""

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


# ---------------------------------------------------------------------------------------------------- models
class Classifier(FlipTTA, nn.Module):
    """Own ResNet-like CNN for 128x128x3: encoder stages, then global average pooling, dropout, linear."""

    def __init__(self, num_classes, widths=(32, 64, 128, 256, 384), blocks=(1, 1, 2, 1, 1), dropout=0.1):
        super().__init__()
        self.config = {"arch": "classifier", "num_classes": num_classes, "widths": list(widths),
                       "blocks": list(blocks), "dropout": dropout}
        self.encoder = ClassifierEncoder(widths, blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(widths[-1], num_classes))

    def logits(self, x):
        return self.head(self.encoder(x)[-1])


class SegmentationModel(FlipTTA, nn.Module):
    """Encoder + `UNetDecoder`; returns logits (N,1,H,W). Built by `unet()` or `backbone_unet()`."""
    spatial = True

    def __init__(self, encoder, decoder_channels, config):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.decoder = UNetDecoder(encoder.out_channels, decoder_channels)
        self.encoder_frozen = False

    def logits(self, x):
        return self.decoder(self.encoder(x), x.shape[-2:])

    def _frozen_part(self):
        """What freezing stops: a backbone U-Net's classifier stages (the whole encoder of a plain U-Net)."""
        return getattr(self.encoder, "backbone", self.encoder)

    def freeze_encoder(self, frozen=True):
        """Stop (or restart) gradients into the classifier's stages; while frozen their BatchNorm statistics stay
        fixed too, even after model.train()."""
        for p in self._frozen_part().parameters():
            p.requires_grad_(not frozen)
        self.encoder_frozen = frozen
        return self.train(self.training)

    def train(self, mode=True):
        super().train(mode)
        if self.encoder_frozen:
            self._frozen_part().eval()
        return self

    def encoder_parameters(self):
        return list(self._frozen_part().parameters())


def unet(widths=(32, 64, 128, 160, 192), decoder=(128, 64, 32, 16)):
    """The base U-Net: 4 max-pool levels down, 4 up, skips at every level, base width 32."""
    cfg = {"arch": "unet", "widths": list(widths), "decoder": list(decoder)}
    return SegmentationModel(UNetEncoder(widths), decoder, cfg)


def backbone_unet(classifier, adapters=(32, 64, 96, 128, 192), decoder=None, branch=()):
    """A U-Net whose encoder is a classifier's stages (strides 2..32) with 1x1 adapters and the same decoder as
    `unet`; its last decoder level is at stride 2 and interpolated to full size (decoder default (128, 96, 64, 32)).
    branch=(w,) adds a full-resolution level of width w (`BranchedEncoder`), and the default decoder a last level of
    width 16 for its skip. classifier: the classifier's `config`; load its weights with `load_backbone`."""
    cls_cfg = dict(classifier)
    backbone = ClassifierEncoder(cls_cfg["widths"], cls_cfg["blocks"])
    if len(adapters) != len(backbone.stages):
        raise ValueError(f"adapters need one width per classifier stage ({len(backbone.stages)}), got {len(adapters)}")
    encoder = BranchedEncoder(backbone, adapters, branch) if branch else AdaptedEncoder(backbone, adapters)
    decoder = decoder or (128, 96, 64, 32) + ((16,) if branch else ())
    if len(decoder) != len(encoder.out_channels) - 1:
        raise ValueError(f"the decoder needs {len(encoder.out_channels) - 1} widths for this encoder, got {len(decoder)}")
    cfg = {"arch": "backbone_unet", "classifier": cls_cfg, "adapters": list(adapters), "decoder": list(decoder),
           "branch": list(branch)}
    return SegmentationModel(encoder, decoder, cfg)


def load_backbone(seg_model, classifier):
    """Copy a trained classifier's encoder weights into a backbone U-Net (the head is dropped)."""
    try:
        seg_model.encoder.backbone.load_state_dict(classifier.encoder.state_dict())
    except RuntimeError as e:
        raise CheckpointError(f"the classifier's stages do not fit this backbone U-Net (built for another "
                              f"classifier configuration): {str(e).splitlines()[0]}") from e
    return seg_model


def with_weights(model, source):
    """`model` with the weights of `source`, a model of the same architecture (variant B starts from its trained A)."""
    model.load_state_dict(source.state_dict())
    return model


def build_model(config):
    """Rebuild any of the project's models from its `config` dict (stored in every checkpoint): the arguments of the
    builder its "arch" names."""
    builders, config = {"classifier": Classifier, "unet": unet, "backbone_unet": backbone_unet}, dict(config)
    if (arch := config.pop("arch", None)) not in builders:
        raise CheckpointError(f"unknown architecture {arch!r}")
    return builders[arch](**config)
