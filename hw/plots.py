"""Figures, tables and widgets for the report: learning curves, image grids, segmentation panels, tables of display
strings that reach every export (HTML, PDF), captions, the live plot during training, the slider. Their labels are
Russian, like the report's words in report.py, which passes the titles and captions."""
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


WIDTH = 6.0        # inches: at most a figure's printed width in the PDF (nbconvert's LaTeX prints it at 0.9 of the
                   # 7.1-inch text width; labels outside the axes widen the saved image a little)
SMALL = 9          # points: the smallest text in any figure (ticks, legends, panel titles), >= 8 pt printed
LABELS = {"loss": "loss", "top1": "top-1", "top5": "top-5", "iou": "IoU", "dice": "Dice",
          "pixel_acc": "pixel accuracy"}


def _figure(rows, cols, size, **kw):
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": SMALL, "xtick.labelsize": SMALL, "ytick.labelsize": SMALL,
                         "legend.fontsize": SMALL, "axes.titlesize": SMALL + 1, "axes.labelsize": SMALL})
    return plt.subplots(rows, cols, figsize=size, squeeze=False, **kw)


def _done(fig, path):
    fig.tight_layout()
    if path:
        save_figure(fig, path)
    return fig


def plot_curves(histories, metrics, title="", path=None, marks=None, splits=("val",)):
    """One axis per metric m: the curves per epoch of each history ({label: DataFrame}), split_m for each of `splits`
    (train_m: on the training batches as the model saw them, augmented where the recipe augments, in training
    precision). marks {x: label}: a dotted vertical line with its label at each x (e.g. where the input grows). Two
    panels per row, `WIDTH` wide in all (no text under 8 pt in the PDF)."""
    cols, rows = min(len(metrics), 2), -(-len(metrics) // 2)
    fig, axes = _figure(rows, cols, (WIDTH / 2 * cols, 2.5 * rows))
    for ax in axes.flat[len(metrics):]:         # an odd number of metrics: no empty panel
        fig.delaxes(ax)
    names = {"train": "train (обучающие батчи)", "val": "val"}
    for ax, m in zip(axes.flat, metrics):
        for run, h in histories.items():
            for split, style in zip(splits, ("-o", "-s")):
                if f"{split}_{m}" in h:
                    label = ": ".join(filter(None, (run, names[split] if len(splits) > 1 else "")))
                    ax.plot(h["epoch"], h[f"{split}_{m}"], style, ms=3, label=label)
        for x, label in (marks or {}).items():      # labelled in the first panel only
            ax.axvline(x, color="gray", ls=":", lw=1)
            if ax is axes.flat[0]:
                ax.text(x, 1.0, f" {label}", transform=ax.get_xaxis_transform(), fontsize=SMALL, color="gray",
                        rotation=90, va="top", ha="left")
        ax.set(xlabel="эпоха", title=LABELS.get(m, m) if len(splits) > 1 else f"{splits[0]} {LABELS.get(m, m)}")
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()     # one legend under the panels: none hides a mark
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1 / rows, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    if path:
        save_figure(fig, path)
    return fig


def plot_history(history, metrics, title="", path=None, marks=None):
    """`plot_curves` of one run: train_m beside val_m for each metric m."""
    return plot_curves({"": history}, metrics, title, path, marks, ("train", "val"))


def plot_bars(values, xlabel, ylabel, title, path=None, line=None, labels=None):
    """One bar per item (e.g. images per class, accuracy per class); line (y, label): a dashed horizontal line;
    labels {name: values}: several series over the same items."""
    fig, axes = _figure(1, 1, (WIDTH, 2.2))
    ax = axes[0, 0]
    for name, v in (labels or {None: values}).items():
        ax.bar(range(len(v)), v, label=name)
    if line:
        ax.axhline(line[0], color="k", ls="--", label=line[1])
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if labels or line:
        ax.legend()
    return _done(fig, path)


def plot_hist(samples, xlabel, title, path=None, bins=30):
    """Overlaid density histograms: samples {label: 1-D array}."""
    fig, axes = _figure(1, 1, (WIDTH, 2.3))
    edges = np.linspace(0, max(float(np.max(v)) for v in samples.values()), bins)
    for label, v in samples.items():
        axes[0, 0].hist(np.asarray(v), edges, alpha=0.5, density=True, label=label)
    axes[0, 0].set(xlabel=xlabel, ylabel="плотность", title=title)
    axes[0, 0].legend()
    return _done(fig, path)


def plot_confusion(conf, names, title, path=None):
    """A confusion matrix (rows: truth, columns: prediction) of the classes `names`, in their order."""
    fig, axes = _figure(1, 1, (WIDTH, 5.4))
    ax = axes[0, 0]
    fig.colorbar(ax.imshow(conf, cmap="Blues"))
    ax.set_xticks(range(len(names)), [n[:20] for n in names], rotation=90)
    ax.set_yticks(range(len(names)), [n[:20] for n in names])
    ax.set(xlabel="предсказание", ylabel="истина", title=title)
    return _done(fig, path)


def plot_top5(images, labels, probs, names, pick, path=None):
    """Images `pick` of a split, two per row, each beside its top-5 probabilities (the true class green)."""
    rows, cols = (len(pick) + 1) // 2, 2 if len(pick) == 1 else 4
    fig, axes = _figure(rows, cols, (WIDTH * cols / 4, 1.7 * rows), gridspec_kw={"width_ratios": [1, 1.3] * (cols // 2)})
    for ax in axes.flat:
        ax.axis("off")
    for (a, b), i in zip(axes.reshape(-1, 2), pick):
        p, k = probs[i].topk(min(5, len(names)))
        a.imshow(to_hwc(images[i]))
        a.set_title(names[labels[i]][:20], fontsize=SMALL)
        b.axis("on")
        b.barh(range(len(k))[::-1], p.numpy(), color=["#7fc97f" if c == labels[i] else "#cccccc" for c in k])
        for y, c in zip(range(len(k))[::-1], k):       # the class names on their bars: the picture stays large
            b.text(0.02, y, names[c][:22], va="center", fontsize=SMALL)
        b.set(xlim=(0, 1), yticks=[], title="top-5")
    return _done(fig, path)


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


def stage_table(model, size=128):
    """The architecture stage by stage, measured on the model itself (one forward pass of a size x size input with
    hooks): per stage its blocks (residual `BasicBlock`s, else convolutions), kernel sizes, stride against the stage
    before (1/2: upsampled), channels in -> out (a decoder block's input: the map from below + the skip), output size
    and parameters. Stages: a classifier's stem, stages and head; the plain U-Net's encoder levels, decoder blocks and
    head (notebook 03 tables its backbone U-Net's own way)."""
    import pandas as pd
    from torch import nn
    from .models import BasicBlock
    seg = not hasattr(model, "head")
    parts = list(model.encoder.stages) + ([*model.decoder.blocks, model.decoder.head] if seg else [model.head])
    n_enc = len(model.encoder.stages)
    names = ([f"энкодер {k + 1}" for k in range(n_enc)] + [f"декодер {k + 1}" for k in range(len(parts) - n_enc - 1)]
             if seg else ["стем"] + [f"стадия {k}" for k in range(1, n_enc)]) + ["голова"]
    shapes = {}
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: shapes.__setitem__(k, (i[0].shape, o.shape)))
             for k, m in enumerate(parts)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.logits(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    rows, prev = [], torch.Size([1, 3, size, size])
    for k, m in enumerate(parts):
        (i, o), convs = shapes[k], [c for c in m.modules() if isinstance(c, nn.Conv2d)]
        res = sum(isinstance(b, BasicBlock) for b in m.modules())
        flat = len(o) == 2                                  # the classifier's head: a vector
        cin = f"{prev[1]} + {i[1] - prev[1]}" if i[1] != prev[1] else f"{i[1]}"
        blocks = f"BasicBlock ×{res}" if res else f"Conv ×{len(convs)}" if convs else "пулинг + Linear"
        rows.append({"стадия": names[k], "блоки": blocks,
                     "ядро": ", ".join(f"{a}×{b}" for a, b in sorted({c.kernel_size for c in convs}, reverse=True))
                     or "—",
                     "шаг": "—" if flat else f"{prev[-1] // o[-1]}" if prev[-1] >= o[-1] else f"1/{o[-1] // prev[-1]}",
                     "каналы": f"{cin} → {o[1]}", "выход": f"{o[1]}" if flat else f"{o[-2]}×{o[-1]}",
                     "параметров": f"{sum(p.numel() for p in m.parameters()):,}"})
        prev = o
    return pd.DataFrame(rows).set_index("стадия")


def signed(x, fmt="{:+.3f}"):
    """A signed number with a true minus sign (U+2212): a PDF line never breaks between the sign and the digits."""
    return fmt.format(x).replace("-", "\u2212")


def interval(ci, fmt="{:.3f}"):
    """A [low, high] interval as text, "low–high" ("—" where there is none)."""
    return f"{fmt.format(ci[0])}–{fmt.format(ci[1])}" if ci else "—"


def latex_table(df):
    """A DataFrame as a LaTeX table (special characters escaped, floats with pandas' display precision, as in HTML),
    shrunk to the page width when wider."""
    import pandas as pd
    body = df.to_latex(escape=True, float_format=f"%.{pd.get_option('display.precision')}f")
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


def _show(ax, p, title, fontsize):
    """One panel: an RGB picture, or a 2-D map (probabilities, a mask) in grey on 0..1."""
    ax.imshow(p, cmap="gray" if p.ndim == 2 else None, vmin=0, vmax=1 if p.ndim == 2 else None)
    ax.set_title(title, fontsize=fontsize)
    ax.axis("off")


def show_images(images, titles=None, ncols=8, path=None):
    """A grid of images: uint8 (N,3,H,W) tensors, masks (N,1,H,W) or (H,W[,3]) arrays, with titles; `WIDTH` wide."""
    n, size = len(images), WIDTH / ncols
    fig, axes = _figure(math.ceil(n / ncols), ncols, (WIDTH, (size + 0.2) * math.ceil(n / ncols)))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            im = images[i]
            _show(ax, im[0] if torch.is_tensor(im) and im.dim() == 3 and im.shape[0] == 1 else to_hwc(im),
                  titles[i] if titles else "", SMALL)
    return _done(fig, path)


def overlay_errors(image, pred, target):
    """RGB picture of a prediction against the truth: green = hit, red = false rock, blue = missed rock."""
    img = to_hwc(image).astype(np.float32) / 255 * 0.55
    p, t = pred.squeeze().numpy().astype(bool), target.squeeze().numpy().astype(bool)
    for mask, colour in ((p & t, (0, 1, 0)), (p & ~t, (1, 0, 0)), (~p & t, (0, 0.4, 1))):
        img[mask] = img[mask] * 0.4 + np.array(colour) * 0.6
    return np.clip(img, 0, 1)


def show_segmentation(data, rows, models, path=None, probability=True):
    """One row per frame (indices `rows` of the MaskSet `data`): the input with its frame number, the probability map
    of the first model (probability=True), the ground truth, and each model's errors against it with its IoU on the
    frame. models: [(label, segmentation_results of `data`)]."""
    cols = ["вход"] + ["вероятность"] * probability + ["разметка"]
    size = WIDTH / (len(cols) + len(models))
    fig, axes = _figure(len(rows), len(cols) + len(models), (WIDTH, (size + 0.2) * len(rows)))
    for ax_row, i in zip(axes, rows):
        panels = [to_hwc(data.images[i])] + [models[0][1]["probs"][i, 0].numpy()] * probability + [data.masks[i, 0]]
        panels += [overlay_errors(data.images[i], r["probs"][i] > r["threshold"], data.masks[i]) for _, r in models]
        heads = cols + [f"{lab}: IoU {r['iou_per_image'][i]:.2f}" for lab, r in models]
        for j, (ax, p, h) in enumerate(zip(ax_row, panels, heads)):
            _show(ax, p, h if j else f"кадр {data.ids[i]}" + (", битый" if data.broken[i] else ""), SMALL)
    fig.suptitle("зелёный — верно, красный — лишнее, синий — пропущено",
                 y=1.0)
    return _done(fig, path)


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
    """A slider over n items; render(i) draws item i. Returns the widget (or None without ipywidgets). None in a
    headless run (HW_STATIC_WIDGETS, set by run_all.py): nbclient can wait forever on a cell that creates ipywidgets
    (jupyter/nbclient#312, seen here), and a saved slider cannot move; the static figure beside it is the report's."""
    if os.environ.get("HW_STATIC_WIDGETS"):
        return None
    try:
        import ipywidgets as widgets
    except ImportError:
        print("слайдера нет: не установлен ipywidgets (`pip install ipywidgets`, затем перезапустить ядро); "
              "статический рисунок ниже показывает то же")
        return None
    return widgets.interactive(render, i=widgets.IntSlider(min=0, max=max(n - 1, 0), step=1, value=0,
                                                         description=description, continuous_update=False))
