"""Patient-level data splits: hold-out train/val/test and the first-n training subset.

Splits are over patient ids, never slices, so no patient appears in two of train/val/test. Every ordering
comes from ``numpy.random.default_rng(seed)`` so a split is a pure function of (ids, fractions, seed).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def holdout_split(
    patient_ids: Sequence[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Split unique patient ids into ``train``/``val``/``test`` by fractions of patients (seeded shuffle).

    ``test_fraction=0`` gives an empty test split (for sets whose test cases come from elsewhere).
    """
    for field, frac in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{field} must be in [0, 1), got {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:.2f} leaves no training "
            "patients; lower one of them"
        )
    unique = sorted(set(patient_ids))
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = [unique[i] for i in order]
    n_test = int(round(test_fraction * len(unique)))
    n_val = max(1, int(round(val_fraction * len(unique)))) if val_fraction > 0 else 0
    if len(unique) - n_test - n_val < 1:
        raise ValueError(
            f"only {len(unique)} patients: too few for val_fraction={val_fraction} and "
            f"test_fraction={test_fraction}; add cases (data.n_cases) or lower the fractions"
        )
    return {
        "test": shuffled[:n_test],
        "val": shuffled[n_test:n_test + n_val],
        "train": shuffled[n_test + n_val:],
    }


def first_n(pool: Sequence[str], n: int | None, seed: int, field: str = "data.n_train") -> list[str]:
    """The first ``n`` ids of a seeded ordering of ``pool`` (all of them, ordered, when ``n`` is None).

    Because the ordering does not depend on ``n``, a larger subset always contains a smaller one.
    """
    ordered = [sorted(pool)[i] for i in np.random.default_rng(seed).permutation(len(pool))]
    if n is None:
        return ordered
    if n < 1:
        raise ValueError(f"{field} must be >= 1, got {n}")
    if n > len(ordered):
        raise ValueError(
            f"{field}={n} is larger than the training pool of {len(ordered)} patients; "
            f"use {field}<={len(ordered)} or enlarge the data set"
        )
    return ordered[:n]


def split_manifest(splits: dict[str, Sequence[str]], meta: pd.DataFrame) -> pd.DataFrame:
    """One row per case: ``case_id``, ``patient_id``, ``split`` — saved with every run."""
    rows = []
    for split, patients in splits.items():
        sel = meta[meta["patient_id"].isin(set(patients))]
        rows.append(pd.DataFrame({"case_id": sel["case_id"], "patient_id": sel["patient_id"], "split": split}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["case_id", "patient_id", "split"])
