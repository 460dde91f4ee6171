"""Built-in synthetic L3 axial CT phantom with exact muscle / tissue labels.

Why our own: no library ships a *labelled* CT phantom of the L3 vertebral level (the slice used for body
composition: skeletal muscle area, SMI, myosteatosis). Public phantoms (XCAT, Shepp-Logan, MONAI's
synthetic blobs) are either licensed, whole-body, unlabelled for individual muscles, or not CT-like. A small,
fast, seeded generator lets every test, tutorial and benchmark run without patient data.

What a slice contains (all defined in millimetres, so changing the image size changes only the sampling):

* air, CT table, skin, subcutaneous fat (SAT, subject-dependent thickness), the abdominal-wall fascia;
* skeletal muscles: erector spinae, quadratus lumborum, psoas major, obliques (lateral wall band) and rectus
  abdominis (two anterior bands), left and right merged per muscle;
* the L3 vertebra: body (cortical rim + cancellous bone), posterior arch, spinous and transverse processes,
  spinal canal;
* visceral fat filling the abdominal cavity, kidneys (lower poles), optional inferior right liver tip,
  aorta, IVC, mesenteric vessels, small bowel and colon with gas / fluid / faeces / oral contrast.

Image conventions: arrays are ``(H, W)`` = (rows, columns); the patient is supine, anterior at the top
(row 0), the subject's left on the image right (radiological convention). Spacing is ``(row, col)`` mm.

Each subject ``i`` of site ``s`` is drawn from ``numpy.random.SeedSequence([seed, site_index, i])`` so a set
of ``n`` subjects is a prefix of any larger set with the same seed and site, and is bit-identical between
runs. Acquisition (contrast, noise) uses its own stream ``[seed, site_index, i, 1]``; with
``anatomy_site=`` one can image the *same* subjects on another site's scanner (travelling subjects).

Acquisition model per site (:class:`SiteProfile`): reconstruction blur (Gaussian, mm), a calibration
``HU' = scale * HU + offset`` applied to tissue (blended to identity towards air so air stays -1000 HU),
spatially correlated Gaussian noise (white noise filtered with a Gaussian of the given correlation length,
renormalised to ``noise_sd`` HU, scaled up for larger bodies), rounding to integer HU and clipping to
[-1024, 3071].

Label maps (``uint8``; names in :data:`LABEL_MAPS`):

* ``muscle``: 0 background, 1 skeletal muscle (union of the individual muscles);
* ``muscles``: 0 background, 1 erector_spinae, 2 quadratus_lumborum, 3 psoas_major, 4 obliques,
  5 rectus_abdominis;
* ``tissue``: 0 background/other, 1 muscle, 2 subcutaneous fat, 3 visceral fat, 4 bone. Fat inside the
  muscle fascia but outside the abdominal cavity (between the posterior muscles) is intermuscular fat and
  counts as "other" (0). Intramuscular fat speckle (myosteatosis) stays inside the muscle label, as the
  muscle compartment a reader would contour.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.special import ndtri

from musclelab.io import new_directory
from musclelab.phantoms.primitives import bowel_loop, fourier_coefs as _coefs, lut, random_field as _unit_field

# ----------------------------------------------------------------------------------------------------------
# Public constants
# ----------------------------------------------------------------------------------------------------------

BINARY_NAMES: tuple[str, ...] = ("background", "muscle")
MUSCLE_NAMES: tuple[str, ...] = (
    "background", "erector_spinae", "quadratus_lumborum", "psoas_major", "obliques", "rectus_abdominis",
)
TISSUE_NAMES: tuple[str, ...] = ("background", "muscle", "subcutaneous_fat", "visceral_fat", "bone")
LABEL_MAPS: dict[str, tuple[str, ...]] = {"muscle": BINARY_NAMES, "muscles": MUSCLE_NAMES, "tissue": TISSUE_NAMES}

SLICE_THICKNESS_MM = 3.0
HU_MIN, HU_MAX = -1024.0, 3071.0


@dataclass(frozen=True)
class SiteProfile:
    """Acquisition characteristics of one (simulated) CT site.

    noise_sd: image noise standard deviation in HU (for a 330 mm wide body); noise_corr_mm: correlation
    length (Gaussian sigma, mm) of the noise texture; hu_scale / hu_offset: calibration ``scale*HU+offset``
    of tissue; blur_mm: reconstruction blur (Gaussian sigma, mm); fov_factor: field of view relative to the
    reference (pixel spacing = FOV / size, so >1 means coarser pixels); p_contrast / p_sarcopenia /
    p_myosteatosis: population prevalences at this site.
    """

    name: str
    description: str
    noise_sd: float
    noise_corr_mm: float
    hu_scale: float
    hu_offset: float
    blur_mm: float
    fov_factor: float
    p_contrast: float
    p_sarcopenia: float
    p_myosteatosis: float


# A site's position in this dict seeds its subjects: add new sites at the end so existing sets stay the same.
SITES: dict[str, SiteProfile] = {
    "a": SiteProfile("a", "reference: standard kernel, moderate noise", noise_sd=10.0, noise_corr_mm=0.9,
                     hu_scale=1.0, hu_offset=0.0, blur_mm=0.7, fov_factor=1.0,
                     p_contrast=0.5, p_sarcopenia=0.25, p_myosteatosis=0.25),
    "b": SiteProfile("b", "low dose: noisy, blurry, +25 HU calibration offset", noise_sd=28.0, noise_corr_mm=1.4,
                     hu_scale=1.0, hu_offset=25.0, blur_mm=1.6, fov_factor=1.0,
                     p_contrast=0.7, p_sarcopenia=0.3, p_myosteatosis=0.3),
    "c": SiteProfile("c", "smooth iterative recon, large FOV (coarse pixels), HU scale 0.93", noise_sd=5.0,
                     noise_corr_mm=3.0, hu_scale=0.93, hu_offset=-8.0, blur_mm=1.2, fov_factor=1.3,
                     p_contrast=0.3, p_sarcopenia=0.35, p_myosteatosis=0.35),
    "d": SiteProfile("d", "sharp kernel, small FOV, strong fine-grained noise, HU scale 1.04", noise_sd=40.0,
                     noise_corr_mm=0.4, hu_scale=1.04, hu_offset=-12.0, blur_mm=0.3, fov_factor=0.9,
                     p_contrast=0.85, p_sarcopenia=0.2, p_myosteatosis=0.2),
}

META_COLUMNS: tuple[str, ...] = (
    "case_id", "patient_id", "index", "site", "anatomy_site", "sex", "age", "height_m", "weight_kg", "bmi",
    "contrast", "oral_contrast", "sarcopenic", "myosteatosis", "spacing_row_mm", "spacing_col_mm",
    "slice_thickness_mm", "fov_mm", "size", "sma_cm2", "smi_cm2_m2", "muscle_hu_true", "sat_area_cm2",
    "vat_area_cm2", "sat_thickness_mm", "area_erector_spinae_cm2", "area_quadratus_lumborum_cm2",
    "area_psoas_major_cm2", "area_obliques_cm2", "area_rectus_abdominis_cm2",
)


def get_site(site: str) -> SiteProfile:
    """The :class:`SiteProfile` called ``site``; ``ValueError`` listing the known sites otherwise."""
    if site not in SITES:
        raise ValueError(f"unknown phantom site {site!r}; known sites: {', '.join(SITES)}")
    return SITES[site]


# ----------------------------------------------------------------------------------------------------------
# Internal structure codes (painted in order; each maps to HU and to the label maps)
# ----------------------------------------------------------------------------------------------------------

(_AIR, _TABLE, _TABLE_CORE, _SKIN, _SAT, _IMAT, _VAT, _ES, _QL, _PSOAS, _OBL, _RECT, _BONE, _CORTEX, _CANAL,
 _LIVER, _KCORTEX, _KMED, _AORTA, _IVC, _VESSEL, _BWALL, _BFLUID, _BGAS, _BFECES, _BORAL) = range(26)
_NCODES = 26
_MUSCLE_CODES = (_ES, _QL, _PSOAS, _OBL, _RECT)


def _lut(codes: Sequence[int], dtype=bool, values: Sequence | None = None) -> np.ndarray:
    return lut(_NCODES, codes, dtype, values)


_MUSCLES_LUT = _lut(_MUSCLE_CODES, np.uint8, [1, 2, 3, 4, 5])
_TISSUE_LUT = _lut(_MUSCLE_CODES + (_SAT, _VAT, _BONE, _CORTEX), np.uint8, [1] * 5 + [2, 3, 4, 4])
_INTO_AIR = _lut([_AIR])
_INTO_VAT = _lut([_VAT])
_INTO_SOFT = _lut([_VAT, _IMAT, _KCORTEX, _KMED, _LIVER])


@dataclass
class _Subject:
    """Everything drawn for one subject (anatomy in mm, HU before acquisition)."""

    patient_id: str
    index: int
    site: str
    anatomy_site: str
    sex: str
    age: float
    height_m: float
    bmi: float
    contrast: bool
    oral_contrast: bool
    sarcopenic: bool
    myosteatosis: bool
    frame: float           # skeletal frame scale (1 = reference man)
    muscle: float          # linear muscle scale (area scale = muscle**2)
    t_sat: float           # mean subcutaneous fat thickness, mm
    vat: float             # visceral adiposity level (0 lean .. ~1.6 obese)
    fov_mm: float
    body_width_mm: float
    extras: dict


# ----------------------------------------------------------------------------------------------------------
# Public containers
# ----------------------------------------------------------------------------------------------------------


@dataclass
class PhantomSlice:
    """One phantom slice: ``image`` float32 (H, W) HU, ``labels`` name -> uint8 (H, W), ``spacing``
    (row, col) mm, ``meta`` one subject's metadata."""

    image: np.ndarray
    labels: dict[str, np.ndarray]
    spacing: tuple[float, float]
    meta: dict


@dataclass
class Phantom:
    """A batch of phantom slices.

    images: float32 ``(n, H, W)`` HU (integer-valued); labels: ``{"muscle", "muscles", "tissue"}`` -> uint8
    ``(n, H, W)``; spacing: float64 ``(n, 2)`` mm per pixel (row, col); meta: one row per subject
    (:data:`META_COLUMNS`).
    """

    images: np.ndarray
    labels: dict[str, np.ndarray]
    spacing: np.ndarray
    meta: pd.DataFrame

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> PhantomSlice:
        return PhantomSlice(self.images[i], {k: v[i] for k, v in self.labels.items()},
                            (float(self.spacing[i, 0]), float(self.spacing[i, 1])), self.meta.iloc[i].to_dict())


# ----------------------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------------------


class _Grid:
    """Pixel-centre coordinates in anatomy mm: origin at the vertebral-body centre, x towards the subject's
    left (image right), y posterior (image down), after the subject's in-plane rotation and shift."""

    def __init__(self, size: int, sp: float, tx: float, ty: float, rot: float) -> None:
        self.size, self.sp, self.tx, self.ty = size, sp, tx, ty
        self.c, self.s = float(np.cos(rot)), float(np.sin(rot))
        idx = ((np.arange(size, dtype=np.float32) + 0.5 - size / 2) * sp).astype(np.float32)
        self.xi = idx[None, :]                      # image-frame mm (columns)
        self.yi = idx[:, None]                      # image-frame mm (rows, gravity direction)
        xr, yr = self.xi - np.float32(tx), self.yi - np.float32(ty)
        self.X = (np.float32(self.c) * xr + np.float32(self.s) * yr).astype(np.float32)
        self.Y = (np.float32(-self.s) * xr + np.float32(self.c) * yr).astype(np.float32)

    def bbox(self, cx: float, cy: float, radius: float) -> tuple[slice, slice] | None:
        """Pixel slices covering a disc of ``radius`` mm around anatomy point (cx, cy); None if off-image."""
        xi = self.tx + self.c * cx - self.s * cy
        yi = self.ty + self.s * cx + self.c * cy
        h = self.size / 2 - 0.5
        c0 = max(int(np.floor((xi - radius) / self.sp + h)), 0)
        c1 = min(int(np.ceil((xi + radius) / self.sp + h)) + 1, self.size)
        r0 = max(int(np.floor((yi - radius) / self.sp + h)), 0)
        r1 = min(int(np.ceil((yi + radius) / self.sp + h)) + 1, self.size)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)


def _fourier(cos1: np.ndarray, sin1: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    """sum_k a_k cos(k t) + b_k sin(k t), k = 1..K, from cos t / sin t by the angle-addition recurrence."""
    out = np.zeros_like(cos1)
    ck, sk = cos1, sin1
    for k in range(len(coefs)):
        if k:
            ck, sk = ck * cos1 - sk * sin1, sk * cos1 + ck * sin1
        a, b = float(coefs[k, 0]), float(coefs[k, 1])
        if a or b:
            out += a * ck + b * sk
    return out


def _rho(X, Y, cx: float, cy: float, a: float, b: float, angle: float = 0.0, coefs: np.ndarray | None = None,
         p: float = 2.0):
    """Normalised radius of a (super)ellipse with half-axes a (along direction ``angle``) and b centred at
    (cx, cy) mm, with an optional smooth radial perturbation, at points (X, Y) mm. Inside is ``rho < 1``."""
    X = X - np.float32(cx)
    Y = Y - np.float32(cy)
    if angle:
        c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        X, Y = c * X + s * Y, c * Y - s * X
    u, v = X / np.float32(a), Y / np.float32(b)
    r2 = u * u + v * v
    if p == 2.0:
        rho = np.sqrt(r2)
    else:
        rho = (np.abs(u) ** p + np.abs(v) ** p) ** (1.0 / p)
    if coefs is not None:
        rr = np.sqrt(np.maximum(r2, np.float32(1e-12)))
        rho = rho / (1.0 + _fourier(u / rr, v / rr, coefs))
    return rho


def _shape(g: _Grid, cx: float, cy: float, a: float, b: float, angle: float = 0.0,
           coefs: np.ndarray | None = None, p: float = 2.0, solids: list | None = None):
    """:func:`_rho` on the pixels of the shape's bounding box: returns (slices, rho), (None, None) if the
    shape is off-image. With ``solids`` the shape's parameters are recorded there (for bowel placement)."""
    if solids is not None:
        solids.append((cx, cy, a, b, angle, coefs, p))
    sl = g.bbox(cx, cy, max(a, b) * 1.3 + 2 * g.sp)
    if sl is None:
        return None, None
    return sl, _rho(g.X[sl], g.Y[sl], cx, cy, a, b, angle, coefs, p)


def _paint(st: np.ndarray, sl, mask: np.ndarray | None, code: int, into: np.ndarray | None = None) -> None:
    if sl is None or mask is None:
        return
    view = st[sl]
    if into is not None:
        mask = mask & into[view]
    view[mask] = code


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# ----------------------------------------------------------------------------------------------------------
# Subject sampling
# ----------------------------------------------------------------------------------------------------------


def _site_index(site: str) -> int:
    return list(SITES).index(site)


def _sample_subject(rng: np.random.Generator, rng_acq: np.random.Generator, index: int, site: str,
                    anatomy_site: str, overrides: dict) -> _Subject:
    pop = SITES[anatomy_site]
    acq = SITES[site]
    sex = "M" if rng.random() < 0.5 else "F"
    male = sex == "M"
    age = float(rng.uniform(25.0, 88.0))
    height = float(np.clip(rng.normal(1.76 if male else 1.63, 0.07), 1.45, 2.02))
    sarcopenic = bool(rng.random() < pop.p_sarcopenia)
    myosteatosis = bool(rng.random() < pop.p_myosteatosis)
    if overrides.get("sarcopenic") is not None:
        sarcopenic = bool(overrides["sarcopenic"])
    if overrides.get("myosteatosis") is not None:
        myosteatosis = bool(overrides["myosteatosis"])

    frame = height / 1.70 * (1.03 if male else 0.96) * float(np.clip(rng.normal(1.0, 0.03), 0.9, 1.1))
    area = (1.0 if male else 0.9) * float(np.exp(rng.normal(0.0, 0.10)))
    if sarcopenic:
        area *= 0.6
    muscle = float(np.sqrt(area))
    obesity = float(rng.normal(0.0, 1.0))
    t_sat = float(np.clip((16.0 if male else 24.0) * np.exp(0.45 * obesity + 0.2 * rng.normal()), 4.0, 70.0))
    vat = float(np.clip((0.55 if male else 0.35) * np.exp(0.5 * obesity + 0.3 * rng.normal())
                        * (1.0 + 0.006 * (age - 50.0)), 0.05, 1.8))
    sat_lat = float(rng.uniform(0.0, 0.25) + (0.15 if not male else 0.0))

    # derived outer dimensions (mm) for FOV / placement
    t_obl = 21.0 * frame * muscle
    t_rect = 13.5 * frame * muscle
    A = 104.0 * frame + t_obl + 30.0 * vat
    b_es = 23.0 * frame * muscle
    B_post = max(29.0 * frame + 2.0 * b_es - 3.0 * frame, 66.0 * frame)
    B_ant = 84.0 * frame + t_rect + 62.0 * vat
    body_w = 2.0 * (A + t_sat * (1.0 + sat_lat) + 2.5) * 1.04
    body_h = B_ant + B_post + t_sat * 2.0 + 5.0
    fov = acq.fov_factor * (max(body_w, body_h) * 1.10 + 20.0)
    bmi = float(np.clip(15.0 + 0.26 * t_sat + 7.0 * vat + 6.0 * (area - 0.75) + 2.0 * (frame - 1.0) * 10, 15.5, 55.0))

    # acquisition protocol comes from the scanning site's stream
    contrast = bool(rng_acq.random() < acq.p_contrast)
    if overrides.get("contrast") is not None:
        contrast = bool(overrides["contrast"])
    oral = bool(contrast and rng_acq.random() < 0.35)

    extras = dict(A=A, B_ant=B_ant, B_post=B_post, t_obl=t_obl, t_rect=t_rect, b_es=b_es, sat_lat=sat_lat)
    return _Subject(
        patient_id=f"phantom-{anatomy_site}-{index:04d}", index=index, site=site, anatomy_site=anatomy_site,
        sex=sex, age=round(age, 1), height_m=round(height, 3), bmi=round(bmi, 1), contrast=contrast,
        oral_contrast=oral, sarcopenic=sarcopenic, myosteatosis=myosteatosis, frame=frame, muscle=muscle,
        t_sat=t_sat, vat=vat, fov_mm=fov, body_width_mm=body_w, extras=extras,
    )


# ----------------------------------------------------------------------------------------------------------
# Rendering: structure map (labels) and clean HU
# ----------------------------------------------------------------------------------------------------------


def _render(sj: _Subject, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Paint the structure-code map and the noise-free HU image of one subject. Returns (codes, hu, spacing)."""
    e = sj.extras
    s, m = sj.frame, sj.muscle
    rng_hu, rng_tex = rng.spawn(2)   # HU / texture streams independent of how many shapes were drawn
    A, B_ant, B_post = e["A"], e["B_ant"], e["B_post"]
    sp = sj.fov_mm / size
    top = -(B_ant + 1.3 * sj.t_sat + 2.5)
    bottom = B_post + 0.5 * sj.t_sat + 1.0
    ty = -(top + bottom) / 2.0 + float(rng.normal(0.0, 4.0)) - 0.05 * sj.fov_mm
    tx = float(rng.normal(0.0, 5.0))
    rot = float(rng.normal(0.0, 0.035))
    g = _Grid(size, sp, tx, ty, rot)
    st = np.zeros((size, size), np.uint8)
    X, Y = g.X, g.Y

    # --- body outline, fascia and abdominal wall ---
    # Polar about the vertebral-body centre: angle t = 0 anterior midline, +pi/2 subject's left. Every
    # boundary is a radius r_b(t); the functions of t are tabulated on a fine 1D grid and gathered.
    nt = 4096
    t1 = (np.arange(nt, dtype=np.float64) + 0.5) * (2.0 * np.pi / nt) - np.pi
    c1, s1 = np.cos(t1), np.sin(t1)
    a1 = np.abs(t1)
    p_post = 2.6
    rho1 = np.where(c1 > 0, np.sqrt((s1 / A) ** 2 + (c1 / B_ant) ** 2),
                    ((np.abs(s1) / A) ** p_post + (np.abs(c1) / B_post) ** p_post) ** (1.0 / p_post))
    eps = _fourier(c1, s1, _coefs(rng, 0.035, 5)) - 0.05 * np.exp(-(((np.pi - a1) / 0.09) ** 2))  # + midline groove
    r_fascia = (1.0 + eps) / rho1
    f_sat = (1.0 + 0.28 * c1 + e["sat_lat"] * s1 * s1) * (1.0 + _fourier(c1, s1, _coefs(rng, 0.25, 4)))
    t_sat = np.maximum(sj.t_sat * f_sat, 3.0)
    # rectus abdominis (two lens-shaped bands either side of the linea alba)
    la = (4.0 + 4.0 * sj.vat + rng.uniform(0.0, 3.0)) / B_ant            # half-width of linea alba, rad
    w_rect = 68.0 * s * (0.85 + 0.15 * m) * rng.uniform(0.9, 1.1) / B_ant
    uu = (a1 - la) / w_rect
    t_rect = e["t_rect"] * 2.0 * np.sqrt(np.clip(uu * (1.0 - uu), 0.0, None))
    t_rect = t_rect * (1.0 + _fourier(c1, s1, _coefs(rng, 0.3, 4)))
    # obliques (external/internal oblique + transversus) as one curved lateral band
    o0 = la + w_rect + (8.0 + 4.0 * rng.random()) / B_ant
    o1 = 2.3 + rng.uniform(-0.08, 0.08)
    t_obl = (e["t_obl"] * _smoothstep(o0, o0 + 0.22, a1) * (1.0 - _smoothstep(o1 - 0.5, o1, a1))
             * (0.7 + 0.3 * _smoothstep(o0, o0 + 0.9, a1)))
    t_obl = t_obl * (1.0 + _fourier(c1, s1, _coefs(rng, 0.3, 4)))
    t_wall = np.maximum(t_obl, t_rect) + 2.5

    r = np.sqrt(X * X + Y * Y)
    it = ((np.arctan2(X, -Y) + np.float32(np.pi)) * np.float32(nt / (2.0 * np.pi))).astype(np.intp)
    np.clip(it, 0, nt - 1, out=it)
    d = r_fascia.astype(np.float32)[it] - r                # radial depth inside the muscle fascia, mm
    skin = np.float32(2.2)
    t_sat_px = t_sat.astype(np.float32)[it]
    body = d > -(t_sat_px + skin)
    st[body] = _SAT
    st[body & (d <= -t_sat_px)] = _SKIN
    fascia = d > 0
    st[fascia] = _IMAT
    # supine on the CT table: the table (image frame) flattens the posterior subcutaneous fat
    # (never into the muscle fascia: the table top stays below its lowest point)
    fx = tx + g.c * r_fascia * s1 + g.s * r_fascia * c1             # fascia outline in the image frame, mm
    fy = ty + g.s * r_fascia * s1 - g.c * r_fascia * c1 + fx * fx / 1800.0
    y_tab = max(ty + B_post + 0.5 * sj.t_sat + 1.0, float(fy.max()) + 1.0)
    curve = g.xi * g.xi / np.float32(2.0 * 900.0)
    yt = g.yi - (np.float32(y_tab) - curve)       # > 0 below the table top (a cradle of radius 900 mm)
    below = (yt > 0) & ~fascia
    st[below] = _AIR
    st[body & ~below & ~fascia & (yt > -skin)] = _SKIN
    full = (slice(None), slice(None))
    _paint(st, full, (yt > 0) & (yt < 26.0), _TABLE_CORE, _INTO_AIR)
    _paint(st, full, ((yt > 0) & (yt < 3.0)) | ((yt > 23.0) & (yt < 26.0)), _TABLE, _lut([_TABLE_CORE]))
    st[fascia & (d < t_obl.astype(np.float32)[it])] = _OBL
    st[fascia & (d < t_rect.astype(np.float32)[it])] = _RECT
    cavity = (d > t_wall.astype(np.float32)[it]) & (Y < np.float32(40.0 * s))
    st[cavity] = _VAT

    # --- organs (painted into fat only) ---
    solids: list = []
    for side, p_present in ((1, 0.85), (-1, 0.92)):
        k = rng.uniform(0.55, 1.0)
        present = rng.random() < p_present
        cx = side * (70.0 * s + rng.normal(0, 4))
        cy = 12.0 * s + rng.normal(0, 4)
        a, b = 24.0 * s * k, 16.0 * s * k ** 0.6
        ang, co = -side * 0.7 + rng.normal(0, 0.1), _coefs(rng, 0.06, 3)
        if not present:
            continue
        sl, rk = _shape(g, cx, cy, a, b, ang, co, solids=solids)
        if sl is not None:
            _paint(st, sl, rk < 1, _KCORTEX, _INTO_VAT)
            _paint(st, sl, rk < 1 - 5.0 / b, _KMED, _lut([_KCORTEX]))
            if k > 0.75:  # renal sinus fat at the hilum (medial)
                sl2, rs = _shape(g, cx - side * 0.45 * a, cy - 0.1 * b, 0.4 * a, 0.35 * b, -side * 0.7)
                _paint(st, sl2, rs < 1, _VAT, _lut([_KMED]))
    if rng.random() < 0.55:  # inferior tip of the right liver lobe (subject's right = image left)
        lf = rng.uniform(0.5, 1.0)
        sl, rl = _shape(g, -(A - 30.0), -22.0 * s + rng.normal(0, 6), 38.0 * lf, 48.0 * lf, rng.normal(0.3, 0.1),
                        _coefs(rng, 0.08, 4), solids=solids)
        _paint(st, sl, rl < 1, _LIVER, _INTO_VAT)

    # great vessels and mesenteric vessels
    r_ao = 9.0 * s * (1.0 + 0.004 * (sj.age - 50.0)) * rng.uniform(0.9, 1.1)
    ao = (7.0 * s + rng.normal(0, 2), -16.0 * s - r_ao - 3.0)
    sl, ra = _shape(g, ao[0], ao[1], r_ao, r_ao, solids=solids)
    _paint(st, sl, ra < 1, _AORTA)
    sl, ri = _shape(g, -21.0 * s + rng.normal(0, 2), -22.0 * s, 12.0 * s, 7.5 * s, 0.2, _coefs(rng, 0.08, 3),
                    solids=solids)
    _paint(st, sl, ri < 1, _IVC)
    y_mes = ao[1] - r_ao - 20.0 * s - rng.uniform(0, 10)
    for dx, rad in ((4.0, 3.5), (-8.0, 5.0)):
        sl, rv = _shape(g, dx * s, y_mes, rad, rad, solids=solids)
        _paint(st, sl, rv < 1, _VESSEL, _INTO_VAT)

    # --- posterior muscles ---
    a_ps, b_ps = 17.0 * s * m, 20.5 * s * m
    a_ql, b_ql = 21.0 * s * m, 9.0 * s * m
    a_es, b_es = 28.0 * s * m, e["b_es"]
    for side in (1, -1):
        sl, rq = _shape(g, side * (48.0 * s + 0.6 * a_ql), 33.0 * s, a_ql, b_ql, side * 0.4 + rng.normal(0, 0.08),
                        _coefs(rng, 0.08, 4), solids=solids)
        _paint(st, sl, rq < 1, _QL)
        sl, re = _shape(g, side * (4.5 * s + 0.95 * a_es), 29.0 * s + b_es, a_es, b_es, side * rng.normal(0, 0.05),
                        _coefs(rng, 0.06, 4), p=2.3, solids=solids)
        if sl is not None:
            _paint(st, sl, (re < 1) & (d[sl] > 0), _ES)
        sl, rp = _shape(g, side * (21.0 * s + 0.85 * a_ps), -3.0 * s, a_ps, b_ps, -side * 0.35 + rng.normal(0, 0.08),
                        _coefs(rng, 0.07, 4), solids=solids)
        _paint(st, sl, rp < 1, _PSOAS)

    # --- L3 vertebra ---
    bone_box = g.bbox(0.0, 30.0 * s, 70.0 * s)
    yc = 24.0 * s
    sl, rb = _shape(g, 0.0, 0.0, 23.0 * s, 16.0 * s, 0.0, _coefs(rng, 0.02, 3), p=2.4, solids=solids)
    _paint(st, sl, rb < 1, _BONE)
    sl, ra_ = _shape(g, 0.0, yc, 11.0 * s + 5.5, 7.5 * s + 5.5, solids=solids)
    _paint(st, sl, ra_ < 1, _BONE)
    sl, rsp = _shape(g, 0.0, yc + 7.5 * s + 16.0 * s, 3.5 * s, 17.0 * s, rng.normal(0, 0.03))
    _paint(st, sl, rsp < 1, _BONE)
    for side in (1, -1):
        sl, rf = _shape(g, side * 14.0 * s, yc + 6.5 * s, 5.5 * s, 6.0 * s)
        _paint(st, sl, rf < 1, _BONE)
        sl, rt = _shape(g, side * 30.0 * s, yc - 2.0 * s, 17.0 * s, 3.8 * s, side * 0.15 + rng.normal(0, 0.04))
        _paint(st, sl, rt < 1, _BONE)
    sl, rc = _shape(g, 0.0, yc, 11.0 * s, 7.5 * s, 0.0, None, p=2.2)
    _paint(st, sl, rc < 1, _CANAL)
    if bone_box is not None:  # cortical rim ~2 mm (at least one pixel; HU corrected for partial volume below)
        bone = st[bone_box] == _BONE
        it = max(1, int(round(2.0 / sp)))
        inner = ndimage.binary_erosion(bone, iterations=it)
        view = st[bone_box]
        view[bone & ~inner] = _CORTEX

    # --- bowel: colon and small-bowel loops (into visceral fat only) ---
    loops: list[tuple[float, float, float]] = []
    x_lim = A - e["t_obl"] - 12.0
    y_top = -(B_ant - e["t_rect"] - 12.0)
    colon = []
    if rng.random() < 0.8:
        colon.append((-(x_lim - 12.0), -5.0 * s + rng.normal(0, 8), rng.uniform(14, 21)))   # ascending
    if rng.random() < 0.8:
        colon.append((x_lim - 10.0, 12.0 * s + rng.normal(0, 8), rng.uniform(12, 18)))      # descending
    if rng.random() < 0.6:
        colon.append((rng.normal(0, 30), y_top * 0.75, rng.uniform(14, 22)))                # transverse
    # target loop area from the analytic cavity area (resolution independent)
    r_cav = np.minimum(r_fascia - t_wall, 40.0 * s / np.maximum(-c1, 1e-9))
    cav_area = float(0.5 * np.sum(np.clip(r_cav, 0.0, None) ** 2) * (2.0 * np.pi / nt))
    fill = float(np.clip(0.6 - 0.22 * sj.vat, 0.2, 0.6)) * cav_area
    n_c = len(colon)
    cx_all = np.concatenate([[c[0] for c in colon], rng.uniform(-x_lim, x_lim, 150)])
    cy_all = np.concatenate([[c[1] for c in colon], rng.uniform(y_top, 15.0 * s, 150)])
    rad_all = np.concatenate([[c[2] for c in colon], rng.uniform(8.0, 16.0, 150)])
    # a centre must lie in the cavity (analytic) and outside every solid organ / muscle / bone
    rr = np.hypot(cx_all, cy_all)
    ti = np.minimum(((np.arctan2(cx_all, -cy_all) + np.pi) * nt / (2.0 * np.pi)).astype(np.intp), nt - 1)
    ok = (r_fascia[ti] - rr > t_wall[ti]) & (cy_all < 40.0 * s)
    for sol in solids:
        ok &= _rho(cx_all, cy_all, *sol) >= 1.0
    filled = 0.0
    for q in range(len(cx_all)):
        cx, cy, rad, is_colon = float(cx_all[q]), float(cy_all[q]), float(rad_all[q]), q < n_c
        if not is_colon and filled >= fill:
            break
        if not ok[q] or any((cx - lx) ** 2 + (cy - ly) ** 2 < (0.75 * (rad + lr)) ** 2 for lx, ly, lr in loops):
            continue
        loops.append((cx, cy, rad))
        ecc, ang = rng.uniform(0.55, 1.0), rng.uniform(0, np.pi)
        kind = rng.choice(4, p=[0.2, 0.3, 0.25, 0.25] if is_colon else [0.15, 0.45, 0.3, 0.1])
        oral = rng.random() < 0.7
        lev = rng.uniform(-0.5, 0.5)
        filled += np.pi * rad * rad * ecc
        sl, rl = _shape(g, cx, cy, rad, rad * ecc, ang)
        if sl is None:
            continue
        fluid = _BORAL if (sj.oral_contrast and not is_colon and oral) else _BFLUID
        ylev = g.ty + g.s * cx + g.c * cy + lev * rad   # the air-fluid level's image row, mm
        bowel_loop(st[sl], rl, _INTO_VAT, rad, int(kind), (_BWALL, _BGAS, fluid, _BFECES),
                   lambda: np.broadcast_to(g.yi[sl[0]], rl.shape) < np.float32(ylev))

    # --- HU (noise-free, before site calibration) ---
    hu, tex_amp = _hu_tables(sj, rng_hu)
    tex = _unit_field(rng_tex, st.shape, 1.5 / sp)
    img = hu[st] + tex_amp[st] * tex
    # partial-volume-corrected cortical HU: the painted rim is >= 1 pixel, the real cortex ~2 mm
    cort = st == _CORTEX
    if cort.any():
        frac = min(1.0, 2.0 / (max(1, int(round(2.0 / sp))) * sp))
        img[cort] = hu[_BONE] + (img[cort] - hu[_BONE]) * np.float32(frac)
    # intramuscular fat speckle (myosteatosis; a little in everyone)
    frac_fat = np.zeros(_NCODES, np.float32)
    base = (0.07 + 0.04 * rng_hu.random()) if sj.myosteatosis else 0.012
    for code, mult in ((_ES, 1.4), (_QL, 1.0), (_PSOAS, 0.5), (_OBL, 1.0), (_RECT, 1.0)):
        frac_fat[code] = base * mult
    z = np.full(_NCODES, np.inf, np.float32)
    z[list(_MUSCLE_CODES)] = ndtri(1.0 - frac_fat[list(_MUSCLE_CODES)])
    speck = _unit_field(rng_tex, st.shape, 1.0 / sp) > z[st]
    img[speck] = np.float32(-75.0) + 8.0 * tex[speck]
    return st, img.astype(np.float32), sp


def _hu_tables(sj: _Subject, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-code base HU and texture amplitude for this subject (non-contrast or portal-venous contrast)."""
    hu = np.zeros(_NCODES, np.float32)
    amp = np.zeros(_NCODES, np.float32)
    c = sj.contrast
    muscle = rng.normal(28.0, 4.0) if sj.myosteatosis else rng.normal(44.0, 4.0)
    muscle += (7.0 if c else 0.0) - 0.05 * (sj.age - 50.0)
    hu[_AIR] = -1000.0
    hu[_TABLE], hu[_TABLE_CORE] = 120.0, -880.0
    hu[_SKIN] = 35.0
    hu[_SAT] = rng.normal(-102.0, 6.0)
    hu[_VAT] = rng.normal(-92.0, 6.0)
    hu[_IMAT] = rng.normal(-95.0, 5.0)
    for code, off in ((_ES, -2.0), (_QL, 0.0), (_PSOAS, 3.0), (_OBL, 0.0), (_RECT, 0.0)):
        hu[code] = muscle + off + rng.normal(0.0, 1.5)
    canc = float(np.clip(255.0 - 1.6 * (sj.age - 25.0) + rng.normal(0, 20), 100.0, 320.0))
    hu[_BONE] = canc
    hu[_CORTEX] = rng.uniform(700.0, 1000.0)
    hu[_CANAL] = rng.uniform(5.0, 25.0)
    hu[_LIVER] = rng.normal(110.0, 6.0) if c else rng.normal(60.0, 3.0)
    hu[_KCORTEX] = rng.normal(185.0, 15.0) if c else rng.normal(32.0, 3.0)
    hu[_KMED] = rng.normal(140.0, 15.0) if c else rng.normal(28.0, 3.0)
    hu[_AORTA] = rng.normal(190.0, 25.0) if c else rng.normal(42.0, 4.0)
    hu[_IVC] = rng.normal(140.0, 20.0) if c else rng.normal(40.0, 4.0)
    hu[_VESSEL] = hu[_AORTA] * 0.9
    hu[_BWALL] = 85.0 if c else 40.0
    hu[_BFLUID] = rng.uniform(5.0, 25.0)
    hu[_BGAS] = -990.0
    hu[_BFECES] = -180.0
    hu[_BORAL] = rng.uniform(220.0, 350.0)
    amp[:] = 3.0
    amp[[_AIR, _BGAS, _TABLE, _TABLE_CORE]] = 0.0
    amp[[_SAT, _VAT, _IMAT]] = 7.0
    amp[list(_MUSCLE_CODES)] = 5.0
    amp[_BONE] = 30.0
    amp[_CORTEX] = 60.0
    amp[_LIVER] = 4.0
    amp[_BFECES] = 260.0
    return hu, amp


# ----------------------------------------------------------------------------------------------------------
# Acquisition: blur, calibration, correlated noise
# ----------------------------------------------------------------------------------------------------------


def _acquire(hu: np.ndarray, sp: float, prof: SiteProfile, body_width_mm: float,
             rng: np.random.Generator) -> np.ndarray:
    """Apply the site's reconstruction blur, HU calibration and correlated noise; integer HU, float32."""
    img = hu
    if prof.blur_mm / sp > 0.1:
        img = ndimage.gaussian_filter(img, prof.blur_mm / sp, mode="nearest", truncate=3.0)
    if prof.hu_scale != 1.0 or prof.hu_offset != 0.0:
        w = np.clip((img + np.float32(1000.0)) / np.float32(900.0), 0.0, 1.0)   # 0 at air, 1 from -100 HU up
        img = img + w * (np.float32(prof.hu_scale - 1.0) * img + np.float32(prof.hu_offset))
    sd = prof.noise_sd * float(np.clip(body_width_mm / 330.0, 0.7, 1.8)) ** 1.2
    img = img + np.float32(sd) * _unit_field(rng, img.shape, prof.noise_corr_mm / sp)
    return np.rint(np.clip(img, HU_MIN, HU_MAX)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


def generate_phantom(n: int, size: int = 128, site: str = "a", seed: int = 0, start: int = 0, *,
                     anatomy_site: str | None = None, sarcopenic: bool | None = None,
                     myosteatosis: bool | None = None, contrast: bool | None = None) -> Phantom:
    """Generate subjects ``start .. start+n-1`` of ``site`` as ``size`` x ``size`` axial L3 slices.

    Images are float32 HU (integer-valued), labels uint8, spacing (row, col) mm = FOV / size (the anatomy
    is in mm, so ``size`` changes only the sampling). Subject ``i`` depends only on ``(seed, site, i)``.
    ``anatomy_site`` draws the subjects from another site's population / seed stream while imaging them
    with ``site``'s scanner (travelling subjects). ``sarcopenic`` / ``myosteatosis`` / ``contrast`` force
    those flags (everything else about each subject stays the same).
    """
    prof = get_site(site)
    anatomy_site = site if anatomy_site is None else anatomy_site
    get_site(anatomy_site)
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
    if size < 32:
        raise ValueError(f"phantom size must be >= 32 pixels, got {size}")
    overrides = dict(sarcopenic=sarcopenic, myosteatosis=myosteatosis, contrast=contrast)
    images = np.empty((n, size, size), np.float32)
    labels = {name: np.empty((n, size, size), np.uint8) for name in LABEL_MAPS}
    spacing = np.empty((n, 2), np.float64)
    rows = []
    si, ai = _site_index(site), _site_index(anatomy_site)
    for k in range(n):
        i = start + k
        rng = np.random.default_rng(np.random.SeedSequence([seed, ai, i]))
        rng_acq = np.random.default_rng(np.random.SeedSequence([seed, si, i, 1]))
        sj = _sample_subject(rng, rng_acq, i, site, anatomy_site, overrides)
        st, hu, sp = _render(sj, size, rng)
        images[k] = _acquire(hu, sp, prof, sj.body_width_mm, rng_acq)
        muscles = _MUSCLES_LUT[st]
        labels["muscles"][k] = muscles
        labels["muscle"][k] = muscles > 0
        labels["tissue"][k] = _TISSUE_LUT[st]
        spacing[k] = (sp, sp)
        rows.append(_meta_row(sj, st, muscles, hu, sp, size))
    meta = pd.DataFrame(rows, columns=list(META_COLUMNS))
    return Phantom(images, labels, spacing, meta)


def _meta_row(sj: _Subject, st: np.ndarray, muscles: np.ndarray, hu: np.ndarray, sp: float, size: int) -> dict:
    px_cm2 = sp * sp / 100.0
    counts = np.bincount(muscles.ravel(), minlength=len(MUSCLE_NAMES))
    tissue_counts = np.bincount(_TISSUE_LUT[st].ravel(), minlength=len(TISSUE_NAMES))
    sma = float(counts[1:].sum() * px_cm2)
    mhu = float(hu[muscles > 0].mean()) if counts[1:].sum() else float("nan")
    weight = sj.bmi * sj.height_m ** 2
    row = dict(
        case_id=sj.patient_id, patient_id=sj.patient_id, index=sj.index, site=sj.site, anatomy_site=sj.anatomy_site,
        sex=sj.sex, age=sj.age, height_m=sj.height_m, weight_kg=round(weight, 1), bmi=sj.bmi,
        contrast=sj.contrast, oral_contrast=sj.oral_contrast, sarcopenic=sj.sarcopenic,
        myosteatosis=sj.myosteatosis, spacing_row_mm=sp, spacing_col_mm=sp, slice_thickness_mm=SLICE_THICKNESS_MM,
        fov_mm=sj.fov_mm, size=size, sma_cm2=sma, smi_cm2_m2=sma / sj.height_m ** 2, muscle_hu_true=mhu,
        sat_area_cm2=float(tissue_counts[2] * px_cm2), vat_area_cm2=float(tissue_counts[3] * px_cm2),
        sat_thickness_mm=round(sj.t_sat, 2),
    )
    for j, name in enumerate(MUSCLE_NAMES[1:], start=1):
        row[f"area_{name}_cm2"] = float(counts[j] * px_cm2)
    return row


# ----------------------------------------------------------------------------------------------------------
# Simulated observers
# ----------------------------------------------------------------------------------------------------------


def observer_masks(label: np.ndarray, spacing_mm: float | Sequence[float], n_observers: int,
                   seed: int | Sequence[int] = 0, *, sd_mm: tuple[float, float] = (0.4, 1.5),
                   corr_mm: float = 15.0, bias_sd_mm: float = 0.3) -> np.ndarray:
    """Simulated human contours of a 2D label map (binary or multi-class), ``(n_observers, H, W)`` uint8.

    Each observer moves every boundary by a smooth random displacement field (Gaussian-correlated over
    ``corr_mm``; its standard deviation drawn uniformly from ``sd_mm`` mm) plus a systematic bias (tighter or
    looser contouring, N(0, ``bias_sd_mm``) mm), applied to each class's signed distance map in mm; where
    classes compete the largest perturbed distance wins. Observer ``j`` depends only on ``(seed, j)``; pass a
    different seed per image (e.g. ``(seed, case_index)``).
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"observer_masks expects one 2D label map, got shape {label.shape}")
    sp = np.broadcast_to(np.asarray(spacing_mm, float), (2,))
    seed_seq = [int(v) for v in np.atleast_1d(seed)]
    classes = [int(c) for c in np.unique(label) if c != 0]
    half = 0.5 * float(sp.min())
    sdfs = []
    for c in classes:
        mk = label == c
        d_in = ndimage.distance_transform_edt(mk, sampling=sp)
        d_out = ndimage.distance_transform_edt(~mk, sampling=sp)
        sdf = np.where(mk, d_in - half, half - d_out).astype(np.float32)
        # a light smoothing turns the staircase of pixel edges into the smooth contour a reader would draw,
        # so sub-pixel displacements change some pixels
        sdfs.append(ndimage.gaussian_filter(sdf, 0.7, mode="nearest"))
    out = np.zeros((n_observers, *label.shape), np.uint8)
    for j in range(n_observers):
        rng = np.random.default_rng(np.random.SeedSequence([*seed_seq, j]))
        sd = rng.uniform(*sd_mm)
        bias = rng.normal(0.0, bias_sd_mm)
        field = _unit_field(rng, label.shape, corr_mm / float(sp.mean()))
        delta = np.float32(bias) + np.float32(sd) * field
        if not classes:
            continue
        scores = np.stack([f + delta for f in sdfs])
        best = scores.argmax(0)
        win = np.take_along_axis(scores, best[None], 0)[0] > 0
        out[j] = np.where(win, np.asarray(classes, np.uint8)[best], 0)
    return out


# ----------------------------------------------------------------------------------------------------------
# NIfTI export
# ----------------------------------------------------------------------------------------------------------

_OUTPUT_DIRS = {"images": None, "masks": "muscle", "masks_muscles": "muscles", "masks_tissue": "tissue"}


def slice_affine(spacing: Sequence[float], thickness_mm: float = SLICE_THICKNESS_MM) -> np.ndarray:
    """NIfTI affine for a slice stored as ``(W, H, 1)`` = ``image.T[..., None]``: voxel axis 0 runs along the
    image columns towards the subject's left, axis 1 along the rows towards posterior (axis codes L, P, S)."""
    sr, sc = float(spacing[0]), float(spacing[1])
    return np.diag([-sc, -sr, float(thickness_mm), 1.0])


def save_nifti_slice(path: str | Path, array: np.ndarray, spacing: Sequence[float], dtype=np.int16) -> Path:
    """Write one ``(H, W)`` slice (row, col spacing in mm) as NIfTI ``(W, H, 1)`` (see :func:`slice_affine`)."""
    import nibabel as nib

    data = np.ascontiguousarray(np.asarray(array).T[..., None]).astype(dtype)
    img = nib.Nifti1Image(data, slice_affine(spacing))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))
    return Path(path)


def load_nifti_slice(path: str | Path) -> tuple[np.ndarray, tuple[float, float]]:
    """Read a slice written by :func:`save_nifti_slice`: ``(H, W)`` array and (row, col) spacing in mm."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.ndim == 3:
        data = data[..., 0]
    zooms = img.header.get_zooms()
    return np.ascontiguousarray(data.T), (float(zooms[1]), float(zooms[0]))


def write_phantom_dataset(out_dir: str | Path, n: int, size: int = 128, site: str = "a", seed: int = 0,
                          chunk: int = 64) -> Path:
    """Write ``n`` phantom subjects of ``site`` as NIfTI pairs under ``out_dir`` and return ``out_dir``.

    Layout: ``images/<case_id>.nii.gz`` (int16 HU), ``masks/<case_id>.nii.gz`` (uint8 binary muscle),
    ``masks_muscles/`` and ``masks_tissue/`` (uint8 multi-class), ``meta.csv`` (one row per case, ``id`` =
    ``case_id`` first) and ``phantom.json`` (parameters, site profile, label names, axis convention). Each
    volume is ``(W, H, 1)`` with spacing on the affine diagonal (see :func:`slice_affine`);
    :func:`load_nifti_slice` returns the ``(H, W)`` array and (row, col) spacing. ``out_dir`` must not exist
    or be empty (never overwrites); the set is built in a temporary sibling directory and renamed into place.
    """
    get_site(site)
    with new_directory(out_dir, "phantom dataset") as tmp:
        for sub in _OUTPUT_DIRS:
            (tmp / sub).mkdir()
        metas = []
        for start in range(0, n, chunk):
            ph = generate_phantom(min(chunk, n - start), size=size, site=site, seed=seed, start=start)
            for k, case in enumerate(ph.meta["case_id"]):
                spc = ph.spacing[k]
                save_nifti_slice(tmp / "images" / f"{case}.nii.gz", ph.images[k], spc, np.int16)
                for sub, key in _OUTPUT_DIRS.items():
                    if key is not None:
                        save_nifti_slice(tmp / sub / f"{case}.nii.gz", ph.labels[key][k], spc, np.uint8)
            metas.append(ph.meta)
        meta = pd.concat(metas, ignore_index=True) if metas else pd.DataFrame(columns=list(META_COLUMNS))
        meta.insert(0, "id", meta["case_id"])
        meta.to_csv(tmp / "meta.csv", index=False)
        info = dict(generator="musclelab.phantoms.l3", n=n, size=size, site=site, seed=seed,
                    site_profile=asdict(SITES[site]), labels={k: list(v) for k, v in LABEL_MAPS.items()},
                    mask_dirs={k: v for k, v in _OUTPUT_DIRS.items() if v},
                    slice_thickness_mm=SLICE_THICKNESS_MM,
                    axis_convention="voxel array (W, H, 1) = image.T[..., None]; axis 0 -> subject left, "
                                    "axis 1 -> posterior; affine diag(-col_mm, -row_mm, thickness, 1)")
        (tmp / "phantom.json").write_text(json.dumps(info, indent=2) + "\n")
    return Path(out_dir)
