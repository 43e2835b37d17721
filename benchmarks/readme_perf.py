"""Render the README's performance table from benchmarks/results/*.json (never typed by hand).

    python benchmarks/readme_perf.py           # print the table
    python benchmarks/readme_perf.py --write   # replace the block between the markers in README.md
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- perf:start -->", "<!-- perf:end -->"


def table():
    lines = ["| machine | model | batch | usual img/s | ours img/s | speedup | usual step alone (fp32, no data) img/s "
             "| GFLOP/img (train) | ours GFLOP/s | % of bf16 matmul peak | inference img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        r = json.loads(f.read_text())
        machine = f"{r['device']}, {r['threads']} threads (`{f.name}`)"
        for row in r["rows"]:
            lines.append(f"| {machine} | {row['model']} | {row['batch']} | {row['usual_img_s']:.1f} | "
                         f"{row['ours_img_s']:.1f} | **{row['speedup']:.2f}×** | "
                         f"{row['usual_model_only_fp32_img_s']:.1f} | {row['train_gflop_per_img']:.2f} | "
                         f"{row['ours_gflops']:.0f} | {row['pct_of_peak']:.0f} % of "
                         f"{r['bf16_matmul_peak_gflops']:.0f} | {row['inference_img_s']:.0f} |")
    return "\n".join(lines)


def block():
    return f"{START}\n{table()}\n{END}"


if __name__ == "__main__":
    if "--write" in sys.argv:
        readme = ROOT / "README.md"
        text = readme.read_text()
        a, b = text.index(START), text.index(END) + len(END)
        readme.write_text(text[:a] + block() + text[b:])
    else:
        print(table())
