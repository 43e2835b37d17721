"""One-off migration of the committed checkpoints to the code without the search-only options (the tensors
unchanged; run once, kept as the record of what changed):

    python experiments/migrate_checkpoints.py weights/*.pt

- a backbone U-Net's config: "full_res" (the high-resolution branch's widths) becomes "branch"; "upsample" (always 1
  in committed weights) goes;
- the run key: "optimizer" (always "adamw") and "schedule" (always "onecycle") leave the training configuration,
  and its "model" becomes the new config.
Checks that each model rebuilds from its new config with every tensor in place and prints its weights digest, which
stays the same. Afterwards `python run_all.py --train no` must reproduce the committed metrics.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402


def migrate_config(cfg):
    cfg = dict(cfg)
    if cfg["arch"] == "backbone_unet" and "full_res" in cfg:
        assert cfg.pop("upsample", 1) == 1, "an upsampled encoder input has no place in the product's code"
        cfg["branch"] = list(cfg.pop("full_res") or [])
    return cfg


def main(paths):
    for path in map(Path, paths):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        before = common.state_digest(obj["state_dict"])
        obj["config"] = migrate_config(obj["config"])
        key = obj["meta"].get("run_key")
        if key:
            assert key["train"].pop("optimizer", "adamw") == "adamw" and key["train"].pop("schedule", "onecycle") == "onecycle"
            key["model"] = obj["config"]
        common.build_model(obj["config"]).load_state_dict(obj["state_dict"])     # strict: every tensor in place
        common.atomic_write(path, lambda p: torch.save(obj, p))
        assert common.weights_digest(path) == before, f"{path}: the weights changed"
        print(f"{path}: config {obj['config'].get('branch', '(unchanged)')}; weights {before} unchanged")


if __name__ == "__main__":
    main(sys.argv[1:])
