"""Atomic file writes (a file is either absent or complete, never half-written) and an inter-process lock
for work that several jobs may ask for at once (slice caches, pretext pretraining, shared stages)."""
from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a file name (SimpleITK, NumPy): renamed onto
    ``path`` when the block ends without error, removed when it fails, so ``path`` is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory and an atomic rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as standard indented JSON; NaN and infinities become ``null``."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=True, default=_jsonable, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def _finite(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


@contextmanager
def new_directory(out_dir: str | Path, what: str) -> Iterator[Path]:
    """Build directory ``out_dir`` atomically: yields a temporary sibling to fill, renamed to ``out_dir`` when the
    block succeeds and removed when it fails, so a crash never leaves a half-written data set. ``out_dir`` must
    not exist or be empty: user data is never overwritten (``FileExistsError`` naming it and its content)."""
    import shutil

    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{what} output {out_dir} exists and is not a directory")
        content = sorted(p.name for p in out_dir.iterdir())
        if content:
            shown = ", ".join(content[:5]) + (", ..." if len(content) > 5 else "")
            raise FileExistsError(f"refusing to write the {what} into non-empty directory {out_dir} (contains: "
                                  f"{shown}); choose a new or empty directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); fails loudly if something appeared meanwhile
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def _lock_fd(path: str | Path) -> Iterator[int]:
    """An open descriptor of the lock file ``path`` (created with its folder if missing), closed on exit."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def file_lock(path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); released on exit or process death.

    ``what`` names the shared work in the log line printed while waiting for another process.
    """
    with try_file_lock(path) as taken:
        if taken:
            yield
            return
    log.info("%s: another process is building it; waiting for %s", what, path)
    with _lock_fd(path) as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def try_file_lock(path: str | Path) -> Iterator[bool]:
    """Like :func:`file_lock` but never waits: yields whether the lock was taken."""
    with _lock_fd(path) as fd:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
