"""Loopback servers for the tests: a real stdlib HTTP server for the server backends, a free port on
127.0.0.1, and a server process (``langgraph dev``, ``speech-hands serve``) started and always stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@contextmanager
def serve(handle: Callable[[BaseHTTPRequestHandler, bytes], tuple[int, dict] | None]):
    """A ThreadingHTTPServer on 127.0.0.1 (free port) answering every POST with ``handle``; a ``handle``
    returning None drops the connection without an answer (a connection error for the client)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer = handle(self, body)
            if answer is None:
                self.close_connection = True
                return
            status, payload = answer
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body (what an OpenAI-style upload sends), stdlib only."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.iter_parts()
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server_process(
    command: Sequence[str], *, folder: Path, env: Mapping[str, str], ready_url: str, name: str, timeout_s: float
) -> Iterator[subprocess.Popen]:
    """Run ``command`` in ``folder`` (its own process group, output in ``folder/server.log``) until
    ``ready_url`` answers 200; yield the process; stop it (SIGTERM, then SIGKILL) whatever happens. A
    server that exits or does not answer in ``timeout_s`` fails the test with the end of its log."""
    import httpx
    import pytest

    log_path = folder / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            list(command), cwd=folder, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None:
                    pytest.fail(f"{name} exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
                try:
                    if httpx.get(ready_url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} did not answer in {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
