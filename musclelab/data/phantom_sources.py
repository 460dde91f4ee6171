"""The built-in phantoms (:mod:`musclelab.phantoms`) in the forms a source serves: 2D slices
(:class:`~musclelab.data.containers.SourceData`) and volumes for the volume store
(:class:`~musclelab.data.volume_cache.GeneratedVolumes`), each with the class names its settings give.

The registry that names them (``data.name``) is :mod:`musclelab.data.sources`; a source only reads or generates
data — splitting, windowing and augmentation happen downstream, so every source trains like every other.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from musclelab.data.case import Case
from musclelab.data.containers import OriginalSlice, SliceSet, SourceData
from musclelab.data.volume_cache import GeneratedVolumes, VolumeItems

# --- the L3 phantom (2D) ----------------------------------------------------------------------------------------


def l3_class_names(target: str = "muscle", **_: Any) -> tuple[str, ...] | None:
    from musclelab.phantoms.l3 import LABEL_MAPS

    names = LABEL_MAPS.get(str(target))
    return tuple(names) if names is not None else None


def l3_slices(
    *, img_size: int, target: str = "muscle", site: str = "a", n_cases: int = 160,
    test_site: str | None = None, n_test_cases: int = 40, phantom_seed: int = 0, n_observers: int = 0,
    observer_cases: int | None = None, native_size: int | None = None,
) -> SourceData:
    """The built-in L3 phantom: ``n_cases`` subjects at ``site``; with ``test_site`` the test set is
    ``n_test_cases`` subjects of that other site (domain shift) instead of a hold-out of the pool.
    ``n_observers`` simulated readers re-contour every slice (for comparisons with human observers), or only the
    last ``observer_cases`` subjects of the pool (meta ``has_observers``; as the paper's observers contoured
    only its 37 test images: ``data.test_set=observers`` makes them the test set).
    ``native_size``: acquire the slices at this size (px; the scanner's grid, e.g. 512) and resize them to
    ``img_size`` exactly as the slice store resizes real CT (:func:`musclelab.data.preprocess.resize_slices`);
    the observers contour the acquired slice. The slices as acquired are then the set's ``originals``
    (regenerated on demand: subject ``i`` depends only on the seed, site and ``i``), on which body composition
    is scored. None: generated at ``img_size``, which is then also the original grid."""
    from musclelab.phantoms.l3 import LABEL_MAPS, generate_phantom, observer_masks

    if target not in LABEL_MAPS:
        raise ValueError(f"data.target '{target}' unknown for the phantom; known targets: {', '.join(LABEL_MAPS)}")
    size = int(native_size) if native_size else int(img_size)
    if size < int(img_size):
        raise ValueError(f"data.source.native_size={native_size} is smaller than data.img_size={img_size}: the "
                         "acquired slice must be at least the network's size (or null)")
    resized = size != int(img_size)

    def observers_of(labels: np.ndarray, spacing: np.ndarray, index: np.ndarray) -> np.ndarray:
        """``(n, n_observers, H, W)`` simulated contours of the subjects ``index`` (seeded per subject)."""
        return np.stack([observer_masks(lab, sp, n_observers, seed=(phantom_seed, int(i)))
                         for lab, sp, i in zip(labels, spacing, index)])

    def make(site_: str, n: int) -> SliceSet:
        from musclelab.data.preprocess import resize_labels, resize_slices

        ph = generate_phantom(n=n, size=size, site=site_, seed=phantom_seed)
        meta = ph.meta.copy()
        if "case_id" not in meta.columns:
            meta["case_id"] = meta["patient_id"]
        images, labels, spacing = ph.images.astype(np.float32), ph.labels[target], np.asarray(ph.spacing, float)
        observers = None
        if n_observers > 0:
            per_case = observers_of(labels, spacing, np.arange(len(labels)))
            observers = {f"observer_{j + 1}": resize_labels(per_case[:, j], img_size) for j in range(n_observers)}
            if observer_cases is not None and site_ == site:  # the pool: only the last observer_cases subjects
                if not 0 < observer_cases < len(labels):
                    raise ValueError(f"data.source.observer_cases={observer_cases} must be in 1..{len(labels) - 1}")
                meta["has_observers"] = np.arange(len(labels)) >= len(labels) - observer_cases
        originals = None
        if resized:
            images, labels = resize_slices(images, labels, int(img_size))
            spacing = spacing * (size / int(img_size))
            meta["native_size"] = size
            meta["size"], meta["spacing_row_mm"], meta["spacing_col_mm"] = int(img_size), spacing[:, 0], spacing[:, 1]
            index_of = {str(c): i for i, c in enumerate(meta["case_id"])}
            contoured = meta["has_observers"].to_numpy(bool) if "has_observers" in meta else np.ones(n, bool)

            def originals(case_id: str) -> OriginalSlice:
                i = index_of[str(case_id)]
                one = generate_phantom(n=1, size=size, site=site_, seed=phantom_seed, start=i)
                lab, sp = one.labels[target][0], np.asarray(one.spacing[0], float)
                obs = {}
                if n_observers > 0 and contoured[i]:
                    per = observers_of(lab[None], sp[None], np.array([i]))[0]
                    obs = {f"observer_{j + 1}": per[j] for j in range(n_observers)}
                return OriginalSlice(one.images[0].astype(np.float32), lab, (float(sp[0]), float(sp[1])), obs)
        return SliceSet(images, labels, spacing, meta, tuple(LABEL_MAPS[target]), observers, originals)

    pool = make(site, n_cases)
    external = make(test_site, n_test_cases) if test_site else None
    return SourceData(pool, external)


# --- the abdominal phantom (2D slices and 3D volumes) ------------------------------------------------------------


def abdomen_target(target: str) -> tuple[str, np.ndarray, tuple[str, ...]]:
    """``(target, lut, class_names)`` of the abdomen phantom's ``target`` (liver | tumour | liver_tumour, or an
    alias): ``lut`` maps the phantom's raw labels (0 background, 1 liver, 2 tumour) to the target's classes."""
    from musclelab.phantoms.abdomen import TARGET_ALIASES, TARGETS

    target = TARGET_ALIASES.get(str(target), str(target))
    if target not in TARGETS:
        raise ValueError(f"data.source.target '{target}' unknown for the abdomen phantom; known targets: "
                         f"{', '.join(TARGETS)}")
    mapping, class_names = TARGETS[target]
    lut = np.zeros(256, np.uint8)
    for raw, cls in mapping.items():
        lut[raw] = cls
    return target, lut, tuple(class_names)


def abdomen_class_names(target: str = "liver", **_: Any) -> tuple[str, ...] | None:
    try:
        return abdomen_target(target)[2]
    except ValueError:
        return None


def _check_liver_site(field_: str, value: str | None) -> None:
    from musclelab.phantoms.abdomen import LIVER_SITES

    if value is not None and value not in LIVER_SITES:
        raise ValueError(f"data.source.{field_} '{value}' unknown for the abdomen phantom; known sites: "
                         f"{', '.join(LIVER_SITES)}")


def abdomen_slices(*, img_size: int, site: str = "lits", n_volumes: int = 20, target: str = "liver",
                   slices: str = "target", margin: int = 2, phantom_seed: int = 0,
                   test_site: str | None = None, n_test_volumes: int = 6) -> SourceData:
    """The built-in 3D abdominal phantom with a liver: ``n_volumes`` volumes of ``site`` (lits | btcv | chaos),
    served as 2D axial slices. ``target``: liver (label >= 1) | tumour (label 2) | liver_tumour (3 classes);
    ``slices``: ``target`` (slices containing the target +- ``margin`` slices) or ``all``. A volume's slices
    share its ``patient_id`` (patient-level splits keep them together). With ``test_site`` the test set is
    ``n_test_volumes`` volumes of that site (drawn after the pool's volumes when it is the pool's own site)."""
    from musclelab.data.preprocess import target_slice_indices
    from musclelab.phantoms.abdomen import LIVER_SITES, generate_abdomen_volume

    target, lut, class_names = abdomen_target(target)
    _check_liver_site("site", site)
    _check_liver_site("test_site", test_site)
    if slices not in ("target", "all"):
        raise ValueError(f"data.source.slices must be 'target' or 'all', got '{slices}'")
    if int(margin) < 0:
        raise ValueError(f"data.source.margin must be >= 0, got {margin}")
    if int(n_volumes) < 1:
        raise ValueError(f"data.source.n_volumes must be >= 1, got {n_volumes}")

    def make(site_: str, n: int, start: int, what: str) -> SliceSet:
        images, labels, spacing, rows = [], [], [], []
        for i in range(start, start + n):
            vol = generate_abdomen_volume(i, site=site_, seed=phantom_seed, size=img_size)
            lab = lut[vol.label]
            index = np.arange(len(lab)) if slices == "all" else target_slice_indices(lab, int(margin))
            if len(index) == 0:
                continue
            images.append(vol.image[index])
            labels.append(lab[index])
            spacing.append(np.tile([vol.spacing[1], vol.spacing[2]], (len(index), 1)))
            for k in index:
                rows.append({"case_id": f"{vol.meta['volume_id']}_z{int(k):03d}", "slice_index": int(k), **vol.meta})
        if not rows:
            raise ValueError(f"no slice of the {n} abdomen phantom volumes of site '{site_}' ({what}) contains the "
                             f"target '{target}' (site {site_} has tumours in {LIVER_SITES[site_].p_tumour:.0%} of "
                             "volumes): use more volumes, another site or target, or data.source.slices=all")
        meta = pd.DataFrame(rows)
        lead = ["case_id", "patient_id", "slice_index", "site", "contrast_phase"]
        meta = meta[lead + [c for c in meta.columns if c not in lead]]
        return SliceSet(np.concatenate(images).astype(np.float32), np.concatenate(labels), np.concatenate(spacing),
                        meta, class_names)

    pool = make(site, int(n_volumes), 0, "data.source.n_volumes")
    external = None
    if test_site:
        start = int(n_volumes) if test_site == site else 0
        external = make(test_site, int(n_test_volumes), start, "data.source.n_test_volumes")
    return SourceData(pool, external)


def abdomen_volumes(*, site: str = "lits", n_volumes: int = 20, target: str = "liver", size: int = 128,
                    phantom_seed: int = 0) -> VolumeItems:
    """The built-in abdominal phantom (:mod:`musclelab.phantoms.abdomen`) as whole volumes (z flipped to the
    project's superior-increasing convention); ``target`` as for the slices."""
    from musclelab.phantoms.abdomen import generate_abdomen_volume, get_liver_site

    get_liver_site(site)
    target, lut, names = abdomen_target(target)

    def make(i: int) -> tuple[Case, dict[str, np.ndarray]]:
        v = generate_abdomen_volume(i, site=site, seed=int(phantom_seed), size=int(size))
        return Case(v.meta["volume_id"], v.meta["patient_id"], v.image[::-1].copy(), lut[v.label][::-1].copy(),
                    v.spacing, {k: v.meta[k] for k in ("site", "sex", "height_m")}), {}

    return GeneratedVolumes("abdomen_phantom", names, int(n_volumes),
                            dict(site=site, target=target, size=int(size), phantom_seed=int(phantom_seed)), make)


# --- the lumbar phantom (2D slices, with their whole volumes) ----------------------------------------------------

LUMBAR_SLICES = ("all", "l3")


def lumbar_class_names(**_: Any) -> tuple[str, ...]:
    from musclelab.phantoms.lumbar import CLASS_NAMES

    return tuple(CLASS_NAMES)


def lumbar_slices(*, img_size: int, n_volumes: int = 30, thickness_mm: float = 7.5, site: str = "a",
                  slices: str = "all", margin: int = 0, phantom_seed: int = 0) -> SourceData:
    """``n_volumes`` lumbar volumes (L1–L5) of ``site`` at ``img_size`` px and ``thickness_mm`` slices, one patient
    per volume; meta ``slice_index``, ``level`` and ``is_l3`` (the L3 mid-slice). ``slices``: ``all`` (every slice)
    or ``l3`` (the L3 mid-slice ± ``margin`` slices). The whole volumes come along for volume-level scoring."""
    from musclelab.phantoms.lumbar import CLASS_NAMES, SITES, generate_lumbar_volume, slice_level

    if int(n_volumes) < 1:
        raise ValueError(f"data.source.n_volumes must be >= 1, got {n_volumes}")
    if site not in SITES:
        raise ValueError(f"data.source.site '{site}' unknown for the lumbar phantom; known sites: {', '.join(SITES)}")
    if slices not in LUMBAR_SLICES:
        raise ValueError(f"data.source.slices must be one of {', '.join(LUMBAR_SLICES)}, got '{slices}'")
    if float(thickness_mm) <= 0:
        raise ValueError(f"data.source.thickness_mm must be > 0, got {thickness_mm}")

    def volume(i: int):
        return generate_lumbar_volume(i, size=img_size, thickness_mm=float(thickness_mm), seed=phantom_seed,
                                      site=site)

    images, labels, spacing, rows = [], [], [], []
    for i in range(int(n_volumes)):
        v = volume(i)
        n_z = len(v.image)
        index = np.arange(n_z) if slices == "all" else \
            np.arange(max(v.l3_index - int(margin), 0), min(v.l3_index + int(margin) + 1, n_z))
        images.append(v.image[index])
        labels.append(v.label[index])
        spacing.append(np.tile(v.spacing[1:], (len(index), 1)))
        for k in index:
            rows.append({"case_id": f"{v.volume_id}_z{int(k):03d}", "patient_id": v.volume_id,
                         "slice_index": int(k), "level": slice_level(v, int(k)), "is_l3": bool(k == v.l3_index),
                         "site": site, "slice_thickness_mm": float(v.spacing[0])})
    pool = SliceSet(np.concatenate(images), np.concatenate(labels), np.concatenate(spacing),
                    pd.DataFrame(rows), CLASS_NAMES)
    ids = {f"lumbar-{site}-{i:04d}": i for i in range(int(n_volumes))}

    def load(patient_id: str) -> list[Case]:
        v = volume(ids[patient_id])
        return [Case(v.volume_id, v.volume_id, v.image, v.label, tuple(v.spacing), {"l3_index": v.l3_index})]

    return SourceData(pool, volumes=load)


# --- the thigh phantom (3D) -------------------------------------------------------------------------------------


def thigh_class_names(**_: Any) -> tuple[str, ...]:
    from musclelab.phantoms.thigh import CLASS_NAMES

    return tuple(CLASS_NAMES)


def thigh_volumes(*, n_volumes: int = 20, size: int = 64, n_slices: int = 48, phantom_seed: int = 0,
                  fat_plane_mm: float = 2.0, rater_sd_mm: float = 1.5, n_raters: int = 2) -> VolumeItems:
    """The built-in thigh phantom (:mod:`musclelab.phantoms.thigh`): ``n_volumes`` subjects of ``size`` pixels
    in-plane and ``n_slices`` slices, with ``n_raters`` raters (``rater_sd_mm`` boundary disagreement)."""
    from musclelab.phantoms.thigh import CLASS_NAMES, generate_thigh_volume

    if int(n_volumes) < 1:
        raise ValueError(f"data.source.n_volumes must be >= 1, got {n_volumes}")
    params = dict(size=int(size), n_slices=int(n_slices), phantom_seed=int(phantom_seed),
                  fat_plane_mm=float(fat_plane_mm), rater_sd_mm=float(rater_sd_mm), n_raters=int(n_raters))

    def make(i: int) -> tuple[Case, dict[str, np.ndarray]]:
        v = generate_thigh_volume(i, seed=params["phantom_seed"], size=params["size"], n_slices=params["n_slices"],
                                  fat_plane_mm=params["fat_plane_mm"], rater_sd_mm=params["rater_sd_mm"],
                                  n_raters=params["n_raters"])
        meta = {k: v.meta[k] for k in v.meta if k not in ("case_id", "patient_id")}
        return Case(v.meta["case_id"], v.meta["patient_id"], v.image, v.label, v.spacing, meta), v.raters

    return GeneratedVolumes("thigh_phantom", CLASS_NAMES, int(n_volumes), params, make)
