"""Contract tests: the real MusicBrainz and Cover Art Archive responses, replayed verbatim on loopback against
the real clients and the real crawl (not the emulator).

The recordings live beside the checkout (``../shared/reference/real-responses/``, see its PROVENANCE.md) and
are read from there, never copied. What was not recorded is made up here and says so: ``/ws/2/genre/all``
(the crawl's first call), the image bytes at the end of the redirect chain, and the HTML "no art" 404, whose
shape comes from the service's code (werkzeug's NotFound).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from album_pipeline.data.crawl_state import CrawlState
from album_pipeline.data.musicbrainz_covers import MusicBrainzCrawlOptions, crawl_musicbrainz
from album_pipeline.data.storage import ImageStore
from album_pipeline.genres import DEFAULT_GENRE_MAP
from album_pipeline.sources.http import NoImageError, UntrustedURLError, host_checker, make_session
from album_pipeline.sources.musicbrainz import (
    DEFAULT_COVERART_IMAGE_HOSTS,
    CoverArtClient,
    MusicBrainzClient,
    artist_credit,
    cover_art_images,
    front_image,
    positive_tag_votes,
    secondary_types,
)
from album_pipeline.testing.emulators.base import Request, Response
from album_pipeline.testing.emulators.loopback import LoopbackServer
from album_pipeline.testing.emulators.synthetic import draw_cover, encode_image
from album_pipeline_tests.sources.recordings import read_recording

KIND_OF_BLUE_GROUP = "8e8a594f-2175-38c7-a871-abb68ec363e7"  # the group of the recorded CAA document
BLUE_PERIOD_GROUP = "5d5b6555-9752-4edd-9e78-dcd5a76daca3"  # a plain album on that page, tagged jazz (2)
DISCOVERY_GROUP = "48117b90-a16e-34ca-a514-19c702df1158"  # tagged pop with count 0
KIND_OF_BLUE_RELEASE = "e7ba3cb7-a074-45ee-870f-3baeb6d3e8bf"
FRONT_IMAGE_ID = 12708426541
# Which recorded page answers a crawl's tag search (the pages were title and artist searches; their shapes are
# what matters): tags without a page get the recorded empty result.
PAGE_OF_TAG = {
    "jazz": "search_kind_of_blue.json",
    "pop": "search_discovery.json",
    "rock": "search_dean_blunt.json",
    "hip hop": "search_dean_blunt.json",
}
RECORDED_PAGES = ("search_kind_of_blue.json", "search_dean_blunt.json", "search_discovery.json")
NOT_RECORDED_GENRE_LIST = {"genres": [], "genre-count": 0, "genre-offset": 0}
NO_ART_PAGE = (  # werkzeug's NotFound, as the service's code answers a group without art
    b"<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
    b"<p>The requested URL was not found on the server. If you entered the URL manually please check "
    b"your spelling and try again.</p>\n"
)
USER_AGENT = "album_pipeline_tests/1.0 ( tests@example.org )"


def _page(name: str) -> dict:
    return json.loads(read_recording(f"musicbrainz/{name}"))


def _group(page: str, mbid: str) -> dict:
    return next(group for group in _page(page)["release-groups"] if group["id"] == mbid)


def _recorded_redirect(name: str, hosts: dict[str, str]) -> Response:
    """A recorded redirect replayed: its status and headers, the Location's real host swapped for loopback."""
    status_line, *lines = read_recording(f"coverartarchive/{name}").decode().strip().splitlines()
    headers = dict(line.split(": ", 1) for line in lines if ": " in line)
    location = headers["Location"]
    for real, loopback in hosts.items():
        location = location.replace(f"http://{real}/", f"{loopback}/")
    kept = {"Location": location, "Content-Type": headers["Content-Type"]}
    return Response(int(status_line.split()[1]), b"", kept)


def _search_page(request: Request) -> Response:
    tag = next((t for t in PAGE_OF_TAG if f'tag:"{t}"' in request.query.get("query", "")), None)
    page = read_recording(f"musicbrainz/{PAGE_OF_TAG.get(tag, 'search_no_match.json')}")
    return Response(200, page, {"Content-Type": "application/json; charset=utf-8"})


def _served(status: int, body: bytes, content_type: str):
    return lambda _request: Response(status, body, {"Content-Type": content_type})


@contextmanager
def _replayed_services(caa_host: str = "127.0.0.1") -> Iterator[dict[str, LoopbackServer]]:
    """MusicBrainz, the Cover Art Archive, archive.org and its data node, each on its own loopback server.

    archive.org answers as ``localhost`` and the others as ``127.0.0.1``, so each hop changes host.
    """
    with ExitStack() as stack:
        node = stack.enter_context(LoopbackServer("127.0.0.1"))
        archive = stack.enter_context(LoopbackServer("localhost"))
        caa = stack.enter_context(LoopbackServer(caa_host))
        musicbrainz = stack.enter_context(LoopbackServer("127.0.0.1"))
        item = f"mbid-{KIND_OF_BLUE_RELEASE}/mbid-{KIND_OF_BLUE_RELEASE}-{FRONT_IMAGE_ID}_thumb1200.jpg"
        jpeg = encode_image(draw_cover("jazz", 7, 1200))
        musicbrainz.add_route("GET", r"/ws/2/release-group", _search_page)
        musicbrainz.add_route("GET", r"/ws/2/genre/all", lambda _: Response.json(NOT_RECORDED_GENRE_LIST))
        first_hop = _recorded_redirect("thumbnail_1200_redirect.headers", {"archive.org": archive.url})
        second_hop = _recorded_redirect(
            "archive_org_download_redirect.headers", {"dn710907.ca.archive.org": node.url}
        )
        document = read_recording("coverartarchive/release_group_kind_of_blue.json")
        caa.add_route(
            "GET", rf"/release-group/{KIND_OF_BLUE_GROUP}", _served(200, document, "application/json")
        )
        # The recorded 307 answered the document's 1200 thumbnail; front-1200 leads to the same file.
        thumbnail = rf"/release/{KIND_OF_BLUE_RELEASE}/{FRONT_IMAGE_ID}-1200\.jpg"
        caa.add_route("GET", thumbnail, lambda _: first_hop)
        caa.add_route("GET", rf"/release-group/{KIND_OF_BLUE_GROUP}/front-1200", lambda _: first_hop)
        caa.add_route("GET", r"/release-group/[^/]+(/front-\d+)?", _served(404, NO_ART_PAGE, "text/html"))
        archive.add_route("GET", rf"/download/{item}", lambda _: second_hop)
        node.add_route("GET", rf"/0/items/{item}", lambda _: Response.binary(jpeg, "image/jpeg"))
        yield {"musicbrainz": musicbrainz, "caa": caa, "archive": archive, "node": node}


def _coverart(url: str, hosts: tuple[str, ...] = ("localhost",)) -> CoverArtClient:
    session = make_session(USER_AGENT, backoff_factor=0)
    return CoverArtClient(url, user_agent=USER_AGENT, allowed_image_hosts=hosts, session=session, timeout=10)


def _musicbrainz(url: str) -> MusicBrainzClient:
    session = make_session(USER_AGENT, backoff_factor=0)
    return MusicBrainzClient(
        url, user_agent=USER_AGENT, requests_per_second=None, session=session, timeout=10
    )


@pytest.mark.parametrize(
    ("tag", "albums"),
    [("jazz", 9), ("hip hop", 8), ("pop", 8), ("classical", 0)],  # classical: the recorded empty result
)
def test_recorded_search_pages_yield_their_album_groups_in_one_request(tag: str, albums: int) -> None:
    with _replayed_services() as services:
        found = list(_musicbrainz(services["musicbrainz"].url).iter_release_groups(tag))
        searches = [r for r in services["musicbrainz"].requests if r.path.startswith("/ws/2/release-group")]
    assert len(found) == albums and all(group["primary-type"] == "Album" for group in found)
    assert len(searches) == 1  # a page shorter than the limit is the last, whatever "count" says (64, 63, 9)


def test_recorded_groups_read_as_they_come() -> None:
    discovery = _group("search_discovery.json", DISCOVERY_GROUP)
    votes = positive_tag_votes(discovery)
    assert "pop" not in votes and votes["house"] == 20 and votes["electronic"] == 14
    groups = [group for page in RECORDED_PAGES for group in _page(page)["release-groups"]]
    unvoted = [(g["id"], tag["name"]) for g in groups for tag in g.get("tags", []) if tag["count"] == 0]
    assert len(unvoted) == 14  # the recorded zero-vote tags, none of which counts
    by_id = {group["id"]: group for group in groups}
    assert not any(name in positive_tag_votes(by_id[mbid]) for mbid, name in unvoted)
    remixed = _group("search_discovery.json", "2292c05e-299a-4c03-8688-3bf3d0a01277")
    assert secondary_types(remixed) == ("remix", "mixtape/street") and secondary_types(discovery) == ()
    assert len(groups) == 44 and len([group for group in groups if secondary_types(group)]) == 25
    beta = _group("search_discovery.json", "84216190-e46f-4cf1-8a28-76910183be38")
    assert "first-release-date" not in beta and "tags" not in beta
    fronto = _group("search_dean_blunt.json", "76d6a510-c8be-40e5-bd35-cab7222afaa5")
    assert artist_credit(fronto["artist-credit"]) == "Dean Blunt & jonatan leandoer127"
    assert artist_credit(discovery["artist-credit"]) == "Daft Punk"


def test_the_crawl_on_recorded_pages_keeps_plain_voted_albums_only(tmp_path: Path) -> None:
    with _replayed_services() as services, CrawlState(tmp_path / "state.sqlite") as state:
        result = crawl_musicbrainz(
            _musicbrainz(services["musicbrainz"].url),
            _coverart(services["caa"].url),
            ImageStore(tmp_path),
            state,
            DEFAULT_GENRE_MAP,
            options=MusicBrainzCrawlOptions(thumbnail_size=1200),
        )
    rows = result.rows.set_index("source_id")
    # Kind of Blue (jazz 28): its front followed across the two recorded hops; Blue Period (jazz 2): no art.
    assert list(rows.index) == [KIND_OF_BLUE_GROUP]
    kept = rows.loc[KIND_OF_BLUE_GROUP]
    assert kept["genre"] == "jazz" and list(kept["genres"]) == ["jazz"] and kept["artist"] == "Miles Davis"
    assert kept["released"] == "1959-08-17" and kept["album_name"] == "Kind of Blue"
    assert dict(zip(result.failures["source_id"], result.failures["reason"], strict=True)) == {
        BLUE_PERIOD_GROUP: "no_cover_art"
    }
    # Discovery is listed by the pop search but its pop tag has 0 votes: it never becomes pop. Zushi (rock 1,
    # hip hop 1) is a Mixtape/Street: excluded before its tags are read.
    assert DISCOVERY_GROUP not in rows.index and "4a7a9b59-5d76-48a6-81f6-7306b63c3060" not in rows.index
    assert result.stats["albums_per_genre"] == {
        "rock": 0,
        "jazz": 2,
        "pop": 0,
        "rap-hip-hop": 0,
        "classical": 0,
    }
    assert result.stats["excluded_secondary_types"] == {"compilation": 11, "mixtape/street": 5, "remix": 5}
    assert result.stats["excluded_release_groups"] == 20
    # Discovery (pop 0), Discovery (Beta Version) and untitled unmastered (no tags at all).
    assert result.stats["without_tag_votes"] == 3


def test_the_recorded_document_chooses_the_front_jpeg_and_ignores_the_pdf() -> None:
    with _replayed_services() as services:
        document = _coverart(services["caa"].url).document(KIND_OF_BLUE_GROUP)
    assert document == json.loads(read_recording("coverartarchive/release_group_kind_of_blue.json"))
    assert len(document["images"]) == 2 and document["images"][1]["types"] == []
    images = cover_art_images(document)
    assert [image.id for image in images] == [FRONT_IMAGE_ID]  # an integer; the PDF left out
    front = front_image(document)
    assert front is not None and front.front
    release = f"http://coverartarchive.org/release/{KIND_OF_BLUE_RELEASE}"
    assert front.image_url == f"{release}/{FRONT_IMAGE_ID}.jpg"
    assert front.thumbnail(1200) == f"{release}/{FRONT_IMAGE_ID}-1200.jpg"
    assert front.thumbnail(250) == f"{release}/{FRONT_IMAGE_ID}-250.jpg"


def test_the_recorded_redirect_chain_is_followed_with_every_hop_checked() -> None:
    with _replayed_services() as services:
        client = _coverart(services["caa"].url)
        document = client.document(KIND_OF_BLUE_GROUP)
        thumbnail = (
            front_image(document).thumbnail(1200).replace("http://coverartarchive.org", client.base_url)
        )
        data = client.fetch_image(thumbnail)
        served = {name: [r.status for r in server.requests] for name, server in services.items()}
    assert data == encode_image(draw_cover("jazz", 7, 1200))
    assert served["caa"] == [200, 307] and served["archive"] == [302] and served["node"] == [200]
    # The real hosts of the recorded Locations pass the default allow-list, in plain http.
    check = host_checker(DEFAULT_COVERART_IMAGE_HOSTS, what="cover art", setting="COVERART_IMAGE_HOSTS")
    for name in ("thumbnail_1200_redirect.headers", "archive_org_download_redirect.headers"):
        location = _recorded_redirect(name, {}).headers["Location"]
        assert location.startswith("http://") and check(location) is None


def test_a_host_off_the_list_is_refused_at_the_first_or_the_second_hop() -> None:
    url_of = f"/release-group/{KIND_OF_BLUE_GROUP}/front-1200"
    with _replayed_services() as services:
        # Only the archive's own host (127.0.0.1) allowed: archive.org ("localhost") is refused, unasked.
        with pytest.raises(UntrustedURLError, match="'localhost' is not allowed"):
            _coverart(services["caa"].url, hosts=()).fetch_image(services["caa"].url + url_of)
        assert not services["archive"].requests
    with _replayed_services(caa_host="localhost") as services:
        # Reached as "localhost", the first hop is allowed; the data node (127.0.0.1) is not: never asked.
        with pytest.raises(UntrustedURLError, match="'127.0.0.1' is not allowed"):
            _coverart(services["caa"].url, hosts=()).fetch_image(services["caa"].url + url_of)
        assert [r.status for r in services["archive"].requests] == [302] and not services["node"].requests


def test_an_html_404_is_no_art_not_a_fault() -> None:
    no_art = "00000000-0000-4000-8000-000000000000"
    with _replayed_services() as services:
        client = _coverart(services["caa"].url)
        with pytest.raises(NoImageError, match="no front image"):
            client.fetch_image(client.front_url(no_art, 250))
        assert client.document(no_art) is None
        assert [r.status for r in services["caa"].requests] == [404, 404]  # answered once each: no retries
