"""Built-in synthetic hip-to-knee CT phantom with 30 labelled classes (Kim et al. 2024, thigh muscles).

Why our own: no public phantom labels 27 individual thigh/hip muscles; this seeded generator lets the 3D volume
path, its tests and the Kim 2024 smoke study run without patient data (see :mod:`musclelab.phantoms.primitives`).

Classes (:data:`CLASS_NAMES`, 30): 0 background, 1 femur, 2 iliac, then 27 muscles in the paper's 5 groups
(:data:`GROUPS`): anterior (sartorius, rectus femoris, vastus lateralis / intermedius / medialis), medial
(adductor longus / brevis / magnus, gracilis, pectineus), posterior (semitendinosus, semimembranosus, biceps
femoris), gluteal (gluteus maximus / medius / minimus, tensor fasciae latae, piriformis, obturator internus /
externus, quadratus femoris) and other (iliacus, iliopsoas, psoas, abdominal oblique, multifidus, rectus
abdominis). Left and right share a label.

Anatomy (mm; volume ``(Z, H, W)``, z increasing superior from just above the knee to the iliac crest, rows
posterior, the subject's left on the image right — the project's LPS convention): both thighs with skin and
subcutaneous fat; per side a muscle compartment (an ellipse around the femur that widens from knee to hip) is
split among the muscles present at each level by a *weighted Voronoi diagram* (distance to a muscle's
seed divided by its radius) of per-muscle seeds (each muscle a tube from
origin to insertion, seed position and size changing along the leg), so neighbouring muscles touch along smooth
boundaries and every muscle keeps the region around its seed; a thin intermuscular fat plane (``fat_plane_mm``) separates them — painted as fat where the voxels
resolve it, blended into the boundary voxels' HU (partial volume) where they do not. The femur (shaft with cortex
and marrow, condyles, neck, head, greater trochanter) and the iliac bone (acetabular rim and wing) are painted
over the muscles.

Subject variation and metadata (built-in relation, so correlation analyses have a known answer):

* sex (50 % female), height (M ~ N(1.70, 0.07) m, F ~ N(1.57, 0.06) m), frame = height / 1.65;
* muscle index ``smi_kg_m2`` (appendicular skeletal muscle mass / height², the AWGS 2019 measure) ~ N(7.1, 0.9)
  for men, N(5.6, 0.8) for women; ``sarcopenic`` = SMI below the AWGS 2019 cut-off (7.0 men, 5.4 women);
* the muscle compartments' cross-section scales with ``smi * height`` (length scales with height), so the total
  muscle volume is proportional to ``smi_kg_m2 * height_m**2``: **every muscle's volume / height² is
  proportional to SMI** up to a per-muscle, per-subject factor ``exp(N(0, muscle_sd))`` (default 0.08) and the
  sampling, hence negatively correlated with the sarcopenia flag within each sex (measured on 60 subjects at the
  default size: r(total / height², SMI) = 0.999; point-biserial r with the flag about -0.73 for the total muscle
  volume and -0.5 to -0.7 for single muscles);
* ``fat_infiltration`` in [0, 1] lowers muscle HU (by up to 25 HU) and adds intramuscular fat speckle;
  subcutaneous fat thickness 6-30 mm.

Two raters (:attr:`ThighVolume.raters`): the truth label warped by smooth random in-plane displacements of
``rater_sd_mm`` (default 1.5 mm) SD per rater, so they differ at boundaries only.

Sizes: ``size`` pixels in-plane (FOV = body width x 1.1, so spacing = FOV / size) and ``n_slices`` slices (or
``slice_thickness_mm``); the CPU default is 64 x 64 x 48 (seconds); ``size=512, slice_thickness_mm=1.0`` gives
realistic 512² x ~550 volumes. Subject ``i`` depends only on ``(seed, i)``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from musclelab.io import new_directory
from musclelab.phantoms import primitives as P

# ------------------------------------------------------------------------------------------------------------
# Classes
# ------------------------------------------------------------------------------------------------------------

GROUPS: dict[str, tuple[str, ...]] = {
    "anterior": ("sartorius", "rectus_femoris", "vastus_lateralis", "vastus_intermedius", "vastus_medialis"),
    "medial": ("adductor_longus", "adductor_brevis", "adductor_magnus", "gracilis", "pectineus"),
    "posterior": ("semitendinosus", "semimembranosus", "biceps_femoris"),
    "gluteal": ("gluteus_maximus", "gluteus_medius", "gluteus_minimus", "tensor_fasciae_latae", "piriformis",
                "obturator_internus", "obturator_externus", "quadratus_femoris"),
    "other": ("iliacus", "iliopsoas", "psoas", "abdominal_oblique", "multifidus", "rectus_abdominis"),
}
MUSCLE_NAMES: tuple[str, ...] = tuple(m for g in GROUPS.values() for m in g)
CLASS_NAMES: tuple[str, ...] = ("background", "femur", "iliac", *MUSCLE_NAMES)
MUSCLE_GROUP: dict[str, str] = {m: g for g, ms in GROUPS.items() for m in ms}
FEMUR, ILIAC = 1, 2
AWGS2019_CUTOFF = {"M": 7.0, "F": 5.4}   # kg/m², appendicular skeletal muscle mass / height² (DXA)
SMI_MEAN = {"M": 7.1, "F": 5.6}   # a hip-fracture-like cohort: about 40 % sarcopenic (the paper: 41 of 69)
SMI_SD = {"M": 0.9, "F": 0.8}

# muscle -> (theta deg: 0 anterior, +90 lateral, -90 medial, ±180 posterior; radial position in the compartment
#            (1 = its outline); z extent as fractions of the femur length from the knee; relative size)
_SEEDS: dict[str, tuple[float, float, float, float, float]] = {
    "sartorius": (50.0, 0.86, 0.04, 1.12, 0.26),
    "rectus_femoris": (5.0, 0.62, 0.15, 1.05, 0.42),
    "vastus_lateralis": (80.0, 0.6, 0.08, 0.92, 0.58),
    "vastus_intermedius": (25.0, 0.3, 0.1, 0.86, 0.42),
    "vastus_medialis": (-45.0, 0.55, 0.02, 0.75, 0.5),
    "adductor_longus": (-85.0, 0.6, 0.45, 0.98, 0.4),
    "adductor_brevis": (-105.0, 0.32, 0.6, 0.98, 0.34),
    "adductor_magnus": (-140.0, 0.5, 0.12, 0.95, 0.58),
    "gracilis": (-110.0, 0.88, 0.02, 0.98, 0.26),
    "pectineus": (-60.0, 0.5, 0.84, 1.03, 0.34),
    "semitendinosus": (-168.0, 0.78, 0.04, 0.92, 0.34),
    "semimembranosus": (-150.0, 0.62, 0.02, 0.85, 0.4),
    "biceps_femoris": (158.0, 0.66, 0.04, 0.9, 0.44),
    "gluteus_maximus": (165.0, 0.8, 0.8, 1.3, 0.7),
    "gluteus_medius": (118.0, 0.74, 1.02, 1.33, 0.5),
    "gluteus_minimus": (100.0, 0.42, 1.02, 1.25, 0.3),
    "tensor_fasciae_latae": (62.0, 0.88, 0.84, 1.1, 0.24),
    "piriformis": (-170.0, 0.5, 1.0, 1.16, 0.34),
    "obturator_internus": (-150.0, 0.28, 0.94, 1.06, 0.24),
    "obturator_externus": (-118.0, 0.3, 0.89, 0.99, 0.24),
    "quadratus_femoris": (-172.0, 0.36, 0.86, 0.96, 0.24),
    "iliacus": (-35.0, 0.38, 0.98, 1.3, 0.34),
    "iliopsoas": (-55.0, 0.45, 0.84, 1.0, 0.34),
    "psoas": (-75.0, 0.62, 1.04, 1.34, 0.34),
    "abdominal_oblique": (78.0, 0.92, 1.18, 1.34, 0.26),
    "multifidus": (-158.0, 0.9, 1.14, 1.34, 0.28),
    "rectus_abdominis": (-25.0, 0.92, 1.14, 1.34, 0.26),
}
_COVER = 1.75          # Voronoi radii relative to the seed sizes (how much of a compartment muscles fill)
_TOP = 1.34            # top of the volume (iliac crest) in femur lengths above the knee
_FEMUR_FRACTION = 0.26  # femur length / height

# HU of the tissues (before acquisition)
_HU = dict(air=-1000.0, skin=30.0, sat=-100.0, imat=-90.0, muscle=48.0, cortex=900.0, marrow=40.0,
           cancellous=220.0, pelvis=30.0)

SITE = P.SiteEffects(blur_mm=0.8, blur_z_mm=0.5, noise_sd=12.0, noise_corr_mm=1.0)


@dataclass
class ThighVolume:
    """One phantom volume: ``image`` float32 ``(Z, H, W)`` integer HU, ``label`` uint8 (:data:`CLASS_NAMES`),
    ``spacing`` (z, row, col) mm, ``meta`` (height, sex, SMI, sarcopenia, true volumes ...), ``raters`` rater name
    -> uint8 label map of the same shape."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    meta: dict
    raters: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class _Subject:
    sex: str
    age: float
    height_m: float
    smi: float
    fat_infiltration: float
    t_sat: float
    frame: float
    scale: float                 # linear scale of the muscle compartments
    seeds: dict[str, tuple[float, float, float]]   # muscle -> (theta rad, radial position, size)


def _subject(rng: np.random.Generator) -> _Subject:
    sex = "F" if rng.random() < 0.5 else "M"
    height = float(np.clip(rng.normal(1.70 if sex == "M" else 1.57, 0.07 if sex == "M" else 0.06), 1.4, 1.95))
    smi = float(np.clip(rng.normal(SMI_MEAN[sex], SMI_SD[sex]), 3.5, 10.5))
    fat_inf = float(np.clip(rng.beta(2.0, 5.0) + 0.15 * (smi < AWGS2019_CUTOFF[sex]), 0.0, 1.0))
    t_sat = float(np.clip(rng.normal(16.0 if sex == "F" else 11.0, 5.0), 6.0, 30.0))
    frame = height / 1.65
    # compartment half-axes = frame * scale * profile, so cross-section area ∝ frame² * scale² = smi * frame
    # (∝ smi * height) and, with the length ∝ height, muscle volume ∝ smi * height²
    scale = float(np.sqrt(smi / (0.5 * (SMI_MEAN["M"] + SMI_MEAN["F"]) * frame)))
    seeds = {}
    for m, (theta, rad, _, _, size) in _SEEDS.items():
        seeds[m] = (np.deg2rad(theta + rng.normal(0.0, 5.0)), float(np.clip(rad + rng.normal(0.0, 0.03), 0.1, 0.95)),
                    size)
    return _Subject(sex, float(rng.uniform(55, 90)), height, smi, fat_inf, t_sat, frame, scale, seeds)


def _compartment(sj: _Subject, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-slice compartment of the right leg at fractions ``t`` of the femur length: centre x (mm, towards the
    subject's right is negative), centre y, half-axes a (left-right), b (antero-posterior)."""
    s = sj.scale
    a = sj.frame * s * P.profile(t, [0.0, 0.15, 0.6, 0.95, 1.15, _TOP], [40, 52, 66, 80, 88, 90])
    b = sj.frame * s * P.profile(t, [0.0, 0.15, 0.6, 0.95, 1.15, _TOP], [40, 50, 60, 70, 76, 78])
    cx = -sj.frame * P.profile(t, [0.0, 0.6, 1.0, _TOP], [80, 90, 92, 82]) - 0.4 * sj.t_sat
    cy = sj.frame * P.profile(t, [0.0, 1.0, _TOP], [0.0, 5.0, 15.0])
    return cx, cy, a, b


def _muscle_sizes(t: np.ndarray, z0: float, z1: float, size: float) -> np.ndarray:
    """A muscle's Voronoi radius along the leg: a bell from origin to insertion (0 outside)."""
    u = (t - z0) / (z1 - z0)
    w = size * np.sqrt(np.clip(np.sin(np.pi * np.clip(u, 0, 1)), 0, None)) * (0.55 + 0.45 * np.clip(u * 3, 0, 1))
    return np.where((u >= 0) & (u <= 1), np.maximum(w, 0.12 * size), 0.0).astype(np.float32)


def _render(sj: _Subject, rng: np.random.Generator, size: int, n_slices: int | None,
            thickness: float | None, fat_plane_mm: float) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float],
                                                                  dict]:
    lf = _FEMUR_FRACTION * sj.height_m * 1000.0
    length = lf * _TOP
    if thickness is None:
        thickness = length / int(n_slices or 48)
    nz = int(np.ceil(length / thickness))
    z = P.z_centres(nz, thickness)
    t = z / lf
    cx, cy, a, b = _compartment(sj, t)
    half_width = float(np.max(-cx + a)) + sj.t_sat + 4.0
    fov = 2.2 * half_width
    sp = fov / size
    g = P.Grid(size, sp, shift=(0.0, 8.0))
    label = np.zeros((nz, size, size), np.uint8)
    hu = np.full((nz, size, size), _HU["air"], np.float32)
    names = list(MUSCLE_NAMES)
    widths = np.stack([_muscle_sizes(t, _SEEDS[m][2], _SEEDS[m][3], sj.seeds[m][2]) for m in names])   # (K, Z)
    muscle_sd = 0.08
    gk = np.exp(rng.normal(0.0, muscle_sd, len(names))).astype(np.float32)[:, None]
    widths = _COVER * widths * np.sqrt(gk)
    th = np.array([sj.seeds[m][0] for m in names], np.float32)
    rad = np.array([sj.seeds[m][1] for m in names], np.float32)
    # sartorius spirals from lateral (top) to medial (knee)
    i_sart = names.index("sartorius")
    ux_all = np.repeat((rad * np.sin(th))[:, None], nz, 1)
    uy_all = np.repeat((-rad * np.cos(th))[:, None], nz, 1)
    spiral = np.deg2rad(P.profile(t, [0.0, 0.5, 1.1], [-120.0, -40.0, 50.0]))
    ux_all[i_sart], uy_all[i_sart] = rad[i_sart] * np.sin(spiral), -rad[i_sart] * np.cos(spiral)
    X, Y = g.X, g.Y
    body = np.zeros((nz, size, size), bool)
    for side in (-1.0, 1.0):   # -1: subject's right (image left), +1: subject's left
        for k in range(nz):
            ccx, ccy, aa, bb = side * cx[k], cy[k], a[k], b[k]
            u = side * (X - ccx) / aa   # mirrored so +u is lateral on both sides
            v = (Y - ccy) / bb
            r2 = u * u + v * v
            comp = r2 < 1.0
            outer = ((X - ccx) / (aa + sj.t_sat)) ** 2 + ((Y - ccy) / (bb + sj.t_sat)) ** 2 < 1.0
            body[k] |= outer
            w = widths[:, k]
            act = np.flatnonzero(w > 0)
            if act.size:
                # lateral is +u: seeds use +sin(theta) towards lateral
                # multiplicatively weighted Voronoi: distance to the seed / the muscle's radius
                cost = np.sqrt((u[None] - ux_all[act, k, None, None]) ** 2
                               + (v[None] - uy_all[act, k, None, None]) ** 2) / w[act][:, None, None]
                best = np.argmin(cost, axis=0)
                covered = np.take_along_axis(cost, best[None], 0)[0] < 1.0
                lab = np.where(comp & covered, (act[best] + 3).astype(np.uint8), 0).astype(np.uint8)
                label[k] = np.where(lab > 0, lab, label[k])
            comp_all = comp
            hu[k][comp_all & (label[k] == 0)] = _HU["imat"]
    # pelvis bridge between the legs at the top (soft tissue, background label)
    top = t > 0.95
    if top.any():
        bridge = ((X / (0.9 * np.abs(cx[top]).min() + 1e-3)) ** 2 + ((Y - 10) / (0.8 * b[top].mean())) ** 2) < 1.0
        body[top] |= bridge[None]
    # tissue HU: SAT in the body, muscle where labelled
    hu[body & (hu == _HU["air"])] = _HU["sat"]
    inner = ndimage.binary_erosion(body, structure=np.ones((1, 3, 3), bool), iterations=max(1, int(round(2.0 / sp))))
    hu[body & ~inner] = _HU["skin"]
    if top.any():
        bridge_soft = np.zeros_like(body)
        bridge_soft[top] = bridge[None] & (label[top] == 0)
        hu[bridge_soft & inner] = _HU["pelvis"]
    muscle_hu = _HU["muscle"] - 25.0 * sj.fat_infiltration + rng.normal(0, 3)
    is_muscle = label >= 3
    hu[is_muscle] = muscle_hu
    # bones over muscles
    st = np.zeros((nz, size, size), np.uint8)   # 1 cortex, 2 marrow, 3 cancellous (femur); 4 iliac cortex, 5 iliac
    for side in (-1.0, 1.0):
        fx = side * (-cx - 0.12 * a)            # femur slightly lateral of the compartment centre
        fy = cy - 0.05 * b
        r_shaft = sj.frame * P.profile(t, [0.0, 0.06, 0.15, 0.8, 0.9, 1.0], [30, 22, 13, 14, 17, 0])
        r_shaft = np.where(t <= 0.92, r_shaft, 0.0)
        blk, rho = P.tube(g, z, P.z_range(z, 0.0, 0.92 * lf), fx[t <= 0.92], fy[t <= 0.92], r_shaft[t <= 0.92],
                          r_shaft[t <= 0.92])
        if blk is not None:
            P.paint(st, blk, rho < 1.0, 1)
            rr = r_shaft[t <= 0.92][:, None, None]
            inner_r = np.where(rr > 20, 0.9, 0.62)
            P.paint(st, blk, rho < inner_r, 3 if False else 2)
            knee = (z[blk[0]] < 0.12 * lf)[:, None, None]
            P.paint(st, blk, (rho < inner_r) & knee, 3)
        # neck and head (medial and up), greater trochanter (lateral)
        k_neck = int(np.argmin(np.abs(t - 0.9)))
        hx = fx[k_neck] - side * 42.0 * sj.frame
        blk, msk = P.capsule(g, z, (fx[k_neck], fy[k_neck], 0.88 * lf), (hx, fy[k_neck] - 4, 0.97 * lf),
                             11.0 * sj.frame, 13.0 * sj.frame)
        P.paint(st, blk, msk, 3)
        blk, rho = P.ellipsoid(g, z, (hx, fy[k_neck] - 4, 0.98 * lf), (22 * sj.frame,) * 3)
        P.paint(st, blk, rho < 1.0, 1)
        P.paint(st, blk, rho < 0.85, 3)
        blk, rho = P.ellipsoid(g, z, (fx[k_neck] + side * 14 * sj.frame, fy[k_neck] + 6, 0.9 * lf),
                               (16 * sj.frame, 18 * sj.frame, 26 * sj.frame))
        P.paint(st, blk, rho < 1.0, 1)
        P.paint(st, blk, rho < 0.8, 3)
        # iliac: acetabular rim around the head, then the wing (a thin tilted plate) up to the crest
        blk, rho = P.ellipsoid(g, z, (hx - side * 6, fy[k_neck] - 2, 1.0 * lf), (30 * sj.frame,) * 3)
        P.paint(st, blk, (rho < 1.0) & (rho > 0.8), 4, into=P.lut(6, [0]))
        zw = P.z_range(z, 1.02 * lf, _TOP * lf)
        if zw is not None:
            tw = (z[zw] / lf - 1.02) / (_TOP - 1.02)
            half_a = sj.frame * (25 + 35 * np.sqrt(np.clip(tw, 0, 1)))
            wx = side * sj.frame * (70 + 15 * tw)
            # the wing runs from the anterior superior spine (lateral, anterior) to the sacroiliac joint
            blk, rho = P.tube(g, z, zw, wx, 5.0 + 10 * tw, half_a, 6.0 * sj.frame * np.ones_like(tw),
                              angle=np.deg2rad(48.0 if side < 0 else 132.0))
            P.paint(st, blk, rho < 1.0, 4)
            P.paint(st, blk, rho < 0.5, 5)
    bone = st > 0
    label[st >= 1] = np.where(st[st >= 1] >= 4, ILIAC, FEMUR)
    hu[st == 1] = _HU["cortex"]
    hu[st == 2] = _HU["marrow"]
    hu[st == 3] = _HU["cancellous"]
    hu[st == 4] = _HU["cortex"] - 150.0
    hu[st == 5] = _HU["cancellous"]
    # intermuscular fat planes between touching muscles (labels >= 3)
    muscles_only = np.where(label >= 3, label, 0)
    spacing = (float(thickness), sp, sp)
    if fat_plane_mm > 0:
        if fat_plane_mm >= 2.0 * sp:   # resolved: paint fat, the voxels leave the muscle labels
            plane = P.fat_planes(muscles_only, fat_plane_mm, (np.inf, sp, sp))
            label[plane] = 0
            hu[plane] = _HU["imat"]
        else:                          # unresolved: partial volume in the boundary voxels
            edge = P.fat_planes(muscles_only, 2.0 * sp, (np.inf, sp, sp))
            f = np.float32(min(1.0, fat_plane_mm / (2.0 * sp)))
            hu[edge] = (1 - f) * hu[edge] + f * _HU["imat"]
    # intramuscular fat speckle (myosteatosis)
    if sj.fat_infiltration > 0.05:
        speck = P.random_field(rng, hu.shape, (0.0, 1.5 / sp, 1.5 / sp)) > 2.2 - 1.2 * sj.fat_infiltration
        sel = speck & (label >= 3)
        hu[sel] = 0.5 * (hu[sel] + _HU["imat"])
    tex = P.random_field(rng, hu.shape, (0.0, 2.0 / sp, 2.0 / sp))
    hu += np.where(label >= 3, 4.0, np.where(bone, 25.0, 6.0)).astype(np.float32) * tex * (hu > -500)
    del bone
    vox_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(label.ravel(), minlength=len(CLASS_NAMES))
    vols = {f"vol_{n}_ml": round(float(counts[i] * vox_ml), 3) for i, n in enumerate(CLASS_NAMES) if i > 0}
    info = dict(length_mm=round(length, 1), femur_length_mm=round(lf, 1), fov_mm=round(fov, 1), n_slices=nz, size=size,
                spacing_z_mm=round(float(thickness), 4), spacing_row_mm=round(sp, 4), spacing_col_mm=round(sp, 4),
                **vols)
    return hu, label, spacing, info


def _rater(label: np.ndarray, spacing: Sequence[float], sd_mm: float, rng: np.random.Generator) -> np.ndarray:
    """``label`` warped by a smooth random in-plane displacement field of ``sd_mm`` SD (boundaries move, nearest)."""
    if sd_mm <= 0:
        return label.copy()
    sz, sr, sc = spacing
    corr = (max(20.0 / sz, 0.0), 15.0 / sr, 15.0 / sc)
    dy = P.random_field(rng, label.shape, corr) * np.float32(sd_mm / sr)
    dx = P.random_field(rng, label.shape, corr) * np.float32(sd_mm / sc)
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in label.shape], indexing="ij")
    return ndimage.map_coordinates(label, [zz, yy + dy, xx + dx], order=0, mode="nearest").astype(np.uint8)


def generate_thigh_volume(index: int, seed: int = 0, size: int = 64, n_slices: int | None = 48, *,
                          slice_thickness_mm: float | None = None, fat_plane_mm: float = 2.0,
                          rater_sd_mm: float = 1.5, n_raters: int = 2) -> ThighVolume:
    """Subject ``index`` of the thigh phantom (see the module docstring). ``slice_thickness_mm`` overrides
    ``n_slices``. Deterministic in ``(seed, index)`` and the sizes."""
    if index < 0:
        raise ValueError(f"volume index must be >= 0, got {index}")
    if size < 32:
        raise ValueError(f"thigh phantom size must be >= 32 pixels, got {size}")
    if slice_thickness_mm is None and (n_slices is None or n_slices < 8):
        raise ValueError(f"thigh phantom n_slices must be >= 8 (or give slice_thickness_mm), got {n_slices}")
    rng, rng_acq = P.subject_rngs(seed, 0, index)
    sj = _subject(rng)
    hu, label, spacing, info = _render(sj, rng, size, n_slices, slice_thickness_mm, fat_plane_mm)
    image = P.acquire(hu, spacing, SITE, rng_acq)
    rng_r = np.random.default_rng(np.random.SeedSequence([seed, 0, index, 2]))
    raters = {f"rater_{r + 1}": _rater(label, spacing, rater_sd_mm, rng_r) for r in range(n_raters)}
    vid = f"thigh-{index:04d}"
    meta = dict(case_id=vid, patient_id=vid, index=index, sex=sj.sex, age=round(sj.age, 1),
                height_m=round(sj.height_m, 3), smi_kg_m2=round(sj.smi, 3),
                sarcopenic=bool(sj.smi < AWGS2019_CUTOFF[sj.sex]), fat_infiltration=round(sj.fat_infiltration, 3),
                sat_thickness_mm=round(sj.t_sat, 1), **info)
    return ThighVolume(image, label, spacing, meta, raters)


def generate_thigh_phantom(n: int, seed: int = 0, size: int = 64, n_slices: int | None = 48,
                           start: int = 0, **kwargs) -> list[ThighVolume]:
    """Subjects ``start .. start+n-1`` (see :func:`generate_thigh_volume`)."""
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
    return [generate_thigh_volume(start + i, seed, size, n_slices, **kwargs) for i in range(n)]


def write_thigh_dataset(out_dir: str | Path, n: int, size: int = 64, seed: int = 0, n_slices: int | None = 48,
                        **kwargs) -> Path:
    """Write ``n`` volumes in the MSD / nnU-Net layout that ``data=msd data.root=<out_dir>`` reads: ``dataset.json``
    (the 30 class names), ``imagesTr/thigh-<i>.nii.gz`` (int16 HU), ``labelsTr/thigh-<i>.nii.gz`` (uint8),
    ``raters/<rater>/thigh-<i>.nii.gz`` and ``meta.csv``. ``out_dir`` must not exist or be empty."""
    from musclelab.outputs.nifti import save_nifti

    with new_directory(out_dir, "thigh phantom") as tmp:
        rows = []
        for i in range(n):
            vol = generate_thigh_volume(i, seed, size, n_slices, **kwargs)
            vid = vol.meta["case_id"]
            save_nifti(tmp / "imagesTr" / f"{vid}.nii.gz", vol.image, spacing=vol.spacing, dtype=np.int16)
            save_nifti(tmp / "labelsTr" / f"{vid}.nii.gz", vol.label, spacing=vol.spacing)
            for r, lab in vol.raters.items():
                save_nifti(tmp / "raters" / r / f"{vid}.nii.gz", lab, spacing=vol.spacing)
            rows.append(vol.meta)
        pd.DataFrame(rows).to_csv(tmp / "meta.csv", index=False)
        info = {"name": "thigh_phantom", "description": "musclelab synthetic hip-to-knee CT (Kim 2024 classes)",
                "labels": {str(i): name for i, name in enumerate(CLASS_NAMES)}, "modality": {"0": "CT"},
                "numTraining": n, "file_ending": ".nii.gz",
                "training": [{"image": f"./imagesTr/{r['case_id']}.nii.gz", "label": f"./labelsTr/{r['case_id']}.nii.gz"}
                             for r in rows],
                "generator": dict(module="musclelab.phantoms.thigh", n=n, size=size, seed=seed, n_slices=n_slices,
                                  **kwargs)}
        (tmp / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    return Path(out_dir)
