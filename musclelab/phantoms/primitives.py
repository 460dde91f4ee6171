"""Shared drawing primitives of the built-in CT phantoms (everything in millimetres and Hounsfield units).

Why our own: no library draws labelled, CT-like anatomy from parametric shapes (see the phantom modules). The
phantoms paint *structure codes* into an integer volume ``st`` (later mapped to HU and to label maps through
look-up tables), so a primitive returns a ``block`` (the index of a small bounding box) and a mask or a
normalised radius ``rho`` on that block (inside is ``rho < 1``); :func:`paint` writes a code there, optionally
only over codes listed in ``into``. Only NumPy and SciPy are used.

Conventions: volumes are ``(Z, H, W)`` (slices, rows, columns); in-plane anatomy coordinates are ``x`` towards the
subject's left (image right), ``y`` posterior (image down), origin at the image centre after the subject's
shift/rotation (:class:`Grid`); ``z`` is the slice-centre position in mm, increasing with the slice index.

Contents:

* geometry: :class:`Grid`, :func:`z_centres`, :func:`z_range`, :func:`fourier_coefs`, :func:`ellipse_rho`,
  :func:`tube`, :func:`ellipsoid`, :func:`capsule`, :func:`paint`, :func:`smoothstep`, :func:`profile`;
* tissue boundaries: :func:`fat_planes` (thin fat between touching labelled structures);
* acquisition: :func:`random_field` (correlated noise), :class:`SiteEffects` and :func:`acquire` (blur, HU
  calibration, noise, integer HU clip), :func:`subject_rngs` (independent anatomy / acquisition streams).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

HU_MIN, HU_MAX = -1024.0, 3071.0
EMPTY = np.float32(np.inf)   # the "rho" of a shape that misses the volume (rho < 1 is False)

Block = tuple  # (slice_z, slice_rows, slice_cols) or (slice_rows, slice_cols)


# ------------------------------------------------------------------------------------------------------------
# Random streams
# ------------------------------------------------------------------------------------------------------------


def subject_rngs(seed: int, site_index: int, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for one subject's anatomy and acquisition, from ``SeedSequence([seed, site, i])``
    and ``[seed, site, i, 1]``: a set of ``n`` subjects is a prefix of any larger set with the same seed/site."""
    return (np.random.default_rng(np.random.SeedSequence([seed, site_index, index])),
            np.random.default_rng(np.random.SeedSequence([seed, site_index, index, 1])))


# ------------------------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------------------------


class Grid:
    """In-plane pixel-centre coordinates in anatomy mm for a ``size`` x ``size`` image of ``spacing`` mm.

    ``shift`` = (tx, ty) mm moves the anatomy origin away from the image centre and ``rotation`` (radians) turns
    the subject in the plane; ``X``/``Y`` are float32 ``(size, size)`` anatomy coordinates of every pixel,
    ``xi``/``yi`` the image-frame coordinates (a row and a column vector, mm).
    """

    def __init__(self, size: int, spacing: float, shift: tuple[float, float] = (0.0, 0.0),
                 rotation: float = 0.0) -> None:
        self.size, self.sp = int(size), float(spacing)
        self.tx, self.ty = float(shift[0]), float(shift[1])
        self.c, self.s = float(np.cos(rotation)), float(np.sin(rotation))
        idx = ((np.arange(self.size, dtype=np.float32) + 0.5 - self.size / 2) * self.sp).astype(np.float32)
        self.xi, self.yi = idx[None, :], idx[:, None]   # image-frame mm (columns, rows), before shift/rotation
        xr, yr = self.xi - np.float32(self.tx), self.yi - np.float32(self.ty)
        self.X = (np.float32(self.c) * xr + np.float32(self.s) * yr).astype(np.float32)
        self.Y = (np.float32(-self.s) * xr + np.float32(self.c) * yr).astype(np.float32)

    def bbox(self, xs, ys, radius) -> tuple[slice, slice] | None:
        """Pixel box covering discs of ``radius`` mm around anatomy points (xs, ys); None if off-image."""
        xs, ys, rad = np.atleast_1d(xs), np.atleast_1d(ys), np.atleast_1d(radius)
        xi = self.tx + self.c * xs - self.s * ys
        yi = self.ty + self.s * xs + self.c * ys
        h = self.size / 2 - 0.5
        c0 = max(int(np.floor(np.min(xi - rad) / self.sp + h)), 0)
        c1 = min(int(np.ceil(np.max(xi + rad) / self.sp + h)) + 1, self.size)
        r0 = max(int(np.floor(np.min(yi - rad) / self.sp + h)), 0)
        r1 = min(int(np.ceil(np.max(yi + rad) / self.sp + h)) + 1, self.size)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)


def z_centres(n_slices: int, thickness_mm: float, z0_mm: float = 0.0) -> np.ndarray:
    """Slice-centre positions ``z0 + (k + 0.5) * thickness`` (mm, float32) of ``n_slices`` contiguous slices."""
    return (np.float32(z0_mm) + (np.arange(n_slices, dtype=np.float32) + 0.5) * np.float32(thickness_mm))


def z_range(z: np.ndarray, lo: float, hi: float) -> slice | None:
    """Indices of the slices whose centre (mm, increasing) lies in [lo, hi]; None if none."""
    k0, k1 = int(np.searchsorted(z, lo, "left")), int(np.searchsorted(z, hi, "right"))
    return slice(k0, k1) if k1 > k0 else None


def smoothstep(e0: float, e1: float, x):
    """0 below ``e0``, 1 above ``e1``, a C1 cubic in between (works on scalars and arrays)."""
    t = np.clip((np.asarray(x, np.float32) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def profile(t, knots: Sequence[float], values: Sequence[float]) -> np.ndarray:
    """Piecewise-linear profile along a structure: ``values`` at fractions ``knots`` of its length, ``t`` in
    [0, 1] (e.g. a muscle's cross-section radius from origin to insertion)."""
    return np.interp(np.asarray(t, np.float64), knots, values).astype(np.float32)


def fourier_coefs(rng: np.random.Generator, amp: float, kmax: int = 4, kmin: int = 2) -> np.ndarray:
    """Random low-frequency radial Fourier coefficients ``(kmax, 2)`` (amplitude ~ amp / k, k >= kmin) for a
    smooth, non-elliptic outline; ``amp`` is the relative radius perturbation (0.1 = about 10 %)."""
    c = np.zeros((kmax, 2))
    k = np.arange(kmin, kmax + 1)
    c[kmin - 1:] = rng.normal(0.0, 1.0, (len(k), 2)) * (amp / k)[:, None]
    return c


def _col(v, ndim: int):
    """A per-slice parameter as a (Z, 1, 1) column (scalars pass through)."""
    v = np.asarray(v, np.float32)
    return v.reshape(-1, *([1] * (ndim - 1))) if v.ndim == 1 else v


def _fourier(cu: np.ndarray, su: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    """sum_k a_k cos(k t) + b_k sin(k t), k = 1..K, from cos t / sin t by the angle-addition recurrence, with
    shared coefficients ``(K, 2)`` or per-slice ones ``(Z, K, 2)``."""
    out = np.zeros_like(cu)
    ck, sk = cu, su
    for k in range(coefs.shape[-2]):
        if k:
            ck, sk = ck * cu - sk * su, sk * cu + ck * su
        a, b = coefs[..., k, 0], coefs[..., k, 1]
        if not (np.any(a) or np.any(b)):
            continue
        if coefs.ndim == 3:
            a, b = _col(a, cu.ndim), _col(b, cu.ndim)
        out += np.float32(a) * ck + np.float32(b) * sk if np.ndim(a) == 0 else a * ck + b * sk
    return out


def ellipse_rho(X, Y, cx, cy, a, b, angle=0.0, coefs: np.ndarray | None = None) -> np.ndarray:
    """Normalised radius of an ellipse (centre cx, cy mm; half-axes ``a`` along ``angle`` and ``b``; optional
    radial Fourier perturbation) at points X, Y mm. Inside is ``rho < 1``. With 3D ``X`` (Z, H, W) the
    parameters may be per-slice arrays of length Z (a tube whose cross-section changes along z)."""
    nd = np.ndim(X)
    cx, cy = _col(cx, nd), _col(cy, nd)
    a = np.maximum(_col(a, nd), np.float32(1e-3))
    b = np.maximum(_col(b, nd), np.float32(1e-3))
    X, Y = X - cx, Y - cy
    if np.any(angle):
        ang = _col(angle, nd)
        c, s = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        X, Y = c * X + s * Y, c * Y - s * X
    u, v = X / a, Y / b
    r2 = u * u + v * v
    rho = np.sqrt(r2)
    if coefs is not None:
        rr = np.sqrt(np.maximum(r2, np.float32(1e-12)))
        rho = rho / (np.float32(1.0) + _fourier(u / rr, v / rr, coefs))
    return rho


def tube(g: Grid, z: np.ndarray, zsl: slice | None, cx, cy, a, b, angle=0.0, coefs=None):
    """A tube along z: elliptic cross-sections with per-slice centre (cx, cy), half-axes (a, b) and ``angle``
    (arrays over ``z[zsl]`` or scalars). Returns ``(block, rho)`` on the block (slices ``zsl`` x the box around
    all cross-sections), or ``(None, EMPTY)``. A slice with ``a <= 0`` or ``b <= 0`` is empty."""
    if zsl is None:
        return None, EMPTY
    n = zsl.stop - zsl.start
    cx, cy = np.broadcast_to(cx, (n,)), np.broadcast_to(cy, (n,))
    a, b = np.broadcast_to(a, (n,)), np.broadcast_to(b, (n,))
    ok = (a > 0) & (b > 0)
    if not ok.any():
        return None, EMPTY
    bound = float(np.abs(coefs).sum(axis=(-2, -1)).max()) if coefs is not None else 0.0
    rad = np.maximum(a, b)[ok] / max(1.0 - bound, 0.5) + 2.0 * g.sp
    box = g.bbox(cx[ok], cy[ok], rad)
    if box is None:
        return None, EMPTY
    rho = ellipse_rho(g.X[box][None], g.Y[box][None], cx, cy, a, b, angle, coefs)
    rho[~ok] = np.inf
    return (zsl, *box), rho


def ellipsoid(g: Grid, z: np.ndarray, c: Sequence[float], r: Sequence[float], angle: float = 0.0, coefs=None):
    """An ellipsoid with centre ``c`` = (x, y, z) and half-axes ``r`` = (a, b, c) mm: ``(block, rho)``."""
    zsl = z_range(z, c[2] - r[2], c[2] + r[2])
    if zsl is None:
        return None, EMPTY
    prof = np.sqrt(np.clip(1.0 - ((z[zsl] - c[2]) / r[2]) ** 2, 0.0, None))
    return tube(g, z, zsl, c[0], c[1], r[0] * prof, r[1] * prof, angle, coefs)


def capsule(g: Grid, z: np.ndarray, p0: Sequence[float], p1: Sequence[float], r0: float, r1: float):
    """A tapered tube from p0 to p1 (x, y, z mm), radius r0 -> r1 mm: ``(block, mask)`` or ``(None, None)``."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    rm = max(r0, r1)
    zsl = z_range(z, min(p0[2], p1[2]) - rm, max(p0[2], p1[2]) + rm)
    box = g.bbox([p0[0], p1[0]], [p0[1], p1[1]], rm + 2.0 * g.sp) if zsl is not None else None
    if box is None:
        return None, None
    X, Y = g.X[box][None] - np.float32(p0[0]), g.Y[box][None] - np.float32(p0[1])
    Z = (z[zsl] - p0[2]).astype(np.float32)[:, None, None]
    d = (p1 - p0).astype(np.float32)
    t = np.clip((X * d[0] + Y * d[1] + Z * d[2]) / np.float32(max(float(d @ d), 1e-6)), 0.0, 1.0)
    dist2 = (X - t * d[0]) ** 2 + (Y - t * d[1]) ** 2 + (Z - t * d[2]) ** 2
    r = np.float32(r0) + np.float32(r1 - r0) * t
    return (zsl, *box), dist2 < r * r


def paint(st: np.ndarray, block, mask, code: int, into: np.ndarray | None = None) -> int:
    """Set ``st[block][mask] = code`` where the current code is allowed by the boolean look-up table ``into``
    (indexed by code; ``None`` = everywhere). Returns the number of voxels set."""
    if block is None or mask is None:
        return 0
    view = st[block]
    if into is not None:
        mask = mask & into[view]
    view[mask] = code
    return int(np.count_nonzero(mask))


def bowel_loop(view: np.ndarray, rho: np.ndarray, into: np.ndarray, radius_mm: float, kind: int,
               codes: Sequence[int], above_level) -> None:
    """Paint one bowel loop into ``view`` (a structure-code block) where ``rho < 1`` and the code is in ``into``:
    a 2.5 mm wall, then the lumen by ``kind`` — 0 gas, 1 fluid, 2 air-fluid level (fluid, gas where
    ``above_level()`` is true: the caller's supine geometry, evaluated only for this kind), 3 faeces.
    ``codes`` = (wall, gas, fluid, faeces) of the calling phantom."""
    wall, gas, fluid, faeces = codes
    inside = (rho < 1) & into[view]
    view[inside] = wall
    lumen = inside & (rho < 1.0 - 2.5 / radius_mm)
    if kind == 0:
        view[lumen] = gas
    elif kind == 1:
        view[lumen] = fluid
    elif kind == 2:   # air-fluid level: gas rises to the image top (patient supine)
        view[lumen] = fluid
        view[lumen & above_level()] = gas
    else:
        view[lumen] = faeces


def lut(n_codes: int, codes: Sequence[int], dtype=bool, values: Sequence | None = None) -> np.ndarray:
    """A look-up table over ``n_codes`` structure codes: ``True`` (or ``values``) at ``codes``, 0 elsewhere."""
    out = np.zeros(n_codes, dtype=dtype)
    out[list(codes)] = True if values is None else values
    return out


# ------------------------------------------------------------------------------------------------------------
# Tissue boundaries
# ------------------------------------------------------------------------------------------------------------


def fat_planes(labels: np.ndarray, width_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Voxels of labelled structures (> 0) lying within ``width_mm / 2`` of a *different* labelled structure.

    Painting fat there leaves a thin fat plane of about ``width_mm`` between touching structures (muscles),
    while the outer boundaries against background (0) stay where they were. ``spacing`` is per axis of
    ``labels`` in mm; the neighbourhood is an ellipsoid of half-width ``width_mm / 2`` mm (at least the
    6-connected neighbours along every axis with spacing <= width). Returns a boolean array.
    """
    labels = np.asarray(labels)
    if width_mm <= 0:
        return np.zeros(labels.shape, bool)
    half = width_mm / 2.0
    radii = [max(int(np.floor(half / float(s) + 0.5)), 0) for s in spacing]
    if not any(radii):
        radii = [1 if float(s) <= width_mm else 0 for s in spacing]
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in radii], indexing="ij")
    d2 = sum((gk / max(r, 1)) ** 2 for gk, r in zip(grids, radii))
    foot = d2 <= 1.0 + 1e-6
    big = np.iinfo(labels.dtype).max if np.issubdtype(labels.dtype, np.integer) else np.inf
    lab = labels
    hi = ndimage.maximum_filter(lab, footprint=foot, mode="nearest")
    lo = ndimage.minimum_filter(np.where(lab == 0, big, lab), footprint=foot, mode="nearest")
    return (lab > 0) & ((hi > lab) | (lo < lab))


# ------------------------------------------------------------------------------------------------------------
# Acquisition
# ------------------------------------------------------------------------------------------------------------


def random_field(rng: np.random.Generator, shape: Sequence[int], sigma_px: float | Sequence[float]) -> np.ndarray:
    """Gaussian random field with unit standard deviation and Gaussian correlation ``sigma_px`` (pixels, one
    value or one per axis; 0 along an axis = independent slices). float32."""
    w = rng.standard_normal(tuple(shape), dtype=np.float32)
    sig = np.broadcast_to(np.asarray(sigma_px, float), (len(shape),))
    if np.any(sig > 0.15):
        w = ndimage.gaussian_filter(w, np.where(sig > 0.15, sig, 0.0), mode="wrap", truncate=3.0)
        w *= np.float32(1.0 / max(float(w.std()), 1e-6))
    return w


@dataclass(frozen=True)
class SiteEffects:
    """How a scanner/site degrades the ideal HU volume.

    blur_mm: in-plane reconstruction blur (Gaussian sigma, mm); blur_z_mm: blur along z (slice profile);
    hu_scale / hu_offset: calibration ``scale*HU + offset`` of tissue (blended to identity towards air so air
    stays -1000 HU); noise_sd: noise standard deviation (HU); noise_corr_mm: noise correlation length
    (Gaussian sigma, mm, in-plane).
    """

    blur_mm: float = 0.7
    blur_z_mm: float = 0.0
    hu_scale: float = 1.0
    hu_offset: float = 0.0
    noise_sd: float = 10.0
    noise_corr_mm: float = 0.9


def acquire(hu: np.ndarray, spacing: Sequence[float], site: SiteEffects, rng: np.random.Generator,
            noise_scale: float = 1.0) -> np.ndarray:
    """Apply ``site``'s blur, HU calibration and correlated noise (SD ``noise_sd * noise_scale``) to an ideal HU
    image or volume (``spacing`` mm per axis; a 3D volume is ``(Z, H, W)`` with in-plane noise per slice);
    returns integer-valued float32 HU clipped to [-1024, 3071]."""
    img = np.asarray(hu, np.float32)
    sp = np.asarray(spacing, float)
    inplane = sp[-2:]
    sig = [0.0] * (img.ndim - 2) + list(site.blur_mm / inplane)
    if img.ndim == 3 and site.blur_z_mm > 0:
        sig[0] = site.blur_z_mm / sp[0]
    if max(sig) > 0.1:
        img = ndimage.gaussian_filter(img, sig, mode="nearest", truncate=3.0)
    if site.hu_scale != 1.0 or site.hu_offset != 0.0:
        w = np.clip((img + np.float32(1000.0)) / np.float32(900.0), 0.0, 1.0)   # 0 at air, 1 from -100 HU up
        img = img + w * (np.float32(site.hu_scale - 1.0) * img + np.float32(site.hu_offset))
    corr = [0.0] * (img.ndim - 2) + list(site.noise_corr_mm / inplane)
    img = img + np.float32(site.noise_sd * noise_scale) * random_field(rng, img.shape, corr)
    return np.rint(np.clip(img, HU_MIN, HU_MAX)).astype(np.float32)
