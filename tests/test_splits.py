"""Patient-level splits: no leakage, k-fold coverage, nested subsets, determinism, clear errors."""
from __future__ import annotations

import pandas as pd
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


# --- kfold_val: McSweeney 2022's fixed test set + rotating validation folds ---------------------------------

from musclelab.data.splits import (check_split_name, check_study_splits, fixed_test_set, kfold_val_split,  # noqa: E402
                                   make_splits, observer_patients, split_manifest)


def test_kfold_val_keeps_the_test_set_and_rotates_validation() -> None:
    test = fixed_test_set(PATIENTS, "fraction", seed=0, test_fraction=0.2)
    assert len(test) == 8
    validated = []
    for fold in range(4):
        s = make_splits(PATIENTS, split="kfold_val", seed=0, test_fraction=0.2, n_folds=4, fold=fold)
        assert s["test"] == test  # identical for every fold
        assert not set(s["train"]) & set(s["val"]) and not (set(s["train"]) | set(s["val"])) & set(test)
        assert set(s["train"]) | set(s["val"]) | set(test) == set(PATIENTS)
        assert len(s["val"]) == 8 and len(s["train"]) == 24  # one fold of the 32 others validates
        validated += s["val"]
    assert sorted(validated) == sorted(set(PATIENTS) - set(test))  # every non-test patient validates once


def test_fixed_test_set_from_ids_and_observers() -> None:
    assert fixed_test_set(PATIENTS, "patients", 0, test_patients=["p003", "p001"]) == ["p001", "p003"]
    with pytest.raises(ValueError, match="not in the data: nobody"):
        fixed_test_set(PATIENTS, "patients", 0, test_patients=["nobody"])
    meta = pd.DataFrame({"patient_id": PATIENTS, "has_observers": [i >= 30 for i in range(40)]})
    observed = observer_patients(meta, {"observer_1": object()})
    assert observed == PATIENTS[30:]
    assert fixed_test_set(PATIENTS, "observers", 0, observer_patients=observed) == PATIENTS[30:]
    assert observer_patients(meta, None) == []
    with pytest.raises(ValueError, match="no case of the data set has observer annotations"):
        fixed_test_set(PATIENTS, "observers", 0, observer_patients=[])
    with pytest.raises(ValueError, match="puts all 40 patients in the test set"):
        fixed_test_set(PATIENTS, "observers", 0, observer_patients=PATIENTS)
    with pytest.raises(ValueError, match="data.test_set must be one of fraction, patients, observers"):
        fixed_test_set(PATIENTS, "random", 0)


def test_old_kfold_name_fails_naming_the_new_ones() -> None:
    with pytest.raises(ValueError, match="data.split=kfold was renamed: use data.split=kfold_test .*kfold_val"):
        check_split_name("kfold")
    with pytest.raises(ValueError, match="data.split must be one of holdout, kfold_val, kfold_test"):
        check_split_name("loo")
    # kfold_test is the old behaviour, number for number
    assert make_splits(PATIENTS, split="kfold_test", seed=0, val_fraction=0.1, n_folds=4, fold=2) == \
        kfold_split(PATIENTS, 4, 2, 0.1, 0)


def _study_manifests(sizes=(2, 4, 8), folds=(0, 1), draws=(0, 1)) -> pd.DataFrame:
    """The manifests a kfold_val study of the phantom writes, one per (fold, draw, n), via the datamodule."""
    from musclelab.data.datamodule import SegmentationDataModule

    frames = []
    for fold in folds:
        for draw in draws:
            for n in sizes:
                dm = SegmentationDataModule("phantom", img_size=32, source={"n_cases": 20}, split="kfold_val",
                                            test_fraction=0.2, fold=fold, n_train=n, subset_draw=draw)
                dm.setup()
                frames.append(dm.manifest.assign(run=f"f{fold}-d{draw}-n{n}", fold=fold, subset_draw=draw, n_train=n))
    return pd.concat(frames, ignore_index=True)


def test_study_manifests_show_fixed_test_and_nested_subsets() -> None:
    m = _study_manifests()
    assert check_study_splits(m) == []
    one = m[m.run == "f0-d0-n4"]
    train = one[one.split == "train"]
    assert len(train) == 4 and sorted(train["order"]) == list(range(4))  # subset = order < n
    assert (one.loc[one.split == "unused", "order"] >= 4).all()
    assert one.loc[one.split.isin(["val", "test"]), "order"].isna().all()
    # a broken study is caught: another test set, and a non-nested subset
    bad = m.copy()
    bad.loc[(bad.run == "f1-d1-n8") & (bad.split == "test"), "case_id"] = "other"
    swap = (bad.run == "f0-d0-n2") & (bad.split == "train")
    bad.loc[swap, "patient_id"] = "intruder"
    problems = check_study_splits(bad)
    assert any("test cases differ" in p for p in problems)
    assert any("fold 0, draw 0: the n_train=2 subset is not inside the n_train=4 subset" in p for p in problems)


def test_manifest_without_order() -> None:
    meta = pd.DataFrame({"case_id": ["a", "b"], "patient_id": ["a", "b"]})
    m = split_manifest({"test": ["a"]}, meta)
    assert list(m.columns) == ["case_id", "patient_id", "split", "order"] and m["order"].isna().all()


def test_phantom_observer_cases_become_the_test_set() -> None:
    from musclelab.data.datamodule import SegmentationDataModule

    dm = SegmentationDataModule("phantom", img_size=32, split="kfold_val", test_set="observers", n_folds=2,
                                source={"n_cases": 10, "n_observers": 1, "observer_cases": 3})
    dm.setup()
    test = dm.manifest[dm.manifest.split == "test"]
    assert sorted(test["patient_id"]) == sorted(dm.datasets["test"].slices.meta["patient_id"])
    assert len(test) == 3 and dm.datasets["test"].slices.meta["has_observers"].all()
    assert not dm.datasets["train"].slices.meta["has_observers"].any()


def test_l3_folder_observers_of_some_cases_are_the_test_set(tmp_path) -> None:
    """Real data where the observers contoured only some images (the paper's 37): those are marked and become
    the fixed test set with data.test_set=observers."""
    import fake_datasets as F
    from musclelab.data.datamodule import SegmentationDataModule

    F.make_fake_l3_folder(tmp_path / "l3", observers=2)
    for name in ("obs1", "obs2"):  # c2 and c3 were not contoured by the observers
        for f in (tmp_path / "l3" / "observers" / name).glob("c[23].*"):
            f.unlink()
    dm = SegmentationDataModule("l3_folder", img_size=32, root=str(tmp_path / "l3"), cache_dir=str(tmp_path / "c"),
                                split="kfold_val", test_set="observers", n_folds=2)
    dm.setup()
    test = dm.datasets["test"].slices
    assert sorted(test.meta["source_case_id"]) == ["007", "c1"] and test.meta["has_observers"].all()
    assert sorted(test.observers) == ["obs1", "obs2"] and all(m.any() for m in test.observers["obs1"])
