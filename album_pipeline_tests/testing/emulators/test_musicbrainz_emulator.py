import hashlib
import io
import re
import time
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image

from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.testing.emulators.faults import FaultPlan
from album_pipeline.testing.emulators.musicbrainz import MAX_SEARCH_LIMIT, MusicBrainzEmulator
from album_pipeline.testing.emulators.musicbrainz_catalog import MusicBrainzCatalog
from album_pipeline.testing.emulators.musicbrainz_records import (
    DEFAULT_TAGS_BY_GENRE,
    PRIMARY_TYPE_IDS,
    SECONDARY_TYPE_IDS,
)

USER_AGENT = "AlbumPipelineTests/0.1 ( tests@example.org )"
MBID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
SEARCH_FIELDS = {
    "id", "type-id", "score", "primary-type-id", "count", "title", "primary-type", "artist-credit",
    "releases", "tags",
}  # fmt: skip
IMAGE_FIELDS = {"id", "image", "front", "back", "approved", "types", "comment", "edit", "thumbnails"}


@pytest.fixture(scope="module")
def catalog():
    return MusicBrainzCatalog(release_groups_per_genre=30, seed=5)


@pytest.fixture(scope="module")
def emulator(catalog):
    with MusicBrainzEmulator(catalog, rate_limit_per_second=None) as server:
        yield server


@pytest.fixture(scope="module")
def session():
    with requests.Session() as http:
        http.headers["User-Agent"] = USER_AGENT
        yield http


def _search(session, emulator, query, **params):
    return session.get(
        f"{emulator.url}/ws/2/release-group", params={"query": query, "fmt": "json", **params}, timeout=10
    )


def _crawl(session, emulator, query, limit=100):
    """Page a search to its reported count, checking each page's offset and count."""
    ids, offset, count = [], 0, None
    while count is None or offset < count:
        response = _search(session, emulator, query, limit=limit, offset=offset)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["offset"] == offset
        assert count is None or body["count"] == count
        count = body["count"]
        assert len(body["release-groups"]) == min(limit, count - offset)
        ids.extend(group["id"] for group in body["release-groups"])
        offset += limit
    return ids


def _with_art(catalog, genre=None):
    return [mbid for mbid in catalog.kept_release_groups(genre) if catalog.has_art(mbid)]


def test_catalogue_is_deterministic_per_seed():
    first = MusicBrainzCatalog(release_groups_per_genre=10, seed=1)
    again = MusicBrainzCatalog(release_groups_per_genre=10, seed=1)
    other = MusicBrainzCatalog(release_groups_per_genre=10, seed=2)
    assert first.records == again.records
    assert first.expected_covers() == again.expected_covers()
    assert set(first.records).isdisjoint(other.records)


def test_catalogue_rejects_unknown_genres_and_shared_tags():
    with pytest.raises(ValueError, match="cover styles"):
        MusicBrainzCatalog(tags_by_genre={"polka": ("polka",)})
    with pytest.raises(ValueError, match="both"):
        MusicBrainzCatalog(tags_by_genre={"rock": ("rock",), "pop": ("rock",)})
    with pytest.raises(ValueError, match="positive"):
        MusicBrainzCatalog(release_groups_per_genre=0)


def test_catalogue_shape(catalog):
    kept, albums = catalog.kept_release_groups(), catalog.release_groups()
    assert len(kept) == 30 * len(DEFAULT_GENRES)
    everything = catalog.release_groups(primary_type=None)
    assert {catalog.record(mbid).primary_type for mbid in set(everything) - set(albums)} == {"Single", "EP"}
    assert 0.1 <= (len(everything) - len(albums)) / len(kept) <= 0.2
    assert all(MBID.fullmatch(mbid) for mbid in everything)
    for genre in DEFAULT_GENRES:
        primaries = [
            mbid for mbid in catalog.kept_release_groups(genre) if catalog.primary_genre(mbid) == genre
        ]
        assert len(primaries) == 30
    dates = [catalog.record(mbid).first_release_date for mbid in everything]
    assert all(re.fullmatch(r"(\d{4}(-\d\d(-\d\d)?)?)?", date) for date in dates)
    assert {len(date) for date in dates} >= {0, 4, 7, 10}
    # Some albums carry a second target genre, at a lower count than the primary one.
    large = MusicBrainzCatalog(release_groups_per_genre=200, seed=5)
    two = [mbid for mbid in large.release_groups() if len(large.genres_of(mbid)) == 2]
    assert 0.02 <= len(two) / len(large.release_groups()) <= 0.09
    # Rap albums are tagged "hip hop", "rap" or both.
    rap_tags = {
        frozenset(large.record(mbid).tag_names() & {"hip hop", "rap"})
        for mbid in large.release_groups("rap-hip-hop")
        if large.primary_genre(mbid) == "rap-hip-hop"
    }
    assert rap_tags == {frozenset({"hip hop"}), frozenset({"rap"}), frozenset({"hip hop", "rap"})}


def test_primary_genre_is_the_genre_whose_tag_counts_most_and_styles_the_cover(catalog):
    covers = catalog.expected_covers()
    assert set(covers) == set(_with_art(catalog))
    for mbid, cover in covers.items():
        counts = dict(catalog.record(mbid).tags)
        best = {
            genre: max(counts.get(tag, 0) for tag in DEFAULT_TAGS_BY_GENRE[genre]) for genre in DEFAULT_GENRES
        }
        carried = [genre for genre in DEFAULT_GENRES if best[genre] > 0]
        assert set(cover["genres"]) == set(carried)
        assert cover["genre"] == cover["genres"][0] == max(carried, key=best.__getitem__)
        assert all(best[cover["genre"]] > best[genre] for genre in carried if genre != cover["genre"])
        assert re.fullmatch(r"[0-9a-f]{64}", cover["image_id"])


def test_about_one_in_ten_albums_has_no_art():
    large = MusicBrainzCatalog(release_groups_per_genre=200, seed=5)
    albums = large.release_groups()
    without = [mbid for mbid in albums if not large.has_art(mbid)]
    assert 0.06 <= len(without) / len(albums) <= 0.14
    with pytest.raises(KeyError):
        large.front_image_bytes(without[0])


def test_tag_search_with_primarytype_pages_to_exactly_the_tagged_albums(session, emulator, catalog):
    for genre, tags in DEFAULT_TAGS_BY_GENRE.items():
        for tag in tags:
            found = _crawl(session, emulator, f'tag:"{tag}" AND primarytype:album', limit=40)
            assert len(found) == len(set(found))
            assert sorted(found) == catalog.tagged(tag)
            # The search also finds groups whose tag was voted 0 times; only those voted above 0 carry it.
            voted = {mbid for mbid in found if dict(catalog.record(mbid).tags)[tag] > 0}
            assert voted <= set(catalog.release_groups(genre)) and set(found) - voted
    rap = set(catalog.tagged("hip hop")) | set(catalog.tagged("rap"))
    assert rap >= set(catalog.release_groups("rap-hip-hop"))


def test_tag_search_without_primarytype_includes_singles_and_eps(session, emulator, catalog):
    found = _crawl(session, emulator, "tag:jazz")
    assert sorted(found) == catalog.tagged("jazz", primary_type=None)
    assert len(found) > len(catalog.tagged("jazz"))
    singles = _crawl(session, emulator, "tag:jazz AND primarytype:single")
    assert sorted(singles) == catalog.tagged("jazz", primary_type="Single")


def test_query_variants_are_equivalent(session, emulator):
    reference = _crawl(session, emulator, 'tag:"jazz" AND primarytype:album')
    for query in (
        "tag:jazz AND primarytype:album",
        'TAG:"Jazz" AND PrimaryType:"Album"',
        "tag:JAZZ and primarytype:album",
    ):
        assert _crawl(session, emulator, query) == reference


def test_search_result_fields_order_and_limits(session, emulator, catalog):
    response = _search(session, emulator, 'tag:"hip hop" AND primarytype:album')
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert {"created", "count", "offset", "release-groups"} <= body.keys()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["created"])
    assert len(body["release-groups"]) == min(25, body["count"])  # the default limit
    scores = [(-group["score"], group["id"]) for group in body["release-groups"]]
    assert scores == sorted(scores)
    for group in body["release-groups"]:
        assert SEARCH_FIELDS <= group.keys()
        assert group == catalog.release_group_json(group["id"], group["score"])
        assert group["primary-type"] == "Album" and group["primary-type-id"] == PRIMARY_TYPE_IDS["Album"]
        kinds = group.get("secondary-types", [])
        assert group.get("secondary-type-ids", []) == [SECONDARY_TYPE_IDS[kind] for kind in kinds]
        if not kinds or kinds[0] == "Mixtape/Street":
            assert group["type-id"] == PRIMARY_TYPE_IDS["Album"]
        else:
            assert group["type-id"] == SECONDARY_TYPE_IDS[kinds[0]]
        assert 1 <= group["score"] <= 100
        assert group["count"] == len(group["releases"]) >= 1
        assert all(
            release["status"] == "Official" and MBID.fullmatch(release["id"]) for release in group["releases"]
        )
        assert "hip hop" in {tag["name"] for tag in group["tags"]}
        assert all(set(tag) == {"name", "count"} and tag["count"] >= 0 for tag in group["tags"])
        credit = group["artist-credit"]
        # As on the real pages: only a credit followed by another has a joinphrase.
        assert credit and "joinphrase" not in credit[-1]
        assert all(part["joinphrase"] for part in credit[:-1])
        for part in credit:
            assert {"name", "artist"} <= part.keys()
            assert {"id", "name", "sort-name"} <= part["artist"].keys()
    credits = [catalog.release_group_json(mbid)["artist-credit"] for mbid in catalog.release_groups()]
    assert {credit[0]["joinphrase"] for credit in credits if len(credit) == 2} == {" & ", " feat. "}
    everything = _search(session, emulator, "tag:rock", limit=5000).json()
    assert len(everything["release-groups"]) == min(MAX_SEARCH_LIMIT, everything["count"])
    past_end = _search(session, emulator, "tag:rock", offset=10_000).json()
    assert past_end["release-groups"] == [] and past_end["count"] == everything["count"]
    nothing = _search(session, emulator, "tag:polka AND primarytype:album").json()
    assert nothing["count"] == 0 and nothing["release-groups"] == []


@pytest.mark.parametrize(
    "query",
    [
        "",
        "tag:hip hop",
        "tag:jazz OR tag:rock",
        "artist:someone",
        "tag:ja*",
        "(tag:jazz)",
        'tag:"jazz" AND',
        "jazz",
    ],
)
def test_unsupported_queries_are_400_json(session, emulator, query):
    response = _search(session, emulator, query)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json" and response.json()["error"]


def test_bad_paging_is_400(session, emulator):
    assert _search(session, emulator, "tag:jazz", limit="ten").status_code == 400
    assert _search(session, emulator, "tag:jazz", offset=-1).status_code == 400


def test_json_is_required(session, emulator):
    url = f"{emulator.url}/ws/2/release-group"
    xml = session.get(url, params={"query": "tag:jazz"}, timeout=10)
    assert xml.status_code == 400 and "fmt=json" in xml.json()["error"]
    accepted = session.get(
        url, params={"query": "tag:jazz"}, headers={"Accept": "application/json"}, timeout=10
    )
    assert accepted.status_code == 200 and accepted.json()["count"] > 0
    genres = session.get(f"{emulator.url}/ws/2/genre/all", timeout=10)
    assert genres.status_code == 400


@pytest.mark.parametrize(
    "agent", [None, "", "python-requests/2.32.3", "Python-urllib/3.11", "curl/8.5.0", "Wget/1.21"]
)
def test_anonymous_or_library_default_user_agents_get_403(emulator, agent):
    headers = {"User-Agent": agent} if agent is not None else {}
    with requests.Session() as http:
        if agent is None:
            del http.headers["User-Agent"]
        response = http.get(
            f"{emulator.url}/ws/2/genre/all", params={"fmt": "json"}, headers=headers, timeout=10
        )
    assert response.status_code == 403
    assert "User-Agent" in response.json()["error"]
    # The Cover Art Archive is another service, without that rule.
    mbid = _with_art(emulator.catalog)[0]
    assert requests.get(f"{emulator.url}/release-group/{mbid}", timeout=10).status_code == 200


def test_genre_list(session, emulator, catalog):
    body = session.get(
        f"{emulator.url}/ws/2/genre/all", params={"fmt": "json", "limit": 100}, timeout=10
    ).json()
    names = [genre["name"] for genre in body["genres"]]
    assert body["genre-count"] == len(names) == len(set(names))
    assert {tag for tags in DEFAULT_TAGS_BY_GENRE.values() for tag in tags} <= set(names)
    assert not {"british", "live", "1990s", "female vocalists"} & set(names)
    assert all(
        re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", genre["id"]) for genre in body["genres"]
    )
    paged = []
    for offset in range(0, body["genre-count"], 4):
        page = session.get(
            f"{emulator.url}/ws/2/genre/all", params={"fmt": "json", "limit": 4, "offset": offset}, timeout=10
        ).json()
        paged.extend(page["genres"])
    assert paged == body["genres"]


def test_rate_limit_gives_503_with_retry_after_only_on_the_web_service(catalog):
    mbid = _with_art(catalog)[0]
    with MusicBrainzEmulator(catalog, rate_limit_per_second=2) as server, requests.Session() as http:
        http.headers["User-Agent"] = USER_AGENT
        genres = f"{server.url}/ws/2/genre/all?fmt=json"
        statuses = [http.get(genres, timeout=10).status_code for _ in range(2)]
        limited = http.get(genres, timeout=10)
        # The Cover Art Archive does not count against, nor obey, the web service's limit.
        art = [http.get(f"{server.url}/release-group/{mbid}", timeout=10).status_code for _ in range(5)]
        time.sleep(1.05)
        recovered = http.get(genres, timeout=10)
    assert statuses == [200, 200]
    assert limited.status_code == 503 and limited.headers["Retry-After"] == "1"
    assert limited.json()["error"].startswith("Your requests are exceeding the allowable rate limit.")
    assert art == [200] * 5
    assert recovered.status_code == 200
    assert [record.status for record in server.requests if record.path.startswith("/ws/2/")] == [
        200,
        200,
        503,
        200,
    ]


def test_cover_art_json(session, emulator, catalog):
    mbid = _with_art(catalog)[0]
    response = requests.get(f"{emulator.url}/release-group/{mbid}", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body == catalog.cover_art_json(mbid, emulator.url)
    record = catalog.record(mbid)
    assert body["release"] == f"{emulator.url}/release/{record.release_id}"
    fronts = [image for image in body["images"] if image["front"]]
    assert len(fronts) == 1
    for image in body["images"]:
        assert IMAGE_FIELDS <= image.keys()
        assert isinstance(image["id"], int) and isinstance(image["edit"], int)
        assert image["approved"] is True and image["back"] is (image["types"] == ["Back"])
        assert set(image["thumbnails"]) == {"250", "500", "1200", "small", "large"}
        for url in [image["image"], *image["thumbnails"].values()]:
            assert url.startswith(emulator.url + "/")
    assert fronts[0]["types"] == ["Front"]
    # Some groups also have a back image, not always listed second.
    orders = {tuple(image.front for image in catalog.record(group).images) for group in _with_art(catalog)}
    assert {(True,), (True, False), (False, True)} <= orders
    # The release's own endpoint answers the same.
    assert requests.get(body["release"], timeout=10).json() == body


def test_cover_art_errors(emulator, catalog):
    no_art = next(mbid for mbid in catalog.release_groups() if not catalog.has_art(mbid))
    for path in (f"/release-group/{no_art}", f"/release-group/{no_art}/front-250"):
        answer = requests.get(emulator.url + path, timeout=10)
        # The real archive's "no art" is werkzeug's HTML page, not JSON or text.
        assert answer.status_code == 404 and answer.headers["Content-Type"].startswith("text/html")
        assert "<title>404 Not Found</title>" in answer.text
    unknown = "00000000-0000-4000-8000-000000000000"
    assert requests.get(f"{emulator.url}/release-group/{unknown}", timeout=10).status_code == 404
    assert requests.get(f"{emulator.url}/release-group/{unknown}/front", timeout=10).status_code == 404
    assert requests.get(f"{emulator.url}/release-group/not-an-mbid", timeout=10).status_code == 400
    assert requests.get(f"{emulator.url}/release-group/not-an-mbid/front-250", timeout=10).status_code == 400
    assert requests.get(f"{emulator.url}/no/such/path", timeout=10).status_code == 404
    missing = requests.get(
        f"{emulator.url}/ws/2/artist/x?fmt=json", headers={"User-Agent": USER_AGENT}, timeout=10
    )
    assert missing.status_code == 404 and missing.json()["error"]


def test_front_thumbnail_redirects_to_an_archive_path_serving_the_expected_jpeg(emulator, catalog):
    covers = catalog.expected_covers()
    for mbid in _with_art(catalog)[:5]:
        redirect = requests.get(
            f"{emulator.url}/release-group/{mbid}/front-250", allow_redirects=False, timeout=10
        )
        assert redirect.status_code == 307
        location = redirect.headers["Location"]
        assert location.startswith(emulator.archive_org_url + "/download/mbid-")
        assert re.fullmatch(
            r"/download/mbid-([0-9a-f-]{36})/mbid-\1-\d+_thumb250\.jpg", urlsplit(location).path
        )
        hop = requests.get(location, allow_redirects=False, timeout=10)
        assert hop.status_code == 302 and hop.headers["Content-Type"] == "image/jpeg"  # as recorded
        assert hop.headers["Location"] == location.replace(
            f"{emulator.archive_org_url}/download/", f"{emulator.data_node_url}/0/items/"
        )
        image = requests.get(location, timeout=10)
        assert image.status_code == 200 and image.headers["Content-Type"] == "image/jpeg"
        assert hashlib.sha256(image.content).hexdigest() == covers[mbid]["image_id"]
        assert image.content == catalog.front_image_bytes(mbid, 250)
        with Image.open(io.BytesIO(image.content)) as decoded:
            assert decoded.format == "JPEG" and decoded.size == (250, 250)


@pytest.mark.parametrize(("suffix", "size"), [("front-500", 500), ("front-1200", 1200), ("front", 1400)])
def test_other_front_sizes(emulator, catalog, suffix, size):
    mbid = _with_art(catalog)[1]
    image = requests.get(f"{emulator.url}/release-group/{mbid}/{suffix}", timeout=10)
    assert image.status_code == 200 and [hop.status_code for hop in image.history] == [307, 302]
    # Three hosts (here three loopback ports), in plain http, as coverartarchive.org -> archive.org -> dnNNN.
    hosts = [urlsplit(hop.url).netloc for hop in [*image.history, image]]
    assert len(set(hosts)) == 3 and all(hop.url.startswith("http://") for hop in image.history)
    with Image.open(io.BytesIO(image.content)) as decoded:
        assert decoded.size == (size, size)


def test_listed_image_urls_redirect_to_the_right_image(emulator, catalog):
    mbid = next(group for group in _with_art(catalog) if len(catalog.record(group).images) == 2)
    body = requests.get(f"{emulator.url}/release-group/{mbid}", timeout=10).json()
    front = next(image for image in body["images"] if image["front"])
    back = next(image for image in body["images"] if not image["front"])
    assert requests.get(front["thumbnails"]["small"], timeout=10).content == catalog.front_image_bytes(mbid)
    assert requests.get(front["thumbnails"]["large"], timeout=10).content == catalog.front_image_bytes(
        mbid, 500
    )
    back_bytes = requests.get(back["thumbnails"]["250"], timeout=10).content
    assert back_bytes != catalog.front_image_bytes(mbid)
    with Image.open(io.BytesIO(back_bytes)) as decoded:
        assert decoded.size == (250, 250)


def test_faults_use_the_musicbrainz_error_shape(catalog):
    plan = FaultPlan(rate=1.0, kinds=("503",), failures_per_target=1)
    with MusicBrainzEmulator(catalog, rate_limit_per_second=None, faults=plan) as server:
        url = f"{server.url}/ws/2/genre/all?fmt=json"
        first = requests.get(url, headers={"User-Agent": USER_AGENT}, timeout=10)
        second = requests.get(url, headers={"User-Agent": USER_AGENT}, timeout=10)
    assert first.status_code == 503 and first.json()["error"] and "Retry-After" in first.headers
    assert second.status_code == 200


def test_secondary_types_at_the_recorded_share_and_what_a_crawl_excludes():
    large = MusicBrainzCatalog(release_groups_per_genre=200, seed=5)
    albums, kept = large.release_groups(), large.kept_release_groups()
    with_types = [mbid for mbid in albums if large.record(mbid).secondary_types]
    assert abs(len(with_types) / len(albums) - 25 / 44) <= 0.05  # 25 of the 44 recorded groups
    assert len(kept) == 200 * len(DEFAULT_GENRES)
    # Soundtracks are a secondary type a default crawl keeps; the rest are excluded.
    assert any(large.record(mbid).secondary_types == ("Soundtrack",) for mbid in kept)
    exclusions = large.expected_exclusions()
    assert set(exclusions) == {"compilation", "live", "remix", "dj-mix", "mixtape/street"}
    assert sum(exclusions.values()) > len(albums) - len(kept)  # some groups carry two excluded types
    assert large.kept_release_groups(excluded=()) == albums
    assert large.expected_covers(excluded=()).keys() > large.expected_covers().keys()
    assert not large.expected_missing_art() & set(large.expected_covers())


def test_zero_vote_tags_never_make_a_genre():
    large = MusicBrainzCatalog(release_groups_per_genre=200, seed=5)
    genre_of_tag = {tag: genre for genre, tags in DEFAULT_TAGS_BY_GENRE.items() for tag in tags}
    unvoted = [
        (mbid, genre_of_tag[name])
        for mbid in large.release_groups()
        for name, count in large.record(mbid).tags
        if count == 0 and name in genre_of_tag
    ]
    assert 0.1 <= len(unvoted) / len(large.release_groups()) <= 0.3
    assert all(genre not in large.genres_of(mbid) for mbid, genre in unvoted)


def test_pdf_uploads_are_listed_without_types_and_served_as_pdf(emulator, catalog):
    mbid = next(m for m in _with_art(catalog) if any(i.extension == "pdf" for i in catalog.record(m).images))
    body = requests.get(f"{emulator.url}/release-group/{mbid}", timeout=10).json()
    pdf = next(image for image in body["images"] if image["image"].endswith(".pdf"))
    assert pdf["types"] == [] and pdf["front"] is False and pdf["back"] is False
    upload = requests.get(pdf["image"], timeout=10)
    assert upload.status_code == 200 and upload.headers["Content-Type"] == "application/pdf"
    assert upload.content.startswith(b"%PDF")
    thumbnail = requests.get(pdf["thumbnails"]["250"], timeout=10)
    assert thumbnail.headers["Content-Type"] == "image/jpeg"
    assert requests.get(pdf["image"].replace(".pdf", ".jpg"), timeout=10).status_code == 404
