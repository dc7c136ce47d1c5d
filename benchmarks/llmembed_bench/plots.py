"""Plots of the report (matplotlib, written next to results.md)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from llmembed.files import atomic_path

from .methods import PUBLISHED_LADDER
from .settings import ANCHORS, DATASET_TITLES, DEFAULT_DATASETS, GROUP_ORDER

_GROUP_COLORS = {
    "ours": "tab:red",
    "published": "tab:orange",
    "peer": "tab:blue",
    "ablation": "tab:gray",
}


def _main_methods(m: str, group: str) -> bool:
    return group in ("ours", "peer") or m == "llmembed-published"


def ablation_methods(m: str, group: str) -> bool:
    return group in ("ours", "ablation", "published")


def plot_accuracy(
    agg: dict[tuple[str, str], dict[str, Any]],
    path: str | os.PathLike,
    include: Callable[[str, str], bool] = _main_methods,
    title: str = "Test accuracy by method (mean ± std over seeds)",
) -> Path:
    """One horizontal bar panel per dataset: accuracy by method, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    datasets = [d for d in DEFAULT_DATASETS if any(k[0] == d for k in agg)]
    datasets += sorted({k[0] for k in agg} - set(datasets))
    groups = {m: a["group"] for (_, m), a in agg.items()}
    methods = [m for m in order(groups, groups) if include(m, groups[m])]
    n = len(datasets)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    height = max(2.6, 0.3 * len(methods) + 1.0)
    fig, axes = plt.subplots(
        rows, cols, figsize=(5.6 * cols, height * rows + 0.8), squeeze=False, layout="constrained"
    )
    for ax, d in zip(axes.flat, datasets):
        ms = [m for m in methods if (d, m) in agg][::-1]
        if not ms:
            ax.axis("off")
            continue
        means = [100 * agg[(d, m)]["accuracy"][0] for m in ms]
        stds = [100 * (agg[(d, m)]["accuracy"][1] or 0) for m in ms]
        colors = [_GROUP_COLORS.get(groups[m], "tab:gray") for m in ms]
        ax.barh(range(len(ms)), means, xerr=stds, color=colors, capsize=2, height=0.7)
        ax.set_yticks(range(len(ms)))
        ax.set_yticklabels(ms, fontsize=7)
        lo = min(m - s for m, s in zip(means, stds))
        hi = max(m + s for m, s in zip(means, stds))
        for values in ANCHORS.values():
            if d in values:
                ax.axvline(values[d], color="black", linestyle=":", linewidth=0.8)
                hi = max(hi, values[d])
        left = max(0.0, lo - 4)
        ax.set_xlim(left, min(100.0, hi + 1.5))
        for y, mean in enumerate(means):
            ax.text(
                left + 0.15,
                y,
                f"{mean:.2f}",
                va="center",
                ha="left",
                fontsize=6.5,
                color="white",
                fontweight="bold",
            )
        ax.set_title(DATASET_TITLES.get(d, d), fontsize=10)
        ax.set_xlabel("test accuracy (%)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    present = {groups[m] for m in methods}
    handles = [Patch(color=c, label=g) for g, c in _GROUP_COLORS.items() if g in present]
    handles.append(Line2D([], [], color="black", linestyle=":", label="published anchors"))
    legend = fig.legend(
        handles=handles,
        loc="outside upper center",
        ncol=len(handles),
        fontsize=8,
        frameon=False,
        title=title,
    )
    legend.get_title().set_fontsize(11)
    return save_png(fig, path)


def plot_cost(agg: dict[tuple[str, str], dict[str, Any]], path: str | os.PathLike) -> Path:
    """Accuracy against total cost (extract + select + train + test inference), log x.
    Ours, the published configuration and the peers are labelled; the published ladder and the
    ablations are the small unlabelled dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DEFAULT_DATASETS if any(k[0] == d for k in agg)]
    datasets += sorted({k[0] for k in agg} - set(datasets))
    n = len(datasets)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    for ax, d in zip(axes.flat, datasets):
        for (dd, m), a in agg.items():
            if dd != d or a["total_seconds"][0] is None:
                continue
            x = max(a["total_seconds"][0], 0.1)
            y = 100 * a["accuracy"][0]
            g = a["group"]
            main = _main_methods(m, g)
            ax.errorbar(
                x,
                y,
                yerr=100 * (a["accuracy"][1] or 0),
                fmt="o" if main else ".",
                color=_GROUP_COLORS.get(g, "tab:gray"),
                markersize=6 if main else 4,
                capsize=2,
                alpha=1.0 if main else 0.45,
            )
            if main:
                ax.annotate(m, (x, y), fontsize=6.5, xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_title(DATASET_TITLES.get(d, d), fontsize=10)
        ax.set_xlabel("total cost on this CPU (s, log scale)", fontsize=8)
        ax.set_ylabel("test accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", color=c, label=g) for g, c in _GROUP_COLORS.items()
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save_png(fig, path)


def order(agg_keys: Iterable[str], groups: dict[str, str]) -> list[str]:
    """Methods in report order: ours, the published ladder, peers, ablations."""
    ladder = [name for name, _ in PUBLISHED_LADDER]
    names = list(dict.fromkeys(agg_keys))

    def key(n: str):
        group = GROUP_ORDER.index(groups.get(n, "ablation"))
        return (group, ladder.index(n) if n in ladder else len(ladder), n)

    return sorted(names, key=key)


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write a matplotlib figure to `path` as PNG atomically (creating its folder), close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path
