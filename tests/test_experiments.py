"""The recipe search's saved results must match the recipes that experiments/sweep.py defines."""
import json
import sys
from pathlib import Path

import common

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import sweep  # noqa: E402


def test_every_recipe_builds_and_saved_runs_match_their_recipe():
    cls = common.Classifier(100)
    for group, runs in sweep.GROUPS.items():
        for name, spec in runs.items():
            aug = common.AugmentConfig(**{**({} if group == "cls" else sweep.SEG_AUG), **spec.get("aug", {})})
            common.TrainConfig(**spec["train"], augment=aug)
            if group.startswith("bb"):
                sweep.backbone_model(cls.config, spec)
            assert sweep.cpu_minutes(group, spec["train"], spec.get("model")) > 0
    for f in (ROOT / "experiments" / "results").glob("*.json"):
        for r in json.loads(f.read_text())["runs"]:
            assert r["spec"] == json.loads(json.dumps(sweep.GROUPS[r["group"]][r["name"]], default=list)), r["name"]


def test_cpu_cost_model_prefers_progressive_resizing():
    """Twenty epochs growing from 64 to 128 px save at least a quarter of twenty epochs at 128 px (validation
    included), and still cost more than ten at 128 px; the bounds are loose because `sweep.py cost` times short
    bursts, and re-measuring moves each number by several per cent."""
    p20 = sweep.cpu_minutes("cls", sweep.P20)
    assert p20 < 0.75 * sweep.cpu_minutes("cls", dict(sweep.CLS, epochs=20))
    assert p20 > sweep.cpu_minutes("cls", dict(sweep.CLS, epochs=10))


def test_cost_table_was_measured():
    """experiments/cpu_costs.json is written by `sweep.py cost`, not typed: it names the machine it was measured
    on; every recipe's estimate above finds its costs in it."""
    costs = json.loads(sweep.COSTS.read_text())
    assert {"device", "torch", "threads", "steps"} <= set(costs)
    assert set(costs["cls_train_img_s"]) == {str(s) for s in sweep.CLS_SIZES}
