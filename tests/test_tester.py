"""The one test path (musclelab.evaluation.tester): checkpoints are read with weights_only=True in 2D and 3D."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from musclelab.evaluation.tester import load_for_test, task_class


class NotATensor:
    """An arbitrary Python object: unpickling it would run code from the file."""


@pytest.mark.parametrize("dims", [2, 3])
def test_a_checkpoint_holding_python_objects_is_refused_in_2d_and_3d(tmp_path: Path, dims: int) -> None:
    ckpt = tmp_path / "best.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"obj": NotATensor()}}, ckpt)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_for_test(ckpt, dims)


def test_one_task_serves_both_spatial_dims() -> None:
    assert task_class(2) is task_class(3)
    assert task_class(3).__name__ == "SegmentationTask"
