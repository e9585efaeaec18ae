"""Atomic file writes: readers see the old file or the new one, never half of one, whatever crashes when."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it inside the block and it replaces ``path`` on success.

    The temporary file keeps ``path``'s suffix (so writers that pick a format by extension still work) and is
    removed if the block raises. Its data is flushed to disk before the rename so a power cut cannot leave a
    renamed but empty file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600; outputs are meant to be readable like any data
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
