"""The scores the retired moon test split got before it was replaced, read from the metrics files that the commits
which scored it committed (git history), into results/retired_test_split.json (notebook 02 and experiments/README.md
quote them). That split had been the validation split of the earlier single-split search (hw/moon_selection.json,
group search_val), so its scores are no estimate on frames no choice saw; it is now part of the frames the
test split is never drawn from.

    python experiments/retired_test.py
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import common  # noqa: E402

# the two commits whose notebooks scored the retired test split, each with a newly trained set of models
SCORINGS = {"10c496e": "trained on train, threshold chosen on val",
            "942eb73": "trained on train + val, threshold 0.5 fixed beforehand"}
MODELS = ("unet", "backbone_unet_frozen", "backbone_unet_finetuned")


def scores(commit, name):
    m = json.loads(subprocess.run(["git", "show", f"{commit}:weights/{name}_metrics.json"], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout)
    return {"iou": m["test"]["iou"], "iou_ci": m["test"]["iou_ci"], "threshold": m["threshold"], "n": m["test"]["n"]}


def main():
    out = {"about": "test IoU of the retired moon test split (= the earlier search's validation split), per scoring",
           "scorings": [{"commit": c, "what": what, "models": {n: scores(c, n) for n in MODELS}}
                        for c, what in SCORINGS.items()]}
    common.save_json(out, ROOT / "experiments" / "results" / "retired_test_split.json")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
