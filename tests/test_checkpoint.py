import pytest
import torch
from PIL import Image

import common
from common import CheckpointError


def test_round_trip_all_architectures(tmp_path):
    cls = common.Classifier(5)
    for name, m, kw in [("c", cls, dict(task="classification", classes=list("abcde"))),
                        ("u", common.unet(), dict(task="segmentation", threshold=0.4)),
                        ("b", common.backbone_unet(cls.config), dict(task="segmentation"))]:
        m.eval()
        common.save_checkpoint(tmp_path / f"{name}.pt", m, metrics={"x": 1.0}, **kw)
        again, meta = common.load_checkpoint(tmp_path / f"{name}.pt")
        assert not again.training and next(again.parameters()).device.type == "cpu"
        x = torch.randn(2, 3, 128, 128)
        assert torch.equal(m(x), again(x))
        for key in ("task", "input_size", "mean", "std", "params", "metrics", "torch", "python", "device"):
            assert key in meta
        assert meta["input_size"] == 128 and meta["params"] == common.count_params(m)
        assert ("classes" in meta) if meta["task"] == "classification" else ("threshold" in meta)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        common.load_checkpoint(tmp_path / "none.pt")
    common.save_checkpoint(tmp_path / "ok.pt", common.unet(), task="segmentation")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        common.load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        common.load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="segmentation model, but a classification"):
        common.load_checkpoint(tmp_path / "ok.pt", expect_task="classification")
    obj = torch.load(tmp_path / "ok.pt", weights_only=True)
    obj["config"]["widths"] = [16, 32, 64, 128, 256]
    torch.save(obj, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        common.load_checkpoint(tmp_path / "mismatch.pt")


def test_preprocess_equals_validation_input(tiny_root, moon_root):
    """One image from disk (`preprocess`) becomes exactly the input its stored uint8 copy gets in a validation batch
    (`preprocess_batch`): the one input path."""
    def batch_input(images):
        return common.preprocess_batch(images, None, torch.device("cpu"), common.Precision("cpu", "fp32", False, ""))[0]
    ds = common.read_tiny_imagenet(tiny_root, classes=1, progress=False)
    meta = {"task": "classification", "input_size": 128, "source_size": 64,
            "mean": common.IMAGENET_MEAN, "std": common.IMAGENET_STD}
    f = sorted((tiny_root / "train" / "n90000000" / "images").iterdir())[3]
    x = common.preprocess(Image.open(f), meta)
    ref = batch_input(ds.images[3:4])[0]
    assert x.shape == (3, 128, 128) and torch.allclose(x, ref, atol=1e-5)

    ms = common.read_moon(moon_root, progress=False)
    meta = dict(meta, task="segmentation", source_size=128)
    x = common.preprocess(Image.open(moon_root / "images" / "render" / "render0002.png"), meta)
    ref = batch_input(ms.images[1:2])[0]
    assert torch.allclose(x, ref, atol=1e-5)
    big = Image.open(moon_root / "images" / "render" / "render0002.png").resize((720, 480), Image.BICUBIC)
    assert common.preprocess(big.convert("RGBA"), meta).shape == (3, 128, 128)
