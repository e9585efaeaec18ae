"""What to do with a cache or resume file that no longer loads: keep it for inspection, out of the way.

A truncated manifest read as a cache, a garbage ``latest.pt``, a crawl state that is not SQLite: each of these
is treated as absent so that its owner rebuilds it, but nothing is deleted. The file is renamed beside itself
to ``<name>.unreadable-<UTC time>`` with a warning that says where it went, so a user can look at it or delete
it, and a second failure never overwrites the first one's evidence.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger(__name__)

UNREADABLE_MARK = ".unreadable-"


def set_aside(path: Path, why: str, log: Callable[[str], None] | None = None) -> Path | None:
    """Rename ``path`` to an ``.unreadable-<time>`` sibling, warn through ``log`` (or this module's logger),
    and return the new path; None when there was nothing to move (already gone)."""
    path = Path(path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}{UNREADABLE_MARK}{stamp}")
    copy = 1
    while target.exists():  # never overwrite an earlier copy's evidence
        target = path.with_name(f"{path.name}{UNREADABLE_MARK}{stamp}-{copy}")
        copy += 1
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    message = f"{path} could not be read ({why}); moved it to {target.name} and rebuilding it"
    (log or logger.warning)(message)
    return target


def unreadable_copies(path: Path) -> list[Path]:
    """Files set aside for ``path`` so far, oldest first."""
    path = Path(path)
    return sorted(path.parent.glob(f"{path.name}{UNREADABLE_MARK}*"))
