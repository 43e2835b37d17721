"""Figures, tables and widgets for the notebooks: learning curves, image grids, segmentation panels, tables of
display strings that reach every export (HTML, PDF), captions, the live plot during training, the slider."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .core import atomic_write

def to_hwc(x):
    """uint8 (3,H,W) tensor -> (H,W,3) array for imshow; anything else is returned as it is."""
    return x.permute(1, 2, 0).numpy().astype(np.uint8) if x.dtype == torch.uint8 else x


def plot_history(history, metrics, title="", path=None, marks=None):
    """Loss and metric curves per epoch from a history DataFrame; saved to `path` if given. marks: {x: label}
    draws a dotted vertical line with its label at each x (e.g. where the input size steps up)."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2))
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes, metrics):
        for col, style in ((f"train_{m}", "-o"), (f"val_{m}", "-s")):
            if col in history:
                ax.plot(history["epoch"], history[col], style, ms=3, label=col)
        for x, label in (marks or {}).items():
            ax.axvline(x, color="gray", ls=":", lw=1)
            ax.text(x, 1.0, f" {label}", transform=ax.get_xaxis_transform(), fontsize=7, color="gray",
                    rotation=90, va="top", ha="left")
        ax.set_xlabel("epoch")
        ax.set_title(m)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    if path:
        save_figure(fig, path)
    return fig


def formatted(df, formats=None, precision=None):
    """A DataFrame of display strings: formats maps a column to a format string ("{:.3f}") or a function;
    other float columns get `precision` decimals (or stay as they are). Unlike a pandas Styler, it shows in every
    export: HTML, plain text and (with `report_formats`) LaTeX."""
    import pandas as pd
    out = df.copy()
    for col in out.columns:
        f = (formats or {}).get(col)
        if f is None and precision is not None and pd.api.types.is_float_dtype(out[col]):
            f = f"{{:.{precision}f}}"
        if f is not None:
            fn = f.format if isinstance(f, str) else f
            out[col] = [fn(v) if v == v else "" for v in out[col]]       # NaN (v != v) shows empty
    return out


def signed(x, fmt="{:+.3f}"):
    """A signed number with a true minus sign (U+2212): a PDF line never breaks between the sign and the digits."""
    return fmt.format(x).replace("-", "\u2212")


def interval(ci, fmt="{:.3f}"):
    """A [low, high] interval as text, "low–high" ("—" where there is none)."""
    return f"{fmt.format(ci[0])}–{fmt.format(ci[1])}" if ci else "—"


def latex_table(df):
    """A DataFrame as a LaTeX table (special characters escaped), shrunk to the page width when wider."""
    body = df.to_latex(escape=True)
    return "\\begin{center}\\adjustbox{max width=\\linewidth}{%\n" + body + "}\\end{center}\n"


def report_formats():
    """In a notebook kernel: every DataFrame also carries a LaTeX representation, so nbconvert's PDF (LaTeX)
    route prints tables as tables, not as text cut at the page edge. Does nothing outside IPython."""
    try:
        from IPython import get_ipython
        import pandas as pd
    except ImportError:
        return
    ip = get_ipython()
    if ip is not None:
        ip.display_formatter.formatters["text/latex"].for_type(pd.DataFrame, latex_table)


def save_figure(fig, path):
    path = Path(path)
    return atomic_write(path, lambda p: fig.savefig(p, dpi=110, bbox_inches="tight", format=path.suffix[1:]))


def show_images(images, titles=None, ncols=8, path=None, size=1.6):
    """A grid of uint8 (N,3,H,W) images with titles."""
    import matplotlib.pyplot as plt
    n = len(images)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(to_hwc(images[i]))
            if titles:
                ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    if path:
        save_figure(fig, path)
    return fig


def overlay_errors(image, pred, target):
    """RGB picture of a prediction against the truth: green = hit, red = false rock, blue = missed rock."""
    img = to_hwc(image).astype(np.float32) / 255 * 0.55
    p, t = pred.squeeze().numpy().astype(bool), target.squeeze().numpy().astype(bool)
    for mask, colour in ((p & t, (0, 1, 0)), (p & ~t, (1, 0, 0)), (~p & t, (0, 0.4, 1))):
        img[mask] = img[mask] * 0.4 + np.array(colour) * 0.6
    return np.clip(img, 0, 1)


def show_segmentation(images, masks, probs, threshold=0.5, titles=None, heads=None, path=None):
    """Rows of (input, probability, prediction, ground truth, error overlay); heads: the five column titles, in the
    report's language (the notebook words them)."""
    import matplotlib.pyplot as plt
    n = len(images)
    fig, axes = plt.subplots(n, 5, figsize=(12, 2.5 * n), squeeze=False)
    for i in range(n):
        pred = probs[i] > threshold
        panels = [to_hwc(images[i]), probs[i].squeeze().numpy(), pred.squeeze().numpy(),
                  masks[i].squeeze().numpy(), overlay_errors(images[i], pred, masks[i])]
        for j, (ax, p) in enumerate(zip(axes[i], panels)):
            ax.imshow(p, cmap="gray" if j in (1, 2, 3) else None, vmin=0, vmax=1 if j in (1, 2, 3) else None)
            ax.axis("off")
            if i == 0 and heads:
                ax.set_title(heads[j], fontsize=8)
        if titles:
            axes[i][0].set_ylabel(titles[i])
            axes[i][0].text(2, 10, titles[i], color="yellow", fontsize=8, va="top")
    fig.tight_layout()
    if path:
        save_figure(fig, path)
    return fig


class LivePlot:
    """A callback for `fit` that redraws the curves after every epoch in a notebook, in place: the lines printed
    before (precision, time estimate) and the epochs' log stay visible."""

    def __init__(self, metrics, title=""):
        self.metrics, self.title, self.handle = metrics, title, None

    def __call__(self, history):
        import matplotlib.pyplot as plt
        from IPython.display import display
        fig = plot_history(history, self.metrics, self.title)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)


def caption(text):
    """A figure's caption under it, in every export (HTML, PDF)."""
    from IPython.display import Markdown, display
    display(Markdown(f"*{text}*"))


def browse(n, render, description="№"):
    """A slider over n items; render(i) draws item i. Returns the widget (or None without ipywidgets).
    In a headless run (run_all.py sets HW_STATIC_WIDGETS=1) no widget is built: nbclient, which papermill runs
    notebooks with, can wait forever on a cell that creates ipywidgets (jupyter/nbclient#312; seen here on a
    re-render), and a saved slider cannot move anyway; the static figure beside every slider is the report's (the
    notebooks say so in their text)."""
    if os.environ.get("HW_STATIC_WIDGETS"):
        return None
    try:
        import ipywidgets as widgets
    except ImportError:
        print("no slider: the package ipywidgets is missing (`pip install ipywidgets`, then restart the kernel); "
              "the static figure below shows the same")
        return None
    return widgets.interactive(render, i=widgets.IntSlider(min=0, max=max(n - 1, 0), step=1, value=0,
                                                         description=description, continuous_update=False))
