"""``predicted_volumes.csv``: every scored participant's predicted muscle volumes, raw and per height², per muscle
and per muscle group (Kim et al. 2024, Figs. 7-8: "we calculated the volume of each individual muscle for all
participants and adjusted the volume using the SMI calculation formula (mm³/height²) from our automatic
segmentation model").

One file per 3D run, one row per (test case, structure); the run's model, seed and fold are columns, so the files of
a cross-validated sweep (each participant a test case of exactly one fold) concatenate into the whole cohort, once
per model and seed. Columns: ``case_id, model, seed, fold, sex, height_m, sarcopenic, smi_kg_m2, structure,
level`` (``muscle`` | ``group`` | ``structure``: a class in no group, e.g. the femur), ``volume_ml``
(predicted), ``volume_per_height2`` (mL / m²), ``reference_ml`` (the reference volume; NaN where the case has
none). Groups are the thigh phantom's five (anterior, medial, posterior, gluteal, other:
:data:`musclelab.phantoms.thigh.GROUPS`), each the sum of its muscles that the run's classes include. No statistics here: the report correlates them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from musclelab.io import atomic_write_text

FILE = "predicted_volumes.csv"
META = ("sex", "height_m", "sarcopenic", "smi_kg_m2")
COLUMNS = ("case_id", "model", "seed", "fold", *META, "structure", "level", "volume_ml", "volume_per_height2",
           "reference_ml")


def _groups() -> dict[str, tuple[str, ...]]:
    from musclelab.phantoms.thigh import GROUPS

    return dict(GROUPS)


def predicted_volumes(rows: pd.DataFrame, class_names: Sequence[str], identity: Mapping[str, Any],
                      groups: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Long table of predicted volumes (mL) and volume / height² (mL / m²) per test case, for every foreground
    class with a ``vol_pred_<class>_ml`` column and every group of ``groups`` (default: the thigh's five muscle
    groups) with at least one of its muscles present."""
    groups = _groups() if groups is None else groups
    present = [c for c in class_names[1:] if f"vol_pred_{c}_ml" in rows]
    grouped = {m for muscles in groups.values() for m in muscles}
    out: list[dict[str, Any]] = []
    for _, r in rows.iterrows():
        height = float(r["height_m"]) if "height_m" in r and pd.notna(r["height_m"]) else np.nan
        base = {"case_id": r["case_id"], **{k: identity.get(k) for k in ("model", "seed", "fold")},
                **{k: r[k] if k in r else np.nan for k in META}}

        def add(structure: str, level: str, pred: float, ref: float) -> None:
            out.append({**base, "structure": structure, "level": level, "volume_ml": pred,
                        "volume_per_height2": pred / height ** 2 if height > 0 else np.nan, "reference_ml": ref})

        def ref_of(c: str) -> float:
            return float(r[f"vol_ref_{c}_ml"]) if f"vol_ref_{c}_ml" in r else np.nan

        for c in present:
            add(c, "muscle" if c in grouped else "structure", float(r[f"vol_pred_{c}_ml"]), ref_of(c))
        for g, muscles in groups.items():
            mine = [m for m in muscles if m in present]
            if mine:
                add(g, "group", float(sum(r[f"vol_pred_{m}_ml"] for m in mine)), float(sum(ref_of(m) for m in mine)))
    return pd.DataFrame(out, columns=list(COLUMNS))


def write_predicted_volumes(run_dir: str | Path, rows: pd.DataFrame, class_names: Sequence[str],
                            identity: Mapping[str, Any]) -> Path:
    """Write :data:`FILE` into ``run_dir`` (atomically)."""
    table = predicted_volumes(rows, class_names, identity)
    return atomic_write_text(Path(run_dir) / FILE, table.to_csv(index=False))
