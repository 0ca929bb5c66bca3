"""A loopback HTTP server standing in for the authors' release host (GitHub is out of reach).

It serves what a test puts in :attr:`ReleaseServer.answers` (path -> :class:`Answer`): a file as
the release serves it, or a failure as a host gives one (an error status, an HTML page, a body
cut short of its announced length); any other path is a 404. Every request is recorded. The
server binds port 0 on 127.0.0.1 (a free port), runs in a daemon thread, and shuts itself down
after ``lifetime_s`` should a test never stop it.
"""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Answer:
    """What the server answers for one path.

    Attributes:
        body: The bytes sent.
        status: The HTTP status.
        content_type: The ``Content-Type`` header.
        length: The ``Content-Length`` announced (default ``len(body)``); a larger one makes
            a transfer that stops short.
    """
    body: bytes
    status: int = 200
    content_type: str = 'application/octet-stream'
    length: int | None = None


class ReleaseServer:
    """``with ReleaseServer() as server: server.url('release/')`` (see the module docstring)."""

    def __init__(self, lifetime_s: float = 300.0) -> None:
        self.answers: dict[str, Answer] = {}
        self.requests: list[str] = []
        self._lifetime_s = lifetime_s
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a stuck client cannot hold a handler thread for longer

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                answer = server.answers.get(self.path)
                if answer is None:
                    self.send_error(404, 'Not Found')
                    return
                self.send_response(answer.status)
                self.send_header('Content-Type', answer.content_type)
                self.send_header('Content-Length', str(answer.length or len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
                self.close_connection = True  # HTTP/1.0: the body ends where the connection does

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self._httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime_s, self._httpd.shutdown)
        self._timer.daemon = True

    def url(self, path: str = '') -> str:
        host, port = self._httpd.server_address[:2]
        return f'http://{host}:{port}/{path}'

    def serve_file(self, path: str, file: Path) -> str:
        """Serves ``file``'s bytes at ``path``; returns the address."""
        self.answers['/' + path] = Answer(Path(file).read_bytes())
        return self.url(path)

    def __enter__(self) -> ReleaseServer:
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


def refused_address() -> str:
    """An address on 127.0.0.1 where nothing listens (a port just freed): connections are
    refused."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    return f'http://127.0.0.1:{port}/'
