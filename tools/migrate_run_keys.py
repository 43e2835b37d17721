"""One-off migration of the committed checkpoints' run keys (weights/*.pt, tensors untouched): the digests of the
checkpoints a model starts from moved from the key's "depends_on" into its training configuration
(`TrainConfig.init`), so one key decides reuse and resume alike. Idempotent.

    python tools/migrate_run_keys.py
"""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    import common
    for path in sorted((ROOT / "weights").glob("*.pt")):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        key = obj["meta"].get("run_key")
        if not key or "init" in key["train"]:
            continue
        key["train"]["init"] = key.pop("depends_on", None)
        common.atomic_write(path, lambda p: torch.save(obj, p))
        print(f"{path.name}: init = {key['train']['init']}")


if __name__ == "__main__":
    main()
