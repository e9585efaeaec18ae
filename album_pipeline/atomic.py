"""Atomic file writes: readers see the old file or the new one, never half of one, whatever crashes when."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, mode: int = 0o666) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it inside the block and it replaces ``path`` on success.

    The temporary file keeps ``path``'s suffix (so writers that pick a format by extension still work) and is
    removed if the block raises. Its data is flushed to disk before the rename so a power cut cannot leave a
    renamed but empty file. It is created with ``mode`` less the process umask, as ``open`` would create
    ``path`` itself (``tempfile.mkstemp`` would force 0600, and a fixed chmod would ignore the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_beside(path, mode)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_beside(path: Path, mode: int) -> Path:
    """A new, empty, hidden file next to ``path`` (O_EXCL: never one that another writer holds)."""
    while True:
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{path.suffix}")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
        except FileExistsError:
            continue
        return candidate
