"""Contract tests: the real Napster responses (``napster/`` of the shared recordings) replayed on loopback
against the real NapsterClient and crawl, not the emulator.

``albums_top.json`` (a 2016 ``albums/top`` page) and ``genres.json`` (the ``/genres`` list) are served
verbatim. No ``/albums/{ids}/images`` body was recorded (PROVENANCE.md): the seed project kept only each image's
URL, in API order, so the images bodies here are built from ``seed_image_urls.json``'s real URL lists, with
width and height read from each URL's ``/img/{W}x{H}/`` part.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from album_pipeline.data.crawl_state import CrawlState
from album_pipeline.data.napster_covers import NapsterCrawlOptions, crawl_napster
from album_pipeline.data.storage import ImageStore
from album_pipeline.genres import DEFAULT_GENRE_MAP, GenreClass
from album_pipeline.sources.http import make_session
from album_pipeline.sources.napster import DEFAULT_IMAGE_HOSTS, NapsterClient, album_flag
from album_pipeline.testing.emulators.base import Request, Response
from album_pipeline.testing.emulators.loopback import LoopbackServer
from album_pipeline.testing.emulators.synthetic import draw_cover, encode_image
from album_pipeline_tests.sources.recordings import read_recording

KEY = "recorded-responses-key"
SIDES_IN_URL = re.compile(r"/img/(\d+)x(\d+)/")
RAP_HIP_HOP = "g.146"
# The recorded page's albums, in its order, with their own genre ids and flags as the 2016 API sent them.
RECORDED_ALBUMS = [
    ("Alb.223729464", "g.173", True, False),
    ("Alb.218322137", "g.115", True, False),
    ("Alb.220525487", "g.146", False, True),
    ("Alb.186048819", "g.131", False, False),
    ("Alb.224797156", "g.173", False, True),
    ("Alb.218556759", "g.1036", True, False),
    ("Alb.200733523", "g.253", True, False),
    ("Alb.216478260", "g.1036", True, False),
    ("Alb.197911327", "g.253", True, False),
    ("Alb.201027666", "g.173", True, False),
]


def _sides(url: str) -> tuple[int, int]:
    found = SIDES_IN_URL.search(url)
    assert found, f"no /img/WxH/ part in {url}"
    return int(found[1]), int(found[2])


def _seed_lists() -> list[list[str]]:
    return [group["urls"] for group in json.loads(read_recording("napster/seed_image_urls.json"))["groups"]]


def _images_body(album_id: str, urls: list[str], base_url: str | None, with_sides: bool = True) -> bytes:
    """An images body of the v2.2 shape holding one real URL list (optionally moved onto ``base_url``)."""
    images = []
    for url in urls:
        width, height = _sides(url)
        served = f"{base_url}{urlsplit(url).path}" if base_url else url
        image = {"type": "image", "url": served, "contentId": album_id.lower()}
        images.append({**image, "width": width, "height": height} if with_sides else image)
    return json.dumps({"images": images}).encode()


class RecordedNapster(LoopbackServer):
    """Replays the recordings: ``/genres`` (and, for lack of a recorded single genre, its lookups by
    shortcut) from genres.json, ``albums/top`` of ``top_genre`` from albums_top.json, images per album from
    the real URL lists with their image bytes drawn on loopback. An id lookup the list cannot answer gets the
    API's documented answer for unknown ids, 200 with an empty list."""

    name = "recorded-napster"

    def __init__(self, image_lists: dict[str, list[str]], top_genre: str = RAP_HIP_HOP) -> None:
        super().__init__()
        self.genres = read_recording("napster/genres.json")
        self.top_page = read_recording("napster/albums_top.json")
        self.image_lists = {album_id.lower(): urls for album_id, urls in image_lists.items()}
        self.top_genre = top_genre
        listed = json.loads(self.genres)["genres"]
        self.shortcuts = {genre["shortcut"] for genre in listed} | {genre["id"] for genre in listed}
        self.add_route("GET", r"/v2\.2/genres", self._recorded(self.genres))
        self.add_route("GET", r"/v2\.2/genres/(?P<ids>[^/]+)", self._genres_by_id)
        self.add_route("GET", r"/v2\.2/genres/(?P<genre>[^/]+)/albums/top", self._top)
        self.add_route("GET", r"/v2\.2/albums/(?P<ids>[^/]+)/images", self._images)
        self.add_route("GET", r"/img/(?P<side>\d+)x\d+/(?:\d+/)*(?P<number>\d+)_\d+x\d+\.jpe?g", self._image)

    @staticmethod
    def _recorded(body: bytes):
        return lambda request: Response.binary(body, "application/json")

    def _genres_by_id(self, request: Request) -> Response:
        if request.match["ids"] in self.shortcuts:
            return Response.binary(self.genres, "application/json")
        return Response.json({"genres": []})

    def _top(self, request: Request) -> Response:
        if request.match["genre"] == self.top_genre:
            return Response.binary(self.top_page, "application/json")
        return Response.json({"albums": [], "meta": {}})

    def _images(self, request: Request) -> Response:
        album_ids = request.match["ids"].split(",")
        bodies = [
            json.loads(_images_body(album_id, self.image_lists.get(album_id.lower(), []), self.url))["images"]
            for album_id in album_ids
        ]
        return Response.json({"images": [image for body in bodies for image in body]})

    def _image(self, request: Request) -> Response:
        cover = draw_cover("rap-hip-hop", int(request.match["number"]), int(request.match["side"]))
        return Response.binary(encode_image(cover), "image/jpeg")


def _client(server: LoopbackServer) -> NapsterClient:
    return NapsterClient(
        server.url,
        KEY,
        session=make_session(backoff_factor=0),
        timeout=10,
        allowed_image_hosts=("127.0.0.1",),
    )


def test_the_recorded_top_page_yields_its_albums_with_the_2016_field_names() -> None:
    with RecordedNapster({}) as server:
        albums = list(_client(server).iter_top_albums(RAP_HIP_HOP))
        top_calls = [r for r in server.requests if "/albums/top" in r.path]
    assert [album["id"] for album in albums] == [album_id for album_id, *_ in RECORDED_ALBUMS]
    assert [album["links"]["genres"]["ids"] for album in albums] == [
        [genre] for _, genre, *_ in RECORDED_ALBUMS
    ]
    assert [(album_flag(a, "explicit"), album_flag(a, "single")) for a in albums] == [
        (explicit, single) for *_, explicit, single in RECORDED_ALBUMS
    ]
    assert all("isExplicit" not in album and "explicit" in album for album in albums)
    assert albums[0]["name"] == "The Life Of Pablo" and albums[0]["artistName"] == "Kanye West"
    # The page's meta holds only a warning, no totalCount: each range ends on its first short page.
    assert len(top_calls) == 5


def test_the_recorded_genre_list_places_the_sub_genres_the_albums_carry() -> None:
    with RecordedNapster({}) as server:
        client = _client(server)
        tree = client.genre_tree()
        assert client.genre("rap-hip-hop")["id"] == RAP_HIP_HOP
    assert tree.top_level_of("g.173") == RAP_HIP_HOP
    assert tree.top_level_of("g.253") == "g.194"  # soul-r-and-b
    assert tree.top_level_of("g.131") == "g.407"  # country
    assert tree.top_level_of("g.115") == "g.115"  # pop, a top-level id on an album
    assert tree.top_level_of("g.1036") is None  # named by no listed genre
    assert tree.top_level_of("g.2200") is None  # a root the top-level genres name as parent
    assert len(tree) == 22 + 230


def test_crawling_the_recorded_page_maps_sub_genres_to_classes(tmp_path: Path) -> None:
    seed_lists = _seed_lists()
    image_lists = {album_id: seed_lists[index] for index, (album_id, *_) in enumerate(RECORDED_ALBUMS)}
    classes = (
        *DEFAULT_GENRE_MAP,
        GenreClass("soul", ("soul-r-and-b",)),
        GenreClass("country", ("country",)),
    )
    with RecordedNapster(image_lists) as server, CrawlState(tmp_path / "state.sqlite") as state:
        result = crawl_napster(
            _client(server),
            ImageStore(tmp_path),
            state,
            classes,
            options=NapsterCrawlOptions(download_workers=2),
        )
        lookups = [r.path for r in server.requests if re.fullmatch(r"/v2\.2/genres/g\.[\d.,]+", r.path)]
    rows = result.rows.set_index("source_id")
    assert sorted(rows.index) == sorted(album_id for album_id, *_ in RECORDED_ALBUMS)
    assert result.failures.empty
    # All were found in rap-hip-hop's top list; their own (sub-)genre ids add and choose the class.
    expected_genre = {"g.173": "rap-hip-hop", "g.146": "rap-hip-hop", "g.115": "pop", "g.253": "soul"}
    expected_genre |= {"g.131": "country", "g.1036": "rap-hip-hop"}
    for (album_id, genre_id, *_), urls in zip(RECORDED_ALBUMS, seed_lists, strict=False):
        row = rows.loc[album_id]
        assert row["genre"] == expected_genre[genre_id], album_id
        assert list(row["genres"]) == [
            c.name for c in classes if c.name in {"rap-hip-hop", expected_genre[genre_id]}
        ]
        side = CHOSEN_BY_PATTERN[tuple(_sides(url)[0] for url in urls)]
        assert row["width"] == row["height"] == side
    assert lookups == ["/v2.2/genres/g.1036"]  # the one id the list does not place, asked once
    assert {
        (m["genre_id"], m["top_level"], m["class"], m["albums"]) for m in result.stats["genre_mapping"]
    } == {
        ("g.173", "g.146", "rap-hip-hop", 3),
        ("g.1036", None, None, 2),
        ("g.253", "g.194", "soul", 2),
        ("g.115", "g.115", "pop", 1),
        ("g.146", "g.146", "rap-hip-hop", 1),
        ("g.131", "g.407", "country", 1),
    }
    assert (result.stats["explicit_albums"], result.stats["single_albums"]) == (7, 2)


# The size the client's policy (smallest side >= 200, else the largest) takes from each real list pattern.
CHOSEN_BY_PATTERN = {
    (170, 70, 600, 500, 300): 300,  # the usual list
    (170, 70, 54, 500, 300): 300,  # no 600
    (170, 70, 54, 500): 500,  # no 600 and no 300: the smallest >= 200 is 500
    (170, 70, 200, 500, 300): 200,
    (170, 70, 200, 300): 200,
    (170, 70, 54): 170,  # nothing >= 200: the largest
    (500, 170, 300, 70, 600): 300,  # 500 listed first
}


@pytest.mark.parametrize("with_sides", [True, False], ids=["sides in fields", "sides from urls"])
def test_the_real_image_lists_choose_the_expected_sizes(with_sides: bool) -> None:
    seed_lists = _seed_lists()
    assert len(seed_lists) == 30
    assert all(urlsplit(url).hostname in DEFAULT_IMAGE_HOSTS for urls in seed_lists for url in urls)
    bodies = {
        f"alb.{index}": _images_body(f"alb.{index}", urls, None, with_sides)
        for index, urls in enumerate(seed_lists)
    }
    server = LoopbackServer()
    server.add_route(
        "GET",
        r"/v2\.2/albums/(?P<ids>[^/]+)/images",
        lambda request: Response.binary(bodies[request.match["ids"]], "application/json"),
    )
    with server:
        client = _client(server)
        chosen = {}
        for album_id, urls in zip(bodies, seed_lists, strict=True):
            images = client.album_images([album_id])[album_id]
            assert [image["url"] for image in images] == urls  # in API order, URLs verbatim
            chosen[album_id] = NapsterClient.choose_image(images, preferred_side=200)["url"]
    patterns = Counter()
    for album_id, urls in zip(bodies, seed_lists, strict=True):
        pattern = tuple(_sides(url)[0] for url in urls)
        patterns[pattern] += 1
        side = CHOSEN_BY_PATTERN[pattern]
        assert _sides(chosen[album_id]) == (side, side), (album_id, pattern)
        assert chosen[album_id] in urls
    assert patterns[(170, 70, 600, 500, 300)] == 20 and patterns[(500, 170, 300, 70, 600)] == 1
    jpeg = [url for url in chosen.values() if url.endswith(".jpeg")]
    assert len(jpeg) == 1 and _sides(jpeg[0]) == (500, 500)
    assert Counter(_sides(url)[0] for url in chosen.values()) == {300: 24, 500: 3, 200: 2, 170: 1}
