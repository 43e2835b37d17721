"""Run the three notebooks headless, in order, and write the report.

    python run_all.py                      # the real data (cpu profile; gpu on CUDA); Tiny ImageNet is downloaded
                                           # when missing, the moon set must be in data/ or ../shared/data
    python run_all.py --profile demo       # synthetic data, a few minutes on a laptop CPU
    python run_all.py --profile cpu --data /path/to/archives

Profiles cpu/gpu write into the repository (weights/, figures/, the executed notebooks themselves: this is the
report run); the demo profile writes everything under runs/demo/ and never touches the committed results.
The report is HTML always (report/ or runs/demo/report/), and PDF when xelatex or Chromium is installed (the
first route that works; see export_report).
report/timings.json records this run's minutes per notebook with the machine and precision; weights/timings.json
those of the runs that trained the committed weights (per notebook: minutes, date, machine, precision).
"""
import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
NOTEBOOKS = ["01_classifier.ipynb", "02_unet.ipynb", "03_backbone_unet.ipynb"]


def browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


# Chromium's route prints the HTML: wide tables wrap their cells and long code and output lines wrap, so no column
# or line is cut at the right page edge.
PRINT_CSS = """<style>
@page { size: A4; margin: 10mm; }
@media print {
  pre, .jp-OutputArea-output pre, .highlight pre { white-space: pre-wrap !important; overflow-wrap: anywhere; }
  .jp-OutputArea, .jp-OutputArea *, .jp-Cell-outputArea { overflow: visible !important; }
  .jp-InputPrompt, .jp-OutputPrompt { flex: 0 0 3.2em !important; min-width: 0 !important; width: 3.2em !important;
                                      font-size: 7pt !important; }
  .jp-RenderedHTMLCommon table, table.dataframe { font-size: 7pt !important; table-layout: auto !important;
                                                  max-width: 100% !important; }
  .jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { white-space: normal !important; padding: 1px 3px !important; }
  .jp-RenderedHTMLCommon th { overflow-wrap: anywhere; }
  img { max-width: 100% !important; height: auto !important; }
}
</style>"""


HIDE_INPUT, REMOVE_CELLS = {"hide-input"}, {"parameters", "injected-parameters", "colab-setup"}
NO_PROMPTS = {"exclude_input_prompt": True, "exclude_output_prompt": True}     # no "[12]:" beside the cells


def pdf_latex(nb, pdf_path, html_path):
    """nbconvert's LaTeX route with the project's template (templates/latex_ru: Cyrillic fonts, wrapped lines)."""
    from nbconvert import PDFExporter
    exporter = PDFExporter(template_name="latex_ru", extra_template_basedirs=[str(ROOT / "templates")], **NO_PROMPTS)
    pdf_path.write_bytes(exporter.from_notebook_node(nb, resources={"metadata": {"path": str(ROOT)}})[0])


def pdf_chromium(nb, pdf_path, html_path):
    import subprocess
    subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-pdf-header-footer", f"--print-to-pdf={pdf_path}", html_path.resolve().as_uri()],
                   check=True, capture_output=True, timeout=300)
    if not pdf_path.exists() or pdf_path.stat().st_size < 1000:
        raise RuntimeError("Chromium wrote no PDF")


def pdf_routes(choice="auto"):
    """The PDF routes to try, in order: LaTeX (when xelatex is installed), then Chromium (when installed)."""
    routes = [("LaTeX (nbconvert, templates/latex_ru)", pdf_latex, shutil.which("xelatex")),
              ("Chromium (printing the HTML)", pdf_chromium, browser())]
    if choice != "auto":
        routes = [r for r in routes if r[0].lower().startswith(choice)]
    return [(name, fn) for name, fn, found in routes if found]


def export_report(executed, report_dir, pdf="auto"):
    """HTML for every notebook (with print CSS); PDF too, by the first route of `pdf_routes` that works, falling
    back to the next when one fails, and saying which one wrote each PDF."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    report_dir.mkdir(parents=True, exist_ok=True)
    routes = pdf_routes(pdf)
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        # the reader sees the report, not its machinery (the same tags as jupyter_nbconvert_config.py): no code of the
        # cells that word a conclusion or set up the run (tag hide-input: their output stays), no parameters cells and
        # no Colab set-up cell (which does nothing outside Colab)
        nb, _ = TagRemovePreprocessor(remove_input_tags=HIDE_INPUT, remove_cell_tags=REMOVE_CELLS,
                                      enabled=True).preprocess(nb, {})
        html, _ = HTMLExporter(embed_images=True, **NO_PROMPTS).from_notebook_node(nb)
        html_path = report_dir / (path.stem + ".html")
        html_path.write_text(html.replace("</head>", PRINT_CSS + "\n</head>", 1), encoding="utf-8")
        pdf_path = report_dir / (path.stem + ".pdf")
        for name, route in routes:
            try:                   # a PDF failure must never lose the HTML report
                route(nb, pdf_path, html_path)
                print(f"   PDF of {path.name} via {name}")
                break
            except Exception as e:
                print(f"   PDF of {path.name} via {name} failed: {type(e).__name__}: {str(e)[-300:]}")
    if not routes:
        print("no xelatex or Chromium found: HTML report only (docs/engineering.md, 'The report as PDF', says how to install one)")
    return report_dir


def _finish(path):
    """Make an executed notebook safe to keep. papermill's injected parameters (an absolute output_dir, ...) become a
    comment that records what this run used (paths relative), so a user's Run All of the kept notebook starts from
    its own defaults.
    Saved widget state is dropped: a headless run builds no widgets (`common.browse`), so any is stale."""
    import nbformat
    import common
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)
    # papermill records this run's paths and parameters: kept relative, they tell no absolute path of this machine
    pm_meta = nb.metadata.get("papermill", {})
    params = pm_meta.get("parameters", {})
    for d in (pm_meta, params):
        d.update({k: common.shown_path(v) for k, v in d.items() if isinstance(v, str) and v.startswith("/")})
    for c in nb.cells:
        if "injected-parameters" in c.metadata.get("tags", []):       # rebuilt from the parameters: idempotent
            c.source = "# run_all.py ran this notebook with these parameters\n# (a comment, so Run All uses the defaults):\n" + \
                "\n".join(f"# {k} = {v!r}" for k, v in params.items())
    nbformat.write(nb, path)


def _histories(out):
    """The training histories beside the weights and when each was written: `train_or_reuse` writes one only when it
    trains, so a notebook that changed none reused every model."""
    return {p.name: p.stat().st_mtime_ns for p in (Path(out) / "weights").glob("*_history.csv")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="auto", choices=["auto", "demo", "cpu", "gpu"],
                    help="auto: gpu on CUDA, else cpu (the real data); demo: synthetic stand-ins, offline")
    ap.add_argument("--data", default=None, help="folder with the dataset archives or folders")
    ap.add_argument("--train", default="auto", choices=["auto", "yes", "no"],
                    help="auto: reuse matching weights, else train (resuming); yes: train; no: reuse only")
    ap.add_argument("--out", default=None, help="output folder (default: the repository; runs/demo for demo)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these notebooks (e.g. 02 03)")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                    help="training precision (auto: bf16 where the CPU or GPU computes it faster, else fp32; fp16 on "
                         "CUDA only); also HW_PRECISION in the environment")
    ap.add_argument("--pdf", default="auto", choices=["auto", "latex", "chromium"],
                    help="PDF route: auto tries LaTeX (xelatex) first and falls back to Chromium")
    ap.add_argument("--cell-timeout", type=float, default=None,
                    help="seconds one cell may run before the run fails (default: 600 for demo, none otherwise)")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import common
    import papermill as pm

    selected = [n for n in NOTEBOOKS if not args.only or any(n.startswith(o) for o in args.only)]
    if not selected:
        ap.error(f"--only {' '.join(args.only)} names none of {', '.join(NOTEBOOKS)}")
    try:        # each notebook's own data, before anything runs (Tiny ImageNet: notebook 01 downloads it)
        for name in selected:           # the same profile for each; a notebook's missing data stops the run here
            profile = common.resolve_profile(args.profile, args.data, name[:2])
    except common.DataError as e:
        print(f"!! {e}")
        return 1
    out = Path(args.out) if args.out else (ROOT / "runs" / "demo" if profile == "demo" else ROOT)
    out.mkdir(parents=True, exist_ok=True)
    in_place = out.resolve() == ROOT
    params = {"profile": profile, "data_dir": args.data, "output_dir": str(out.resolve()),
              "train": {"auto": "auto", "yes": "train", "no": "reuse"}[args.train], "precision": args.precision}
    # the kernels make the same decision (same inputs; the probe only vetoes bf16); it is recorded in the timings
    precision, machine = common.compute_precision(precision=args.precision).name, common.machine()
    cell_timeout = args.cell_timeout or (600 if profile == "demo" else None)
    # the kernels inherit it: `common.browse` then builds no ipywidgets, which can hang nbclient (nbclient#312)
    os.environ["HW_STATIC_WIDGETS"] = "1"
    executed, times, trained = [], {}, []
    for name in selected:
        target = ROOT / name if in_place else out / name
        tmp = target.with_name(f".{target.stem}.running.ipynb")
        print(f"== {name} ({profile}) ->", target, flush=True)
        t0, before = time.time(), _histories(out)
        try:
            pm.execute_notebook(str(ROOT / name), str(tmp), parameters=params, cwd=str(ROOT),
                                kernel_name="python3", progress_bar=False, log_output=False,
                                execution_timeout=cell_timeout)
        except pm.PapermillExecutionError as e:
            print(f"!! {name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                  f"   the partly executed notebook is {tmp}")
            return 1
        except TimeoutError as e:       # a stalled kernel becomes a clear failure instead of a hang
            print(f"!! {name}: a cell ran longer than {cell_timeout:.0f} s ({e}); the partly executed notebook "
                  f"is {tmp}")
            return 1
        _finish(tmp)
        if _histories(out) != before:
            trained.append(name)
        tmp.replace(target)          # the committed notebook is replaced only by a finished run
        times[name] = time.time() - t0
        executed.append(target)
        print(f"   done in {times[name] / 60:.1f} min", flush=True)
    report = export_report(executed, out / "report", args.pdf)
    timings = {"profile": profile, "device": common.environment()["device"], "machine": machine,
               "precision": precision, "minutes": {k: v / 60 for k, v in times.items()},
               "total_minutes": sum(times.values()) / 60}
    common.save_json(timings, out / "report" / "timings.json")
    if trained:     # beside the weights: the minutes of the runs that trained them (merged per notebook)
        path = out / "weights" / "timings.json"
        kept = json.loads(path.read_text()) if path.exists() else {}
        merged = lambda key, new: {**(kept.get(key, {}) if kept.get("profile") == profile else {}),  # noqa: E731
                                   **{k: new(k) for k in trained}}
        minutes = merged("minutes", lambda k: times[k] / 60)
        # when each notebook's minutes were measured: sessions may land on machines of different speed
        dates = merged("dates", lambda k: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        machines, precisions = merged("machines", lambda k: machine), merged("precisions", lambda k: precision)
        # no total: minutes add up only over notebooks that ran on the same machine (tools/readme_tables.py sums them so)
        common.save_json({"profile": profile, "minutes": minutes, "dates": dates, "machines": machines,
                          "precisions": precisions}, path)
    print(f"report: {report} ({sum(times.values()) / 60:.1f} min in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
