"""The review page's HTTP server: the pages and their JSON API.

Routes (everything else is 404; every id and query parameter is checked first):

* ``GET /`` -- camera tiles and the alert list; ``GET /alert/{id}`` -- an alert's page;
  ``GET /static/{name}`` -- the page's script and style (a fixed set, read at start);
* ``GET /api/cameras`` -- each camera's health, last score and tile;
  ``GET /api/cameras/{camera}/tile.jpg`` -- its latest frame with the heat overlay (or, with
  no live feed, its newest alert's snapshot); ``GET /api/cameras/{camera}/scores`` -- its
  score line;
* ``GET /api/alerts?camera=&since=&until=&before=&limit=`` -- newest first, paged
  (``before``: the ``next`` cursor of the previous page; ``since``/``until``: start time,
  epoch ms); ``GET /api/alerts/{id}`` -- the record, its timeline and review;
  ``GET /api/alerts/{id}/clip.mp4`` (with HTTP ranges) and ``.../snapshot.jpg``;
* ``POST /api/alerts/{id}/review`` -- ``{"mark": "reviewed" | "false_alarm" | null}``;
* ``GET /healthz``, ``GET /metrics``.

Safety: the store's objects are served by id only, so no part of a request names a file;
ids and parameters must match their rules (:mod:`common.ids`) or the answer is 400 without
echoing them; the pages put data into the document as text, never as markup, under a
``Content-Security-Policy`` that allows only this origin's script; a review must be a JSON
``POST`` from this origin. Camera URLs (which may hold credentials) never reach the server:
it knows camera ids only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from alerting.events import AlertRecord
from alerting.store import REVIEW_MARKS, AlertStore, StoreError
from common.ids import is_alert_id, is_camera_id
from ui.config import UiConfig
from ui.health import HealthSource, camera_state
from ui.live import LiveView

__all__ = ["ListenError", "Response", "UiApp", "UiServer"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                                "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_MAX_MS = 2**53  # query times: epoch ms fit a JavaScript number
_INT = re.compile(r"[0-9]{1,16}")
_RANGE = re.compile(r"bytes=([0-9]{0,16})-([0-9]{0,16})")
_QUERY = {"camera", "since", "until", "before", "limit"}


class BadRequestError(ValueError):
    """A request that breaks a rule; the message names the rule, never the input."""


class ListenError(OSError):
    """The page cannot listen where ``ui.host`` / ``ui.port`` say (the port is taken)."""


@dataclass
class Response:
    code: int
    body: bytes = b""
    ctype: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json(data: Any, code: int = 200) -> Response:
    return Response(code, json.dumps(data, separators=(",", ":")).encode(), "application/json",
                    {"Cache-Control": "no-store"})


def _error(code: int, message: str) -> Response:
    return _json({"error": message}, code)


def _int_param(query: dict[str, str], name: str, low: int = 0, high: int = _MAX_MS) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if not _INT.fullmatch(value) or not low <= int(value) <= high:
        raise BadRequestError(f"{name} must be an integer from {low} to {high}")
    return int(value)


def _cursor(value: str | None) -> tuple[int, str] | None:
    """``before=<start_ts>~<alert id>`` (the ``next`` of a page)."""
    if value is None or value == "":
        return None
    ts, sep, alert_id = value.partition("~")
    if not sep or not _INT.fullmatch(ts) or not is_alert_id(alert_id):
        raise BadRequestError("before must be the next cursor of a previous page")
    return int(ts), alert_id


def summary(record: AlertRecord, review: dict | None) -> dict[str, Any]:
    """What the alert list shows of an alert (the record without its timeline)."""
    data = record.to_json()
    data.pop("timeline", None)
    end = record.end_ts if record.end_ts is not None else record.peak_ts
    data.update(duration_s=round(max(0, end - record.start_ts) / 1000, 1), review=review,
                snapshot_url=f"/api/alerts/{record.alert_id}/snapshot.jpg" if record.snapshot_key else None,
                clip_url=f"/api/alerts/{record.alert_id}/clip.mp4" if record.clip_ready else None,
                page_url=f"/alert/{record.alert_id}")
    return data


class UiApp:
    """The page's requests, answered from the alert store, the live view and the cameras'
    health (the HTTP plumbing is :class:`UiServer`'s)."""

    def __init__(self, store: AlertStore, cfg: UiConfig, live: LiveView | None = None,
                 health: HealthSource | None = None, registry: CollectorRegistry | None = None,
                 ready: Callable[[], tuple[bool, dict]] | None = None) -> None:
        self.store, self.cfg, self.live, self.health, self.ready = store, cfg, live, health, ready
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reviews = Counter("vigil_ui_reviews", "Review marks set on alerts by operators (mark=cleared: "
                               "a mark taken back)", ["mark"], registry=self.registry)
        for mark in (*REVIEW_MARKS, "cleared"):
            self.reviews.labels(mark)
        self.static = {p.name: p.read_bytes() for p in STATIC.iterdir() if p.suffix in _STATIC_TYPES}

    # ------------------------------------------------------------------ dispatch
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> Response:
        """Answer one request (``target``: path and query as sent)."""
        try:
            parts = urlsplit(target)
            path = parts.path
            if "\\" in path or "%" in path or "//" in path:
                raise BadRequestError("path must be plain")
            raw = parse_qs(parts.query, keep_blank_values=True, max_num_fields=16)
            if any(len(v) > 1 for v in raw.values()):
                raise BadRequestError("a query parameter is repeated")
            query = {k: v[0] for k, v in raw.items()}
            segs = [s for s in path.split("/") if s]
            if method == "POST":
                if len(segs) == 4 and segs[:2] == ["api", "alerts"] and segs[3] == "review":
                    return self.review(self._alert_id(segs[2]), headers, body)
                return _error(404, "not found")
            if method not in ("GET", "HEAD"):
                return _error(405, "method not allowed")
            return self._get(segs, query, headers)
        except BadRequestError as exc:
            return _error(400, str(exc))
        except LookupError as exc:
            return _error(404, str(exc))
        except StoreError as exc:
            log.warning("ui: store error: %s", exc)
            return _error(503, "the alert store cannot be read right now")

    def _get(self, segs: list[str], query: dict[str, str], headers: dict[str, str]) -> Response:
        if segs and segs[0] == "api":
            # a tile's ``v`` (the frame it shows) only defeats caches
            allowed = _QUERY if segs == ["api", "alerts"] else {"v"} if segs[-1] == "tile.jpg" else set()
            if set(query) - allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise BadRequestError(f"unknown query parameter (known: {known})")
        elif query:
            raise BadRequestError("this page takes no query parameters")
        if not segs:
            return self._static("index.html")
        if len(segs) == 2 and segs[0] == "alert":
            self._alert_id(segs[1])
            return self._static("alert.html")
        if len(segs) == 2 and segs[0] == "static":
            return self._static(segs[1])
        if segs == ["healthz"]:
            ok, detail = self.ready() if self.ready is not None else (True, {})
            return _json({"ok": ok, **detail}, 200 if ok else 503)
        if segs == ["metrics"]:
            return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if segs[0] != "api":
            return _error(404, "not found")
        if segs == ["api", "cameras"]:
            return _json({"cameras": self.cameras()})
        if len(segs) == 4 and segs[1] == "cameras":
            camera = self._camera_id(segs[2])
            if segs[3] == "tile.jpg":
                _int_param(query, "v", 0, _MAX_MS)
                return self._tile(camera)
            if segs[3] == "scores":
                points = self.live.points(camera) if self.live is not None else []
                return _json({"camera": camera, "threshold": 1.0, "points": points})
        if segs == ["api", "alerts"]:
            return _json(self.alerts(query))
        if len(segs) >= 3 and segs[1] == "alerts":
            alert_id = self._alert_id(segs[2])
            if len(segs) == 3:
                return _json(self.alert(alert_id))
            if len(segs) == 4 and segs[3] == "snapshot.jpg":
                return self._blob(self.store.snapshot(alert_id), "image/jpeg", "snapshot")
            if len(segs) == 4 and segs[3] == "clip.mp4":
                return self._clip(alert_id, headers.get("range"))
        return _error(404, "not found")

    # ------------------------------------------------------------------ ids
    @staticmethod
    def _alert_id(value: str) -> str:
        if not is_alert_id(value):
            raise BadRequestError("not an alert id")
        return value

    @staticmethod
    def _camera_id(value: str) -> str:
        if not is_camera_id(value):
            raise BadRequestError("not a camera id")
        return value

    # ------------------------------------------------------------------ answers
    def _static(self, name: str) -> Response:
        data = self.static.get(name)
        if data is None:
            return _error(404, "not found")
        return Response(200, data, _STATIC_TYPES[Path(name).suffix], {"Cache-Control": "no-cache"})

    @staticmethod
    def _blob(data: bytes | None, ctype: str, what: str) -> Response:
        if data is None:
            return _error(404, f"no {what}")
        return Response(200, data, ctype, {"Cache-Control": "private, max-age=60"})

    def _clip(self, alert_id: str, range_header: str | None) -> Response:
        data = self.store.clip(alert_id)
        if data is None:
            return _error(404, "no clip (yet)")
        size = len(data)
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=60"}
        if not range_header:
            return Response(200, data, "video/mp4", headers)
        m = _RANGE.fullmatch(range_header.strip())
        if m is None or (m.group(1) == "" and m.group(2) == ""):
            return Response(416, b"", "video/mp4", {**headers, "Content-Range": f"bytes */{size}"})
        if m.group(1) == "":  # the last N bytes
            start, end = max(0, size - int(m.group(2))), size - 1
        else:
            start = int(m.group(1))
            end = min(size - 1, int(m.group(2))) if m.group(2) else size - 1
        if start >= size or start > end:
            return Response(416, b"", "video/mp4", {**headers, "Content-Range": f"bytes */{size}"})
        return Response(206, data[start:end + 1], "video/mp4",
                        {**headers, "Content-Range": f"bytes {start}-{end}/{size}"})

    def _tile(self, camera: str) -> Response:
        jpeg = self.live.tile(camera) if self.live is not None else None
        if jpeg is None:  # no live frame: the camera's newest alert's snapshot
            newest = self.store.list(camera, limit=1)
            if newest and newest[0].snapshot_key:
                jpeg = self.store.snapshot(newest[0].alert_id)
        return Response(200, jpeg, "image/jpeg", {"Cache-Control": "no-store"}) if jpeg else \
            _error(404, "no frame yet")

    def cameras(self) -> list[dict[str, Any]]:
        """Every camera seen live or with stored alerts: health, last score, tile."""
        live = {c["camera"]: c for c in self.live.cameras()} if self.live is not None else {}
        states = self.health() if self.health is not None else None
        try:
            stored = set(self.store.cameras())
        except StoreError as exc:
            log.warning("ui: store error: %s", exc)
            stored = set()
        ids = sorted(set(live) | stored | set(states or {}))[: self.cfg.max_cameras]
        out = []
        for cid in ids:
            c = live.get(cid, {"camera": cid, "scene": None, "score": None, "ts": None, "seq": None,
                               "model": None, "provisional": False, "tile": False,
                               "seconds_since_frame": None})
            ingest = (states or {}).get(cid)
            out.append({**c, "health": camera_state(ingest, c["seconds_since_frame"]), "ingest_state": ingest,
                        "live": cid in live, "tile_url": f"/api/cameras/{cid}/tile.jpg",
                        "scores_url": f"/api/cameras/{cid}/scores", "threshold": 1.0})
        return out

    def alerts(self, query: dict[str, str]) -> dict[str, Any]:
        camera = query.get("camera") or None
        if camera is not None:
            self._camera_id(camera)
        since = _int_param(query, "since")
        until = _int_param(query, "until")
        limit = _int_param(query, "limit", 1, 500) or self.cfg.page_size
        before = _cursor(query.get("before"))
        if until is not None and (before is None or before > (until + 1, "")):
            before = (until + 1, "")
        records = self.store.list(camera, limit=limit + 1, since_ts=since, before=before)
        page = records[:limit]
        reviews = self.store.reviews([r.alert_id for r in page])
        nxt = f"{page[-1].start_ts}~{page[-1].alert_id}" if len(records) > limit else None
        return {"alerts": [summary(r, reviews.get(r.alert_id)) for r in page], "next": nxt,
                "cameras": sorted(set(self.store.cameras()))}

    def alert(self, alert_id: str) -> dict[str, Any]:
        record = self.store.get(alert_id)
        if record is None:
            raise LookupError("no such alert (never stored, or past its retention)")
        review = self.store.reviews([alert_id]).get(alert_id)
        return {**summary(record, review), "timeline": record.timeline}

    def review(self, alert_id: str, headers: dict[str, str], body: bytes) -> Response:
        if headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise BadRequestError("a review is a JSON POST")
        origin, host = headers.get("origin"), headers.get("host")
        if origin is not None and (host is None or urlsplit(origin).netloc != host):
            return _error(403, "a review must come from this page")
        if len(body) > 4096:
            raise BadRequestError("a review is at most 4 KB")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise BadRequestError("a review is a JSON object") from None
        if not isinstance(data, dict) or set(data) - {"mark", "note"}:
            raise BadRequestError('a review is {"mark": ..., "note": ...}')
        mark, note = data.get("mark"), data.get("note", "")
        if mark is not None and mark not in REVIEW_MARKS:
            raise BadRequestError(f"mark must be one of {', '.join(REVIEW_MARKS)} or null")
        if not isinstance(note, str) or len(note) > 500:
            raise BadRequestError("note must be text of at most 500 characters")
        kept = self.store.set_review(alert_id, mark, note)
        self.reviews.labels(mark or "cleared").inc()
        log.info("alert %s marked %s", alert_id, mark or "(cleared)")
        return _json({"alert_id": alert_id, "review": kept})


class UiServer:
    """:class:`UiApp` over HTTP on a background thread (``ui.host``, ``ui.port``)."""

    def __init__(self, app: UiApp, host: str = "127.0.0.1", port: int = 8765) -> None:
        self.app = app

        class Handler(BaseHTTPRequestHandler):
            server_version = "vigil-ui"
            sys_version = ""

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0) if method == "POST" else 0
                if length > 65536:
                    resp = _error(413, "request too large")
                else:
                    body = self.rfile.read(length) if length else b""
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    try:
                        resp = app.handle("GET" if method == "HEAD" else method, self.path, headers, body)
                    except Exception:  # a bug answering one request: 500, logged; the server goes on
                        log.exception("ui: request failed")
                        resp = _error(500, "internal error (see the log)")
                self.send_response(resp.code)
                self.send_header("Content-Type", resp.ctype)
                self.send_header("Content-Length", str(len(resp.body)))
                for k, v in {**_SECURITY_HEADERS, **resp.headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                if method != "HEAD":
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the browser moved on
                        self.wfile.write(resp.body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's names
                self._answer("GET")

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer("HEAD")

            def do_POST(self) -> None:  # noqa: N802
                self._answer("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._answer("PUT")

            def do_DELETE(self) -> None:  # noqa: N802
                self._answer("DELETE")

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                log.debug("ui: " + format, *args)

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ListenError(f"the review page cannot listen on {host}:{port} ({exc.strerror}); set "
                              "ui.port (0: any free port) or ui.enabled: false") from None
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="ui-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> UiServer:
        self.thread.start()
        log.info("review page on %s", self.url)
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
