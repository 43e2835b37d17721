"""experiments/sweep.py: candidates are the product's recipes plus changes; the recorded search rounds can be rerun
from the tag that experiments/README.md names."""
import json
import subprocess
import sys

import pytest

import common

sys.path.insert(0, str(common.ROOT / "experiments"))
import sweep  # noqa: E402


def test_a_candidate_is_the_notebooks_recipe_plus_its_changes():
    cfg = sweep.candidate("cpu", "unet", {"dice_weight": 0.0, "augment.hflip": True}, seed=2)
    base = common.recipe("cpu", seed=2).unet
    assert cfg.dice_weight == 0.0 and cfg.augment.hflip and cfg.seed == 2
    assert cfg.key() == {**base.key(), "dice_weight": 0.0, "augment": {**base.key()["augment"], "hflip": True}}
    with pytest.raises(TypeError):
        sweep.candidate("cpu", "unet", {"no_such_field": 1}, seed=0)


@pytest.mark.slow
def test_a_smoke_run_writes_what_summary_and_collect_read(tmp_path, capsys):
    sweep.main(["run", "unet", "--name", "bce", "--set", "dice_weight=0.0", "--seeds", "0", "1", "--profile", "demo",
                "--out", str(tmp_path / "runs"), "--smoke"])
    runs = sorted((tmp_path / "runs").glob("*.json"))
    assert [p.stem for p in runs] == ["bce_seed0", "bce_seed1"]
    r = json.loads(runs[0].read_text())
    assert r["config"]["dice_weight"] == 0.0 and 0 <= r["iou_thr_tta"] <= 1 and r["machine"]
    sweep.main(["collect", str(tmp_path / "runs"), "--into", str(tmp_path / "results.json"), "--round", "1"])
    assert len(json.loads((tmp_path / "results.json").read_text())["runs"]) == 2
    sweep.main(["summary", str(tmp_path / "runs")])
    assert "bce_seed1" in capsys.readouterr().out


def test_every_recorded_search_run_is_defined_at_the_tag_named_in_the_readme():
    readme = (common.ROOT / "experiments" / "README.md").read_text()
    assert "search-rounds" in readme
    try:
        old = subprocess.run(["git", "show", "search-rounds:experiments/sweep.py"], cwd=common.ROOT,
                             capture_output=True, text=True, check=True).stdout
        commit = subprocess.run(["git", "rev-parse", "search-rounds^{commit}"], cwd=common.ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history here (an archive, or a clone without tags)")
    assert commit[:12] in readme
    for f in (common.ROOT / "experiments" / "results").glob("sweep_*.json"):
        for r in json.loads(f.read_text())["runs"]:
            assert f'"{r["name"]}"' in old, f"{f.name}: {r['name']} is not defined at the tag"
