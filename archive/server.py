"""The archive browser's server: a small JSON API plus three static files, standard library only.

Pages are drawn in the browser (browser.html/.js/.css, no network assets). The page polls
``/api/state`` and reloads the variant list when the archive changes, so it follows a running
`selfloop evolve`. The server only reads: variants arrive through the archive's one writer.
"""

from __future__ import annotations

import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from selfloop.core.errors import ArchiveError

from .archive import Archive
from .index import refs_fingerprint

STATIC = {
    "/": ("browser.html", "text/html; charset=utf-8"),
    "/browser.js": ("browser.js", "text/javascript; charset=utf-8"),
    "/browser.css": ("browser.css", "text/css; charset=utf-8"),
}
VARIANT_ROUTE = re.compile(r"^/api/variant/([A-Za-z0-9_.-]+)$")


class ArchiveServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, archive: Archive):
        self.archive = archive
        self.variants_cache: tuple | None = None  # ((version, count), body) of /api/variants
        self.clades_cache: tuple | None = None  # ((version, count), {id: clade dict}) for /api/variant/ID
        self.static = {route: resources.files("selfloop.archive").joinpath(name).read_bytes()
                       for route, (name, _) in STATIC.items()}
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: ArchiveServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet: the CLI prints the URL, not every request
        pass

    def do_GET(self):
        url = urlsplit(self.path)
        try:
            if url.path in STATIC:
                self._send(HTTPStatus.OK, self.server.static[url.path], STATIC[url.path][1])
            elif url.path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            elif url.path == "/api/state":
                self._json(self._state())
            elif url.path == "/api/variants":
                self._send(HTTPStatus.OK, self._variants(), "application/json; charset=utf-8")
            elif match := VARIANT_ROUTE.match(url.path):
                self._json(self._variant(unquote(match.group(1))))
            elif url.path == "/api/diff":
                query = parse_qs(url.query)
                a, b = query.get("a", [""])[0], query.get("b", [None])[0]
                self._json({"a": a, "b": b, "diff": self.server.archive.diff(a, b)})
            else:
                self._json({"error": f"no such page: {url.path}"}, HTTPStatus.NOT_FOUND)
        except ArchiveError as exc:
            self._json({"error": str(exc)}, HTTPStatus.NOT_FOUND)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _state(self) -> dict:
        archive = self.server.archive
        count = len(archive)  # syncs the index first when another process added variants
        return {"path": str(archive.path), "count": count, "main_metric": archive.main_metric,
                "version": refs_fingerprint(archive.path), "metrics": archive.metrics()}

    def _variants(self) -> bytes:
        """Every variant in compact rows (10,000 of them are about 1 MB), cached per archive state.

        A row's ``edit`` is [operator, changed_kinds, judged_by] (nulls for older records)."""
        state = self._state()
        key = (state["version"], state["count"])
        cached = self.server.variants_cache
        if cached is None or cached[0] != key:
            rows = self.server.archive.compact_json()  # JSON text made by SQLite, spliced in as is
            head = json.dumps(state | {"fields": ["seq", "id", "parent", "status", "created", "proposer", "scores",
                                                  "edit"]})
            cached = self.server.variants_cache = (key, f'{head[:-1]}, "rows": {rows}}}'.encode())
        return cached[1]

    def _clade(self, variant_id: str) -> dict | None:
        """The variant's clade (itself and its descendants), all of them computed once per archive state."""
        archive = self.server.archive
        count = len(archive)  # syncs the index first when another process added variants
        key = (refs_fingerprint(archive.path), count)
        cached = self.server.clades_cache
        if cached is None or cached[0] != key:
            cached = self.server.clades_cache = (key, {vid: c.to_dict() for vid, c in archive.clades().items()})
        return cached[1].get(variant_id)

    def _variant(self, variant_id: str) -> dict:
        archive = self.server.archive
        variant = archive.get(variant_id)
        parent = archive.get(variant.parent) if variant.parent else None
        return variant.to_dict() | {
            "children": [c.id for c in archive.children(variant_id)],
            "lineage": [a.id for a in archive.lineage(variant_id)],
            "parent_scores": parent.scores if parent else {},
            "clade": self._clade(variant_id),
            "diff": archive.diff(variant_id),
        }

    def _json(self, data, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
        self.end_headers()
        self.wfile.write(body)


def make_server(path: str | Path, host: str = "127.0.0.1", port: int = 0) -> ArchiveServer:
    """A server bound to (host, port) but not yet serving (port 0 picks a free port)."""
    try:
        return ArchiveServer((host, port), Archive(path))
    except OSError as exc:
        raise ArchiveError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(path: str | Path, host: str, port: int, ready=None) -> None:
    server = make_server(path, host, port)
    if ready:
        ready(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.archive.close()


def serve_in_thread(path: str | Path, host: str = "127.0.0.1", port: int = 0) -> ArchiveServer:
    """Start a server on a daemon thread (tests, notebooks); stop it with ``server.shutdown()``."""
    server = make_server(path, host, port)
    threading.Thread(target=server.serve_forever, daemon=True, name="archive-server").start()
    return server
