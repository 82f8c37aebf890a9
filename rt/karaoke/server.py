"""The web live view: a local HTTP server (stdlib) with server-sent events.

The server binds to 127.0.0.1 only and serves:

- ``/`` (``index.html``), ``/app.js``, ``/style.css``: the page in ``web/`` (no build step, no
  external resources);
- ``/song.json``: the reference melody (notes, lines, pitch range);
- ``/state.json``: one snapshot of the session (see :meth:`KaraokeSession.snapshot`);
- ``/events``: a ``text/event-stream`` that sends a snapshot (with the sung points since the
  previous one) at most ``rate`` times a second while frames arrive, a keep-alive comment
  otherwise, and a ``final`` event when the song ends;
- ``/score.json``: the final score once the song is over (404 before).

Each client gets its own thread (``ThreadingHTTPServer``); :meth:`KaraokeServer.close` ends
the event streams and the server.
"""

from __future__ import annotations

import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from .session import KaraokeSession

#: Files of the page: URL path -> (file in web/, content type).
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
#: Display rate of the event stream [updates per second].
DEFAULT_RATE = 30.0


def _static(name: str) -> bytes:
    return resources.files("melodyrt.rt.karaoke").joinpath("web", name).read_bytes()


class KaraokeServer:
    """Serve a session's live view on ``http://127.0.0.1:PORT/`` from a background thread.

    Parameters
    ----------
    session : KaraokeSession
    port : int
        0 lets the system choose a free port (see :attr:`url`).
    rate : float [Hz]
        Most event-stream updates per second per client.
    host : str
        Loopback only by default; the page shows a live microphone, keep it local.
    """

    def __init__(self, session: KaraokeSession, port: int = 0, rate: float = DEFAULT_RATE,
                 host: str = "127.0.0.1") -> None:
        self.session = session
        self.rate = float(rate)
        self._stop = threading.Event()
        self.clients = 0
        self.events_sent = 0
        handler = _make_handler(self)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="karaoke-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{self.port}/"

    def start(self) -> "KaraokeServer":
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the event streams and the server (safe to call twice)."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self.session._cond:  # wake the event streams so they see the stop flag
            self.session._cond.notify_all()
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "KaraokeServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _make_handler(server: KaraokeServer) -> type[BaseHTTPRequestHandler]:
    session = server.session

    class Handler(BaseHTTPRequestHandler):
        server_version = "melodyrt-karaoke"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
            return

        def _send(self, body: bytes, ctype: str, status: int = 200) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, data: Any, status: int = 200) -> None:
            self._send(json.dumps(data, separators=(",", ":")).encode(), "application/json", status)

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            try:
                if path in STATIC:
                    name, ctype = STATIC[path]
                    self._send(_static(name), ctype)
                elif path == "/song.json":
                    data = session.song.to_json()
                    data["score_config"] = {"difficulty": session.scorer.config.difficulty,
                                            "tolerance": session.scorer.config.tolerance,
                                            "octave_agnostic": session.scorer.config.octave_agnostic}
                    self._json(data)
                elif path == "/state.json":
                    self._json(session.snapshot(0))
                elif path == "/score.json":
                    if session.final is None:
                        self._json({"error": "the song is not over"}, 404)
                    else:
                        self._json(session.final.to_json())
                elif path == "/events":
                    self._events()
                elif path == "/favicon.ico":
                    self._send(b"", "image/x-icon", HTTPStatus.NO_CONTENT)
                else:
                    self._json({"error": f"no such page: {path}"}, 404)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _events(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "keep-alive")
            self.end_headers()
            self.close_connection = True
            server.clients += 1
            period = 1.0 / server.rate
            seq = 0
            next_send = time.monotonic()  # a fixed schedule: sending time does not add up
            try:
                self.wfile.write(b"retry: 1000\n\n")
                self.wfile.flush()
                while not server._stop.is_set():
                    session.wait(seq, 1.0)
                    if server._stop.is_set():
                        break
                    wait = next_send - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    next_send = max(next_send + period, time.monotonic() - period)
                    state = session.snapshot(seq)
                    if state["finished"]:
                        final = session.final.to_json() if session.final is not None else {}
                        final.pop("sung", None)  # the page has the sung points already
                        self._event("final", dict(state, final=final))
                        break
                    if state["seq"] == seq:
                        # Nothing new (no frames): a comment keeps the connection alive and
                        # lets the page's clock follow the backing track.
                        self._event("clock", {"now": state["now"], "score": state["score"]})
                    else:
                        self._event("message", state)
                    seq = state["seq"]
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
            finally:
                server.clients -= 1

        def _event(self, kind: str, data: dict[str, Any]) -> None:
            body = json.dumps(data, separators=(",", ":"))
            head = "" if kind == "message" else f"event: {kind}\n"
            self.wfile.write(f"{head}data: {body}\n\n".encode())
            self.wfile.flush()
            server.events_sent += 1

    return Handler
