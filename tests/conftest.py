import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _private_data_dir(tmp_path_factory):
    """Unpacked archives and caches of the tests go to a temporary folder, never to the repo's data/."""
    common.DATA_DIR = tmp_path_factory.mktemp("data")
    yield


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return common.make_synthetic_tiny_imagenet(tmp_path_factory.mktemp("tiny") / "tiny-imagenet-200",
                                               n_classes=6, n_train=40, n_val=8, seed=0)


@pytest.fixture(scope="session")
def moon_root(tmp_path_factory):
    return common.make_synthetic_moon(tmp_path_factory.mktemp("moon") / "MOON_SEGMENTATION_BINARY",
                                      n=24, size=(240, 160), seed=0)


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not present")
