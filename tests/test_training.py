import dataclasses
import json

import numpy as np
import pytest
import torch

import common
from conftest import spec

CLS, SEG = common.ClassificationTask(), common.SegmentationTask()


def test_classifier_fit_learns(cls_data, small, tmp_path):
    train, val = cls_data
    cfg = common.TrainConfig(epochs=6, batch_size=30, lr=4e-3)
    hist = common.fit(small.classifier(), train, val, cfg, CLS, tmp_path)
    assert list(hist["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert hist["train_top1"].iloc[-1] > hist["train_top1"].iloc[0]     # scored on the augmented training batches
    assert hist["val_top1"].max() > 0.5                      # chance is 1/6
    assert (tmp_path / "history.csv").exists() and (tmp_path / "best.pt").exists()
    _, meta = common.load_checkpoint(tmp_path / "best.pt")
    assert meta["metrics"]["val_top1"] == hist["val_top1"].max()


def test_unet_fit_learns(moon_data, small, tmp_path):
    train, val = moon_data
    cfg = common.TrainConfig(epochs=5, batch_size=6, lr=5e-3, augment=common.AugmentConfig(scale=(0.6, 1)))
    hist = common.fit(small.unet(), train, val, cfg, SEG, tmp_path)
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0] and {"train_iou", "val_iou"} <= set(hist)
    assert hist["val_iou"].max() > float(val.masks.float().mean())      # better than calling everything rock


class Interrupt(Exception):
    pass


def test_resume_after_interruption_repeats_the_uninterrupted_run(cls_data, small, tmp_path):
    """In-process; tests/test_robustness.py kills a training process in the middle of a checkpoint write."""
    train, val = cls_data
    cfg = common.TrainConfig(epochs=3, batch_size=30, lr=3e-3)
    torch.manual_seed(0)
    full = common.fit(small.classifier(), train, val, cfg, CLS, tmp_path / "a")

    def stop_after_two(hist):
        if len(hist) == 2:
            raise Interrupt()

    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        common.fit(small.classifier(), train, val, cfg, CLS, tmp_path / "b", callback=stop_after_two)
    torch.manual_seed(123)                       # a fresh model with other initial weights: must not matter
    resumed = common.fit(small.classifier(), train, val, cfg, CLS, tmp_path / "b")
    cols = ["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5"]
    assert np.allclose(full[cols].to_numpy(), resumed[cols].to_numpy(), rtol=0, atol=1e-6)


FP16 = common.Precision("cpu", "fp16", True, "the T4's path (fp16 autocast and a gradient scaler), on the CPU")


def inf_gradient_at(model, steps):
    """The backward passes numbered in `steps` (0-based, from now on) give the model's first weight an inf gradient,
    as an fp16 overflow would."""
    calls = iter(range(10 ** 6))
    next(model.parameters()).register_hook(lambda g: g * float("inf") if next(calls) in steps else g)
    return model


def test_an_fp16_step_whose_gradients_overflow_is_skipped_and_the_next_one_is_taken(cls_data, small):
    model = common.to_device(small.classifier(), torch.device("cpu"), FP16)
    opt, scaler = torch.optim.AdamW(model.parameters(), lr=1e-2), FP16.scaler()
    x, y = common.preprocess_batch(cls_data[0].images[:16], cls_data[0].labels[:16], torch.device("cpu"), FP16)
    with FP16.autocast():
        assert model(x).dtype == torch.float16                  # the forward really runs in fp16
    before = [p.detach().clone() for p in model.parameters()]
    inf_gradient_at(model, {0})
    common.train_step(model, x, y, CLS, opt, scaler, FP16)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))     # skipped: nothing moved
    assert scaler.get_scale() == 2.0 ** 15                     # and the scale halved (from 2 ** 16)
    common.train_step(model, x, y, CLS, opt, scaler, FP16)
    assert not all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fp16_fit_learns_through_an_overflow_that_would_wreck_an_unscaled_run(cls_data, small, tmp_path):
    """fp16 autocast is several times slower than fp32 on a CPU: few epochs, a small val."""
    train, val = cls_data[0], cls_data[1].subset(range(12))
    cfg = common.TrainConfig(epochs=3, batch_size=30, lr=3e-3)
    model = inf_gradient_at(small.classifier(), {3})
    hist = common.fit(model, train, val, cfg, CLS, tmp_path / "fp16", FP16)
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert list(hist["loss_scale"]) == [2.0 ** 15] * 3         # one step skipped, in epoch 1
    with pytest.raises(common.TrainingError, match="epoch 1"):  # fp32, no scaler: the inf reaches the weights
        common.fit(inf_gradient_at(small.classifier(), {3}), train, val, cfg, CLS, tmp_path / "fp32", "fp32")


def test_fp16_resume_restores_the_gradient_scaler(cls_data, small, tmp_path):
    """The scale halved by the overflow in epoch 2 must survive the interruption after it (few images: fp16 is slow
    on a CPU)."""
    train, val = cls_data[0].subset(range(60)), cls_data[1].subset(range(12))
    cfg = common.TrainConfig(epochs=3, batch_size=30, lr=3e-3)
    torch.manual_seed(0)
    full = common.fit(inf_gradient_at(small.classifier(), {2}), train, val, cfg, CLS, tmp_path / "a", FP16)

    def stop_after_two(hist):
        if len(hist) == 2:
            raise Interrupt()

    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        common.fit(inf_gradient_at(small.classifier(), {2}), train, val, cfg, CLS, tmp_path / "b", FP16,
                   callback=stop_after_two)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=False)["scaler"]["scale"] == 2.0 ** 15
    resumed = common.fit(small.classifier(), train, val, cfg, CLS, tmp_path / "b", FP16)
    cols = ["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "loss_scale"]
    assert np.allclose(full[cols].to_numpy(), resumed[cols].to_numpy(), rtol=0, atol=1e-6)
    assert list(full["loss_scale"]) == [2.0 ** 16, 2.0 ** 15, 2.0 ** 15]


def test_a_resumed_optimizer_keeps_its_own_kernel_under_the_gradient_scaler(small):
    """A run begun with the plain AdamW (on a CPU, or before the GPU's fused one) resumes into a fused AdamW: the
    loaded state must not switch its kernel back, or GradScaler hands its arguments to a kernel that takes none."""
    import hw.training
    model, x = torch.nn.Linear(4, 2), torch.randn(3, 4)
    saved = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(x).sum().backward()
    saved.step()
    fused = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    hw.training.load_state(fused, saved.state_dict())
    assert fused.param_groups[0]["fused"] and int(fused.state_dict()["state"][0]["step"]) == 1
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)      # small: this step must not overflow
    with FP16.autocast():
        loss = model(x).float().sum()
    scaler.scale(loss).backward()
    scaler.step(fused)          # the plain load_state_dict made this raise "Expected grad_scale ... to be None"
    assert int(fused.state_dict()["state"][0]["step"]) == 2


def test_another_task_is_another_run(cls_data, small, tmp_path, capsys):
    common.fit(small.classifier(), *cls_data, common.TrainConfig(epochs=1, batch_size=30), CLS, tmp_path)
    capsys.readouterr()
    common.fit(small.classifier(), *cls_data, common.TrainConfig(epochs=1, batch_size=30),
               common.ClassificationTask(label_smoothing=0.1), tmp_path)
    assert "belongs to another run" in capsys.readouterr().out


def test_nan_loss_stops_with_a_hint(cls_data, small, tmp_path):
    cfg = common.TrainConfig(epochs=2, batch_size=30, lr=1e30)
    with pytest.raises(common.TrainingError, match="epoch 1.*Lower the learning rate"):
        common.fit(small.classifier(), *cls_data, cfg, CLS, tmp_path)
    assert not (tmp_path / "last.pt").exists()


@pytest.mark.parametrize("frozen", [True, False])
def test_variant_a_keeps_the_classifiers_stages_and_b_fine_tunes_them(moon_data, small, tmp_path, frozen):
    seg = small.backbone(small.classifier())
    start = {k: v.clone() for k, v in seg.encoder.backbone.state_dict().items()}
    common.fit(seg, *moon_data, common.TrainConfig(epochs=1, batch_size=6, lr=3e-3, freeze_encoder=frozen), SEG,
               tmp_path)
    end = seg.encoder.backbone.state_dict()
    assert all(torch.equal(end[k].cpu(), start[k]) for k in start) == frozen    # BN statistics included


def test_progressive_resizing_schedule_and_fit(cls_data, small, tmp_path):
    cfg = common.TrainConfig(epochs=20, min_size=64, full_size_at=0.85)
    sizes = [cfg.input_size(e) for e in range(20)]
    assert sizes[0] == 64 and sizes[-3:] == [128] * 3 and sizes == sorted(sizes)
    assert all(s % 16 == 0 for s in sizes)
    assert [common.TrainConfig(epochs=5).input_size(e) for e in range(5)] == [128] * 5
    cfg = common.TrainConfig(epochs=3, batch_size=30, lr=4e-3, min_size=64, full_size_at=0.6)
    hist = common.fit(small.classifier(), *cls_data, cfg, CLS, tmp_path)
    assert list(hist["input_size"]) == [64, 96, 128]


def test_train_or_reuse_retrains_when_a_checkpoint_it_starts_from_changes(moon_data, small, tmp_path, capsys):
    cls = small.classifier()
    dep = tmp_path / "weights" / "classifier.pt"       # a backbone U-Net starts from the classifier's weights
    common.save_checkpoint(dep, cls, "classification")
    cfg = common.TrainConfig(epochs=1, batch_size=6, freeze_encoder=True)
    bb = spec("bb", small.backbone(cls), cfg, SEG)
    assert bb.depends_on(tmp_path / "weights") == [dep]

    def run():
        model, _, meta = common.train_or_reuse(bb, small.backbone(cls), moon_data, common.Runs(tmp_path))
        common.export_final("bb", model, meta, {}, tmp_path)
        return meta
    meta = run()
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
    out = capsys.readouterr().out
    assert "training anew" in out and "epoch 1/1" in out    # ... so the backbone U-Net on top of it is, from epoch 1


def test_train_retrains_a_finished_run_and_auto_exports_it(moon_data, small, tmp_path, capsys):
    cfg = common.TrainConfig(epochs=1, batch_size=6)

    def run(mode):
        model, _, meta = common.train_or_reuse(spec("u", small.unet(), cfg, SEG), small.unet(), moon_data,
                                               common.Runs(tmp_path, mode))
        return common.export_final("u", model, meta, {}, tmp_path)
    run("train")
    first = (tmp_path / "runs" / "u" / "last.pt").stat().st_mtime_ns
    capsys.readouterr()
    run("train")                                         # a finished run is not "resumed" with nothing to do
    assert "training anew" in capsys.readouterr().out
    assert (tmp_path / "runs" / "u" / "last.pt").stat().st_mtime_ns != first
    (tmp_path / "weights" / "u.pt").unlink()             # e.g. interrupted between the last epoch and the export
    run("auto")
    out = capsys.readouterr().out
    assert "1 of 1 epochs were done" in out and "epoch 1/1" not in out and (tmp_path / "weights" / "u.pt").exists()
    with pytest.raises(common.CheckpointError, match="no weights"):
        common.train_or_reuse(spec("v", small.unet(), cfg, SEG), small.unet(), moon_data,
                              common.Runs(tmp_path, "reuse"))
    with pytest.raises(ValueError, match="train must be"):
        run(True)


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
    cfg = common.TrainConfig(epochs=3, batch_size=6, lr=1.0)   # a rate that makes epochs erratic
    model, history, meta = common.train_or_reuse(spec("u", small.unet(), cfg, SEG, fit_on_val=True), small.unet(),
                                                 (train, val), common.Runs(tmp_path, "train"))
    assert meta["epoch"] == 3 and meta["fit_on"] == "train+val" and len(history) == 3
    assert meta["run_key"] == common.run_key(cfg, SEG, small.unet(), fit_set, val)
    last = torch.load(tmp_path / "runs" / "u" / "last.pt", weights_only=False)["model"]
    assert common.weights_digest(model.state_dict()) == common.weights_digest(last)      # the last epoch's weights
    assert int(history["val_iou"].idxmax()) + 1 != 3       # the best epoch on val was another: the last one is kept


def test_committed_weights_were_trained_with_the_cpu_recipes():
    """A fresh clone reuses the committed weights only if their run key is what the cpu profile's recipe, task and
    architecture give today (the data part is checked where the data is: tests/test_shared_data.py), with the
    digests of the checkpoints each starts from."""
    weights = common.ROOT / "weights"
    for name, spec_ in common.recipe("cpu").models().items():
        model, meta = common.load_checkpoint(weights / f"{name}.pt")
        init = {p.name: common.weights_digest(p) for p in spec_.depends_on(weights)} or None
        train = dataclasses.replace(spec_.train, init=init)
        assert meta["run_key"]["train"] == json.loads(json.dumps(dataclasses.asdict(train))), name
        assert meta["run_key"]["task"] == spec_.task.params(), name
        assert meta["run_key"]["model"] == model.config == json.loads(json.dumps(model.config)), name
        assert {k: v for k, v in model.config.items() if k != "classifier"} == spec_.architecture, name


def test_every_registered_model_builds_from_its_recipe():
    """Each model of every profile builds from its recipe alone (a backbone U-Net from a classifier of the same
    profile, B from its A), with the architecture the recipe states."""
    for profile in common.PROFILES:
        r = common.recipe(profile)
        cls = r.classifier.build()
        assert cls.config["num_classes"] == r.classes
        built = {}
        for name, m in r.models().items():
            model = m.build(cls, start=built.get(m.starts_from))
            assert {k: v for k, v in model.config.items() if k != "classifier"} == m.architecture, (profile, name)
            built[name] = model
        assert "widths" in repr(common.PROFILES[profile]) and "adapters" in repr(common.PROFILES[profile])


def test_recipes_apply_the_notebooks_overrides_to_every_model():
    r = common.recipe("cpu", seed=3, epochs=2, batch_size=8, num_classes=7)
    assert r.classes == 7 and r.classifier.build().config["num_classes"] == 7
    assert {(m.train.seed, m.train.epochs, m.train.batch_size) for m in r.models().values()} == {(3, 2, 8)}
    assert common.recipe("cpu").unet.train.epochs == common.PROFILES["cpu"].unet.train.epochs != 2  # untouched
    assert r.backbone_unet_frozen.train.freeze_encoder and not r.backbone_unet_finetuned.train.freeze_encoder
    assert r.classifier.task.label_smoothing == 0.1 and r.unet.task == common.SegmentationTask(1.0, 1.0, 0.5)
    assert not r.classifier.fit_on_val and all(m.fit_on_val for n, m in r.models().items() if n != "classifier")


def test_a_notebook_prints_russian_lines(moon_data, small, tmp_path, capsys, monkeypatch):
    """The set-up cell sets HW_LANG=ru: what train_or_reuse prints in a notebook is Russian."""
    monkeypatch.setenv(common.LANG_ENV, "ru")
    cfg = common.TrainConfig(epochs=1, batch_size=6)
    for _ in range(2):
        model, _, meta = common.train_or_reuse(spec("u", small.unet(), cfg, SEG), small.unet(), moon_data,
                                               common.Runs(tmp_path))
        common.export_final("u", model, meta, {}, tmp_path)
    out = capsys.readouterr().out
    assert "оценка времени обучения на этой машине" in out and "эпоха 1/1" in out and "беру готовые веса" in out
    assert "reusing" not in out and "estimated" not in out
