"""The crawl machinery every labelled source shares (exercised end to end through each source's crawl)."""

from album_pipeline.data.covers import failure_ratio


def test_failure_ratio_ignores_albums_without_a_cover() -> None:
    assert failure_ratio({"no_cover_art": 5, "no_images": 1, "truncated": 2}, 20) == 0.1
    assert failure_ratio({}, 0) == 0.0
