"""Built-in synthetic CT phantoms on one set of drawing primitives (:mod:`musclelab.phantoms.primitives`).

``l3`` (single L3 slices, McSweeney / Yoon muscle studies), ``abdomen`` (3D abdomen with a liver, three sites,
Yoon liver studies), ``lumbar`` (L1-L5 volumes, Kawamoto), ``thigh`` (hip-to-knee volumes, 30 classes, Kim 2024).
The data sources that serve them by name (``data.name``) are in :mod:`musclelab.data.phantom_sources`.
"""
