"""Decisions about a recipe under the seed protocol: every candidate of sweep.py's runs against the baseline (the
notebooks' recipe), both trained with the same seeds, scored on the same validation frames (the test split is never
loaded here), and a fixed threshold of 0.5 against one tuned on validation.

    python experiments/compare.py runs/r2 runs/r3 --baseline none --into experiments/results/decisions.json
    python experiments/compare.py runs/r4 --baseline none --keep-from experiments/results/decisions.json \
        --into experiments/results/decisions.json      # a later candidate; the earlier verdicts stay as recorded

The protocol (experiments/README.md):
- every model is scored with flip TTA, as the notebooks score theirs, at the threshold 0.5 (a tuned threshold is a
  candidate of its own, below), by its per-frame counts on the validation split; the checkpoint scored is the one
  sweep.py keeps, `best.pt`: the epoch of the best val IoU, chosen on these same frames (the notebooks keep the last
  epoch of their final fit instead; `best_minus_last_epoch` below says how far apart the two are);
- a candidate's difference to the baseline is the micro IoU of its seeds' counts pooled over the seeds minus the
  baseline's, with a paired bootstrap interval over the validation frames (both resampled with the same frames)
  at the level 1 - 0.05 / k, where k counts every candidate compared under the protocol so far, those kept from an
  earlier results file (--keep-from, each with the level it was decided at) included (Bonferroni);
- "better" when that interval lies above zero and the candidate beats the baseline with every seed, "worse" in
  the mirrored case, "undecided" otherwise; an undecided candidate leaves the simpler option in the recipe;
- the best epoch against the last: how much higher each run's best per-epoch val IoU is than its last one's
  (`best_minus_last_epoch`), i.e. what choosing the epoch on val could add at most, on the frames it was chosen on;
- the threshold: with each baseline seed (and each checkpoint of --threshold-also), the validation frames are
  halved at random many times; the threshold is tuned on one half and scored on the other, against 0.5 scored on
  the same half. The gain of tuning is the mean over the halvings, with the central 95 % of them as its spread;
  "better" only when that spread lies above zero.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402


def load_runs(folders):
    """{candidate: {seed: (run record, best.pt path)}} of the sweep runs in `folders`."""
    runs = {}
    for folder in map(Path, folders):
        for f in sorted(folder.glob("*.json")):
            r = json.loads(f.read_text())
            runs.setdefault(r["candidate"], {})[r["seed"]] = (r, folder / r["name"] / "best.pt")
    return runs


def val_logits(path, val):
    """Flip-TTA logits on val of a checkpoint (sweep.py's best.pt: the best epoch on val)."""
    model, _ = common.load_checkpoint(path, expect_task="segmentation")
    return common.predict(model, val.images, tta=True)


def iou(counts):
    return common.seg_metrics(counts)["iou"]


def decide(base, cand, level):
    """The verdict on a candidate: base and cand are lists of per-frame counts (N,4), one per seed, the same seeds
    and frames in the same order. The difference is the micro IoU of the seeds' pooled counts; "better" needs the
    paired bootstrap interval at `level` above zero and a gain with every seed ("worse" mirrored)."""
    pb = common.paired_bootstrap_iou(torch.stack(base).sum(0), torch.stack(cand).sum(0), level=level)
    per_seed = [iou(c) - iou(b) for b, c in zip(base, cand)]
    verdict = ("better" if pb["low"] > 0 and min(per_seed) > 0 else
               "worse" if pb["high"] < 0 and max(per_seed) < 0 else "undecided")
    return {"iou": [iou(c) for c in cand], "baseline_iou": [iou(b) for b in base], "diff": pb["diff"],
            "diff_per_seed": per_seed, "interval": [pb["low"], pb["high"]], "verdict": verdict}


def threshold_gain(logits, masks, halvings=500, seed=0, grid=np.round(np.arange(0.2, 0.81, 0.05), 2)):
    """Out-of-sample gain of a threshold tuned on validation: per random halving, IoU on one half at the threshold
    tuned on the other (the grid of `common.best_threshold`) minus IoU there at 0.5, both directions."""
    per_t = torch.stack([common.confusion_counts(logits, masks, float(t)) for t in grid]).double()  # (T, N, 4)
    at_half = int(np.flatnonzero(grid == 0.5)[0])
    rng, gains, chosen = np.random.default_rng(seed), [], []
    for _ in range(halvings):
        perm = rng.permutation(len(masks))
        for a, b in ((perm[: len(perm) // 2], perm[len(perm) // 2:]), (perm[len(perm) // 2:], perm[: len(perm) // 2])):
            t = int(common.micro_iou(per_t[:, a].sum(1)).argmax())
            on_b = common.micro_iou(per_t[:, b].sum(1))
            gains.append(float(on_b[t] - on_b[at_half]))
            chosen.append(float(grid[t]))
    return gains, chosen


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", help="--out folders of sweep.py runs")
    ap.add_argument("--baseline", required=True, help="the candidate name of the notebooks' recipe")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--data", default=None)
    ap.add_argument("--into", required=True, help="the results file to write")
    ap.add_argument("--keep-from", default=None, metavar="RESULTS",
                    help="an earlier results file: its candidates without runs here are kept as recorded and counted in k")
    ap.add_argument("--threshold-also", nargs="*", default=[], metavar="CHECKPOINT",
                    help="other segmentation checkpoints (the notebooks' variants A and B) for the threshold question")
    a = ap.parse_args(argv)

    runs = load_runs(a.folders)
    base = runs.pop(a.baseline)
    val = common.recipe(a.profile).datasets("moon", a.data, progress=False)[1]
    counts, logits = {}, {}
    for cand, seeds in {a.baseline: base, **runs}.items():
        for seed, (_, path) in seeds.items():
            print(f"scoring {cand} seed {seed}", flush=True)
            logits[cand, seed] = val_logits(path, val)
            counts[cand, seed] = common.confusion_counts(logits[cand, seed], val.masks, 0.5)

    prev = json.loads(Path(a.keep_from).read_text()) if a.keep_from else {"candidates": [], "threshold": [],
                                                                          "best_minus_last_epoch": {}}
    kept = [{**r, "level": r.get("level", prev.get("level"))} for r in prev["candidates"] if r["candidate"] not in runs]
    k = len(runs) + len(kept) + 1           # the candidates of the sweep, those decided earlier, the tuned threshold
    level = 1 - 0.05 / k
    rows = []
    for cand, seeds in runs.items():
        shared = sorted(set(seeds) & set(base))
        if not shared:
            continue
        rec = seeds[shared[0]][0]
        rows.append({"candidate": cand, "changes": rec["changes"], "seeds": shared, "n_train": rec.get("n_train"),
                     **decide([counts[a.baseline, s] for s in shared], [counts[cand, s] for s in shared], level),
                     "level": level,
                     "wall_min": [seeds[s][0]["wall_s"] / 60 for s in shared],
                     "best_epoch": [seeds[s][0]["best_epoch"] for s in shared]})
    def tuned(name, seeds, logit_list):
        gains, chosen = [], []
        for seed, lg in zip(seeds, logit_list):
            g, t = threshold_gain(lg, val.masks, seed=seed)
            gains, chosen = gains + g, chosen + t
        lo, hi = np.quantile(gains, [0.025, 0.975])
        return {"model": name, "seeds": seeds, "gain_mean": float(np.mean(gains)), "gain_spread": [float(lo), float(hi)],
                "thresholds_chosen": sorted(set(chosen)),
                "verdict": "better" if lo > 0 else "worse" if hi < 0 else "undecided"}

    thr = [tuned(f"unet ({a.baseline})", sorted(base), [logits[a.baseline, s] for s in sorted(base)])]
    for path in a.threshold_also:
        print(f"scoring {path}", flush=True)
        thr.append(tuned(Path(path).stem, [0], [val_logits(path, val)]))
    thr += [t for t in prev["threshold"] if t["model"] not in {x["model"] for x in thr}]
    gaps = {**prev["best_minus_last_epoch"], **{r["name"]: max(r["history"]["val_iou"]) - r["history"]["val_iou"][-1]
                                              for seeds in (base, *runs.values()) for r, _ in seeds.values()}}
    rec = next(iter(base.values()))[0]
    out_iou = {str(s): iou(counts[a.baseline, s]) for s in base}
    out = {"protocol": "seeds, paired bootstrap over validation frames, Bonferroni over the candidates (compare.py)",
           "baseline": a.baseline, "baseline_iou": out_iou,
           "n_val": len(val), "candidates_compared": k, "level": level, "machine": rec["machine"],
           "precision": rec["precision"], "candidates": kept + rows, "threshold": thr,
           "best_minus_last_epoch": gaps,
           # the kept verdicts stand against this baseline only if it trained to the same scores again
           **({"baseline_as_recorded": {s: prev["baseline_iou"].get(s) == v for s, v in out_iou.items()}}
              if a.keep_from else {})}
    common.save_json(out, a.into)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
