import numpy as np
import pytest
import torch

import common

SMALL_CLS = dict(widths=(16, 32, 48, 64, 64), blocks=(1, 1, 1, 1, 1))
SMALL_UNET = dict(widths=(8, 16, 24, 32, 32), decoder=(32, 24, 16, 8))


def cls_data(tiny_root):
    ds = common.read_tiny_imagenet(tiny_root, progress=False)
    tr, va = common.stratified_split(ds.labels.numpy(), 0.25, seed=0)
    return ds.subset(tr), ds.subset(va)


def moon_data(moon_root):
    ds = common.read_moon(moon_root, progress=False)
    tr, va = common.stratified_split(common.coverage_bins(ds.coverage, 3), 0.25, seed=0)
    return ds.subset(tr), ds.subset(va)


def test_classifier_fit_learns(tiny_root, tmp_path):
    train, val = cls_data(tiny_root)
    model = common.Classifier(6, **SMALL_CLS)
    cfg = common.TrainConfig(epochs=6, batch_size=30, lr=4e-3)
    hist = common.fit(model, train, val, cfg, tmp_path, progress=False)
    assert list(hist["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert hist["val_top1"].max() > 0.5                      # chance is 1/6
    assert (tmp_path / "history.csv").exists() and (tmp_path / "best.pt").exists()
    _, meta = common.load_checkpoint(tmp_path / "best.pt")
    assert meta["metrics"]["val_top1"] == hist["val_top1"].max()


def test_unet_fit_learns(moon_root, tmp_path):
    train, val = moon_data(moon_root)
    model = common.unet(**SMALL_UNET)
    cfg = common.TrainConfig(epochs=5, batch_size=6, lr=5e-3, augment=common.AugmentConfig(scale=(0.6, 1)))
    hist = common.fit(model, train, val, cfg, tmp_path, progress=False)
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    coverage = float(val.masks.float().mean())
    assert hist["val_iou"].max() > coverage          # better than calling everything rock


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_after_interruption_repeats_the_uninterrupted_run(tiny_root, tmp_path, ema):
    train, val = cls_data(tiny_root)
    cfg = common.TrainConfig(epochs=3, batch_size=30, lr=3e-3, max_steps_per_epoch=3, ema=ema)

    torch.manual_seed(0)
    full = common.fit(common.Classifier(6, **SMALL_CLS), train, val, cfg, tmp_path / "a", progress=False)

    def stop_after_two(hist):
        if len(hist) == 2:
            raise Interrupt()

    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        common.fit(common.Classifier(6, **SMALL_CLS), train, val, cfg, tmp_path / "b", progress=False,
                   callback=stop_after_two)
    torch.manual_seed(123)                       # a fresh model with other initial weights: must not matter
    resumed = common.fit(common.Classifier(6, **SMALL_CLS), train, val, cfg, tmp_path / "b", progress=False)
    cols = ["epoch", "train_loss", "val_loss", "val_top1", "val_top5"]
    assert np.allclose(full[cols].to_numpy(), resumed[cols].to_numpy(), rtol=0, atol=1e-6)


def test_nan_loss_stops_with_a_hint(tiny_root, tmp_path):
    train, val = cls_data(tiny_root)
    cfg = common.TrainConfig(epochs=2, batch_size=30, lr=1e30, optimizer="sgd", max_steps_per_epoch=4)
    with pytest.raises(common.TrainingError, match="epoch 1.*Lower the learning rate"):
        common.fit(common.Classifier(6, **SMALL_CLS), train, val, cfg, tmp_path, progress=False)
    assert not (tmp_path / "last.pt").exists()


def test_variant_b_unfreezes_after_the_frozen_epochs(moon_root, tmp_path):
    train, val = moon_data(moon_root)
    cls = common.Classifier(6, **SMALL_CLS)
    seg = common.load_backbone(common.backbone_unet(cls.config, adapters=(8, 8, 16, 16, 16),
                                                    decoder=(16, 16, 8, 8)), cls)
    start = {k: v.clone() for k, v in seg.encoder.backbone.state_dict().items()}
    snapshots = []
    cfg = common.TrainConfig(epochs=2, batch_size=6, lr=3e-3, freeze_encoder_epochs=1, encoder_lr_mult=0.3)
    common.fit(seg, train, val, cfg, tmp_path, progress=False,
               callback=lambda h: snapshots.append({k: v.clone() for k, v in
                                                    seg.encoder.backbone.state_dict().items()}))
    assert all(torch.equal(snapshots[0][k], start[k]) for k in start)        # epoch 1: frozen
    assert any(not torch.equal(snapshots[1][k], start[k]) for k in start)    # epoch 2: fine-tuned


def test_progressive_resizing_schedule_and_fit(tiny_root, tmp_path):
    cfg = common.TrainConfig(epochs=20, min_size=64, full_size_at=0.85)
    sizes = [common.epoch_input_size(cfg, e) for e in range(20)]
    assert sizes[0] == 64 and sizes[-3:] == [128] * 3 and sizes == sorted(sizes)
    assert all(s % 16 == 0 for s in sizes)
    assert [common.epoch_input_size(common.TrainConfig(epochs=5), e) for e in range(5)] == [128] * 5
    train, val = cls_data(tiny_root)
    cfg = common.TrainConfig(epochs=3, batch_size=30, lr=4e-3, min_size=64, full_size_at=0.6)
    hist = common.fit(common.Classifier(6, **SMALL_CLS), train, val, cfg, tmp_path, progress=False)
    assert list(hist["input_size"]) == [64, 96, 128]


def test_train_or_reuse_retrains_when_a_checkpoint_it_starts_from_changes(moon_root, tmp_path, capsys):
    train, val = moon_data(moon_root)
    cls = common.Classifier(6, **SMALL_CLS)
    dep = tmp_path / "classifier.pt"
    common.save_checkpoint(dep, cls, "classification")
    make = lambda: common.load_backbone(common.backbone_unet(cls.config, adapters=(8, 8, 16, 16, 16),  # noqa: E731
                                                             decoder=(16, 16, 8, 8)), cls)
    cfg = common.TrainConfig(epochs=1, batch_size=6, max_steps_per_epoch=1, freeze_encoder_epochs=-1)
    run = lambda: common.train_or_reuse("bb", make, train, val, cfg, tmp_path, progress=False,  # noqa: E731
                                        depends_on=[dep])
    run()
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


def test_train_true_retrains_a_finished_run_and_auto_exports_it(moon_root, tmp_path, capsys):
    train, val = moon_data(moon_root)
    cfg = common.TrainConfig(epochs=1, batch_size=6, max_steps_per_epoch=1)
    run = lambda mode: common.train_or_reuse("u", lambda: common.unet(**SMALL_UNET), train, val, cfg,  # noqa: E731
                                             tmp_path, mode, progress=False)
    run(True)
    first = (tmp_path / "runs" / "u" / "last.pt").stat().st_mtime_ns
    capsys.readouterr()
    run(True)                                            # a finished run is not "resumed" with nothing to do
    assert "training anew" in capsys.readouterr().out
    assert (tmp_path / "runs" / "u" / "last.pt").stat().st_mtime_ns != first
    (tmp_path / "weights" / "u.pt").unlink()             # e.g. interrupted between the last epoch and the export
    run("auto")
    assert "reusing the finished run" in capsys.readouterr().out and (tmp_path / "weights" / "u.pt").exists()


def test_ema_averages_weights_and_is_what_fit_validates(tiny_root, tmp_path):
    model = common.Classifier(6, **SMALL_CLS)
    ema = common.EMA(model, decay=0.9)
    name, start = next((k, v.clone()) for k, v in model.state_dict().items() if v.is_floating_point())
    with torch.no_grad():
        model.state_dict()[name].add_(1.0)
        for k, v in model.state_dict().items():
            if k.endswith("num_batches_tracked"):
                v.fill_(7)
    ema.update(model)
    d = 2 / 11                                   # the ramp: min(0.9, (1 + 1) / (10 + 1))
    assert torch.allclose(ema.model.state_dict()[name], start + (1 - d), atol=1e-6)
    assert all(int(v) == 7 for k, v in ema.model.state_dict().items() if k.endswith("num_batches_tracked"))

    train, val = cls_data(tiny_root)
    runs = {}
    for decay in (0.0, 0.9):
        cfg = common.TrainConfig(epochs=2, batch_size=30, lr=3e-3, max_steps_per_epoch=3, ema=decay)
        torch.manual_seed(0)
        m = common.Classifier(6, **SMALL_CLS)
        runs[decay] = common.fit(m, train, val, cfg, tmp_path / str(decay), progress=False)
        final = common.evaluate(m, val, common.make_task(train, cfg),     # fit leaves the validated weights
                                precision=common.compute_precision())     # and validates in its training precision
        assert final["loss"] == pytest.approx(runs[decay]["val_loss"].iloc[-1], abs=1e-5)
    assert runs[0.0]["train_loss"].tolist() == runs[0.9]["train_loss"].tolist()   # the raw weights train alike
    assert runs[0.0]["val_loss"].iloc[-1] != runs[0.9]["val_loss"].iloc[-1]        # but the average is validated


def test_encoder_bn_frozen_keeps_the_classifier_statistics_while_its_weights_learn(moon_root, tiny_root, tmp_path):
    train, val = moon_data(moon_root)
    cls = common.Classifier(6, **SMALL_CLS)
    stats = {}
    for mode in ("train", "frozen"):
        seg = common.load_backbone(common.backbone_unet(cls.config, adapters=(8, 8, 16, 16, 16),
                                                        decoder=(16, 16, 8, 8)), cls)
        start = {k: v.clone() for k, v in seg.encoder.backbone.state_dict().items()}
        cfg = common.TrainConfig(epochs=1, batch_size=6, lr=3e-3, max_steps_per_epoch=2, encoder_bn=mode)
        common.fit(seg, train, val, cfg, tmp_path / mode, progress=False)
        after = seg.encoder.backbone.state_dict()
        stats[mode] = any(not torch.equal(after[k], start[k]) for k in start if "running" in k)
        assert any(not torch.equal(after[k], start[k]) for k in start if k.endswith("weight"))
    assert stats == {"train": True, "frozen": False}
    with pytest.raises(ValueError, match="encoder_bn"):
        common.fit(seg, train, val, common.TrainConfig(epochs=1, encoder_bn="eval"), tmp_path / "bad",
                   progress=False)
    with pytest.raises(ValueError, match="segmentation models"):
        common.fit(cls, *cls_data(tiny_root), common.TrainConfig(epochs=1, encoder_bn="frozen"), tmp_path / "bad",
                   progress=False)


def test_committed_run_keys_survive_new_training_options():
    """Options added to TrainConfig after a run was committed must not change that run's key (train_or_reuse
    would retrain it): the key of every committed model is what its config gives today."""
    import json
    from pathlib import Path
    weights = sorted((Path(common.__file__).parent / "weights").glob("*.pt"))
    assert weights
    for w in weights:
        key = common.load_checkpoint(w)[1]["run_key"]["train"]
        cfg = common.TrainConfig(**{**key, "augment": common.AugmentConfig(**key["augment"])})
        assert json.loads(json.dumps(common._config_dict(cfg))) == key, w.name
    assert "ema" not in common._config_dict(common.TrainConfig())
    assert common._config_dict(common.TrainConfig(ema=0.99))["ema"] == 0.99


def test_encoder_sp_pulls_the_classifier_stages_toward_their_start_and_resumes_with_the_same_anchor(moon_root,
                                                                                                     tmp_path):
    train, val = moon_data(moon_root)
    cls = common.Classifier(6, **SMALL_CLS)

    def make():
        return common.load_backbone(common.backbone_unet(cls.config, adapters=(8, 8, 16, 16, 16),
                                                         decoder=(16, 16, 8, 8)), cls)

    start = [p.detach().clone() for p in make().encoder_parameters()]
    drift = lambda m: sum(float((p.detach() - a).norm() ** 2) for p, a in zip(m.encoder_parameters(), start)) ** 0.5
    runs = {}
    for sp in (0.0, 1000.0):
        cfg = common.TrainConfig(epochs=2, batch_size=6, lr=3e-3, max_steps_per_epoch=3, encoder_sp=sp)
        torch.manual_seed(0)
        seg = make()
        runs[sp] = (common.fit(seg, train, val, cfg, tmp_path / f"sp{sp}", progress=False), drift(seg))
    assert 0 < runs[1000.0][1] < 0.5 * runs[0.0][1]
    assert "encoder_sp" not in common._config_dict(common.TrainConfig())

    # an interrupted run resumes toward the weights it started from, not those of the model it is resumed into
    class Stop(Exception):
        pass

    def stop_after_one(hist):
        raise Stop()

    cfg = common.TrainConfig(epochs=2, batch_size=6, lr=3e-3, max_steps_per_epoch=3, encoder_sp=1000.0)
    torch.manual_seed(0)
    with pytest.raises(Stop):
        common.fit(make(), train, val, cfg, tmp_path / "resumed", progress=False, callback=stop_after_one)
    other = common.backbone_unet(cls.config, adapters=(8, 8, 16, 16, 16), decoder=(16, 16, 8, 8))   # random stages
    resumed = common.fit(other, train, val, cfg, tmp_path / "resumed", progress=False)
    cols = ["train_loss", "val_loss", "val_iou"]
    assert np.allclose(runs[1000.0][0][cols].to_numpy(), resumed[cols].to_numpy(), rtol=0, atol=1e-6)
