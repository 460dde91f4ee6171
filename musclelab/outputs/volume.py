"""What a 3D run leaves on disk after testing: per-case rows, the summary with inference seconds per scan, the
volume agreement table (VC and ICC per class) and three orthogonal overlay views of a test case."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from musclelab.io import atomic_write_json, atomic_write_text  # noqa: E402
from musclelab.metrics import summarize  # noqa: E402
from musclelab.metrics.agreement import icc, volume_correlation  # noqa: E402
from musclelab.outputs.figures import save_figure  # noqa: E402

ICC_FORM = "ICC(2,1)"


def agreement_table(rows: pd.DataFrame, class_names: Sequence[str], form: str = ICC_FORM) -> pd.DataFrame:
    """Per foreground class over the test cases: VC (Pearson r of predicted vs reference volumes) and the ICC of
    the volumes between model and reference, model and each rater, and between the raters (``form``)."""
    raters = sorted({c.split("_", 2)[1] + "_" + c.split("_", 3)[2] for c in rows.columns
                     if c.startswith("vol_rater_")}) if len(rows) else []
    out = []
    for name in class_names[1:]:
        pred, ref = rows.get(f"vol_pred_{name}_ml"), rows.get(f"vol_ref_{name}_ml")
        if pred is None or ref is None:
            continue
        rec: dict[str, Any] = {"class": name, "n_cases": int(len(rows)), "vc": volume_correlation(pred, ref),
                               "icc_form": form, "icc_model_reference": icc(np.c_[pred, ref], form)["icc"]}
        rater_cols = [rows[f"vol_{r}_{name}_ml"] for r in raters if f"vol_{r}_{name}_ml" in rows]
        for r, col in zip(raters, rater_cols):
            rec[f"icc_model_{r}"] = icc(np.c_[pred, col], form)["icc"]
        if len(rater_cols) >= 2:
            rec["icc_raters"] = icc(np.column_stack(rater_cols), form)["icc"]
        out.append(rec)
    return pd.DataFrame(out)


def plot_orthogonal(example: dict[str, Any], class_names: Sequence[str], path: str | Path,
                    title: str = "") -> Path:
    """Axial, coronal and sagittal views through the most labelled plane of each axis of a test volume: image with the reference (filled)
    and the prediction (outlined); aspect ratios from the voxel spacing."""
    img, lab, pred = example["image"], example["label"], example["pred"]
    sz, sr, sc = example.get("spacing", (1.0, 1.0, 1.0))
    fg = lab > 0   # each view through its most labelled plane (the sagittal one through a thigh, not between)
    cz, cy, cx = ([int(np.argmax(fg.sum(axis=tuple(a for a in range(3) if a != ax)))) for ax in range(3)]
                  if fg.any() else list(np.array(img.shape) // 2))
    views = [("axial", img[cz], lab[cz], pred[cz], sr / sc),
             ("coronal", img[::-1, cy, :], lab[::-1, cy, :], pred[::-1, cy, :], sz / sc),
             ("sagittal", img[::-1, :, cx], lab[::-1, :, cx], pred[::-1, :, cx], sz / sr)]
    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    cmap = plt.get_cmap("tab20", max(len(class_names), 2))
    for ax, (name, im, gt, pr, aspect) in zip(axes, views):
        ax.imshow(im, cmap="gray", vmin=0, vmax=1, aspect=aspect)
        ax.imshow(np.ma.masked_where(gt == 0, gt), cmap=cmap, vmin=0, vmax=len(class_names) - 1, alpha=0.35,
                  aspect=aspect, interpolation="nearest")
        for k in np.unique(pr[pr > 0]):
            ax.contour(pr == k, levels=[0.5], colors=[cmap(int(k))], linewidths=0.6)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title or f"{example['case_id']}: reference filled, prediction outlined", fontsize=9)
    return save_figure(fig, path)


def write_volume_test_outputs(run_dir: Path, case_rows: list[dict], examples: list[dict],
                              class_names: Sequence[str], forward_s: float, checkpoint: str | None
                              ) -> dict[str, float]:
    """``test_cases.csv`` (one row per volume), ``volume_agreement.csv``, ``test_summary.json`` (with
    ``inference_s_per_scan``) and ``test_overlay.png`` (three orthogonal views of the first test case)."""
    rows = pd.DataFrame(case_rows)
    atomic_write_text(run_dir / "test_cases.csv", rows.to_csv(index=False))
    agreement = agreement_table(rows, class_names)
    atomic_write_text(run_dir / "volume_agreement.csv", agreement.to_csv(index=False))
    numeric = rows.drop(columns=[c for c in ("case_id", "sex", "sarcopenic") if c in rows])
    summary = summarize(numeric)
    s_per_scan = float(forward_s) / max(1, len(rows))
    atomic_write_json(run_dir / "test_summary.json", {
        "checkpoint": checkpoint, "n_cases": len(rows), "inference_s_per_scan": s_per_scan,
        "icc_form": ICC_FORM, "metrics": summary,
        "volume_agreement_mean": {c: float(agreement[c].mean()) for c in agreement.columns
                                  if c.startswith(("vc", "icc_")) and c != "icc_form"}})
    if examples:
        plot_orthogonal(examples[0], class_names, run_dir / "test_overlay.png")
    out = {f"test/{k}": summary[k]["mean"] for k in ("dice", "assd", "hd", "hd95", "ravd") if k in summary}
    if len(agreement):
        out["test/vc"] = float(agreement["vc"].mean())
    return {**out, "inference_s_per_scan": s_per_scan}
