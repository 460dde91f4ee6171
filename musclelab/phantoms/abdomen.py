"""Built-in synthetic 3D abdominal CT phantom with a labelled liver and liver tumours.

Why our own: the liver study (Yoon et al. 2024: train on LiTS, BTCV and CHAOS in every order and measure
catastrophic forgetting) needs three liver "sources" that differ the way real collections do, and no library
ships a *labelled* abdominal CT phantom with a liver that is fast, seeded and CT-like (XCAT is licensed and
slow, Shepp-Logan and MONAI's synthetic blobs are not anatomy, TotalSegmentator's examples are patient data).
A small generator lets the liver study, its tests and tutorials run without patient data.

What a volume contains (everything defined in millimetres, so ``size`` changes only the in-plane sampling):

* air, CT table, skin, subcutaneous fat (subject-dependent thickness), abdominal-wall and paraspinal
  muscles, psoas in the lower slices; the spine (vertebral bodies with cortical rim, cancellous bone and
  intervertebral discs, posterior arch, spinal canal); ribs as bone arcs in the upper slices;
* lung bases (about -850 HU with texture) above a two-domed diaphragm, the heart above the liver dome;
* the **liver** in the right upper quadrant (subject's right = image left): a right lobe whose axial cross-
  section grows from the dome, is largest in the upper-middle slices and shrinks to an inferior lateral tip,
  and a left lobe crossing the midline anteriorly in the upper-middle slices; boundaries perturbed by smooth
  low-order Fourier terms that vary smoothly along z; hepatic veins and portal branches inside it; the
  gallbladder and right kidney indent it; 0-3 hypodense (or, arterial phase, hyperdense) tumours inside it;
* spleen (left posterior, HU close to the liver's: a confounder), stomach (left anterior, fluid with an
  air-fluid level), pancreas, kidneys in the lower slices, aorta, IVC, portal vein, bowel loops with gas below
  the liver, visceral fat.

Conventions: volumes are ``(Z, H, W)`` with slice 0 the most superior; rows run anterior (row 0) to
posterior, columns run to the subject's left (radiological display: the liver is on the image left).
Spacing is ``(z, row, col)`` mm; slices are contiguous (slice interval = slice thickness). Images are float32
integer-valued HU clipped to [-1024, 3071]; labels are uint8: 0 background, 1 liver (including its
intrahepatic vessels, except at sites whose annotation protocol leaves them out: ``vessels_in_liver``), 2 liver
tumour (at sites whose label set has a lesion class, ``tumours_labelled``; elsewhere the liver is traced around
lesions and tumour voxels are 0).

Each volume ``i`` of site ``s`` is drawn from ``numpy.random.SeedSequence([seed, site_index, i])`` (anatomy)
and ``[seed, site_index, i, 1]`` (acquisition: contrast phase, slice thickness, field of view, scan range,
noise), so ``n`` volumes are a prefix of any larger set and bit-identical between runs. The three sites
(:data:`LIVER_SITES`) emulate the three liver collections: field of view (pixel spacing), slice thickness,
reconstruction blur, HU calibration, noise, contrast phase, pathology (tumour prevalence and size, fatty liver,
which reverses the unenhanced liver-vs-spleen HU order) and the annotation protocol (whether intrahepatic
vessels and lesions belong to the liver label) differ. The sites are an emulation, not a measurement of the
real collections: the label-protocol and pathology differences are made large enough that a model trained on
one site measurably loses accuracy on another (the forgetting the Yoon et al. 2024 liver study asks about).

:func:`write_abdomen_dataset` writes the LiTS layout (``volume-<i>.nii.gz`` / ``segmentation-<i>.nii.gz``)
that ``musclelab.data.readers.build_reader("lits", root)`` reads back in the same orientation.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from musclelab.phantoms.l3 import HU_MAX, HU_MIN, _coefs, _fourier, _rho, _smoothstep
from musclelab.phantoms.primitives import (  # the shared drawing primitives
    Grid,
    bowel_loop as _bowel_loop,
    lut,
    ellipse_rho as _rho_z,
    capsule as _capsule,
    ellipsoid as _ellipsoid,
    paint as _paint,
    tube as _tube,
    z_range as _zrange,
)
from musclelab.io import new_directory

# ----------------------------------------------------------------------------------------------------------
# Public constants
# ----------------------------------------------------------------------------------------------------------

#: label values of the generated label maps (LiTS convention)
LABEL_NAMES: tuple[str, ...] = ("background", "liver", "tumour")
#: raw-label -> class mapping and class names per ``target`` (the same as the LiTS reader's)
TARGETS: dict[str, tuple[dict[int, int], tuple[str, ...]]] = {
    "liver": ({0: 0, 1: 1, 2: 1}, ("background", "liver")),            # liver incl. tumour (label >= 1)
    "tumour": ({0: 0, 1: 0, 2: 1}, ("background", "tumour")),          # tumour only (label == 2)
    "liver_tumour": ({0: 0, 1: 1, 2: 2}, ("background", "liver", "tumour")),
}
TARGET_ALIASES: dict[str, str] = {"tumor": "tumour", "liver_tumor": "liver_tumour"}
PHASES: tuple[str, ...] = ("non_contrast", "arterial", "portal_venous")

META_KEYS: tuple[str, ...] = (
    "volume_id", "patient_id", "index", "site", "contrast_phase", "n_tumours", "liver_volume_ml",
    "tumour_volume_ml", "slice_thickness_mm", "spacing_row_mm", "spacing_col_mm", "n_slices", "size", "fov_mm",
    "sex", "age", "height_m", "noise_sd_hu", "liver_fat_hu",
)


@dataclass(frozen=True)
class AbdomenSite:
    """Acquisition and population of one (simulated) liver CT collection.

    fov_factor: field of view / body extent, uniform per volume, clipped to ``fov_mm`` (mm; never smaller
    than the body); thickness_mm: slice thicknesses (mm) drawn uniformly per volume; noise_sd: image noise SD
    range (HU, for a 330 mm wide body), uniform per volume; noise_corr_mm: noise correlation length (Gaussian
    sigma, mm); blur_mm: reconstruction blur range (Gaussian sigma, mm); hu_scale / hu_offset: calibration
    ``scale*HU + offset`` of tissue (offset range in HU, uniform per volume); phase_probs: probabilities of
    the non-contrast / arterial / portal-venous phase; p_tumour: fraction of volumes with liver tumours;
    max_tumours: at most this many tumours per volume; vessels_in_liver: the annotation protocol — whether
    the intrahepatic hepatic veins and portal branches belong to the liver label (collections differ in this,
    which is a source of cross-data-set shift in the labels themselves, not only in the images);
    tumours_labelled: the annotation protocol for lesions — True: tumours carry their own label 2 inside the
    liver (LiTS; the ``liver`` target is label >= 1, so they count as liver), False: the site's label set has
    no lesion class and its annotators traced the liver around lesions (tumour voxels are background 0);
    tumour_radius_mm: median tumour radius (lognormal, SD 0.5 in log);
    p_steatosis: fraction of subjects with a fatty liver, whose parenchyma is ``steatosis_hu`` (HU range,
    uniform) less dense in every phase — unenhanced, a fatty liver is darker than the spleen instead of
    brighter (the liver-vs-spleen HU order reverses), and with contrast it is darker than muscle-like tissue
    at the lower end.
    """

    name: str
    description: str
    fov_factor: tuple[float, float]
    fov_mm: tuple[float, float]
    thickness_mm: tuple[float, ...]
    noise_sd: tuple[float, float]
    noise_corr_mm: float
    blur_mm: tuple[float, float]
    hu_scale: float
    hu_offset: tuple[float, float]
    phase_probs: tuple[float, float, float]
    p_tumour: float
    max_tumours: int
    vessels_in_liver: bool = True
    tumours_labelled: bool = True
    tumour_radius_mm: float = 12.0
    p_steatosis: float = 0.0
    steatosis_hu: tuple[float, float] = (15.0, 45.0)


# A site's position in this dict seeds its volumes: add new sites at the end so existing sets stay the same.
LIVER_SITES: dict[str, AbdomenSite] = {
    "lits": AbdomenSite(
        "lits", "LiTS-like: oncology patients from seven clinical sites and many scanners; wide FOV range "
        "(pixel 0.6-1.0 mm at 512, FOV ~300-500 mm), slice thickness 2.5-5 mm, per-scanner noise (8-30 HU), "
        "kernel (sharp to smooth) and calibration offset (up to +-20 HU), mixed contrast phases (half portal "
        "venous, a quarter each arterial and unenhanced), large primary and metastatic tumours in 90% of the "
        "volumes, labelled as a class of their own inside the liver (label 2), fatty liver after chemotherapy "
        "in 40%",
        fov_factor=(1.12, 1.50), fov_mm=(300.0, 500.0), thickness_mm=(2.5, 3.0, 4.0, 5.0),
        noise_sd=(8.0, 30.0), noise_corr_mm=0.8, blur_mm=(0.4, 1.4), hu_scale=1.0, hu_offset=(-20.0, 20.0),
        phase_probs=(0.25, 0.25, 0.50), p_tumour=0.9, max_tumours=3, tumour_radius_mm=32.0, p_steatosis=0.4),
    "btcv": AbdomenSite(
        "btcv", "BTCV-like (Multi-Atlas Abdomen): one centre, one protocol (portal venous, 3 mm slices, "
        "noise 12-18 HU, +15 HU calibration offset), FOV ~340-500 mm; a colorectal-cancer cohort (large liver "
        "metastases in 85% of the volumes); its 13-organ label set has no lesion class and the portal/splenic "
        "vein and the IVC as organs of their own, emulated by an annotation protocol that traces the liver "
        "around lesions and leaves intrahepatic vessels out of the liver label",
        fov_factor=(1.15, 1.35), fov_mm=(340.0, 500.0), thickness_mm=(3.0,),
        noise_sd=(12.0, 18.0), noise_corr_mm=1.0, blur_mm=(0.9, 1.1), hu_scale=1.0, hu_offset=(15.0, 15.0),
        phase_probs=(0.0, 0.0, 1.0), p_tumour=0.85, max_tumours=3, tumour_radius_mm=30.0, p_steatosis=0.0,
        vessels_in_liver=False, tumours_labelled=False),
    "chaos": AbdomenSite(
        "chaos", "CHAOS-like (healthy liver donors): portal venous, 3.0-3.2 mm slices, tight FOV (~300-420 "
        "mm), smooth reconstruction (blur, low correlated noise), HU scale 0.95, no tumours",
        fov_factor=(1.03, 1.12), fov_mm=(300.0, 420.0), thickness_mm=(3.0, 3.2),
        noise_sd=(6.0, 9.0), noise_corr_mm=2.0, blur_mm=(1.3, 1.6), hu_scale=0.95, hu_offset=(0.0, 0.0),
        phase_probs=(0.0, 0.0, 1.0), p_tumour=0.0, max_tumours=0),
}


def get_liver_site(name: str) -> AbdomenSite:
    """The :class:`AbdomenSite` called ``name``; ``ValueError`` listing the known sites otherwise."""
    if name not in LIVER_SITES:
        raise ValueError(f"unknown abdomen phantom site {name!r}; known sites: {', '.join(LIVER_SITES)}")
    return LIVER_SITES[name]


def _site_index(name: str) -> int:
    return list(LIVER_SITES).index(name)


@dataclass
class AbdomenVolume:
    """One phantom volume: ``image`` float32 ``(Z, H, W)`` integer HU, ``label`` uint8 ``(Z, H, W)`` (0
    background, 1 liver, 2 tumour), ``spacing`` (z, row, col) mm, ``meta`` (:data:`META_KEYS`). Slice 0 is
    the most superior; row 0 anterior; the subject's left on the image right."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    meta: dict


# ----------------------------------------------------------------------------------------------------------
# Internal structure codes (painted in order; each maps to HU and to the label)
# ----------------------------------------------------------------------------------------------------------

_CODE_NAMES = (
    "air", "table", "table_core", "skin", "sat", "imat", "vat", "muscle", "lung", "heart", "rib", "bone",
    "cortex", "disc", "canal", "aorta", "ivc", "liver", "hepatic_vessel", "tumour", "spleen", "stomach_wall",
    "stomach_fluid", "stomach_gas", "kidney_cortex", "kidney_medulla", "gallbladder", "pancreas", "portal_vein",
    "bowel_wall", "bowel_fluid", "bowel_gas", "bowel_faeces",
)
(_AIR, _TABLE, _TABLE_CORE, _SKIN, _SAT, _IMAT, _VAT, _MUSCLE, _LUNG, _HEART, _RIB, _BONE, _CORTEX, _DISC,
 _CANAL, _AORTA, _IVC, _LIVER, _HVESSEL, _TUMOUR, _SPLEEN, _SWALL, _SFLUID, _SGAS, _KCORTEX, _KMED, _GALL,
 _PANCREAS, _PVEIN, _BWALL, _BFLUID, _BGAS, _BFECES) = range(len(_CODE_NAMES))
_NCODES = len(_CODE_NAMES)


def _lut(codes: Sequence[int], dtype=bool, values: Sequence | None = None) -> np.ndarray:
    return lut(_NCODES, codes, dtype, values)


def _label_lut(site: AbdomenSite) -> np.ndarray:
    """Structure code -> label value under ``site``'s annotation protocol (vessels, lesions)."""
    codes, values = [_LIVER], [1]
    if site.vessels_in_liver:
        codes, values = codes + [_HVESSEL], values + [1]
    if site.tumours_labelled:
        codes, values = codes + [_TUMOUR], values + [2]
    return _lut(codes, np.uint8, values)


_INTO_AIR = _lut([_AIR])
_INTO_VAT = _lut([_VAT])
_INTO_LUNG = _lut([_LUNG])
_INTO_ABD = _lut([_VAT, _LUNG])
_INTO_LIVER = _lut([_LIVER])
_INTO_WALL = _lut([_MUSCLE, _IMAT])
_INTO_RKIDNEY = _lut([_VAT, _LIVER, _HVESSEL])
_INTO_GALL = _lut([_VAT, _LIVER, _HVESSEL])
_INTO_VESSEL = _lut([_VAT, _LIVER, _HVESSEL, _LUNG, _HEART, _IMAT, _MUSCLE, _PANCREAS])
_INTO_TUMOUR = _lut([_LIVER, _HVESSEL])
_INTO_PSOAS = _lut([_VAT, _IMAT])

# mean HU per phase (non-contrast, arterial, portal venous) and between-subject SD (draws clipped to +-2 SD)
_HU_MEAN = np.zeros((_NCODES, 3), np.float32)
_HU_SD = np.zeros((_NCODES, 3), np.float32)
for _code, _mean, _sd in (
    (_AIR, -1000, 0), (_TABLE, 120, 0), (_TABLE_CORE, -880, 0), (_SKIN, 35, 3), (_SAT, -102, 6),
    (_IMAT, -95, 5), (_VAT, -92, 6), (_MUSCLE, (45, 52, 56), 4), (_LUNG, -850, 20), (_HEART, (40, 260, 150), 15),
    (_RIB, 450, 50), (_BONE, 230, 30), (_CORTEX, 750, 50), (_DISC, 80, 8), (_CANAL, 18, 5),
    (_AORTA, (42, 275, 170), (2, 12.5, 10)), (_IVC, (40, 90, 150), (2, 10, 8)),
    (_LIVER, (60, 75, 110), (2.5, 2.5, 5)), (_HVESSEL, (40, 130, 165), (2, 10, 7.5)),
    (_TUMOUR, (35, 55, 60), (2.5, 5, 5)), (_SPLEEN, (47.5, 120, 115), (1.25, 5, 2.5)),
    (_SWALL, (40, 70, 90), 5), (_SFLUID, 12, 4), (_SGAS, -990, 0), (_KCORTEX, (32, 200, 180), (3, 15, 15)),
    (_KMED, (28, 80, 150), (3, 10, 15)), (_GALL, 10, 4), (_PANCREAS, (42, 110, 100), 5),
    (_PVEIN, (40, 130, 165), (2, 10, 7.5)), (_BWALL, (40, 70, 85), 5), (_BFLUID, 15, 5), (_BGAS, -990, 0),
    (_BFECES, -180, 20),
):
    _HU_MEAN[_code] = _mean
    _HU_SD[_code] = _sd
_TUMOUR_HYPER_ARTERIAL = 110.0   # HCC-like arterial hyperenhancement (mean; SD 5 HU)

_TEX_AMP = np.full(_NCODES, 3.0, np.float32)   # HU amplitude of the fine tissue texture
_TEX_AMP[[_AIR, _SGAS, _BGAS, _TABLE, _TABLE_CORE]] = 0.0
_TEX_AMP[[_SAT, _VAT, _IMAT]] = 7.0
_TEX_AMP[_MUSCLE] = 5.0
_TEX_AMP[[_LIVER, _SPLEEN]] = 4.0
_TEX_AMP[_TUMOUR] = 6.0
_TEX_AMP[_LUNG] = 40.0
_TEX_AMP[_BONE] = 30.0
_TEX_AMP[[_CORTEX, _RIB]] = 60.0
_TEX_AMP[_BFECES] = 260.0


# ----------------------------------------------------------------------------------------------------------
# Geometry helpers (anatomy frame: x towards the subject's left, y posterior, z inferior; mm)
# ----------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------
# Subject: anatomy (mm) and acquisition
# ----------------------------------------------------------------------------------------------------------

_NT = 2048                                     # angular samples of the body outline tables
_T1 = (np.arange(_NT) + 0.5) * (2.0 * np.pi / _NT) - np.pi   # 0 anterior midline, +pi/2 subject's left
_C1, _S1 = np.cos(_T1), np.sin(_T1)


def _angle_index(t: float) -> int:
    return int(np.clip((t + np.pi) * _NT / (2.0 * np.pi), 0, _NT - 1))


def _draw_subject(rng: np.random.Generator, rng_acq: np.random.Generator, index: int, site: str,
                  overrides: dict) -> SimpleNamespace:
    """Every random quantity of one volume (anatomy from ``rng``, acquisition from ``rng_acq``)."""
    prof = LIVER_SITES[site]
    a = SimpleNamespace(index=index, site=site)
    a.rng_hu, a.rng_tex, a.rng_tum, rng_fat = rng.spawn(4)   # streams independent of how many shapes are drawn
    a.liver_fat_hu = float(rng_fat.uniform(*prof.steatosis_hu)) if rng_fat.random() < prof.p_steatosis else 0.0
    a.sex = "M" if rng.random() < 0.5 else "F"
    male = a.sex == "M"
    a.age = float(rng.uniform(25.0, 85.0))
    a.height_m = float(np.clip(rng.normal(1.76 if male else 1.63, 0.07), 1.45, 2.02))
    s = a.height_m / 1.70 * (1.03 if male else 0.96) * float(np.clip(rng.normal(1.0, 0.03), 0.9, 1.1))
    m = float(np.sqrt((1.0 if male else 0.9) * np.exp(rng.normal(0.0, 0.10))))
    obesity = float(rng.normal())
    a.s, a.m = s, m
    a.t_sat = float(np.clip((16.0 if male else 24.0) * np.exp(0.45 * obesity + 0.2 * rng.normal()), 4.0, 60.0))
    a.vat = float(np.clip((0.55 if male else 0.35) * np.exp(0.5 * obesity + 0.3 * rng.normal()), 0.05, 1.6))
    sat_lat = float(rng.uniform(0.0, 0.25) + (0.0 if male else 0.15))

    # --- body outline: polar tables over the angle t about the vertebral-body centre ---
    t_obl, t_rect = 18.0 * s * m, 12.0 * s * m
    A = 112.0 * s + t_obl + 30.0 * a.vat
    a.b_es = 23.0 * s * m
    B_post = max(29.0 * s + 2.0 * a.b_es - 3.0 * s, 66.0 * s)
    B_ant = 92.0 * s + t_rect + 55.0 * a.vat
    a.tau_top = float(rng.uniform(0.0, 0.05))
    a.tau_low = float(rng.uniform(0.0, 0.03) * (0.5 + a.vat))
    c1, s1, a1 = _C1, _S1, np.abs(_T1)
    p_post = 2.6
    rho1 = np.where(c1 > 0, np.sqrt((s1 / A) ** 2 + (c1 / B_ant) ** 2),
                    ((np.abs(s1) / A) ** p_post + (np.abs(c1) / B_post) ** p_post) ** (1.0 / p_post))
    eps = _fourier(c1, s1, _coefs(rng, 0.03, 5)) - 0.05 * np.exp(-(((np.pi - a1) / 0.09) ** 2))
    a.base = ((1.0 + eps) / rho1).astype(np.float32)                     # fascia radius at tau = 1, mm
    f_sat = (1.0 + 0.28 * c1 + sat_lat * s1 * s1) * (1.0 + _fourier(c1, s1, _coefs(rng, 0.25, 4)))
    a.t_sat_t = np.maximum(a.t_sat * f_sat, 3.0).astype(np.float32)
    la = (4.0 + 4.0 * a.vat + rng.uniform(0.0, 3.0)) / B_ant
    w_rect = 68.0 * s * rng.uniform(0.9, 1.1) / B_ant
    uu = (a1 - la) / w_rect
    tr = t_rect * 2.0 * np.sqrt(np.clip(uu * (1.0 - uu), 0.0, None)) * (1.0 + _fourier(c1, s1, _coefs(rng, 0.3, 4)))
    o0 = la + w_rect + (8.0 + 4.0 * rng.random()) / B_ant
    o1 = 2.3 + rng.uniform(-0.08, 0.08)
    to = (t_obl * _smoothstep(o0, o0 + 0.22, a1) * (1.0 - _smoothstep(o1 - 0.5, o1, a1))
          * (0.7 + 0.3 * _smoothstep(o0, o0 + 0.9, a1))) * (1.0 + _fourier(c1, s1, _coefs(rng, 0.3, 4)))
    t_min = 9.0 * s * _smoothstep(0.25, 0.5, a1)                          # intercostal / thin wall layer
    a.t_musc = np.maximum(np.maximum(tr, to), t_min).astype(np.float32)
    a.t_wall = (a.t_musc + 2.5).astype(np.float32)
    a.B_ant, a.B_post, a.A = B_ant, B_post, A

    # --- liver (right lobe + left lobe); z = 0 at the dome, inferior tip at z = L ---
    lv = SimpleNamespace()
    lv.L = float(np.clip(rng.normal(160.0, 12.0) * s ** 0.5, 125.0, 195.0))
    lv.up = float(rng.uniform(0.25, 0.40))
    lv.qx, lv.qy = float(rng.uniform(0.3, 0.5)), float(rng.uniform(0.45, 0.75))
    lv.fx, lv.fy = float(rng.uniform(0.95, 1.1)), float(rng.uniform(0.92, 1.04))
    lv.drift_y = float(rng.uniform(0.0, 25.0)) * s
    lv.gap = 2.5
    lv.cr = np.stack([_coefs(rng, 0.07, 4), _coefs(rng, 0.05, 4), _coefs(rng, 0.04, 4)]).astype(np.float32)
    lv.uL0, lv.uL1 = float(rng.uniform(0.03, 0.10)), float(rng.uniform(0.45, 0.65))
    lv.AXL, lv.AYL = float(rng.uniform(45.0, 72.0)) * s, float(rng.uniform(17.0, 30.0)) * s
    lv.xL = float(rng.uniform(5.0, 28.0)) * s
    lv.angL = float(rng.uniform(0.1, 0.4))
    lv.cl = np.stack([_coefs(rng, 0.06, 4), _coefs(rng, 0.04, 4)]).astype(np.float32)
    lv.y_post = 55.0 * s
    a.lv = lv
    zp = lv.up * lv.L
    lv.AX = lv.fx * 0.5 * (_cavity(a, "right", zp) + 15.0)
    lv.AY = lv.fy * (0.5 * (_cavity(a, "ant", zp) + lv.y_post) - lv.gap)
    lv.xR0 = -(_cavity(a, "right", zp) - lv.gap - lv.AX)
    lv.yR0 = -_cavity(a, "ant", zp) + lv.gap + lv.AY
    L = lv.L

    # --- diaphragm / lung bases, heart ---
    a.dome_r = float(rng.uniform(2.0, 8.0))           # right dome apex above the liver top, mm
    a.dome_l = a.dome_r - float(rng.uniform(5.0, 20.0))
    a.dome_k = float(rng.uniform(2.0, 2.6))
    a.lung_ant, a.lung_post = float(rng.uniform(0.15, 0.25)) * L, float(rng.uniform(0.35, 0.5)) * L
    a.heart = (float(rng.uniform(10.0, 30.0)) * s, float(rng.uniform(45.0, 60.0)) * s, -float(rng.uniform(40.0, 60.0)),
               float(rng.uniform(60.0, 75.0)) * s, float(rng.uniform(48.0, 58.0)) * s, float(rng.uniform(45.0, 55.0)))

    # --- ribs: bands that descend from posterior to anterior ---
    a.rib_pitch = float(rng.uniform(30.0, 38.0)) * s
    a.rib_h = float(rng.uniform(10.0, 13.0))
    a.rib_drop = float(rng.uniform(70.0, 100.0)) * s
    a.rib_phase = rng.uniform(0.0, 1.0, 2)
    a.rib_th = float(rng.uniform(7.0, 9.0))
    a.costal = (float(rng.uniform(0.15, 0.3)), float(rng.uniform(0.75, 0.95)))   # costal margin (ant, post) / L

    # --- spine ---
    a.vert_pitch = float(rng.uniform(30.0, 36.0)) * s
    a.disc_h = float(rng.uniform(6.0, 9.0))
    a.vert_phase = float(rng.uniform(0.0, 1.0))
    a.vert_coefs = _coefs(rng, 0.02, 3)
    a.spin_ang = float(rng.normal(0, 0.03))
    a.trans_ang = rng.normal(0, 0.04, 2)
    a.es_coefs = [_coefs(rng, 0.06, 4) for _ in range(2)]
    a.psoas = (float(rng.uniform(0.55, 0.75)) * L, [_coefs(rng, 0.07, 4) for _ in range(2)])

    # --- other organs ---
    def U(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    Wl = _cavity(a, "left", 0.3 * L)
    sp_a, sp_b = U(38.0, 50.0) * s, U(15.0, 21.0) * s
    sp_ang = -U(0.5, 0.9)
    ext_x = np.hypot(sp_a * np.cos(sp_ang), sp_b * np.sin(sp_ang))
    a.spleen = dict(c=(Wl - lv.gap - ext_x, U(8.0, 28.0) * s, U(0.22, 0.4) * L),
                    r=(sp_a, sp_b, U(45.0, 60.0) * s), ang=sp_ang, coefs=_coefs(rng, 0.08, 4))
    st_zc = U(0.15, 0.35) * L
    st_b = U(26.0, 38.0) * s
    st_x = U(25.0, 50.0) * s
    st_y = -_cavity(a, "ant", st_zc) + lv.gap + st_b + U(5.0, 25.0)
    a.stomach = dict(c=(st_x, st_y, st_zc), r=(U(35.0, 50.0) * s, st_b, U(45.0, 65.0)), ang=U(-0.5, 0.2),
                     coefs=_coefs(rng, 0.08, 4), level=U(-0.6, 0.2))   # level: air-fluid level / half-axis
    head = (U(-25.0, -10.0) * s, -U(35.0, 45.0) * s, U(0.75, 0.9) * L)
    tail = (U(60.0, 75.0) * s, U(0.0, 12.0) * s, U(0.55, 0.7) * L)
    a.pancreas = (head, tail, U(9.0, 13.0), U(6.0, 9.0))
    kid = []
    top_r = U(0.55, 0.72) * L
    for side in (-1, 1):
        top = top_r if side < 0 else top_r - U(10.0, 25.0)
        hz = U(50.0, 60.0) * s
        kid.append(dict(c=(side * (72.0 * s + rng.normal(0, 4)), 12.0 * s + rng.normal(0, 4), top + hz),
                        r=(U(26.0, 32.0) * s, U(18.0, 23.0) * s, hz),
                        ang=-side * 0.7 + rng.normal(0, 0.1), coefs=_coefs(rng, 0.05, 3)))
    a.kidneys = kid
    gz = U(0.6, 0.75) * L
    present = bool(rng.random() < 0.85)
    gc = (lv.xR0 + U(0.25, 0.45) * lv.AX, -_cavity(a, "ant", gz) + U(15.0, 30.0), gz)
    a.gallbladder = dict(present=present, c=gc, r=(U(13.0, 18.0), U(11.0, 15.0), U(28.0, 40.0)), ang=U(-0.6, 0.6))
    a.r_ao = 11.5 * s * float(rng.uniform(0.9, 1.1)) * (1.0 + 0.004 * (a.age - 50.0))
    a.ivc = (-22.0 * s + rng.normal(0, 2), -17.0 * s - 10.0 * s + rng.normal(0, 2), 12.0 * s, 8.5 * s)

    # --- hepatic veins and portal branches (x, y, z mm; radii) ---
    def jit(p, sd=6.0):
        return (p[0] + rng.normal(0, sd), p[1] + rng.normal(0, sd), p[2] + rng.normal(0, sd))

    xi, yi = a.ivc[0], a.ivc[1]
    xR0, yR0, AX, AY = lv.xR0, lv.yR0, lv.AX, lv.AY
    yLant = -_cavity(a, "ant", 0.3 * L) + lv.gap + 0.8 * lv.AYL
    hepatic = (xi, yi, 0.08 * L)
    hilum = jit((-30.0 * s, yi - 22.0 * s, 0.55 * L), 4.0)
    rp = jit((xR0, yR0 + 0.1 * AY, 0.45 * L))
    segs = [
        (hepatic, jit((xR0 - 0.35 * AX, yR0 + 0.3 * AY, 0.45 * L)), 6.0, 2.5),   # right hepatic vein
        (hepatic, jit((xR0 + 0.5 * AX, yR0 - 0.4 * AY, 0.5 * L)), 5.5, 2.5),    # middle hepatic vein
        (hepatic, jit((lv.xL + 0.2 * lv.AXL, yLant, 0.3 * L)), 5.0, 2.0),      # left hepatic vein
        (hilum, rp, 6.5, 5.0),                                                 # right portal vein
        (rp, jit((xR0 - 0.2 * AX, yR0 - 0.5 * AY, 0.35 * L)), 4.0, 2.0),       # right anterior branch
        (rp, jit((xR0 - 0.45 * AX, yR0 + 0.45 * AY, 0.55 * L)), 4.0, 2.0),     # right posterior branch
        (hilum, jit((lv.xL, yLant, 0.35 * L)), 5.0, 2.5),                      # left portal vein
    ]
    for _ in range(4):   # small side branches
        j = int(rng.integers(0, len(segs)))
        p0, p1, r0, r1 = segs[j]
        t = float(rng.uniform(0.3, 0.9))
        q = tuple(p0[k] + t * (p1[k] - p0[k]) for k in range(3))
        d = rng.normal(0, 1, 3)
        d = d / np.linalg.norm(d) * rng.uniform(20.0, 40.0)
        segs.append((q, tuple(q[k] + d[k] for k in range(3)), 2.5, 1.5))
    a.hepatic_segments = segs
    a.portal_trunk = (hilum, jit((5.0 * s, yi - 8.0 * s, 0.9 * L), 4.0), 7.0, 6.5)

    # --- bowel loops below the liver (fixed number of draws) ---
    loops = []
    Wr = _cavity(a, "right", 0.9 * L)
    loops.append(((-(Wr - 25.0), -_cavity(a, "ant", 0.9 * L) + 35.0, 0.9 * L + rng.normal(0, 8)),
                  float(rng.uniform(15.0, 20.0)), float(rng.uniform(0.7, 1.0)), float(rng.uniform(1.0, 2.0)),
                  float(rng.uniform(0, np.pi)), int(rng.choice([0, 2, 3], p=[0.5, 0.3, 0.2])),
                  float(rng.uniform(-0.5, 0.5))))   # hepatic flexure of the colon (gas next to the liver tip)
    for _ in range(40):
        zc = float(rng.uniform(0.5, 1.3)) * L
        Wa = _cavity(a, "right", zc)
        loops.append(((float(rng.uniform(-Wa, Wa)), float(rng.uniform(-_cavity(a, "ant", zc), 20.0 * s)), zc),
                      float(rng.uniform(10.0, 20.0)), float(rng.uniform(0.55, 1.0)), float(rng.uniform(1.0, 2.5)),
                      float(rng.uniform(0, np.pi)), int(rng.choice(4, p=[0.2, 0.45, 0.25, 0.1])),
                      float(rng.uniform(-0.5, 0.5))))
    a.loops = loops

    # --- tumours (own stream, so switching them off changes nothing else) ---
    rt = a.rng_tum
    has = rt.random() < prof.p_tumour
    n_t = 1 + int(rt.random() < 0.45) + int(rt.random() < 0.35)
    if overrides.get("tumours") is not None:
        has = bool(overrides["tumours"])
    n_t = min(n_t, prof.max_tumours) if has else 0
    if has and n_t == 0:
        n_t = 1
    cz = rt.uniform(0.08, 0.9, 64) * L
    cxs = rt.uniform(-_cavity(a, "right", zp), lv.xL + lv.AXL, 64)
    cys = rt.uniform(-_cavity(a, "ant", zp), lv.y_post, 64)
    inside = np.nonzero(_liver_rho(a, cxs, cys, cz) < 0.8)[0]
    radii = np.clip(np.exp(rt.normal(np.log(prof.tumour_radius_mm), 0.5, 3)), 4.0, 45.0)
    axes = rt.uniform(0.8, 1.25, (3, 3))
    a.tumour_hyper = bool(rt.random() < 0.5)
    a.tumours = [((float(cxs[j]), float(cys[j]), float(cz[j])), tuple(float(radii[k] * axes[k, q]) for q in range(3)))
                 for k, j in enumerate(inside[:n_t])]

    # --- acquisition (the scanning site's protocol) ---
    ph = int(rng_acq.choice(3, p=prof.phase_probs))
    a.phase = PHASES[ph]
    if overrides.get("contrast_phase") is not None:
        if overrides["contrast_phase"] not in PHASES:
            raise ValueError(f"unknown contrast phase {overrides['contrast_phase']!r}; known: {', '.join(PHASES)}")
        a.phase = overrides["contrast_phase"]
    a.thickness = float(prof.thickness_mm[int(rng_acq.integers(0, len(prof.thickness_mm)))])
    fov_f = float(rng_acq.uniform(*prof.fov_factor))
    n_above, n_below = int(rng_acq.integers(3, 6)), int(rng_acq.integers(3, 6))
    frac = float(rng_acq.random())
    a.noise_sd = float(rng_acq.uniform(*prof.noise_sd))
    a.blur_mm = float(rng_acq.uniform(*prof.blur_mm))
    a.hu_offset = float(rng_acq.uniform(*prof.hu_offset))
    a.tx_jit, a.ty_jit = float(rng_acq.normal(0.0, 5.0)), float(rng_acq.normal(0.0, 4.0))   # patient position, mm
    a.rot = float(rng_acq.normal(0.0, 0.03))
    tmax = 1.0 + a.tau_top + a.tau_low
    r_out = a.base * tmax + a.t_sat_t + 2.2                   # skin outline (widest level), mm
    x_out, y_out = r_out * _S1, -r_out * _C1
    a.body_box = (float(x_out.min()), float(x_out.max()), float(y_out.min()), float(y_out.max()))
    a.body_w = a.body_box[1] - a.body_box[0]
    body_h = a.body_box[3] - a.body_box[2]
    extent = max(a.body_w, body_h + 30.0)                     # + the CT table below the patient
    a.fov_mm = max(float(np.clip(extent * fov_f, *prof.fov_mm)), a.body_w + 2.0 * abs(a.tx_jit) + 10.0,
                   (body_h + 2.0 * abs(a.ty_jit) + 30.0) / 0.9)   # the whole body is always in the image
    t = a.thickness
    z0 = -(n_above + frac) * t
    n = int(np.floor((L + n_below * t - z0) / t)) + 1
    a.z = (z0 + t * np.arange(n)).astype(np.float32)
    return a


def _tau(a: SimpleNamespace, z):
    """Outline scale along z: a slightly wider lower chest, and a belly that grows inferiorly."""
    L = a.lv.L
    return (1.0 + a.tau_top * (1.0 - _smoothstep(-20.0, 0.6 * L, z)) + a.tau_low * _smoothstep(0.3 * L, 1.3 * L, z))


def _cavity(a: SimpleNamespace, side: str, z) -> float:
    """Distance (mm) from the vertebral-body centre to the inner abdominal wall at level z: towards the
    subject's ``right``, ``left`` or anterior (``ant``)."""
    t = {"right": -np.pi / 2, "left": np.pi / 2, "ant": 0.0}[side]
    k = _angle_index(t)
    return float(a.base[k] * _tau(a, z) - a.t_wall[k])


def _liver_params(a: SimpleNamespace, z):
    """Right- and left-lobe cross-section parameters at z (mm, array): two tuples (cx, cy, ax, ay, ang, coefs)."""
    lv = a.lv
    z = np.asarray(z, np.float32)
    u = z / np.float32(lv.L)
    inside = (u > 0) & (u < 1)
    up = lv.up
    cap = np.sqrt(np.clip(1.0 - ((up - u) / up) ** 2, 0.0, 1.0))
    dn = np.clip((1.0 - u) / (1.0 - up), 0.0, 1.0)
    top = u < up
    dx, dy = np.where(top, 1.0, dn ** lv.qx), np.where(top, 1.0, dn ** lv.qy)
    gx, gy = np.where(top, cap, dx) * inside, np.where(top, cap, dy) * inside
    tau = _tau(a, z)
    kr, ka = _angle_index(-np.pi / 2), _angle_index(0.0)
    Wr = a.base[kr] * tau - a.t_wall[kr]
    Da = a.base[ka] * tau - a.t_wall[ka]
    cx = -(Wr - lv.gap - lv.AX * dx)
    cy = -Da + lv.gap + lv.AY * dy + lv.drift_y * _smoothstep(up, 1.0, u)
    pu = np.pi * u
    cr = (lv.cr[0] + lv.cr[1] * np.cos(pu)[..., None, None] + lv.cr[2] * np.sin(2 * pu)[..., None, None])
    right = (cx, cy, lv.AX * gx, lv.AY * gy, 0.0, cr.astype(np.float32))
    uL = (u - lv.uL0) / (lv.uL1 - lv.uL0)
    bump = np.abs(np.sin(np.pi * np.clip(uL, 0.0, 1.0))) ** 0.7 * ((uL > 0) & (uL < 1))
    cl = lv.cl[0] + lv.cl[1] * np.cos(pu)[..., None, None]
    left = (lv.xL - (1.0 - bump) * 25.0 * a.s, -Da + lv.gap + lv.AYL * bump, lv.AXL * bump, lv.AYL * bump, lv.angL,
            cl.astype(np.float32))
    return right, left


def _liver_rho(a: SimpleNamespace, X, Y, z):
    """Normalised liver 'radius' (inside < 1) at points (X, Y, z) mm, all the same shape (1D)."""
    right, left = _liver_params(a, z)
    X, Y = np.asarray(X, np.float32), np.asarray(Y, np.float32)

    def one(p):
        cx, cy, ax, ay, ang, co = p
        r = _rho_z(X, Y, np.asarray(cx, np.float32), np.asarray(cy, np.float32), ax, ay,
                   np.full(X.shape, ang, np.float32) if ang else 0.0, co)
        return np.where((ax > 0) & (ay > 0), r, np.inf)

    return np.minimum(np.where(_medial_cut(a, X, Y), np.inf, one(right)), one(left))


def _medial_cut(a: SimpleNamespace, X, Y):
    """Where the right lobe may not extend: medial to the IVC in the posterior half (aorta, crura)."""
    return (X > np.float32(a.ivc[0] + 14.0 * a.s)) & (Y > np.float32(a.ivc[1] - 12.0 * a.s))


# ----------------------------------------------------------------------------------------------------------
# Rendering: structure codes and clean HU
# ----------------------------------------------------------------------------------------------------------


def _render(a: SimpleNamespace, size: int) -> tuple[np.ndarray, np.ndarray, Grid]:
    """Structure-code volume ``(Z, H, W)`` uint8 and the noise-free HU volume (float32) of one subject."""
    s, L, lv = a.s, a.lv.L, a.lv
    z = a.z
    sp = a.fov_mm / size
    left, right, top, bottom = a.body_box
    tx = -(left + right) / 2.0 + a.tx_jit
    ty = -(top + bottom) / 2.0 + a.ty_jit - 0.05 * a.fov_mm     # body a little above the centre: table below
    g = Grid(size, sp, (tx, ty), a.rot)
    X, Y = g.X, g.Y
    nz = len(z)
    st = np.full((nz, size, size), _AIR, np.uint8)

    # --- body: skin, subcutaneous fat, muscle wall, cavity (polar tables gathered per pixel) ---
    r = np.sqrt(X * X + Y * Y)
    it = ((np.arctan2(X, -Y) + np.float32(np.pi)) * np.float32(_NT / (2.0 * np.pi))).astype(np.intp)
    np.clip(it, 0, _NT - 1, out=it)
    tau = _tau(a, z).astype(np.float32)[:, None, None]
    d = tau * a.base[it][None] - r[None]                      # depth inside the muscle fascia, mm
    t_sat, t_musc, t_wall = a.t_sat_t[it], a.t_musc[it], a.t_wall[it]
    skin = np.float32(2.2)
    body = d > -(t_sat + skin)
    st[body] = _SKIN
    st[d > -t_sat] = _SAT
    fascia = d > 0
    st[fascia] = _IMAT
    st[fascia & (d < t_musc)] = _MUSCLE
    # the spine and erector spinae bound the cavity posteriorly (lateral to them: lung recesses, kidneys)
    a_es = 28.0 * s * a.m
    spine_block = _rho(X, Y, 0.0, 24.0 * s, 50.0 * s, 14.0 * s, p=2.5) < 1
    for k, sd in enumerate((1, -1)):
        spine_block |= _rho(X, Y, sd * (4.5 * s + 0.95 * a_es), 29.0 * s + a.b_es, a_es + 4.0, a.b_es + 4.0, 0.0,
                            a.es_coefs[k], p=2.3) < 1
    cavity = (d > t_wall) & ~spine_block
    st[cavity] = _VAT

    # CT table below the posterior skin (image frame), as in the L3 phantom
    y_tab = float(ty + g.c * bottom) + 1.0
    curve = g.xi * g.xi / np.float32(2.0 * 900.0)
    yt = g.yi - (np.float32(y_tab) - curve)
    table = np.zeros((size, size), np.uint8)
    table[(yt > 0) & (yt < 26.0)] = _TABLE_CORE
    table[((yt > 0) & (yt < 3.0)) | ((yt > 23.0) & (yt < 26.0))] = _TABLE
    tmask = (table > 0)[None] & (st == _AIR)
    st[tmask] = np.broadcast_to(table[None], st.shape)[tmask]

    # --- lung bases above a two-domed diaphragm, heart ---
    z_dia_r = -a.dome_r + a.dome_k * 0.5 * (((X - lv.xR0) / lv.AX) ** 2 + ((Y - lv.yR0) / lv.AY) ** 2) * lv.up * L
    xl0 = 0.45 * _cavity(a, "left", 0.0)
    q_l = ((X - xl0) / (60.0 * s)) ** 2 + ((Y + 10.0 * s) / (55.0 * s)) ** 2
    z_dia_l = -a.dome_l + a.dome_k * 0.5 * q_l * 0.3 * L
    z_lm = a.lung_ant + (a.lung_post - a.lung_ant) * _smoothstep(-40.0 * s, 40.0 * s, Y)
    z_dia = np.minimum(np.minimum(z_dia_r, z_dia_l), z_lm).astype(np.float32)
    zl = _zrange(z, -np.inf, float(z_dia.max()))
    if zl is not None:
        lung = cavity[zl] & (z[zl][:, None, None] < z_dia[None])
        st[zl][lung] = _LUNG
    hx, hy, hz, ha, hb, hc = a.heart
    blk, rh = _ellipsoid(g, z, (hx, -_cavity(a, "ant", hz) + hy, hz), (ha, hb, hc), 0.4)
    _paint(st, blk, rh < 1, _HEART, _INTO_LUNG)

    # --- ribs: bands in the wall that descend anteriorly, above the costal margin ---
    at = np.abs(_T1)
    z_cm = L * (a.costal[0] + (a.costal[1] - a.costal[0]) * (at / np.pi) ** 1.5)
    zr = _zrange(z, -np.inf, float(z_cm.max()))
    if zr is not None:
        side = (_S1 > 0).astype(int)
        h = (z[zr][:, None] - a.rib_drop * (np.pi - at)[None] / np.pi) / a.rib_pitch + a.rib_phase[side][None]
        tab = ((h - np.floor(h)) < a.rib_h / a.rib_pitch) & (at > 0.45)[None] & (at < 2.75)[None] \
            & (z[zr][:, None] < z_cm[None])
        dd = d[zr]
        rib = tab[:, it] & (dd > 2.0) & (dd < 2.0 + a.rib_th)
        _paint(st, (zr,), rib, _RIB, _INTO_WALL)

    # --- spine (2D pattern, discs between vertebral bodies), erector spinae, psoas ---
    sp2 = np.zeros((size, size), np.uint8)

    def paint2(mask, code):
        sp2[mask] = code

    yc = 24.0 * s
    paint2(_rho(X, Y, 0.0, 0.0, 23.0 * s, 16.0 * s, 0.0, a.vert_coefs, p=2.4) < 1, _BONE)
    paint2(_rho(X, Y, 0.0, yc, 11.0 * s + 5.5, 7.5 * s + 5.5) < 1, _BONE)
    paint2(_rho(X, Y, 0.0, yc + 7.5 * s + 16.0 * s, 3.5 * s, 17.0 * s, a.spin_ang) < 1, _BONE)
    for k, sd in enumerate((1, -1)):
        paint2(_rho(X, Y, sd * 30.0 * s, yc - 2.0 * s, 17.0 * s, 3.8 * s, sd * 0.15 + a.trans_ang[k]) < 1, _BONE)
    bone = sp2 == _BONE
    inner = ndimage.binary_erosion(bone, iterations=max(1, int(round(1.5 / sp))))
    sp2[bone & ~inner] = _CORTEX
    paint2(_rho(X, Y, 0.0, yc, 11.0 * s, 7.5 * s, 0.0, None, p=2.2) < 1, _CANAL)
    vbody = _rho(X, Y, 0.0, 0.0, 23.0 * s, 16.0 * s, 0.0, a.vert_coefs, p=2.4) < 1
    es = np.zeros((size, size), bool)
    for k, sd in enumerate((1, -1)):
        es |= _rho(X, Y, sd * (4.5 * s + 0.95 * a_es), 29.0 * s + a.b_es, a_es, a.b_es, 0.0, a.es_coefs[k], p=2.3) < 1
    es &= sp2 == 0
    hh = (z / a.vert_pitch + a.vert_phase) % 1.0
    disc = hh < a.disc_h / a.vert_pitch
    esm = es[None] & fascia
    st[esm] = _MUSCLE
    spm = sp2 > 0
    st[:, spm] = sp2[spm]
    if disc.any():
        dm = np.zeros_like(st, bool)
        dm[disc] = vbody[None]
        st[dm] = _DISC
    z_ps, ps_coefs = a.psoas
    zsl = _zrange(z, z_ps, np.inf)
    if zsl is not None:
        grow = _smoothstep(z_ps, z_ps + 60.0, z[zsl])
        a_ps, b_ps = 15.0 * s * a.m * grow, 18.0 * s * a.m * grow
        for k, sd in enumerate((1, -1)):
            blk, rp = _tube(g, z, zsl, sd * (21.0 * s + 0.85 * a_ps), -3.0 * s, a_ps, b_ps,
                            -sd * 0.35, ps_coefs[k])
            _paint(st, blk, rp < 1, _MUSCLE, _INTO_PSOAS)

    # --- liver ---
    zsl = _zrange(z, 0.0, L)
    if zsl is not None:
        (rcx, rcy, rax, ray, _, rco), (lcx, lcy, lax, lay, lang, lco) = _liver_params(a, z[zsl])
        blk_r, rr = _tube(g, z, zsl, rcx, rcy, rax, ray, 0.0, rco)
        if blk_r is not None:   # the right lobe stays right of the aorta (behind it: caudate lobe and IVC)
            rr = np.where(_medial_cut(a, g.X[blk_r[1:]], g.Y[blk_r[1:]])[None], np.inf, rr)
        blk_l, rl = _tube(g, z, zsl, lcx, lcy, lax, lay, lang, lco)
        _paint(st, blk_r, rr < 1, _LIVER, _INTO_ABD)
        _paint(st, blk_l, rl < 1, _LIVER, _INTO_ABD)

    # --- spleen, stomach, pancreas, kidneys, gallbladder ---
    spn = a.spleen
    blk, rs = _ellipsoid(g, z, spn["c"], spn["r"], spn["ang"], spn["coefs"])
    _paint(st, blk, rs < 1, _SPLEEN, _INTO_ABD)
    sto = a.stomach
    blk, rs = _ellipsoid(g, z, sto["c"], sto["r"], sto["ang"], sto["coefs"])
    if blk is not None:
        view = st[blk]
        outer = (rs < 1) & _INTO_ABD[view]
        view[outer] = _SWALL
        bb = sto["r"][1] * np.sqrt(np.clip(1.0 - ((z[blk[0]] - sto["c"][2]) / sto["r"][2]) ** 2, 1e-6, None))
        lumen = outer & (rs < 1.0 - 4.0 / np.maximum(bb, 5.0)[:, None, None])
        view[lumen] = _SFLUID
        ylev = g.ty + g.s * sto["c"][0] + g.c * (sto["c"][1] + sto["level"] * sto["r"][1])
        view[lumen & (g.yi[blk[1]][None] < np.float32(ylev))] = _SGAS
    p0, p1, r0, r1 = a.pancreas
    blk, mk = _capsule(g, z, p0, p1, r0, r1)
    _paint(st, blk, mk, _PANCREAS, _INTO_VAT)
    for k, kd in enumerate(a.kidneys):
        blk, rk = _ellipsoid(g, z, kd["c"], kd["r"], kd["ang"], kd["coefs"])
        if blk is None:
            continue
        bb = kd["r"][1] * np.sqrt(np.clip(1.0 - ((z[blk[0]] - kd["c"][2]) / kd["r"][2]) ** 2, 1e-6, None))
        into = _INTO_RKIDNEY if k == 0 else _INTO_VAT
        _paint(st, blk, rk < 1, _KCORTEX, into)
        _paint(st, blk, rk < 1.0 - 6.0 / np.maximum(bb, 7.0)[:, None, None], _KMED, _lut([_KCORTEX]))
    gb = a.gallbladder
    if gb["present"]:
        blk, rg = _ellipsoid(g, z, gb["c"], gb["r"], gb["ang"])
        _paint(st, blk, rg < 1, _GALL, _INTO_GALL)

    # --- aorta, IVC (override soft tissue) ---
    zsl = _zrange(z, -np.inf, np.inf)
    w = _smoothstep(-40.0, 0.4 * L, z)
    ao_x = 22.0 * s + (8.0 * s - 22.0 * s) * w
    ao_y = -2.0 * s + (-17.0 * s - a.r_ao - 2.0 - (-2.0 * s)) * w
    blk, ra = _tube(g, z, zsl, ao_x, ao_y, a.r_ao, a.r_ao)
    _paint(st, blk, ra < 1, _AORTA, _INTO_VESSEL)
    ix, iy, ia, ib = a.ivc
    blk, ri = _tube(g, z, _zrange(z, -10.0, np.inf), ix, iy, ia, ib, 0.2)
    _paint(st, blk, ri < 1, _IVC, _INTO_VESSEL)

    # --- hepatic veins / portal branches (liver only), portal trunk ---
    for p0, p1, r0, r1 in a.hepatic_segments:
        blk, mk = _capsule(g, z, p0, p1, r0, r1)
        _paint(st, blk, mk, _HVESSEL, _INTO_LIVER)
    p0, p1, r0, r1 = a.portal_trunk
    blk, mk = _capsule(g, z, p0, p1, r0, r1)
    if blk is not None:
        _paint(st, blk, mk, _HVESSEL, _INTO_LIVER)
        _paint(st, blk, mk, _PVEIN, _lut([_VAT, _PANCREAS]))

    # --- tumours: inside the liver only ---
    a.n_tumours = 0
    for c, rad in a.tumours:
        blk, rt = _ellipsoid(g, z, c, rad)
        if _paint(st, blk, rt < 1, _TUMOUR, _INTO_TUMOUR) > 0:
            a.n_tumours += 1

    # --- bowel loops (into visceral fat only) ---
    for (cx, cy, cz), rad, ecc, elong, ang, kind, lev in a.loops:
        blk, rl = _ellipsoid(g, z, (cx, cy, cz), (rad, rad * ecc, rad * elong), ang)
        if blk is None:
            continue
        ylev = g.ty + g.s * cx + g.c * (cy + lev * rad * ecc)   # the air-fluid level's image row, mm
        _bowel_loop(st[blk], rl, _INTO_VAT, rad, kind, (_BWALL, _BGAS, _BFLUID, _BFECES),
                    lambda: g.yi[blk[1]][None] < np.float32(ylev))

    # --- HU (noise-free, before the site's calibration) ---
    hu_tab = _hu_table(a)
    tex = _slice_field(a.rng_tex, st.shape, 1.5 / sp)
    img = hu_tab[st] + _TEX_AMP[st] * tex
    cort = st == _CORTEX
    if cort.any():  # partial-volume-corrected cortical HU: the painted rim is >= 1 pixel, the cortex ~1.5 mm
        frac = min(1.0, 1.5 / (max(1, int(round(1.5 / sp))) * sp))
        img[cort] = hu_tab[_BONE] + (img[cort] - hu_tab[_BONE]) * np.float32(frac)
    if a.phase == "arterial":   # arterial-phase spleen: heterogeneous (arciform) enhancement
        spl = st == _SPLEEN
        if spl.any():
            img[spl] += np.float32(30.0) * _slice_field(a.rng_tex, st.shape, 6.0 / sp)[spl]
    return st, img.astype(np.float32), g


def _slice_field(rng: np.random.Generator, shape: tuple[int, int, int], sigma_px: float) -> np.ndarray:
    """Per-slice Gaussian random field, unit SD, Gaussian in-plane correlation ``sigma_px`` pixels."""
    w = rng.standard_normal(shape, dtype=np.float32)
    if sigma_px > 0.15:
        w = ndimage.gaussian_filter(w, (0.0, sigma_px, sigma_px), mode="wrap", truncate=3.0)
        w *= np.float32(1.0 / max(float(w.std()), 1e-6))
    return w


def _hu_table(a: SimpleNamespace) -> np.ndarray:
    """Per-code HU of this subject in its contrast phase (same random draws whatever the phase)."""
    ph = PHASES.index(a.phase)
    zs = np.clip(a.rng_hu.standard_normal(_NCODES), -2.0, 2.0).astype(np.float32)
    hu = _HU_MEAN[:, ph] + _HU_SD[:, ph] * zs
    if a.phase == "arterial" and a.tumour_hyper:
        hu[_TUMOUR] = _TUMOUR_HYPER_ARTERIAL + 5.0 * zs[_TUMOUR]
    hu[_LIVER] -= np.float32(a.liver_fat_hu)   # steatosis: fat lowers the parenchyma's attenuation
    return hu


def _acquire(hu: np.ndarray, sp: float, a: SimpleNamespace, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The site's in-plane reconstruction blur, HU calibration and correlated noise, slice by slice; integer HU.
    Returns (image, noise SD in HU)."""
    prof = LIVER_SITES[a.site]
    img = hu
    if a.blur_mm / sp > 0.1:
        img = ndimage.gaussian_filter(img, (0.0, a.blur_mm / sp, a.blur_mm / sp), mode="nearest", truncate=3.0)
    if prof.hu_scale != 1.0 or a.hu_offset != 0.0:
        w = np.clip((img + np.float32(1000.0)) / np.float32(900.0), 0.0, 1.0)   # 0 at air, 1 from -100 HU up
        img = img + w * (np.float32(prof.hu_scale - 1.0) * img + np.float32(a.hu_offset))
    sd = a.noise_sd * float(np.clip(a.body_w / 330.0, 0.7, 1.8)) ** 1.2
    img = img + np.float32(sd) * _slice_field(rng, img.shape, prof.noise_corr_mm / sp)
    return np.rint(np.clip(img, HU_MIN, HU_MAX)).astype(np.float32), sd


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


def _generate(index: int, site: str, seed: int, size: int, tumours: bool | None = None,
              contrast_phase: str | None = None) -> tuple[AbdomenVolume, np.ndarray]:
    """One volume and its structure-code map (for tests and debugging)."""
    get_liver_site(site)
    if index < 0:
        raise ValueError(f"volume index must be >= 0, got {index}")
    if size < 32:
        raise ValueError(f"abdomen phantom size must be >= 32 pixels, got {size}")
    si = _site_index(site)
    rng = np.random.default_rng(np.random.SeedSequence([seed, si, index]))
    rng_acq = np.random.default_rng(np.random.SeedSequence([seed, si, index, 1]))
    a = _draw_subject(rng, rng_acq, index, site, dict(tumours=tumours, contrast_phase=contrast_phase))
    st, hu, g = _render(a, size)
    image, noise_sd = _acquire(hu, g.sp, a, rng_acq)
    label = _label_lut(LIVER_SITES[site])[st]
    vox_ml = g.sp * g.sp * a.thickness / 1000.0
    counts = np.bincount(label.ravel(), minlength=3)
    vid = f"{site}-{index:04d}"
    meta = dict(
        volume_id=vid, patient_id=vid, index=index, site=site, contrast_phase=a.phase, n_tumours=a.n_tumours,
        liver_volume_ml=round(float(counts[1:].sum() * vox_ml), 2),
        tumour_volume_ml=round(float(counts[2] * vox_ml), 3),
        slice_thickness_mm=a.thickness, spacing_row_mm=g.sp, spacing_col_mm=g.sp, n_slices=int(len(a.z)), size=size,
        fov_mm=round(a.fov_mm, 2), sex=a.sex, age=round(a.age, 1), height_m=round(a.height_m, 3),
        noise_sd_hu=round(noise_sd, 2), liver_fat_hu=round(a.liver_fat_hu, 1),
    )
    return AbdomenVolume(image, label, (a.thickness, g.sp, g.sp), meta), st


def generate_abdomen_volume(index: int, site: str = "lits", seed: int = 0, size: int = 128, *,
                            tumours: bool | None = None, contrast_phase: str | None = None) -> AbdomenVolume:
    """Volume ``index`` of ``site`` as ``(Z, size, size)`` axial slices (float32 integer HU, uint8 labels 0/1/2).

    The anatomy is in mm (``size`` changes only the in-plane sampling: pixel spacing = FOV / size); slice 0
    is the most superior. The volume depends only on ``(seed, site, index)``. ``tumours`` forces tumours on
    (at least one is placed; a very small one may cover no voxel centre at coarse sampling, and
    ``meta["n_tumours"]`` counts the tumours with voxels) or off; ``contrast_phase`` forces ``non_contrast`` /
    ``arterial`` / ``portal_venous``. Everything else about the volume stays the same.
    """
    return _generate(index, site, seed, size, tumours, contrast_phase)[0]


def generate_abdomen_phantom(n: int, size: int = 128, site: str = "lits", seed: int = 0,
                             start: int = 0) -> list[AbdomenVolume]:
    """Volumes ``start .. start+n-1`` of ``site`` (see :func:`generate_abdomen_volume`)."""
    get_liver_site(site)
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
    return [generate_abdomen_volume(start + k, site, seed, size) for k in range(n)]


def volume_affine(spacing: Sequence[float], shape: Sequence[int], z0_mm: float = 0.0) -> np.ndarray:
    """NIfTI (RAS) affine for a volume stored as ``(W, H, Z)`` = ``volume.transpose(2, 1, 0)``: voxel axis 0
    runs along the columns towards the subject's left, axis 1 along the rows towards posterior, axis 2 from
    the most superior slice downwards (axis codes L, P, I); the in-plane centre is at x = y = 0 and slice 0
    at height ``-z0_mm`` (z0: mm below the liver dome)."""
    st, sr, sc = (float(v) for v in spacing)
    _, h, w = shape
    aff = np.diag([-sc, -sr, -st, 1.0])
    aff[:3, 3] = (sc * (w - 1) / 2.0, sr * (h - 1) / 2.0, -float(z0_mm))
    return aff


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray, dtype) -> None:
    import nibabel as nib

    data = np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)).astype(dtype)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def write_abdomen_dataset(out_dir: str | Path, n: int, size: int = 128, site: str = "lits", seed: int = 0) -> Path:
    """Write ``n`` phantom volumes of ``site`` in the LiTS layout under ``out_dir`` and return ``out_dir``.

    Files: ``volume-<i>.nii.gz`` (int16 HU), ``segmentation-<i>.nii.gz`` (uint8: 0 background, 1 liver,
    2 tumour), ``meta.csv`` (one row per volume; ``id`` = the LiTS reader's case id ``volume-<i>``) and
    ``phantom.json`` (parameters and site profile). Arrays are stored ``(W, H, Z)`` with the affine of
    :func:`volume_affine` (spacing on its diagonal), so ``build_reader("lits", out_dir)`` returns each volume
    in LPS as ``volume[::-1]`` (z increasing superior), anterior at row 0, the subject's left on the right.
    ``out_dir`` must not exist or be empty (``FileExistsError`` otherwise: never overwrites); the set is built in
    a temporary sibling directory and renamed into place.
    """
    get_liver_site(site)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    with new_directory(out_dir, "abdomen phantom") as tmp:
        rows = []
        for i in range(n):
            vol = generate_abdomen_volume(i, site=site, seed=seed, size=size)
            aff = volume_affine(vol.spacing, vol.image.shape)
            _save_nifti(tmp / f"volume-{i}.nii.gz", vol.image, aff, np.int16)
            _save_nifti(tmp / f"segmentation-{i}.nii.gz", vol.label, aff, np.uint8)
            rows.append({"id": f"volume-{i}", **vol.meta})
        meta = pd.DataFrame(rows, columns=["id", *META_KEYS])
        meta.to_csv(tmp / "meta.csv", index=False)
        info = dict(generator="musclelab.phantoms.abdomen", layout="lits", n=n, size=size, site=site, seed=seed,
                    site_profile=asdict(LIVER_SITES[site]), labels=list(LABEL_NAMES),
                    axis_convention="voxel array (W, H, Z) = volume.transpose(2, 1, 0); axis 0 -> subject left, "
                                    "axis 1 -> posterior, axis 2 -> inferior (slice 0 most superior); "
                                    "affine diag(-col_mm, -row_mm, -thickness_mm) in RAS")
        (tmp / "phantom.json").write_text(json.dumps(info, indent=2) + "\n")
    return Path(out_dir)
