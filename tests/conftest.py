import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

torch.set_num_threads(2)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not present")
SMALL_CLS = dict(widths=(16, 32, 48, 64, 64), blocks=(1, 1, 1, 1, 1))     # small and fast, the real layout
SMALL_UNET = dict(widths=(8, 16, 24, 32, 32), decoder=(32, 24, 16, 8))
SMALL_BB = dict(adapters=(8, 8, 16, 16, 16), decoder=(16, 16, 8, 8))


@pytest.fixture(autouse=True, scope="session")
def _private_data_dir(tmp_path_factory):
    """Unpacked archives and caches of the tests go to a temporary folder, never to the repo's data/."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HW_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        yield


@pytest.fixture(autouse=True)
def _english_lines(monkeypatch):
    """The library prints English unless a notebook's set-up asks for Russian (HW_LANG): tests read English."""
    monkeypatch.delenv(common.LANG_ENV, raising=False)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return common.make_synthetic_tiny_imagenet(tmp_path_factory.mktemp("tiny") / "tiny-imagenet-200",
                                               n_classes=6, n_train=40, n_val=8, seed=0)


@pytest.fixture(scope="session")
def moon_root(tmp_path_factory):
    return common.make_synthetic_moon(tmp_path_factory.mktemp("moon") / "MOON_SEGMENTATION_BINARY",
                                      n=24, size=(240, 160), seed=0)


@pytest.fixture(scope="session")
def cls_data(tiny_root):
    """(train, val) of the synthetic Tiny ImageNet: 6 classes, 30 + 10 images each."""
    ds = common.read_tiny_imagenet(tiny_root, progress=False)
    tr, va = common.stratified_split(ds.labels.numpy(), 0.25, seed=0)
    return ds.subset(tr), ds.subset(va)


@pytest.fixture(scope="session")
def moon_data(moon_root):
    """(train, val) of the synthetic moon set: 18 + 6 frames."""
    ds = common.read_moon(moon_root, progress=False)
    tr, va = common.stratified_split(common.coverage_bins(ds.coverage, 3), 0.25, seed=0)
    return ds.subset(tr), ds.subset(va)


@pytest.fixture
def small():
    """Builders of small models with the real layouts: small.classifier(), small.unet(), small.backbone(cls)."""
    class Small:
        classifier = staticmethod(lambda n=6: common.Classifier(n, **SMALL_CLS))
        unet = staticmethod(lambda: common.unet(**SMALL_UNET))
        backbone = staticmethod(lambda cls, **kw: common.load_backbone(
            common.backbone_unet(cls.config, **{**SMALL_BB, **kw}), cls))
    return Small


def spec(name, model, train, task, **kw):
    """A `ModelRecipe` for tests: `model`'s architecture under `name`, trained by `train` for `task`."""
    arch = {k: v for k, v in model.config.items() if k != "classifier"}
    return common.ModelRecipe(name=name, architecture=arch, train=train, task=task, **kw)
