"""The README's and docs' tables of the benchmarks' measurements (benchmarks/results, estimates, layout, demo,
reevaluation), as tools/readme_tables.py writes them between their markers."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def reproduction_text():
    """The committed weights re-evaluated on each kind of machine (benchmarks/reevaluate.py): the largest difference
    to the committed metrics."""
    files = sorted((ROOT / "benchmarks" / "reevaluation").glob("*.json"))
    if not files:
        return "_No re-evaluation yet: `python benchmarks/reevaluate.py --json benchmarks/reevaluation/<kind>.json`._"
    runs = [json.loads(f.read_text()) for f in files]
    d_iou = max(abs(m["iou"] - m["committed_iou"]) for r in runs for m in r["models"].values() if "iou" in m)
    d_top1 = max(abs(m["top1"] - m["committed_top1"]) for r in runs for m in r["models"].values() if "top1" in m)
    return (f"The committed weights, re-evaluated on {len(runs)} machine setting(s) (`python benchmarks/reevaluate.py`: "
            + "; ".join(f"{r['machine']}, {r['date'][:10]}" for r in runs) + "), differ from the committed metrics by "
            f"at most **{d_iou:.1e} IoU and {100 * d_top1:.1e} points of top-1** (metrics are computed in fp32 "
            "everywhere, but the fp32 kernels may differ between CPUs).")


def demo_text():
    """How long the offline demo took on each kind of machine (benchmarks/demo_time.py)."""
    files = sorted((ROOT / "benchmarks" / "demo").glob("*.json"))
    if not files:
        return "_No demo timing yet: `python benchmarks/demo_time.py --json benchmarks/demo/<kind>.json`._"
    runs = [json.loads(f.read_text()) for f in files]
    return ("The demo (`python run_all.py --profile demo`, all three notebooks and the PDF report) took " +
            "; ".join(f"**{r['minutes']:.1f} min** on {r['machine']} ({r['precision']}, {r['date'][:10]}, commit "
                      f"{r['commit']})" for r in runs)
            + " (`python benchmarks/demo_time.py`).")


def perf_table():
    """One row per model and kind of machine measured (benchmarks/train_speed.py --json)."""
    lines = ["| machine | precision | model | batch | usual img/s | ours img/s | speedup | usual step alone (fp32, no "
             "data) img/s | GFLOP/img (train) | ours GFLOP/s | % of the precision's matmul peak | inference img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        if f.name.startswith("gpu_check"):
            continue
        r = json.loads(f.read_text())
        machine = f"{r.get('machine', r['device'] + ', ' + str(r['threads']) + ' threads')} (`{f.name}`" + \
            (f", {r['date'][:10]}, {r['data']} data, median of {r['repeats']})" if "date" in r else
             f", a single run with older code and torch {r['torch']}, not measured again)")
        precision = r.get("precision", "bf16 (before per-machine precision)")
        peak = r.get("matmul_peak_gflops", r.get("bf16_matmul_peak_gflops"))
        for row in r["rows"]:
            lines.append(f"| {machine} | {precision} | {row['model']} | {row['batch']} | {row['usual_img_s']:.1f} | "
                         f"{row['ours_img_s']:.1f} | **{row['speedup']:.2f}×** | "
                         f"{row['usual_model_only_fp32_img_s']:.1f} | {row['train_gflop_per_img']:.2f} | "
                         f"{row['ours_gflops']:.0f} | {row['pct_of_peak']:.0f} % of {peak:.0f} | "
                         f"{row['inference_img_s']:.0f} |")
    return "\n".join(lines)


def gpu_table():
    """One row per model and precision of each GPU check (benchmarks/gpu_check.py --json
    benchmarks/results/gpu_check_<gpu>.json), or a line saying there is none yet."""
    files = sorted((ROOT / "benchmarks" / "results").glob("gpu_check*.json"))
    if not files:
        return ("No GPU check has been run yet: `python benchmarks/gpu_check.py --json "
                "benchmarks/results/gpu_check_<gpu>.json` on a CUDA GPU writes the file this table is made from.")
    lines = ["| GPU | precision | model | batch | img/s | GFLOP/img (train) | % of the precision's matmul peak | peak "
             "memory, GB | `gpu` profile, estimated min |", "|---|---|---|---|---|---|---|---|---|"]
    for f in files:
        r = json.loads(f.read_text())
        for row in r["rows"]:
            peak = r["matmul_peak_gflops"][row["precision"]]
            lines.append(f"| {r['machine']} (`{f.name}`, {r['date'][:10]}, commit {r['commit']}) | {row['precision']} | "
                         f"{row['model']} | {row['batch']} | {row['img_s']:.0f} | {row['train_gflop_per_img']:.2f} | "
                         f"{row['pct_of_peak']:.1f} % of {peak:.0f} | {row['peak_memory_gb'] or 0:.1f} | "
                         f"{row['profile_minutes_estimated']:.1f} |")
    return "\n".join(lines)


T4_FP16_PEAK_GFLOPS = 65_000       # NVIDIA's T4 datasheet: fp16 on tensor cores (Colab's free GPU)


def colab_time_text():
    """A labelled estimate of the `gpu` profile's training minutes on a T4, until a GPU check measures one: each
    notebook's training FLOPs (the profile's epochs x images x GFLOP per image at 128 px) at the efficiency (% of the
    matmul peak) measured on the H200 (benchmarks/results/h200_2cores.json, older code), on the T4's nominal peak.
    Progressive resizing and validation are left out."""
    import common
    rows = {r["model"]: r for r in json.loads((ROOT / "benchmarks" / "results" / "h200_2cores.json").read_text())["rows"]}
    rec = common.recipe("gpu")
    # Tiny ImageNet's 500 train images per class, 90 % of them in train; the course's 1000 moon frames less test
    images, frames = rec.classes * 500 * 9 // 10, round(1000 * (1 - common.MOON_TEST))

    def minutes(model, epochs, n):
        r = rows[model]
        return epochs * n * r["train_gflop_per_img"] / (T4_FP16_PEAK_GFLOPS * r["pct_of_peak"] / 100) / 60
    m = [minutes("classifier", rec.classifier.train.epochs, images), minutes("unet", rec.unet.train.epochs, frames),
         2 * minutes("unet", rec.backbone_unet_frozen.train.epochs + rec.backbone_unet_finetuned.train.epochs, frames)]
    return (f"An estimate, not a measurement, of the training on a T4: about **{m[0]:.0f} min** for notebook 01, "
            f"**{m[1]:.0f} min** for 02 and **{m[2]:.0f} min** for 03 (its four fits counted at the U-Net's cost per "
            f"frame): each notebook's training FLOPs at the share of the matmul peak that the H200 reached with older "
            f"code ({rows['classifier']['pct_of_peak']:.0f} % and {rows['unet']['pct_of_peak']:.0f} %), on the T4's "
            f"nominal {T4_FP16_PEAK_GFLOPS / 1000:.0f} TFLOP/s in fp16 (`benchmarks/tables.py`, `colab_time_text`).")


def times_table():
    """The `cpu` profile's training time per kind of machine, estimated before training from timed steps
    (benchmarks/profile_time.py, the estimate the notebooks print)."""
    files = sorted((ROOT / "benchmarks" / "estimates").glob("*.json"))
    if not files:
        return "_No estimate yet: `python benchmarks/profile_time.py --json benchmarks/estimates/<kind>.json`._"
    names = {"classifier": "01 classifier", "unet": "02 U-Net", "backbone_unet_frozen": "03 A",
             "backbone_unet_finetuned": "03 B"}
    lines = ["| machine | precision | " + " | ".join(names.values()) + " | training in all |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for f in files:
        r = json.loads(f.read_text())
        lines.append(f"| {r['machine']} (`{f.name}`, {r['date'][:10]}) | {r['precision']} | " +
                     " | ".join(f"{r['minutes'][n]:.0f} min" for n in names) + f" | **{r['total_minutes']:.0f} min** |")
    return "\n".join(lines)


def layout_table():
    """Training and inference speed of each precision and memory layout on each kind of CPU measured
    (benchmarks/precision_layout.py): the numbers behind common.compute_precision's CPU rules."""
    lines = ["| machine | model | precision | layout | train img/s | inference img/s |", "|---|---|---|---|---|---|"]
    for f in sorted((ROOT / "benchmarks" / "layout").glob("*.json")):
        r = json.loads(f.read_text())
        for row in r["rows"]:
            lines.append(f"| {r['machine']} (`{f.name}`) | {row['model']} | {row['precision']} | "
                         f"{'channels_last' if row['channels_last'] else 'NCHW'} | {row['train_img_s']:.1f} | "
                         f"{row['inference_img_s']:.1f} |")
    return "\n".join(lines)
