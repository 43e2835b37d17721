"""One decision of the compute precision per device (common.compute_precision), fp32 evaluation, and the time
estimate before training, which must leave the run it estimates untouched."""
import json

import pytest
import torch

import common
from conftest import spec
import hw.precision

ROOT = common.ROOT


@pytest.fixture
def fresh_decision(monkeypatch):
    """Every call decides anew, from flags and probe results the test sets."""
    monkeypatch.delenv(common.PRECISION_ENV, raising=False)
    hw.precision._decide.cache_clear()
    yield monkeypatch
    hw.precision._decide.cache_clear()


def test_cpu_precision_follows_the_flags_and_the_probe_only_vetoes(fresh_decision, capsys):
    probe = {"fp32": 0.02, "bf16": 0.01}
    fresh_decision.setattr(hw.precision, "_probe_cpu", lambda: dict(probe))
    fresh_decision.setattr(hw.precision, "native_bf16", lambda: False)
    p = common.compute_precision("cpu")
    assert (p.name, p.channels_last) == ("fp32", True) and "no native bf16" in p.reason
    assert "precision on cpu: fp32" in capsys.readouterr().out            # printed once, with the reason
    common.compute_precision("cpu")
    assert capsys.readouterr().out == ""
    hw.precision._decide.cache_clear()
    fresh_decision.setattr(hw.precision, "native_bf16", lambda: True)
    assert common.compute_precision("cpu", verbose=False).name == "bf16"      # native and 2x faster
    hw.precision._decide.cache_clear()
    probe["bf16"] = 0.019                                                     # native, but not faster
    p = common.compute_precision("cpu", verbose=False)
    assert p.name == "fp32" and "only 1.1x" in p.reason


def test_overrides_argument_then_environment(fresh_decision):
    fresh_decision.setattr(hw.precision, "native_bf16", lambda: False)
    fresh_decision.setenv(common.PRECISION_ENV, "bf16")
    assert common.compute_precision("cpu", verbose=False).name == "bf16"      # forced although emulated
    assert common.compute_precision("cpu", "fp32", verbose=False).name == "fp32"   # the argument wins
    with pytest.raises(ValueError, match="fp16 autocast is for CUDA"):
        common.compute_precision("cpu", "fp16")
    fresh_decision.setenv(common.PRECISION_ENV, "half")
    with pytest.raises(ValueError, match="HW_PRECISION"):
        common.compute_precision("cpu")


def test_precision_objects_autocast_and_scale_as_named():
    x = torch.randn(4, 8)
    w = torch.randn(8, 8)
    with common.Precision("cpu", "bf16", True, "").autocast():
        assert (x @ w).dtype == torch.bfloat16
    with common.Precision("cpu", "fp32", True, "").autocast():
        assert (x @ w).dtype == torch.float32
    assert not common.Precision("cpu", "bf16", True, "").scaler().is_enabled()
    assert common.Precision("cpu", "fp16", True, "").scaler().is_enabled()      # fp16 always scales its loss
    assert common.Precision("cpu", "bf16", True, "").evaluation().name == "fp32"


def test_the_estimate_before_training_leaves_the_run_untouched(cls_data, small, tmp_path, capsys):
    """train_or_reuse estimates the time before it trains, on a copy: the run ends exactly as `fit` alone ends it
    (history, the chosen weights), and the estimate is printed and stored with the precision and the machine."""
    train, val = cls_data
    cfg = common.TrainConfig(epochs=2, batch_size=30, lr=3e-3, min_size=64, full_size_at=0.5)
    task = common.ClassificationTask()

    def make():
        torch.manual_seed(0)
        return small.classifier()
    alone = common.fit(make(), train, val, cfg, task, tmp_path / "alone")
    model, hist, meta = common.train_or_reuse(spec("c", make(), cfg, task), make(), (train, val),
                                              common.Runs(tmp_path, "train"))
    timing = ["epoch_time_s", "images_per_s"]
    assert hist.drop(columns=timing).equals(alone.drop(columns=timing))
    best, _ = common.load_checkpoint(tmp_path / "alone" / "best.pt")
    assert common.weights_digest(model.state_dict()) == common.weights_digest(best.state_dict())
    assert "estimated training time on this machine" in capsys.readouterr().out
    assert meta["estimated_train_s"] > 0 and meta["precision"] in common.PRECISIONS and meta["machine"]


def test_estimate_times_each_input_size_the_schedule_has(moon_data, small):
    """Progressive resizing: both ends of the input sizes, sides in between interpolated; a frozen encoder is timed
    frozen, on a copy."""
    train, val = moon_data
    task = common.SegmentationTask()
    cfg = common.TrainConfig(epochs=4, batch_size=6, min_size=64, full_size_at=0.5)
    est = common.estimate_fit_time(small.unet(), train, val, cfg, task)
    assert set(est["step_s"]) == {"64 px", "128 px"} and len(est["epoch_s"]) == 4
    # each epoch is its side's step time times the batches (sides in between interpolated by pixel count), plus the
    # same validation time: epochs 1-4 train at 64, 96, 128 and 128 px
    n, (s64, s128), e = cfg.steps_per_epoch(len(train)), (est["step_s"]["64 px"], est["step_s"]["128 px"]), est["epoch_s"]
    w = (96 ** 2 - 64 ** 2) / (128 ** 2 - 64 ** 2)
    assert [cfg.input_size(k) for k in range(4)] == [64, 96, 128, 128] and e[2] == e[3]
    assert e[3] - e[0] == pytest.approx(n * (s128 - s64)) and e[1] - e[0] == pytest.approx(n * w * (s128 - s64))
    assert est["total_s"] == pytest.approx(sum(e))
    model = small.backbone(small.classifier())
    est = common.estimate_fit_time(model, train, val, common.TrainConfig(epochs=3, batch_size=6, freeze_encoder=True),
                                   task, first_epoch=1)
    assert set(est["step_s"]) == {"128 px, frozen"} and len(est["epoch_s"]) == 2
    assert not model.encoder_frozen and all(p.requires_grad for p in model.parameters())   # the model itself


def test_segmentation_results_report_at_a_given_threshold_or_the_best_on_the_split(moon_data, small):
    val = moon_data[1]
    model = small.unet()
    chosen = common.segmentation_results(model, val)
    kept = common.segmentation_results(model, val, threshold=0.8)
    assert kept["threshold"] == 0.8 and kept["metrics"]["threshold"] == 0.8 and kept["threshold_table"] is not None
    assert chosen["threshold"] in set(chosen["threshold_table"]["threshold"])
    assert chosen["metrics"]["iou"] == max(chosen["threshold_table"]["iou"])


def test_committed_weights_say_which_precision_and_machine_trained_them():
    weights = sorted((ROOT / "weights").glob("*.pt"))
    assert weights
    for w in weights:
        meta = common.load_checkpoint(w)[1]
        assert meta["precision"] in common.PRECISIONS and meta["machine"], w.name
    timings = json.loads((ROOT / "weights" / "timings.json").read_text())
    assert set(timings["machines"]) == set(timings["precisions"]) == set(timings["minutes"])


GPUS = {"Tesla P100-PCIE-16GB": (6, 0), "Tesla V100-SXM2-16GB": (7, 0), "Tesla T4": (7, 5),
        "NVIDIA A100-SXM4-40GB": (8, 0)}


@pytest.fixture
def emulated_gpu(fresh_decision):
    """emulated_gpu(name): torch.cuda answers as that GPU would (its name and compute capability; bf16 tensors can
    be made on every one of them, so is_bf16_supported() with its default including_emulation=True says yes)."""
    def emulate(name):
        cap = GPUS[name]
        hw.precision._decide.cache_clear()
        fresh_decision.setattr(torch.cuda, "get_device_name", lambda *a: name)
        fresh_decision.setattr(torch.cuda, "get_device_capability", lambda *a: cap)
        fresh_decision.setattr(torch.cuda, "is_bf16_supported",
                               lambda including_emulation=True: including_emulation or cap >= (8, 0))
    return emulate


@pytest.mark.parametrize("gpu, chosen, channels_last", [
    ("Tesla T4", "fp16", True), ("Tesla V100-SXM2-16GB", "fp16", True), ("NVIDIA A100-SXM4-40GB", "bf16", True),
    ("Tesla P100-PCIE-16GB", "fp32", False)])
def test_cuda_precision_follows_the_gpus_compute_capability(emulated_gpu, capsys, gpu, chosen, channels_last):
    emulated_gpu(gpu)
    p = common.compute_precision("cuda")
    assert (p.name, p.channels_last, p.device) == (chosen, channels_last, "cuda")
    major, minor = GPUS[gpu]
    printed = capsys.readouterr().out
    assert f"precision on cuda: {chosen}" in printed and f"{gpu} (compute capability {major}.{minor})" in printed


@pytest.mark.parametrize("gpu", ["Tesla T4", "Tesla V100-SXM2-16GB"])
def test_bf16_asked_for_on_a_gpu_without_native_bf16_is_refused_with_the_cost(emulated_gpu, gpu):
    emulated_gpu(gpu)
    with pytest.raises(ValueError, match=r"compute capability 7\.\d\) computes bf16 only by emulation.*slower"):
        common.compute_precision("cuda", "bf16")
    assert common.compute_precision("cuda", "fp16", verbose=False).name == "fp16"       # what it suggests works
    emulated_gpu("NVIDIA A100-SXM4-40GB")
    assert common.compute_precision("cuda", "bf16", verbose=False).name == "bf16"


def test_the_machine_of_a_gpu_run_names_the_gpu_and_its_capability(emulated_gpu):
    emulated_gpu("Tesla T4")
    assert common.machine("cuda") == "Tesla T4 (compute capability 7.5)"
