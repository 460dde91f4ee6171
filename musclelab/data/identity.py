"""The identity of the data behind a data config, for caches of work trained on it (transfer stages, pretext
trunks): the file identity the slice and volume caches key by (:func:`musclelab.data.cache_core.reader_identity`),
so an edited, added or removed file retrains instead of reusing weights learned from the old files.

Generated data (the built-in phantoms) has no files: its settings, already in every key, are its identity.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

WHAT = "data identity"


def data_identity(data: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Per case its id, patient and files (relative path, size, mtime_ns) for a data config read from
    ``data.root`` through a reader (``data.name`` in ``READERS``); ``None`` for generated data."""
    from musclelab.data.cache_core import reader_identity
    from musclelab.data.readers import READERS, build_reader

    name, root = data.get("name"), data.get("root")
    if not root or not isinstance(name, str) or name not in READERS.names():
        return None
    reader = (data.get("source") or {}).get("reader") or {}
    cache_root = Path(str(data.get("cache_dir") or "cache")).expanduser().resolve()
    inputs, _ = reader_identity(build_reader(name, root, **dict(reader)), name, cache_root, WHAT)
    return inputs["cases"]
