"""Write the tables of README.md, docs/engineering.md and experiments/README.md between their markers, from files
written by code, so no number in them is typed by hand. The blocks are built where their data lives: the results of
the notebooks' models by the report layer (`hw/report.py`, with the notebooks' formatting), the recipe research by
`experiments/results.py`, the measurements by `benchmarks/tables.py`.

    python tools/readme_tables.py           # print the blocks
    python tools/readme_tables.py --write   # replace the blocks between their markers in the files of FILES
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import tables  # noqa: E402
from experiments import results  # noqa: E402
from hw import report  # noqa: E402

BLOCKS = {"summary": report.readme_summary, "results": report.readme_results, "splits": report.readme_splits,
          "checklist": lambda: report.readme_checklist(results.decisions()),
          "decisions": results.decisions_table, "sweep": results.sweep_table, "candidates": results.candidates_table,
          "retired": results.retired_text, "ablation": results.ablation_table,
          "layout": tables.layout_table, "times": tables.times_table, "perf": tables.perf_table,
          "reproduction": tables.reproduction_text, "demo": tables.demo_text, "gpu": tables.gpu_table,
          "colabtime": tables.colab_time_text}
FILES = {"README.md": ("summary", "demo", "checklist", "splits", "results", "times", "reproduction", "perf", "gpu",
                       "colabtime"),
         "docs/engineering.md": ("layout",), "experiments/README.md": ("retired", "decisions", "ablation", "candidates", "sweep")}


def block(name):
    return f"<!-- {name}:start -->\n{BLOCKS[name]()}\n<!-- {name}:end -->"


def render(text, names):
    for name in names:
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        a, b = text.index(start), text.index(end) + len(end)
        text = text[:a] + block(name) + text[b:]
    return text


if __name__ == "__main__":
    for rel, names in FILES.items():
        path = ROOT / rel
        if "--write" in sys.argv:
            path.write_text(render(path.read_text(), names))
        else:
            print("\n\n".join(BLOCKS[n]() for n in names))
