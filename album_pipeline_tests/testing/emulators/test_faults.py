"""Fault injection and latency of the loopback emulators, observed with raw clients (no retries)."""

import http.client
import json
import math
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from album_pipeline.testing.emulators.base import Response
from album_pipeline.testing.emulators.faults import HTML_ERROR_PAGE, TRANSIENT_FAULTS, FaultPlan
from album_pipeline.testing.emulators.loopback import LoopbackServer
from album_pipeline.testing.emulators.napster import NapsterEmulator
from album_pipeline.testing.emulators.napster_catalog import NapsterCatalog

JSON_PAYLOAD = {"albums": [{"id": f"alb.{n}", "name": f"Album number {n}"} for n in range(20)]}
JSON_BYTES = json.dumps(JSON_PAYLOAD, separators=(",", ":")).encode()
BINARY = bytes(range(256)) * 40
STREAM_CHUNKS = [bytes([n]) * 1000 for n in range(7)]
ROUTES = {
    "/json": ("application/json", JSON_BYTES),
    "/binary": ("image/jpeg", BINARY),
    "/stream": ("application/octet-stream", b"".join(STREAM_CHUNKS)),
}


class _Server(LoopbackServer):
    """A bare emulator: JSON, binary and streamed replies; any suffix after the route makes a new target."""

    name = "test"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_route("GET", r"/json(/.*)?", lambda request: Response.json(JSON_PAYLOAD))
        self.add_route("GET", r"/binary(/.*)?", lambda request: Response.binary(BINARY, "image/jpeg"))
        self.add_route(
            "GET",
            r"/stream(/.*)?",
            lambda request: Response(
                200,
                iter(STREAM_CHUNKS),
                {"Content-Type": "application/octet-stream"},
                content_length=sum(map(len, STREAM_CHUNKS)),
            ),
        )


def _serve(kind: str, **plan) -> _Server:
    return _Server(faults=FaultPlan(rate=1.0, kinds=(kind,), **plan))


def _raw_get(server: LoopbackServer, path: str, timeout: float = 5.0):
    """One GET on a fresh connection: (response, body) or the exception the client saw."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def _assert_real(server: LoopbackServer, path: str) -> None:
    content_type, body = ROUTES["/" + path.split("/")[1]]
    response, received = _raw_get(server, path)
    assert response.status == 200 and response.getheader("Content-Type") == content_type
    assert received == body


# --- the plan -------------------------------------------------------------------------------------------
def test_plan_refuses_bad_arguments():
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultPlan(rate=0.1, kinds=("429", "404"))
    with pytest.raises(ValueError, match="at least one kind"):
        FaultPlan(rate=0.1, kinds=())
    for rate in (-0.1, 1.5, math.nan, "0.1"):
        with pytest.raises(ValueError, match="rate"):
            FaultPlan(rate=rate)
    with pytest.raises(ValueError, match="failures_per_target"):
        FaultPlan(failures_per_target=0)
    with pytest.raises(ValueError, match="slow_seconds"):
        FaultPlan(slow_seconds=-1)
    with pytest.raises(ValueError, match="retry_after_seconds"):
        FaultPlan(retry_after_seconds=1.5)
    with pytest.raises(ValueError, match="attempt"):
        FaultPlan(rate=1.0).fault_for("/x", -1)
    assert FaultPlan(kinds="reset").kinds == ("reset",)  # one kind by name
    assert FaultPlan(kinds=["429", "503"]).kinds == ("429", "503")


def test_selection_is_seeded_honours_the_rate_and_ignores_secrets():
    targets = [f"/v2.2/albums/alb.{n}/images?limit=5" for n in range(4000)]
    plan = FaultPlan(rate=0.3, seed=7)
    faulty = {target: plan.kind_for(target) for target in targets if plan.kind_for(target)}
    assert 0.27 <= len(faulty) / len(targets) <= 0.33
    kinds = Counter(faulty.values())
    assert set(kinds) == set(TRANSIENT_FAULTS)
    assert min(kinds.values()) > 0.5 * len(faulty) / len(TRANSIENT_FAULTS)  # roughly uniform
    assert {t for t in targets if FaultPlan(rate=0.3, seed=7).kind_for(t)} == set(faulty)
    assert {t for t in targets if FaultPlan(rate=0.3, seed=8).kind_for(t)} != set(faulty)
    # A lower rate picks a subset of the targets a higher one picks, with the same kinds.
    lower = FaultPlan(rate=0.1, seed=7)
    assert all(faulty.get(t) == lower.kind_for(t) for t in targets if lower.kind_for(t))
    target, kind = next(iter(faulty.items()))
    assert plan.kind_for(target.replace("?", "?apikey=secret&")) == kind
    assert FaultPlan(rate=0.0).kind_for(target) is None
    assert all(FaultPlan(rate=1.0).kind_for(t) for t in targets[:100])


def test_a_faulty_target_fails_failures_per_target_times_then_behaves():
    plan = FaultPlan(rate=1.0, kinds=("502",), failures_per_target=3)
    assert [plan.fault_for("/x", attempt) for attempt in range(5)] == ["502", "502", "502", None, None]


# --- each kind over HTTP --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, status", [("429", 429), ("500", 500), ("502", 502), ("503", 503)])
def test_status_faults_answer_an_error_then_the_real_reply(kind, status):
    with _serve(kind, failures_per_target=2, retry_after_seconds=3) as server:
        for _ in range(2):
            response = requests.get(server.url + "/json", timeout=5)
            assert response.status_code == status
            assert response.headers["Content-Type"] == "application/json"
            body = response.json()
            assert isinstance(body["code"], str) and body["message"]
            if status in {429, 503}:
                assert response.headers["Retry-After"] == "3"
            else:
                assert "Retry-After" not in response.headers
        if kind == "429":
            assert body["code"] == "TooManyRequestsError" and body["message"].startswith("Rate of ")
        _assert_real(server, "/json")
        assert server.injected_faults == Counter({kind: 2})


def test_reset_drops_the_connection_without_a_reply(capfd):
    with _serve("reset") as server:
        with pytest.raises(ConnectionResetError):
            _raw_get(server, "/json")
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url + "/binary", timeout=5)
        _assert_real(server, "/json")
        _assert_real(server, "/binary")
        assert [(r.path, r.status, r.fault) for r in server.requests] == [
            ("/json", 0, "reset"),
            ("/binary", 0, "reset"),
            ("/json", 200, None),
            ("/binary", 200, None),
        ]
    assert "Traceback" not in capfd.readouterr().err


def test_slow_replies_after_slow_seconds_and_a_client_timeout_fires_first(capfd):
    with _serve("slow", slow_seconds=0.4) as server:
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(server.url + "/json/a", timeout=0.15)
        start = time.monotonic()
        _assert_real(server, "/json/a")  # the retry is served at once
        assert time.monotonic() - start < 0.3
        start = time.monotonic()
        _assert_real(server, "/binary/b")  # a patient client gets the real reply, late
        assert time.monotonic() - start >= 0.4
        time.sleep(0.35)  # let the abandoned first reply go to its closed socket
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("path", ["/binary", "/stream", "/json"])
def test_truncated_sends_the_real_length_and_half_the_body(path):
    content_type, body = ROUTES[path]
    with _serve("truncated") as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Content-Type") == content_type
        assert response.getheader("Content-Length") == str(len(body))
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        assert cut.value.partial == body[: len(body) // 2]
        connection.close()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(server.url + path + "/other", timeout=5)
        _assert_real(server, path)


def test_invalid_json_completes_but_does_not_parse_and_other_bodies_are_truncated():
    with _serve("invalid_json") as server:
        response = requests.get(server.url + "/json", timeout=5)
        assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
        assert response.content == JSON_BYTES[: len(JSON_BYTES) // 2]
        assert response.headers["Content-Length"] == str(len(response.content))
        with pytest.raises(ValueError):
            response.json()
        _assert_real(server, "/json")
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(server.url + "/binary", timeout=5)  # not JSON: cut like "truncated"
        _assert_real(server, "/binary")
        assert server.injected_faults == Counter({"invalid_json": 2})


def test_html_error_serves_a_200_error_page_instead_of_the_body():
    with _serve("html_error") as server:
        for path in ("/json", "/binary"):
            response = requests.get(server.url + path, timeout=5)
            assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
            assert response.content == HTML_ERROR_PAGE
            assert b"<html>" in response.content and b"Service temporarily unavailable" in response.content
            _assert_real(server, path)


def test_a_retrying_client_gets_every_real_reply_and_the_log_marks_the_faults(capfd):
    plan = FaultPlan(rate=0.6, seed=11, failures_per_target=2, slow_seconds=0.3)
    paths = [f"/{route}/{n}" for route in ("json", "binary", "stream") for n in range(15)]
    with _Server(faults=plan) as server, requests.Session() as session:
        for path in paths:
            for _attempt in range(3):
                try:
                    response = session.get(server.url + path, timeout=0.15)
                    if (
                        response.status_code == 200
                        and response.content == ROUTES["/" + path.split("/")[1]][1]
                    ):
                        break
                except requests.RequestException:
                    pass
            else:
                pytest.fail(f"{path} still failed after {plan.failures_per_target} faults")
        planned = Counter(plan.kind_for(path) for path in paths if plan.kind_for(path))
        assert len(planned) >= 5
        injected = server.injected_faults
        assert injected == Counter({kind: 2 * count for kind, count in planned.items()})
        time.sleep(0.35)  # abandoned slow replies are logged when they are sent, after slow_seconds
        log = server.requests
        assert Counter(record.fault for record in log if record.fault) == injected
        assert all(record.status == 0 for record in log if record.fault == "reset")
        assert len(log) == len(paths) + sum(injected.values())
        server.reset_faults()
        assert server.injected_faults == Counter()
        faulty = next(path for path in paths if plan.kind_for(path) in {"500", "502"})
        assert session.get(server.url + faulty, timeout=5).status_code == int(plan.kind_for(faulty))
    assert "Traceback" not in capfd.readouterr().err


def test_stop_does_not_wait_for_a_slow_reply(capfd):
    server = _serve("slow", slow_seconds=30).start()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(server.url + "/json", timeout=0.1)
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 2
    time.sleep(0.1)
    assert "Traceback" not in capfd.readouterr().err


# --- latency ----------------------------------------------------------------------------------------------
def test_latency_delays_every_reply_and_requests_overlap():
    with _Server(latency_s=0.2) as server:
        start = time.monotonic()
        assert requests.get(server.url + "/json", timeout=5).status_code == 200
        assert requests.get(server.url + "/nothing", timeout=5).status_code == 404
        assert time.monotonic() - start >= 0.4
        barrier = threading.Barrier(8)

        def timed_get(n: int) -> float:
            barrier.wait()
            began = time.monotonic()
            assert requests.get(f"{server.url}/binary/{n}", timeout=5).content == BINARY
            return time.monotonic() - began

        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            durations = list(pool.map(timed_get, range(8)))
        assert min(durations) >= 0.2
        assert time.monotonic() - start < 1.2  # 8 x 0.2 s would be 1.6 s if they queued (slack: busy CI)


def test_server_refuses_bad_latency_and_faults():
    for latency in (-0.1, math.inf, math.nan, "1"):
        with pytest.raises(ValueError, match="latency_s"):
            LoopbackServer(latency_s=latency)
    with pytest.raises(ValueError, match="FaultPlan"):
        LoopbackServer(faults={"rate": 0.5})
    # The positional signature still works, and the one the emulators call with keywords.
    assert LoopbackServer("127.0.0.1", 0).faults is None
    plan = FaultPlan(rate=0.5)
    server = LoopbackServer("127.0.0.1", 0, faults=plan, latency_s=0.5)
    assert server.faults is plan and server.latency_s == 0.5


def test_napster_emulator_takes_faults_and_latency():
    plan = FaultPlan(rate=1.0, kinds=("503",))
    catalog = NapsterCatalog(albums_per_genre=5)
    with NapsterEmulator(catalog, api_key="k", faults=plan, latency_s=0.05) as server:
        start = time.monotonic()
        first = requests.get(f"{server.url}/v2.2/genres", headers={"apikey": "k"}, timeout=5)
        assert first.status_code == 503 and first.headers["Retry-After"] == "1"
        second = requests.get(f"{server.url}/v2.2/genres", params={"apikey": "k"}, timeout=5)
        assert second.status_code == 200 and second.json()["genres"]
        assert time.monotonic() - start >= 0.1
        # The key is a secret parameter: with or without it, the same target, so the retry was not faulted.
        assert [(r.path, r.status, r.fault) for r in server.requests] == [
            ("/v2.2/genres", 503, "503"),
            ("/v2.2/genres", 200, None),
        ]
