"""Volume data sets chosen by name (``data.name`` with ``data.spatial_dims: 3``): each becomes a cached
:class:`~musclelab.data.volumes.VolumeSet`.

``thigh_phantom`` and ``abdomen_phantom`` are generated; ``msd``, ``lits``, ``btcv`` and ``chaos`` are read from
``data.root`` through their readers after a header check (:func:`musclelab.data.verify.verify_dataset`), exactly
like the slice sources, then preprocessed into the volume cache.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from musclelab.data.case import Case
from musclelab.data.volume_cache import GeneratedVolumes, ReaderVolumes, VolumeItems, build_or_load
from musclelab.data.volumes import VolumePreprocess, VolumeSet
from musclelab.registry import Registry

ItemsFn = Callable[..., VolumeItems]
VOLUME_SOURCES: Registry[ItemsFn] = Registry("volume dataset", "data.name")


@VOLUME_SOURCES.register("thigh_phantom")
def thigh_phantom_items(*, n_volumes: int = 20, size: int = 64, n_slices: int = 48, phantom_seed: int = 0,
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


@VOLUME_SOURCES.register("abdomen_phantom")
def abdomen_phantom_items(*, site: str = "lits", n_volumes: int = 20, target: str = "liver", size: int = 128,
                          phantom_seed: int = 0) -> VolumeItems:
    """The built-in abdominal phantom (:mod:`musclelab.data.abdomen_phantom`) as whole volumes (z flipped to the
    project's superior-increasing convention); ``target`` as for the slice source."""
    from musclelab.data.abdomen_phantom import TARGET_ALIASES, TARGETS, generate_abdomen_volume, get_liver_site

    get_liver_site(site)
    target = TARGET_ALIASES.get(str(target), str(target))
    if target not in TARGETS:
        raise ValueError(f"data.source.target '{target}' unknown for the abdomen phantom; known: {', '.join(TARGETS)}")
    mapping, names = TARGETS[target]
    lut = np.zeros(256, np.uint8)
    for raw, cls in mapping.items():
        lut[raw] = cls

    def make(i: int) -> tuple[Case, dict[str, np.ndarray]]:
        v = generate_abdomen_volume(i, site=site, seed=int(phantom_seed), size=int(size))
        return Case(v.meta["volume_id"], v.meta["patient_id"], v.image[::-1].copy(), lut[v.label][::-1].copy(),
                    v.spacing, {k: v.meta[k] for k in ("site", "sex", "height_m")}), {}

    return GeneratedVolumes("abdomen_phantom", tuple(names), int(n_volumes),
                            dict(site=site, target=target, size=int(size), phantom_seed=int(phantom_seed)), make)


def _reader_items(name: str) -> ItemsFn:
    def items(*, root: str | None, cache_dir: str, reader: dict | None = None, **_ignored: Any) -> VolumeItems:
        from musclelab.data.readers import build_reader
        from musclelab.data.verify import verify_dataset
        from musclelab.errors import ConfigError

        if not root:
            raise ConfigError(f"data={name} needs the data set's folder: add data.root=/path/to/{name}")
        rdr = build_reader(name, root, **(reader or {}))
        verify_dataset(rdr, decode=False).raise_if_errors()
        return ReaderVolumes(rdr, name, Path(cache_dir))

    items.__doc__ = f"Data set '{name}' read from data.root as volumes."
    return items


for _name in ("msd", "lits", "btcv", "chaos"):
    VOLUME_SOURCES.register(_name)(_reader_items(_name))

# slice-source parameters that have no meaning for volumes (dropped for reader sources)
SLICE_ONLY = ("slices", "margin")


def load_volume_source(name: str, params: dict, pre: VolumePreprocess, root: str | None,
                       cache_dir: str | None) -> VolumeSet:
    """The cached volumes of source ``name`` (``data.source`` = ``params``); unknown parameters name the field."""
    from musclelab.errors import ConfigError

    if name not in VOLUME_SOURCES:
        raise ConfigError(f"data.name={name} has no volume form (data.spatial_dims=3); volume data sets: "
                          f"{', '.join(VOLUME_SOURCES.names())}")
    fn = VOLUME_SOURCES.get(name)
    sig = inspect.signature(fn).parameters
    if "root" in sig:
        items = fn(root=root, cache_dir=str(cache_dir), **{k: v for k, v in params.items() if k not in SLICE_ONLY})
    else:
        known = list(sig)
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(f"data.source.{unknown[0]} is not a parameter of volume dataset '{name}'; known "
                              f"parameters: {', '.join(known)}")
        if root:
            raise ConfigError(f"data.root is set but dataset '{name}' is generated, not read; remove data.root")
        items = fn(**params)
    if not cache_dir:
        raise ConfigError("data.cache_dir is not set: volumes are cached on disk (paths.cache_dir)")
    return build_or_load(items, pre, cache_dir)
