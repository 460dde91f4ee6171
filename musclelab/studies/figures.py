"""Figures of a sequential-transfer chain: the forgetting heatmap (Yoon 2024, Tables 4-9 as a picture)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from musclelab.outputs.figures import plt, save_figure


def plot_forgetting_heatmap(matrix: pd.DataFrame, datasets: list[str], path: str | Path) -> Path:
    """Mean test Dice after each stage (rows: stage and the data set it trained on) on every data set
    (columns), annotated; the last-trained row is marked with an asterisk."""
    values = matrix[datasets].to_numpy(dtype=float)
    labels = [f"{int(r.stage)}: {r.trained}{' *' if r.final else ''}" for r in matrix.itertuples()]
    fig, ax = plt.subplots(figsize=(1.4 * len(datasets) + 2.5, 0.6 * len(labels) + 1.6))
    im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] < 0.6 else "black")
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="evaluated on (test split)", ylabel="after stage (trained on)", title="mean test Dice")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)
