"""The recipe research's results as the notebooks and tools quote them: experiments/results/*.json, written by
sweep.py, compare.py, ablation.py and retired_test.py. The library (hw/) reads none of them; a notebook that
quotes a result imports this module (`from experiments import results`)."""
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# The classifier the backbone ablation (backbone_ablation_val.json) ran on: weights/classifier.pt at the commit that
# added that file (git log -- experiments/results/backbone_ablation_val.json); the classifier was retrained after it.
ABLATION_CLASSIFIER = "536d195"


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
