import torch

import common


def test_shapes_and_range():
    x = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    aug = common.BatchAugment(common.AugmentConfig())
    out = aug(x, gen=torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 128, 128) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255


def test_image_and_mask_move_together():
    """The mask is a copy of a channel of the image: after augmentation they must still coincide."""
    mask = (torch.rand(6, 1, 32, 32) > 0.6).float()
    mask = torch.nn.functional.interpolate(mask, size=128, mode="nearest")
    img = (mask * 255).repeat(1, 3, 1, 1).to(torch.uint8)
    cfg = common.AugmentConfig(vflip=True, rotate=15, brightness=0, contrast=0, saturation=0)
    ai, am = common.BatchAugment(cfg)(img, mask.to(torch.uint8), torch.Generator().manual_seed(1))
    assert set(am.unique().tolist()) <= {0.0, 1.0}
    agree = ((ai[:, :1] >= 127.5).float() == am).float().mean()
    assert agree > 0.99


def test_parameters_differ_per_sample_and_repeat_with_seed():
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8).repeat(4, 1, 1, 1)
    aug = common.BatchAugment(common.AugmentConfig())
    a = aug(x, gen=torch.Generator().manual_seed(5))
    b = aug(x, gen=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1]) and not torch.allclose(a[2], a[3])


def test_a_whole_image_crop_is_the_validation_resize():
    """Training crops of the whole image (through the affine grid) and validation resizing (`resize` to 128, as `preprocess_batch` does) use the
    same 64->128 geometry."""
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    cfg = common.AugmentConfig(scale=(1, 1), ratio=(1, 1), hflip=False, brightness=0, contrast=0, saturation=0)
    out = common.BatchAugment(cfg)(x, gen=torch.Generator().manual_seed(0))
    assert (out - common.resize(x, 128)).abs().max() < 1e-3


def test_no_augmentation_returns_the_validation_input_and_mask():
    x = torch.randint(0, 256, (3, 3, 128, 128), dtype=torch.uint8)
    m = torch.randint(0, 2, (3, 1, 128, 128), dtype=torch.uint8)
    ai, am = common.BatchAugment(common.AugmentConfig.none())(x, m, torch.Generator().manual_seed(0))
    assert torch.equal(ai, common.resize(x, 128)) and torch.equal(am, m.float())
    small = common.BatchAugment(common.AugmentConfig.none())(x[:, :, :64, :64], gen=torch.Generator())
    assert small.shape == (3, 3, 128, 128)          # a different size is still resized to the input size
