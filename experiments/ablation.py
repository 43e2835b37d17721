"""Part 3's ablation: why the classifier's backbone loses to the plain U-Net. Each row is one design, trained by
sweep.py with seeds 0 and 1 on train and scored on val (the test split is never loaded here) under the seed protocol
of compare.py: paired bootstrap over the val frames, Bonferroni over every comparison made here, a verdict only when
every seed agrees. Each design is compared with the literal variant B; two contrasts isolate transfer (the same
network with the classifier's weights against random ones). The design chosen for a final fit (notebook 03) is the
best of those with the classifier's stages that beat literal B, or none.

    python experiments/sweep.py run backbone_unet_frozen --name literal_A --seeds 0 1 --out runs/ablation
    python experiments/sweep.py run backbone_unet_finetuned --name literal_B --init 'runs/ablation/literal_A_seed{seed}/best.pt' \\
        --seeds 0 1 --out runs/ablation
    python experiments/sweep.py run backbone_unet_fullres_frozen --name fullres_A --seeds 0 1 --out runs/ablation
    python experiments/sweep.py run backbone_unet_fullres --name fullres_B \\
        --init 'runs/ablation/fullres_A_seed{seed}/best.pt' --seeds 0 1 --out runs/ablation
    python experiments/sweep.py run backbone_unet_finetuned --name random_B --random-encoder --set epochs=50 --seeds 0 1 \\
        --out runs/ablation
    python experiments/sweep.py run backbone_unet_fullres --name fullres_random --random-encoder --set epochs=50 \\
        --seeds 0 1 --out runs/ablation
    python experiments/ablation.py runs/ablation --into experiments/results/backbone_ablation_val.json

A row that starts from another run (B from A) counts that run's minutes too. Notebook 03 adds the test scores of
the final fits and the ceilings on the test masks, and writes weights/backbone_ablation.json.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from compare import decide, load_runs, val_logits  # noqa: E402

# row -> (encoder, frozen, the run it starts from); every row is a sweep.py candidate of the same name
ROWS = {"literal_A": ("classifier", True, None),
        "literal_B": ("classifier", False, "literal_A"),
        "random_B": ("random", False, None),
        "fullres_B": ("classifier", False, "fullres_A"),
        "fullres_random": ("random", False, None)}
REFERENCE = "literal_B"
CONTRASTS = {"transfer_literal": ("random_B", "literal_B"), "transfer_fullres": ("fullres_random", "fullres_B")}


def output_size(record):
    """The side at which a run's network predicts: 128 with a full-resolution level, else 64 (the classifier's stem
    has stride 2)."""
    return 128 if record["architecture"].get("branch") else 64


def choose(rows):
    """The design for a final fit: of the rows with the classifier's stages that beat literal B on val (every seed and
    the interval agreeing), the one with the highest mean val IoU; None when none did."""
    better = [r for r in rows if r["verdict_vs_literal_B"] == "better" and r["encoder"] == "classifier"]
    return max(better, key=lambda r: sum(r["val_iou"]) / len(r["val_iou"]))["name"] if better else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--data", default=None)
    ap.add_argument("--into", required=True)
    a = ap.parse_args(argv)
    runs = load_runs(a.folders)
    val = common.recipe(a.profile).datasets("moon", a.data, progress=False)[1]
    counts = {(cand, seed): common.confusion_counts(val_logits(path, val), val.masks, 0.5)
              for cand, seeds in runs.items() if cand in ROWS for seed, (_, path) in seeds.items()}
    seeds = sorted(set.intersection(*(set(runs[r]) for r in ROWS)))
    k = len(ROWS) - 1 + len(CONTRASTS)
    level = 1 - 0.05 / k
    pair = lambda base, cand: decide([counts[base, s] for s in seeds], [counts[cand, s] for s in seeds], level)  # noqa
    rows = []
    for name, (encoder, frozen, starts_from) in ROWS.items():
        rec = runs[name][seeds[0]][0]
        minutes = [runs[name][s][0]["wall_s"] / 60 + (runs[starts_from][s][0]["wall_s"] / 60 if starts_from else 0)
                   for s in seeds]
        d = pair(REFERENCE, name) if name != REFERENCE else None
        rows.append({"name": name, "encoder": encoder, "frozen": frozen, "output_size": output_size(rec),
                     "seeds": seeds, "val_iou": [common.seg_metrics(counts[name, s])["iou"] for s in seeds],
                     "verdict_vs_literal_B": d["verdict"] if d else "reference",
                     "diff_vs_literal_B": d and {k_: d[k_] for k_ in ("diff", "diff_per_seed", "interval")},
                     "val_ceiling_iou": common.ceiling_iou(val.masks, output_size(rec)),
                     "train_minutes": sum(minutes) / len(minutes), "starts_from": starts_from,
                     "architecture": rec["architecture"],
                     "epochs": rec["config"]["epochs"] + (runs[starts_from][seeds[0]][0]["config"]["epochs"]
                                                          if starts_from else 0)})
    contrasts = {c: {"without": base, "with": cand, **pair(base, cand)} for c, (base, cand) in CONTRASTS.items()}
    best = choose(rows)
    out = {"protocol": f"seeds {'/'.join(map(str, seeds))}, paired bootstrap over {len(val)} val frames, Bonferroni "
                       f"over {k} comparisons (level {level:.4f}); sweep.py's best-epoch checkpoints, flip TTA, "
                       "threshold 0.5",
           "profile": a.profile, "seeds": seeds, "level": level, "comparisons": k, "n_val": len(val),
           "machine": runs[REFERENCE][seeds[0]][0]["machine"], "precision": runs[REFERENCE][seeds[0]][0]["precision"],
           "classifier": sorted({r[0].get("classifier") for s in runs.values() for r in s.values()} - {None}),
           "rows": rows, "contrasts": contrasts, "best": best}
    common.save_json(out, a.into)
    print(json.dumps({r["name"]: [round(x, 4) for x in r["val_iou"]] + [r["verdict_vs_literal_B"]] for r in rows}))
    print(json.dumps({c: [round(v["diff"], 4), v["verdict"]] for c, v in contrasts.items()}), "best:", best)


if __name__ == "__main__":
    main()
