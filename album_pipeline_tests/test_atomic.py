"""atomic_path: a whole new file or the old one, with the permissions the user's umask asks for."""

import os
import stat

import pytest

from album_pipeline.atomic import atomic_path


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


@pytest.mark.parametrize(
    ("mask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664), (0o077, 0o600)]
)
def test_outputs_honour_the_umask(tmp_path, umask, mask, expected):
    """Issue 11 probe: outputs used to be 0644 whatever the umask."""
    umask(mask)
    target = tmp_path / "out" / "metrics.json"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".json" and tmp.parent == target.parent
        tmp.write_text("{}")
    assert stat.S_IMODE(target.stat().st_mode) == expected


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    folder = tmp_path / "home"
    folder.mkdir()
    target = folder / "labeled.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert sorted(path.name for path in folder.iterdir()) == ["labeled.parquet"]
