import hashlib
import io
import re
from collections import Counter

import pytest
import requests
from PIL import Image

from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.testing.emulators.napster import NapsterEmulator
from album_pipeline.testing.emulators.napster_catalog import (
    GENRE_ID_BY_SHORTCUT,
    RANGES,
    UNLISTED_GENRE_IDS,
    NapsterCatalog,
    no_cover_available_jpeg,
)
from album_pipeline.testing.emulators.napster_shapes import GENRE_PARENT, children_of
from album_pipeline.testing.emulators.synthetic import draw_cover, encode_image

KEY = "test-key-0123456789"
ALBUM_FIELDS = {
    "type", "id", "upc", "shortcut", "href", "name", "released", "originallyReleased", "label", "copyright",
    "tags", "discCount", "trackCount", "explicit", "single", "artistName", "contributingArtists", "links",
    "isStreamable",
}  # fmt: skip
USUAL_LIST = (170, 70, 600, 500, 300)  # the real image list of most albums, in the API's order
IMAGE_FIELDS = {"type", "id", "url", "contentId", "width", "height", "isDefault", "version", "imageType"}


@pytest.fixture(scope="module")
def catalog():
    return NapsterCatalog(albums_per_genre=100, seed=3)


@pytest.fixture(scope="module")
def emulator(catalog):
    with NapsterEmulator(catalog, api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def session():
    with requests.Session() as http:
        http.headers["apikey"] = KEY
        yield http


def _get(session, emulator, path, **params):
    response = session.get(emulator.url + path, params=params, timeout=10)
    return response


def _crawl_range(session, emulator, genre_id, range_name, limit):
    """Page a top list to its first empty page, as a crawler without totalCount must."""
    ids, offset = [], 0
    while True:
        page = _get(
            session,
            emulator,
            f"/v2.2/genres/{genre_id}/albums/top",
            limit=limit,
            offset=offset,
            range=range_name,
        )
        assert page.status_code == 200
        body = page.json()
        assert body["meta"]["returnedCount"] == len(body["albums"])
        assert body["meta"]["offset"] == offset and body["meta"]["limit"] == limit
        if not body["albums"]:
            return ids
        ids.extend(album["id"] for album in body["albums"])
        offset += limit


def test_genres_list_has_real_ids_and_fields(session, emulator):
    response = _get(session, emulator, "/v2.2/genres")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    genres = response.json()["genres"]
    by_shortcut = {genre["shortcut"]: genre for genre in genres}
    assert {
        "rock": "g.5",
        "pop": "g.115",
        "jazz": "g.299",
        "rap-hip-hop": "g.146",
        "classical": "g.21",
    }.items() <= {shortcut: genre["id"] for shortcut, genre in by_shortcut.items()}.items()
    for genre in genres:
        assert genre["type"] == "genre"
        assert {"id", "name", "shortcut", "href", "description", "links"} <= genre.keys()
        assert isinstance(genre["links"]["childGenres"]["ids"], list)
        assert isinstance(genre["links"]["parentGenres"]["ids"], list)


def test_genres_by_id_or_shortcut_and_unknown_ones(session, emulator):
    genres = _get(session, emulator, "/v2.2/genres/rock,g.299,no-such-genre").json()["genres"]
    assert [genre["id"] for genre in genres] == ["g.5", "g.299"]
    unknown = _get(session, emulator, "/v2.2/genres/g.999999")
    assert unknown.status_code == 200 and unknown.json() == {"genres": []}


def test_paging_every_range_recovers_each_genres_albums_after_deduplication(session, emulator, catalog):
    for genre in DEFAULT_GENRES:
        genre_id = GENRE_ID_BY_SHORTCUT[genre]
        per_range = {name: _crawl_range(session, emulator, genre_id, name, limit=40) for name in RANGES}
        for name, ids in per_range.items():
            assert ids == catalog.top_list(genre, name)  # the order is stable and complete
        union = set().union(*per_range.values())
        assert union == catalog.top_album_ids(genre)
        assert union == {
            album_id for album_id, album in catalog.albums.items() if genre_id in album.top_genre_ids
        }
        # Ranges overlap heavily, so a crawler sees most albums several times.
        assert sum(len(ids) for ids in per_range.values()) > 2.5 * len(union)


def test_page_meta_default_and_maximum_limit(session, emulator, catalog):
    default = _get(session, emulator, "/v2.2/genres/g.5/albums/top", range="life").json()
    total = len(catalog.top_list("rock", "life"))
    assert default["meta"] == {"totalCount": total, "returnedCount": 20, "limit": 20, "offset": 0}
    clamped = _get(session, emulator, "/v2.2/genres/g.5/albums/top", range="life", limit=5000).json()
    assert clamped["meta"]["limit"] == 200 and clamped["meta"]["returnedCount"] == min(200, total)
    past_end = _get(
        session, emulator, "/v2.2/genres/g.5/albums/top", range="life", limit=10, offset=10_000
    ).json()
    assert past_end["albums"] == [] and past_end["meta"]["totalCount"] == total


def test_bad_paging_parameters_are_rejected(session, emulator):
    assert _get(session, emulator, "/v2.2/genres/g.5/albums/top", range="decade").status_code == 400
    assert _get(session, emulator, "/v2.2/genres/g.5/albums/top", limit="ten").status_code == 400
    assert _get(session, emulator, "/v2.2/genres/g.5/albums/top", offset=-1).status_code == 400


def test_top_list_of_a_genre_without_albums_is_empty(session, emulator):
    body = _get(session, emulator, "/v2.2/genres/g.407/albums/top", range="week").json()
    assert body["albums"] == [] and body["meta"]["totalCount"] == 0


def test_some_albums_carry_two_genres_and_appear_in_both_top_lists(catalog):
    two_genre = [album for album in catalog.albums.values() if len(album.genre_ids) == 2]
    assert 0.01 <= len(two_genre) / len(catalog.albums) <= 0.1
    for album in two_genre:
        for genre in catalog.album_genres(album.id):
            assert album.id in catalog.top_album_ids(genre)


def test_album_json_has_the_real_fields(session, emulator, catalog):
    album_id = catalog.top_list("jazz", "week")[0]
    albums = _get(session, emulator, f"/v2.2/albums/{album_id}").json()["albums"]
    assert len(albums) == 1
    album = albums[0]
    assert ALBUM_FIELDS <= album.keys()
    assert album == catalog.album(album_id, emulator.url)
    assert re.fullmatch(r"alb\.\d{9}", album["id"])
    assert album["type"] == "album"
    assert catalog.albums[album_id].top_genre_ids[0] == "g.299"
    assert album["links"]["genres"]["ids"] == list(catalog.albums[album_id].genre_ids)
    assert album["links"]["images"]["href"] == f"{emulator.url}/v2.2/albums/{album_id}/images"
    assert album["contributingArtists"]["primaryArtist"] in album["links"]["artists"]["ids"]
    released = [catalog.album(album_id)["released"] for album_id in catalog.albums]
    assert 0 < released.count("") < 0.1 * len(released)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", value) for value in released if value)


def test_several_albums_at_once_skip_unknown_ids(session, emulator, catalog):
    known = catalog.top_list("pop", "day")[:3]
    response = _get(session, emulator, f"/v2.2/albums/{known[0]},alb.1,{known[1]},{known[2]}")
    assert response.status_code == 200
    assert [album["id"] for album in response.json()["albums"]] == known
    unknown = _get(session, emulator, "/v2.2/albums/alb.404")
    assert unknown.status_code == 200 and unknown.json() == {"albums": []}


def test_images_list_sizes_and_serve_decodable_jpegs_without_a_key(session, emulator, catalog):
    album_id = next(
        a for a in catalog.top_list("rock", "month") if catalog.albums[a].image_sizes == USUAL_LIST
    )
    images = _get(session, emulator, f"/v2.2/albums/{album_id}/images").json()["images"]
    assert [(image["width"], image["height"]) for image in images] == [(size, size) for size in USUAL_LIST]
    image_300 = next(image for image in images if image["width"] == 300)
    assert IMAGE_FIELDS <= image_300.keys()
    assert image_300["type"] == "image" and image_300["contentId"] == album_id
    assert image_300["url"].startswith(f"{emulator.url}/img/300x300/") and image_300["url"].endswith(".jpg")
    fetched = requests.get(image_300["url"], timeout=10)  # the static host needs no key
    assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "image/jpeg"
    assert fetched.content == catalog.image_bytes(album_id, 300, 300)
    for image in images:
        with Image.open(io.BytesIO(requests.get(image["url"], timeout=10).content)) as decoded:
            assert decoded.format == "JPEG" and decoded.size == (image["width"], image["height"])


def test_about_nine_in_ten_albums_have_a_600px_image_and_the_rest_404(session, emulator, catalog):
    with_600 = [album_id for album_id, album in catalog.albums.items() if 600 in album.image_sizes]
    assert 0.8 <= len(with_600) / len(catalog.albums) <= 0.98
    without = next(album_id for album_id in catalog.albums if album_id not in with_600)
    listed = _get(session, emulator, f"/v2.2/albums/{without}/images").json()["images"]
    assert 600 not in {image["width"] for image in listed}
    missing_url = emulator.url + catalog.image_path(without, 600, 600)
    assert requests.get(missing_url, timeout=10).status_code == 404


def test_images_of_several_albums_at_once(session, emulator, catalog):
    first, second = catalog.top_list("classical", "year")[:2]
    images = _get(session, emulator, f"/v2.2/albums/{first},alb.1,{second}/images").json()["images"]
    assert {image["contentId"] for image in images} == {first, second}


def test_api_key_is_required_and_never_logged(emulator):
    emulator.clear_requests()
    url = f"{emulator.url}/v2.2/genres"
    missing = requests.get(url, timeout=10)
    wrong = requests.get(url, headers={"apikey": "wrong"}, timeout=10)
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["code"] == wrong.json()["code"] == "UnauthorizedError"
    assert requests.get(url, params={"apikey": KEY, "lang": "en"}, timeout=10).status_code == 200
    assert requests.get(url, headers={"apikey": KEY}, timeout=10).status_code == 200
    log = emulator.requests
    assert [record.status for record in log] == [401, 401, 200, 200]
    assert log[2].path == "/v2.2/genres?lang=en"
    assert all(KEY not in repr(record) for record in log)


def test_bad_path_is_resource_not_found(session, emulator):
    response = _get(session, emulator, "/v2.2/nothing/here")
    assert response.status_code == 404
    assert response.json()["code"] == "ResourceNotFound"


def test_null_total_count_flag(catalog):
    with NapsterEmulator(catalog, api_key=KEY, null_total_count=True) as server:
        meta = requests.get(
            f"{server.url}/v2.2/genres/g.21/albums/top",
            headers={"apikey": KEY},
            params={"range": "day"},
            timeout=10,
        ).json()["meta"]
    assert meta["totalCount"] is None and meta["returnedCount"] == 20


def test_rate_limit_answers_429_too_many_requests(catalog):
    with NapsterEmulator(catalog, api_key=KEY, rate_limit_per_second=3) as server:
        statuses = [
            requests.get(f"{server.url}/v2.2/genres", headers={"apikey": KEY}, timeout=10) for _ in range(6)
        ]
    assert [response.status_code for response in statuses[:3]] == [200, 200, 200]
    assert statuses[-1].status_code == 429 and statuses[-1].json()["code"] == "TooManyRequestsError"
    assert statuses[-1].headers["Retry-After"] == "1"


def test_catalog_is_deterministic_and_seeded():
    first, again = NapsterCatalog(albums_per_genre=20, seed=1), NapsterCatalog(albums_per_genre=20, seed=1)
    other = NapsterCatalog(albums_per_genre=20, seed=2)
    assert first.albums == again.albums and first.top_lists == again.top_lists
    assert set(first.albums) != set(other.albums)
    album_id = next(iter(first.albums))
    assert first.image_bytes(album_id, 170, 170) == again.image_bytes(album_id, 170, 170)


def test_catalog_refuses_genres_it_cannot_draw():
    with pytest.raises(ValueError, match="cover styles"):
        NapsterCatalog(genres=("rock", "polka"))
    with pytest.raises(ValueError, match="positive"):
        NapsterCatalog(albums_per_genre=0)


def test_emulator_listens_on_loopback_only(catalog):
    with pytest.raises(ValueError, match="loopback"):
        NapsterEmulator(catalog, host="0.0.0.0")
    with NapsterEmulator(catalog) as server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url


# --- damaged images and the ground truth of a crawl -----------------------------------------------------
IMAGE_MAGIC = (b"\xff\xd8", b"\x89PNG", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*", b"\x00\x00\x01\x00")


@pytest.fixture(scope="module")
def faulty_catalog():
    return NapsterCatalog(
        albums_per_genre=60,
        seed=5,
        broken_image_share=0.1,
        truncated_image_share=0.1,
        placeholder_image_share=0.1,
    )


@pytest.fixture(scope="module")
def faulty_emulator(faulty_catalog):
    with NapsterEmulator(faulty_catalog, api_key=KEY) as server:
        yield server


def _fetch_chosen_image(emulator, album_id, min_side=200):
    """What a crawler does: list the album's images, take the smallest square one >= min_side, fetch it."""
    images = requests.get(
        f"{emulator.url}/v2.2/albums/{album_id}/images", headers={"apikey": KEY}, timeout=10
    ).json()["images"]
    sizes = sorted(image["width"] for image in images if image["width"] == image["height"])
    size = next((size for size in sizes if size >= min_side), sizes[-1])
    url = next(image["url"] for image in images if image["width"] == size)
    response = requests.get(url, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
    assert response.headers["Content-Length"] == str(len(response.content))  # every transfer completes
    return size, response.content


def _albums_with(catalog, fault):
    return [album_id for album_id in catalog.albums if catalog.image_fault(album_id) == fault]


def test_image_faults_are_seeded_shares_and_off_by_default(catalog, faulty_catalog):
    counts = Counter(faulty_catalog.image_fault(album_id) for album_id in faulty_catalog.albums)
    for fault in ("broken", "truncated", "placeholder"):
        assert 0.04 <= counts[fault] / len(faulty_catalog.albums) <= 0.18
    again = NapsterCatalog(
        albums_per_genre=60,
        seed=5,
        broken_image_share=0.1,
        truncated_image_share=0.1,
        placeholder_image_share=0.1,
    )
    assert all(again.image_fault(a) == faulty_catalog.image_fault(a) for a in faulty_catalog.albums)
    assert all(catalog.image_fault(album_id) is None for album_id in catalog.albums)
    assert catalog.invalid_covers() == {}
    for bad in (
        {"broken_image_share": -0.1},
        {"placeholder_image_share": 1.5},
        {"truncated_image_share": "0"},
    ):
        with pytest.raises(ValueError, match="between 0 and 1"):
            NapsterCatalog(albums_per_genre=5, **bad)
    with pytest.raises(ValueError, match="add up to more than 1"):
        NapsterCatalog(albums_per_genre=5, broken_image_share=0.6, truncated_image_share=0.6)


def test_broken_images_are_non_image_bytes_at_every_size(faulty_emulator, faulty_catalog):
    for album_id in _albums_with(faulty_catalog, "broken")[:5]:
        for size in faulty_catalog.albums[album_id].image_sizes:
            url = faulty_emulator.url + faulty_catalog.image_path(album_id, size, size)
            response = requests.get(url, timeout=10)
            assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
            assert len(response.content) > 100 and not response.content.startswith(IMAGE_MAGIC)
            with pytest.raises(Image.UnidentifiedImageError):
                Image.open(io.BytesIO(response.content))


def test_truncated_images_are_cut_jpegs_that_transfer_completely(faulty_emulator, faulty_catalog):
    for album_id in _albums_with(faulty_catalog, "truncated")[:5]:
        size, data = _fetch_chosen_image(faulty_emulator, album_id)
        record = faulty_catalog.albums[album_id]
        whole = encode_image(draw_cover(record.primary_genre, record.number, size))
        assert data == whole[: int(len(whole) * 0.6)] and data.startswith(b"\xff\xd8")
        with pytest.raises(OSError), Image.open(io.BytesIO(data)) as image:
            image.load()


def test_placeholder_images_are_one_plain_jpeg_shared_by_all_placeholder_albums(
    faulty_emulator, faulty_catalog
):
    placeholders = _albums_with(faulty_catalog, "placeholder")
    assert len(placeholders) >= 2
    for album_id in placeholders[:6]:
        size, data = _fetch_chosen_image(faulty_emulator, album_id)
        assert data == no_cover_available_jpeg(size)
    with Image.open(io.BytesIO(no_cover_available_jpeg(200))) as image:
        image.load()
        assert image.format == "JPEG" and image.size == (200, 200)
        assert image.convert("L").getcolors(64) is not None  # plain: grey with a darker square
    valid = next(
        album_id for album_id in faulty_catalog.albums if faulty_catalog.image_fault(album_id) is None
    )
    side = faulty_catalog.chosen_size(valid)
    assert faulty_catalog.image_bytes(valid, side, side) != no_cover_available_jpeg(side)


def test_chosen_size_is_the_smallest_square_size_at_least_min_side_else_the_largest(faulty_catalog):
    without_600 = next(
        a
        for a, album in faulty_catalog.albums.items()
        if 600 not in album.image_sizes and 500 in album.image_sizes
    )
    with_600 = next(a for a, album in faulty_catalog.albums.items() if album.image_sizes == USUAL_LIST)
    assert faulty_catalog.chosen_size(with_600) == 300
    assert faulty_catalog.chosen_size(with_600, min_side=170) == 170
    assert faulty_catalog.chosen_size(with_600, min_side=250) == 300
    assert faulty_catalog.chosen_size(with_600, min_side=550) == 600
    assert faulty_catalog.chosen_size(without_600, min_side=550) == 500
    assert faulty_catalog.chosen_size(with_600, min_side=1) == 70
    with pytest.raises(ValueError, match="min_side"):
        faulty_catalog.chosen_size(with_600, min_side=0)


def test_expected_and_invalid_covers_partition_the_catalogue(faulty_catalog):
    expected, invalid = faulty_catalog.expected_covers(), faulty_catalog.invalid_covers()
    assert expected.keys() | invalid.keys() == faulty_catalog.albums.keys()
    assert not expected.keys() & invalid.keys()
    assert invalid == {
        album_id: faulty_catalog.image_fault(album_id)
        for album_id in faulty_catalog.albums
        if faulty_catalog.image_fault(album_id)
    }
    assert set(invalid.values()) == {"broken", "truncated", "placeholder"}
    for album_id, cover in expected.items():
        assert cover["genres"] == faulty_catalog.album_genres(album_id)
        assert cover["genres"][0] == faulty_catalog.albums[album_id].primary_genre
        assert cover["genre"] == faulty_catalog.training_genre(album_id)
        assert re.fullmatch(r"[0-9a-f]{64}", cover["image_id"])
    assert len({cover["image_id"] for cover in expected.values()}) == len(expected)  # covers are distinct
    assert any(len(cover["genres"]) == 2 for cover in expected.values())
    assert expected == faulty_catalog.expected_covers()  # stable


def test_expected_covers_of_some_genres_only(faulty_catalog):
    jazz = faulty_catalog.expected_covers(genres=["jazz"])
    assert jazz.keys() == faulty_catalog.top_album_ids("jazz") - faulty_catalog.invalid_covers().keys()
    assert faulty_catalog.invalid_covers(
        genres=["jazz"]
    ).keys() | jazz.keys() == faulty_catalog.top_album_ids("jazz")
    two = faulty_catalog.expected_covers(genres=("rock", "g.299"))
    assert two.keys() == jazz.keys() | faulty_catalog.expected_covers(genres=["rock"]).keys()
    # An album in a second genre's top lists is listed there too, with its own primary genre first.
    album_id, cover = next(
        (a, c) for a, c in faulty_catalog.expected_covers().items() if len(c["genres"]) == 2
    )
    primary, second = cover["genres"]
    assert faulty_catalog.expected_covers(genres=[second])[album_id] == cover
    assert cover["genre"] in (primary, second)


@pytest.mark.parametrize("min_side", [200, 550])
def test_expected_image_ids_are_the_digests_of_the_bytes_served(faulty_emulator, faulty_catalog, min_side):
    expected = faulty_catalog.expected_covers(min_side=min_side)
    sample = list(expected)[::15]
    assert len(sample) >= 10
    for album_id in sample:
        size, data = _fetch_chosen_image(faulty_emulator, album_id, min_side)
        assert size == faulty_catalog.chosen_size(album_id, min_side)
        assert hashlib.sha256(data).hexdigest() == expected[album_id]["image_id"]
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert image.size == (size, size)


# What the seed project measured over the real image lists of its 4,995 albums (PROVENANCE.md of the shared
# recordings): the size chosen under "smallest side >= 200, else the largest", and how the lists look.
REAL_CHOSEN_SIZE_SHARES = {300: 4738 / 4995, 200: 174 / 4995, 500: 42 / 4995, 170: 41 / 4995}
REAL_170_FIRST_SHARE = 4986 / 4995


def test_chosen_sizes_and_image_lists_match_the_real_statistics():
    large = NapsterCatalog(albums_per_genre=1000, seed=7)
    albums = list(large.albums.values())
    chosen = Counter(large.chosen_size(album.id) for album in albums)
    assert chosen.keys() == REAL_CHOSEN_SIZE_SHARES.keys()
    for size, real_share in REAL_CHOSEN_SIZE_SHARES.items():
        assert chosen[size] / len(albums) == pytest.approx(real_share, abs=0.015), size
    assert sum(a.image_sizes[0] == 170 for a in albums) / len(albums) == pytest.approx(
        REAL_170_FIRST_SHARE, abs=0.01
    )
    assert 0.8 <= sum(a.image_sizes == USUAL_LIST for a in albums) / len(albums) <= 0.95
    assert 0.07 <= sum(600 not in a.image_sizes for a in albums) / len(albums) <= 0.13
    assert any(a.image_sizes[0] == 500 for a in albums) and any(a.image_extension == "jpeg" for a in albums)
    nothing_big = next(a for a in albums if max(a.image_sizes) < 200)
    assert large.chosen_size(nothing_big.id) == 170 == large.chosen_size(nothing_big.id, min_side=10_000)


def test_images_are_listed_in_the_real_order_and_jpeg_urls_are_served(session, emulator, catalog):
    large = NapsterCatalog(albums_per_genre=1000, seed=7)
    jpeg_album = next(a for a in large.albums.values() if a.image_extension == "jpeg")
    with NapsterEmulator(large, api_key=KEY) as server:
        images = _get(session, server, f"/v2.2/albums/{jpeg_album.id}/images").json()["images"]
        assert [image["width"] for image in images] == list(jpeg_album.image_sizes)
        assert all(image["url"].endswith(".jpeg") for image in images)
        assert requests.get(images[0]["url"], timeout=10).content == large.image_bytes(
            jpeg_album.id, images[0]["width"], images[0]["height"]
        )
        as_jpg = images[0]["url"].removesuffix(".jpeg") + ".jpg"
        assert requests.get(as_jpg, timeout=10).status_code == 404


def test_albums_carry_sub_genres_and_the_genre_tree_places_them(session, emulator, catalog):
    listed = {genre["id"]: genre for genre in _get(session, emulator, "/v2.2/genres").json()["genres"]}
    assert listed["g.146"]["links"]["childGenres"]["ids"] == children_of("g.146")
    assert "g.173" in listed["g.146"]["links"]["childGenres"]["ids"]
    assert all(genre["links"]["parentGenres"]["ids"] == ["g.10000"] for genre in listed.values())
    own = [album.genre_ids[0] for album in catalog.albums.values()]
    assert sum(genre_id in listed for genre_id in own) / len(own) < 0.2  # rarely a top-level id
    assert sum(genre_id in GENRE_PARENT for genre_id in own) / len(own) > 0.75
    looked_up = _get(session, emulator, "/v2.2/genres/g.1104,g.173,g.1901,classic-rock").json()["genres"]
    assert [(g["id"], g["links"]["parentGenres"]["ids"]) for g in looked_up] == [
        ("g.1104", ["g.1102"]),
        ("g.173", ["g.146"]),
        ("g.1101", ["g.5"]),
    ]
    for album in catalog.albums.values():
        for served, top in zip(album.genre_ids, album.top_genre_ids, strict=True):
            chain = [served]
            while chain[-1] in GENRE_PARENT:
                chain.append(GENRE_PARENT[chain[-1]])
            assert chain[-1] == top or served in UNLISTED_GENRE_IDS


def test_flag_field_names_are_the_2016_ones_unless_asked_for_v2_2(catalog):
    album_id = next(a for a, album in catalog.albums.items() if album.is_explicit)
    assert catalog.album(album_id)["explicit"] is True and "isExplicit" not in catalog.album(album_id)
    v22 = NapsterCatalog(albums_per_genre=100, seed=3, flag_field_style="v2.2")
    assert v22.album(album_id)["isExplicit"] is True and "explicit" not in v22.album(album_id)
    assert v22.album(album_id)["isSingle"] == catalog.album(album_id)["single"]
    with pytest.raises(ValueError, match="flag_field_style"):
        NapsterCatalog(albums_per_genre=5, flag_field_style="v3")
