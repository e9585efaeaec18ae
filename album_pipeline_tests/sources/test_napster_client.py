"""NapsterClient against the loopback Napster emulator."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from album_pipeline.sources.http import (
    SettingError,
    SourceAuthError,
    SourceUnavailableError,
    UntrustedURLError,
    make_session,
)
from album_pipeline.sources.napster import NapsterClient, UnknownGenreError, album_flag, image_sides
from album_pipeline.testing.emulators.napster import NapsterEmulator
from album_pipeline.testing.emulators.napster_catalog import NapsterCatalog

KEY = "test-key-0123456789"
GENRES = ("rock", "jazz", "pop")

LOOPBACK = ("127.0.0.1",)  # the emulator serves its own images


@pytest.fixture(scope="module")
def catalog() -> NapsterCatalog:
    return NapsterCatalog(genres=GENRES, albums_per_genre=30, seed=3)


@pytest.fixture
def emulator(catalog: NapsterCatalog) -> Iterator[NapsterEmulator]:
    with NapsterEmulator(catalog, api_key=KEY) as server:
        yield server


@pytest.fixture
def client(emulator: NapsterEmulator) -> NapsterClient:
    return NapsterClient(
        emulator.url, KEY, session=make_session(backoff_factor=0), timeout=10, allowed_image_hosts=LOOPBACK
    )


def _query(path: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}


def test_genre_lookup_by_shortcut(client: NapsterClient, catalog: NapsterCatalog) -> None:
    genre = client.genre("jazz")
    assert genre["id"] == catalog.genre_id("jazz") == "g.299"
    assert genre["shortcut"] == "jazz"


def test_unknown_genre_is_a_clear_value_error(client: NapsterClient) -> None:
    with pytest.raises(UnknownGenreError, match="no-such-genre") as caught:
        client.genre("no-such-genre")
    assert isinstance(caught.value, ValueError)
    assert "rock" in str(caught.value)  # the message lists known shortcuts


def test_top_albums_cover_every_range_distinctly(client: NapsterClient, catalog: NapsterCatalog) -> None:
    albums = list(client.iter_top_albums("g.5", page_size=7, max_albums_per_range=None))
    ids = [album["id"] for album in albums]
    assert len(ids) == len(set(ids))
    assert set(ids) == catalog.top_album_ids("rock")
    # Distinct albums come in range order: the day list first, in its own ranking.
    day = catalog.top_list("rock", "day")
    assert ids[: len(day)] == day


def test_paging_stops_on_a_short_page_without_total_count(catalog: NapsterCatalog) -> None:
    with NapsterEmulator(catalog, api_key=KEY, null_total_count=True) as server:
        client = NapsterClient(server.url, KEY, session=make_session(backoff_factor=0))
        albums = list(
            client.iter_top_albums("g.5", ranges=("week",), page_size=10, max_albums_per_range=None)
        )
        week = catalog.top_list("rock", "week")
        assert [a["id"] for a in albums] == week
        pages = [_query(r.path) for r in server.requests if "/albums/top" in r.path]
    # ceil(len/10) pages, plus one empty page only when the list is an exact multiple of the page size.
    expected_pages = len(week) // 10 + 1
    assert len(pages) == expected_pages
    assert [int(p["offset"]) for p in pages] == [10 * n for n in range(expected_pages)]


def test_per_range_cap_limits_paging(client: NapsterClient, emulator: NapsterEmulator, catalog) -> None:
    albums = list(client.iter_top_albums("g.5", ranges=("life",), page_size=4, max_albums_per_range=6))
    assert [a["id"] for a in albums] == catalog.top_list("rock", "life")[:6]
    limits = [int(_query(r.path)["limit"]) for r in emulator.requests if "/albums/top" in r.path]
    assert limits == [4, 2]


def test_album_images_are_grouped_by_album_and_sized_choices(client: NapsterClient, catalog) -> None:
    album_ids = sorted(catalog.top_album_ids("pop"))[:25]
    images = client.album_images(album_ids + ["alb.does-not-exist"], batch_size=10)
    assert images["alb.does-not-exist"] == []
    for album_id in album_ids:
        assert {i["contentId"] for i in images[album_id]} == {album_id}
        chosen = NapsterClient.choose_image(images[album_id], preferred_side=200)
        side = catalog.chosen_size(album_id, 200)
        assert (chosen["width"], chosen["height"]) == (side, side)
        largest = NapsterClient.choose_image(images[album_id], preferred_side=10_000)
        assert largest["width"] == max(i["width"] for i in images[album_id])
    assert NapsterClient.choose_image([], preferred_side=200) is None


def test_fetch_image_returns_the_served_bytes(client: NapsterClient, catalog: NapsterCatalog) -> None:
    album_id = sorted(catalog.top_album_ids("rock"))[0]
    chosen = NapsterClient.choose_image(client.album_images([album_id])[album_id], preferred_side=170)
    assert client.fetch_image(chosen["url"]) == catalog.image_bytes(album_id, 170, 170)


def test_key_only_in_header_never_in_urls_repr_or_errors(emulator: NapsterEmulator) -> None:
    client = NapsterClient(
        emulator.url, KEY, session=make_session(backoff_factor=0), allowed_image_hosts=LOOPBACK
    )
    client.check()
    list(client.iter_top_albums("g.5", ranges=("day",), page_size=50, max_albums_per_range=50))
    assert emulator.requests and all(KEY not in r.path for r in emulator.requests)
    assert KEY not in repr(client) and KEY not in str(vars(client))


def test_bad_key_fails_the_preflight_clearly(emulator: NapsterEmulator) -> None:
    wrong = "wrong-key-abcdef"
    client = NapsterClient(emulator.url, wrong, session=make_session(backoff_factor=0))
    with pytest.raises(SourceAuthError, match="NAPSTER_API_KEY") as caught:
        client.check()
    assert wrong not in str(caught.value)


def test_unreachable_api_fails_the_preflight_clearly() -> None:
    with NapsterEmulator(NapsterCatalog(genres=("rock",), albums_per_genre=1), api_key=KEY) as server:
        url = server.url
    client = NapsterClient(url, KEY, session=make_session(total_retries=1, backoff_factor=0), timeout=2)
    with pytest.raises(SourceUnavailableError, match="NAPSTER_API_URL") as caught:
        client.check()
    assert KEY not in str(caught.value) and url in str(caught.value)


def test_rate_limit_answers_are_retried(catalog: NapsterCatalog) -> None:
    with NapsterEmulator(catalog, api_key=KEY, rate_limit_per_second=2) as server:
        client = NapsterClient(server.url, KEY, session=make_session(backoff_factor=0.2))
        for _ in range(4):
            client.check()
        statuses = [r.status for r in server.requests]
    assert statuses.count(200) == 4 and 429 in statuses


def test_constructor_refuses_missing_key_and_bad_url() -> None:
    with pytest.raises(Exception, match="NAPSTER_API_KEY"):
        NapsterClient("http://127.0.0.1:9", "")
    with pytest.raises(ValueError, match="NAPSTER_API_URL"):
        NapsterClient("ftp://example", KEY)


def test_api_calls_stay_under_the_configured_rate(emulator: NapsterEmulator, catalog: NapsterCatalog) -> None:
    rate = 20.0
    client = NapsterClient(emulator.url, KEY, requests_per_second=rate)
    emulator.clear_requests()
    genre_id = client.genre("jazz")["id"]
    albums = list(client.iter_top_albums(genre_id, page_size=10))
    client.album_images([album["id"] for album in albums], batch_size=2)
    starts = sorted(record.timestamp for record in emulator.requests if record.path.startswith("/v2.2/"))
    assert len(starts) > 25  # enough calls for the rate to matter
    # What the server observed in any one-second window; one call of slack for the moments between the client's
    # clock and the server's receipt of a request.
    busiest = max(sum(1 for t in starts[i:] if t < start + 1.0) for i, start in enumerate(starts))
    assert busiest <= rate + 1
    assert (starts[-1] - starts[0]) >= (len(starts) - 1) / rate * 0.9


def test_image_urls_are_fetched_only_from_allowed_hosts_over_http(emulator: NapsterEmulator, catalog) -> None:
    album_id = next(iter(catalog.top_album_ids("rock")))
    url = next(image["url"] for image in catalog.images(album_id, emulator.url))
    trusting = NapsterClient(emulator.url, KEY, allowed_image_hosts=LOOPBACK)
    assert trusting.fetch_image(url)[:2] == b"\xff\xd8"  # a JPEG
    emulator.clear_requests()
    default = NapsterClient(emulator.url, KEY)  # trusts only the real service's image hosts
    with pytest.raises(UntrustedURLError, match="NAPSTER_IMAGE_HOSTS"):
        default.fetch_image(url)
    for bad in ("file:///etc/passwd", "ftp://static.rhap.com/x.jpg", "gopher://127.0.0.1/x"):
        with pytest.raises(UntrustedURLError, match="not http"):
            trusting.fetch_image(bad)
    assert not emulator.requests  # refused before anything was sent


@pytest.mark.parametrize("bad_key", ["sekrit\r\nX-Evil: 1", "sekrit\nmore", "sek\x00rit", "sek\u2603rit"])
def test_a_key_a_header_cannot_carry_is_refused_up_front_without_showing_it(bad_key: str) -> None:
    """Issue 11 probe 7: requests used to refuse the header with the key in its message, blaming the service."""
    with pytest.raises(SettingError) as caught:
        NapsterClient("http://127.0.0.1:9", bad_key, session=make_session(total_retries=0))
    message = str(caught.value)
    assert message == (
        "NAPSTER_API_KEY contains a line break or other characters HTTP headers cannot carry; set it again"
    )
    assert isinstance(caught.value, ValueError)  # a setting at fault, as the preflight reports it


def test_image_sides_come_from_the_fields_else_from_the_url() -> None:
    url = "http://static.rhap.com/img/300x300/6/8/9/8/5858986_300x300.jpg"
    assert image_sides({"url": url, "width": 500, "height": 400}) == (500, 400)
    assert image_sides({"url": url, "width": "300", "height": "300"}) == (300, 300)
    assert image_sides({"url": url}) == (300, 300)
    assert image_sides({"url": url, "width": True, "height": 1}) == (300, 300)
    assert image_sides({"url": "http://static.rhap.com/cover.jpg"}) is None
    assert image_sides({"url": url, "width": 0, "height": 0}) is None
    # Without sides in its fields an image still competes, sized by its URL.
    images = [{"url": url.replace("300x300", f"{side}x{side}")} for side in (170, 70, 600, 300)]
    assert NapsterClient.choose_image(images, preferred_side=200)["url"].endswith("_300x300.jpg")


def test_album_flags_read_the_v2_2_and_the_2016_field_names() -> None:
    assert album_flag({"isExplicit": True, "isSingle": False}, "explicit") is True
    assert album_flag({"isExplicit": True, "isSingle": False}, "single") is False
    assert album_flag({"explicit": False, "single": True}, "single") is True
    assert album_flag({"explicit": True}, "explicit") is True
    assert album_flag({}, "explicit") is False
    assert album_flag({"single": "yes"}, "single") is False  # only a JSON true counts


def test_genre_tree_comes_from_one_call_and_lookups_are_batched(
    client: NapsterClient, emulator: NapsterEmulator
) -> None:
    emulator.clear_requests()
    tree = client.genre_tree()
    assert [r.path.split("?")[0] for r in emulator.requests] == ["/v2.2/genres"]
    assert tree.top_level_of("g.173") == "g.146" and tree.top_level_of("G.5") == "g.5"
    assert tree.top_level_of("g.1104") is None  # a grandchild: only a lookup of it names its parent
    emulator.clear_requests()
    found = client.genres_by_id(["g.1104", "g.1403", "g.1901", "g.5"], batch_size=3)
    assert [genre["id"] for genre in found] == ["g.1104", "g.1403", "g.5"]
    assert len(emulator.requests) == 2
    tree.learn(found)
    assert tree.top_level_of("g.1104") == "g.5" and tree.top_level_of("g.1403") == "g.146"
