"""``speech-hands ui``: the trace viewer page served on localhost with the standard library's HTTP server.

``GET /`` reads the trace database (and the eval reports) again and returns the page, so new runs
appear on reload; ``GET /audio/<key>`` streams the audio file of a run (byte ranges, for seeking).
Only files that a run in the trace database references are served, under a key derived from their
path; nothing else on the disk is reachable. It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from speech_hands.tracing.runs import LOW_CONFIDENCE, RunCatalog, RunView
from speech_hands.tracing.viewer import render_page

__all__ = ["ViewerServer", "audio_key"]

_AUDIO_TYPES = {
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".m4a": "audio/mp4",
}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_CHUNK = 1 << 16


def audio_key(path: str) -> str:
    """The URL key of one audio file: a hash of its resolved path (stable across reloads)."""
    return hashlib.sha256(str(Path(path).expanduser().resolve()).encode()).hexdigest()[:20]


class ViewerServer:
    """The viewer on ``http://host:port/`` (``port=0``: a free port); ``load`` reads the runs afresh."""

    def __init__(
        self,
        load: Callable[[], RunCatalog],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        title: str = "speech-hands traces",
        low_confidence: float = LOW_CONFIDENCE,
    ) -> None:
        self.load = load
        self.title = title
        self.low_confidence = low_confidence
        self._audio: dict[str, Path] = {}
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def page(self) -> str:
        """Re-read the runs and render the page; remembers which audio files it links."""
        with self._lock:
            catalog = self.load()
            audio: dict[str, Path] = {}

            def src(run: RunView) -> str | None:
                if not run.audio_path:
                    return None
                key = audio_key(run.audio_path)
                audio[key] = Path(run.audio_path).expanduser().resolve()
                return f"audio/{key}{Path(run.audio_path).suffix.lower()}"

            text = render_page(catalog, title=self.title, audio_src=src, low_confidence=self.low_confidence)
            self._audio = audio
            return text

    def audio_file(self, key: str) -> Path | None:
        """The file behind ``audio/<key>``, or None for a key no run links."""
        if not self._audio:  # asked before any page was served: learn the links first
            self.page()
        with self._lock:
            return self._audio.get(key)

    # ------------------------------------------------------------------ lifecycle

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> ViewerServer:
        """Serve in a background thread (tests, notebooks); :meth:`stop` ends it."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="speech-hands-ui", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> ViewerServer:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "speech-hands-ui"

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the terminal shows the URL only
                pass

            def do_HEAD(self) -> None:
                self._respond(head=True)

            def do_GET(self) -> None:
                self._respond(head=False)

            def _respond(self, head: bool) -> None:
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    body = server.page().encode("utf-8")
                    self._send(HTTPStatus.OK, "text/html; charset=utf-8", body, head)
                    return
                match = re.fullmatch(r"/audio/([0-9a-f]{20})(\.[A-Za-z0-9]{1,5})?", path)
                file = server.audio_file(match.group(1)) if match else None
                if file is None or not file.is_file():
                    self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n", head)
                    return
                self._send_file(file, head)

            def _send(self, status: HTTPStatus, ctype: str, body: bytes, head: bool) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _send_file(self, file: Path, head: bool) -> None:
                size = file.stat().st_size
                start, end = 0, size - 1
                status = HTTPStatus.OK
                wanted = _RANGE.match(self.headers.get("Range", "").strip())
                if wanted and (wanted.group(1) or wanted.group(2)):
                    if wanted.group(1):
                        start = int(wanted.group(1))
                        end = min(int(wanted.group(2)), size - 1) if wanted.group(2) else size - 1
                    else:  # the last N bytes
                        start = max(0, size - int(wanted.group(2)))
                    if start > end or start >= size:
                        self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.end_headers()
                        return
                    status = HTTPStatus.PARTIAL_CONTENT
                ctype = _AUDIO_TYPES.get(file.suffix.lower()) or mimetypes.guess_type(file.name)[0]
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start + 1))
                if status is HTTPStatus.PARTIAL_CONTENT:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if head:
                    return
                with file.open("rb") as fh:
                    fh.seek(start)
                    left = end - start + 1
                    while left > 0:
                        chunk = fh.read(min(_CHUNK, left))
                        if not chunk:
                            break
                        try:
                            self.wfile.write(chunk)
                        except (BrokenPipeError, ConnectionResetError):  # the player seeked away
                            return
                        left -= len(chunk)

        return Handler
