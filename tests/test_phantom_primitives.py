"""Tests for the shared phantom drawing primitives (musclelab.phantoms.primitives)."""
from __future__ import annotations

import numpy as np

from musclelab.phantoms import primitives as P


def test_tube_cross_section_area_in_mm():
    g = P.Grid(128, 1.0)
    z = P.z_centres(10, 2.0)
    block, rho = P.tube(g, z, slice(0, 10), cx=5.0, cy=-3.0, a=np.linspace(10, 20, 10), b=10.0)
    areas = (rho < 1).sum(axis=(1, 2))
    np.testing.assert_allclose(areas, np.pi * np.linspace(10, 20, 10) * 10.0, rtol=0.03)
    st = np.zeros((10, 128, 128), np.uint8)
    n = P.paint(st, block, rho < 1, 3)
    assert n == areas.sum() and (st == 3).sum() == n
    # painting only into code 0 leaves code 3 alone
    block2, rho2 = P.tube(g, z, slice(0, 10), 0.0, 0.0, 30.0, 30.0)
    P.paint(st, block2, rho2 < 1, 5, into=P.lut(8, [0]))
    assert (st == 3).sum() == n


def test_ellipsoid_volume_and_z_range():
    g = P.Grid(96, 1.0)
    z = P.z_centres(60, 1.0, z0_mm=-30.0)
    block, rho = P.ellipsoid(g, z, (0, 0, 0), (20, 10, 15))
    assert abs((rho < 1).sum() - 4 / 3 * np.pi * 20 * 10 * 15) / (4 / 3 * np.pi * 3000) < 0.03
    assert P.z_range(z, 100, 200) is None


def test_fat_planes_only_between_structures():
    lab = np.zeros((1, 40, 40), np.uint8)
    lab[0, 10:30, 10:20] = 1
    lab[0, 10:30, 20:30] = 2
    plane = P.fat_planes(lab, 2.0, (5.0, 1.0, 1.0))
    cols = np.nonzero(plane[0, 20])[0]
    assert set(cols) == {19, 20}            # both sides of the shared boundary, 2 mm in total
    assert not plane[0, 10:30, 10].any() and not plane[0, 9].any()   # outer edges untouched


def test_acquire_noise_and_determinism():
    hu = np.full((4, 64, 64), 50.0, np.float32)
    site = P.SiteEffects(blur_mm=1.0, noise_sd=20.0, noise_corr_mm=1.0, hu_offset=10.0)
    a = P.acquire(hu, (3.0, 1.0, 1.0), site, P.subject_rngs(0, 0, 1)[1])
    b = P.acquire(hu, (3.0, 1.0, 1.0), site, P.subject_rngs(0, 0, 1)[1])
    np.testing.assert_array_equal(a, b)
    assert np.array_equal(a, np.rint(a)) and abs(a.mean() - 60.0) < 3 and 15 < a.std() < 25
    f = P.random_field(np.random.default_rng(0), (8, 32, 32), (0, 2, 2))
    assert abs(f.std() - 1) < 1e-3


def test_profile_and_smoothstep():
    np.testing.assert_allclose(P.profile([0, 0.5, 1], [0, 1], [2, 4]), [2, 3, 4])
    assert float(P.smoothstep(0, 1, 0.5)) == 0.5
