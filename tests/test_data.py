import json
import shutil
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import common
import hw.data
from common import DataError


def copy_tree(src, dst):
    shutil.copytree(src, dst)
    return dst


# --- Tiny ImageNet -----------------------------------------------------------------------------------
def test_tiny_train_and_val(tiny_root):
    tr = common.read_tiny_imagenet(tiny_root, progress=False)
    assert tr.images.shape == (6 * 40, 3, 64, 64) and tr.images.dtype == torch.uint8
    assert tr.labels.bincount().tolist() == [40] * 6
    assert tr.classes == [f"n9{k:07d}" for k in range(6)]
    assert tr.names[2] == "synthetic class 2"
    va = common.read_tiny_imagenet(tiny_root, split="val", progress=False)
    assert len(va) == 6 * 8 and va.labels.bincount().tolist() == [8] * 6


def test_tiny_grayscale_becomes_rgb(tiny_root):
    tr = common.read_tiny_imagenet(tiny_root, progress=False)
    names = sorted(p.name for p in (tiny_root / "train" / "n90000000" / "images").iterdir())
    gray = tr.images[names.index("n90000000_4.JPEG")]   # images with i % 9 == 4 are grayscale JPEGs
    assert gray.shape[0] == 3 and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert not torch.equal(tr.images[0][0], tr.images[0][2])


def test_tiny_choose_classes(tiny_root):
    by_count = common.read_tiny_imagenet(tiny_root, classes=3, progress=False)
    assert by_count.classes == [f"n9{k:07d}" for k in range(3)] and len(by_count) == 120
    by_list = common.read_tiny_imagenet(tiny_root, classes=["n90000004", "n90000001"], progress=False)
    assert by_list.classes == ["n90000004", "n90000001"]
    full = common.read_tiny_imagenet(tiny_root, progress=False)
    assert torch.equal(by_list.images[:40], full.images[full.labels == 4])
    va = common.read_tiny_imagenet(tiny_root, classes=["n90000004", "n90000001"], split="val", progress=False)
    assert sorted(va.labels.unique().tolist()) == [0, 1] and len(va) == 16


def test_tiny_from_zip_and_cache(tiny_root, tmp_path):
    zpath = tmp_path / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in tiny_root.rglob("*"):
            zf.write(f, f.relative_to(tiny_root.parent))
    a = common.read_tiny_imagenet(zpath, classes=2, progress=False)
    assert (common.data_root() / "tiny-imagenet-200" / ".unpacked").exists()
    b = common.read_tiny_imagenet(zpath, classes=2, progress=False)     # from the tensor cache
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.images, common.read_tiny_imagenet(tiny_root, classes=2, progress=False).images)


def test_an_interrupted_unpack_is_never_read_and_a_users_own_folder_is_never_deleted(tiny_root, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setenv("HW_DATA_DIR", str(tmp_path / "data"))
    zpath = tmp_path / "MOON_SEGMENTATION_BINARY.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("MOON_SEGMENTATION_BINARY/images/render/render0001.png", b"x")
    half = tmp_path / "data" / "MOON_SEGMENTATION_BINARY.unpacking"      # left by a run killed while unpacking
    half.mkdir(parents=True)
    (half / "junk").write_text("")
    dest = hw.data._unpack_zip(zpath)
    assert (dest / ".unpacked").exists() and not half.exists() and not (dest / "junk").exists()
    assert (dest / "MOON_SEGMENTATION_BINARY" / "images" / "render" / "render0001.png").exists()
    (dest / ".unpacked").unlink()                                          # now a folder this code did not unpack
    (dest / "mine.txt").write_text("a student's file")
    hw.data._unpack_zip(zpath)
    assert (dest / "mine.txt").read_text() == "a student's file" and (dest / ".unpacked").exists()


def test_tiny_errors(tiny_root, tmp_path):
    with pytest.raises(DataError, match="not found.*cs231n"):
        common.read_tiny_imagenet(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="wnids.txt"):
        common.read_tiny_imagenet(tmp_path / "empty")
    with pytest.raises(DataError, match="asked for 7 classes"):
        common.read_tiny_imagenet(tiny_root, classes=7)
    with pytest.raises(DataError, match="not listed"):
        common.read_tiny_imagenet(tiny_root, classes=["n0000"])
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"this is not a zip")
    with pytest.raises(DataError, match="not a zip"):
        common.read_tiny_imagenet(bad)


def test_tiny_broken_layouts(tiny_root, tmp_path):
    root = copy_tree(tiny_root, tmp_path / "t1")
    shutil.rmtree(root / "train" / "n90000002")
    with pytest.raises(DataError, match="n90000002.*missing"):
        common.read_tiny_imagenet(root)
    root = copy_tree(tiny_root, tmp_path / "t2")
    for f in (root / "train" / "n90000001" / "images").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="no images"):
        common.read_tiny_imagenet(root)
    root = copy_tree(tiny_root, tmp_path / "t3")
    (root / "val" / "images" / "val_3.JPEG").unlink()
    with pytest.raises(DataError, match="val_3.JPEG"):
        common.read_tiny_imagenet(root, split="val")
    root = copy_tree(tiny_root, tmp_path / "t4")
    f = root / "train" / "n90000000" / "images" / "n90000000_7.JPEG"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(DataError, match="n90000000_7.JPEG.*truncated"):
        common.read_tiny_imagenet(root, progress=False)


# --- moon ----------------------------------------------------------------------------------------------
def test_moon_read(moon_root):
    ds = common.read_moon(moon_root, progress=False)
    assert ds.images.shape == (24, 3, 128, 128) and ds.masks.shape == (24, 1, 128, 128)
    assert set(ds.masks.unique().tolist()) <= {0, 1}
    assert ds.ids == list(range(1, 25)) and ds.orig_size == (240, 160)
    assert 0.005 < ds.coverage.mean() < 0.6


def test_moon_mask_matches_render(moon_root):
    """Rocks in the synthetic scenes are brighter than their shadows: masks must line up with renders."""
    ds = common.read_moon(moon_root, progress=False)
    lum = ds.images.float().mean(1, keepdim=True)
    assert lum[ds.masks == 1].mean() > lum[ds.masks == 0].mean()


def test_moon_rgb_masks_and_odd_modes(moon_root, tmp_path):
    root = copy_tree(moon_root, tmp_path / "m")
    ref = common.read_moon(moon_root, progress=False)
    g = root / "images" / "ground" / "ground0001.png"
    m = np.asarray(Image.open(g)) > 0
    rgb = np.zeros(m.shape + (3,), np.uint8)
    rgb[:30, :, 0] = 255                          # red sky
    rgb[m] = (0, 0, 255)                          # large rocks blue
    rgb[m & (np.arange(m.shape[1]) < 100)] = (0, 255, 0)   # some small rocks green
    Image.fromarray(rgb).save(g)
    r = root / "images" / "render" / "render0002.png"
    Image.open(r).convert("RGBA").save(r)         # RGBA render
    r3 = root / "images" / "render" / "render0003.png"
    Image.open(r3).convert("L").save(r3)          # grayscale render
    r4 = root / "images" / "render" / "render0004.png"
    Image.open(r4).convert("P").save(r4)          # palette render
    ds = common.read_moon(root, progress=False)
    assert torch.equal(ds.masks[0], ref.masks[0])
    assert torch.equal(ds.images[1], ref.images[1])
    assert ds.images.shape[1] == 3 and torch.equal(ds.images[2][0], ds.images[2][1])


def test_moon_mask_of_other_size_is_resized(moon_root, tmp_path, capsys):
    root = copy_tree(moon_root, tmp_path / "m")
    g = root / "images" / "ground" / "ground0005.png"
    Image.open(g).resize((480, 320), Image.NEAREST).save(g)
    ds = common.read_moon(root, progress=False)
    assert "ground0005.png is 480x320" in capsys.readouterr().out
    ref = common.read_moon(moon_root, progress=False)
    assert (ds.masks[4] != ref.masks[4]).float().mean() < 0.01


def test_moon_errors(moon_root, tmp_path):
    with pytest.raises(DataError, match="not found.*MOON"):
        common.read_moon(tmp_path / "missing")
    root = copy_tree(moon_root, tmp_path / "a")
    (root / "images" / "ground" / "ground0003.png").unlink()
    with pytest.raises(DataError, match="render0003.png has no mask"):
        common.read_moon(root)
    root = copy_tree(moon_root, tmp_path / "b")
    (root / "images" / "render" / "render0004.png").unlink()
    with pytest.raises(DataError, match="ground0004.png has no render"):
        common.read_moon(root)
    root = copy_tree(moon_root, tmp_path / "c")
    g = root / "images" / "ground" / "ground0002.png"
    Image.fromarray((np.arange(160 * 240).reshape(160, 240) % 200).astype(np.uint8)).save(g)
    with pytest.raises(DataError, match="ground0002.png has values"):
        common.read_moon(root)
    root = copy_tree(moon_root, tmp_path / "d")
    g = root / "images" / "ground" / "ground0002.png"
    Image.fromarray(np.full((160, 240, 3), (120, 200, 40), np.uint8)).save(g)
    with pytest.raises(DataError, match="colour convention"):
        common.read_moon(root)
    root = copy_tree(moon_root, tmp_path / "e")
    (root / "images" / "render" / "render0006.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="render0006.png"):
        common.read_moon(root, progress=False)


def test_splits_are_stratified():
    labels = np.repeat(np.arange(10), 50)
    tr, va = common.stratified_split(labels, 0.2, seed=0)
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == 500
    assert np.bincount(labels[va]).tolist() == [10] * 10
    tr2, va2 = common.stratified_split(labels, 0.2, seed=0)
    assert np.array_equal(va, va2)
    cov = np.random.default_rng(0).random(100) ** 3
    bins = common.coverage_bins(cov, 5)
    assert np.bincount(bins).tolist() == [20] * 5
    _, va = common.stratified_split(bins, 0.2, seed=1)
    assert np.bincount(bins[va]).tolist() == [4] * 5


def test_moon_test_split_is_drawn_only_from_frames_no_choice_saw():
    """`moon_splits`: test is 20 % of all frames, none of them excluded (frames that served a choice), stratified by
    coverage; val is 15 % of all, drawn from the rest, excluded frames included; the three are disjoint and cover
    every frame; the same seed gives the same splits."""
    rng = np.random.default_rng(0)
    cov, ids = rng.random(200) ** 3, list(range(101, 301))
    excluded = set(rng.choice(ids, 70, replace=False).tolist())
    tr, va, te = common.moon_splits(cov, ids, 0.2, 0.15, excluded, seed=0)
    assert (len(te), len(va), len(tr)) == (40, 30, 130)
    assert not {ids[i] for i in te} & excluded and {ids[i] for i in va} & excluded
    assert sorted([*tr, *va, *te]) == list(range(200))
    assert np.abs(np.bincount(common.coverage_bins(cov, 5)[te], minlength=5) - 8).max() <= 2     # stratified
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), common.moon_splits(cov, ids, 0.2, 0.15, excluded)))
    with pytest.raises(DataError, match="served no earlier choice"):
        common.moon_splits(cov, ids, 0.2, 0.15, set(ids[:170]))


def test_the_selection_list_names_each_group_and_its_origin():
    doc = json.loads(common.MOON_SELECTION_FILE.read_text())
    assert [g["name"] for g in doc["groups"]] == ["search_val", "protocol_val"]
    assert all(g["source"] and len(set(g["ids"])) == len(g["ids"]) for g in doc["groups"])
    sel = common.moon_selection()
    assert (len(sel["search_val"]), len(sel["protocol_val"])) == (160, 120)
    assert not set(sel["search_val"]) & set(sel["protocol_val"]) and 750 in sel["search_val"]


def test_synthetic_generators_are_deterministic(tmp_path):
    a = common.make_synthetic_moon(tmp_path / "a", n=2, size=(96, 64), seed=3)
    b = common.make_synthetic_moon(tmp_path / "b", n=2, size=(96, 64), seed=3)
    for sub in ("render/render0002.png", "ground/ground0002.png"):
        assert (a / "images" / sub).read_bytes() == (b / "images" / sub).read_bytes()
    assert Image.open(a / "images" / "render" / "render0001.png").size == (96, 64)


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """No archive in data/, ../shared/data or Colab's places; printed lines and messages in Russian, as in a notebook."""
    monkeypatch.setenv("HW_SHARED_DATA", str(tmp_path / "none"))
    monkeypatch.setenv("HW_DATA_DIR", str(tmp_path / "none2"))
    monkeypatch.setattr(hw.data, "COLAB_PLACES", ())
    monkeypatch.setenv(common.LANG_ENV, "ru")
    return monkeypatch


def test_auto_profile_decides_per_notebook_and_never_falls_to_synthetic_data(no_data, moon_root, monkeypatch):
    assert common.resolve_profile("auto", notebook="01") == "cpu"       # Tiny ImageNet: downloaded by its data cell
    for nb in ("02", "03"):
        with pytest.raises(common.DataError) as e:
            common.resolve_profile("auto", notebook=nb)
        assert "Набор MOON_SEGMENTATION_BINARY не найден" in str(e.value) and "/content" in str(e.value)
        assert common.resolve_profile("auto", str(moon_root.parent), nb) == "cpu"     # only the moon set is needed
        with pytest.raises(common.DataError):
            common.resolve_profile("cpu", notebook=nb)
        assert common.resolve_profile("demo", notebook=nb) == "demo"    # synthetic only when asked for
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert common.resolve_profile("auto", str(moon_root.parent), "02") == "gpu"


def test_the_moon_set_is_found_where_colab_puts_an_upload_or_a_drive(no_data, moon_root, tmp_path):
    content, drive = tmp_path / "content", tmp_path / "content" / "drive" / "MyDrive"
    drive.mkdir(parents=True)
    no_data.setattr(hw.data, "COLAB_PLACES", (content, drive))
    assert common.find_dataset("moon") is None
    with zipfile.ZipFile(drive / "MOON_SEGMENTATION_BINARY.zip", "w") as zf:
        for f in sorted(moon_root.rglob("*.png")):
            zf.write(f, f.relative_to(moon_root.parent).as_posix())
    assert common.find_dataset("moon") == drive / "MOON_SEGMENTATION_BINARY.zip"
    (content / "MOON_SEGMENTATION_BINARY.zip").write_bytes((drive / "MOON_SEGMENTATION_BINARY.zip").read_bytes())
    assert common.find_dataset("moon") == content / "MOON_SEGMENTATION_BINARY.zip"       # an upload comes first
    assert len(common.read_moon(common.find_dataset("moon"), progress=False)) == 24


def test_a_set_too_small_to_split_says_its_count_and_the_minimum_in_russian(no_data, tmp_path):
    moon = common.make_synthetic_moon(tmp_path / "few" / "MOON_SEGMENTATION_BINARY", n=12, size=(96, 64), seed=0)
    with pytest.raises(common.DataError, match=r"кадров в .*: 12 — слишком мало.*не меньше 40"):
        common.recipe("cpu").datasets("moon", data_dir=str(moon.parent), progress=False)
    tiny = common.make_synthetic_tiny_imagenet(tmp_path / "t" / "tiny-imagenet-200", n_classes=3, n_train=6, n_val=2)
    with pytest.raises(common.DataError, match=r"изображений класса n\d+: 6 — слишком мало.*не меньше 10"):
        common.recipe("cpu", num_classes=3).datasets("tiny", data_dir=str(tiny.parent), progress=False)
    enough = common.make_synthetic_moon(tmp_path / "ok" / "MOON_SEGMENTATION_BINARY", n=40, size=(96, 64), seed=0)
    no_data.setattr(hw.data, "moon_selection", lambda: {})      # synthetic frames served no choice
    train, val, test, _ = common.recipe("cpu").datasets("moon", data_dir=str(enough.parent), progress=False)
    assert len(train) + len(val) + len(test) == 40


def test_broken_frames_are_found_and_kept_out_of_training_only(tmp_path):
    """Renders whose lower half is pure black while the mask has rocks there are `broken`; the moon splits are
    65 / 15 / 20 %, stratified, disjoint, and only train loses its broken frames."""
    root = common.make_synthetic_moon(tmp_path / "m", n=40, size=(240, 160), seed=0, broken=(3, 12, 20, 33))
    ds = common.read_moon(root, progress=False)
    assert [ds.ids[i] for i in torch.nonzero(ds.broken).flatten().tolist()] == [3, 12, 20, 33]
    kept = ds.subset(torch.nonzero(~ds.broken).flatten())
    assert len(kept) == 36 and not kept.broken.any()
    train, val, test, info = common.recipe("demo").datasets("moon", out_dir=tmp_path, progress=False)
    assert (len(val), len(test)) == (6, 8) and info["n_frames"] == 40
    assert len(train) == 26 - info["n_broken_train"] and not train.broken.any()
    assert int(val.broken.sum()) + int(test.broken.sum()) + info["n_broken_train"] == info["n_broken"] == 3
    assert not (set(train.ids) & set(val.ids) or set(train.ids) & set(test.ids) or set(val.ids) & set(test.ids))
    again = common.recipe("demo").datasets("moon", out_dir=tmp_path, progress=False)
    assert again[2].ids == test.ids                                          # fixed seed: the same test split
