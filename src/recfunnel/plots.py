"""The figures every chapter reuses, in one consistent style.

``training_curves`` (a ``train.History``), ``validation_curves`` (several models'
validation metric per epoch), ``metric_bars`` (models side by side, with
error bars over seeds), ``heatmap`` (gates, attention, similarity) and ``funnel_chart``
(the six stages of the funnel, one stage highlighted). Each returns the matplotlib
``Figure`` and draws into ``ax`` when one is given.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

PALETTE = ("#2E5A87", "#E07B39", "#3C9D5D", "#B8413D", "#7D5BA6", "#8C6D46", "#D4A017")
BASELINE_COLOR = "#9A9A9A"

STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 110,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.prop_cycle": plt.cycler(color=PALETTE),
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.frameon": False,
    "font.size": 10,
}


def table(frame, digits: int = 4, formats: Mapping[str, str] | None = None):
    """A DataFrame as the book shows it: floats rounded to ``digits`` (large ones with
    thousands separators and no decimals), columns that hold nothing dropped, and labels
    that can wrap (underscores become spaces), so that no table runs off the page.
    ``formats`` overrides the format of named columns. Returns a pandas ``Styler``."""
    import pandas as pd

    frame = frame.dropna(axis=1, how="all").copy()
    frame.columns = [str(c).replace("_", " ") if not isinstance(c, tuple) else
                     tuple(str(part).replace("_", " ") for part in c) for c in frame.columns]
    overrides = {str(k).replace("_", " "): v for k, v in (formats or {}).items()}

    def number(value) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            return str(value)
        if pd.isna(value):
            return "–"
        if float(value).is_integer() and abs(value) >= 1 or abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"

    styled = frame.style.format(number)
    for column, fmt in overrides.items():
        styled = styled.format(fmt, subset=[column], na_rep="–")
    return styled.set_table_styles([{"selector": "th", "props": "white-space: normal;"}])


def mean_std(summary, digits: int = 4):
    """A ``groupby(...).agg(["mean", "std"])`` table with one column per metric, each cell
    "mean ± std" (the mean alone where the std is undefined), half as wide as the input."""
    import pandas as pd

    def cell(mean: float, std: float) -> str:
        return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"

    metrics = list(dict.fromkeys(summary.columns.get_level_values(0)))
    return pd.DataFrame({m: [cell(a, b) for a, b in zip(summary[m]["mean"], summary[m]["std"],
                                                        strict=True)] for m in metrics},
                        index=summary.index)


def use_style() -> None:
    """Apply the course's matplotlib style (chapters call it once, after imports)."""
    plt.rcParams.update(STYLE)


def describe(figure: Figure) -> tuple[str, str]:
    """A figure's caption and alt text, from what it says about itself: the title (or the
    panels' titles) for the caption; the caption and each panel's axes for the alt text."""
    panels = [ax for ax in figure.axes if ax.get_visible() and (ax.get_title() or
                                                                 ax.get_xlabel())]
    titles = [ax.get_title() for ax in panels if ax.get_title()]
    caption = figure.get_suptitle() or "; ".join(titles[:3]) or "; ".join(
        f"{ax.get_ylabel() or 'value'} against {ax.get_xlabel()}" for ax in panels[:3])
    axes = [", ".join(part for part in (ax.get_title(), ax.get_xlabel() and
                                        f"x: {ax.get_xlabel()}", ax.get_ylabel() and
                                        f"y: {ax.get_ylabel()}") if part)
            for ax in panels]
    caption = (caption or "A figure")[0].upper() + (caption or "A figure")[1:]
    alt = f"{caption}. " + (f"{len(axes)} panels: " if len(axes) > 1 else "") + "; ".join(axes)
    return caption, alt.strip().rstrip(".") + "."


def describe_figures() -> None:
    """From now on, every figure the notebook shows carries its ``describe`` caption and
    alt text in the output's metadata, where the book's build reads them (it numbers and
    captions the figure and gives the image its alt text). Needs ``%matplotlib inline``;
    elsewhere it does nothing."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return
    png = shell.display_formatter.formatters["image/png"]
    try:
        show_png = png.lookup_by_type(Figure)
    except KeyError:
        return

    def with_description(figure: Figure):
        shown = show_png(figure)
        if shown is None:
            return None
        data, metadata = shown if isinstance(shown, tuple) else (shown, {})
        caption, alt = describe(figure)
        return data, {**metadata, "caption": caption, "alt": alt}

    png.for_type(Figure, with_description)


def log_axis(ax, axis: str = "x", ticks: Sequence[float] | None = None) -> None:
    """A log scale whose tick labels cannot collide: plain numbers at the major ticks (at
    ``ticks`` when given), no labels at the minor ones."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    scale = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    if ticks is not None:
        scale.set_ticks(list(ticks))
    scale.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    scale.set_minor_formatter(NullFormatter())


SLIDE_SIZE = (10.0, 5.6)  # inches, about 16:9: every exported figure has this size
SLIDE_DPI = 150


def export_figures(directory: str | Path) -> Path:
    """From now on, save every figure the notebook shows into ``directory`` as
    ``fig-NN.png`` and ``fig-NN.svg`` at the slides' fixed size (``make book`` does this
    for every chapter, into ``_build/figures/NN_name/``). The page keeps its own size.

    It wraps the kernel's PNG formatter for figures, which both ``plt.show()`` and the
    end of a cell go through, so it needs ``%matplotlib inline`` to have run."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("export_figures runs inside a notebook kernel")
    png = shell.display_formatter.formatters["image/png"]
    try:
        show_png = png.lookup_by_type(Figure)
    except KeyError:
        raise RuntimeError("export_figures needs the inline backend: run %matplotlib "
                           "inline first") from None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("fig-*"):
        old.unlink()
    count = 0

    def save_then_show(figure: Figure):
        nonlocal count
        count += 1
        shown_size = figure.get_size_inches().copy()
        figure.set_size_inches(*SLIDE_SIZE)
        for suffix in ("png", "svg"):
            figure.savefig(directory / f"fig-{count:02d}.{suffix}", dpi=SLIDE_DPI)
        figure.set_size_inches(*shown_size)
        return show_png(figure)

    png.for_type(Figure, save_then_show)
    return directory


def _subplots(*args, **kwargs):
    """``plt.subplots`` in the course style. The backend is resolved first: entering
    ``rc_context`` before Jupyter's inline backend is set up would restore a stale
    ``interactive`` flag on exit and stop later figures from being shown."""
    plt.get_backend()
    with plt.rc_context(STYLE):
        return plt.subplots(*args, **kwargs)


def _axes(ax, figsize=None):
    if ax is not None:
        return ax.figure, ax
    return _subplots(figsize=figsize)


def training_curves(history, metrics: Iterable[str] | None = None, title: str = "") -> Figure:
    """Left: training loss per step (faint) and per epoch. Right: validation metrics per
    epoch, the best epoch marked. ``history`` is a ``train.History``."""
    epochs = history.column("epoch")
    metrics = list(metrics) if metrics is not None else [
        key for key in history.epochs[0] if key not in ("epoch", "train_loss", "seconds")
    ] if history.epochs else []
    n_panels = 2 if metrics else 1
    fig, axes = _subplots(1, n_panels, figsize=(4.2 * n_panels, 3.4), squeeze=False)
    loss_ax = axes[0, 0]
    steps = history.steps
    if steps:
        per_epoch = len(steps) / max(len(epochs), 1)
        x = [row["step"] / per_epoch for row in steps]
        loss_ax.plot(x, [row["loss"] for row in steps], color=PALETTE[0], alpha=0.25, lw=0.8,
                     label="per step")
    loss_ax.plot(epochs, history.column("train_loss"), color=PALETTE[0], marker="o", ms=3,
                 label="epoch mean")
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
    loss_ax.legend()
    if metrics:
        metric_ax = axes[0, 1]
        for color, name in zip(PALETTE[1:], metrics, strict=False):
            metric_ax.plot(epochs, history.column(name), marker="o", ms=3, color=color,
                           label=name)
        if history.best_epoch is not None:
            metric_ax.axvline(history.best_epoch, color=BASELINE_COLOR, ls="--", lw=1,
                              label=f"best epoch ({history.best_epoch})")
        metric_ax.set(xlabel="epoch", title="validation")
        metric_ax.legend()
    if title and n_panels == 1:  # one panel: its own title says it, without a second one
        loss_ax.set_title(title)
    elif title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def validation_curves(histories: Mapping[str, object], metric: str = "ndcg@10",
                      baseline: float | None = None, baseline_label: str = "popularity",
                      title: str = "Learning curves", ax=None) -> Figure:
    """One validation curve per model (``histories[model]``: a ``train.History``), and a
    baseline's value as a dashed line."""
    fig, ax = _axes(ax, figsize=(6.5, 3.4))
    for color, (name, history) in zip(PALETTE, histories.items(), strict=False):
        ax.plot(history.column("epoch"), history.column(metric), marker="o", ms=3,
                color=color, label=name)
    if baseline is not None:
        ax.axhline(baseline, color=BASELINE_COLOR, ls="--", label=baseline_label)
    ax.set(xlabel="epoch", ylabel=f"validation {metric.upper()}",
           title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def metric_bars(
    results: Mapping[str, Mapping[str, float]],
    errors: Mapping[str, Mapping[str, float]] | None = None,
    metrics: Sequence[str] | None = None,
    baseline: str | None = None,
    title: str = "",
    ax=None,
) -> Figure:
    """Grouped bars: one group per metric, one bar per model (``results[model][metric]``),
    optional error bars (``errors[model][metric]``, e.g. the std over seeds). The
    ``baseline`` model is drawn in grey so the eye finds the comparison."""
    models = list(results)
    metrics = list(metrics) if metrics is not None else list(results[models[0]])
    # up to eight groups stand side by side, about 1.9 inches each (a name wrapped at 11
    # characters under each) up to the 10 inches that the page shows at a readable size;
    # more groups lie on their side, one row each, so their names never collide
    horizontal = len(metrics) > 8
    size = ((8.0, 1.0 + 0.28 * len(metrics) * len(models)) if horizontal
            else (min(10.0, max(6.4, 1.9 * len(metrics))), 3.4))
    fig, ax = _axes(ax, figsize=size)
    width = 0.8 / len(models)
    x = np.arange(len(metrics))
    colors = iter(PALETTE)
    for i, model in enumerate(models):
        values = [results[model][m] for m in metrics]
        spread = [errors[model][m] for m in metrics] if errors and model in errors else None
        color = BASELINE_COLOR if model == baseline else next(colors)
        offset = x + (i - (len(models) - 1) / 2) * width
        if horizontal:
            ax.barh(offset, values, width, xerr=spread, capsize=3, label=model, color=color)
            continue
        bars = ax.bar(offset, values, width, yerr=spread, capsize=3, label=model, color=color)
        if len(models) <= 2 and len(metrics) <= 6:  # narrower bars: labels would collide
            ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    names = [textwrap.fill(str(m), 11 if not horizontal else 30) for m in metrics]
    if horizontal:
        ax.set_yticks(x, names)
        ax.invert_yaxis()  # the first group on top
        ax.set_xlabel("value")
        ax.margins(x=0.1)
    else:  # more than four groups slant
        ax.set_xticks(x, names, rotation=30 if len(metrics) > 4 else 0,
                      ha="right" if len(metrics) > 4 else "center")
        ax.set_ylabel("value")
        ax.margins(y=0.15)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never on them
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def heatmap(
    matrix,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str = "",
    fmt: str = ".2f",
    cmap: str = "Blues",
    ax=None,
) -> Figure:
    """A labelled heatmap with each cell's value written in it (gates by task, say)."""
    values = np.asarray(matrix, dtype=float)
    if values.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"matrix is {values.shape}, labels give "
                         f"{(len(row_labels), len(col_labels))}")
    fig, ax = _axes(ax, figsize=(0.6 * len(col_labels) + 2.5, 0.45 * len(row_labels) + 1.5))
    image = ax.imshow(values, cmap=cmap, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    threshold = (np.nanmax(values) + np.nanmin(values)) / 2
    for (r, c), value in np.ndenumerate(values):
        ax.text(c, r, format(value, fmt), ha="center", va="center", fontsize=8,
                color="white" if value > threshold else "black")
    fig.colorbar(image, ax=ax, shrink=0.8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


FUNNEL_STAGES = ("retrieval", "pre-ranking", "coarse ranking", "ranking", "re-ranking",
                 "exposure")


def funnel_chart(
    sizes: Sequence[float],
    stages: Sequence[str] = FUNNEL_STAGES,
    highlight: str | None = None,
    title: str = "",
    ax=None,
) -> Figure:
    """The funnel drawn as centred bars whose widths are log-scaled candidate counts;
    the ``highlight`` stage is coloured, the others grey."""
    if len(sizes) != len(stages):
        raise ValueError(f"{len(sizes)} sizes for {len(stages)} stages")
    if highlight is not None and highlight not in stages:
        raise ValueError(f"highlight {highlight!r} is not one of the stages {list(stages)}")
    sizes = np.asarray(sizes, dtype=float)
    fig, ax = _axes(ax, figsize=(6.0, 0.5 * len(stages) + 1.0))
    widths = np.log10(np.maximum(sizes, 1.0)) + 1.0  # log scale: 10 -> 2, 10^4 -> 5
    y = np.arange(len(stages))[::-1]
    colors = [PALETTE[0] if stage == highlight else BASELINE_COLOR for stage in stages]
    if highlight is None:
        colors = [PALETTE[0]] * len(stages)
    ax.barh(y, widths, left=-widths / 2, color=colors, height=0.75)
    for yi, stage, size in zip(y, stages, sizes, strict=True):
        ax.text(0, yi, f"{stage}: {size:,.0f}", ha="center", va="center", color="white",
                fontsize=9, fontweight="bold")
    ax.set_yticks([])
    ax.set_xticks([])
    ax.grid(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
