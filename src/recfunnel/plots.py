"""The figures every chapter reuses, in one consistent style.

``training_curves`` (a ``train.History``), ``validation_curves`` (several models'
validation metric per epoch), ``metric_bars`` (models side by side, with
error bars over seeds), ``heatmap`` (gates, attention, similarity) and ``funnel_chart``
(the six stages of the funnel, one stage highlighted). Each returns the matplotlib
``Figure`` and draws into ``ax`` when one is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

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


def use_style() -> None:
    """Apply the course's matplotlib style (chapters call it once, after imports)."""
    plt.rcParams.update(STYLE)


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
    if title:
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
    ax.legend(fontsize=8)
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
    fig, ax = _axes(ax, figsize=(max(4.0, 1.2 * len(metrics) * max(len(models), 2) / 2), 3.4))
    width = 0.8 / len(models)
    x = np.arange(len(metrics))
    colors = iter(PALETTE)
    for i, model in enumerate(models):
        values = [results[model][m] for m in metrics]
        yerr = [errors[model][m] for m in metrics] if errors and model in errors else None
        color = BASELINE_COLOR if model == baseline else next(colors)
        bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, values, width, yerr=yerr,
                      capsize=3, label=model, color=color)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(x, metrics)
    ax.set_ylabel("value")
    ax.margins(y=0.15)
    ax.legend()
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
