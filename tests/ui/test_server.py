"""The review page's server over real HTTP (loopback): routes, paging, review marks, clip
ranges, and its safety -- ids and parameters validated, no path reaches the file system, no
input echoed, security headers on every answer."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerting.config import LocalStoreConfig
from alerting.store import LocalStore
from tests.alerting.store.records import T0, record, write
from ui.config import UiConfig
from ui.server import UiApp, UiServer

CLIP = bytes(range(256)) * 40  # 10 240 bytes standing in for an MP4


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    s = LocalStore(LocalStoreConfig(dir=tmp_path / "alerts"))
    for i in range(1, 6):
        rec = record(f"cam-{i * 10:09d}", version=40 + i, start_seq=i * 10, status="closed",
                     end_seq=i * 10 + 5, end_ts=T0 + (i * 10 + 5) * 100, clip_ready=True, clip_frames=9,
                     timeline=[[i * 10, T0 + i * 1000, 0.4], [i * 10 + 1, T0 + i * 1000 + 100, 1.6]])
        s.put(write(rec, "end", i * 10 + 5, clip=CLIP, snapshot=b"\xff\xd8\xff-snapshot"))
    (tmp_path / "secret.txt").write_text("root:x:0:0")
    return s


@pytest.fixture
def server(store: LocalStore):
    registry = CollectorRegistry()
    srv = UiServer(UiApp(store, UiConfig(port=0, page_size=2), registry=registry), "127.0.0.1", 0).start()
    yield srv
    srv.close()


def request(server: UiServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A raw request: ``path`` goes on the wire exactly as given (no client-side normalising)."""
    host, port = server.httpd.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.putrequest(method, path, skip_accept_encoding=True)
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def get_json(server: UiServer, path: str) -> dict:
    code, _, body = request(server, "GET", path)
    assert code == 200, body
    return json.loads(body)


def test_pages_and_static_files_are_served_with_security_headers(server) -> None:
    for path, kind in (("/", "text/html"), ("/alert/cam-000000010", "text/html"),
                       ("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")):
        code, headers, body = request(server, "GET", path)
        assert code == 200 and headers["content-type"].startswith(kind) and body
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    assert request(server, "GET", "/static/nothing.js")[0] == 404


def test_alert_list_pages_newest_first_with_reviews(server, store) -> None:
    first = get_json(server, "/api/alerts")
    assert [a["alert_id"] for a in first["alerts"]] == ["cam-000000050", "cam-000000040"]
    assert first["cameras"] == ["cam"] and "timeline" not in first["alerts"][0]
    a = first["alerts"][0]
    assert a["duration_s"] == 0.5 and a["review"] is None
    assert a["clip_url"] == "/api/alerts/cam-000000050/clip.mp4" and a["page_url"] == "/alert/cam-000000050"
    ids = [x["alert_id"] for x in first["alerts"]]
    cursor = first["next"]
    while cursor:
        page = get_json(server, f"/api/alerts?before={cursor}")
        ids += [x["alert_id"] for x in page["alerts"]]
        cursor = page["next"]
    assert ids == [f"cam-{i:09d}" for i in (50, 40, 30, 20, 10)]
    since, until = record(start_seq=20).start_ts, record(start_seq=40).start_ts
    window = get_json(server, f"/api/alerts?since={since}&until={until}&limit=10&camera=cam")
    assert [x["alert_id"] for x in window["alerts"]] == ["cam-000000040", "cam-000000030", "cam-000000020"]
    assert get_json(server, "/api/alerts?camera=other")["alerts"] == []
    detail = get_json(server, "/api/alerts/cam-000000030")
    assert detail["timeline"] == [[30, T0 + 3000, 0.4], [31, T0 + 3100, 1.6]]
    assert detail["model"] == "01:cflow:abc"


def test_a_review_mark_is_stored_counted_and_survives_a_reload(server, store) -> None:
    mark = json.dumps({"mark": "false_alarm"}).encode()
    code, _, body = request(server, "POST", "/api/alerts/cam-000000020/review", mark,
                            {"Content-Type": "application/json"})
    assert code == 200 and json.loads(body)["review"]["mark"] == "false_alarm"
    assert get_json(server, "/api/alerts/cam-000000020")["review"]["mark"] == "false_alarm"
    assert store.reviews(["cam-000000020"])["cam-000000020"]["mark"] == "false_alarm"
    metrics = request(server, "GET", "/metrics")[2].decode()
    assert 'vigil_ui_reviews_total{mark="false_alarm"} 1.0' in metrics
    # not JSON, another origin, a mark that is none, an alert that is none
    assert request(server, "POST", "/api/alerts/cam-000000020/review", b"mark=reviewed",
                   {"Content-Type": "application/x-www-form-urlencoded"})[0] == 400
    host = "{}:{}".format(*server.httpd.server_address[:2])
    foreign = {"Content-Type": "application/json", "Origin": "http://evil.example", "Host": host}
    assert request(server, "POST", "/api/alerts/cam-000000020/review", mark, foreign)[0] == 403
    assert request(server, "POST", "/api/alerts/cam-000000020/review", b'{"mark": "gone"}',
                   {"Content-Type": "application/json"})[0] == 400
    assert request(server, "POST", "/api/alerts/cam-000000099/review", mark,
                   {"Content-Type": "application/json"})[0] == 404
    assert store.reviews(["cam-000000020"])["cam-000000020"]["mark"] == "false_alarm"


def test_clips_are_served_whole_and_by_range(server) -> None:
    code, headers, body = request(server, "GET", "/api/alerts/cam-000000010/clip.mp4")
    assert code == 200 and body == CLIP and headers["accept-ranges"] == "bytes"
    clip = "/api/alerts/cam-000000010/clip.mp4"
    code, headers, body = request(server, "GET", clip, headers={"Range": "bytes=0-99"})
    assert code == 206 and body == CLIP[:100] and headers["content-range"] == f"bytes 0-99/{len(CLIP)}"
    code, _, body = request(server, "GET", clip, headers={"Range": "bytes=-10"})
    assert code == 206 and body == CLIP[-10:]
    code, _, body = request(server, "GET", clip, headers={"Range": "bytes=100-"})
    assert code == 206 and body == CLIP[100:]
    for bad in ("bytes=99999-", "bytes=5-2", "lines=1-2", "bytes=-"):
        assert request(server, "GET", clip, headers={"Range": bad})[0] == 416
    code, headers, body = request(server, "GET", "/api/alerts/cam-000000010/snapshot.jpg")
    assert code == 200 and headers["content-type"] == "image/jpeg" and body.startswith(b"\xff\xd8")


TRAVERSAL = [
    "/static/../../../../etc/passwd", "/static/..%2f..%2f..%2fetc%2fpasswd", "/static/%2e%2e/secret.txt",
    "/api/alerts/..%2Fsecret.txt/clip.mp4", "/api/alerts/../../secret.txt", "/api/alerts/..",
    "/../secret.txt",
    "/api/alerts/cam-000000010%2F..%2F..%2Fsecret/snapshot.jpg", "/api/alerts/%00/clip.mp4",
    "/static/..\\..\\secret.txt", "//etc/passwd", "/api/cameras/..%2F..%2Fsecret/tile.jpg",
    "/alert/..%2F..%2Fsecret.txt", "/api/alerts/.hidden/clip.mp4",
]


@pytest.mark.parametrize("path", TRAVERSAL)
def test_no_request_path_reaches_the_file_system(server, path: str) -> None:
    code, _, body = request(server, "GET", path)
    assert code in (400, 404), (path, code)
    assert b"root:" not in body and b"secret" not in body


INJECTION = [
    "/alert/%3Cscript%3Ealert(1)%3C%2Fscript%3E", "/alert/<script>alert(1)</script>",
    "/api/cameras/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E/tile.jpg", "/api/cameras/<b>x</b>/scores",
    "/api/alerts?camera=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "/api/alerts?camera=<svg/onload=alert(1)>",
    "/api/alerts?since=<script>", "/api/alerts?limit=100000", "/api/alerts?limit=-1",
    "/api/alerts?before=1~<script>", "/api/alerts?camera=cam&camera=other", "/api/alerts?evil=<script>",
    "/api/alerts/cam-000000010?x=<script>", "/?q=<script>",
]


@pytest.mark.parametrize("path", INJECTION)
def test_bad_ids_and_parameters_are_refused_without_echo(server, path: str) -> None:
    code, headers, body = request(server, "GET", path)
    assert code in (400, 404), (path, code, body)
    assert headers["content-type"] == "application/json"
    text = body.decode()
    assert "<" not in text and "script" not in text and "onerror" not in text
    assert json.loads(text)["error"]


def test_methods_other_than_get_and_the_review_post_are_refused(server) -> None:
    assert request(server, "DELETE", "/api/alerts/cam-000000010")[0] == 405
    assert request(server, "PUT", "/api/alerts/cam-000000010", b"{}")[0] == 405
    assert request(server, "POST", "/api/alerts/cam-000000010", b"{}",
                   {"Content-Type": "application/json"})[0] == 404
    assert request(server, "HEAD", "/")[0] == 200


def test_the_page_binds_to_loopback_by_default() -> None:
    assert UiConfig().host == "127.0.0.1"
