"""Label subsets: reduce a data set to chosen structures and relabel them in a stated order (``data.labels``).

``data.labels=[quadratus_lumborum,erector_spinae]`` turns any source whose classes include those names into a
3-class problem: 0 background, 1 quadratus_lumborum, 2 erector_spinae; every other structure becomes
background. Names are matched to the source's ``class_names`` (case-, space- and dash-insensitive); an unknown
name, a repeated name (a muscle paired with itself), the background or an empty list fail with one
:class:`~musclelab.errors.ConfigError` naming ``data.labels`` and the known names.
:func:`musclelab.data.sources.check_labels_early` does this from the config alone, before any pixel is read, for
every source whose class names its settings give (the registry's declared class names).

The relabelled :class:`~musclelab.data.containers.SliceSet` carries the new ``class_names``, so per-class metrics
(``dice_<name>``), reports and W&B keys follow the subset. Why our own: MONAI's ``MapLabelValue`` maps values,
not names, and knows nothing of a data set's class names.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
import numpy as np

from musclelab.data.containers import OriginalSlice, SliceSet, SourceData
from musclelab.errors import ConfigError

FIELD = "data.labels"


def _norm(name: str) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def resolve_labels(labels: Sequence[str], class_names: Sequence[str], field: str = FIELD) -> list[int]:
    """Source label values of ``labels`` (names, in the requested order) among ``class_names``.

    Raises:
        ConfigError: empty subset, the background asked for, a repeated name, or a name the source lacks
            (the message lists the known foreground names).
    """
    if isinstance(labels, str):
        labels = [labels]
    labels = [str(x) for x in labels]
    known = [str(n) for n in class_names[1:]]
    if not labels:
        raise ConfigError(f"{field} is empty: name at least one foreground class; known: {', '.join(known)}")
    by_name = {_norm(n): i for i, n in enumerate(class_names)}
    values: list[int] = []
    for name in labels:
        value = by_name.get(_norm(name))
        if value is None:
            raise ConfigError(f"{field}: '{name}' is not a class of this data set; known: {', '.join(known)}")
        if value == 0:
            raise ConfigError(f"{field}: '{name}' is the background (label 0), which every subset keeps; "
                              f"name foreground classes only ({', '.join(known)})")
        if value in values:
            raise ConfigError(f"{field}: '{name}' is listed twice (a structure cannot be paired with itself)")
        values.append(value)
    return values


def label_lut(values: Sequence[int], n_source: int) -> np.ndarray:
    """``uint8`` lookup table: source value ``values[k]`` -> ``k + 1``, everything else -> 0."""
    lut = np.zeros(max(n_source, max(values) + 1, 256), np.uint8)
    for k, v in enumerate(values):
        lut[v] = k + 1
    return lut


def relabel(labels: np.ndarray, values: Sequence[int], n_source: int) -> np.ndarray:
    """A label map (any shape) reduced to ``values`` and renumbered 1..k in that order."""
    return label_lut(values, n_source)[np.asarray(labels)]


def subset_names(labels: Sequence[str], class_names: Sequence[str]) -> tuple[str, ...]:
    """``("background", <source spelling of each chosen class>...)``."""
    values = resolve_labels(labels, class_names)
    return (str(class_names[0]), *(str(class_names[v]) for v in values))


def apply_labels(slices: SliceSet, labels: Sequence[str] | None) -> SliceSet:
    """A :class:`~musclelab.data.containers.SliceSet` relabelled to the subset ``labels`` (``None``: unchanged).

    Labels (and any observers' masks, also those of the originals) are mapped in memory; images, spacing and meta are shared."""
    if labels is None:
        return slices
    names = tuple(slices.class_names)
    values = resolve_labels(labels, names)
    lut = label_lut(values, len(names))
    observers = {k: lut[np.asarray(v)] for k, v in slices.observers.items()} if slices.observers else None
    originals = None
    if slices.originals is not None:  # the originals' contours carry the same classes
        load = slices.originals

        def originals(case_id: str) -> OriginalSlice:
            o = load(case_id)
            return replace(o, label=lut[np.asarray(o.label)],
                           observers={k: lut[np.asarray(v)] for k, v in o.observers.items()})
    return SliceSet(slices.images, lut[np.asarray(slices.labels)], slices.spacing, slices.meta,
                    subset_names(labels, names), observers, originals)


def apply_to_source(data: SourceData, labels: Sequence[str] | None) -> SourceData:
    """A :class:`~musclelab.data.containers.SourceData` with its pool, external test set and whole volumes
    relabelled."""
    if labels is None:
        return data
    if data.volumes is not None:  # the whole volumes carry the pool's classes
        names = data.pool.class_names
        lut, load = label_lut(resolve_labels(labels, names), len(names)), data.volumes
        data.volumes = lambda patient_id: [replace(v, label=lut[np.asarray(v.label)]) for v in load(patient_id)]
    data.pool = apply_labels(data.pool, labels)
    if data.external_test is not None:
        data.external_test = apply_labels(data.external_test, labels)
    return data
