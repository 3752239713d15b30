"""Named weights (issue 9, items 1-3): the registry, ``bregnet weights ...``, a weights name wherever
a checkpoint path works, and every bad input of a download.

A loopback HTTP server (standard library, port 0, in a thread, with Range support) serves a
full-size BReG-NeXt-50 checkpoint in the official TensorFlow tensor-bundle format with random
weights (written by the bundle writer of test_convert_tf.py), under a test entry registered for
it. ``$BREGNET_HOME`` points into tmp_path, so nothing touches the real cache. The real index of the
authors' checkpoint is read from ``../shared/reference/`` beside the repository (or
``$BREGNET_SHARED_DIR/reference/``) and the tests that need it skip when it is absent.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import bregnet
from bregnet.cli import main
from bregnet.engine.checkpoint import load_checkpoint, read_metadata
from bregnet.errors import UsageError
from bregnet.export.convert_tf import AFFECTNET_LABELS, is_skipped_variable, official_variable_map
from bregnet.crop import crop_face
from bregnet.preprocess import CropPolicy, Preprocess
from bregnet.weights import (
    WeightsEntry,
    WeightsError,
    WeightsSource,
    checkpoint_file,
    download_weights,
    get_weights,
    is_installed,
    register_weights,
    remove_weights,
    resolve_checkpoint,
    unregister_weights,
    weights_dir,
)
from bregnet.weights import download as download_module
from bregnet.weights.manifest import check_manifest, load_builtin_manifest, manifest_from_index
from bregnet.weights.official import OFFICIAL_MANIFEST, OFFICIAL_NAME, official_manifest_from_index
from infer_helpers import astronaut
from test_convert_tf import official_forward, random_official_variables, write_bundle

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BREGNET_SHARED_DIR") or ROOT.parent / "shared")
REAL_INDEX = SHARED / "reference/bregnext50_affectnet_checkpoints.index"
needs_real_index = pytest.mark.skipif(not REAL_INDEX.is_file(), reason=f"{REAL_INDEX} absent")

NAME = "test.bregnext50"
PREFIX = "models/test/checkpoints"
INDEX = "checkpoints.index"
DATA = "checkpoints.data-00000-of-00001"
INDEX_URL = f"/repo/{PREFIX}.index"
DATA_URL = f"/repo/models/test/{DATA}"


# --------------------------------------------------------------------------------------------
# Fixtures: a loopback server, a bundle, a registered test entry
# --------------------------------------------------------------------------------------------


class FileServer:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1 with Range support, and misbehaves on
    request: ``status[path] = code``, ``drop_once[path] = n`` (close the connection after byte n,
    once), ``gate`` (an Event the data file's second half waits for)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.status: dict[str, int] = {}
        self.drop_once: dict[str, int] = {}
        self.gate: threading.Event | None = None
        self.ranges = True  # False: answer every request with the whole file (200)
        self.waiting = threading.Event()
        self.log: list[tuple[str, str | None]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                rng = self.headers.get("Range")
                owner.log.append((self.path, rng))
                if self.path in owner.status:
                    self.send_response(owner.status[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = owner.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if not owner.ranges:
                    rng = None
                if rng:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                try:
                    drop = owner.drop_once.pop(self.path, None)
                    if drop is not None:  # the server dies mid-file
                        self.wfile.write(body[start:drop])
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    if owner.gate is not None and self.path == DATA_URL:
                        half = start + (len(body) - start) // 2
                        self.wfile.write(body[start:half])
                        self.wfile.flush()
                        owner.waiting.set()
                        owner.gate.wait(30)
                        start = half
                    self.wfile.write(body[start:])
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def requests(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.log if p == path]

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "bregnet-home"
    monkeypatch.setenv("BREGNET_HOME", str(h))
    return h


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """The bundle's files (bytes), its variables and a manifest of it."""
    folder = tmp_path_factory.mktemp("bundle")
    variables = random_official_variables(seed=3)
    write_bundle(folder / "checkpoints", variables)
    files = {INDEX: (folder / INDEX).read_bytes(), DATA: (folder / DATA).read_bytes()}
    manifest = manifest_from_index(folder / INDEX, repository="bregnet-tests/fake",
                                   commit="f" * 40, prefix_path=PREFIX)
    return files, variables, manifest


@pytest.fixture
def server(bundle):
    files, _, _ = bundle
    srv = FileServer()
    srv.files = {INDEX_URL: files[INDEX], DATA_URL: files[DATA]}
    yield srv
    srv.close()


def make_entry(manifest_, base_url: str, name: str = NAME, **kw) -> WeightsEntry:
    manifest = kw.pop("manifest", manifest_)
    args = dict(
        name=name, architecture="bregnext50", arch_args={"num_classes": 8, "tf_same_padding": True},
        labels=tuple(AFFECTNET_LABELS), preprocess=Preprocess(crop=CropPolicy(0.0, False, False, border="clamp")),
        source=WeightsSource.from_manifest(manifest_, base_url=base_url), manifest=manifest,
        description="random weights for the tests", provenance="written by test_weights.py",
        license="none (test data)",
    )
    args.update(kw)
    return WeightsEntry(**args)


@pytest.fixture
def entry(bundle, server):
    e = register_weights(make_entry(bundle[2], server.url + "/repo/"))
    yield e
    unregister_weights(e.name)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def cache_files(home: Path) -> list[str]:
    """Everything in the cache except lock files (which stay, by design)."""
    if not home.exists():
        return []
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if p.is_file() and p.suffix != ".lock")


def download(capsys, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "weights", "download", NAME, "--quiet", *extra)


# --------------------------------------------------------------------------------------------
# The registry and the shipped manifest
# --------------------------------------------------------------------------------------------


def test_official_entry_holds_what_the_issue_lists():
    e = bregnet.get_weights(OFFICIAL_NAME)
    assert OFFICIAL_NAME in bregnet.list_weights()
    assert e.architecture == "bregnext50" and e.arch_args == {"num_classes": 8, "tf_same_padding": True}
    assert list(e.labels) == AFFECTNET_LABELS
    assert e.preprocess.crop == CropPolicy(margin=0.0, square=False, align=False, border="clamp")
    assert e.preprocess.input_size == 64 and e.preprocess.mean == bregnet.PAPER_MEAN
    assert e.source.repository == "behzadhsni/BReG-NeXt"
    assert e.source.commit == "5953bdb15bc0769fcab863adf17e046e335ae9da"
    assert [f.path for f in e.source.files] == [
        "codes/Snapshots/categorical_attempt_1/checkpoints.index",
        "codes/Snapshots/categorical_attempt_1/checkpoints.data-00000-of-00001"]
    assert [f.size for f in e.source.files] == [27_109, 36_901_805]
    assert e.source.files[0].sha256 == "586b1ef0374731809ce2c5bcb606c6c3e6e2f21b47af154317531c3060bbd745"
    assert e.source.url(e.source.files[1]) == (
        "https://raw.githubusercontent.com/behzadhsni/BReG-NeXt/5953bdb15bc0769fcab863adf17e046e335ae9da/"
        "codes/Snapshots/categorical_attempt_1/checkpoints.data-00000-of-00001")
    assert e.source.url(e.source.files[0], mirror="https://m.example/x/") == \
        "https://m.example/x/codes/Snapshots/categorical_attempt_1/checkpoints.index"
    (fig,) = e.reported
    assert (fig.metric, fig.value, fig.dataset, fig.classes) == ("accuracy", 68.50, "AffectNet", 8)
    assert "not reproduced" in fig.status
    assert "no licence" in e.license and "does not redistribute" in e.license
    assert "5953bdb" in e.provenance
    json.dumps(e.to_dict())  # plain JSON


def test_shipped_manifest_covers_every_byte_and_maps_onto_bregnext50():
    """Runs without the reference: the manifest's tensors tile the data file and its weights are
    exactly those of bregnext50 (so verifying it verifies the whole file)."""
    m = load_builtin_manifest(OFFICIAL_MANIFEST)
    check_manifest(m, get_weights(OFFICIAL_NAME))
    rows = sorted(m["tensors"], key=lambda r: r[4])
    assert len(rows) == 840 and all(r[6] is not None for r in rows)
    pos = 0
    for _name, _dtype, _shape, shard, offset, size, _crc in rows:
        assert shard == 0 and offset == pos
        pos += size
    assert pos == m["files"][1]["size"] == 36_901_805
    model = bregnet.create_model("bregnext50", num_classes=8, tf_same_padding=True)
    assert sorted(official_variable_map(model)) == sorted(r[0] for r in rows if not is_skipped_variable(r[0]))


@needs_real_index
def test_shipped_manifest_equals_the_one_derived_from_the_reference_index():
    assert load_builtin_manifest(OFFICIAL_MANIFEST) == official_manifest_from_index(REAL_INDEX)
    text = (ROOT / "src/bregnet/weights/manifests" / OFFICIAL_MANIFEST).read_text()
    from bregnet.weights.manifest import dump_manifest

    assert text == dump_manifest(official_manifest_from_index(REAL_INDEX))  # the tool's output


@needs_real_index
def test_official_entry_fetches_the_real_index_and_refuses_a_forged_data_file(capsys, home):
    """The official entry end to end up to verification, through --mirror: the real index passes
    its SHA-256 and manifest checks; a data file of the right size but other bytes is refused."""
    e = get_weights(OFFICIAL_NAME)
    index, data = e.source.files
    srv = FileServer()
    try:
        srv.files = {"/m/" + index.path: REAL_INDEX.read_bytes(),
                     "/m/" + data.path: np.random.default_rng(0).bytes(data.size)}
        rc, _, err = cli(capsys, "weights", "download", OFFICIAL_NAME, "--mirror", srv.url + "/m",
                         "--quiet")
        line = one_line_error(err)
        assert rc == 2 and "checksum mismatch" in line and "tensor 'BatchNormalization/beta'" in line
        assert [p for p, _ in srv.log] == ["/m/" + index.path, "/m/" + data.path]
        assert not is_installed(OFFICIAL_NAME) and cache_files(home) == []
    finally:
        srv.close()


def test_register_weights_checks_entries(bundle):
    manifest = bundle[2]
    with pytest.raises(UsageError, match="already registered"):
        register_weights(make_entry(manifest, "http://x/", name=OFFICIAL_NAME))
    for bad, match in [({"name": "a/b"}, "not valid"), ({"name": "x.safetensors"}, "not valid"),
                       ({"architecture": "nonet"}, "unknown architecture"),
                       ({"labels": ("a", "b")}, "2 label names for 8 classes")]:
        with pytest.raises(UsageError, match=match):
            register_weights(make_entry(manifest, "http://x/", **{"name": "t.bad", **bad}))
    wrong = dict(manifest, files=[dict(manifest["files"][0], size=1), manifest["files"][1]])
    with pytest.raises(UsageError, match="manifest lists files"):
        register_weights(make_entry(manifest, "http://x/", name="t.bad", manifest=wrong))
    with pytest.raises(WeightsError, match="unknown weights name 'nope'"):
        get_weights("nope")
    assert "t.bad" not in bregnet.list_weights()


# --------------------------------------------------------------------------------------------
# A name that is not downloaded: fails at once, never downloads
# --------------------------------------------------------------------------------------------


def test_a_name_not_downloaded_fails_at_once_with_the_command(capsys, home, entry, server, tmp_path):
    command = f"bregnet weights download {NAME}"
    for call in (lambda: load_checkpoint(NAME), lambda: read_metadata(NAME),
                 lambda: bregnet.Predictor.from_checkpoint(NAME, detector="none"),
                 lambda: bregnet.create_model("bregnext50", pretrained=NAME),
                 lambda: resolve_checkpoint(NAME)):
        with pytest.raises(WeightsError, match=re.escape(command)):
            call()
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), astronaut()[:, :, ::-1])
    for argv in (["predict", NAME, str(photo)], ["evaluate", NAME], ["export", NAME, "--onnx",
                 str(tmp_path / "m.onnx")], ["weights", "path", NAME]):
        rc, out, err = cli(capsys, *argv)
        assert rc == 2 and command in one_line_error(err), argv
    assert server.log == [] and cache_files(home) == []  # nothing was fetched or written
    rc, _, err = cli(capsys, "predict", "bregnext50.afectnet", str(photo))
    assert rc == 2 and "neither a file or folder nor a known weights name" in one_line_error(err)
    rc, _, err = cli(capsys, "weights", "download", "nope")
    assert rc == 2 and "unknown weights name 'nope'" in one_line_error(err)


# --------------------------------------------------------------------------------------------
# Download -> verify -> convert -> use
# --------------------------------------------------------------------------------------------


def test_download_verify_convert_then_predict_by_name(capsys, home, entry, server, bundle, tmp_path):
    files, variables, _ = bundle
    rc, out, err = cli(capsys, "weights", "download", NAME)
    assert rc == 0, err
    path = checkpoint_file(NAME)
    assert out.strip() == str(path) and path.is_file() and is_installed(NAME)
    assert "verifying" in err and "installed" in err
    assert server.requests(INDEX_URL) == [None] and server.requests(DATA_URL) == [None]
    assert cache_files(home) == ["weights/test.bregnext50/model.json",
                                 "weights/test.bregnext50/model.safetensors"]  # sources dropped

    meta = read_metadata(NAME)
    src = meta.extra["converted_from"]
    assert src["commit"] == "f" * 40 and src["repository"] == "bregnet-tests/fake"
    assert src["sha256"] == {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
    assert src["urls"][DATA] == server.url + DATA_URL
    assert meta.extra["weights"]["name"] == NAME
    assert meta.preprocess.crop == CropPolicy(0.0, False, False, border="clamp")
    assert meta.labels == AFFECTNET_LABELS

    rc, out, _ = cli(capsys, "weights", "path", NAME)
    assert rc == 0 and out.strip() == str(path)
    rc, out, _ = cli(capsys, "weights", "list")
    assert re.search(rf"{re.escape(NAME)}\s+bregnext50\s+8\s+\S+ MB\s+installed", out)
    rc, out, _ = cli(capsys, "weights", "info", NAME, "--json")
    assert json.loads(out)["installed"] == str(path)
    rc, out, err = cli(capsys, "weights", "download", NAME)  # again: nothing to do
    assert rc == 0 and "already installed" in err and len(server.log) == 2

    # bregnet predict NAME photo: the official network's output on the checkpoint's crop
    rgb = astronaut()
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), rgb[:, :, ::-1])
    rc, _, err = cli(capsys, "predict", NAME, str(photo), "--detector", "none", "-o",
                     str(tmp_path / "faces.csv"), "--quiet")
    assert rc == 0, err
    (row,) = list(csv.DictReader(open(tmp_path / "faces.csv")))
    crop = crop_face(rgb, (0, 0, rgb.shape[1], rgb.shape[0]), CropPolicy(0.0, False, False, border="clamp"), 64)
    x = (crop[None].astype(np.float32) / 255.0 - np.asarray(bregnet.PAPER_MEAN, np.float32))
    logits = official_forward(variables, x.astype(np.float32))[0]
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    got = np.asarray([float(row[f"p_{c}"]) for c in AFFECTNET_LABELS])
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert row["label"] == AFFECTNET_LABELS[int(np.argmax(want))]

    # the Python entry points take the name too
    model, meta2 = load_checkpoint(NAME)
    assert meta2.labels == AFFECTNET_LABELS
    net = bregnet.create_model("bregnext50", pretrained=NAME, num_classes=8)
    assert net.training and all(torch_equal(a, b) for a, b in zip(net.state_dict().values(),
                                                                   model.state_dict().values()))
    with pytest.raises(UsageError, match="num_classes=8"):
        bregnet.create_model("bregnext50", pretrained=NAME, num_classes=7)
    with pytest.raises(UsageError, match="are for bregnext50, not bregnet56"):
        bregnet.create_model("bregnet56", pretrained=NAME)
    assert bregnet.Predictor.from_checkpoint(NAME, detector="none").labels == AFFECTNET_LABELS


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_interrupted_download_resumes_and_ends_byte_identical(capsys, home, entry, server, bundle):
    files = bundle[0]
    half = len(files[DATA]) // 2
    server.drop_once[DATA_URL] = half
    rc, _, err = download(capsys, "--retries", "0")
    line = one_line_error(err)
    part = weights_dir() / ".partial" / NAME / (DATA + ".part")
    kept = part.stat().st_size
    assert rc == 2 and "dropped the connection" in line and f"{kept:,} of {len(files[DATA]):,}" in line
    assert f"run `bregnet weights download {NAME}` again to resume" in line
    assert half // 2 < kept <= half and part.read_bytes() == files[DATA][:kept]
    assert not is_installed(NAME)

    rc, _, err = download(capsys)
    assert rc == 0, err
    assert server.requests(DATA_URL) == [None, f"bytes={kept}-"]  # resumed, not restarted
    sha = read_metadata(NAME).extra["converted_from"]["sha256"]
    assert sha[DATA] == hashlib.sha256(files[DATA]).hexdigest()  # byte-identical
    assert not part.exists()


@pytest.mark.parametrize("ranges", [True, False])
def test_a_drop_mid_file_is_retried_within_one_run(capsys, home, entry, server, bundle, ranges):
    server.drop_once[DATA_URL] = 1_000_003
    server.ranges = ranges  # False: a server without range support: the retry starts again
    lines: list[str] = []
    path = download_weights(NAME, retries=2, backoff=0, log=lines.append, progress=True)
    (first, resumed) = server.requests(DATA_URL)
    assert path.is_file() and first is None
    assert 500_000 < int(resumed[6:-1]) <= 1_000_003  # "bytes=N-": from what was written
    assert f"{DATA}:" in capsys.readouterr().err  # the progress bar
    assert any(line.startswith(f"fetching {DATA}") for line in lines)
    sha = read_metadata(path).extra["converted_from"]["sha256"]
    assert sha[DATA] == hashlib.sha256(bundle[0][DATA]).hexdigest()


def test_a_silent_server_times_out_and_keeps_what_came(capsys, home, entry, server, bundle):
    server.gate = threading.Event()  # the data file stalls half-way, and never goes on
    t0 = time.monotonic()
    rc, _, err = download(capsys, "--timeout", "0.5", "--retries", "0")
    line = one_line_error(err)
    assert rc == 2 and "sent nothing for 0.5 s" in line and "again to resume" in line
    assert time.monotonic() - t0 < 15 and not is_installed(NAME)
    part = weights_dir() / ".partial" / NAME / (DATA + ".part")
    assert part.read_bytes() == bundle[0][DATA][:part.stat().st_size] and part.stat().st_size > 0


@pytest.mark.parametrize("which", [DATA, INDEX])
def test_a_flipped_byte_is_refused_and_nothing_installed(capsys, home, entry, server, bundle, which):
    url = DATA_URL if which == DATA else INDEX_URL
    bad = bytearray(bundle[0][which])
    bad[len(bad) // 3] ^= 0x10
    server.files[url] = bytes(bad)
    rc, _, err = download(capsys)
    line = one_line_error(err)
    assert rc == 2
    assert ("checksum mismatch" in line and "tensor" in line) if which == DATA else "SHA-256 mismatch" in line
    assert not is_installed(NAME) and cache_files(home) == []


def test_truncated_or_wrong_size_file_is_refused(capsys, home, entry, server, bundle):
    data = bundle[0][DATA]
    server.files[DATA_URL] = data[:-100]  # a server whose file is short
    rc, _, err = download(capsys)
    line = one_line_error(err)
    assert rc == 2 and f"is {len(data) - 100:,} bytes, but the published {DATA} is {len(data):,}" in line
    assert cache_files(home) == [f"weights/.partial/{NAME}/{INDEX}"]  # kept: it was complete
    server.files[DATA_URL] = data + b"\0"
    rc, _, err = download(capsys)
    assert rc == 2 and "not the same file" in one_line_error(err) and not is_installed(NAME)


def test_http_404_and_500(capsys, home, entry, server):
    server.status[DATA_URL] = 404
    rc, _, err = download(capsys)
    line = one_line_error(err)
    assert rc == 2 and "HTTP 404" in line and server.url + DATA_URL in line and "--from DIR" in line
    assert server.requests(DATA_URL) == [None]  # a 404 is final: no retry
    server.status[DATA_URL] = 500
    t0 = time.monotonic()
    rc, _, err = download(capsys, "--retries", "1")
    line = one_line_error(err)
    assert rc == 2 and "HTTP 500" in line and "(2 attempts)" in line
    assert len(server.requests(DATA_URL)) == 3 and time.monotonic() - t0 < 20
    assert not is_installed(NAME)


def test_connection_refused_and_no_network(capsys, home, bundle, monkeypatch):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    register_weights(make_entry(bundle[2], f"http://127.0.0.1:{port}/repo/"), overwrite=True)
    try:
        rc, _, err = download(capsys, "--retries", "0")
        line = one_line_error(err)
        assert rc == 2 and "connection refused" in line and "--mirror URL" in line

        def no_dns(*args, **kwargs):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        monkeypatch.setattr(socket, "getaddrinfo", no_dns)
        rc, _, err = download(capsys, "--retries", "0", "--mirror", "https://weights.example.org/")
        line = one_line_error(err)
        assert rc == 2 and "cannot resolve weights.example.org (no network connection?)" in line
        assert cache_files(home) == []
    finally:
        unregister_weights(NAME)


def test_from_dir_verifies_and_never_touches_the_users_files(capsys, home, entry, server, bundle,
                                                             tmp_path):
    files = bundle[0]
    flat = tmp_path / "fetched"
    flat.mkdir()
    for n, b in files.items():
        (flat / n).write_bytes(b)
    bad = bytearray(files[DATA])
    bad[-5] ^= 1
    (flat / DATA).write_bytes(bytes(bad))
    rc, _, err = download(capsys, "--from", str(flat))
    assert rc == 2 and "checksum mismatch" in one_line_error(err)
    assert (flat / DATA).read_bytes() == bytes(bad)  # the user's file stays
    (flat / DATA).write_bytes(files[DATA])
    rc, _, err = download(capsys, "--from", str(flat))
    assert rc == 0, err
    assert server.log == []  # no network
    assert read_metadata(NAME).extra["converted_from"]["from_dir"] == str(flat.resolve())
    assert sorted(p.name for p in flat.iterdir()) == sorted(files)  # untouched
    # the repository layout works too; a missing file is named
    repo = tmp_path / "clone"
    for n, b in files.items():
        target = repo / (PREFIX.rsplit("/", 1)[0]) / n
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b)
    rc, _, err = download(capsys, "--from", str(repo), "--force")
    assert rc == 0, err
    (repo / "models/test" / DATA).unlink()
    rc, _, err = download(capsys, "--from", str(repo), "--force")
    assert rc == 2 and f"{DATA} not found" in one_line_error(err)
    assert is_installed(NAME)  # a failed --force leaves the installed weights as they were
    rc, _, err = cli(capsys, "weights", "download", NAME, "--from", str(flat), "--mirror", "http://x/")
    assert rc == 2 and "not allowed with argument" in err


def test_mirror_replaces_the_base_url(capsys, home, bundle, server):
    register_weights(make_entry(bundle[2], server.url + "/gone/"), overwrite=True)
    try:
        rc, _, err = download(capsys, "--mirror", server.url + "/repo")
        assert rc == 0, err
        assert read_metadata(NAME).extra["converted_from"]["urls"][INDEX] == server.url + INDEX_URL
        assert all(p.startswith("/repo/") for p, _ in server.log)
        rc, _, err = cli(capsys, "weights", "download", NAME, "--mirror", "ftp://x")
        assert rc == 2 and "expected an http:// or https:// URL" in err
    finally:
        unregister_weights(NAME)


def test_two_downloads_of_one_name_at_once(capsys, home, entry, server):
    server.gate = threading.Event()
    result: dict[str, object] = {}
    first = threading.Thread(target=lambda: result.update(path=download_weights(NAME)))
    first.start()
    try:
        assert server.waiting.wait(30)  # the first download is mid-file and holds the lock
        rc, _, err = download(capsys)
        line = one_line_error(err)
        assert rc == 2 and "another bregnet process is downloading or removing" in line
        rc, _, err = cli(capsys, "weights", "remove", NAME)
        assert rc == 2 and "another bregnet process" in one_line_error(err)
    finally:
        server.gate.set()
        first.join(60)
    assert result["path"] == checkpoint_file(NAME) and is_installed(NAME)
    assert len(server.requests(DATA_URL)) == 1  # the second never fetched anything


def test_full_cache_is_refused_before_and_during_the_download(capsys, home, entry, server, bundle,
                                                              monkeypatch):
    real = shutil.disk_usage

    monkeypatch.setattr(download_module.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=1_000_000))
    rc, _, err = download(capsys)
    assert rc == 2 and "not enough space in the weights cache" in one_line_error(err)
    assert server.log == [] and cache_files(home) == []
    monkeypatch.setattr(download_module.shutil, "disk_usage", real)

    class FullDisk:  # a file whose disk fills up after 2 MB
        def __init__(self, path, mode):
            self.f = open(path, mode)
            self.written = 0

        def write(self, b):
            if self.written + len(b) > 2_000_000:
                raise OSError(errno.ENOSPC, "No space left on device", str(self.f.name))
            self.written += len(b)
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(download_module, "open", FullDisk, raising=False)
    rc, _, err = download(capsys)
    line = one_line_error(err)
    assert rc == 2 and "is full" in line and "BREGNET_HOME" in line and not is_installed(NAME)
    monkeypatch.delattr(download_module, "open")
    rc, _, err = download(capsys)  # space again: resumes what was kept
    assert rc == 0, err
    assert server.requests(DATA_URL)[-1] is not None  # a Range request
    sha = read_metadata(NAME).extra["converted_from"]["sha256"]
    assert sha[DATA] == hashlib.sha256(bundle[0][DATA]).hexdigest()


def test_read_only_cache(capsys, home, entry, server, monkeypatch):
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(home)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    rc, _, err = download(capsys)
    line = one_line_error(err)
    assert rc == 2 and "cannot write the weights cache" in line and "BREGNET_HOME" in line
    assert server.log == [] and not home.exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_cache_for_real(capsys, home, entry, server):
    home.mkdir()
    home.chmod(0o500)
    try:
        rc, _, err = download(capsys)
        assert rc == 2 and "cannot write the weights cache" in one_line_error(err)
    finally:
        home.chmod(0o700)


def test_remove_deletes_only_what_bregnet_wrote(capsys, home, entry, server, bundle, tmp_path):
    assert download(capsys)[0] == 0
    mine = checkpoint_file(NAME).parent / "notes.txt"
    mine.write_text("my own file")
    partial = weights_dir() / ".partial" / NAME
    partial.mkdir(parents=True)
    (partial / (DATA + ".part")).write_bytes(b"x" * 10)
    rc, out, _ = cli(capsys, "weights", "remove", NAME)
    assert rc == 0 and "removed 3 file(s)" in out
    assert mine.read_text() == "my own file" and not is_installed(NAME) and not partial.exists()
    rc, out, _ = cli(capsys, "weights", "remove", NAME)
    assert rc == 0 and "nothing removed" in out
    assert remove_weights(NAME) == []
    rc, _, err = cli(capsys, "weights", "remove", "nope")
    assert rc == 2 and "unknown weights name" in one_line_error(err)


def test_weights_cli_help_and_info(capsys):
    rc, out, _ = cli(capsys, "weights", "info", OFFICIAL_NAME)
    assert rc == 0
    out = " ".join(out.split())
    for text in ("bregnext50", "5953bdb15bc0769fcab863adf17e046e335ae9da", "36,901,805 bytes",
                 "box crop: margin 0, not square, no alignment, border clamp", "not reproduced", "no licence",
                 "CRC32C of each of 840 tensors", "not downloaded (bregnet weights download"):
        assert text in out, text
    rc, _, err = cli(capsys, "weights")
    assert rc == 2 and "give an action" in one_line_error(err)
    rc, _, err = cli(capsys, "weights", "download", NAME, "--retries", "-1")
    assert rc == 2 and "must be at least 0" in err
