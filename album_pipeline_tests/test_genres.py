"""The genre map: classes, the source genres that feed them, and the multi-class policy's helpers."""

import pytest

from album_pipeline.genres import (
    DEFAULT_GENRE_MAP,
    DEFAULT_GENRES,
    GenreClass,
    classes_in_order,
    default_classes,
    strongest_class,
    validate_genre_map,
)


def test_defaults_reproduce_the_seed_classes_and_feed_rap_from_two_tags():
    assert DEFAULT_GENRES == ("rock", "jazz", "pop", "rap-hip-hop", "classical")
    rap = default_classes("rap-hip-hop")[0]
    assert rap.napster_shortcuts == ("rap-hip-hop",) and rap.musicbrainz_tags == ("hip hop", "rap")
    assert validate_genre_map(DEFAULT_GENRE_MAP) == DEFAULT_GENRE_MAP


def test_feeds_are_normalised_and_bad_maps_refused_with_the_reason():
    (normalised,) = validate_genre_map([GenreClass(" soul ", (" Soul-R-And-B ",), ("Soul", " "))])
    assert normalised == GenreClass("soul", ("soul-r-and-b",), ("soul",))
    with pytest.raises(ValueError, match="duplicates"):
        validate_genre_map([GenreClass("rock", ("rock",)), GenreClass("rock", ("metal",))])
    with pytest.raises(ValueError, match="feeds both 'rock' and 'metal'"):
        validate_genre_map([GenreClass("rock", ("rock",)), GenreClass("metal", ("rock",))])
    with pytest.raises(ValueError, match="no feeds"):
        validate_genre_map([GenreClass("quiet")])
    with pytest.raises(ValueError, match="empty"):
        validate_genre_map([])
    with pytest.raises(ValueError, match="no default genre class named"):
        default_classes("polka")


def test_policy_helpers_keep_class_order_and_break_ties_by_it():
    classes = ["rock", "jazz", "pop"]
    assert classes_in_order({"pop", "rock", "ska"}, classes) == ["rock", "pop"]
    assert strongest_class({"pop": 3, "jazz": 5}, classes) == "jazz"
    assert strongest_class({"pop": 5, "jazz": 5}, classes) == "jazz"
    assert strongest_class({}, classes) is None
