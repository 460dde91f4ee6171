"""Sliding-window inference and NIfTI mask output."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from musclelab.inference import SlidingWindow, sliding_window_labels, sliding_window_logits
from musclelab.outputs.nifti import load_nifti, lps_affine, save_nifti


def test_sliding_window_matches_whole_volume_for_a_pointwise_net():
    net = torch.nn.Conv3d(1, 3, 1)
    x = torch.randn(1, 1, 20, 23, 17)
    for mode in ("gaussian", "constant"):
        out = sliding_window_logits(net, x, SlidingWindow((8, 8, 8), overlap=0.25, mode=mode))
        torch.testing.assert_close(out, net(x).detach(), atol=1e-5, rtol=1e-5)
    # a window larger than the volume is padded and cropped back
    small = torch.randn(1, 1, 4, 5, 6)
    assert sliding_window_labels(net, small, SlidingWindow((8, 8, 8))).shape == (1, 4, 5, 6)
    with pytest.raises(ValueError, match="overlap"):
        SlidingWindow((8, 8, 8), overlap=1.0)


def test_nifti_roundtrip_with_spacing_and_reference(tmp_path):
    mask = np.zeros((5, 6, 7), np.uint8)
    mask[1:3, 2:5, 1] = 4
    p = save_nifti(tmp_path / "a.nii.gz", mask, spacing=(2.5, 0.8, 0.9))
    arr, sp = load_nifti(p)
    np.testing.assert_array_equal(arr, mask)
    np.testing.assert_allclose(sp, (2.5, 0.8, 0.9))
    # written on the grid of a reference file stored in another orientation (RAS): same affine as the reference
    import nibabel as nib

    data = np.zeros((7, 6, 5), np.int16)
    ref_aff = np.diag([0.9, 0.8, 2.5, 1.0])
    ref_aff[:3, 3] = (10, -20, 30)
    nib.save(nib.Nifti1Image(data, ref_aff), str(tmp_path / "ref.nii.gz"))
    ref_lps, _ = load_nifti(tmp_path / "ref.nii.gz")
    out = save_nifti(tmp_path / "pred.nii.gz", np.ones(ref_lps.shape, np.uint8), reference=tmp_path / "ref.nii.gz")
    np.testing.assert_allclose(nib.load(str(out)).affine, ref_aff, atol=1e-5)
    with pytest.raises(ValueError, match="reference"):
        save_nifti(tmp_path / "bad.nii.gz", np.ones((2, 2, 2), np.uint8), reference=tmp_path / "ref.nii.gz")
    assert lps_affine((2.0, 1.0, 1.0))[2, 2] == 2.0


def test_nifti_on_a_2d_reference_slice(tmp_path):
    import SimpleITK as sitk

    ref = sitk.GetImageFromArray(np.zeros((6, 7), np.int16))
    ref.SetSpacing((0.8, 0.9))
    sitk.WriteImage(ref, str(tmp_path / "slice.nrrd"))
    mask = np.zeros((6, 7), np.uint8)
    mask[2, 3] = 1
    arr, sp = load_nifti(save_nifti(tmp_path / "m.nii.gz", mask, reference=tmp_path / "slice.nrrd"))
    assert arr.shape == (6, 7) and arr[2, 3] == 1 and sp == pytest.approx((0.9, 0.8))
