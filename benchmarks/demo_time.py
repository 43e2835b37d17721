"""How long the offline demo takes on this machine: `python run_all.py --profile demo` (all three notebooks on the
synthetic stand-ins, with the report as HTML and PDF) in a temporary folder, timed per notebook and in all. The
README's demo sentence is rendered from these files.

    python benchmarks/demo_time.py --json benchmarks/demo/<machine kind>.json

Run it on each kind of machine (on one with native bf16, ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 caps it
to AVX2 and fp32, which the result says).
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import common  # noqa: E402
from benchmarks.train_speed import commit  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.time()
        subprocess.run([sys.executable, str(ROOT / "run_all.py"), "--profile", "demo", "--out", out], cwd=ROOT,
                       check=True)
        wall = time.time() - t0
        t = json.loads((Path(out) / "report" / "timings.json").read_text())
    res = {"machine": common.machine(), "precision": t["precision"], "commit": commit(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "notebook_minutes": t["minutes"],
           "minutes": wall / 60}
    print(f"{res['machine']}, {res['precision']}: the demo took {res['minutes']:.1f} min in all (run_all.py, report "
          f"included)")
    if args.json:
        common.save_json(res, args.json)


if __name__ == "__main__":
    main()
