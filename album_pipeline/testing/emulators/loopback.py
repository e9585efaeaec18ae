"""The loopback HTTP server every emulator subclasses.

An emulator subclasses ``LoopbackServer`` and registers routes: a method set, a path regex and a handler that
turns a ``Request`` into a ``Response``. The base class owns the socket, the serving thread, error handling,
streamed replies and the request log, so the emulators only describe their API. It also emulates a network
that is slow (``latency_s``) and a service that fails now and then (``faults``, a ``FaultPlan`` from
``album_pipeline.testing.emulators.faults``), the same way for every emulator.
"""

from __future__ import annotations

import math
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from album_pipeline.testing.emulators.base import (
    LOOPBACK_HOST,
    Handler,
    Request,
    RequestRecord,
    Response,
    Route,
    close_chunks,
    redact_query,
)
from album_pipeline.testing.emulators.faults import (
    STATUS_BY_FAULT,
    FaultPlan,
    damage_body,
    html_error_response,
)

# Bodies of the status faults; emulators with another error shape override ``LoopbackServer.fault_error``.
_FAULT_ERRORS = {
    429: ("TooManyRequestsError", "Rate of 5/sec has been exceeded for this key"),
    500: ("InternalServerError", "An internal error occurred; please try again"),
    502: ("BadGateway", "The upstream server returned an invalid response"),
    503: ("ServiceUnavailable", "The service is temporarily unavailable; please try again later"),
}


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 serving registered routes from a daemon thread.

    ``latency_s`` delays every reply (404s included) by that many seconds, as a network round trip would;
    requests are served on their own threads, so the delays overlap. ``faults`` injects the transient
    failures of a ``FaultPlan``; ``injected_faults`` counts them and the request log marks them.
    """

    name = "loopback"

    def __init__(
        self,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        *,
        faults: FaultPlan | None = None,
        latency_s: float = 0.0,
    ) -> None:
        if host not in {"127.0.0.1", "localhost"}:
            raise ValueError(f"emulators only listen on loopback; got host {host!r}, use '127.0.0.1'")
        if faults is not None and not isinstance(faults, FaultPlan):
            raise ValueError(f"faults must be a FaultPlan or None, got {type(faults).__name__}")
        if (
            isinstance(latency_s, bool)
            or not isinstance(latency_s, int | float)
            or not math.isfinite(latency_s)
            or latency_s < 0
        ):
            raise ValueError(f"latency_s must be a finite number of seconds >= 0, got {latency_s!r}")
        self._faults = faults
        self._latency_s = float(latency_s)
        self._attempts: Counter[str] = Counter()  # requests so far per faulty target
        self._injected: Counter[str] = Counter()  # faults injected so far, by kind
        self._fault_lock = threading.Lock()
        self._stopping = threading.Event()  # wakes requests held by latency or a "slow" fault on stop()
        self._host = host
        self._requested_port = port
        self._routes: list[Route] = []
        self._log: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._open_connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    # --- routes ---------------------------------------------------------------------------------------
    def add_route(self, methods: str | Iterable[str], pattern: str, handler: Handler) -> None:
        """Register ``handler`` for ``methods`` and a path regex matched in full (named groups reach it)."""
        method_set = frozenset([methods] if isinstance(methods, str) else methods)
        self._routes.append(Route(method_set, re.compile(pattern), handler))

    def not_found(self, path: str) -> Response:
        """The reply for a path no route matches; emulators override it with their service's error shape."""
        return Response.json({"code": "NotFound", "message": f"no resource at {path}"}, status=404)

    def method_not_allowed(self, method: str, path: str) -> Response:
        return Response.json(
            {"code": "MethodNotAllowed", "message": f"{method} is not allowed on {path}"}, 405
        )

    def internal_error(self, error: BaseException) -> Response:
        return Response.json({"code": "InternalError", "message": f"{type(error).__name__}: {error}"}, 500)

    def fault_error(self, status: int) -> Response:
        """The reply of an injected 429, 500, 502 or 503; emulators override it with their service's shape.

        The server adds ``Retry-After`` to 429 and 503 unless the reply already has one.
        """
        code, message = _FAULT_ERRORS[status]
        return Response.json({"code": code, "message": message}, status=status)

    def dispatch(self, method: str, raw_path: str, headers: dict[str, str]) -> Response:
        parts = urlsplit(raw_path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        allowed_elsewhere = False
        for route in self._routes:
            match = route.pattern.fullmatch(parts.path)
            if match is None:
                continue
            if method not in route.methods:
                allowed_elsewhere = True
                continue
            try:
                return route.handler(Request(method, parts.path, query, headers, match))
            except Exception as error:  # a bug in an emulator must show up as a 500, not a hung client
                return self.internal_error(error)
        if allowed_elsewhere:
            return self.method_not_allowed(method, parts.path)
        return self.not_found(parts.path)

    # Accessors under their locks below read alike (log and faults); each guards its own state.
    # --- request log -----------------------------------------------------------------------------------
    def _record(self, record: RequestRecord) -> None:
        with self._log_lock:
            self._log.append(record)

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request served so far, oldest first."""
        with self._log_lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    # --- latency and faults ----------------------------------------------------------------------------
    @property
    def faults(self) -> FaultPlan | None:
        return self._faults

    @property
    def latency_s(self) -> float:
        return self._latency_s

    @property
    def injected_faults(self) -> Counter[str]:
        """How many faults of each kind were injected so far (a copy)."""
        with self._fault_lock:
            return Counter(self._injected)

    def reset_faults(self) -> None:
        """Forget the attempts counted per target, so that faulty targets fail again, and the counts."""
        with self._fault_lock:
            self._attempts.clear()
            self._injected.clear()

    def _next_fault(self, target: str) -> str | None:
        """Count a request to ``target`` and say which fault, if any, it gets."""
        plan = self._faults
        if plan is None or plan.kind_for(target) is None:
            return None  # only faulty targets need their attempts counted
        with self._fault_lock:
            attempt = self._attempts[target]
            self._attempts[target] = attempt + 1
            fault = plan.fault_for(target, attempt)
            if fault is not None:
                self._injected[fault] += 1
        return fault

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    # --- lifecycle -------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(
                f"{self.name} emulator is not running; call start() or use it as a context manager"
            )
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _EmulatorHTTPServer((self._host, self._requested_port), _EmulatorRequestHandler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"{self.name}-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        # Keep-alive connections would otherwise go on being served by their handler threads after stop().
        with self._connections_lock:
            for connection in list(self._open_connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The default backlog of 5 drops the SYNs of a burst of parallel clients, which then wait ~1 s to retry.
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], owner: LoopbackServer
    ):
        self.owner = owner
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-request are routine in tests of retries and resumes: no traceback for them.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _EmulatorRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services offer; every reply carries a length
    # Headers and body go out in separate writes; with Nagle on, keep-alive replies would stall ~40 ms each.
    disable_nagle_algorithm = True
    server: _EmulatorHTTPServer

    def setup(self) -> None:
        super().setup()
        owner = self.server.owner
        with owner._connections_lock:
            owner._open_connections.add(self.connection)

    def finish(self) -> None:
        owner = self.server.owner
        with owner._connections_lock:
            owner._open_connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the structured request log replaces stderr lines."""

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        owner = self.server.owner
        arrived = time.time()  # the log keeps arrival times, so rate checks see what a server's limiter sees
        headers = {name.lower(): value for name, value in self.headers.items()}
        target = redact_query(self.path)
        fault = owner._next_fault(target)
        owner._pause(owner.latency_s)
        if fault == "slow":
            owner._pause(owner.faults.slow_seconds if owner.faults is not None else 0.0)
        if fault == "reset":
            owner._record(RequestRecord(arrived, self.command, target, 0, headers.get("range"), fault))
            self._reset_connection()
            return
        if fault is not None and fault in STATUS_BY_FAULT:
            response = owner.fault_error(STATUS_BY_FAULT[fault])
            if response.status in {429, 503} and owner.faults is not None:
                response.headers.setdefault("Retry-After", str(owner.faults.retry_after_seconds))
        elif fault == "html_error":
            response = html_error_response()
        else:
            response = damage_body(fault, owner.dispatch(self.command, self.path, headers))
        owner._record(
            RequestRecord(arrived, self.command, target, response.status, headers.get("range"), fault)
        )
        try:
            self._write(response)
        except OSError:
            self.close_connection = True  # the client went away mid-reply; nothing to report

    def _reset_connection(self) -> None:
        """Drop the connection with a TCP reset and no reply, as a crashed proxy would."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # The socket is only closed once its file objects are; the writer holds no reference and must stay
        # open for the handler's last flush.
        for closable in (self.rfile, self.connection):
            try:
                closable.close()
            except OSError:
                pass

    def _write(self, response: Response) -> None:
        chunks, length = response.chunks_and_length()
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            close_chunks(chunks)
            return
        sent = 0
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
                sent += len(chunk)
        finally:
            close_chunks(chunks)
        if sent != length:
            # A deliberately cut reply (fault injection): close so the client sees a short body.
            self.close_connection = True
