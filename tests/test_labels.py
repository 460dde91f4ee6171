"""Label subsets (data.labels): relabelling by name, order, errors before data is loaded, names downstream."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from musclelab.data.labels import apply_labels, relabel, resolve_labels
from musclelab.data.containers import SliceSet
from musclelab.data.sources import check_labels_early, load_source
from musclelab.errors import ConfigError

NAMES = ("background", "erector_spinae", "quadratus_lumborum", "psoas_major", "obliques", "rectus_abdominis")


def _slices() -> SliceSet:
    lab = np.array([[[0, 1, 2], [3, 4, 5]], [[5, 5, 2], [1, 0, 0]]], np.uint8)
    meta = pd.DataFrame({"case_id": ["a", "b"], "patient_id": ["a", "b"]})
    return SliceSet(np.zeros(lab.shape, np.float32), lab, np.ones((2, 2)), meta, NAMES)


def test_relabel_in_stated_order() -> None:
    out = apply_labels(_slices(), ["quadratus_lumborum", "erector_spinae"])
    assert out.class_names == ("background", "quadratus_lumborum", "erector_spinae")
    np.testing.assert_array_equal(out.labels, [[[0, 2, 1], [0, 0, 0]], [[0, 0, 1], [2, 0, 0]]])
    # the reverse order swaps the values; names match case-, space- and dash-insensitively
    rev = apply_labels(_slices(), ["Erector Spinae", "quadratus-lumborum"])
    np.testing.assert_array_equal(rev.labels, np.where(out.labels == 0, 0, 3 - out.labels))


def test_single_target_is_binary() -> None:
    out = apply_labels(_slices(), ["rectus_abdominis"])
    assert out.class_names == ("background", "rectus_abdominis")
    np.testing.assert_array_equal(out.labels, [[[0, 0, 0], [0, 0, 1]], [[1, 1, 0], [0, 0, 0]]])
    np.testing.assert_array_equal(relabel(np.array([5, 4, 0]), [5], 6), [1, 0, 0])


@pytest.mark.parametrize("labels, match", [
    (["trapezius"], "'trapezius' is not a class.*known: erector_spinae, quadratus_lumborum"),
    (["obliques", "obliques"], "listed twice"),
    ([], "empty"),
    (["background", "obliques"], "background"),
])
def test_bad_subsets_fail_naming_the_field(labels: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match="data.labels") as err:
        resolve_labels(labels, NAMES)
    assert err.match(match)


def test_checked_from_config_before_any_data_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    import musclelab.phantoms.l3 as phantom

    monkeypatch.setattr(phantom, "generate_phantom", lambda *a, **k: pytest.fail("data was loaded"))
    cfg = OmegaConf.create({"name": "phantom", "source": {"target": "muscles"}, "labels": ["psoas", "obliques"]})
    with pytest.raises(ConfigError, match="'psoas' is not a class.*psoas_major"):
        check_labels_early(cfg)
    check_labels_early(OmegaConf.create({"name": "phantom", "source": {"target": "muscles"},
                                         "labels": ["psoas_major"]}))
    check_labels_early(OmegaConf.create({"name": "phantom", "labels": None}))


def test_source_hook_relabels_pool() -> None:
    data = load_source("phantom", 32, {"target": "muscles", "n_cases": 2},
                       labels=["obliques", "erector_spinae"])
    assert data.pool.class_names == ("background", "obliques", "erector_spinae")
    full = load_source("phantom", 32, {"target": "muscles", "n_cases": 2})
    np.testing.assert_array_equal(data.pool.labels == 1, full.pool.labels == 4)
    np.testing.assert_array_equal(data.pool.labels == 2, full.pool.labels == 1)
    assert set(np.unique(data.pool.labels)) <= {0, 1, 2}
