"""experiments/sweep.py: candidates are the product's recipes plus changes; the recorded search rounds can be rerun
from the commit that experiments/README.md names."""
import dataclasses
import json
import re
import subprocess
import sys

import pytest
import torch

import common

sys.path.insert(0, str(common.ROOT / "experiments"))
import compare  # noqa: E402
import sweep  # noqa: E402


def test_a_candidate_is_the_notebooks_recipe_plus_its_changes():
    cfg, task = sweep.candidate("cpu", "unet", {"task.dice": 0.0, "augment.hflip": True, "epochs": 7}, seed=2)
    base = common.recipe("cpu", seed=2).unet
    assert cfg == dataclasses.replace(base.train, epochs=7, augment=dataclasses.replace(base.train.augment, hflip=True))
    assert task == dataclasses.replace(base.task, dice=0.0)
    cfg, task = sweep.candidate("cpu", "unet", {}, seed=0, loss="lovasz")
    assert isinstance(task, sweep.LovaszTask) and task.params() == base.task.params()
    with pytest.raises(TypeError):
        sweep.candidate("cpu", "unet", {"no_such_field": 1}, seed=0)


@pytest.mark.slow
def test_a_smoke_run_writes_what_summary_and_collect_read(tmp_path, capsys):
    sweep.main(["run", "unet", "--name", "bce", "--set", "task.dice=0.0", "--seeds", "0", "1", "--profile", "demo",
                "--out", str(tmp_path / "runs"), "--smoke"])
    runs = sorted((tmp_path / "runs").glob("*.json"))
    assert [p.stem for p in runs] == ["bce_seed0", "bce_seed1"]
    r = json.loads(runs[0].read_text())
    assert r["task"]["dice"] == 0.0 and r["config"]["epochs"] == 2 and r["machine"] and len(r["history"]["epoch"]) == 2
    sweep.main(["collect", str(tmp_path / "runs"), "--into", str(tmp_path / "results.json"), "--round", "1"])
    assert len(json.loads((tmp_path / "results.json").read_text())["runs"]) == 2
    sweep.main(["summary", str(tmp_path / "runs")])
    assert "bce_seed1" in capsys.readouterr().out

    # compare.py: a later candidate joins the recorded verdicts, which stay as they were and count in k
    sweep.main(["run", "unet", "--name", "none", "--seeds", "0", "1", "--profile", "demo", "--out",
                str(tmp_path / "none"), "--smoke"])
    first, second, later = tmp_path / "first.json", tmp_path / "second.json", tmp_path / "later"
    compare.main([str(tmp_path / "none"), str(tmp_path / "runs"), "--baseline", "none", "--profile", "demo",
                  "--into", str(first)])
    later.mkdir()       # the same runs under another name: a later candidate with the same counts
    for p in runs:
        (later / p.name).write_text(json.dumps(dict(json.loads(p.read_text()), candidate="again")))
        (later / p.stem).symlink_to(p.parent / p.stem)
    compare.main([str(tmp_path / "none"), str(later), "--baseline", "none", "--profile", "demo",
                  "--keep-from", str(first), "--into", str(second)])
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert a["candidates_compared"] == 2 and b["candidates_compared"] == 3
    assert [r["candidate"] for r in b["candidates"]] == ["bce", "again"] and b["candidates"][0] == a["candidates"][0]
    kept, new = b["candidates"]
    assert kept["level"] == pytest.approx(1 - 0.05 / 2) and new["level"] == pytest.approx(1 - 0.05 / 3) == b["level"]
    assert new["diff"] == pytest.approx(kept["diff"])
    assert new["interval"][0] <= kept["interval"][0] and new["interval"][1] >= kept["interval"][1]  # a higher level
    assert set(a["best_minus_last_epoch"]) == set(b["best_minus_last_epoch"])
    assert "baseline_as_recorded" not in a and b["baseline_as_recorded"] == {"0": True, "1": True}


def test_every_recorded_search_run_is_defined_at_the_commit_named_in_the_readme():
    readme = (common.ROOT / "experiments" / "README.md").read_text()
    commit = re.search(r"code that ran them is commit \*\*`([0-9a-f]{40})`\*\*", readme).group(1)
    try:
        old = subprocess.run(["git", "show", f"{commit}:experiments/sweep.py"], cwd=common.ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history here (an archive or a shallow clone)")
    assert f"git checkout {commit}" in readme
    for f in (common.ROOT / "experiments" / "results").glob("sweep_*.json"):
        for r in json.loads(f.read_text())["runs"]:
            assert f'"{r["name"]}"' in old, f"{f.name}: {r['name']} is not defined at {commit[:12]}"


def test_lovasz_hinge_is_zero_for_confident_right_logits_and_grows_with_errors():
    t = (torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    right = sweep.lovasz_hinge(t * 20 - 10, t)
    assert float(right) == 0.0
    assert float(sweep.lovasz_hinge(torch.zeros_like(t), t)) == pytest.approx(1.0)
    assert float(sweep.lovasz_hinge(10 - t * 20, t)) > 1.0
    logits = torch.zeros_like(t, requires_grad=True)
    sweep.lovasz_hinge(logits, t).backward()
    assert (logits.grad[t > 0] < 0).any() and (logits.grad[t == 0] >= 0).all()


def test_subsample_keeps_a_stratified_fraction(moon_data):
    train = moon_data[0]
    half = sweep.subsample(train, 0.5)
    assert len(half) == pytest.approx(len(train) / 2, abs=1)
    assert set(half.ids) <= set(train.ids)
    assert sweep.subsample(train, 1.0) is train


def _counts(ious, n_pixels=1000):
    """Per-frame counts (N,4) whose frames have the given IoUs (tp + fp + fn = 100 rock-related pixels)."""
    tp = torch.tensor([round(100 * i) for i in ious])
    return torch.stack([tp, 100 - tp, torch.zeros_like(tp), n_pixels - 100 + 0 * tp], 1)


def test_compare_calls_a_candidate_better_only_when_the_interval_and_every_seed_agree():
    base = [_counts([0.5] * 60), _counts([0.5] * 60)]
    assert compare.decide(base, [_counts([0.7] * 60)] * 2, 0.99)["verdict"] == "better"
    assert compare.decide(base, [_counts([0.3] * 60)] * 2, 0.99)["verdict"] == "worse"
    noisy = [_counts([0.5 + (0.2 if i % 2 else -0.2) for i in range(60)])] * 2      # the same mean, frame by frame apart
    assert compare.decide(base, noisy, 0.99)["verdict"] == "undecided"
    split = [_counts([0.7] * 60), _counts([0.45] * 60)]                               # the seeds disagree
    assert compare.decide(base, split, 0.99)["verdict"] == "undecided"


def test_threshold_gain_is_scored_on_frames_the_threshold_was_not_tuned_on():
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(40, 1, 8, 8, generator=g) > 0.8).float()
    shifted = (masks * 2 - 1) * 3 - 1.0          # every rock pixel at sigmoid(2) = 0.88, background at sigmoid(-4)
    gains, chosen = compare.threshold_gain(shifted, masks, halvings=10)
    assert len(gains) == 20 and max(abs(x) for x in gains) < 1e-12     # perfect at any threshold: nothing to gain
    # logits that say nothing: predicting more rock raises the IoU (towards the rock share), so a low threshold is
    # chosen on every half and gains on the other
    noise = torch.randn(40, 1, 8, 8, generator=g) * 3
    gains, chosen = compare.threshold_gain(noise, masks, halvings=10)
    assert max(chosen) <= 0.3 and min(gains) > 0


def test_ablation_chooses_the_best_pretrained_design_that_beat_literal_b_or_none():
    import ablation
    row = lambda name, enc, verdict, iou: {"name": name, "encoder": enc, "verdict_vs_literal_B": verdict,  # noqa: E731
                                           "val_iou": iou}
    rows = [row("literal_B", "classifier", "reference", [0.5, 0.5]), row("a", "classifier", "better", [0.55, 0.56]),
            row("b", "classifier", "better", [0.57, 0.55]), row("c", "random", "better", [0.6, 0.6]),
            row("d", "classifier", "undecided", [0.7, 0.4])]
    assert ablation.choose(rows) == "b"               # the random encoder is a control, never the design
    assert ablation.choose(rows[:1] + rows[3:]) is None
    assert ablation.output_size({"architecture": {"branch": [32]}}) == 128
    assert ablation.output_size({"architecture": {"branch": []}}) == 64


def test_load_branch_starts_the_full_resolution_level_from_the_base_unets_first():
    cls = common.Classifier(10)
    base = common.unet(widths=(8, 12, 16, 24, 32), decoder=(24, 16, 12, 8)).eval()
    seg = sweep.load_branch(common.load_backbone(common.backbone_unet(cls.config, branch=(8,)), cls), base).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(seg.encoder(x)[0], base.encoder(x)[0])       # stride 1: the U-Net's first level itself
    assert torch.equal(seg.encoder.backbone.stages[0][0][0].weight, cls.encoder.stages[0][0][0].weight)
    with pytest.raises(common.CheckpointError, match="does not fit"):
        sweep.load_branch(common.backbone_unet(cls.config, branch=(16,)), base)
    with pytest.raises(common.CheckpointError, match="no full-resolution level"):
        sweep.load_branch(common.backbone_unet(cls.config), base)


def test_the_full_resolution_recipe_is_the_design_the_ablation_chose():
    """Notebook 03 trains the full-resolution pair from the recipe (hw/recipes.py), not from the results file: the
    recipe's architecture must be the one the ablation chose on val, and the notebooks' other backbone models the
    ablation's A and B."""
    from experiments import results
    abl = results.load("backbone_ablation_val.json")
    arch = {r["name"]: {k: v for k, v in r["architecture"].items() if k != "classifier"} for r in abl["rows"]}
    assert abl["best"] == "fullres_B"
    assert arch["fullres_B"] == common.CPU.backbone_unet_fullres.architecture
    assert arch["literal_B"] == common.CPU.backbone_unet_finetuned.architecture


def test_a_profile_names_only_models_of_the_recipe():
    with pytest.raises(ValueError, match="no model"):
        common.vary(common.CPU, fronzen=dict(epochs=1))
