"""The retrying session and the error translation shared by every source client."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from album_pipeline import __version__
from album_pipeline.sources.http import (
    DEFAULT_USER_AGENT,
    BodyError,
    SettingError,
    SourceAuthError,
    SourceUnavailableError,
    UntrustedURLError,
    error_for_status,
    expect_json,
    fetch,
    host_checker,
    make_session,
    redact_url,
    scrub,
    translate_request_error,
)
from album_pipeline.sources.rate_limit import LimitedRetry, RateLimiter, rate_limit_prefix


class _Scripted:
    """A loopback server answering each request with the next (status, headers) of a script."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script = list(script)
        self.seen: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner.seen.append({k.lower(): v for k, v in self.headers.items()})
                status, headers = owner.script.pop(0) if len(owner.script) > 1 else owner.script[0]
                body = b'{"ok": true}' if status == 200 else b'{"code": "Busy"}'
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[type[_Scripted]]:
    servers: list[_Scripted] = []

    def start(script: list[tuple[int, dict[str, str]]]) -> _Scripted:
        server = _Scripted(script)
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


def test_retries_503_then_succeeds(scripted) -> None:
    server = scripted([(503, {"Retry-After": "0"}), (503, {}), (200, {})])
    session = make_session(backoff_factor=0)
    response = session.get(f"{server.url}/thing", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert len(server.seen) == 3


def test_gives_back_last_response_when_retries_are_spent(scripted) -> None:
    server = scripted([(429, {"Retry-After": "0"})])
    session = make_session(total_retries=2, backoff_factor=0)
    response = session.get(f"{server.url}/busy", timeout=5)
    assert response.status_code == 429
    assert len(server.seen) == 3  # the first try and two retries
    error = error_for_status(response, service="Napster API", url_env_var="NAPSTER_API_URL")
    assert isinstance(error, SourceUnavailableError)
    assert "429" in str(error) and "NAPSTER_API_URL" in str(error)


def test_user_agent_names_the_project(scripted) -> None:
    server = scripted([(200, {})])
    make_session().get(server.url, timeout=5)
    assert server.seen[0]["user-agent"] == DEFAULT_USER_AGENT
    assert f"album_pipeline/{__version__}" in DEFAULT_USER_AGENT


def test_auth_failure_says_which_variable_to_set(scripted) -> None:
    server = scripted([(401, {})])
    response = make_session().get(f"{server.url}/v2.2/genres?apikey=sekrit", timeout=5)
    error = error_for_status(
        response, service="Napster API", url_env_var="NAPSTER_API_URL", key_env_var="NAPSTER_API_KEY"
    )
    assert isinstance(error, SourceAuthError)
    assert "NAPSTER_API_KEY" in str(error)
    assert "sekrit" not in str(error)
    assert len(server.seen) == 1  # 401 is not retried


def test_success_is_not_an_error(scripted) -> None:
    server = scripted([(200, {})])
    response = make_session().get(server.url, timeout=5)
    assert error_for_status(response, service="x", url_env_var="X_URL") is None


def test_unreachable_service_names_url_without_key_and_the_variable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v2.2/genres?apikey=sekrit&limit=1"
    session = make_session(total_retries=1, backoff_factor=0)
    with pytest.raises(requests.ConnectionError) as caught:
        session.get(url, timeout=2)
    error = translate_request_error(
        caught.value, service="Napster API", url=url, url_env_var="NAPSTER_API_URL", secrets=["sekrit"]
    )
    assert isinstance(error, SourceUnavailableError)
    assert "NAPSTER_API_URL" in str(error) and f"127.0.0.1:{port}" in str(error)
    assert "sekrit" not in str(error)


def test_redact_url_hides_credentials() -> None:
    shown = redact_url("https://user:pw@host.example/path?apikey=abc&limit=5")
    assert "pw" not in shown and "abc" not in shown
    assert "limit=5" in shown and "host.example/path" in shown


def test_rate_limiter_spaces_calls_evenly_and_never_bursts():

    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        limiter.wait()
    assert slept == [0.25, 0.25, 0.25]  # the first call starts at once, each later one a quarter second on
    now[0] += 10.0  # after an idle spell the next call starts at once: idle time is not saved up as a burst
    limiter.wait()
    limiter.wait()
    assert slept[3:] == [0.25]


def test_rate_limiter_holds_across_threads_and_refuses_nonsense():
    import threading
    import time

    limiter = RateLimiter(50.0)
    starts: list[float] = []

    def worker() -> None:
        for _ in range(5):
            limiter.wait()
            starts.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    starts.sort()
    assert starts[-1] - starts[0] >= 19 / 50 * 0.95
    RateLimiter(None).wait()  # unlimited: returns at once
    with pytest.raises(ValueError, match="above 0"):
        RateLimiter(0)


def test_host_checker_allows_listed_hosts_and_dot_suffixes_only():
    check = host_checker(["coverartarchive.org", ".archive.org"], what="cover art", setting="HOSTS_VAR")
    check("https://coverartarchive.org/release-group/x/front-250")
    check("https://ia800.us.archive.org/1/items/x.jpg")
    for refused in ("https://evilarchive.org/x.jpg", "ftp://coverartarchive.org/x", "file:///etc/passwd"):
        with pytest.raises(UntrustedURLError, match="HOSTS_VAR|not http"):
            check(refused)


def test_retries_of_rate_limited_calls_wait_for_the_limiter(scripted) -> None:
    server = scripted([(503, {}), (503, {}), (200, {})])
    waits: list[float] = []
    limiter = RateLimiter(1.0, clock=lambda: 0.0, sleep=waits.append)  # a frozen clock: every turn waits
    session = make_session(backoff_factor=0)
    rate_limit_prefix(session, f"{server.url}/api/", limiter)
    adapter = session.get_adapter(f"{server.url}/api/x")
    assert isinstance(adapter.max_retries, LimitedRetry) and adapter.max_retries.total == 5
    limiter.wait()  # the caller takes the first try's turn, as the clients do
    assert session.get(f"{server.url}/api/x", timeout=5).status_code == 200
    # Each of the two retries waited its turn (1 s, then 2 s on the frozen clock); other paths keep the
    # plain adapter.
    assert len(server.seen) == 3 and waits == [1.0, 2.0]
    assert not isinstance(session.get_adapter(f"{server.url}/img/x").max_retries, LimitedRetry)


def test_fetch_retries_bodies_that_are_html_or_not_json_then_reports_the_reason(scripted) -> None:
    server = scripted([(200, {"Content-Type": "text/html"}), (200, {"Content-Type": "application/json"})])
    fetched = fetch(
        make_session(backoff_factor=0), server.url, service="Test", url_env_var="TEST_URL", timeout=5,
        expect=expect_json, backoff_factor=0,
    )  # fmt: skip
    assert fetched.status == 200 and len(server.seen) == 2
    always_html = scripted([(200, {"Content-Type": "text/html"})])
    with pytest.raises(BodyError, match="HTML page") as raised:
        fetch(
            make_session(backoff_factor=0), always_html.url, service="Test", url_env_var="TEST_URL",
            timeout=5, expect=expect_json, body_retries=2, backoff_factor=0,
        )  # fmt: skip
    assert raised.value.reason == "html_instead_of_json" and len(always_html.seen) == 3


def test_a_header_error_is_blamed_on_the_setting_and_never_shows_the_secret() -> None:
    """requests refuses a header with a line break and quotes its value (escaped) in the message."""
    secret = "sekrit\r\nX-Evil: 1"
    with pytest.raises(SettingError) as caught:
        fetch(
            make_session(total_retries=0),
            "http://127.0.0.1:9/v2.2/genres",
            service="Napster API",
            url_env_var="NAPSTER_API_URL",
            timeout=2,
            headers={"apikey": secret},
            key_env_var="NAPSTER_API_KEY",
            secrets=[secret],
        )
    message = str(caught.value)
    assert "sekrit" not in message and "reached" not in message and "service is up" not in message
    assert "set NAPSTER_API_KEY again" in message


def test_scrub_masks_the_escaped_form_libraries_quote() -> None:
    secret = "ab\r\ncd"
    assert scrub(f"value {secret!r} and {secret}", [secret]) == "value '***' and ***"
