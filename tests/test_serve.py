"""The HTTP service end to end: a real uvicorn server on a free loopback port, called over HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from infer_helpers import LABELS, astronaut, make_video, no_face_image  # noqa: E402
from serve_helpers import encode, group_photo, metric, slow_predictor, tiny_predictor  # noqa: E402

from bregnet.serve import BackgroundServer, Limits, ServeSettings, create_app  # noqa: E402

MB = 1024 * 1024
KEY = "test-key-0123456789"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "serve.md"


def _schemas() -> dict[str, dict]:
    """The JSON schemas documented in docs/serve.md (``<!-- schema: NAME -->`` + a json block)."""
    import re

    text = DOCS.read_text(encoding="utf-8")
    found = re.findall(r"<!-- schema: ([\w-]+) -->\s*```json\n(.*?)```", text, flags=re.S)
    return {name: json.loads(body) for name, body in found}


def _valid(name: str, instance) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(instance, _schemas()[name],
                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return tiny_predictor(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def spool(tmp_path_factory):
    return tmp_path_factory.mktemp("spool")


@pytest.fixture(scope="module")
def server(predictor, spool):
    app = create_app(predictor, ServeSettings(spool_dir=str(spool)))
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def guarded(predictor, spool):
    """Small limits, an API key and one CORS origin."""
    limits = Limits(max_upload_bytes=1 * MB, max_video_bytes=2 * MB, max_pixels=1_000_000,
                    max_faces=2, request_timeout_s=1.0)
    app = create_app(predictor, ServeSettings(limits=limits, api_key=KEY, spool_dir=str(spool),
                                              cors_origins=("http://app.example",)))
    with BackgroundServer(app) as srv:
        yield srv


def _empty_soon(folder: Path, timeout: float = 5.0) -> list[Path]:
    """What is left in ``folder`` once the server's clean-up after the last answer has run."""
    t_end = time.monotonic() + timeout
    while list(folder.iterdir()) and time.monotonic() < t_end:
        time.sleep(0.05)
    return list(folder.iterdir())


def _auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _check_face(face: dict, width: int, height: int) -> None:
    assert set(face) == {"face_id", "box", "det_score", "landmarks", "label", "probabilities",
                         "valence", "arousal"}
    b = face["box"]
    assert 0 <= b["x"] < width and 0 <= b["y"] < height and b["w"] > 20 and b["h"] > 20
    assert 0.5 <= face["det_score"] <= 1.0
    assert len(face["landmarks"]) == 5
    assert list(face["probabilities"]) == LABELS
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)
    assert -1.0 <= face["valence"] <= 1.0 and -1.0 <= face["arousal"] <= 1.0


# -- images ---------------------------------------------------------------------------------------
def test_one_face_matches_the_predictor(client, predictor):
    img = astronaut()
    r = client.post("/v1/predict", content=encode(img), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    _valid("predict", body)
    assert body["model"] == "bregnext_custom"
    assert body["image"] == {"width": 512, "height": 512, "format": "PNG"}
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    _check_face(face, 512, 512)
    # the astronaut's face (test_detect: around x 180-270, y 60-175)
    assert 150 < face["box"]["x"] < 210 and 40 < face["box"]["y"] < 100
    direct = predictor.predict_image(img)[0]
    assert np.allclose([face["probabilities"][k] for k in LABELS], direct.probs, atol=1e-4)
    assert face["valence"] == pytest.approx(direct.valence, abs=1e-4)


def test_several_faces_multipart_and_jpeg(client, predictor):
    img = group_photo()
    data = encode(img, ".jpg")
    r = client.post("/v1/predict", files={"file": ("group.jpg", data, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    _valid("predict", body)
    assert body["image"]["format"] == "JPEG"
    faces = body["faces"]
    assert len(faces) == 4
    assert [f["face_id"] for f in faces] == [0, 1, 2, 3]
    xs = [f["box"]["x"] for f in faces]
    assert xs == sorted(xs)
    for f in faces:
        _check_face(f, 1024, 1024)
    from bregnet.data.image_io import decode_image

    direct = predictor.predict_image(decode_image(data))
    assert len(direct) == 4
    for f, d in zip(faces, direct):
        assert np.allclose([f["probabilities"][k] for k in LABELS], d.probs, atol=1e-4)
    # query options: the best two faces only; a threshold above every score: none
    r = client.post("/v1/predict?max_faces=2", content=data)
    two = r.json()["faces"]
    assert len(two) == 2
    best = sorted(faces, key=lambda f: -f["det_score"])[:2]
    assert sorted(f["box"]["x"] for f in two) == sorted(f["box"]["x"] for f in best)
    assert client.post("/v1/predict?det_threshold=0.99", content=data).json()["faces"] == []


def test_no_face(client):
    r = client.post("/v1/predict", content=encode(no_face_image(), ".jpg"))
    assert r.status_code == 200
    assert r.json()["faces"] == [] and r.json()["image"]["width"] == 600
    _valid("predict", r.json())


def test_concurrent_requests_share_batches(predictor, tmp_path):
    """Faces of concurrent requests go through the model together, each request gets its own."""
    settings = ServeSettings(max_batch=4, max_wait_ms=1500, workers=4)
    images = [astronaut(), astronaut()[:, ::-1], astronaut()[::-1], astronaut()[:, ::-1][::-1]]
    expected = [predictor.predict_image(im)[0].probs for im in images]
    with BackgroundServer(create_app(predictor, settings)) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda im: c.post("/v1/predict", content=encode(im)), images))
        text = c.get("/metrics").text
    for r, want in zip(replies, expected):
        assert r.status_code == 200
        got = r.json()["faces"]
        assert len(got) == 1
        assert np.allclose([got[0]["probabilities"][k] for k in LABELS], want, atol=1e-4)
    calls = metric(text, "bregnet_batch_size_count")
    faces = metric(text, "bregnet_batch_size_sum")
    # the warm-up call is not counted; 4 requests, at least two of them in one model call
    assert faces == 4 and 1 <= calls < 4


# -- video ----------------------------------------------------------------------------------------
def test_video_streams_jsonl(client, tmp_path, spool):
    video = make_video(tmp_path / "clip.avi", 24, faces=2)
    lines = []
    with client.stream("POST", "/v1/predict/video?every=2",
                       files={"file": ("clip.avi", video.read_bytes(), "video/x-msvideo")}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        for line in r.iter_lines():
            lines.append(json.loads(line))
    from bregnet.infer.results import record_columns

    cols = record_columns(LABELS, True)
    assert all(list(rec) == cols for rec in lines)
    for rec in lines:
        _valid("video-record", rec)
    frames = sorted({rec["frame"] for rec in lines})
    assert frames == list(range(0, 24, 2))
    assert len(lines) == 2 * len(frames)                     # two faces in every sampled frame
    assert {rec["source"] for rec in lines} == {"clip.avi"}
    assert {rec["face_id"] for rec in lines} == {0, 1}       # tracked: stable IDs
    assert _empty_soon(spool) == []                       # the spooled upload is gone


def test_video_options_and_keep_empty(client, tmp_path):
    video = make_video(tmp_path / "clip.avi", 10, faces=1)
    r = client.post("/v1/predict/video?max_frames=3&track=false&det_threshold=0.999&keep_empty=1",
                    content=video.read_bytes())
    assert r.status_code == 200
    recs = [json.loads(x) for x in r.text.splitlines()]
    assert [rec["frame"] for rec in recs] == [0, 1, 2]
    for rec in recs:
        _valid("video-record", rec)
    assert all(rec["face_id"] is None and rec["label"] is None for rec in recs)


def test_video_bad_inputs(client, guarded, tmp_path, spool):
    assert client.post("/v1/predict/video", content=b"").status_code == 400
    r = client.post("/v1/predict/video", content=b"definitely not a video" * 40)
    assert r.status_code == 415 and "error" in r.json()
    r = client.post("/v1/predict/video", content=b"RIFF\0\0\0\0AVI LIST" + bytes(2000))
    assert r.status_code == 422, r.text
    video = make_video(tmp_path / "clip.avi", 4).read_bytes()
    for query in ("every=0", "fps=-1", "every=2&fps=3", "smooth=1", "track=maybe", "max_frames=0",
                  "nope=1"):
        r = client.post(f"/v1/predict/video?{query}", content=video)
        assert r.status_code == 400, query
        assert "error" in r.json()
    big = video + bytes(3 * MB)
    r = httpx.post(guarded.url + "/v1/predict/video", content=big, headers=_auth(), timeout=30)
    assert r.status_code == 413
    assert _empty_soon(spool) == []


def test_video_timeout_ends_the_stream_with_an_error_line(predictor, tmp_path):
    slow = slow_predictor(predictor, 0.25)
    spool = tmp_path / "spool"
    spool.mkdir()
    settings = ServeSettings(limits=Limits(video_timeout_s=1.5), spool_dir=str(spool))
    video = make_video(tmp_path / "clip.avi", 80, faces=1)
    with BackgroundServer(create_app(slow, settings)) as srv:
        r = httpx.post(srv.url + "/v1/predict/video", content=video.read_bytes(), timeout=60)
        assert r.status_code == 200
        lines = [json.loads(x) for x in r.text.splitlines()]
        assert 1 <= len(lines) - 1 < 80
        assert "exceeded" in lines[-1]["error"]
        _valid("error", lines[-1])
        for rec in lines[:-1]:
            _valid("video-record", rec)
        assert _empty_soon(spool) == []
        assert httpx.get(srv.url + "/healthz").status_code == 200


# -- bad inputs -----------------------------------------------------------------------------------
def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + chunk(b"IEND", b"")


def test_bad_images_get_the_right_status(client):
    good = encode(astronaut(), ".jpg")
    cases = {
        "empty": (b"", 400),
        "text": (b"hello, this is not an image at all", 415),
        "pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n" * 4, 415),
        "eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n" * 4, 415),
        "truncated jpeg": (good[: len(good) // 2], 422),
        "corrupt png body": (_png_header(64, 64), 422),
        "decompression bomb": (_png_header(100_000, 100_000), 413),
        "zero size": (_png_header(0, 10), 415),
    }
    for name, (data, status) in cases.items():
        r = client.post("/v1/predict", content=data, headers={"Content-Type": "image/png"})
        assert r.status_code == status, (name, r.status_code, r.text)
        _valid("error", r.json())
    # the declared content type does not matter: the bytes decide
    r = client.post("/v1/predict", content=good, headers={"Content-Type": "text/plain"})
    assert r.status_code == 200


def test_bad_requests(client):
    img = encode(astronaut())
    for query in ("det_threshold=2", "det_threshold=abc", "det_threshold=nan", "max_faces=0",
                  "max_faces=1.5", "max_faces=100000", "path=/etc/passwd"):
        r = client.post(f"/v1/predict?{query}", content=img)
        assert r.status_code == 400, query
        assert "error" in r.json()
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            f"--{boundary}--\r\n").encode()
    r = client.post("/v1/predict", content=body,
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400 and "no file" in r.json()["error"]
    many = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nx\r\n"
                   for i in range(20)) + f"--{boundary}--\r\n"
    r = client.post("/v1/predict", content=many.encode(),
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400 and "parts" in r.json()["error"]
    r = client.post("/v1/predict", content=b"garbage without boundaries",
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400
    r = client.post("/v1/predict", content=img, headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 400
    assert client.get("/v1/predict").status_code == 405
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}


def test_upload_limits(guarded):
    url = guarded.url + "/v1/predict"
    small = encode(astronaut(), ".jpg")
    assert httpx.post(url, content=small, headers=_auth()).status_code == 200
    # announced too large: refused from Content-Length (and the client still reads the answer)
    r = httpx.post(url, content=small + bytes(2 * MB), headers=_auth())
    assert r.status_code == 413 and "limit" in r.json()["error"]

    # streamed (chunked, no Content-Length): refused while it arrives
    def chunks():
        yield small
        for _ in range(12):
            yield bytes(256 * 1024)

    r = httpx.post(url, content=chunks(), headers=_auth())
    assert r.status_code == 413
    # too many pixels for this server (1,000,000): refused from the header
    r = httpx.post(url, content=encode(np.zeros((1100, 1000, 3), np.uint8), ".jpg"),
                   headers=_auth())
    assert r.status_code == 413 and "pixels" in r.json()["error"]
    # max_faces is capped by the server's limit (2)
    r = httpx.post(url, content=encode(group_photo(), ".jpg"), headers=_auth())
    assert r.status_code == 413  # 1024x1024 > 1,000,000 pixels
    r = httpx.post(url + "?max_faces=3", content=small, headers=_auth())
    assert r.status_code == 400


def _raw_request(url: str, head: str, body: bytes = b"", wait: float = 0.0) -> str:
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head.encode() + body)
        if wait:
            time.sleep(wait)
        data = b""
        while True:
            try:
                part = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not part:
                break
            data += part
    return data.decode("latin-1")


def test_huge_content_length_and_slow_upload(guarded):
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Length: 100000000000\r\n\r\n")
    t0 = time.monotonic()
    reply = _raw_request(guarded.url, head)
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert time.monotonic() - t0 < 5
    # a body that stops arriving: 408 after the request timeout (1 s here)
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Length: 5000\r\n\r\n")
    reply = _raw_request(guarded.url, head, b"\xff\xd8\xff" + bytes(100))
    assert reply.startswith("HTTP/1.1 408"), reply[:200]
    assert '"error"' in reply


def test_api_key_and_cors(guarded, server):
    img = encode(astronaut())
    url = guarded.url
    for headers in ({}, _auth("wrong"), {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
        r = httpx.post(url + "/v1/predict", content=img, headers=headers)
        assert r.status_code == 401, headers
        assert "error" in r.json() and r.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(url + "/v1/model").status_code == 401
    assert httpx.get(url + "/v1/model", headers=_auth()).status_code == 200
    assert httpx.post(url + "/v1/predict/video", content=b"x").status_code == 401
    # the page, health and metrics stay open
    for path in ("/", "/healthz", "/metrics"):
        assert httpx.get(url + path).status_code == 200, path
    # CORS: the configured origin only
    pre = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization"}
    r = httpx.options(url + "/v1/predict", headers=pre)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"
    r = httpx.options(url + "/v1/predict", headers={**pre, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    # off by default
    r = httpx.get(server.url + "/healthz", headers={"Origin": "http://app.example"})
    assert "access-control-allow-origin" not in r.headers


def test_queue_full_answers_503(predictor):
    slow = slow_predictor(predictor, 0.5)
    settings = ServeSettings(max_batch=1, max_wait_ms=0, max_queue=1, workers=6)
    img = encode(astronaut())
    with BackgroundServer(create_app(slow, settings)) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda _: c.post("/v1/predict", content=img), range(6)))
        statuses = sorted(r.status_code for r in replies)
        assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}, statuses
        for r in replies:
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) >= 1 and "error" in r.json()
        assert c.get("/healthz").json()["status"] == "ok"
        text = c.get("/metrics").text
        assert metric(text, "bregnet_request_errors_total") >= 1


def test_request_timeout_answers_503(predictor):
    slow = slow_predictor(predictor, 1.0)
    settings = ServeSettings(limits=Limits(request_timeout_s=0.3))
    with BackgroundServer(create_app(slow, settings)) as srv:
        t0 = time.monotonic()
        r = httpx.post(srv.url + "/v1/predict", content=encode(astronaut()), timeout=30)
        assert r.status_code == 503 and "within" in r.json()["error"]
        assert time.monotonic() - t0 < 0.95
        # the service still answers once the model is free again
        r = httpx.post(srv.url + "/v1/predict", content=encode(no_face_image()), timeout=30)
        assert r.status_code == 200


# -- the other endpoints --------------------------------------------------------------------------
def test_documented_schemas_are_complete():
    assert set(_schemas()) == {"error", "predict", "video-record", "model", "health"}


def test_model_health_metrics_page(client):
    assert client.post("/v1/predict", content=encode(astronaut())).status_code == 200
    m = client.get("/v1/model").json()
    _valid("model", m)
    assert m["model"] == "bregnext_custom" and m["labels"] == LABELS and m["va"] is True
    assert m["preprocess"]["input_size"] == 64 and m["crop"] == {
        "margin": 0.1, "square": True, "align": True, "border": "constant", "kind": "box", "rule": ""}
    assert m["detector"]["name"] == "yunet" and m["limits"]["max_upload_bytes"] == 20 * MB
    h = client.get("/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    _valid("health", h.json())
    text = client.get("/metrics").text
    for name in ("bregnet_requests_total", "bregnet_request_duration_seconds_bucket",
                 "bregnet_batch_size_bucket", "bregnet_queue_length",
                 "process_resident_memory_bytes"):
        assert name in text, name
    assert metric(text, "bregnet_faces_total") >= 1
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert "getUserMedia" in html and "/v1/predict" in html
    # self-contained: no external scripts, styles, fonts or images
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html and "@import" not in html and "url(" not in html
    import re

    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    assert all(ref.startswith("data:") for ref in refs), refs


def test_server_survives_everything(client):
    """After all the bad requests above the same server still answers correctly."""
    r = client.post("/v1/predict", content=encode(astronaut()))
    assert r.status_code == 200 and len(r.json()["faces"]) == 1
    assert client.get("/healthz").json()["status"] == "ok"
