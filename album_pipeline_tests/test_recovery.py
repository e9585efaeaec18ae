from album_pipeline.recovery import set_aside, unreadable_copies


def test_an_unreadable_file_is_moved_aside_with_a_warning_and_kept(tmp_path):
    broken = tmp_path / "labeled.parquet"
    broken.write_bytes(b"not parquet")
    warnings = []
    moved = set_aside(broken, "not a Parquet file", log=warnings.append)
    assert not broken.exists() and moved.read_bytes() == b"not parquet"
    assert moved.parent == tmp_path and moved.name.startswith("labeled.parquet.unreadable-")
    assert warnings == [
        f"{broken} could not be read (not a Parquet file); moved it to {moved.name} and rebuilding it"
    ]
    broken.write_bytes(b"broken again")
    second = set_aside(broken, "again", log=warnings.append)
    assert unreadable_copies(broken) == [moved, second]  # the first one's evidence is kept


def test_nothing_to_set_aside_is_not_an_error(tmp_path):
    assert set_aside(tmp_path / "missing.pt", "gone", log=print) is None
