"""Patient-level splits: no leakage, k-fold coverage, nested subsets, determinism, clear errors."""
from __future__ import annotations

import pytest

from musclelab.data.splits import first_n, holdout_split, kfold_split, nested_subsets

PATIENTS = [f"p{i:03d}" for i in range(40)]


def test_holdout_is_disjoint_complete_and_seeded() -> None:
    s = holdout_split(PATIENTS, 0.15, 0.2, seed=3)
    assert len(s["test"]) == 8 and len(s["val"]) == 6 and len(s["train"]) == 26
    assert set(s["train"]) | set(s["val"]) | set(s["test"]) == set(PATIENTS)
    assert not set(s["train"]) & set(s["test"]) and not set(s["val"]) & set(s["test"])
    assert holdout_split(list(reversed(PATIENTS)), 0.15, 0.2, seed=3) == s  # order of input irrelevant
    assert holdout_split(PATIENTS, 0.15, 0.2, seed=4) != s


def test_kfold_tests_every_patient_once_without_leakage() -> None:
    tested = []
    for fold in range(4):
        s = kfold_split(PATIENTS, 4, fold, 0.1, seed=0)
        assert not (set(s["train"]) & set(s["test"])) and not (set(s["val"]) & set(s["test"]))
        assert not set(s["train"]) & set(s["val"])
        assert set(s["train"]) | set(s["val"]) | set(s["test"]) == set(PATIENTS)
        tested += s["test"]
    assert sorted(tested) == sorted(PATIENTS)


def test_nested_subsets_contain_smaller_ones_and_draws_differ() -> None:
    subsets = nested_subsets(PATIENTS, [5, 10, 25], n_draws=2, seed=0)
    for draw in (0, 1):
        assert set(subsets[draw][5]) < set(subsets[draw][10]) < set(subsets[draw][25])
    assert subsets[0][10] != subsets[1][10]
    assert first_n(PATIENTS, 10, seed=0, draw=1) == subsets[1][10]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: first_n(PATIENTS, 41, 0), "data.n_train=41 is larger than the training pool of 40"),
        (lambda: kfold_split(PATIENTS, 4, 4, 0.1, 0), "data.fold=4 is out of range"),
        (lambda: kfold_split(PATIENTS, 1, 0, 0.1, 0), "data.n_folds must be >= 2"),
        (lambda: holdout_split(PATIENTS, 0.5, 0.5, 0), "leaves no training patients"),
    ],
)
def test_bad_split_settings_name_the_field(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
