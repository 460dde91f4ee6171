"""Patient-level data splits: hold-out, k-fold with a fixed test set, k-fold cross-validation, nested subsets.

Splits are over patient ids, never slices, so no patient appears in two of train/val/test. Every ordering
comes from ``numpy.random.default_rng`` seeded by the config, so a split is a pure function of
(ids, fractions or fold, seed). ``data.split`` (:data:`SPLITS`) chooses the design:

* ``holdout`` — test and validation are fractions of the patients;
* ``kfold_val`` — McSweeney 2022's design: one fixed hold-out test set (``data.test_set``: a fraction of the
  patients, a list of patient ids, or the patients with observer annotations; or the source's external test
  set), identical for every fold, draw and seed; the other patients form ``data.n_folds`` folds, fold
  ``data.fold`` validates and the others are the parent training pool;
* ``kfold_test`` — k-fold cross-validation: fold ``data.fold`` is the test set (every patient is tested once
  over the folds), ``val_fraction`` of the rest validates. (``kfold`` before; the old name fails naming both.)

Training subsets of size n are the first n of a seeded ordering of the training pool; the ordering does not
depend on n, so for sizes 5 < 10 < 25 ... each subset contains the smaller ones, and ``draw`` selects one of r
independent orderings (McSweeney 2022 used r = 2). :func:`split_manifest` writes the ordering (``order``) and the
pool patients left out (split ``unused``) so every run's manifest shows the nesting;
:func:`check_study_splits` checks a whole study's manifests (same test cases everywhere, nested subsets).
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
    """``data.split=kfold_test``: fold ``fold`` of a seeded k-fold partition of patients as the test set; validation patients are
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


SPLITS: tuple[str, ...] = ("holdout", "kfold_val", "kfold_test")
"""``data.split`` values: see the module docstring."""
RENAMED_SPLITS: dict[str, str] = {
    "kfold": "data.split=kfold was renamed: use data.split=kfold_test for k-fold cross-validation with the fold as "
             "the test set (what kfold did), or data.split=kfold_val for a fixed test set with the fold as the "
             "validation set (McSweeney 2022)",
}
TEST_SETS: tuple[str, ...] = ("fraction", "patients", "observers")
"""``data.test_set`` values for ``kfold_val``: ``data.test_fraction`` of the patients (seeded), the ids in
``data.test_patients``, or the patients whose cases have observer annotations."""
_FOLD_STREAM = (0, 1)  # extra seed words: fold assignment of kfold_val, independent of the test draw and subsets


def check_split_name(split: str) -> str:
    """``split`` if it is one of :data:`SPLITS`; a renamed or unknown name raises ``ValueError`` naming the fix."""
    if split in RENAMED_SPLITS:
        raise ValueError(RENAMED_SPLITS[split])
    if split not in SPLITS:
        raise ValueError(f"data.split must be one of {', '.join(SPLITS)}, got '{split}'")
    return split


def fixed_test_set(
    patient_ids: Sequence[str], how: str, seed: int, test_fraction: float = 0.2,
    test_patients: Sequence[str] | None = None, observer_patients: Sequence[str] | None = None,
) -> list[str]:
    """The fixed hold-out test patients of a ``kfold_val`` study, sorted; independent of fold, draw and run seed.

    Args:
        patient_ids: every patient of the pool.
        how: one of :data:`TEST_SETS`.
        seed: ``data.split_seed`` (``fraction`` only).
        test_fraction: share of patients for ``fraction``.
        test_patients: the ids for ``patients``; each must be in the pool.
        observer_patients: patients with observer annotations, for ``observers``.
    """
    unique = sorted(set(patient_ids))
    if how == "fraction":
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"data.test_fraction must be in (0, 1) for data.test_set=fraction, got {test_fraction}")
        order = np.random.default_rng(seed).permutation(len(unique))
        test = [unique[i] for i in order[: int(round(test_fraction * len(unique)))]]
    elif how == "patients":
        test = [str(p) for p in (test_patients or [])]
        unknown = sorted(set(test) - set(unique))
        if not test or unknown:
            raise ValueError(
                "data.test_set=patients needs data.test_patients, a list of patient ids of the data set"
                + (f"; not in the data: {', '.join(unknown[:5])}" if unknown else "")
            )
    elif how == "observers":
        test = [p for p in (observer_patients or []) if p in set(unique)]
        if not test:
            raise ValueError("data.test_set=observers: no case of the data set has observer annotations; use "
                             "data.test_set=fraction or data.test_set=patients")
    else:
        raise ValueError(f"data.test_set must be one of {', '.join(TEST_SETS)}, got '{how}'")
    if len(set(test)) >= len(unique):
        raise ValueError(f"data.test_set={how} puts all {len(unique)} patients in the test set; nothing is left to "
                         "train on (use data.test_set=fraction or =patients)")
    return sorted(set(test))


def observer_patients(meta: pd.DataFrame, observers: object | None) -> list[str]:
    """Patients whose cases have observer annotations: those with ``meta["has_observers"]`` true when the
    source marks them per case, every patient when the source has observer masks without marking, else none."""
    if not observers:
        return []
    if "has_observers" in meta.columns:
        return sorted(set(meta.loc[meta["has_observers"].astype(bool), "patient_id"]))
    return sorted(set(meta["patient_id"]))


def kfold_val_split(
    patient_ids: Sequence[str], test: Sequence[str], n_folds: int, fold: int, seed: int
) -> dict[str, list[str]]:
    """McSweeney 2022's split: the fixed ``test`` patients, and fold ``fold`` of a seeded ``n_folds``-fold
    partition of the other patients as validation; the remaining folds form the parent training pool.

    Over ``fold = 0 .. n_folds-1`` every non-test patient validates exactly once; ``test`` never changes.
    """
    if n_folds < 2:
        raise ValueError(f"data.n_folds must be >= 2 for k-fold validation folds, got {n_folds}")
    if not 0 <= fold < n_folds:
        raise ValueError(f"data.fold={fold} is out of range for data.n_folds={n_folds}; use 0..{n_folds - 1}")
    test_set = set(test)
    rest = sorted(set(patient_ids) - test_set)
    if len(rest) < n_folds:
        raise ValueError(f"{len(rest)} patients outside the test set cannot make data.n_folds={n_folds} folds; "
                         "lower n_folds or the test set")
    order = np.random.default_rng([seed, *_FOLD_STREAM]).permutation(len(rest))
    folds = np.array_split(order, n_folds)
    val = [rest[i] for i in folds[fold]]
    train = [rest[i] for k, f in enumerate(folds) if k != fold for i in f]
    return {"test": sorted(test_set), "val": val, "train": train}


def make_splits(
    patient_ids: Sequence[str], *, split: str, seed: int, val_fraction: float = 0.15, test_fraction: float = 0.2,
    n_folds: int = 4, fold: int = 0, test_set: str = "fraction", test_patients: Sequence[str] | None = None,
    observer_patients: Sequence[str] | None = None, external_test: bool = False,
) -> dict[str, list[str]]:
    """train/val/test patient lists for ``data.split`` (before ``n_train`` subsetting).

    ``external_test``: the source brings its own test set (e.g. another site); the returned ``test`` is then
    empty and the pool is split into train/val only (``holdout``, ``kfold_val``). ``kfold_test`` cannot take
    one (its folds are the test sets).
    """
    check_split_name(split)
    if split == "kfold_test":
        if external_test:
            raise ValueError("data.split=kfold_test tests on folds of the pool; unset the source's external test "
                             "set (e.g. data.source.test_site=null) or use data.split=kfold_val or holdout")
        return kfold_split(patient_ids, n_folds, fold, val_fraction, seed)
    if split == "kfold_val":
        test = [] if external_test else fixed_test_set(patient_ids, test_set, seed, test_fraction, test_patients,
                                                       observer_patients)
        return kfold_val_split(patient_ids, test, n_folds, fold, seed)
    return holdout_split(patient_ids, val_fraction, 0.0 if external_test else test_fraction, seed)


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


def split_manifest(splits: dict[str, Sequence[str]], meta: pd.DataFrame,
                   order: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per case: ``case_id``, ``patient_id``, ``split``, ``order`` — saved with every run.

    ``order``: the subset draw's ordering of the parent training pool; a patient's position in it is its
    ``order`` (empty for val/test), so the training subset of size n is exactly the pool patients with
    ``order < n`` — the nesting across n can be read off any manifest (pool patients outside the subset have
    split ``unused``).
    """
    rank = {p: i for i, p in enumerate(order or [])}
    rows = []
    for split, patients in splits.items():
        sel = meta[meta["patient_id"].isin(set(patients))]
        rows.append(pd.DataFrame({"case_id": sel["case_id"], "patient_id": sel["patient_id"], "split": split,
                                  "order": sel["patient_id"].map(rank).astype("Int64")}))
    columns = ["case_id", "patient_id", "split", "order"]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def check_study_splits(manifests: pd.DataFrame) -> list[str]:
    """Problems with the splits of a study's runs; an empty list means the design holds.

    ``manifests``: every run's ``split_manifest.csv`` stacked, with columns ``run``, ``fold``, ``subset_draw``,
    ``n_train`` added. Checks: (1) every run has the same test cases; (2) for the same fold and draw, the
    training patients of each size are contained in those of the next larger size.
    """
    problems: list[str] = []
    test = manifests[manifests["split"] == "test"].groupby("run")["case_id"].apply(frozenset)
    if test.nunique() > 1:
        counts = test.value_counts()
        problems.append(f"the test cases differ between runs: {len(counts)} different test sets over {len(test)} runs")
    train = manifests[manifests["split"] == "train"]
    for (fold, draw), grp in train.groupby(["fold", "subset_draw"], dropna=False):
        by_n = grp.groupby("n_train")["patient_id"].apply(frozenset).sort_index()
        runs_per_n = grp.groupby("n_train")["run"].nunique()
        for n, ids in by_n.items():
            if runs_per_n[n] > 1 and grp[grp["n_train"] == n].groupby("run")["patient_id"].apply(frozenset).nunique() > 1:
                problems.append(f"fold {fold}, draw {draw}: runs with n_train={n} trained on different patients")
        sizes = list(by_n.index)
        for small, large in zip(sizes, sizes[1:]):
            if not by_n[small] <= by_n[large]:
                problems.append(f"fold {fold}, draw {draw}: the n_train={small} subset is not inside the "
                                f"n_train={large} subset")
    return problems
