"""Figures of a run: the learning curve and test-prediction overlays (matplotlib, headless Agg backend)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from musclelab.data.windowing import display_image  # noqa: E402
from musclelab.outputs.figures import save_figure  # noqa: E402


def plot_learning_curve(metrics: pd.DataFrame, path: str | Path) -> Path:
    """Loss (left) and Dice (right) per epoch for train and validation, from ``metrics.csv``."""
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.8))
    for col, style in (("train_loss", "-"), ("val_loss", "--")):
        if col in metrics:
            ax_loss.plot(metrics["epoch"], metrics[col], style, marker="o", ms=3, label=col)
    dice_cols = [c for c in metrics.columns if c.startswith(("train_dice", "val_dice"))]
    for col in sorted(dice_cols, key=lambda c: (not c.startswith("train"), c)):
        ax_dice.plot(metrics["epoch"], metrics[col], "-" if col.startswith("train") else "--",
                     marker="o", ms=3, label=col)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_dice.set(xlabel="epoch", ylabel="Dice", title="Dice", ylim=(0, 1))
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_overlays(examples: Sequence[dict], class_names: Sequence[str], path: str | Path,
                  scores: dict[str, float] | None = None, heading: str = "test cases") -> Path:
    """One column per test case: image, ground truth (filled) and prediction (contour) overlaid.

    ``examples`` hold ``case_id``, ``image`` (C,H,W network input), ``label`` and ``pred`` (H,W);
    ``scores`` maps case id to the Dice shown in the title.
    """
    n = max(1, len(examples))
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.9), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, ex in zip(axes[0], examples):
        ax.imshow(display_image(ex["image"]), cmap="gray", vmin=0, vmax=1)
        for k in range(1, len(class_names)):
            colour = cmap((k - 1) % 10)
            gt = ex["label"] == k
            if gt.any():
                ax.imshow(np.ma.masked_where(~gt, gt), cmap=matplotlib.colors.ListedColormap([colour]),
                          alpha=0.35, interpolation="nearest")
            pr = (ex["pred"] == k).astype(float)
            if pr.any():  # binary: a contrasting outline; multi-class: the class colour
                ax.contour(pr, levels=[0.5], colors=["yellow" if len(class_names) == 2 else colour], linewidths=0.8)
        title = str(ex["case_id"])
        if scores and ex["case_id"] in scores:
            title += f"\nDice {scores[ex['case_id']]:.3f}"
        ax.set_title(title, fontsize=7)
    for ax in axes[0]:
        ax.axis("off")
    fig.suptitle(f"{heading}: ground truth filled, prediction outlined", fontsize=8)
    return save_figure(fig, path)
