"""Set keys in the meta of checkpoints, the tensors unchanged: a one-off migration when the meta schema grows,
so committed weights keep being reused (their run key and weights digest stay the same).

    python experiments/rewrite_meta.py weights/*.pt --set precision=bf16 "machine=not recorded"

Only keys that a checkpoint lacks are set (--force overwrites); prints each file's weights digest before and after.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--set", nargs="+", required=True, metavar="KEY=VALUE")
    ap.add_argument("--force", action="store_true", help="overwrite keys that are already there")
    args = ap.parse_args(argv)
    updates = dict(kv.split("=", 1) for kv in args.set)
    for path in args.paths:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        before = common.state_digest(obj["state_dict"])
        new = {k: v for k, v in updates.items() if args.force or k not in obj["meta"]}
        obj["meta"].update(new)
        common.atomic_write(path, lambda p: torch.save(obj, p))
        after = common.weights_digest(path)
        assert after == before, f"{path}: the weights changed"
        print(f"{path}: set {sorted(new) or 'nothing'}; weights {after} unchanged")


if __name__ == "__main__":
    main()
