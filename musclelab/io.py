"""Atomic file writes (a file is either absent or complete, never half-written) and an inter-process lock
for work that several jobs may ask for at once (slice caches, pretext pretraining, shared stages).

Shared machines: ``tempfile.mkstemp`` creates files 0600 and ``mkdtemp`` directories 0700 whatever the umask, so a
file renamed into place would keep those and colleagues could not read a run or a cache. Every temporary file and
directory made here gets the permissions an ordinary ``open``/``mkdir`` would give under the process's umask
(:func:`umask_mode`) before it is renamed into place. Lock files are created readable and writable by whoever the
umask allows and are opened read-only when they belong to another user (``flock`` needs no write access); a file
system without ``flock`` (Lustre mounted without ``-o flock``, some NFS) is a one-line
:class:`~musclelab.errors.ConfigError` naming the lock file and the fix.
"""
from __future__ import annotations

import errno
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

#: errno values of a file system that does not implement ``flock``
NO_LOCK_ERRNOS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def umask_mode(directory: bool = False) -> int:
    """The mode ``open`` (0666) or ``mkdir`` (0777) would give a new file/directory under the current umask."""
    try:  # Linux: read it without changing it (os.umask is process-wide and would race with other threads)
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0)
        os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def make_temp_dir(prefix: str, dir: str | Path) -> Path:
    """``tempfile.mkdtemp`` with the umask's directory permissions instead of 0700 (it is renamed into place)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    os.chmod(tmp, umask_mode(directory=True))
    return tmp


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a file name (SimpleITK, NumPy): renamed onto
    ``path`` when the block ends without error, removed when it fails, so ``path`` is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, umask_mode())  # mkstemp's 0600 would survive the rename
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


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically: streamed into a temporary file beside it (no second copy of a
    large checkpoint in memory), fsynced and renamed, so ``path`` is the previous file or the new one."""
    import torch  # here: this module is imported by code that never needs torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
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
    tmp = make_temp_dir(f".{out_dir.name}.tmp-", out_dir.parent)
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
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides who else may write it
    except PermissionError:  # another user's lock file: flock works on a read-only descriptor
        try:
            fd = os.open(path, os.O_RDONLY)
        except PermissionError:
            from musclelab.errors import ConfigError

            raise ConfigError(f"cannot open the lock file {path} (mode {oct(path.stat().st_mode & 0o777)}, another "
                              "user's): ask its owner to `chmod a+r` it, or delete it when no job is running") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _flock(fd: int, op: int, path: str | Path) -> None:
    """``fcntl.flock`` with a one-line error where the file system has no locks."""
    from musclelab.errors import ConfigError

    try:
        fcntl.flock(fd, op)
    except BlockingIOError:
        raise
    except OSError as err:
        if err.errno in NO_LOCK_ERRNOS:
            raise ConfigError(f"cannot lock {path}: its file system does not support flock ({os.strerror(err.errno)}); "
                              "put paths.cache_dir / the output folder on a local or flock-enabled file system "
                              "(Lustre: mount with -o flock)") from None
        raise


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
        _flock(fd, fcntl.LOCK_EX, path)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def try_file_lock(path: str | Path) -> Iterator[bool]:
    """Like :func:`file_lock` but never waits: yields whether the lock was taken."""
    with _lock_fd(path) as fd:
        try:
            _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, path)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
