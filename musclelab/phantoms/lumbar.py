"""Built-in synthetic lumbar CT volumes (about L1–L5) with the five L3 muscles labelled on every slice.

Why a new phantom instead of extending ``data/phantom.py``: the L3 phantom draws one axial slice (its anatomy is
a function of the in-plane angle only), while Kawamoto et al. 2024 segment muscles slice by slice through whole
volumes, and what makes their small targets hard is how the muscles change *along the spine*. This module draws
the lumbar region as tubes whose cross-sections vary with height, on the shared primitives of
:mod:`musclelab.phantoms.primitives` (the thigh and abdomen phantoms use the same ones).

Anatomy (mm; x towards the subject's left, y posterior, z superior; origin at the vertebral-body axis):

* five vertebrae L5..L1 (cancellous body with a cortical rim, discs between them, canal, laminae, spinous and
  transverse processes), iliac wings beside L5, kidneys from L1 to L3, the liver tip at L1–L2 on the right;
* **erector spinae** (ESM): large, present on every slice, beside the spinous processes — the easy partner;
* **psoas major**: born at L1 (absent above), growing caudally to its largest at L4–L5;
* **quadratus lumborum** (QL): from the 12th rib (upper L1) to the iliac crest (upper L5), thin (1.5–12 mm)
  and wedged between the ESM, the psoas and the kidney with the same HU as its neighbours, separated from them
  only by a thin fat plane (visible at pixels of 3 mm or finer) — absent on the top and bottom slices;
* **obliques** (external, internal oblique and transversus as one band): a thin curved lateral wall band whose
  thickness changes along z, fading to nothing over a subject-specific gap (and above L1, under the ribs);
* **rectus abdominis**: two anterior lens-shaped bands either side of the linea alba;
* subcutaneous and visceral fat, bowel loops with gas, skin, the CT table.

Labels: 0 background, 1 erector_spinae, 2 quadratus_lumborum, 3 psoas_major, 4 obliques, 5 rectus_abdominis
(left and right merged), as the L3 phantom's ``muscles`` target. Volume ``i`` of ``seed`` is drawn from
``SeedSequence([seed, site, i])`` (:func:`~musclelab.phantoms.primitives.subject_rngs`): bit-identical between
runs, and ``n`` volumes are a prefix of any larger set. Defaults are tiny for CPUs: 64 x 64 pixels, 7.5 mm
slices (about 24 slices from L1 to L5, with the L3 mid-slice marked in ``meta["l3_index"]``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from musclelab.phantoms.primitives import (
    Grid,
    SiteEffects,
    acquire,
    ellipse_rho,
    fat_planes,
    fourier_coefs,
    lut,
    paint,
    smoothstep,
    subject_rngs,
    tube,
    z_centres,
    z_range,
)

CLASS_NAMES: tuple[str, ...] = (
    "background", "erector_spinae", "quadratus_lumborum", "psoas_major", "obliques", "rectus_abdominis",
)
LEVELS: tuple[str, ...] = ("L5", "L4", "L3", "L2", "L1")   # caudal to cranial, as z increases
VERTEBRA_MM, DISC_MM = 28.0, 9.0                          # heights of one vertebral body and one disc

# structure codes (painted in order; each maps to HU and to the label map)
(_AIR, _TABLE, _SKIN, _SAT, _VAT, _IMAT, _ESM, _QL, _PSOAS, _OBL, _RECT, _BONE, _CORTEX, _DISC, _CANAL,
 _KIDNEY, _LIVER, _BOWEL, _GAS) = range(19)
_NCODES = 19
_LABEL_LUT = lut(_NCODES, (_ESM, _QL, _PSOAS, _OBL, _RECT), np.uint8, [1, 2, 3, 4, 5])
_SOFT = lut(_NCODES, (_VAT, _IMAT))

SITES: dict[str, SiteEffects] = {
    "a": SiteEffects(blur_mm=0.8, blur_z_mm=0.0, noise_sd=14.0, noise_corr_mm=1.0),
    "b": SiteEffects(blur_mm=1.6, blur_z_mm=1.0, hu_offset=20.0, noise_sd=30.0, noise_corr_mm=1.5),
}


@dataclass
class LumbarVolume:
    """One lumbar volume: ``image`` float32 (Z, H, W) HU, ``label`` uint8 (Z, H, W) (:data:`CLASS_NAMES`),
    ``spacing`` (slice thickness, row, col) mm, ``l3_index`` the slice through the middle of L3,
    ``levels`` vertebra name -> (bottom, top) z in mm, ``meta`` the subject's draws."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    l3_index: int
    volume_id: str
    levels: dict[str, tuple[float, float]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def _hu_table(rng: np.random.Generator) -> np.ndarray:
    """HU per structure code for one subject (muscles share one HU: their boundaries are anatomical)."""
    muscle = float(rng.normal(48.0, 6.0))
    hu = np.zeros(_NCODES, np.float32)
    hu[[_AIR, _TABLE, _SKIN, _SAT, _VAT, _IMAT]] = [-1000.0, -400.0, 30.0, -105.0, -92.0, -60.0]
    hu[[_ESM, _QL, _PSOAS, _OBL, _RECT]] = muscle + rng.normal(0.0, 2.0, 5)
    hu[[_BONE, _CORTEX, _DISC, _CANAL]] = [float(rng.uniform(160.0, 260.0)), 650.0, 85.0, 15.0]
    hu[[_KIDNEY, _LIVER, _BOWEL, _GAS]] = [muscle - 10.0, muscle + 8.0, muscle - 15.0, -850.0]
    return hu


def generate_lumbar_volume(index: int, size: int = 64, thickness_mm: float = 7.5, seed: int = 0,
                           site: str = "a") -> LumbarVolume:
    """Draw lumbar volume ``index`` (deterministic in ``(seed, site, index)``; anatomy in mm, so ``size`` and
    ``thickness_mm`` change only the sampling)."""
    if site not in SITES:
        raise ValueError(f"data.source.site '{site}' unknown for the lumbar phantom; known sites: {', '.join(SITES)}")
    if size < 16 or thickness_mm <= 0:
        raise ValueError(f"lumbar phantom needs size >= 16 px and thickness_mm > 0, got {size}, {thickness_mm}")
    rng, rng_acq = subject_rngs(seed, list(SITES).index(site), index)
    frame = float(np.clip(rng.normal(1.0, 0.06), 0.85, 1.15))       # skeletal scale
    mus = float(np.clip(rng.normal(1.0, 0.12), 0.65, 1.3))          # muscle scale
    t_sat = float(np.clip(rng.lognormal(np.log(20.0), 0.35), 7.0, 45.0))
    vat = float(np.clip(rng.lognormal(np.log(0.5), 0.4), 0.15, 1.5))

    # vertebral levels along z (mm, from the bottom of L5), with a margin above and below
    margin = 6.0
    levels, z0 = {}, margin
    for name in LEVELS:
        h = VERTEBRA_MM * frame * float(rng.uniform(0.95, 1.05))
        levels[name] = (z0, z0 + h)
        z0 += h + DISC_MM * frame
    height = z0 - DISC_MM * frame + margin
    n_z = max(int(round(height / thickness_mm)), 4)
    z = z_centres(n_z, thickness_mm)
    zt = np.clip((z - levels["L5"][0]) / (levels["L1"][1] - levels["L5"][0]), 0.0, 1.0)   # 0 L5 bottom .. 1 L1 top

    A = (118.0 * frame + 22.0 * vat) * (1.0 + 0.06 * zt)             # fascia half-width (lateral), per slice
    B_ant = 78.0 * frame + 55.0 * vat
    B_post = 62.0 * frame * (0.9 + 0.1 * mus)
    cy = (B_post - B_ant) / 2.0                                      # fascia ellipse centre (y)
    Bf = (B_post + B_ant) / 2.0
    fov = 2.0 * (float(A.max()) + t_sat) * 1.12 + 16.0
    sp = fov / size
    g = Grid(size, sp, shift=(float(rng.normal(0.0, 4.0)), float(-cy * 0.6 + rng.normal(0.0, 4.0))),
             rotation=float(rng.normal(0.0, 0.03)))
    st = np.full((n_z, size, size), _AIR, np.uint8)
    X3 = np.broadcast_to(g.X, st.shape)
    Y3 = np.broadcast_to(g.Y, st.shape)
    zall = slice(0, n_z)
    body_coefs = fourier_coefs(rng, 0.03, 4)

    # body: skin, subcutaneous fat, then the fascia with visceral fat inside
    sat = t_sat * (1.0 + 0.2 * np.cos(np.linspace(0, np.pi, n_z)))
    rho_body = ellipse_rho(X3, Y3, 0.0, cy, A + sat + 2.0, Bf + sat + 2.0, coefs=body_coefs)
    st[rho_body < 1.0] = _SKIN
    st[ellipse_rho(X3, Y3, 0.0, cy, A + sat, Bf + sat, coefs=body_coefs) < 1.0] = _SAT
    rho_f = ellipse_rho(X3, Y3, 0.0, cy, A, Bf, coefs=body_coefs)
    fascia = rho_f < 1.0
    st[fascia] = _VAT
    # CT table below the back
    y_tab = cy + float((Bf + sat.max()) * 1.0) + 4.0
    st[:, (g.Y[:, :1] > y_tab)[:, 0] & (g.Y[:, :1] < y_tab + 10.0)[:, 0], :] = _TABLE

    # abdominal wall: depth inside the fascia along the ray from the fascia centre, and the angle from the
    # anterior midline (0) to the posterior midline (pi)
    Xc, Yr = X3, Y3 - np.float32(cy)
    phi = np.arctan2(np.abs(Xc), -Yr)
    r = np.sqrt(Xc * Xc + Yr * Yr)
    depth = (1.0 - rho_f) * r / np.maximum(rho_f, 1e-3)            # mm inside the (perturbed) fascia
    zc = lambda v: np.asarray(v, np.float32).reshape(-1, 1, 1)       # noqa: E731 - per-slice column
    # rectus abdominis: lens-shaped bands beside the linea alba, thicker caudally
    la = (5.0 + 4.0 * vat) / Bf
    w_r = 62.0 * frame / Bf * float(rng.uniform(0.9, 1.1))
    u = (phi - la) / w_r
    t_rect = zc(11.0 * frame * mus * (1.05 - 0.25 * zt)) * 2.0 * np.sqrt(np.clip(u * (1.0 - u), 0.0, None))
    paint(st, (zall,), fascia & (depth < t_rect), _RECT)
    # obliques: a thin lateral band; thickness varies along z and fades to 0 over a subject-specific gap and
    # above L1 (under the ribs)
    o0, o1 = la + w_r + 10.0 / Bf, 2.05 + float(rng.uniform(-0.1, 0.1))
    gap_c = float(rng.uniform(0.05, 0.95))
    gap_w = float(rng.uniform(0.06, 0.16))
    gap = 1.0 - np.exp(-(((zt - gap_c) / gap_w) ** 2) * 3.0)
    t_obl_z = 11.0 * frame * mus * (0.5 + 0.6 * np.sin(np.pi * (0.2 + 0.7 * zt))) * gap
    t_obl_z = t_obl_z * (1.0 - smoothstep(0.93, 1.0, zt))
    ang = smoothstep(o0, o0 + 0.25, phi) * (1.0 - smoothstep(o1 - 0.35, o1, phi))
    t_obl = zc(t_obl_z) * ang * (1.0 + 0.25 * np.sin(3.0 * phi + float(rng.uniform(0, 6.3))))
    paint(st, (zall,), fascia & (depth < t_obl) & (t_obl > 1.0), _OBL)

    # spine: bodies, discs, canal, laminae, spinous/transverse processes
    r_vb = 19.0 * frame
    for name, (lo, hi) in levels.items():
        zsl = z_range(z, lo, hi)
        blk, rho = tube(g, z, zsl, 0.0, 0.0, r_vb * 1.12, r_vb)
        paint(st, blk, rho < 1.0, _CORTEX)
        paint(st, blk, rho < 0.85, _BONE)
        blk, rho = tube(g, z, zsl, 0.0, r_vb + 14.0, 13.0, 10.0)       # arch around the canal
        paint(st, blk, rho < 1.0, _CORTEX)
        blk, rho = tube(g, z, zsl, 0.0, r_vb + 35.0 * frame, 4.0, 16.0 * frame)   # spinous process
        paint(st, blk, rho < 1.0, _CORTEX)
        for s in (-1, 1):                                             # transverse processes
            blk, rho = tube(g, z, zsl, s * 30.0 * frame, r_vb + 6.0, 14.0 * frame, 3.5, angle=0.0)
            paint(st, blk, rho < 1.0, _CORTEX)
    for k in range(len(LEVELS) - 1):
        zsl = z_range(z, levels[LEVELS[k]][1], levels[LEVELS[k + 1]][0])
        blk, rho = tube(g, z, zsl, 0.0, 0.0, r_vb * 1.12, r_vb)
        paint(st, blk, rho < 1.0, _DISC)
    blk, rho = tube(g, z, zall, 0.0, r_vb + 14.0, 7.0, 5.5)
    paint(st, blk, rho < 1.0, _CANAL)
    # iliac wings beside L5 (below them there is no QL)
    crest = levels["L5"][1] - 4.0
    for s in (-1, 1):
        zsl = z_range(z, 0.0, crest)
        if zsl is not None:
            n = zsl.stop - zsl.start
            ax = np.linspace(0.6, 1.0, n)[::-1] * 30.0 * frame
            blk, rho = tube(g, z, zsl, s * 78.0 * frame, 28.0, ax, 8.0, angle=s * 0.5)
            paint(st, blk, rho < 1.0, _CORTEX, into=_SOFT)
            paint(st, blk, rho < 0.7, _BONE, into=lut(_NCODES, (_CORTEX,)))

    # posterior muscles, per side
    def side_coefs() -> np.ndarray:
        return fourier_coefs(rng, 0.08, 4)

    post = cy + Bf                                                    # posterior fascia at the midline (y)
    for s in (-1, 1):
        # erector spinae: large, every slice; slightly smaller cranially
        a_e = 23.0 * frame * mus * (1.05 - 0.15 * zt)
        b_e = 20.0 * frame * mus * (1.05 - 0.1 * zt)
        cx_e = s * (8.0 + a_e)
        cy_e = post - b_e - 3.0
        blk, rho = tube(g, z, zall, cx_e, cy_e, a_e, b_e, angle=s * 0.15, coefs=side_coefs())
        paint(st, blk, rho < 1.0, _ESM, into=lut(_NCODES, (_VAT, _SAT)))
        # psoas: absent above mid-L1, growing caudally
        p_top = (levels["L1"][0] + levels["L1"][1]) / 2.0
        grow = np.clip((p_top - z) / (p_top - levels["L4"][0]), 0.0, 1.0) ** 0.7
        r_p = 22.0 * frame * mus * grow
        blk, rho = tube(g, z, zall, s * (r_vb + 0.8 * r_p + 2.0), -4.0 + 0.3 * r_p, r_p * 0.95, r_p * 0.85,
                        coefs=side_coefs())
        paint(st, blk, rho < 1.0, _PSOAS, into=_SOFT)
        # quadratus lumborum: rib (upper L1) to iliac crest, thin, lateral to the ESM, behind the kidney
        q_lo, q_hi = crest + 2.0, levels["L1"][1] - 4.0 * frame
        q = np.clip((z - q_lo) / (q_hi - q_lo), 0.0, 1.0)
        inside = (z >= q_lo) & (z <= q_hi)
        bump = np.clip(np.sin(np.pi * q), 0.0, 1.0)
        thick = np.where(inside, (1.5 + 9.0 * mus * bump ** 0.8) * float(rng.uniform(0.7, 1.2)), 0.0)
        wide = np.where(inside, 18.0 * frame + 16.0 * frame * bump, 0.0)
        cx_q = s * (8.0 + 2.0 * a_e + 0.6 * wide - 4.0)
        cy_q = cy_e - b_e * 0.45
        blk, rho = tube(g, z, zall, cx_q, cy_q, wide * 0.6, thick / 2.0 + 0.5, angle=s * -0.55)
        paint(st, blk, rho < 1.0, _QL, into=_SOFT)

    # organs: kidneys (L1-L3) right against the QL and psoas, the liver tip at L1-L2 (subject's right)
    k_lo, k_hi = levels["L3"][0] + 6.0, levels["L1"][1] + 6.0
    for s in (-1, 1):
        zsl = z_range(z, k_lo, k_hi)
        if zsl is not None:
            zz = z[zsl]
            prof = np.sqrt(np.clip(1.0 - ((zz - (k_lo + k_hi) / 2) / ((k_hi - k_lo) / 2)) ** 2, 0.0, None))
            blk, rho = tube(g, z, zsl, s * 58.0 * frame, 22.0, 26.0 * prof * frame, 18.0 * prof * frame,
                            angle=s * 0.6, coefs=side_coefs())
            paint(st, blk, rho < 1.0, _KIDNEY, into=_SOFT)
    zsl = z_range(z, levels["L2"][0], float(z[-1]) + thickness_mm)
    if zsl is not None:
        n = zsl.stop - zsl.start
        grow = np.linspace(0.3, 1.0, n)
        blk, rho = tube(g, z, zsl, -70.0 * frame, -20.0, 45.0 * grow, 35.0 * grow)
        paint(st, blk, rho < 1.0, _LIVER, into=lut(_NCODES, (_VAT,)))
    # bowel loops with gas in the anterior cavity
    for _ in range(int(rng.integers(5, 10))):
        bx, by = float(rng.uniform(-0.6, 0.6)) * float(A.min()), cy - float(rng.uniform(0.1, 0.6)) * Bf
        zc0, zlen = float(rng.uniform(0.0, height)), float(rng.uniform(20.0, 70.0))
        zsl = z_range(z, zc0 - zlen / 2, zc0 + zlen / 2)
        rb = float(rng.uniform(9.0, 18.0))
        blk, rho = tube(g, z, zsl, bx, by, rb, rb * float(rng.uniform(0.6, 1.0)))
        paint(st, blk, rho < 1.0, _BOWEL, into=lut(_NCODES, (_VAT,)))
        if rng.random() < 0.6:
            paint(st, blk, rho < 0.5, _GAS, into=lut(_NCODES, (_BOWEL,)))

    label = _LABEL_LUT[st]
    spacing = (float(thickness_mm), sp, sp)
    # thin fat planes between touching muscles (the only cue separating QL from ESM / psoas), in-plane only and
    # only where the pixels resolve them (<= 3 mm); coarser images show no boundary at all
    planes = fat_planes(label, 3.0, (1e9, sp, sp))
    hu = _hu_table(rng)
    ideal = hu[st]
    ideal[planes] = np.float32(0.5) * ideal[planes] + np.float32(0.5) * hu[_IMAT]
    image = acquire(ideal, spacing, SITES[site], rng_acq, noise_scale=float(A.mean()) / 130.0)
    l3 = levels["L3"]
    l3_index = int(np.argmin(np.abs(z - (l3[0] + l3[1]) / 2.0)))
    vid = f"lumbar-{site}-{index:04d}"
    meta = {"patient_id": vid, "volume_id": vid, "site": site, "frame": round(frame, 4), "muscle_scale": round(mus, 4),
            "sat_mm": round(t_sat, 2), "vat": round(vat, 3), "n_slices": n_z, "l3_index": l3_index,
            "slice_thickness_mm": float(thickness_mm), "pixel_mm": round(sp, 4)}
    return LumbarVolume(image, label, spacing, l3_index, vid, levels, meta)


def slice_level(volume: LumbarVolume, k: int) -> str:
    """The vertebra (``L1``..``L5``) or disc (``L4/L5``) slice ``k`` of ``volume`` passes through, or ``''``."""
    zk = (k + 0.5) * volume.spacing[0]
    names = list(volume.levels)
    for i, name in enumerate(names):
        lo, hi = volume.levels[name]
        if lo <= zk <= hi:
            return name
        if i + 1 < len(names) and hi < zk < volume.levels[names[i + 1]][0]:
            return f"{name}/{names[i + 1]}"
    return ""
