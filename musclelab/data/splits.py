"""Patient-level data splits: hold-out or k-fold train/val/test, and nested training subsets.

Splits are over patient ids, never slices, so no patient appears in two of train/val/test. Every ordering
comes from ``numpy.random.default_rng`` seeded by the config, so a split is a pure function of
(ids, fractions or fold, seed). Training subsets of size n are the first n of a seeded ordering of the
training pool; the ordering does not depend on n, so for sizes 5 < 10 < 25 ... each subset contains the
smaller ones, and ``draw`` selects one of r independent orderings (McSweeney 2022 used r = 2).
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


def _carve_val(rest: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Split already-shuffled ``rest`` into (val, train) with ``val_fraction`` of patients in val."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    n_val = max(1, int(round(val_fraction * len(rest)))) if val_fraction > 0 else 0
    if len(rest) - n_val < 1:
        raise ValueError(f"only {len(rest)} patients outside the test fold: too few for data.val_fraction={val_fraction}")
    return rest[:n_val], rest[n_val:]


def kfold_split(
    patient_ids: Sequence[str], n_folds: int, fold: int, val_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Fold ``fold`` of a seeded k-fold partition of patients as the test set; validation patients are
    ``val_fraction`` of the remaining ones, the rest is the training pool.

    Over ``fold = 0 .. n_folds-1`` every patient is tested exactly once.
    """
    if n_folds < 2:
        raise ValueError(f"data.n_folds must be >= 2 for k-fold cross-validation, got {n_folds}")
    if not 0 <= fold < n_folds:
        raise ValueError(f"data.fold={fold} is out of range for data.n_folds={n_folds}; use 0..{n_folds - 1}")
    unique = sorted(set(patient_ids))
    if len(unique) < n_folds:
        raise ValueError(f"{len(unique)} patients cannot make data.n_folds={n_folds} folds; lower n_folds")
    order = np.random.default_rng(seed).permutation(len(unique))
    folds = np.array_split(order, n_folds)
    test = [unique[i] for i in folds[fold]]
    rest_idx = np.concatenate([f for k, f in enumerate(folds) if k != fold])
    # shuffle the remaining patients again (fold-specific) before carving validation off
    rest = [unique[i] for i in np.random.default_rng([seed, fold]).permutation(rest_idx)]
    val, train = _carve_val(rest, val_fraction)
    return {"test": test, "val": val, "train": train}


def first_n(pool: Sequence[str], n: int | None, seed: int, draw: int = 0, field: str = "data.n_train") -> list[str]:
    """The first ``n`` ids of the ``draw``-th seeded ordering of ``pool`` (all of them when ``n`` is None).

    Because the ordering does not depend on ``n``, a larger subset always contains a smaller one; different
    ``draw`` values give independent orderings.
    """
    if draw < 0:
        raise ValueError(f"data.subset_draw must be >= 0, got {draw}")
    ordered = [sorted(pool)[i] for i in np.random.default_rng([seed, draw]).permutation(len(pool))]
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


def nested_subsets(
    pool: Sequence[str], sizes: Sequence[int], n_draws: int, seed: int
) -> dict[int, dict[int, list[str]]]:
    """``{draw: {n: ids}}`` for every size and draw: nested within a draw, independent across draws."""
    return {d: {n: first_n(pool, n, seed, d) for n in sorted(sizes)} for d in range(n_draws)}


def split_manifest(splits: dict[str, Sequence[str]], meta: pd.DataFrame) -> pd.DataFrame:
    """One row per case: ``case_id``, ``patient_id``, ``split`` — saved with every run."""
    rows = []
    for split, patients in splits.items():
        sel = meta[meta["patient_id"].isin(set(patients))]
        rows.append(pd.DataFrame({"case_id": sel["case_id"], "patient_id": sel["patient_id"], "split": split}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["case_id", "patient_id", "split"])
