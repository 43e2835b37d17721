"""The recipe research's results as the notebooks and tools quote them: experiments/results/*.json, written by
sweep.py, compare.py, ablation.py and retired_test.py. The library (hw/) reads none of them; a notebook that
quotes a result imports this module (`from experiments import results`)."""
import json
from pathlib import Path

from common import interval, moon_selection, signed

RESULTS = Path(__file__).resolve().parent / "results"


def load(name):
    """experiments/results/<name> as a dict."""
    return json.loads((RESULTS / name).read_text())


def decisions():
    """experiments/compare.py's recipe decisions (decisions.json) keyed for quoting: {"candidates": {name: row},
    "threshold": {model: row}, ...}; a candidate's row holds its seeds, the difference to the baseline (pooled and
    per seed), its interval at its `level` and the verdict."""
    d = load("decisions.json")
    return {**d, "candidates": {r["candidate"]: r for r in d["candidates"]},
            "threshold": {r["model"].split(" ")[0]: r for r in d["threshold"]}}


# ------------------------------------------------------------------------------ experiments/README.md's tables
# written between their markers by tools/readme_tables.py
def retired_text():
    """The scores of the retired moon test split (experiments/retired_test.py -> results/retired_test_split.json)."""
    f = RESULTS / "retired_test_split.json"
    if not f.exists():
        return "_Run `python experiments/retired_test.py`._"
    d, sel = json.loads(f.read_text()), moon_selection()
    lines = [f"Until it was replaced, the moon test split ({len(sel['search_val'])} frames) was the very validation split "
             "of the single-split search (the same call, fraction and seed), and it was scored twice, each time by "
             "newly trained models, so its scores are no estimate on frames no choice saw. It is replaced by a test split "
             "drawn only from frames outside `hw/moon_selection.json`:", "",
             "| scored at commit | the models | U-Net | A | B |", "|---|---|---|---|---|"]
    for sc in d["scorings"]:
        cells = [f"{m['iou']:.3f} ({interval(m['iou_ci'])}, threshold {m['threshold']:.2f})" for m in sc["models"].values()]
        lines.append(f"| `{sc['commit']}` | {sc['what']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# the run each row of the recipe search is compared with
SWEEP_BASE = {"cls": "cls_base10", "seg": "seg_base30", "seg2": "seg_base30", "bb": "bb_B", "bb2": "bb_B",
              "bb3": "bb3_fromA_e10_lr1", "bb4": "bb3_fromA_e10_lr1_enc01",
              "bb5": "bb4_B_fromA_e30", "bb6": "bb4_B_fromA_e30", "bb7": "bb6_B_hflip", "bb8": "bb6_B_hflip",
              "seg3": "seg_base30", "bb10": "bb6_B_hflip",
              "bb11": "bb10_B_stack_fromA", "seg4": "seg3_unet_e40_seed1", "bb13": "bb13_scratch_basic",
              "bb14": "bb10_B_stack_e30_fromA", "bb15": "bb14_B_hr32_3lv_fromA", "bb16": "bb15_B_hr32_3lv_lr3",
              "bb17": "bb15_B_hr32_3lv_lr3"}


def _spec_diff(spec, base):
    """'part: key=value, ...' for every setting of a recipe that differs from its base run's ('—': not set)."""
    out = []
    for part in dict.fromkeys([*spec, *base]):
        v, b = spec.get(part, {}), base.get(part, {})
        if v == b:
            continue
        if isinstance(v, dict) and isinstance(b, dict):
            out.append(f"{part}: " + ", ".join(f"{k}={v.get(k, '—')}" for k in dict.fromkeys([*v, *b])
                                                if v.get(k) != b.get(k)))
        else:
            out.append(f"{part}={v if v != {} else '—'}")
    return out


def sweep_table():
    """The recorded recipe search (experiments/sweep.py at commit bc939f6, tagged search-rounds): one row per run,
    grouped by what was searched, with the wall time each run took where it ran (machines differ between rounds)."""
    lines = []
    files = {f: json.loads(f.read_text()) for f in sorted(RESULTS.glob("sweep_*.json"))}
    # a run's base may sit in another results file (e.g. a CPU control of a recipe searched on the GPU)
    specs = {r["name"]: r["spec"] for data in files.values() for r in data["runs"]}
    for f, data in files.items():
        lines += [f"From `experiments/results/{f.name}` ({data['meta']['device']}; {data['meta']['data']}).", "",
                  "| round | run | what differs from its base run (— : not set, the default; base runs "
                  + ", ".join(f"`{n}`" for n in dict.fromkeys(SWEEP_BASE.values())) + ") | best-epoch metric | with flip TTA "
                  "| best epoch | wall minutes |", "|---|---|---|---|---|---|---|"]
        for r in data["runs"]:
            base = specs.get(SWEEP_BASE.get(r["group"]), {})
            what = "; ".join(_spec_diff(r["spec"], base)) or "(the base)"
            metric = ("top-1 {:.1%}".format(r["top1"]) if "top1" in r else "IoU {:.3f}".format(r["iou"]))
            with_tta = ("{:.1%}".format(r["top1_tta"]) if "top1" in r else "{:.3f}".format(r["iou_tta"]))
            lines.append(f"| {r['round']} | `{r['name']}` | {what} | {metric} | {with_tta} | {r['best_epoch']} | "
                         f"{r['wall_s'] / 60:.0f} |")
        lines += ["", data["meta"].get("note", "")]
    return "\n".join(lines) if lines else "_No recipe search saved yet._"


def ablation_table():
    """Part 3's ablation on val (experiments/ablation.py -> results/backbone_ablation_val.json)."""
    f = RESULTS / "backbone_ablation_val.json"
    if not f.exists():
        return "_No ablation yet: `python experiments/ablation.py`._"
    d = json.loads(f.read_text())
    lines = [f"{d['protocol']}; {d['machine']}, {d['precision']}. Design chosen for the final fit: "
             f"**{d['best'] or 'none'}**.", "",
             "| design | encoder | frozen | output | epochs (with its A) | val IoU per seed | against literal B: difference, per seed, "
             "interval | verdict | ceiling on val | wall minutes (with its A) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        v = r["diff_vs_literal_B"]
        lines.append(f"| `{r['name']}` | {r['encoder']} | {r['frozen']} | {r['output_size']} | {r['epochs']} | "
                     f"{'/'.join(f'{x:.3f}' for x in r['val_iou'])} | " +
                     (f"{signed(v['diff'])}, {'/'.join(map(signed, v['diff_per_seed']))}, {signed(v['interval'][0])} to "
                      f"{signed(v['interval'][1])}" if v else "—") +
                     f" | **{r['verdict_vs_literal_B']}** | {r['val_ceiling_iou']:.3f} | {r['train_minutes']:.1f} |")
    lines += ["", "| contrast (transfer) | with the classifier's weights against random ones | per seed | interval | "
              "verdict |", "|---|---|---|---|---|"]
    for name, c in d["contrasts"].items():
        lines.append(f"| {name} | `{c['with']}` − `{c['without']}`: {signed(c['diff'])} | "
                     f"{'/'.join(map(signed, c['diff_per_seed']))} | {signed(c['interval'][0])} to "
                     f"{signed(c['interval'][1])} | **{c['verdict']}** |")
    return "\n".join(lines)


def candidates_table():
    """Runs of experiments/sweep.py on the current splits (experiments/results/candidates.json): validation only."""
    f = RESULTS / "candidates.json"
    if not f.exists():
        return "_No run on the current splits yet._"
    lines = ["| round | run | model | architecture | changes to the recipe | val IoU (0.5) | val IoU, flip TTA, threshold "
             "on val | best epoch | wall minutes | machine, precision |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in json.loads(f.read_text())["runs"]:
        arch = f"branch {r['architecture']['branch']}" if r["architecture"].get("branch") else r["architecture"]["arch"]
        lines.append(f"| {r['round']} | `{r['name']}` | {r['model']} | {arch} | {r['changes'] or '—'} | {r['iou']:.3f} | "
                     f"{r['iou_thr_tta']:.3f} | {r['best_epoch']} | {r['wall_s'] / 60:.1f} | {r['machine']}, "
                     f"{r['precision']} |")
    groups = {}
    for r in json.loads(f.read_text())["runs"]:
        groups.setdefault((r["round"], r["model"], r["candidate"]), []).append(r["iou_thr_tta"])
    lines += ["", "Per candidate, over its seeds (val IoU with flip TTA and the threshold chosen on val):", "",
              "| round | model | candidate | seeds | mean | min | max |", "|---|---|---|---|---|---|---|"]
    for (rnd, model, cand), v in groups.items():
        lines.append(f"| {rnd} | {model} | `{cand}` | {len(v)} | {sum(v) / len(v):.3f} | {min(v):.3f} | {max(v):.3f} |")
    return "\n".join(lines)


def decisions_table():
    """experiments/compare.py's verdicts (experiments/results/decisions.json): every candidate against the notebooks'
    recipe under the seed protocol, and the tuned threshold against 0.5."""
    f = RESULTS / "decisions.json"
    if not f.exists():
        return "_No decision recorded yet._"
    d = json.loads(f.read_text())
    f3 = lambda v: "/".join(f"{x:.3f}" for x in v)                              # noqa: E731
    again = ("" if "baseline_as_recorded" not in d else
             " The baseline, trained again with the same seeds for the later candidates, gave the recorded scores "
             "again, to every digit." if all(d["baseline_as_recorded"].values()) else
             " The baseline, trained again for the later candidates, gave other scores than recorded: the earlier "
             "rows stand against the earlier baseline.")
    lines = [f"Baseline `{d['baseline']}` (the notebooks' recipe), val IoU at 0.5 with flip TTA, seeds "
             f"{'/'.join(d['baseline_iou'])}: {f3(d['baseline_iou'].values())}; {d['n_val']} validation frames; "
             f"{d['candidates_compared']} candidates compared so far, so a new interval is at {d['level']:.1%} "
             f"(Bonferroni; each row's interval is at the level it was decided at); {d['machine']}, {d['precision']}."
             f"{again} Before this protocol, "
             f"{sum(len(json.loads(g.read_text())['runs']) for g in RESULTS.glob('sweep_*.json'))} "
             "runs of the recorded search (`results/sweep_*.json`, below) were ranked on one split without seeds; "
             "their decisions are the ones re-made here. The best epoch's val IoU (in the training precision) exceeds "
             f"the last epoch's by at most {max(d['best_minus_last_epoch'].values()):.3f} over these "
             f"{len(d['best_minus_last_epoch'])} runs, on the very frames the best one would be chosen on.", "",
             "| candidate | changes to the recipe | train frames | seeds | val IoU per seed | difference (pooled seeds) | "
             "per seed | interval | best epoch | wall minutes | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["candidates"]:
        lines.append(f"| `{r['candidate']}` | {r['changes'] or '—'} | "
                     f"{r['n_train'] if 'train_fraction' in r['changes'] else 'all'} | "
                     f"{'/'.join(map(str, r['seeds']))} | {f3(r['iou'])} | {signed(r['diff'])} | "
                     f"{'/'.join(map(signed, r['diff_per_seed']))} | {signed(r['interval'][0])} to {signed(r['interval'][1])} "
                     f"({r.get('level', d['level']):.1%}) | "
                     f"{'/'.join(map(str, r['best_epoch']))} | {'/'.join(f'{w:.1f}' for w in r['wall_min'])} | "
                     f"**{r['verdict']}** |")
    lines += ["", "| threshold tuned on val against 0.5: model | seeds | gain on the other half, mean | central 95 % of "
              "the halvings | thresholds chosen | verdict |", "|---|---|---|---|---|---|"]
    for t in d["threshold"]:
        lines.append(f"| {t['model']} | {'/'.join(map(str, t['seeds']))} | {signed(t['gain_mean'])} | "
                     f"{signed(t['gain_spread'][0])} to {signed(t['gain_spread'][1])} | "
                     f"{', '.join(f'{x:.2f}' for x in t['thresholds_chosen'])} | **{t['verdict']}** |")
    return "\n".join(lines)
