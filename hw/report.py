"""The report layer: every table, figure, caption and sentence that the three notebooks show, built from the models'
results and from files written by code. Each notebook cell calls one function here, so the cell reads like a
caption. The report's Russian words live in this module (and in the notebooks' markdown); the code is English.
The library reads no experiment results: a notebook passes what it quotes (`experiments.results`) as an argument."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .augment import BatchAugment
from .checkpoints import weights_digest
from .core import ROOT, count_params, save_json
from .data import BROKEN_BLACK, BROKEN_ROCK, MOON_TEST, MOON_VAL, moon_selection, resize
from .metrics import ceiling_iou, paired_bootstrap_iou
from .recipes import recipe
from .plots import (browse, caption, formatted, interval, plot_bars, plot_confusion, plot_curves, plot_hist,
                    plot_history, plot_top5, show_images, show_segmentation, signed, stage_table)

VERDICT = {"better": "лучше", "worse": "хуже", "undecided": "не различимы", "reference": "эталон"}
NAMES = {"unet": "U-Net (часть 2)", "backbone_unet_frozen": "A: бэкбон заморожен",
         "backbone_unet_finetuned": "B: дообучен после A", "backbone_unet_fullres_frozen": "полноразмерный A",
         "backbone_unet_fullres": "полноразмерный B"}
SHORT = {"unet": "U-Net", "backbone_unet_frozen": "A", "backbone_unet_finetuned": "B",
         "backbone_unet_fullres_frozen": "A-128", "backbone_unet_fullres": "B-128"}     # A-128, B-128: full resolution
ABLATION_NAMES = {"literal_A": "A", "literal_B": "B", "random_B": "B, случайный энкодер", "fullres_B": "B-128",
                  "fullres_random": "B-128, случайный энкодер"}
ABLATION_WEIGHTS = {"literal_A": "backbone_unet_frozen", "literal_B": "backbone_unet_finetuned",
                    "fullres_B": "backbone_unet_fullres"}


def _show(obj):
    from IPython.display import display
    display(obj)


def _markdown(lines):
    from IPython.display import Markdown, display
    display(Markdown("\n".join(lines) if isinstance(lines, (list, tuple)) else lines))


def _table(rows, index):
    import pandas as pd
    return pd.DataFrame(rows).set_index(index)


def _figure(fig, text):
    """Show a figure in the notebook, then its caption."""
    import matplotlib.pyplot as plt
    plt.show()
    caption(text)


def metrics(name, weights=None):
    """weights/<name>_metrics.json as written by `export_final`, or None where there is none."""
    f = Path(weights or ROOT / "weights") / f"{name}_metrics.json"
    return json.loads(f.read_text()) if f.exists() else None


def _pct(f):
    return f"{100 * f:.0f}"


def _span(d):
    """A difference with its interval: "+0.012 (−0.003…+0.025)", from {"diff", "interval"} or {"diff", "low", "high"}."""
    low, high = d["interval"] if "interval" in d else (d["low"], d["high"])
    return f"{signed(d['diff'])} ({signed(low)}…{signed(high)})"


def _word(verdict, yes, no):
    return yes if verdict == "better" else no if verdict == "worse" else "в пределах разброса"


def short_machine(name):
    """A machine's name short enough for a table cell: "Intel Xeon, 2 threads, AVX512, native bf16"."""
    return name.replace("(R)", "").replace(" Processor", "").replace(" CPU", "")


def reproducibility(meta, demo=False):
    """The conclusion's last line: seed, versions and machine, as recorded in the checkpoint."""
    return (f"- Воспроизводимость: seed {meta.get('seed')}, Python {meta['python']}, torch {meta['torch']}, "
            f"torchvision {meta['torchvision']}, машина: {meta['machine']} (записано в чекпоинте)."
            + " **Профиль demo: синтетические данные, выводы о качестве делать нельзя.**" * demo)


class Summary:
    """The summary table at the top of a notebook, filled by its last cell: Jupyter and nbclient update a display
    by its id, so the numbers at the top come from the same run as the sections below."""

    def __init__(self):
        from IPython.display import Markdown, display
        self.handle = display(Markdown("*Сводка появится здесь, когда выполнятся все ячейки.*"), display_id=True)

    def fill(self, rows):
        """rows: {what: value}, each value a display string."""
        import pandas as pd
        self.handle.update(pd.DataFrame({"значение": rows}).rename_axis("сводка"))


def augment_words(a):
    """An `AugmentConfig` in Russian words: "кроп 35%–100% площади с пропорциями 0.75–1.33, отражение ..."."""
    flips = [n for n, on in (("горизонтальное", a.hflip), ("вертикальное", a.vflip)) if on]
    crop = a.scale != (1.0, 1.0) or a.ratio != (1.0, 1.0)
    area = "полной площади" if a.scale == (1.0, 1.0) else f"{a.scale[0]:.0%}–{a.scale[1]:.0%} площади"
    words = [f"кроп {area} с пропорциями {a.ratio[0]:.2f}–{a.ratio[1]:.2f}"] * crop + \
        [f"отражение {' и '.join(flips)}"] * bool(flips) + [f"поворот до {a.rotate:g}°"] * bool(a.rotate) + \
        [f"яркость ±{a.brightness:g}, контраст ±{a.contrast:g}, насыщенность ±{a.saturation:g}"] * bool(
            a.brightness or a.contrast or a.saturation)
    return ", ".join(words) or "нет"


def settings(cfg, task=None):
    """A model's training recipe in one Russian paragraph (in place of the dataclasses' English repr)."""
    a = cfg.augment
    size = (f"вход растёт от {cfg.min_size} до 128 px к {cfg.full_size_at:.0%} эпох" if cfg.min_size
            else "вход 128×128 все эпохи")
    loss = ""
    if task is not None:
        p = task.params()
        loss = (f"; потери: BCE × {p['bce']:g} + Dice × {p['dice']:g}, порог {p['threshold']:g}" if "bce" in p
                else f"; потери: кросс-энтропия с label smoothing {p['label_smoothing']:g}")
    _markdown(f"**Рецепт:** {cfg.epochs} эпох, батч {cfg.batch_size}, AdamW с пиковым lr {cfg.lr:g} (one-cycle, "
              f"разогрев {cfg.warmup:.0%} шагов), weight decay {cfg.weight_decay:g}; {size}; энкодер "
              f"{'заморожен' if cfg.freeze_encoder else 'обучается'}; аугментации: {augment_words(a)}{loss}.")


def architecture(model, limit):
    """The per-stage table measured on the model, and its parameter count against the task's limit."""
    _show(stage_table(model))
    n = count_params(model)
    print(f"параметров: {n:,} (не больше {limit:,}: {'OK' if n <= limit else 'ПРЕВЫШЕНО'})")


# ------------------------------------------------------------------------------------------------ 01: classifier
def tiny_data(train, val, test, info, figures):
    """What was read, the grey share, and the class balance of the stratified split."""
    import pandas as pd
    grey = float(torch.cat([(s.images == s.images[:, :1]).flatten(1).all(1) for s in (train, val)]).float().mean())
    print(f"данные: {info['root']}; классов: {len(train.names)}; train: {len(train)}, val: {len(val)}, официальный "
          f"test: {len(test) if test is not None else 'нет'}; в памяти: {tuple(train.images.shape[1:])} uint8; "
          f"чёрно-белых картинок (R = G = B, приведены к RGB): {grey:.1%}")
    counts = {s: np.bincount(d.labels, minlength=len(train.names)) for s, d in (("train", train), ("val", val))}
    _show(pd.DataFrame({s: {"в среднем на класс": f"{c.mean():.1f}", "минимум": int(c.min()), "максимум": int(c.max())}
                        for s, c in counts.items()}).T)
    fig = plot_bars(None, "класс", "изображений", "баланс классов после стратифицированного разбиения",
                    figures / "01_class_balance.png", labels=counts)
    _figure(fig, "Рисунок: число изображений каждого класса в train и val — разбиение стратифицировано, доли "
                 "классов в частях равны.")


def class_samples(train, figures, n=12):
    idx = [int(np.flatnonzero(train.labels.numpy() == k)[0]) for k in range(min(len(train.names), n))]
    fig = show_images(train.images[idx], [train.names[train.labels[i]][:16] for i in idx], ncols=6,
                      path=figures / "01_samples.png")
    side = train.images.shape[-1]
    _figure(fig, f"Рисунок: по одному обучающему изображению первых {len(idx)} классов ({side}×{side}, как в "
                 "наборе) с названиями классов.")


def classifier_augmentations(train, cfg, figures, seed=0, n=8):
    """One training image at 128x128 and n random augmentations of it, as the network sees them."""
    x = train.images[:1].repeat(n, 1, 1, 1)
    out = BatchAugment(cfg.augment)(x, gen=torch.Generator().manual_seed(seed))
    fig = show_images(torch.cat([resize(x[:1], out.shape[-1]), out]).round().clamp(0, 255).byte(),
                      ["оригинал"] + [f"аугм. {i + 1}" for i in range(n)], ncols=n + 1,
                      path=figures / "01_augmentations.png")
    _figure(fig, f"Рисунок: одно изображение, доведённое до {out.shape[-1]}×{out.shape[-1]}, и {n} его случайных "
                 "аугментаций (кроп, отражение, цвет) — так их видит сеть при обучении.")


def classifier_curves(history, figures):
    steps = history[history["input_size"].diff().fillna(1).ne(0)]       # the first epoch at each input size
    marks = {e - 0.5: f"вход {s} px" for e, s in zip(steps["epoch"], steps["input_size"])}
    fig = plot_history(history, ["loss", "top1", "top5"], "классификатор: кривые обучения",
                       figures / "01_curves.png", marks)
    _figure(fig, "Рисунок: loss и точность по эпохам; train — на батчах с аугментацией, val — на чистых "
                 "картинках 128×128, оба в точности обучения (итоговые метрики ниже — в fp32). Пунктир — "
                 "эпоха, с которой растёт размер входа: скачки кривых на этих линиях — от смены размера. "
                 "Все числа по эпохам — в weights/classifier_history.csv.")


def classifier_metrics(summary, epochs):
    rows = [("val (свой split)", summary["n_val"], summary["val_top1"],
             summary["val_top1_ci"], summary["val_top5"])]
    if (t := summary["test"]):
        rows.append(("test (официальный val)", t["n"], t["top1"], t["top1_ci"], t["top5"]))
    _show(_table([{"выборка": r[0], "изображений": r[1], "top-1": f"{r[2]:.1%}", "top-5": f"{r[4]:.1%}",
                   "95 % интервал top-1": interval(r[3], "{:.1%}")} for r in rows], "выборка"))
    print(f"без flip TTA на val: top-1 {summary['val_top1_no_tta']:.1%}, top-5 {summary['val_top5_no_tta']:.1%}; "
          f"лучшая эпоха {summary['best_epoch']} из {epochs}; по val выбраны рецепт, TTA и эпоха; метрики — в fp32")


def per_class(res, names, summary, figures):
    import pandas as pd
    per = pd.DataFrame({"класс": names, "точность": res["per_class"]}).sort_values("точность")
    fig = plot_bars(per["точность"].values, "классы, по возрастанию точности", "доля верных",
                    "точность по классам (val)", figures / "01_per_class.png",
                    line=(summary["val_top1"], "top-1 в среднем"))
    _figure(fig, "Рисунок: точность каждого класса на val, классы по возрастанию; пунктир — средний top-1. Таблица "
                 "ниже — пять худших и пять лучших классов.")
    per["точность"] = [f"{v:.0%}" for v in per["точность"]]
    worst, best = per.head(5).reset_index(drop=True), per.tail(5).iloc[::-1].reset_index(drop=True)
    _show(pd.concat([worst, best], axis=1, keys=["хуже всего", "лучше всего"]).set_axis(
        pd.RangeIndex(1, len(worst) + 1, name="место")))


def confusions(res, names, figures, n_pairs=10):
    conf, k = res["confusion"].clone().fill_diagonal_(0), len(names)
    pairs = [(int(v), int(i // k), int(i % k)) for v, i in zip(*conf.flatten().topk(n_pairs))]
    print("самые частые путаницы (val):")
    _show(_table([{"истинный": names[a], "предсказан как": names[b], "раз": v} for v, a, b in pairs], "истинный"))
    top = list(dict.fromkeys(c for _, a, b in pairs for c in (a, b)))[:12]   # the classes of the pairs, in order
    fig = plot_confusion(res["confusion"][top][:, top].numpy(), [names[c] for c in top],
                         "матрица ошибок для самых путаемых классов", figures / "01_confusion.png")
    _figure(fig, f"Рисунок: матрица ошибок на val для первых {len(top)} классов из самых частых путаниц (таблица "
                 "выше), в порядке убывания путаницы; диагональ — верные ответы.")


def browse_predictions(data, res, names):
    """A slider over the split's images with their top-5 (in Jupyter)."""
    import matplotlib.pyplot as plt
    probs = res["logits"].softmax(1)

    def render(i):
        plot_top5(data.images, data.labels, probs, names, [i])
        plt.show()
    return browse(len(data), render, "val №")


def prediction_examples(data, res, names, figures, seed=0, n=6):
    pick = np.random.default_rng(seed).choice(len(data), n, replace=False)
    fig = plot_top5(data.images, data.labels, res["logits"].softmax(1), names, pick, figures / "01_predictions.png")
    _figure(fig, f"Рисунок (статическая версия слайдера): {n} случайных изображений val с истинным классом "
                 "и top-5 вероятностями модели; зелёная полоса — истинный класс.")


def classifier_conclusion(summary, meta, history, cfg, n_train, demo=False, top=None):
    """The conclusion's lines, and the summary table at the top (`Summary`) when given."""
    s, last = summary, history.iloc[-1]
    first128 = 1 + next(e for e in range(cfg.epochs) if cfg.input_size(e) == 128)
    val_last = s["val_top1_no_tta"] if s["best_epoch"] == cfg.epochs else last["val_top1"]
    gap = ("лучшая эпоха по val — последняя" if s["best_epoch"] == cfg.epochs else
           f"val последней эпохи против лучшей: {signed(last['val_top1'] - history['val_top1'].max(), '{:+.1%}')}")
    fits = ("батчи с аугментацией сети труднее val, запоминания обучающих картинок не видно"
            if last["train_top1"] <= val_last else "обучающие картинки сеть узнаёт лучше новых")
    lines = [f"- Классификатор: **{s['params']:,}** параметров (лимит 5 M), {s['classes']} классов, {n_train} "
             f"изображений для обучения; обучение {meta['train_time_s'] / 60:.1f} мин на {meta['machine']}.",
             f"- Val ({s['n_val']} изображений своего стратифицированного split; по нему же выбраны рецепт, TTA и "
             f"эпоха): **top-1 = {s['val_top1']:.1%}**, top-5 = {s['val_top5']:.1%} с flip TTA, без TTA top-1 = "
             f"{s['val_top1_no_tta']:.1%}; эпоха {s['best_epoch']} из {cfg.epochs}, вход 128 px с эпохи {first128}.",
             f"- Последняя эпоха: top-1 на батчах с аугментацией {last['train_top1']:.1%}, на val без TTA "
             f"{val_last:.1%} — {fits}; {gap}."]
    if (t := s["test"]):
        lines.append(f"- Официальный val (тест, не использовался ни для какого выбора, {t['n']} изображений): top-1 = "
                     f"{t['top1']:.1%} (95 % интервал {interval(t['top1_ci'], '{:.1%}')}), top-5 = {t['top5']:.1%}.")
    _markdown(lines + [reproducibility(meta, demo)])
    if top is not None:
        top.fill({"параметров (лимит 5 M)": f"{s['params']:,}", "классов / картинок для обучения":
                  f"{s['classes']} / {n_train}", "val top-1 с flip TTA (95 % интервал)":
                  f"{s['val_top1']:.1%} ({interval(s['val_top1_ci'], '{:.1%}')})", "val top-1 без TTA":
                  f"{s['val_top1_no_tta']:.1%}", "val top-5": f"{s['val_top5']:.1%}",
                  **({"test top-1 (официальный val)": f"{t['top1']:.1%}"} if t else {}),
                  "обучение (машина, обучившая веса)":
                      f"{meta['train_time_s'] / 60:.1f} мин, {short_machine(meta['machine'])}"})


# -------------------------------------------------------------------------------------------------------- 02: U-Net
def moon_data(train, val, test, info, figures):
    import pandas as pd
    splits = {"train (битые исключены)": train, "val": val, "test": test}
    print(f"данные: {info['root']}; кадров: {info['n_frames']}, исходный размер {info['orig_size'][0]}×"
          f"{info['orig_size'][1]}; в памяти: {tuple(train.images.shape[1:])} uint8")
    _show(pd.DataFrame({"кадров": [len(s) for s in splits.values()],
                        "битых": [info["n_broken_train"], int(val.broken.sum()), int(test.broken.sum())],
                        "доля камней, среднее": [f"{float(s.coverage.mean()):.3f}" for s in splits.values()]},
                       index=pd.Index(list(splits), name="выборка")))
    fig = plot_hist({k.split()[0]: s.coverage.numpy() for k, s in splits.items()}, "доля пикселей-камней в кадре",
                    "доля камней в трёх выборках", figures / "02_coverage.png")
    _figure(fig, "Рисунок: распределение доли пикселей-камней по кадрам в train, val и test — разбиение "
                 "стратифицировано по ней; таблица над рисунком — размеры выборок, битые кадры и средняя доля.")


def moon_splits(info, retired):
    """The splits and the broken-frame rule in words, from the code's constants, the selection list and the
    retired test split's scorings, which the notebook passes."""
    selection, test_share, val_share = moon_selection(), MOON_TEST, MOON_VAL

    def ious(s):
        return " / ".join(f"{s['models'][n]['iou']:.3f}" for n in
                          ("unet", "backbone_unet_frozen", "backbone_unet_finetuned"))
    old = retired["scorings"]
    _markdown([
        f"**Три выборки:** train / val / test = {_pct(1 - test_share - val_share)} / {_pct(val_share)} / "
        f"{_pct(test_share)} % кадров, стратифицированы по доле камней (фиксированный seed). **Test берётся только из "
        f"кадров, на которых не делался ни один выбор:** {info['n_selection']} кадров, на которых раньше сравнивали "
        f"рецепты (валидация прежнего поиска — {len(selection['search_val'])}, валидация протокола с seed — "
        f"{len(selection['protocol_val'])}), перечислены в `hw/moon_selection.json` и попадают только в train и val "
        f"(это проверяет тест). Прежний test был той самой валидацией прежнего поиска; его оценили дважды (IoU U-Net "
        f"/ A / B: {ious(old[0])}, затем {ious(old[1])}), поэтому он заменён.", "",
        f"**Битые кадры** (`MaskSet.broken`): не меньше {_pct(BROKEN_BLACK)} % пикселей нижней половины кадра чисто "
        f"чёрные, а маска отмечает камень хотя бы на {_pct(BROKEN_ROCK)} % этих пикселей: увидеть такие камни нельзя. "
        f"Их {info['n_broken']} из {info['n_frames']}; они **исключены из обучения** и остаются в val и test; на test "
        "метрики даны с ними и без них."])


def moon_samples(train, val, test, figures, k=4):
    """Four training frames and up to two broken frames of val and test, each over its mask."""
    bad = [(d, i) for d in (val, test) for i in torch.nonzero(d.broken).flatten().tolist()][:2]
    frames = [(train, i) for i in range(k)] + bad
    titles = [f"кадр {d.ids[i]}" + (", битый" if d.broken[i] else "") for d, i in frames]
    fig = show_images([d.images[i] for d, i in frames] + [d.masks[i] for d, i in frames],
                      titles + ["маска"] * len(frames), ncols=len(frames), path=figures / "02_samples.png")
    _figure(fig, "Рисунок: обучающие кадры (128×128), справа — битые кадры из val и test; под каждым — маска "
                 "(белое — камень). У битых низ рендера чисто чёрный, а маска отмечает там камни.")


def segmentation_augmentations(train, augment, figures, seed=0):
    x, m = train.images[:1].repeat(4, 1, 1, 1), train.masks[:1].repeat(4, 1, 1, 1)
    ai, am = BatchAugment(augment)(x, m, torch.Generator().manual_seed(seed))
    fig = show_images([x[0], *ai.round().byte(), m[0], *am.byte()],
                      ["оригинал"] + [f"аугментация {j}" for j in range(1, 5)] + [""] * 5, ncols=5,
                      path=figures / "02_augmentations.png")
    _figure(fig, f"Рисунок: один кадр и четыре его аугментации (кроп, отражения, поворот до {augment.rotate:g}°, "
                 "цвет); геометрия одна для картинки и маски, цвет меняется только у картинки.")


def said(row):
    """A decision of the seed protocol as the report words it: the pooled difference, per seed, and its interval."""
    per_seed = " и ".join(signed(d) for d in row["diff_per_seed"])
    return (f"{signed(row['diff'])} IoU на val (с {len(row['seeds'])} seed: {per_seed}; {row['level']:.1%}-интервал "
            f"{signed(row['interval'][0])}…{signed(row['interval'][1])})")


def augmentation_decision(decisions):
    _markdown(f"**Итоговый U-Net обучается без них:** горизонтальный флип против обучения без аугментаций дал "
              f"{said(decisions['candidates']['hflip'])} — интервал содержит ноль, и остался более простой вариант.")


def loss_decisions(decisions):
    c = decisions["candidates"]
    _markdown(f"Замена Dice на Lovász hinge дала {said(c['lovasz'])} — хуже; замена BCE на focal loss — "
              f"{said(c['focal'])}, в пределах разброса; поэтому функция потерь осталась прежней.\n\n"
              f"**Итоговое обучение — на train + val** (без битых кадров): модель на "
              f"{c['train75']['changes']['train_fraction']:.0%} train против модели на всём train дала "
              f"{said(c['train75'])}, то есть кадров не хватает.")


def threshold_decision(decisions, threshold):
    th = decisions["threshold"]["unet"]
    _markdown(f"Порог {threshold} против подобранного на val: подобранный на случайной половине val порог на другой "
              f"половине дал в среднем {signed(th['gain_mean'])} IoU (центральные 95 % разбиений: "
              f"{signed(th['gain_spread'][0])}…{signed(th['gain_spread'][1])}) — в пределах разброса, и порог "
              "остался фиксированным.")


def unet_curves(history, figures):
    metrics = ["loss", "iou", "dice", "pixel_acc"]
    fig = plot_history(history, metrics, "U-Net: кривые обучения", figures / "02_curves.png")
    _figure(fig, "Рисунок: loss, IoU, Dice и pixel accuracy по эпохам; val входит в итоговое обучение, поэтому это "
                 "кривые подгонки, а не обобщения.")
    peak = int(history["lr"].idxmax()) + 1          # the one-cycle schedule's warm-up ends here
    dip, after = history["val_iou"].iloc[:peak], history["val_iou"].iloc[peak:]
    _markdown(f"Провалы val IoU в первые эпохи (до {dip.min():.3f} на эпохе {int(dip.idxmin()) + 1}) приходятся на "
              f"разогрев one-cycle: скорость обучения растёт до {history['lr'].max():.4f} к эпохе {peak}; после неё "
              f"IoU не опускается ниже {after.min():.3f}. Сохраняется последняя эпоха, так что провалы на итоговую "
              "модель не влияют.")


def _test_rows(summaries):
    return _table([{"выборка": name, "кадров": v["n"], "IoU": f"{v['iou']:.3f}",
                    "95 % интервал IoU": interval(v["iou_ci"]), "Dice": f"{v['dice']:.3f}",
                    "pixel acc": f"{v['pixel_acc']:.3f}"} for name, v in summaries], "выборка")


def unet_metrics(summary, meta, epochs):
    t = summary["test"]
    _show(_test_rows([("test", t), ("test без битых кадров", t["without_broken"])]))
    print(f"порог {summary['threshold']:.2f} (задан заранее); без flip TTA: IoU на test {t['iou_no_tta']:.3f}; "
          f"сохранена эпоха {meta['epoch']} из {epochs}; обучение {meta['train_time_s'] / 60:.1f} мин на "
          f"{meta['machine']}")


WORST = 10          # the worst frames by IoU whose rock coverage the report compares with all frames


def _worst_coverage(test, res):
    """The mean rock coverage of the WORST test frames by IoU, and of all test frames."""
    order = torch.argsort(res["iou_per_image"])
    return float(test.coverage[order[:WORST]].mean()), float(test.coverage.mean())


def segmentation_examples(test, res, figures, n=5):
    """The slider's static version: n test frames at even ranks from the worst IoU to the best, and the rock
    coverage of the worst frames against all."""
    order = torch.argsort(res["iou_per_image"])
    show = order[torch.linspace(0, len(order) - 1, n).long()].tolist()
    fig = show_segmentation(test, show, [("U-Net", res)], figures / "02_predictions.png")
    _figure(fig, f"Рисунок (статическая версия слайдера): {n} кадров test с равным шагом по рангу IoU, от худшего к "
                 "лучшему; по столбцам — вход, вероятность камня, разметка и ошибки U-Net с IoU этого кадра.")
    worst, cov = _worst_coverage(test, res)
    print(f"доля камней: у {WORST} худших по IoU кадров test {worst:.1%}, у всех кадров test {cov:.1%}")


def browse_frames(test, models, order_by=0, probability=True):
    """A slider over the test frames from the worst IoU of models[order_by] to its best (in Jupyter).
    models: [(label, segmentation_results)]."""
    import matplotlib.pyplot as plt
    order = torch.argsort(models[order_by][1]["iou_per_image"])

    def render(k):
        show_segmentation(test, [int(order[k])], models, probability=probability)
        plt.show()
    return browse(len(order), render, "ранг")


def unet_conclusion(summary, meta, test, res, demo=False, top=None):
    t, (worst, cov) = summary["test"], _worst_coverage(test, res)
    _markdown([
        f"- U-Net: **{summary['params']:,}** параметров (бюджет 2.5 M), обучение на train + val "
        f"{meta['train_time_s'] / 60:.1f} мин на {meta['machine']}.",
        f"- Test ({t['n']} кадров, только из тех, на которых не делался ни один выбор; порог "
        f"{summary['threshold']:.2f} задан заранее): **IoU = {t['iou']:.3f}** (95 % интервал {interval(t['iou_ci'])}), "
        f"Dice = {t['dice']:.3f}, pixel accuracy = {t['pixel_acc']:.3f}; без {t['n'] - t['without_broken']['n']} "
        f"битых кадров IoU = {t['without_broken']['iou']:.3f}; без flip TTA IoU = {t['iou_no_tta']:.3f}.",
        f"- Камни занимают {cov:.1%} кадров test, поэтому pixel accuracy высока и у слабой модели (всё-фон дал бы "
        f"{1 - cov:.1%}); судить стоит по IoU и Dice.",
        f"- Худшие кадры (рисунок выше) — с {'малой' if worst < cov else 'большой'} долей камней: {worst:.1%} у {WORST} "
        f"худших против {cov:.1%} в целом.", reproducibility(meta, demo)])
    if top is not None:
        top.fill({"параметров (не больше 2.5 M, допуск +10 %)": f"{summary['params']:,}",
                  "IoU на test (95 % интервал)": f"{t['iou']:.3f} ({interval(t['iou_ci'])})",
                  "Dice / pixel accuracy на test": f"{t['dice']:.3f} / {t['pixel_acc']:.3f}",
                  "кадров test (битых)": f"{t['n']} ({t['n'] - t['without_broken']['n']})",
                  "обучение на train + val (машина, обучившая веса)":
                      f"{meta['train_time_s'] / 60:.1f} мин, {short_machine(meta['machine'])}"})


# ------------------------------------------------------------------------------------------------ 03: backbone U-Net
def inputs(cls_meta, unet_meta, train, val, test):
    print(f"классификатор: {cls_meta['params']:,} параметров, {len(cls_meta['classes'])} классов, "
          f"val top-1 {cls_meta['metrics']['val_top1']:.1%} (профиль {cls_meta['profile']})")
    print(f"базовый U-Net: IoU {unet_meta['metrics']['test']['iou']:.3f} на test (профиль {unet_meta['profile']})")
    print(f"кадров: train {len(train)} (без битых), val {len(val)}, test {len(test)}")


def adapters(model):
    """How the classifier's stages meet the decoder: per stage its stride, map, channels -> adapter, decoder level."""
    enc = model.encoder
    names = ["стем"] + [f"стадия {i}" for i in range(1, len(enc.backbone.stages))]
    levels = (["последний (→ логиты 64×64 → 128×128)"] + [f"skip-связь {len(enc.strides) - 1 - j}"
                                                          for j in range(1, len(enc.strides) - 1)] + ["вход декодера"])
    _show(_table([{"стадия": n, "шаг": s, "карта": f"{128 // s}×{128 // s}", "каналы → адаптер 1×1": f"{c} → {w}",
                   "уровень декодера": lev} for n, s, c, w, lev in
                  zip(names, enc.strides, enc.backbone.out_channels, enc.out_channels, levels)], "стадия"))
    total, n_enc = count_params(model), sum(p.numel() for p in model.encoder_parameters())
    print(f"параметров всего: {total:,}; стадии классификатора: {n_enc:,}; адаптеры и декодер: {total - n_enc:,}")


def unfreeze_dip(hist_a, hist_b, probe):
    """B's val IoU just after unfreezing, attributed: `probe` is `bn_refresh_probe` of A (its BatchNorm statistics
    refreshed on the fit's frames, no weight changed). Each clause is worded by what the numbers show."""
    a_last, b_first, iou = hist_a["val_iou"].iloc[-1], hist_b["val_iou"].iloc[0], hist_b["val_iou"]
    low, peak = int(iou.idxmin()) + 1, int(hist_b["lr"].idxmax()) + 1
    if iou.min() >= a_last:
        return _markdown(f"**После разморозки** val IoU B ни на одной эпохе не ниже последней эпохи A ({a_last:.3f}).")
    back = next((e + 1 for e, v in enumerate(iou) if e + 1 > low and v >= a_last), None)
    drop, bn = a_last - b_first, probe["frozen"] - probe["refreshed"]
    lines = [f"**Провал после разморозки.** На последней эпохе A val IoU {a_last:.3f}; после первой эпохи B — "
             f"{b_first:.3f} (скорость обучения ещё {hist_b['lr'].iloc[0]:.5f}); минимум {iou.min():.3f} на эпохе "
             f"{low}, пик скорости обучения {hist_b['lr'].max():.4f} — на эпохе {peak}; " +
             (f"выше уровня A B снова с эпохи {back}." if back else "уровня A B не возвращает."),
             f"Проверка без обучения: те же веса A, у которых статистики BatchNorm один раз пересчитаны по кадрам "
             f"обучения (так их пересчитывает B: у A они заморожены на Tiny ImageNet), дают val IoU "
             f"{probe['refreshed']:.3f} против {probe['frozen']:.3f} у A (оба в fp32, без TTA)."]
    if bn > 0 and drop > 0:
        lines.append("Пересчёт статистик один объясняет " + (
            "падение первой эпохи с избытком (в ней вместе со статистиками меняются и веса)." if bn >= drop else
            "большую часть падения первой эпохи." if bn >= 0.5 * drop else "меньшую часть падения первой эпохи."))
    else:
        lines.append("Пересчёт статистик сам по себе IoU не снижает: провал не от BatchNorm.")
    lines.append(("Минимум приходится на пик скорости обучения всей сети (разогрев one-cycle). " if abs(low - peak) <= 1
                  else "") + "Прежний поиск на одном разбиении пробовал и замороженные статистики BatchNorm, и меньший "
                 "lr энкодера: итоговый IoU B они не сдвинули (`experiments/README.md`); по протоколу с seed это не "
                 "перепроверялось, и рецепт B не менялся.")
    _markdown(" ".join(lines))


def backbone_curves(weights, hist_a, hist_b, figures):
    """The val curves of the U-Net (weights/unet_history.csv), A and B, B continuing A."""
    import pandas as pd
    unet_hist = pd.read_csv(Path(weights) / "unet_history.csv")
    fig = plot_curves({"базовый U-Net": unet_hist, "A: заморожен": hist_a,
                       "B: дообучен после A": hist_b.assign(epoch=hist_b["epoch"] + len(hist_a))},
                      ["loss", "iou"], path=figures / "03_curves.png", marks={len(hist_a) + 0.5: "B: разморозка"})
    _figure(fig, "Рисунок: loss и IoU на val по эпохам у базового U-Net, A и B (B продолжает A; пунктир — "
                 "разморозка энкодера); val входит в итоговое обучение всех трёх, поэтому это кривые подгонки.")


@dataclass
class Comparison:
    """Part 3's models on test: the table (one row per model, `NAMES` order), the paired differences to the U-Net,
    and each model's `segmentation_results` on test."""
    table: object
    pairs: dict
    results: dict

    @property
    def three(self):
        """The task's comparison, for the figures: [(label, results)] of the U-Net, A and B."""
        return [(label, self.results[n]) for label, n in (("U-Net", "unet"), ("A", "backbone_unet_frozen"),
                                                          ("B", "backbone_unet_finetuned"))]


def comparison(weights, test, recipe, **results):
    """Part 3's test table from weights/*_metrics.json, one row per model of `results` (name -> its
    `segmentation_results` on test; the U-Net first, then A and B: these three rows go to weights/comparison.csv),
    a model's training minutes with those of the model it starts from (`recipe`). Shows the table and the paired
    differences to the U-Net; returns a `Comparison`. A model without a label in NAMES shows its name."""
    import pandas as pd
    s = {n: metrics(n, weights) for n in results}
    minutes = {n: v["train_time_s"] / 60 for n, v in s.items()}
    for n, m in recipe.models().items():
        if n in minutes and m.starts_from in s:
            minutes[n] += s[m.starts_from]["train_time_s"] / 60       # B starts from A
    table = pd.DataFrame([{"модель": NAMES.get(n, n), "параметров": v["params"], "обучаемых": v["trainable_params"],
                           "IoU test": v["test"]["iou"], "95 % интервал IoU test": interval(v["test"]["iou_ci"]),
                           "Dice test": v["test"]["dice"], "pixel acc test": v["test"]["pixel_acc"],
                           "IoU test без битых": v["test"]["without_broken"]["iou"], "обучение, мин": minutes[n]}
                          for n, v in s.items()]).set_index("модель")
    table.iloc[:3].to_csv(Path(weights) / "comparison.csv")
    shown = formatted(table, {"параметров": "{:,}", "обучаемых": "{:,}", "обучение, мин": "{:.1f}"}, precision=3)
    _show(shown.set_axis([SHORT.get(n, n) for n in s]).rename(columns={"95 % интервал IoU test": "95 % интервал"}).T)
    pairs = {n: paired_bootstrap_iou(results["unet"]["counts"], results[n]["counts"]) for n in s if n != "unet"}
    _show(_table([{"разница с U-Net на test": SHORT.get(n, n), "IoU": signed(p["diff"]),
                   "95 % интервал": f"{signed(p['low'])}…{signed(p['high'])}"} for n, p in pairs.items()],
                 "разница с U-Net на test"))
    print(f"A-128, B-128 — полноразмерные A и B (выход 128×128); время B включает его A; парный бутстреп: модели оцениваются на одних и тех же {len(test)} кадрах test, "
          "выбранных с повторением")
    return Comparison(table, pairs, results)


def side_by_side(test, cmp, figures, n=3):
    order = torch.argsort(cmp.results["unet"]["iou_per_image"])
    show = order[torch.linspace(0, len(order) - 1, n).long()].tolist()
    fig = show_segmentation(test, show, cmp.three, figures / "03_side_by_side.png", probability=False)
    _figure(fig, "Рисунок (статическая версия слайдера выше, который в Jupyter листает все кадры test от "
                 "худшего IoU базового U-Net к лучшему): худший, средний и лучший по IoU U-Net кадры — вход, разметка и "
                 "ошибки U-Net, A и B.")


def ablation(abl, cmp, test, weights):
    """Every design of the ablation with its val scores, the IoU ceiling of its output size on the test masks, and
    test scores for the final fits; written to weights/backbone_ablation.json. Whether the ablation trained on this
    classifier (its weights' digest) is said, and where it did not, every row is marked. Returns its rows."""
    current = weights_digest(Path(weights) / "classifier.pt")
    same = abl.get("classifier") == [current]
    ceiling = {s: ceiling_iou(test.masks, s) for s in (64, 128)}        # a perfect prediction at that size
    rows = []
    for r in abl["rows"]:
        w = ABLATION_WEIGHTS.get(r["name"])
        t = metrics(w, weights)["test"] if w in cmp.pairs else None
        rows.append({**{k: r[k] for k in ("name", "encoder", "frozen", "output_size", "seeds", "val_iou",
                                          "verdict_vs_literal_B", "train_minutes")},
                     "ceiling_iou": ceiling[r["output_size"]], "test_iou": t and t["iou"],
                     "test_iou_ci": t and t["iou_ci"], "weights": t and f"weights/{w}.pt",
                     "test_minus_unet": t and cmp.pairs[w]})
    save_json({"protocol": abl["protocol"], "contrasts": abl["contrasts"], "best": abl["best"], "rows": rows},
              Path(weights) / "backbone_ablation.json")
    diffs = {r["name"]: r["diff_vs_literal_B"] for r in abl["rows"]}
    _show(_table([{"вариант": ABLATION_NAMES.get(r["name"], r["name"]), "IoU val по seed": " / ".join(f"{x:.3f}" for x in r["val_iou"]),
                   "против B на val": _span(diffs[r["name"]]) if diffs[r["name"]] else "—",
                   "вердикт": VERDICT[r["verdict_vs_literal_B"]]} for r in rows], "вариант"))
    _show(_table([{"вариант": ABLATION_NAMES.get(r["name"], r["name"]), "выход": f"{r['output_size']}×{r['output_size']}",
                   "потолок IoU на test": f"{r['ceiling_iou']:.3f}", "обучение, мин": f"{r['train_minutes']:.1f}",
                   **({} if same else {"классификатор": "прежний"})} for r in rows], "вариант"))
    print(f"val: {abl['n_val']} кадров, seed {' и '.join(map(str, abl['seeds']))}; {abl['comparisons']} сравнений, "
          f"уровень интервалов {abl['level']:.1%} (Бонферрони); «обучение» — минуты на train в абляции (у B вместе с "
          f"его A; {abl['machine']}); «потолок» — IoU идеальной маски на test после выхода этого размера. " +
          (f"Абляция обучена на том же классификаторе, что и итоговые модели (веса {current})." if same else
           f"Абляция обучена на прежнем обучении классификатора (веса {', '.join(abl.get('classifier', [])) or '—'}), "
           f"итоговые модели — на нынешнем ({current})."))
    return rows


def fullres_vs_literal(test, cmp, figures, n=4):
    res_b, res_f = cmp.results["backbone_unet_finetuned"], cmp.results["backbone_unet_fullres"]
    most = torch.argsort((res_f["iou_per_image"] - res_b["iou_per_image"]).abs(), descending=True)[:n].tolist()
    fig = show_segmentation(test, most, [("B", res_b), ("B-128", res_f)], figures / "03_fullres_vs_B.png",
                            probability=False)
    _figure(fig, f"Рисунок: {n} кадра test, на которых полноразмерный B (B-128) и B расходятся сильнее всего, — "
                 "вход, разметка и ошибки обоих.")


def ablation_findings(abl, rows, cmp, demo=False):
    row, c = {r["name"]: r for r in rows}, abl["contrasts"]
    res_b, res_f = cmp.results["backbone_unet_finetuned"], cmp.results["backbone_unet_fullres"]
    fr = next(r["diff_vs_literal_B"] for r in abl["rows"] if r["name"] == "fullres_B")
    closed = paired_bootstrap_iou(res_b["counts"], res_f["counts"])     # the 128x128 output on test, against B
    lines = [f"- **Разрешение выхода.** Идеальное предсказание на 64×64, возвращённое к 128×128, даёт на масках test "
             f"IoU {row['literal_B']['ceiling_iou']:.3f}. B-128 против B: на val {_span(fr)} — "
             f"{_word(row['fullres_B']['verdict_vs_literal_B'], 'выше при каждом seed', 'ниже при каждом seed')}; "
             f"на test {_span(closed)} — "
             f"{'выше' if closed['low'] > 0 else 'ниже' if closed['high'] < 0 else 'не различимы'}.",
             f"- **Перенос.** Веса классификатора против случайных в той же сети (val): у B "
             f"{_span(c['transfer_literal'])} — {_word(c['transfer_literal']['verdict'], 'помогают', 'мешают')}; у "
             f"B-128 {_span(c['transfer_fullres'])} — "
             f"{_word(c['transfer_fullres']['verdict'], 'помогают', 'мешают')}."]
    for name in ("literal_B", "fullres_B"):
        p = row[name]["test_minus_unet"]
        lines.append(f"- **Test**, {ABLATION_NAMES.get(name, name)} против базового U-Net: {_span(p)} — "
                     f"{'выше' if p['low'] > 0 else 'ниже' if p['high'] < 0 else 'не различимы'}.")
    lines += ["- **Профиль demo:** строки val взяты из абляции на реальных данных, test — синтетический."] * demo
    _markdown(lines)


def _verdict(p, who):
    if p["low"] > 0:
        return f"{who} выше базового U-Net: {_span(p)}, интервал целиком выше нуля"
    if p["high"] < 0:
        return f"{who} ниже базового U-Net: {_span(p)}, интервал целиком ниже нуля"
    return f"{who} и базовый U-Net на test не различимы: {_span(p)}, интервал содержит ноль"


def backbone_conclusion(cmp, abl, rows, meta, n_classes, demo=False, top=None):
    table, pairs = cmp.table, cmp.pairs
    iou, ci = table["IoU test"], table["95 % интервал IoU test"]
    c, row = abl["contrasts"], {r["name"]: r for r in rows}
    a, b = "backbone_unet_frozen", "backbone_unet_finetuned"
    minutes = table["обучение, мин"]
    _markdown([
        "- IoU на test (95 % интервал): " + ", ".join(f"{k} {iou[k]:.3f} ({ci[k]})" for k in table.index) + ".",
        f"- A обучает {int(table['обучаемых'].iloc[1]):,} параметров (адаптеры и декодер) поверх признаков, выученных "
        f"на {n_classes} классах объектов (картинки 64 px), а не на рендерах реголита. {_verdict(pairs[a], 'A')}.",
        f"- {_verdict(pairs[b], 'B')} (парный бутстреп по кадрам test; каждая модель обучена с одним seed, разброс "
        "от seed в интервал не входит).",
        f"- Откуда разрыв (раздел 6): выход 64×64 сам по себе ограничивает IoU на test "
        f"{row['literal_B']['ceiling_iou']:.3f}; B-128 против B на val — "
        f"{_word(row['fullres_B']['verdict_vs_literal_B'], 'выше', 'ниже')}, а на test против U-Net "
        f"{_span(row['fullres_B']['test_minus_unet'])}; "
        f"веса классификатора против случайных — {_word(c['transfer_literal']['verdict'], 'помогают', 'мешают')} "
        f"(сеть B) и {_word(c['transfer_fullres']['verdict'], 'помогают', 'мешают')} (сеть B-128).",
        f"- Цена: параметров у B {int(table['параметров'].iloc[2]):,} против {int(table['параметров'].iloc[0]):,} у "
        f"U-Net; обучение: U-Net {minutes.iloc[0]:.1f} мин, A {minutes.iloc[1]:.1f}, B вместе с A "
        f"{minutes.iloc[2]:.1f}.", reproducibility(meta, demo)])
    if top is not None:
        top.fill({k: f"IoU {iou[k]:.3f} ({ci[k]})" + (f"; против U-Net {_span(pairs[n])}" if n in pairs else "")
                  for n, k in zip(cmp.results, table.index)})


# ------------------------------------------------------------------------------------------------------ the README
# The README's result blocks (tools/readme_tables.py writes them between their markers), from the same files and with
# the same formatting as the notebooks' tables.
# Public submissions of this task, each number with its source (repository and file, read 2026-12-07); their val
# scores, on their own data and splits: not our measurement.
RG, KU = "romangorbunov91/custom-U-Net", "ku9efeld/NN-Architecture"


PEERS = {"classifier": f"top-1 62 % на val, 10 классов ({RG}, `train_logs/customResNet.json`)",
         "unet": f"IoU 0.433, Dice 0.604, pixel acc. 0.918 ({RG}, `README.md`); IoU 0.338 ({KU}, "
                 "`Homework-3/Report.md`)",
         "backbone_unet_finetuned": f"IoU 0.398 с предобученным бэкбоном ({RG}, `README.md`); IoU 0.260, вариант B "
                                    f"({KU}, `Homework-3/Report.md`)",
         "backbone_unet_frozen": f"IoU 0.220, вариант A ({KU}, `Homework-3/Report.md`)",
         "backbone_unet_fullres": "—"}


VERDICT_RU = {"better": "лучше", "worse": "хуже", "undecided": "не различимы"}


def readme_results():
    w = ROOT / "weights"
    rows = {n: m for n in PEERS if (m := metrics(n))}
    if not rows:
        return "_No committed run yet: `python run_all.py --profile cpu` writes it._"
    lines = ["| модель | профиль | параметров (обучаемых) | обучение, мин | val (на нём делались выборы) | test, 95 % "
             "интервал (кадры, которых не видел ни один выбор) | публичные сдачи (источник) |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        t = r.get("test")
        if name == "classifier":
            val = f"top-1 {r['val_top1']:.1%}, top-5 {r['val_top5']:.1%} ({r['n_val']} картинок, {r['classes']} классов)"
            test = (f"top-1 **{t['top1']:.1%}** ({interval(t['top1_ci'], '{:.1%}')}), top-5 {t['top5']:.1%} ({t['n']} картинок "
                    f"официального val)" if t else "нет (в архиве курса нет официального val)")
        else:
            val = ("— (часть итогового обучения на train + val)" if r.get("fit_on") == "train+val" else
                   f"IoU {r['iou']:.3f}, Dice {r['dice']:.3f}, pixel acc. {r['pixel_acc']:.3f} ({r['n_val']} кадров)")
            test = (f"IoU **{t['iou']:.3f}** ({interval(t['iou_ci'])}), Dice {t['dice']:.3f}, pixel acc. "
                    f"{t['pixel_acc']:.3f} ({t['n']} кадров; без {t['n'] - t['without_broken']['n']} битых: IoU "
                    f"{t['without_broken']['iou']:.3f})" if t else "нет")
        lines.append(f"| `{name}` | {r['profile']}{' (синтетика)' if r.get('synthetic') else ''} | "
                     f"{r['params']:,} ({r['trainable_params']:,}) | {r['train_time_s'] / 60:.1f} | {val} | {test} | "
                     f"{PEERS[name]} |")
    lines.append("\n«Обучение, мин» — только эпохи обучения этой модели (B — без своего A). «Публичные сдачи» — "
                 "числа из опубликованных решений этого задания (репозиторий и файл указаны; это их val). Это не наш "
                 "замер: их данные, выборки и число классов другие, поэтому сравнивать стоит только порядок величин.")
    t = w / "timings.json"
    if t.exists():
        tm = json.loads(t.read_text())
        dates, machines, precisions = tm.get("dates", {}), tm.get("machines", {}), tm.get("precisions", {})
        by_machine = {}
        for k, v in tm["minutes"].items():
            by_machine.setdefault((machines.get(k, "machine not recorded"), precisions.get(k, "precision not recorded")),
                                  []).append((k, v))
        for (machine, precision), nbs in by_machine.items():
            parts = ", ".join(f"{k.split('.')[0]} {v:.1f} мин" + (f" ({dates[k]})" if k in dates else "")
                              for k, v in nbs)
            lines.append(f"\nВремя ноутбука целиком (обучение, оценка, рисунки; `{tm['profile']}`, запуск, обучивший "
                         f"закоммиченные веса) на {machine} ({precision}): {parts}; **{sum(v for _, v in nbs):.1f} мин** "
                         "(сумма только по ноутбукам, запущенным на этой машине).")
    return "\n".join(lines)


def readme_summary():
    """The README's first block for a grader: each part of the task, what it is, and its headline number."""
    names = ("classifier", "unet", "backbone_unet_frozen", "backbone_unet_finetuned", "backbone_unet_fullres")
    if not all(metrics(n) for n in names):
        return "_No committed run yet._"
    cls, u, a, b, f = (metrics(n) for n in names)
    iou = lambda m: f"IoU на test **{m['test']['iou']:.3f}** ({interval(m['test']['iou_ci'])})"          # noqa: E731
    return "\n".join([
        "| часть | что сделано | главное число |", "|---|---|---|",
        f"| 1. Классификатор 128×128 | своя ResNet-подобная CNN, {cls['params']:,} параметров, {cls['classes']} классов "
        f"Tiny ImageNet, свой стратифицированный split | top-1 на val **{cls['val_top1']:.1%}** "
        f"({interval(cls['val_top1_ci'], '{:.1%}')}); по val выбраны рецепт и эпоха |",
        f"| 2. U-Net | 4 уровня вниз / 4 вверх, база 32, max-pool, {u['params']:,} параметров, BCE + Dice | {iou(u)} |",
        f"| 3. U-Net на бэкбоне | стадии классификатора + адаптеры 1×1: A (энкодер заморожен), B (дообучен после A); "
        f"абляция: выход 128×128 против переноса признаков | A {iou(a)}, B {iou(b)}, B-128 (выход 128×128) {iou(f)} |",
        "",
        "Test — кадры, на которых не делался ни один выбор; интервал — 95 % бутстреп по кадрам test. Сравнения моделей "
        "(парный бутстреп) — в `report/03_backbone_unet.pdf`, раздел 5; откуда разрыв с U-Net (абляция) — раздел 6."])


def readme_splits():
    """What each split of the README's results is, and what was decided where, from the code's constants and the
    selection list (hw/moon_selection.json)."""
    sel = moon_selection()
    n_sel, pct = sum(map(len, sel.values())), lambda f: f"{100 * f:.0f}"                        # noqa: E731
    r = recipe("cpu")
    return (f"**Test** is what no choice looked at: {pct(MOON_TEST)} % of the moon frames (stratified by rock "
            f"coverage, fixed seed; train / val / test = {pct(1 - MOON_TEST - MOON_VAL)} / "
            f"{pct(MOON_VAL)} / {pct(MOON_TEST)} %), drawn only from frames outside the {n_sel} that "
            f"served earlier choices (`hw/moon_selection.json`: the {len(sel['search_val'])} frames of the single-split "
            f"search's validation split, which had also been the test split until it was replaced, and the "
            f"{len(sel['protocol_val'])} of the seed protocol's validation split; they go to train and val only); for "
            "the classifier, the official validation images of its classes (not in `../shared`: n/a). The interval is "
            "the 95 % bootstrap interval over the test images. **Validation**: the classifier's recipe, its flip TTA "
            "and its best epoch were chosen on it, so it is optimistic. **Decided under the seed protocol** "
            "([experiments/README.md](experiments/README.md)): the U-Net's h-flip, epochs, data fraction, loss and the "
            "threshold; **inherited from the earlier single-split search**: the U-Net's widths, A's and B's "
            "augmentation and epochs, B's learning rate, flip TTA. The "
            f"{sum(m.fit_on_val for m in r.models().values())} segmentation models were then fit once on "
            f"train + val with the epochs and the threshold ({r.unet.task.threshold}) fixed beforehand, so val scores none "
            f"of them. Broken renders (`MaskSet.broken`: at least {pct(BROKEN_BLACK)} % of the lower half of "
            f"the frame pure black, and the mask marking rock on at least {pct(BROKEN_ROCK)} % of those black "
            "pixels; counted in notebook 02) are left out of training; the test IoU is also given without them.")


def readme_checklist(decisions):
    """The course task, point by point: where the report shows it and its number (from the metrics files and the
    recipes of the cpu profile)."""
    m = {n: v for n in ("classifier", "unet", "backbone_unet_frozen", "backbone_unet_finetuned")
         if (v := metrics(n))}
    if len(m) < 4:
        return "_No committed run yet._"
    r = recipe(m["unet"]["profile"])
    cls, u, a, b = m["classifier"], m["unet"], m["backbone_unet_frozen"], m["backbone_unet_finetuned"]
    unet_cfg, bb_cfg = r.unet.architecture, r.backbone_unet_frozen.architecture     # as trained: a test checks it
    aug = r.classifier.train.augment
    test = lambda x: f"IoU на test {x['test']['iou']:.3f} ({interval(x['test']['iou_ci'])})"      # noqa: E731
    flip_verdict = decisions["candidates"].get("hflip", {}).get("verdict", "not compared")
    rows = [
        ("1", "своя CNN, не больше ~5M параметров, вход 128×128×3", "01 · Архитектура", f"{cls['params']:,} параметров"),
        ("1", "Tiny ImageNet-200, приведённый к 128×128 (любое число классов), свой стратифицированный split", "01 · Данные",
         f"{cls['classes']} классов; {cls['n_val']} картинок в val, стратифицированный split 90/10"),
        ("1", "аугментации", "01 · Аугментации (рисунок)",
         augment_words(aug)),
        ("1", "кривые loss и accuracy", "01 · Обучение (рисунок)", f"{r.classifier.train.epochs} эпох, train и val; лучшая — {cls['best_epoch']}"),
        ("1", "итоговые метрики на валидации", "01 · Итоговые метрики",
         f"top-1 {cls['val_top1']:.1%} ({interval(cls['val_top1_ci'], '{:.1%}')}), top-5 {cls['val_top5']:.1%}"),
        ("1", "чекпоинт", "`weights/classifier.pt`", "`common.load_checkpoint` строит модель по одному этому файлу"),
        ("2", "U-Net: 4 уровня вниз / 4 вверх со skip, база 32, max-pool, 1 канал с сигмоидой, вход 128×128×3",
         "02 · Модель", f"ширины энкодера {unet_cfg['widths']}, декодера {unet_cfg['decoder']}"),
        ("2", "не больше 2.5M параметров (±10 %)", "02 · Модель", f"{u['params']:,} параметров"),
        ("2", "BCE и/или Dice", "02 · Функция потерь и обучение", f"BCE × {r.unet.task.bce:g} + Dice × {r.unet.task.dice:g}"),
        ("2", "IoU, Dice, pixel accuracy", "02 · Итоговые метрики на test",
         f"{test(u)}, Dice {u['test']['dice']:.3f}, pixel acc. {u['test']['pixel_acc']:.3f}"),
        ("2", "флипы и лёгкая аугментация", "02 · Аугментации (рисунок)",
         f"показаны на кадре; итоговый рецепт обучается без них (отражение против обучения без аугментаций: "
         f"{VERDICT_RU.get(flip_verdict, flip_verdict)}, `experiments/README.md`)"),
        ("2", "3–5 визуализаций", "02 · Визуализации (рисунок, слайдер)", "5 кадров test с равным шагом по рангу IoU"),
        ("3", "стадии классификатора без головы как энкодер, адаптеры 1×1, интерполяция", "03 · раздел 1",
         f"адаптеры до {bb_cfg['adapters']}; логиты 64×64 интерполируются до 128×128"),
        ("3", "вариант A: энкодер заморожен, обучается только сторона декодера", "03 · раздел 2 (вариант A)",
         f"обучаются {a['trainable_params']:,} из {a['params']:,} параметров; {test(a)}"),
        ("3", "вариант B: затем энкодер дообучается", "03 · раздел 3 (вариант B)", f"{b['epochs']} эпох после A; {test(b)}"),
        ("3", "таблица сравнения с частью 2", "03 · раздел 5 (таблица, парный бутстреп на test)",
         f"IoU на test: U-Net {u['test']['iou']:.3f}, A {a['test']['iou']:.3f}, B {b['test']['iou']:.3f}"),
    ]
    abl = ROOT / "weights" / "backbone_ablation.json"
    if abl.exists():
        rows.append(("3", "откуда разрыв с U-Net (наше дополнение): разрешение выхода против переноса",
                     "03 · раздел 6 (таблицы, рисунок, вывод)", _ablation_cell(json.loads(abl.read_text()))))
    return "\n".join(["| часть | требование | где в отчёте | число |", "|---|---|---|---|"] +
                     [f"| {p} | {req} | {where} | {num} |" for p, req, where, num in rows])


def _ablation_cell(abl):
    """One cell: the ceiling of a 64x64 output, and each final fit's test IoU against the U-Net's (paired bootstrap)."""
    rows, words = {r["name"]: r for r in abl["rows"]}, ABLATION_NAMES
    fits = [f"{words.get(n, n)} {r['test_iou']:.3f} ({signed(r['test_minus_unet']['diff'])} к U-Net, "
            f"{signed(r['test_minus_unet']['low'])}…{signed(r['test_minus_unet']['high'])})"
            for n, r in rows.items() if r["test_iou"] is not None]
    return (f"идеальный выход 64×64 сохраняет IoU {rows['literal_B']['ceiling_iou']:.3f}; вариант, выбранный по val: "
            f"{words.get(abl['best'], abl['best']) if abl['best'] else 'ни один не обошёл B'}; IoU на test: " + ", ".join(fits))
