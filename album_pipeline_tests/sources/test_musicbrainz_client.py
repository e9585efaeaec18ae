"""The MusicBrainz and Cover Art Archive clients against the loopback emulator."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from album_pipeline.sources.http import NoImageError, SourceAuthError, UntrustedURLError, make_session
from album_pipeline.sources.musicbrainz import (
    DEFAULT_USER_AGENT,
    CoverArtClient,
    MusicBrainzClient,
    check_user_agent,
    cover_art_images,
    front_image,
)
from album_pipeline.testing.emulators.musicbrainz import MusicBrainzEmulator
from album_pipeline.testing.emulators.musicbrainz_catalog import MusicBrainzCatalog

LOOPBACK = ("127.0.0.1",)


@pytest.fixture(scope="module")
def catalog() -> MusicBrainzCatalog:
    return MusicBrainzCatalog(release_groups_per_genre=30, seed=5)


@pytest.fixture(scope="module")
def emulator(catalog: MusicBrainzCatalog) -> Iterator[MusicBrainzEmulator]:
    with MusicBrainzEmulator(catalog, rate_limit_per_second=None) as server:
        yield server


def _musicbrainz(server: MusicBrainzEmulator, **options) -> MusicBrainzClient:
    options.setdefault("requests_per_second", None)
    return MusicBrainzClient(server.url, session=make_session(backoff_factor=0), timeout=10, **options)


def _coverart(server: MusicBrainzEmulator, hosts=LOOPBACK) -> CoverArtClient:
    return CoverArtClient(
        server.url, allowed_image_hosts=hosts, session=make_session(backoff_factor=0), timeout=10
    )


def test_search_by_tag_pages_to_exactly_the_album_release_groups(emulator, catalog) -> None:
    client = _musicbrainz(emulator)
    for tag in ("jazz", "hip hop", "rap"):
        found = [group["id"] for group in client.iter_release_groups(tag, page_size=7)]
        assert len(found) == len(set(found))
        assert sorted(found) == sorted(catalog.tagged(tag))


def test_max_results_stops_paging_early(emulator, catalog) -> None:
    emulator.clear_requests()
    found = list(_musicbrainz(emulator).iter_release_groups("rock", max_results=5, page_size=5))
    assert len(found) == 5
    assert len([r for r in emulator.requests if r.path.startswith("/ws/2/release-group")]) == 1


def test_user_agent_must_name_an_application_and_a_contact(emulator) -> None:
    assert check_user_agent(DEFAULT_USER_AGENT) == DEFAULT_USER_AGENT
    for bad in ("", "python-requests/2.32", "covers", "covers/1.0"):
        with pytest.raises(ValueError, match="MUSICBRAINZ_USER_AGENT"):
            check_user_agent(bad)
    with pytest.raises(ValueError, match="MUSICBRAINZ_USER_AGENT"):
        MusicBrainzClient(emulator.url, user_agent="python-requests/2.32")
    # The agent really is what the server sees: the emulator blocks library defaults with 403.
    session = make_session("python-requests/2.32", backoff_factor=0)
    client = MusicBrainzClient(emulator.url, session=session, requests_per_second=None)
    client.user_agent = "python-requests/2.32"  # bypass the constructor's check to see the server's answer
    with pytest.raises(SourceAuthError):
        client.check()


def test_client_keeps_under_the_rate_of_a_strict_server(catalog) -> None:
    # 10% under the server's limit leaves room for scheduling jitter in when requests arrive.
    with MusicBrainzEmulator(catalog, rate_limit_per_second=2) as strict:
        client = MusicBrainzClient(
            strict.url, session=make_session(backoff_factor=0), requests_per_second=1.8, timeout=10
        )
        found = list(client.iter_release_groups("pop", page_size=10))
        statuses = [r.status for r in strict.requests]
    assert sorted(g["id"] for g in found) == sorted(catalog.tagged("pop"))
    assert 503 not in statuses and len(statuses) >= 3


def test_front_cover_follows_the_redirect_and_matches_ground_truth(emulator, catalog) -> None:
    client = _coverart(emulator)
    expected = catalog.expected_covers(250)
    with_art = sorted(expected)[:3]
    for mbid in with_art:
        data = client.fetch_image(client.front_url(mbid, 250))
        assert hashlib.sha256(data).hexdigest() == expected[mbid]["image_id"]


def test_no_art_is_a_no_image_error_not_a_failure(emulator, catalog) -> None:
    client = _coverart(emulator)
    without = sorted(catalog.expected_missing_art())
    assert without
    with pytest.raises(NoImageError):
        client.fetch_image(client.front_url(without[0], 250))


def test_the_document_names_the_front_and_leaves_pdf_uploads_out(emulator, catalog) -> None:
    client = _coverart(emulator)
    with_pdf = next(
        mbid
        for mbid in catalog.expected_covers(250)
        if any(image.extension == "pdf" for image in catalog.record(mbid).images)
    )
    document = client.document(with_pdf)
    assert document is not None and len(document["images"]) == len(catalog.record(with_pdf).images)
    images = cover_art_images(document)
    assert [image.id for image in images] == [
        i.id for i in catalog.record(with_pdf).images if i.extension == "jpg"
    ]
    front = front_image(document)
    assert front is not None and front.id == catalog.record(with_pdf).front_image.id
    assert (
        hashlib.sha256(client.fetch_image(front.thumbnail(250))).hexdigest()
        == (catalog.expected_covers(250)[with_pdf]["image_id"])
    )
    no_art = next(iter(catalog.expected_missing_art()))
    assert client.document(no_art) is None  # the archive's HTML 404


def test_redirects_to_hosts_not_allowed_are_refused_before_sending(emulator, catalog) -> None:
    # Reached as "localhost", the server's redirects point at 127.0.0.1, which this client does not allow.
    client = CoverArtClient(
        emulator.url.replace("127.0.0.1", "localhost"),
        allowed_image_hosts=("archive.org",),
        session=make_session(backoff_factor=0),
    )
    mbid = sorted(catalog.expected_covers(250))[0]
    emulator.clear_requests()
    with pytest.raises(UntrustedURLError, match="COVERART_IMAGE_HOSTS"):
        client.fetch_image(client.front_url(mbid, 250))
    assert not any(r.path.startswith("/download/") for r in emulator.requests)


def test_front_url_refuses_bad_ids_and_sizes(emulator) -> None:
    client = _coverart(emulator)
    with pytest.raises(ValueError, match="MusicBrainz id"):
        client.front_url("not-an-id", 250)
    with pytest.raises(ValueError, match="250, 500, 1200"):
        client.front_url("00000000-0000-0000-0000-000000000000", 300)


def test_a_user_agent_a_header_cannot_carry_is_refused_without_echoing_it() -> None:
    for bad in ("covers/1.0 ( me@example.org )\r\nX-Evil: 1", "covers/1.0 ( m\u00e9@example.org )"):
        with pytest.raises(ValueError) as caught:
            check_user_agent(bad)
        assert str(caught.value) == (
            "MUSICBRAINZ_USER_AGENT contains a line break or other characters HTTP headers cannot carry; "
            "set it again"
        )
