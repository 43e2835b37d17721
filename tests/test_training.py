import json

import numpy as np
import pytest
import torch

import common
from hw.training import make_optimizer


def test_classifier_fit_learns(cls_data, small, tmp_path):
    train, val = cls_data
    cfg = common.TrainConfig(epochs=6, batch_size=30, lr=4e-3)
    hist = common.fit(small.classifier(), train, val, cfg, tmp_path, progress=False)
    assert list(hist["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert hist["val_top1"].max() > 0.5                      # chance is 1/6
    assert (tmp_path / "history.csv").exists() and (tmp_path / "best.pt").exists()
    _, meta = common.load_checkpoint(tmp_path / "best.pt")
    assert meta["metrics"]["val_top1"] == hist["val_top1"].max()


def test_unet_fit_learns(moon_data, small, tmp_path):
    train, val = moon_data
    cfg = common.TrainConfig(epochs=5, batch_size=6, lr=5e-3, augment=common.AugmentConfig(scale=(0.6, 1)))
    hist = common.fit(small.unet(), train, val, cfg, tmp_path, progress=False)
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert hist["val_iou"].max() > float(val.masks.float().mean())      # better than calling everything rock


class Interrupt(Exception):
    pass


def test_resume_after_interruption_repeats_the_uninterrupted_run(cls_data, small, tmp_path):
    """In-process; tests/test_robustness.py kills a training process in the middle of a checkpoint write."""
    train, val = cls_data
    cfg = common.TrainConfig(epochs=3, batch_size=30, lr=3e-3, max_steps_per_epoch=3)
    torch.manual_seed(0)
    full = common.fit(small.classifier(), train, val, cfg, tmp_path / "a", progress=False)

    def stop_after_two(hist):
        if len(hist) == 2:
            raise Interrupt()

    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        common.fit(small.classifier(), train, val, cfg, tmp_path / "b", progress=False, callback=stop_after_two)
    torch.manual_seed(123)                       # a fresh model with other initial weights: must not matter
    resumed = common.fit(small.classifier(), train, val, cfg, tmp_path / "b", progress=False)
    cols = ["epoch", "train_loss", "val_loss", "val_top1", "val_top5"]
    assert np.allclose(full[cols].to_numpy(), resumed[cols].to_numpy(), rtol=0, atol=1e-6)


def test_nan_loss_stops_with_a_hint(cls_data, small, tmp_path):
    cfg = common.TrainConfig(epochs=2, batch_size=30, lr=1e30, max_steps_per_epoch=4)
    with pytest.raises(common.TrainingError, match="epoch 1.*Lower the learning rate"):
        common.fit(small.classifier(), *cls_data, cfg, tmp_path, progress=False)
    assert not (tmp_path / "last.pt").exists()


def test_variant_b_unfreezes_after_the_frozen_epochs(moon_data, small, tmp_path):
    seg = small.backbone(small.classifier())
    start = {k: v.clone() for k, v in seg.encoder.backbone.state_dict().items()}
    snapshots = []
    cfg = common.TrainConfig(epochs=2, batch_size=6, lr=3e-3, freeze_encoder_epochs=1, encoder_lr_mult=0.3)
    common.fit(seg, *moon_data, cfg, tmp_path, progress=False,
               callback=lambda h: snapshots.append({k: v.clone() for k, v in seg.encoder.backbone.state_dict().items()}))
    assert all(torch.equal(snapshots[0][k], start[k]) for k in start)        # epoch 1: frozen, BN statistics too
    assert any(not torch.equal(snapshots[1][k], start[k]) for k in start)    # epoch 2: fine-tuned


def test_encoder_learns_at_its_own_rate(small):
    seg = small.backbone(small.classifier())
    opt, _ = make_optimizer(seg, common.TrainConfig(lr=1e-3, encoder_lr_mult=0.1), 10)
    enc = {id(p) for p in seg.encoder_parameters()}
    for g in opt.param_groups:
        assert all((id(p) in enc) == (g["part"] == "enc") for p in g["params"])
        assert g["max_lr"] == pytest.approx(1e-4 if g["part"] == "enc" else 1e-3)
        assert g["weight_decay"] == (0.0 if g["params"][0].dim() == 1 else 5e-4)


def test_progressive_resizing_schedule_and_fit(cls_data, small, tmp_path):
    cfg = common.TrainConfig(epochs=20, min_size=64, full_size_at=0.85)
    sizes = [cfg.input_size(e) for e in range(20)]
    assert sizes[0] == 64 and sizes[-3:] == [128] * 3 and sizes == sorted(sizes)
    assert all(s % 16 == 0 for s in sizes)
    assert [common.TrainConfig(epochs=5).input_size(e) for e in range(5)] == [128] * 5
    cfg = common.TrainConfig(epochs=3, batch_size=30, lr=4e-3, min_size=64, full_size_at=0.6)
    hist = common.fit(small.classifier(), *cls_data, cfg, tmp_path, progress=False)
    assert list(hist["input_size"]) == [64, 96, 128]


def test_train_or_reuse_retrains_when_a_checkpoint_it_starts_from_changes(moon_data, small, tmp_path, capsys):
    cls = small.classifier()
    dep = tmp_path / "classifier.pt"
    common.save_checkpoint(dep, cls, "classification")
    cfg = common.TrainConfig(epochs=1, batch_size=6, max_steps_per_epoch=1, freeze_encoder_epochs=-1)
    run = lambda: common.train_or_reuse("bb", lambda: small.backbone(cls), *moon_data, cfg, tmp_path,  # noqa: E731
                                        progress=False, depends_on=[dep])
    _, _, meta = run()
    assert meta["trainable_params"] == common.count_params(small.backbone(cls)) - sum(
        p.numel() for p in cls.encoder.parameters())                  # variant A trains adapters and decoder only
    capsys.readouterr()
    run()
    assert "reusing" in capsys.readouterr().out
    common.save_checkpoint(dep, cls, "classification", note="re-exported")   # same weights, new meta ...
    run()
    assert "reusing" in capsys.readouterr().out                               # ... still the same dependency
    with torch.no_grad():
        cls.encoder.stages[0][0][0].weight.add_(1.0)        # the classifier is retrained ...
    common.save_checkpoint(dep, cls, "classification")
    run()
    assert "training anew" in capsys.readouterr().out   # ... so the backbone U-Net on top of it is too


def test_train_true_retrains_a_finished_run_and_auto_exports_it(moon_data, small, tmp_path, capsys):
    cfg = common.TrainConfig(epochs=1, batch_size=6, max_steps_per_epoch=1)
    run = lambda mode: common.train_or_reuse("u", small.unet, *moon_data, cfg, tmp_path, mode,  # noqa: E731
                                             progress=False)
    run(True)
    first = (tmp_path / "runs" / "u" / "last.pt").stat().st_mtime_ns
    capsys.readouterr()
    run(True)                                            # a finished run is not "resumed" with nothing to do
    assert "training anew" in capsys.readouterr().out
    assert (tmp_path / "runs" / "u" / "last.pt").stat().st_mtime_ns != first
    (tmp_path / "weights" / "u.pt").unlink()             # e.g. interrupted between the last epoch and the export
    run("auto")
    assert "reusing the finished run" in capsys.readouterr().out and (tmp_path / "weights" / "u.pt").exists()


def test_a_final_fit_on_train_and_val_keeps_its_last_epoch(moon_data, small, tmp_path):
    """fit_on_val: val's frames (not its broken ones) join the fit, no epoch is chosen on val: the last is exported."""
    train, val = moon_data
    val = val.join(val.subset([0]))
    val.images[-1, :, 64:] = 0                  # one broken frame: lower half pure black, the mask keeps rock there
    val.masks[-1, :, 64:80] = 1
    assert int(val.broken.sum()) == 1
    fit_set = common.fit_data(train, val, True)
    assert len(fit_set) == len(train) + len(val) - 1 and not fit_set.broken.any()
    assert common.fit_data(train, val, False) is train
    cfg = common.TrainConfig(epochs=3, batch_size=6, max_steps_per_epoch=1, lr=1.0)   # a rate that makes epochs erratic
    _, history, meta = common.train_or_reuse("u", small.unet, train, val, cfg, tmp_path, True, progress=False,
                                             fit_on_val=True)
    assert meta["epoch"] == 3 and meta["fit_on"] == "train+val" and len(history) == 3
    assert meta["run_key"] == common.run_key(cfg, small.unet(), fit_set, val)
    assert int(history["val_iou"].idxmax()) + 1 != 3       # the best epoch on val was another: the last one is kept


def test_committed_weights_were_trained_with_the_cpu_recipes():
    """A fresh clone reuses the committed weights only if their run key is what the cpu profile's recipe and
    architecture give today (the data part is checked where the data is: tests/test_shared_data.py)."""
    r = common.recipe("cpu")
    for name, cfg in (("classifier", r.classifier), ("unet", r.unet), ("backbone_unet_frozen", r.frozen),
                      ("backbone_unet_finetuned", r.finetuned)):
        model, meta = common.load_checkpoint(common.ROOT / "weights" / f"{name}.pt")
        assert meta["run_key"]["train"] == json.loads(json.dumps(cfg.key())), name
        assert meta["run_key"]["model"] == model.config == json.loads(json.dumps(model.config)), name


def test_recipes_apply_the_notebooks_overrides_to_every_model():
    r = common.recipe("cpu", seed=3, epochs=2, batch_size=8, num_classes=7)
    assert r.classes == 7
    assert {(c.seed, c.epochs, c.batch_size) for c in r.configs().values()} == {(3, 2, 8)}
    assert common.recipe("cpu").unet.epochs == common.PROFILES["cpu"].unet.epochs != 2     # the profile is untouched
    assert r.frozen.freeze_encoder_epochs == -1 and r.finetuned.freeze_encoder_epochs == 0
